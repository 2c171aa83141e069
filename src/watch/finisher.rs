//! The daemon's last pipeline step: the plate row and the job's outcome committed together,
//! then the file moved out of the inbox.

use super::Jobs;
use crate::ingest::InFlight;
use crate::pipeline::{Engine, Finisher, Outcome, PipelineError};
use crate::record::PlateRecord;
use crate::route::{route_and_close, Destination, Routing};
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) struct WatchFinisher {
    pub(super) routing: Arc<Routing>,
    pub(super) in_flight: InFlight,
    pub(super) jobs: Jobs,
}

impl Finisher for WatchFinisher {
    fn finish<'a>(
        &'a self,
        engine: &'a Engine,
        record: PlateRecord,
    ) -> BoxFuture<'a, Result<Outcome, PipelineError>> {
        Box::pin(async move {
            let path = PathBuf::from(&record.source_path);
            let job = self
                .jobs
                .lock()
                .ok()
                .and_then(|mut j| j.remove(&record.source_path));
            let Some(job_id) = job else {
                // Cannot happen through admission; record it rather than lose it.
                let row_id = engine.recorder.insert(&record).await?;
                return Ok(Outcome { row_id, record });
            };
            let (row_id, conflict) = engine.recorder.finish_job(job_id, &record).await?;
            if conflict {
                tracing::warn!(path = %path.display(), sop = record.sop_instance_uid.as_deref().unwrap_or(""),
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
            if let Ok(mut f) = self.in_flight.lock() {
                f.remove(&path);
                engine
                    .metrics
                    .in_flight
                    .store(f.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(Outcome { row_id, record })
        })
    }
}
