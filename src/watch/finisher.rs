//! The daemon's last pipeline step: the plate row and the job's outcome committed together,
//! then the file moved out of the inbox. A plate that could not be read for a reason that may
//! pass (out of file handles, disk full, EIO) is not recorded: it stays in the inbox, its job
//! open, and is tried again after a growing pause.

use super::Jobs;
use crate::ingest::InFlight;
use crate::pipeline::{Engine, Finisher, Outcome, PipelineError};
use crate::record::PlateRecord;
use crate::route::{route_and_close, Destination, Routing};
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
        record: PlateRecord,
    ) -> BoxFuture<'a, Result<Option<Outcome>, PipelineError>> {
        Box::pin(async move {
            let path = record.source.clone();
            let job = self.jobs.lock().ok().and_then(|mut j| j.remove(&path));
            let Some(job_id) = job else {
                // Cannot happen through admission; record it rather than lose it.
                let row_id = engine.recorder.insert(&record).await?;
                return Ok(Some(Outcome { row_id, record }));
            };
            if record.transient {
                self.put_back(engine, &record);
                return Ok(None);
            }
            if let Ok(mut m) = self.put_back.lock() {
                m.remove(&path);
            }
            let (row_id, conflict) = engine.recorder.finish_job(job_id, &record).await?;
            if conflict {
                tracing::warn!(path = %record.source_path, sop = record.sop_instance_uid.as_deref().unwrap_or(""),
                    "SOP Instance UID already recorded with different content; recorded separately and flagged");
            }
            let dest = Destination::for_verdict(record.verdict);
            route_and_close(
                &engine.recorder,
                &self.routing,
                job_id,
                &path,
                record.verdict.as_str(),
                record.error.as_deref(),
                dest,
            )
            .await;
            self.release(engine, &path);
            Ok(Some(Outcome { row_id, record }))
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
