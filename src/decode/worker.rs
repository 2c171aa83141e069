//! Decode isolation: everything that parses a file's bytes (the pre-scan, dicom-rs, the C
//! codecs) runs in worker processes, so a file that crashes a parser, exhausts memory or loops
//! costs only itself. A worker is this same binary run as `plateqc __decode-worker`; it closes
//! every inherited descriptor beyond stdin, stdout and stderr, caps its address space, its open
//! files and its core size, gets a CPU-time budget per plate, and answers one request at a
//! time over its stdin and stdout.
//!
//! The protocol is a length-prefixed frame each way. A request is a small JSON head (the
//! decode policy and the model's input size) and the file's bytes; a response is a JSON head
//! (the header read, or why the file was refused) followed by the display image and the model
//! tensor as raw little-endian bytes. The parent reads the file, hashes it and keeps every
//! other I/O to itself.
//!
//! [`DecodePool`] is the parent's side: idle workers are reused, a worker is started when none
//! is idle, and one that dies, breaks the protocol or overruns the wall-clock limit is killed
//! and forgotten; the plate it held is a `crash` naming the signal. The next plate starts a
//! fresh worker.

use super::{preprocess, DecodeError, DecodePolicy, PlateHeader};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The hidden subcommand that runs a worker.
pub const SUBCOMMAND: &str = "__decode-worker";

/// What a decode worker may use, from `[decode]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Address space of a worker (RLIMIT_AS).
    pub memory_bytes: u64,
    /// CPU seconds a worker may spend on one plate (RLIMIT_CPU, raised before each plate).
    pub cpu_secs: u64,
    /// Wall-clock time the parent waits for one plate before killing the worker.
    pub timeout: Duration,
}

impl WorkerLimits {
    pub fn of(policy: &DecodePolicy) -> WorkerLimits {
        WorkerLimits {
            memory_bytes: policy.worker_memory_mb.saturating_mul(1 << 20),
            cpu_secs: policy.worker_cpu_secs.max(1),
            timeout: Duration::from_secs(policy.worker_timeout_secs.max(1)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Request {
    policy: DecodePolicy,
    want: super::Want,
    /// Only the structural pre-scan (the receiver's check before answering a C-STORE).
    #[serde(default)]
    prescan_only: bool,
    /// Only the stored values as uncompressed Pixel Data (transcoding for a destination).
    #[serde(default)]
    native: bool,
}

/// A decoded plate as the worker sends it: what the pipeline keeps of the pixels.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub header: PlateHeader,
    pub gray: Vec<u8>,
    pub tensor: Vec<f32>,
    pub letterbox: preprocess::Letterbox,
}

/// A file the worker refused, with the header when it could be read.
#[derive(Debug)]
pub struct Refused {
    pub error: DecodeError,
    pub header: Option<Box<PlateHeader>>,
}

#[derive(Serialize, Deserialize)]
enum Response {
    Decoded {
        header: Box<PlateHeader>,
        /// Sent apart: the header skips it when serialized anywhere else.
        patient_id: Option<String>,
        letterbox: preprocess::Letterbox,
        gray_len: usize,
        tensor_len: usize,
    },
    Refused {
        error: DecodeError,
        header: Option<Box<PlateHeader>>,
        patient_id: Option<String>,
    },
    /// The answer to a pre-scan only request: why the data set fails it, if it does, and
    /// otherwise its SOP UIDs.
    Checked {
        problem: Option<String>,
        #[serde(default)]
        uids: super::DataSetUids,
    },
    /// The answer to a native request: the Pixel Data bytes follow, or why not.
    Native { error: Option<DecodeError> },
}

/// The in-process decode of one file's bytes, as a worker runs it (and as `decode::load` runs
/// it where isolation is off: tests and the benchmark's baseline).
pub fn decode_bytes(
    bytes: &[u8],
    policy: &DecodePolicy,
    want: super::Want,
) -> Result<Decoded, Refused> {
    let plate = match super::decode(bytes, policy) {
        Ok(p) => p,
        Err(error) => {
            // The header may still be readable; keep what identity we can for the record.
            let header = super::decode_header(bytes, policy).ok().map(Box::new);
            return Err(Refused { error, header });
        }
    };
    let (tensor, letterbox) = preprocess::preprocess(&plate, want.input);
    let gray = if want.display {
        super::display::display_gray(&plate)
    } else {
        Vec::new()
    };
    Ok(Decoded {
        header: plate.header,
        gray,
        tensor,
        letterbox,
    })
}

/// The pipe size asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Largest frame accepted either way: a file within `max_file_bytes` plus its head, or a
/// response of an image within the pixel budget (1 byte of display, 8 of tensor per pixel at
/// most), bounded so that a corrupt length cannot ask for more.
const MAX_FRAME: usize = 1 << 31;

/// A frame's length from its 4-byte prefix, refused beyond [`MAX_FRAME`] (a corrupt or hostile
/// prefix must not size an allocation).
fn frame_len(prefix: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    Ok(len)
}

fn write_frame(w: &mut impl Write, head: &[u8], blobs: &[&[u8]]) -> io::Result<()> {
    let total = 4 + head.len() + blobs.iter().map(|b| b.len()).sum::<usize>();
    let total = u32::try_from(total).map_err(|_| io::Error::other("frame too large"))?;
    w.write_all(&total.to_le_bytes())?;
    w.write_all(&(head.len() as u32).to_le_bytes())?;
    w.write_all(head)?;
    for b in blobs {
        w.write_all(b)?;
    }
    w.flush()
}

/// Splits a frame into its JSON head and the rest.
fn split_frame(frame: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed frame");
    let len = frame.get(..4).ok_or_else(bad)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let head = frame.get(4..4 + len).ok_or_else(bad)?;
    Ok((head, &frame[4 + len..]))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Runs a worker on stdin and stdout until stdin closes. Called by the hidden subcommand
/// before anything else happens in the process.
pub fn serve(limits: WorkerLimits) -> io::Result<()> {
    confine(&limits);
    let stdin = io::stdin();
    let stdout = io::stdout();
    let (mut input, mut output) = (stdin.lock(), stdout.lock());
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut frame = vec![0u8; frame_len(len)?];
        input.read_exact(&mut frame)?;
        let (head, bytes) = split_frame(&frame)?;
        let req: Request = serde_json::from_slice(head)?;
        cpu_budget(limits.cpu_secs);
        if req.prescan_only {
            let (problem, uids) = match super::check_data_set(
                bytes,
                req.policy.max_sequence_depth,
                req.policy.max_file_bytes as usize,
            ) {
                Ok(uids) => (None, uids),
                Err(problem) => (Some(problem), Default::default()),
            };
            let head = serde_json::to_vec(&Response::Checked { problem, uids })?;
            write_frame(&mut output, &head, &[])?;
            continue;
        }
        if req.native {
            let (error, data) = match super::native_pixel_data(bytes, &req.policy) {
                Ok(d) => (None, d),
                Err(e) => (Some(e), Vec::new()),
            };
            let head = serde_json::to_vec(&Response::Native { error })?;
            write_frame(&mut output, &head, &[&data])?;
            continue;
        }
        match decode_bytes(bytes, &req.policy, req.want) {
            Ok(d) => {
                let head = serde_json::to_vec(&Response::Decoded {
                    patient_id: d.header.patient_id.clone(),
                    header: Box::new(d.header),
                    letterbox: d.letterbox,
                    gray_len: d.gray.len(),
                    tensor_len: d.tensor.len(),
                })?;
                write_frame(&mut output, &head, &[&d.gray, &f32_bytes(&d.tensor)])?;
            }
            Err(r) => {
                let head = serde_json::to_vec(&Response::Refused {
                    patient_id: r.header.as_ref().and_then(|h| h.patient_id.clone()),
                    error: r.error,
                    header: r.header,
                })?;
                write_frame(&mut output, &head, &[])?;
            }
        }
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a plain system call on a valid struct; failure leaves the old limit.
    unsafe { libc::setrlimit(resource, &lim) };
}

fn limit_of(resource: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call writing into a valid struct.
    unsafe { libc::getrlimit(resource, &mut lim) };
    lim
}

/// The worker's confinement, set once: no descriptor but stdin, stdout and stderr (no
/// inherited socket, database or inbox handle), no new ones beyond a few, no core dumps (they
/// would hold patient data), a capped address space (already set by the parent before exec,
/// see [`DecodePool`]; set again for a worker started by hand).
fn confine(limits: &WorkerLimits) {
    // SAFETY: closes descriptors this process does not use; std's own are 0, 1 and 2.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed != 0 {
        for fd in 3..1024 {
            // SAFETY: closing a descriptor that may not exist is harmless.
            unsafe { libc::close(fd) };
        }
    }
    // Terminal and service-manager signals are for the parent, which finishes or abandons the
    // plates in flight itself; a worker ends when its stdin closes.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: setting a signal to be ignored.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    set_limit(libc::RLIMIT_CORE, 0, 0);
    set_limit(libc::RLIMIT_NOFILE, 16, 16);
    set_limit(libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes);
}

/// Raises the soft CPU limit to what this process has used plus `secs`: SIGXCPU ends a worker
/// that spends longer than that on one plate.
fn cpu_budget(secs: u64) {
    // SAFETY: getrusage writes into a zeroed struct of the right type.
    let used = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) as u64 + 1
    };
    let hard = limit_of(libc::RLIMIT_CPU).rlim_max;
    set_limit(libc::RLIMIT_CPU, (used + secs).min(hard), hard);
}

/// The program that runs workers: `PLATEQC_WORKER_EXE`, or the `plateqc` binary itself, or the
/// `plateqc` binary beside (or one folder above) the running one, as for `plateqc-bench` and
/// the test binaries under `target/*/deps`.
pub fn default_program() -> PathBuf {
    if let Some(p) = std::env::var_os("PLATEQC_WORKER_EXE") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("plateqc"));
    if exe.file_name().is_some_and(|n| n == "plateqc") {
        return exe;
    }
    let beside = exe.with_file_name("plateqc");
    if beside.is_file() {
        return beside;
    }
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("plateqc"))
        .filter(|p| p.is_file())
        .unwrap_or(exe)
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// Why a worker did not answer: it died (the description names the signal or exit code), or
/// it was killed for overrunning its time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkerDied(pub String);

/// The parent's side: a pool of decode workers, each answering one plate at a time.
pub struct DecodePool {
    program: PathBuf,
    limits: WorkerLimits,
    idle: Mutex<Vec<Worker>>,
    /// Workers started, for logs and tests (a restart after a crash counts).
    pub started: std::sync::atomic::AtomicU64,
}

impl DecodePool {
    pub fn new(program: PathBuf, limits: WorkerLimits) -> DecodePool {
        DecodePool {
            program,
            limits,
            idle: Mutex::new(Vec::new()),
            started: Default::default(),
        }
    }

    /// Starts `n` workers ahead of the first plate, so that start-up, not the first plates,
    /// pays for them (a worker that cannot start is started again when a plate needs it).
    pub fn warm(&self, n: usize) {
        for _ in 0..n {
            match self.spawn() {
                Ok(w) => {
                    if let Ok(mut v) = self.idle.lock() {
                        v.push(w);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot start a decode worker yet"),
            }
        }
    }

    fn spawn(&self) -> io::Result<Worker> {
        let mut cmd = Command::new(&self.program);
        let memory = self.limits.memory_bytes;
        // The address space is capped before exec: the runtime maps memory as soon as the
        // program starts, and a cap set afterwards would not count what it already mapped.
        // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let lim = libc::rlimit {
                    rlim_cur: memory,
                    rlim_max: memory,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .arg(SUBCOMMAND)
            .arg("--memory-bytes")
            .arg(self.limits.memory_bytes.to_string())
            .arg("--cpu-secs")
            .arg(self.limits.cpu_secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.program.display())))?;
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        // A plate and its answer are megabytes; through the default 64 KiB pipes each exchange
        // becomes dozens of wake-ups of both processes, which on a loaded machine costs more
        // than the copy. Larger pipes (up to the system's cap) let either side move a plate in
        // a few writes.
        for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
            // SAFETY: fcntl on a descriptor this process owns; failure keeps the default size.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES) };
        }
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    /// Decodes one file's bytes in a worker. `Err` when the worker died on it.
    pub fn decode(
        &self,
        bytes: &[u8],
        policy: &DecodePolicy,
        want: super::Want,
    ) -> Result<Result<Decoded, Refused>, WorkerDied> {
        let req = Request {
            policy: policy.clone(),
            want,
            prescan_only: false,
            native: false,
        };
        match self.run(bytes, &req)? {
            Answer::Decoded(d) => Ok(d),
            _ => Err(WorkerDied("decode worker answered out of turn".into())),
        }
    }

    /// [`super::native_pixel_data`] in a worker: the outer `Err` when the worker died on it.
    pub fn native(
        &self,
        bytes: &[u8],
        policy: &DecodePolicy,
    ) -> Result<Result<Vec<u8>, DecodeError>, WorkerDied> {
        let req = Request {
            policy: policy.clone(),
            want: super::Want {
                input: preprocess::Input {
                    size: 0,
                    psp: preprocess::Psp::V1,
                },
                display: false,
            },
            prescan_only: false,
            native: true,
        };
        match self.run(bytes, &req)? {
            Answer::Native(n) => Ok(n),
            _ => Err(WorkerDied("decode worker answered out of turn".into())),
        }
    }

    /// [`super::check_data_set`] in a worker: `Err(reason)` when the data set fails it, or
    /// when the worker died on it.
    pub fn check(
        &self,
        bytes: &[u8],
        max_depth: usize,
        max_inflated: usize,
    ) -> Result<super::DataSetUids, String> {
        let req = Request {
            policy: DecodePolicy {
                max_sequence_depth: max_depth,
                max_file_bytes: max_inflated as u64,
                ..DecodePolicy::default()
            },
            // Never preprocessed: a pre-scan stops before the pixels.
            want: super::Want {
                input: preprocess::Input {
                    size: 0,
                    psp: preprocess::Psp::V1,
                },
                display: false,
            },
            prescan_only: true,
            native: false,
        };
        match self.run(bytes, &req) {
            Ok(Answer::Checked(Some(problem), _)) => Err(problem),
            Ok(Answer::Checked(None, uids)) => Ok(uids),
            Ok(_) => Err("decode worker answered out of turn".into()),
            Err(died) => Err(died.0),
        }
    }

    fn run(&self, bytes: &[u8], req: &Request) -> Result<Answer, WorkerDied> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut worker = match idle {
            Some(w) => w,
            None => self
                .spawn()
                .map_err(|e| WorkerDied(format!("cannot start a decode worker: {e}")))?,
        };
        let deadline = Instant::now() + self.limits.timeout;
        match exchange(&mut worker, bytes, req, deadline) {
            Ok(answer) => {
                if let Ok(mut v) = self.idle.lock() {
                    v.push(worker);
                }
                Ok(answer)
            }
            Err(e) => Err(WorkerDied(bury(worker, &e, self.limits.timeout))),
        }
    }
}

impl Drop for DecodePool {
    fn drop(&mut self) {
        if let Ok(mut v) = self.idle.lock() {
            for mut w in v.drain(..) {
                // Closing stdin ends a worker's loop; kill in case it is stuck.
                drop(w.stdin);
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
    }
}

/// Kills a worker that failed an exchange and says how it ended.
fn bury(mut worker: Worker, error: &io::Error, timeout: Duration) -> String {
    let timed_out = error.kind() == io::ErrorKind::TimedOut;
    // A worker that died already has an exit status; give it a moment to be reaped.
    let mut status = None;
    if !timed_out {
        for _ in 0..50 {
            if let Ok(Some(s)) = worker.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if status.is_none() {
        let _ = worker.child.kill();
        status = worker.child.wait().ok();
    }
    use std::os::unix::process::ExitStatusExt;
    match status {
        _ if timed_out => format!(
            "decode worker took longer than {} s on this file and was killed",
            timeout.as_secs()
        ),
        Some(s) => match s.signal() {
            Some(sig) => format!(
                "decode worker killed by signal {sig} ({})",
                signal_name(sig)
            ),
            None => format!(
                "decode worker exited with status {} ({error})",
                s.code().unwrap_or(-1)
            ),
        },
        None => format!("decode worker lost ({error})"),
    }
}

/// The conventional name of a signal a crashing decoder dies of.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

// Moved once per exchange; boxing would add an allocation per plate for no gain.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Decoded(Result<Decoded, Refused>),
    Checked(Option<String>, super::DataSetUids),
    Native(Result<Vec<u8>, DecodeError>),
}

fn exchange(w: &mut Worker, bytes: &[u8], req: &Request, deadline: Instant) -> io::Result<Answer> {
    let head = serde_json::to_vec(req)?;
    write_frame(&mut w.stdin, &head, &[bytes])?;
    let mut len = [0u8; 4];
    read_by(&mut w.stdout, &mut len, deadline)?;
    let mut frame = vec![0u8; frame_len(len)?];
    read_by(&mut w.stdout, &mut frame, deadline)?;
    let (head, rest) = split_frame(&frame)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    match serde_json::from_slice(head)? {
        Response::Decoded {
            mut header,
            patient_id,
            letterbox,
            gray_len,
            tensor_len,
        } => {
            if rest.len() != gray_len + 4 * tensor_len {
                return Err(bad("response of the wrong length"));
            }
            header.patient_id = patient_id;
            let (gray, tensor) = rest.split_at(gray_len);
            let tensor = tensor
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok(Answer::Decoded(Ok(Decoded {
                header: *header,
                gray: gray.to_vec(),
                tensor,
                letterbox,
            })))
        }
        Response::Refused {
            error,
            mut header,
            patient_id,
        } => {
            if let Some(h) = header.as_mut() {
                h.patient_id = patient_id;
            }
            Ok(Answer::Decoded(Err(Refused { error, header })))
        }
        Response::Checked { problem, uids } => Ok(Answer::Checked(problem, uids)),
        Response::Native { error: Some(e) } => Ok(Answer::Native(Err(e))),
        Response::Native { error: None } => Ok(Answer::Native(Ok(rest.to_vec()))),
    }
}

/// Fills `buf` from a worker's stdout, giving up at `deadline`.
fn read_by(r: &mut ChildStdout, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let fd = r.as_raw_fd();
    let mut off = 0;
    while off < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "decode worker timed out",
            ));
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, 60_000) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc == 0 {
            continue;
        }
        let n = r.read(&mut buf[off..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "decode worker closed its output",
            ));
        }
        off += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TEST_INPUT: crate::decode::Want = crate::decode::Want {
        input: preprocess::Input {
            size: 64,
            psp: preprocess::Psp::V1,
        },
        display: true,
    };

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn limits(timeout_ms: u64) -> WorkerLimits {
        WorkerLimits {
            memory_bytes: 1 << 30,
            cpu_secs: 5,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn a_worker_that_dies_is_named_by_its_signal_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let segv = script(dir.path(), "segv", "head -c 4 >/dev/null; kill -SEGV $$");
        let pool = DecodePool::new(segv, limits(10_000));
        for round in 1..=2 {
            let died = pool
                .decode(b"bytes", &DecodePolicy::default(), TEST_INPUT)
                .unwrap_err();
            assert_eq!(died.0, "decode worker killed by signal 11 (SIGSEGV)");
            assert_eq!(
                pool.started.load(std::sync::atomic::Ordering::Relaxed),
                round
            );
        }
        let quits = script(dir.path(), "quits", "exit 3");
        let died = DecodePool::new(quits, limits(10_000))
            .decode(b"bytes", &DecodePolicy::default(), TEST_INPUT)
            .unwrap_err();
        assert!(
            died.0.starts_with("decode worker exited with status 3"),
            "{died}"
        );
    }

    #[test]
    fn a_worker_that_overruns_its_time_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let sleeper = script(dir.path(), "sleeper", "exec sleep 30");
        let t = Instant::now();
        let died = DecodePool::new(sleeper, limits(300))
            .decode(b"bytes", &DecodePolicy::default(), TEST_INPUT)
            .unwrap_err();
        assert!(died.0.contains("took longer than"), "{died}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn frames_round_trip_and_a_lying_head_is_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{}", &[b"abc", b"de"]).unwrap();
        let total = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(total, buf.len() - 4);
        let (head, rest) = split_frame(&buf[4..]).unwrap();
        assert_eq!((head, rest), (&b"{}"[..], &b"abcde"[..]));
        assert!(split_frame(&[9, 0, 0, 0, 1]).is_err());
        assert!(split_frame(&[1, 0]).is_err());
    }
}
