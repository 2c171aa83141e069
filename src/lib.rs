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

/// Turns transparent huge pages off for this process and the decode workers it starts (the
/// flag is inherited). With huge pages every fresh allocator page costs a 2 MiB zeroing fault
/// and counts 2 MiB towards the resident set: with mimalloc (which asked for huge pages) on
/// 120 plates that was about a third of plateqc's system time and 80-120 MB of its peak RSS
/// (issue 15). The system allocator does not ask for them, but a host with THP `always` would
/// give them anyway.
pub fn no_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    // It fails only on kernels older than 3.15, where there is nothing to turn off.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
