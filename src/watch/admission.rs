//! Admission: a job is committed for every complete file before any work, and what needs no
//! judging is settled here: a file whose outcome an earlier run recorded but never moved, a
//! duplicate of judged content, a file that keeps stopping plateqc. A file an earlier run left
//! unfinished is judged alone (see `record::jobs` for why), so that a stop then is charged to
//! it and to no neighbour.

use super::{Jobs, WatchStats};
use crate::ingest::InFlight;
use crate::outcome::{FailureKind, Stage, Verdict};
use crate::pipeline::Engine;
use crate::record::jobs::{Arrival, JobState};
use crate::record::{JobStart, PlateRecord};
use crate::route::{route_and_close, Destination, Leaving, Routing};
use sha2::Digest;
use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub(super) struct Admission {
    pub(super) engine: Arc<Engine>,
    pub(super) routing: Arc<Routing>,
    pub(super) in_flight: InFlight,
    pub(super) jobs: Jobs,
    pub(super) stats: Arc<Mutex<WatchStats>>,
    /// `watch.max_attempts`: a file judged alone this often without finishing is quarantined.
    pub(super) max_attempts: i64,
}

/// What admission did with a file.
enum Admitted {
    /// New work, its job committed: to be judged.
    Judge { job_id: i64 },
    /// Left unfinished by an earlier run: to be judged with nothing else in flight.
    Alone { job_id: i64 },
    /// Settled without judging, or left for the next rescan.
    Settled,
}

/// The content's sha256 and size; a symbolic link is named by its target's name and never
/// followed (the pipeline records it as such).
fn hash_file(path: &Path) -> std::io::Result<(String, i64)> {
    if let Some(digest) = crate::fsutil::symlink_digest(path) {
        return Ok((digest, 0));
    }
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0i64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as i64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

impl Admission {
    /// Admits the files ingest finds until it stops (or the pipeline does), sending new work
    /// on to decode. Files found together are admitted together, as many as decode can take at
    /// the moment: their jobs are committed in one transaction.
    pub(super) fn spawn(
        self,
        mut found: mpsc::Receiver<PathBuf>,
        to_decode: mpsc::Sender<PathBuf>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut waiting: VecDeque<PathBuf> = VecDeque::new();
            loop {
                if waiting.is_empty() {
                    match found.recv().await {
                        Some(p) => waiting.push_back(p),
                        None => break,
                    }
                }
                // No more than decode has room for, so that no job is opened long before its
                // plate is worked on (a stop charges every open job of the run).
                let room = to_decode.capacity().max(1);
                while waiting.len() < room {
                    match found.try_recv() {
                        Ok(p) => waiting.push_back(p),
                        Err(_) => break,
                    }
                }
                if let Ok(f) = self.in_flight.lock() {
                    self.show_in_flight(f.len());
                }
                let batch: Vec<PathBuf> = waiting.drain(..waiting.len().min(room)).collect();
                let admitted = self.admit(&batch).await;
                // Files after one that must be judged alone wait for the next round.
                for p in batch[admitted.len()..].iter().rev() {
                    waiting.push_front(p.clone());
                }
                for (path, a) in batch.into_iter().zip(admitted) {
                    match a {
                        Admitted::Judge { job_id } => {
                            if let Ok(mut j) = self.jobs.lock() {
                                j.insert(path.clone(), job_id);
                            }
                            if to_decode.send(path).await.is_err() {
                                return;
                            }
                        }
                        Admitted::Alone { job_id } => {
                            if !self.alone(path, job_id, &to_decode).await {
                                return;
                            }
                        }
                        Admitted::Settled => self.done(&path),
                    }
                }
            }
        })
    }

    /// Judges a suspect with nothing else in flight: waits for the pipeline to empty, commits
    /// that it is taken alone, sends it, and waits for it to finish before taking anything
    /// else. `false` when the pipeline has stopped.
    async fn alone(&self, path: PathBuf, job_id: i64, to_decode: &mpsc::Sender<PathBuf>) -> bool {
        if !self.drained(to_decode).await {
            return false;
        }
        let taken = self
            .engine
            .recorder
            .take_alone(job_id, &self.engine.run_id)
            .await;
        let n = match taken {
            Ok(n) => n,
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "cannot record the job; will retry");
                self.done(&path);
                return true;
            }
        };
        tracing::warn!(path = %path.display(), alone = n, max = self.max_attempts,
            "an earlier run stopped with this plate in flight; judging it alone");
        self.count(|s| {
            s.resumed += 1;
            s.judged_alone += 1;
        });
        if let Ok(mut j) = self.jobs.lock() {
            j.insert(path.clone(), job_id);
        }
        if to_decode.send(path).await.is_err() {
            return false;
        }
        self.drained(to_decode).await
    }

    /// Waits until no admitted plate is left in the pipeline; `false` if it stopped first.
    async fn drained(&self, to_decode: &mpsc::Sender<PathBuf>) -> bool {
        loop {
            if self.jobs.lock().map(|j| j.is_empty()).unwrap_or(true) {
                return true;
            }
            if to_decode.is_closed() {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn show_in_flight(&self, n: usize) {
        self.engine
            .metrics
            .in_flight
            .store(n as u64, std::sync::atomic::Ordering::Relaxed)
    }

    /// The file is no longer in flight.
    fn done(&self, p: &Path) {
        if let Ok(mut f) = self.in_flight.lock() {
            f.remove(p);
            self.show_in_flight(f.len());
        }
    }

    fn count(&self, bump: impl FnOnce(&mut WatchStats)) {
        if let Ok(mut s) = self.stats.lock() {
            bump(&mut s);
        }
    }

    /// Decides how each file of `batch` is handled, in order, with one transaction for their
    /// jobs. The answer may cover only the first files (see [`Recorder::start_jobs`]); the
    /// rest are to be admitted again.
    ///
    /// [`Recorder::start_jobs`]: crate::record::Recorder::start_jobs
    async fn admit(&self, batch: &[PathBuf]) -> Vec<Admitted> {
        let paths = batch.to_vec();
        let hashed = tokio::task::spawn_blocking(move || {
            paths.iter().map(|p| hash_file(p).ok()).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|_| vec![None; batch.len()]);
        // A file that vanished or cannot be read between detection and now is left to the
        // rescan.
        let arrivals: Vec<Arrival> = batch
            .iter()
            .zip(&hashed)
            .filter_map(|(path, h)| {
                h.as_ref().map(|(sha256, size)| Arrival {
                    path,
                    sha256,
                    size: *size,
                })
            })
            .collect();
        let starts = match self
            .engine
            .recorder
            .start_jobs(&arrivals, self.max_attempts, &self.engine.run_id)
            .await
        {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(files = batch.len(), error = %err, "cannot record the jobs; will retry");
                return batch.iter().map(|_| Admitted::Settled).collect();
            }
        };
        let mut starts = starts.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for (path, h) in batch.iter().zip(hashed) {
            let Some((sha, size)) = h else {
                out.push(Admitted::Settled);
                continue;
            };
            let Some(start) = starts.next() else { break };
            out.push(self.settle(path, start, sha, size).await);
        }
        out
    }

    /// Acts on what the journal says of one file: new work is handed on, the rest is settled
    /// here.
    async fn settle(&self, path: &Path, start: JobStart, sha: String, size: i64) -> Admitted {
        let key = path.display().to_string();
        match start {
            JobStart::Process { job_id, attempts } => {
                if attempts > 1 {
                    tracing::info!(path = %key, attempts, "trying a plate again");
                }
                return Admitted::Judge { job_id };
            }
            JobStart::Suspect { job_id, .. } => return Admitted::Alone { job_id },
            JobStart::Resume {
                job_id,
                state,
                plate_row,
            } => {
                self.resume(path, job_id, state, plate_row).await;
                self.count(|s| s.resumed += 1);
            }
            JobStart::Duplicate { job_id, of_plate } => {
                tracing::info!(path = %key, of_plate, "identical content already judged; recorded as a duplicate");
                let label = JobState::Duplicate.as_str();
                self.route(path, job_id, label, None, Destination::Duplicates)
                    .await;
                self.count(|s| s.duplicates += 1);
            }
            JobStart::Poison { job_id, alone_runs } => {
                self.quarantine_crasher(path, job_id, alone_runs, sha, size)
                    .await;
                self.count(|s| {
                    s.poisoned += 1;
                    s.resumed += 1;
                });
            }
            JobStart::AlreadyHere => {}
        }
        Admitted::Settled
    }

    async fn route(
        &self,
        path: &Path,
        job_id: i64,
        label: &'static str,
        error: Option<&str>,
        dest: Destination,
    ) {
        let leaving = Leaving {
            job_id,
            path: path.to_path_buf(),
            dest,
            label,
            error: error.map(str::to_string),
        };
        route_and_close(&self.engine.recorder, &self.routing, leaving).await;
    }

    /// An earlier run committed the outcome but did not move the file: move it now.
    async fn resume(&self, path: &Path, job_id: i64, state: JobState, plate_row: Option<i64>) {
        let (label, error, dest) = match plate_row {
            Some(row) => {
                let (verdict, error, review) = self
                    .engine
                    .recorder
                    .verdict_of(row)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or((Verdict::Error, None, false));
                let dest = if state == JobState::Duplicate {
                    Destination::Duplicates
                } else {
                    Destination::for_judged(verdict, review)
                };
                (verdict.as_str(), error, dest)
            }
            None if state == JobState::Duplicate => (state.as_str(), None, Destination::Duplicates),
            None => (state.as_str(), None, Destination::Quarantine),
        };
        self.route(path, job_id, label, error.as_deref(), dest)
            .await;
    }

    /// A file that stopped plateqc `max_attempts` times while judged alone is recorded
    /// unjudged and quarantined.
    async fn quarantine_crasher(
        &self,
        path: &Path,
        job_id: i64,
        alone_runs: i64,
        sha256: String,
        size: i64,
    ) {
        let key = path.display().to_string();
        let message = format!(
            "plateqc stopped {alone_runs} times while processing this file alone; quarantined unjudged"
        );
        tracing::error!(path = %key, alone_runs, "quarantining a file that keeps stopping plateqc");
        let r = PlateRecord {
            run_id: self.engine.run_id.clone(),
            processed_at: crate::record::now(),
            source: path.to_path_buf(),
            source_path: path.to_string_lossy().into_owned(),
            sha256,
            size_bytes: size,
            verdict: Verdict::Error,
            error_stage: Some(Stage::Decode),
            error_kind: Some(FailureKind::Crash),
            error: Some(message.clone()),
            ..Default::default()
        };
        if self
            .engine
            .recorder
            .quarantine_job(job_id, &r)
            .await
            .is_ok()
        {
            self.route(
                path,
                job_id,
                Verdict::Error.as_str(),
                Some(&message),
                Destination::Quarantine,
            )
            .await;
        }
    }
}
