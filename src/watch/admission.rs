//! Admission: a job is committed for every complete file before any work, and what needs no
//! judging is settled here: a file whose outcome an earlier run recorded but never moved, a
//! duplicate of judged content, a file that keeps stopping plateqc.

use super::{Jobs, WatchStats};
use crate::ingest::InFlight;
use crate::outcome::{FailureKind, Stage, Verdict};
use crate::pipeline::Engine;
use crate::record::jobs::JobState;
use crate::record::{JobStart, PlateRecord};
use crate::route::{route_and_close, Destination, Routing};
use sha2::Digest;
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
    /// `watch.max_attempts`: a file taken this often without finishing is quarantined.
    pub(super) max_attempts: i64,
}

/// What admission did with a file.
enum Admitted {
    /// New work, its job committed: to be judged.
    Judge { job_id: i64 },
    /// Settled without judging, or left for the next rescan.
    Settled,
}

fn hash_file(path: &Path) -> std::io::Result<(String, i64)> {
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
    /// on to decode.
    pub(super) fn spawn(
        self,
        mut found: mpsc::Receiver<PathBuf>,
        to_decode: mpsc::Sender<PathBuf>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(path) = found.recv().await {
                if let Ok(f) = self.in_flight.lock() {
                    self.show_in_flight(f.len());
                }
                match self.admit(&path).await {
                    Admitted::Judge { job_id } => {
                        if let Ok(mut j) = self.jobs.lock() {
                            j.insert(path.display().to_string(), job_id);
                        }
                        if to_decode.send(path).await.is_err() {
                            break;
                        }
                    }
                    Admitted::Settled => self.done(&path),
                }
            }
        })
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

    async fn admit(&self, path: &Path) -> Admitted {
        let p2 = path.to_path_buf();
        let hashed = tokio::task::spawn_blocking(move || hash_file(&p2)).await;
        let Ok(Ok((sha, size))) = hashed else {
            // Vanished or unreadable between detection and now: the rescan retries.
            return Admitted::Settled;
        };
        let key = path.display().to_string();
        let start = match self
            .engine
            .recorder
            .start_job(&key, &sha, size, self.max_attempts)
            .await
        {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(path = %key, error = %err, "cannot record the job; will retry");
                return Admitted::Settled;
            }
        };
        match start {
            JobStart::Process { job_id, attempts } => {
                if attempts > 1 {
                    tracing::warn!(path = %key, attempts, "taking up a plate an earlier run did not finish");
                }
                return Admitted::Judge { job_id };
            }
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
            JobStart::Poison { job_id, attempts } => {
                self.quarantine_crasher(path, job_id, attempts, sha, size)
                    .await;
                self.count(|s| s.poisoned += 1);
            }
            JobStart::AlreadyHere => {}
        }
        Admitted::Settled
    }

    async fn route(
        &self,
        path: &Path,
        job_id: i64,
        label: &str,
        error: Option<&str>,
        dest: Destination,
    ) {
        route_and_close(
            &self.engine.recorder,
            &self.routing,
            job_id,
            path,
            label,
            error,
            dest,
        )
        .await;
    }

    /// An earlier run committed the outcome but did not move the file: move it now.
    async fn resume(&self, path: &Path, job_id: i64, state: JobState, plate_row: Option<i64>) {
        let (label, error, dest) = match plate_row {
            Some(row) => {
                let (verdict, error) = self
                    .engine
                    .recorder
                    .verdict_of(row)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or((Verdict::Error, None));
                let dest = if state == JobState::Duplicate {
                    Destination::Duplicates
                } else {
                    Destination::for_verdict(verdict)
                };
                (verdict.as_str(), error, dest)
            }
            None if state == JobState::Duplicate => (state.as_str(), None, Destination::Duplicates),
            None => (state.as_str(), None, Destination::Quarantine),
        };
        self.route(path, job_id, label, error.as_deref(), dest)
            .await;
    }

    /// A file that stopped plateqc `max_attempts` times is recorded unjudged and quarantined.
    async fn quarantine_crasher(
        &self,
        path: &Path,
        job_id: i64,
        attempts: i64,
        sha256: String,
        size: i64,
    ) {
        let key = path.display().to_string();
        let message = format!(
            "plateqc stopped {attempts} times while processing this file; quarantined unjudged"
        );
        tracing::error!(path = %key, attempts, "quarantining a file that keeps stopping plateqc");
        let r = PlateRecord {
            run_id: self.engine.run_id.clone(),
            processed_at: crate::record::now(),
            source_path: key,
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
