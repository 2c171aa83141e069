//! `plateqc watch`: the inbox daemon. Ingest finds complete files, admission commits a job for
//! each before any work, the shared pipeline judges the plate, and the finisher commits the
//! plate row and the job's outcome together before the file is moved. The files on disk plus
//! the jobs table are the durable queue: a restart after a crash at any point finds every
//! unfinished file again and finishes it exactly once.

use crate::ingest::{self, InFlight, WatchOptions};
use crate::outcome::{FailureKind, Stage, Verdict};
use crate::pipeline::{self, Engine, Finisher, Outcome, PipelineError};
use crate::record::jobs::JobState;
use crate::record::{JobStart, PlateRecord};
use crate::route::forward::Forwarder;
use crate::route::{route_and_close, Destination, RouteOptions, Routing};
use futures::future::BoxFuture;
use sha2::Digest;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

struct WatchFinisher {
    routing: Arc<Routing>,
    in_flight: InFlight,
    jobs: Arc<Mutex<HashMap<String, i64>>>,
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

/// Counters of a daemon run, for the log line at shutdown and the tests.
#[derive(Debug, Default, Clone)]
pub struct WatchStats {
    pub judged: u64,
    pub resumed: u64,
    pub duplicates: u64,
    pub poisoned: u64,
    pub peak_plates_in_memory: usize,
}

/// Runs until `cancel` fires, then stops taking files, finishes those in flight and returns.
pub async fn run(
    engine: Arc<Engine>,
    watch: WatchOptions,
    route: RouteOptions,
    cancel: CancellationToken,
) -> Result<WatchStats, PipelineError> {
    let reconciled = engine.recorder.reconcile_moves().await?;
    if reconciled > 0 {
        tracing::warn!(
            reconciled,
            "recorded moves that an earlier run made but did not record"
        );
    }
    if !watch.metrics_listen.is_empty() {
        match watch.metrics_listen.parse() {
            Ok(addr) => {
                match crate::metrics::serve(addr, engine.metrics.clone(), cancel.clone()).await {
                    Ok(bound) => tracing::info!(addr = %bound, "metrics listening"),
                    Err(e) => {
                        tracing::error!(addr = %addr, error = %e, "cannot serve /metrics; judging plates anyway")
                    }
                }
            }
            Err(e) => {
                tracing::error!(addr = %watch.metrics_listen, error = %e, "bad metrics address; judging plates anyway")
            }
        }
    }
    let wake = Arc::new(Notify::new());
    let net_cancel = CancellationToken::new();
    let forwarder = Arc::new(Forwarder {
        recorder: engine.recorder.clone(),
        forward: engine.config.forward.clone(),
        notes: engine.config.notes.clone(),
        notes_root: engine.config.notes_root(),
    })
    .spawn(wake.clone(), net_cancel.clone());
    if !engine.config.dicom.listen.is_empty() {
        let inbox = watch.inboxes.first().cloned().unwrap_or_default();
        let swept = crate::ingest::received::sweep_partials(&inbox);
        if swept > 0 {
            tracing::warn!(swept, "removed partial network transfers of an earlier run");
        }
        let (depth, limit) = (
            engine.config.decode.max_sequence_depth,
            engine.config.decode.max_file_bytes as usize,
        );
        let scp = Arc::new(crate::ingest::scp::Scp {
            options: engine.config.dicom.clone(),
            inbox,
            classes: crate::net::accepted_classes(&engine.config.decode.modalities),
            transfer_syntaxes: crate::decode::SUPPORTED_TRANSFER_SYNTAXES.to_vec(),
            max_object_bytes: engine.config.decode.max_file_bytes,
            check: Arc::new(move |bytes: &[u8]| {
                crate::decode::prescan::prescan(bytes, depth, limit.saturating_mul(4))
                    .err()
                    .map(|e| e.to_string())
            }),
            stats: engine.metrics.scp.clone(),
        });
        let addr = crate::ingest::scp::serve(scp, cancel.clone()).await?;
        tracing::info!(addr = %addr, ae_title = %engine.config.dicom.ae_title, "dicom listening");
    }
    let in_flight: InFlight = Arc::new(Mutex::new(Default::default()));
    let mut found = ingest::spawn(watch.clone(), in_flight.clone(), cancel.clone())?;
    let jobs: Arc<Mutex<HashMap<String, i64>>> = Arc::new(Mutex::new(HashMap::new()));
    let workers = engine.config.scan.decode_workers.max(1);
    let (to_decode_tx, to_decode_rx) = mpsc::channel::<PathBuf>(workers * 2);
    let routing = Arc::new(Routing {
        opts: route,
        wake: wake.clone(),
    });
    let finisher = Arc::new(WatchFinisher {
        routing: routing.clone(),
        in_flight: in_flight.clone(),
        jobs: jobs.clone(),
    });
    let stats = Arc::new(Mutex::new(WatchStats::default()));

    // Admission: commit a job before any work, and settle what needs no judging.
    let (e, st, inf, routing) = (
        engine.clone(),
        stats.clone(),
        in_flight.clone(),
        routing.clone(),
    );
    let admission = tokio::spawn(async move {
        while let Some(path) = found.recv().await {
            let gauge = |n: usize| {
                e.metrics
                    .in_flight
                    .store(n as u64, std::sync::atomic::Ordering::Relaxed)
            };
            if let Ok(f) = inf.lock() {
                gauge(f.len());
            }
            let done = |p: &Path| {
                if let Ok(mut f) = inf.lock() {
                    f.remove(p);
                    gauge(f.len());
                }
            };
            let p2 = path.clone();
            let hashed = tokio::task::spawn_blocking(move || hash_file(&p2)).await;
            let (sha, size) = match hashed {
                Ok(Ok(v)) => v,
                _ => {
                    // Vanished or unreadable between detection and now: the rescan retries.
                    done(&path);
                    continue;
                }
            };
            let key = path.display().to_string();
            let start = match e
                .recorder
                .start_job(&key, &sha, size, watch.max_attempts)
                .await
            {
                Ok(s) => s,
                Err(err) => {
                    tracing::error!(path = %key, error = %err, "cannot record the job; will retry");
                    done(&path);
                    continue;
                }
            };
            match start {
                JobStart::Process { job_id, attempts } => {
                    if attempts > 1 {
                        tracing::warn!(path = %key, attempts, "taking up a plate an earlier run did not finish");
                    }
                    if let Ok(mut j) = jobs.lock() {
                        j.insert(key.clone(), job_id);
                    }
                    if to_decode_tx.send(path).await.is_err() {
                        break;
                    }
                }
                JobStart::Resume {
                    job_id,
                    state,
                    plate_row,
                } => {
                    let (verdict, error) = match plate_row {
                        Some(row) => e
                            .recorder
                            .verdict_of(row)
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or((Verdict::Error, None)),
                        None => (Verdict::Error, None),
                    };
                    let (label, dest) = if state == JobState::Duplicate {
                        (state.as_str(), Destination::Duplicates)
                    } else if plate_row.is_none() {
                        (state.as_str(), Destination::Quarantine)
                    } else {
                        (verdict.as_str(), Destination::for_verdict(verdict))
                    };
                    route_and_close(
                        &e.recorder,
                        &routing,
                        job_id,
                        &path,
                        label,
                        error.as_deref(),
                        dest,
                    )
                    .await;
                    st.lock().map(|mut s| s.resumed += 1).ok();
                    done(&path);
                }
                JobStart::Duplicate { job_id, of_plate } => {
                    tracing::info!(path = %key, of_plate, "identical content already judged; recorded as a duplicate");
                    route_and_close(
                        &e.recorder,
                        &routing,
                        job_id,
                        &path,
                        "duplicate",
                        None,
                        Destination::Duplicates,
                    )
                    .await;
                    st.lock().map(|mut s| s.duplicates += 1).ok();
                    done(&path);
                }
                JobStart::Poison { job_id, attempts } => {
                    let message = format!("plateqc stopped {attempts} times while processing this file; quarantined unjudged");
                    tracing::error!(path = %key, attempts, "quarantining a file that keeps stopping plateqc");
                    let r = PlateRecord {
                        run_id: e.run_id.clone(),
                        processed_at: crate::record::now(),
                        source_path: key.clone(),
                        sha256: sha.clone(),
                        size_bytes: size,
                        verdict: Verdict::Error,
                        error_stage: Some(Stage::Decode),
                        error_kind: Some(FailureKind::Crash),
                        error: Some(message.clone()),
                        ..Default::default()
                    };
                    if e.recorder.quarantine_job(job_id, &r).await.is_ok() {
                        route_and_close(
                            &e.recorder,
                            &routing,
                            job_id,
                            &path,
                            Verdict::Error.as_str(),
                            Some(&message),
                            Destination::Quarantine,
                        )
                        .await;
                    }
                    st.lock().map(|mut s| s.poisoned += 1).ok();
                    done(&path);
                }
                JobStart::AlreadyHere => done(&path),
            }
        }
    });

    let judged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    struct Count(Arc<std::sync::atomic::AtomicU64>);
    impl pipeline::Progress for Count {
        fn done(&self, _: &Outcome) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let residency = engine.residency.clone();
    let result = pipeline::run_stream(
        engine,
        to_decode_rx,
        finisher,
        Arc::new(Count(judged.clone())),
        false,
    )
    .await;
    let _ = admission.await;
    // The forwarder stops after the pipeline, with a last dispatch of what was just routed.
    net_cancel.cancel();
    let _ = forwarder.await;
    result?;
    let mut s = stats.lock().map(|s| s.clone()).unwrap_or_default();
    s.judged = judged.load(std::sync::atomic::Ordering::Relaxed);
    s.peak_plates_in_memory = residency.peak();
    Ok(s)
}
