//! The daemon's last pipeline step: the plate rows, the jobs' outcomes and the planned moves of
//! the plates that finished together committed in one transaction, then the files moved out of
//! the inbox. A plate that could not be read for a reason that may
//! pass (out of file handles, disk full, EIO) is not recorded: it stays in the inbox, its job
//! open, and is tried again after a growing pause.

use super::Jobs;
use crate::ingest::InFlight;
use crate::pipeline::{Engine, Finisher, Outcome, PipelineError};
use crate::record::{Finish, PlateRecord};
use crate::route::{move_planned, plan_targets, Destination, Leaving, Routing};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The first pause before a plate put back is tried again; it doubles with every failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest pause: a disk that is full for an hour is retried every few minutes, and the
/// plate is never quarantined for it.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

pub(super) struct WatchFinisher {
    pub(super) routing: Arc<Routing>,
    pub(super) in_flight: InFlight,
    pub(super) jobs: Jobs,
    /// Plates put back in this run and how often, for the backoff.
    pub(super) put_back: Mutex<HashMap<PathBuf, u32>>,
}

/// The pause before the `n`th try again (n >= 1).
pub(super) fn retry_delay(n: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(LONGEST_RETRY)
}

impl WatchFinisher {
    fn release(&self, engine: &Engine, path: &PathBuf) {
        if let Ok(mut f) = self.in_flight.lock() {
            f.remove(path);
            engine
                .metrics
                .in_flight
                .store(f.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Leaves the file in the inbox with its job open; ingest may hand it on again only after
    /// the pause (it stays "in flight" until then).
    fn put_back(&self, engine: &Engine, record: &PlateRecord) {
        let n = self
            .put_back
            .lock()
            .map(|mut m| {
                let n = m.entry(record.source.clone()).or_insert(0);
                *n += 1;
                *n
            })
            .unwrap_or(1);
        let delay = retry_delay(n);
        tracing::warn!(
            path = %record.source_path,
            error = record.error.as_deref().unwrap_or(""),
            tries = n,
            retry_in_secs = delay.as_secs(),
            "cannot read the plate for now; it stays in the inbox and is tried again"
        );
        let (in_flight, path, metrics) = (
            self.in_flight.clone(),
            record.source.clone(),
            engine.metrics.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(mut f) = in_flight.lock() {
                f.remove(&path);
                metrics
                    .in_flight
                    .store(f.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
}

impl Finisher for WatchFinisher {
    fn finish<'a>(
        &'a self,
        engine: &'a Engine,
        records: Vec<PlateRecord>,
    ) -> BoxFuture<'a, Result<Vec<Option<Outcome>>, PipelineError>> {
        Box::pin(async move {
            let mut out: Vec<Option<Outcome>> = Vec::with_capacity(records.len());
            // Plates judged now: their place in `out`, job and record.
            let mut judged: Vec<(usize, i64, PlateRecord)> = Vec::new();
            for record in records {
                let path = record.source.clone();
                let job = self.jobs.lock().ok().and_then(|mut j| j.remove(&path));
                let Some(job_id) = job else {
                    // Cannot happen through admission; record it rather than lose it.
                    let row_id = engine.recorder.insert(&record).await?;
                    out.push(Some(Outcome { row_id, record }));
                    continue;
                };
                if record.transient {
                    self.put_back(engine, &record);
                    out.push(None);
                    continue;
                }
                if let Ok(mut m) = self.put_back.lock() {
                    m.remove(&path);
                }
                judged.push((out.len(), job_id, record));
                out.push(None);
            }
            if judged.is_empty() {
                return Ok(out);
            }
            let leaving: Vec<Leaving> = judged
                .iter()
                .map(|(_, job_id, r)| Leaving {
                    job_id: *job_id,
                    path: r.source.clone(),
                    dest: Destination::for_judged(r.verdict, r.review.is_some()),
                    label: r.verdict.as_str(),
                    error: r.error.clone(),
                })
                .collect();
            // The targets are planned first and committed with the verdicts as the moves'
            // intents: one transaction for the group, before any file moves.
            let plans = plan_targets(&self.routing.opts, &leaving).await;
            let finishing: Vec<Finish> = judged
                .iter()
                .zip(&plans)
                .map(|((_, job_id, r), plan)| Finish {
                    job_id: *job_id,
                    record: r,
                    routing_to: plan.as_ref().ok().and_then(|t| t.as_deref()),
                })
                .collect();
            let rows = engine.recorder.finish_jobs(&finishing).await?;
            // Before the moves wake the note writer.
            for (_, job_id, r) in &judged {
                if let Some(m) = &r.montage_jpeg {
                    self.routing.montages.put(*job_id, m.clone());
                }
            }
            move_planned(
                &engine.recorder,
                &self.routing,
                leaving.into_iter().zip(plans).collect(),
            )
            .await;
            for ((slot, _, record), (row_id, conflict)) in judged.into_iter().zip(rows) {
                if conflict {
                    tracing::warn!(path = %record.source_path, sop = record.sop_instance_uid.as_deref().unwrap_or(""),
                        "SOP Instance UID already recorded with different content; recorded separately and flagged");
                }
                self.release(engine, &record.source);
                out[slot] = Some(Outcome { row_id, record });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_and_is_capped() {
        let secs: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), LONGEST_RETRY);
    }
}
