//! Finding complete plate files in inbox folders: inotify events through `notify`, a full scan
//! at start-up and a periodic rescan (events are lost on queue overflow and on network file
//! systems). A file is handed on only once it is complete: closed after writing, or unchanged in
//! size and mtime for the quiet time. Temporary names are never touched.

use super::is_ignored;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot watch {path}: {reason}")]
    Watch { path: PathBuf, reason: String },
}

/// Inbox settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchOptions {
    /// Folders watched recursively for plates.
    pub inboxes: Vec<PathBuf>,
    /// A file unchanged this long (size and mtime) is taken as complete even without a
    /// close-after-write event (writers over the network, or that never close).
    pub quiet_ms: u64,
    /// Full rescan period, the fallback for lost events.
    pub rescan_secs: u64,
    /// A file that stops plateqc this many times while judged alone (after a stop, the plates
    /// that were in flight are judged again one at a time) is quarantined unjudged.
    pub max_attempts: i64,
    /// Address of `/healthz` and `/metrics`; empty disables them. Keep it on loopback (or
    /// behind a proxy): the endpoint has no authentication.
    pub metrics_listen: String,
    /// On SIGINT/SIGTERM, how long plates in flight may take to finish before plateqc exits
    /// anyway; unfinished plates are taken up again at the next start.
    pub shutdown_grace_secs: u64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            inboxes: vec![PathBuf::from("inbox")],
            quiet_ms: 2000,
            rescan_secs: 30,
            max_attempts: 3,
            metrics_listen: "127.0.0.1:9898".into(),
            shutdown_grace_secs: 30,
        }
    }
}

/// Paths handed on and not yet finished: never handed on twice at once.
pub type InFlight = Arc<Mutex<HashSet<PathBuf>>>;

#[derive(Clone, Copy, PartialEq)]
struct Signature {
    size: u64,
    mtime: Option<SystemTime>,
}

struct Candidate {
    sig: Signature,
    stable_since: Instant,
    closed: bool,
}

/// Size and mtime of a file, or of a symbolic link itself: links are never followed, they are
/// handed on like files and recorded as links (see `pipeline`).
fn signature(p: &Path) -> Option<Signature> {
    let m = std::fs::symlink_metadata(p).ok()?;
    (m.is_file() || m.file_type().is_symlink()).then(|| Signature {
        size: m.len(),
        mtime: m.modified().ok(),
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if is_ignored(&p) {
            continue;
        }
        // The entry's own type: a link to a folder is not descended into (no loops, nothing
        // outside the inbox), a link is handed on as itself.
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() || t.is_symlink() => out.push(p),
            _ => {}
        }
    }
}

/// Starts watching; complete files arrive on the returned channel (bounded: when the
/// pipeline is busy, the watcher waits and keeps collecting candidates, never file contents).
pub fn spawn(
    opts: WatchOptions,
    in_flight: InFlight,
    cancel: CancellationToken,
) -> Result<mpsc::Receiver<PathBuf>, IngestError> {
    let (events_tx, mut events_rx) = mpsc::channel::<notify::Event>(4096);
    let overflow = Arc::new(AtomicBool::new(false));
    let overflow_cb = overflow.clone();
    // Links inside an inbox are not followed when watches are added (notify would by
    // default), for the same reasons `walk` does not follow them.
    let mut watcher = notify::RecommendedWatcher::new(
        move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if events_tx.try_send(ev).is_err() {
                    overflow_cb.store(true, Ordering::Relaxed);
                }
            }
            Err(_) => overflow_cb.store(true, Ordering::Relaxed),
        },
        notify::Config::default().with_follow_symlinks(false),
    )
    .map_err(|e| IngestError::Watch {
        path: PathBuf::new(),
        reason: e.to_string(),
    })?;
    for dir in &opts.inboxes {
        crate::fsutil::create_private_dir_all(dir).map_err(|e| IngestError::Watch {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|e| IngestError::Watch {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
    }
    let (tx, rx) = mpsc::channel::<PathBuf>(1);
    tokio::spawn(async move {
        let _watcher = watcher; // dropped when this task ends, which stops the events
        let quiet = Duration::from_millis(opts.quiet_ms);
        // Candidates (not whole folders) are checked this often; it bounds the delay between a
        // file becoming complete and its being taken.
        let tick = Duration::from_millis((opts.quiet_ms / 4).clamp(20, 100));
        let mut candidates: HashMap<PathBuf, Candidate> = HashMap::new();
        let mut next_rescan = Instant::now();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if Instant::now() >= next_rescan || overflow.swap(false, Ordering::Relaxed) {
                let mut found = Vec::new();
                for dir in &opts.inboxes {
                    walk(dir, &mut found);
                }
                for p in found {
                    note(&mut candidates, p, false);
                }
                next_rescan = Instant::now() + Duration::from_secs(opts.rescan_secs.max(1));
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = events_rx.recv() => {
                    let Some(ev) = ev else { break };
                    // Complete now: closed after writing, or renamed into place (the writer's
                    // atomic rename is the conventional "done" signal).
                    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
                    let closed = matches!(
                        ev.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                    );
                    for p in ev.paths {
                        if !is_ignored(&p) {
                            note(&mut candidates, p, closed);
                        }
                    }
                }
                _ = ticker.tick() => {
                    let mut ready = Vec::new();
                    candidates.retain(|p, c| {
                        let Some(sig) = signature(p) else { return false };
                        if sig != c.sig {
                            c.sig = sig;
                            c.stable_since = Instant::now();
                            c.closed = false;
                            return true;
                        }
                        if c.closed || c.stable_since.elapsed() >= quiet {
                            ready.push(p.clone());
                            return false;
                        }
                        true
                    });
                    ready.sort();
                    for p in ready {
                        let fresh = in_flight.lock().map(|mut s| s.insert(p.clone())).unwrap_or(false);
                        if !fresh {
                            continue;
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            sent = tx.send(p) => if sent.is_err() { return },
                        }
                    }
                }
            }
        }
    });
    Ok(rx)
}

fn note(candidates: &mut HashMap<PathBuf, Candidate>, p: PathBuf, closed: bool) {
    let Some(sig) = signature(&p) else { return };
    match candidates.get_mut(&p) {
        Some(c) => {
            if c.sig != sig {
                c.sig = sig;
                c.stable_since = Instant::now();
            }
            c.closed |= closed;
        }
        None => {
            candidates.insert(
                p,
                Candidate {
                    sig,
                    stable_since: Instant::now(),
                    closed,
                },
            );
        }
    }
}
