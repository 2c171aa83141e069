//! plateqc: quality control for dental phosphor-plate X-rays.
//!
//! The rooms follow the plate: [`ingest`] (inbox watching, the DICOM receiver) -> [`decode`]
//! (DICOM to stored values, the model tensor and the display image) -> [`infer`] (the ONNX
//! classifier and its verdict) -> [`explain`] (Grad-CAM from the model's own outputs, overlay
//! images) -> [`record`] (the QC history, SQLite or PostgreSQL) -> [`route`] (moving files,
//! rejection notes, forwarding). Each uses only the rooms before it and the shared kit below
//! them ([`net`], [`outcome`], [`privacy`], [`cid7011`], [`fsutil`]). Around them: [`config`]
//! gathers their options, [`pipeline`] wires them with bounded channels, [`watch`] is the
//! daemon, [`metrics`] its endpoint, [`report`] reads the history back (reject analysis, review
//! page, overrides) and [`cli`] is what the binary calls.

pub mod cid7011;
pub mod cli;
pub mod config;
pub mod decode;
pub mod explain;
pub mod fsutil;
pub mod infer;
pub mod ingest;
pub mod metrics;
pub mod net;
pub mod outcome;
pub mod pipeline;
pub mod privacy;
pub mod record;
pub mod report;
pub mod route;
pub mod watch;

/// Process-wide settings made at the very start of `main`, while the process has one thread
/// (the environment must not change once others may read it).
///
/// * Transparent huge pages off for this process and the decode workers it starts (the flag
///   is inherited). With huge pages every fresh allocator page costs a 2 MiB zeroing fault and
///   counts 2 MiB towards the resident set: with mimalloc (which asked for them) on 120 plates
///   that was about a third of plateqc's system time and 80-120 MB of its peak RSS (issue 15).
///   The system allocator does not ask for them, but a host with THP `always` gives them anyway.
/// * One glibc malloc arena instead of up to eight per core (unless `MALLOC_ARENA_MAX` is set):
///   every tokio, blocking and ONNX Runtime thread otherwise gets its own arena, each keeping
///   freed plate buffers. On 120 plates, 2 cores: parent peak RSS 165-185 MB -> 120 MB, same
///   time (2.05-2.25 s either way); plateqc allocates few, large buffers, so one lock is cheap.
/// * ONNX Runtime's telemetry off (`ORT_DISABLE_TELEMETRY`, unless the operator set it): the
///   Microsoft build otherwise writes a device id under `~/.cache/Microsoft` and tries to send
///   usage events over HTTPS from a clinic's server. `with_telemetry(false)` on the environment
///   comes too late for the device id.
pub fn prepare_process() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    // It fails only on kernels older than 3.15, where there is nothing to turn off.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
}
