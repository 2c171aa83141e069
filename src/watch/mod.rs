//! `plateqc watch`: the inbox daemon. Ingest finds complete files, admission commits a job for
//! each before any work ([`admission`]), the shared pipeline judges the plate, and the finisher
//! commits the plate row and the job's outcome together before the file is moved
//! ([`finisher`]). The files on disk plus the jobs table are the durable queue: a restart after
//! a crash at any point finds every unfinished file again and finishes it exactly once.
//!
//! [`serve`] owns the daemon's life: it starts the engine, answers SIGINT/SIGTERM (stop taking
//! plates, finish those in flight) and SIGHUP (reload the model), and gives the plates in
//! flight `watch.shutdown_grace_secs` to finish.

mod admission;
mod finisher;

use crate::config::Config;
use crate::ingest::{self, InFlight, WatchOptions};
use crate::pipeline::{self, Engine, Outcome, PipelineError};
use crate::record::site::wait_for_database;
use crate::route::forward::{Forwarder, Transcoder};
use crate::route::{RouteOptions, Routing};
use admission::Admission;
use finisher::WatchFinisher;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Paths admitted for judging and their job ids, from admission to the finisher. Keyed by the
/// path itself: a name that is not UTF-8 must come back to the same key.
type Jobs = Arc<Mutex<HashMap<PathBuf, i64>>>;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("installing the {signal} handler")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Counters of a daemon run, for the log line at shutdown and the tests.
#[derive(Debug, Default, Clone)]
pub struct WatchStats {
    pub judged: u64,
    /// Files an earlier run left unfinished that this run finished: those whose outcome was
    /// committed but not moved, those judged again alone (`judged_alone`) and those
    /// quarantined for stopping plateqc too often (`poisoned`).
    pub resumed: u64,
    /// Files in flight when an earlier run stopped, judged again alone by this run.
    pub judged_alone: u64,
    pub duplicates: u64,
    pub poisoned: u64,
    pub peak_plates_in_memory: usize,
}

/// Runs the daemon until `shutdown` is cancelled or SIGINT/SIGTERM arrives, then stops taking
/// files and lets those in flight finish, for at most `watch.shutdown_grace_secs`. Returns the
/// run's counters, or `None` when plates were still in flight at the deadline (they are taken
/// up again at the next start).
///
/// `on_start` runs once the daemon is up, with its engine: the caller's own tasks beside the
/// daemon (the report's `/metrics` gauges), stopped by `shutdown`.
pub async fn serve(
    config: Config,
    shutdown: CancellationToken,
    on_start: impl FnOnce(&Arc<Engine>, CancellationToken),
) -> Result<Option<WatchStats>, WatchError> {
    let mut route = config.route.clone();
    route.root = config.route_root();
    let watch_opts = config.watch.clone();
    // SIGTERM stops the daemon cleanly from here on, even while it waits for its database.
    stop_on_signals(shutdown.clone())?;
    // A daemon started before its database (a reboot) waits for it instead of exiting.
    let location = crate::record::DbLocation::parse(&config.paths.db);
    if !wait_for_database(&location, &shutdown)
        .await
        .map_err(PipelineError::from)?
    {
        return Ok(None);
    }
    let engine = Arc::new(Engine::start(config).await?);
    // One daemon per site: a second one would take up the first one's files as its own.
    let claim = engine
        .recorder
        .claim_site()
        .await
        .map_err(PipelineError::from)?;
    // Handlers are installed before "watching" is logged, so a signal sent as soon as the
    // daemon says it is up is never met by the default action (which would kill it).
    reload_on_sighup(engine.clone(), shutdown.clone())?;
    tracing::info!(
        inboxes = ?watch_opts.inboxes,
        routed = %route.root.display(),
        model = %engine.model().contract.model_version,
        "watching"
    );
    on_start(&engine, shutdown.clone());
    let grace = Duration::from_secs(watch_opts.shutdown_grace_secs);
    let deadline = {
        let c = shutdown.clone();
        async move {
            c.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    let recorder = engine.recorder.clone();
    let ran = tokio::select! {
        r = run(engine, watch_opts, route, shutdown) => Some(r),
        _ = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "plates still in flight at the shutdown deadline; they will be taken up again at the next start");
            None
        }
    };
    // Connections are closed, not dropped, so the server logs no lost client; bounded, since
    // after the deadline a plate's task may still hold one.
    claim.release().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), recorder.close()).await;
    let Some(stats) = ran else {
        return Ok(None);
    };
    let stats = stats?;
    tracing::info!(
        judged = stats.judged,
        resumed = stats.resumed,
        judged_alone = stats.judged_alone,
        duplicates = stats.duplicates,
        quarantined_crashers = stats.poisoned,
        peak_plates_in_memory = stats.peak_plates_in_memory,
        "stopped"
    );
    Ok(Some(stats))
}

/// SIGINT or SIGTERM: stop taking plates and finish the ones in flight.
fn stop_on_signals(shutdown: CancellationToken) -> Result<(), WatchError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|source| WatchError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = shutdown.cancelled() => return,
        }
        tracing::info!("stopping: no new plates; finishing the ones in flight");
        shutdown.cancel();
    });
    Ok(())
}

/// SIGHUP: load the model file again; a broken file keeps the running model.
fn reload_on_sighup(engine: Arc<Engine>, shutdown: CancellationToken) -> Result<(), WatchError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|source| WatchError::Signal {
        signal: "SIGHUP",
        source,
    })?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                got = hup.recv() => if got.is_none() { break },
            }
            match engine.reload_model().await {
                Ok(m) => {
                    tracing::info!(model = %m.contract.model_version, sha256 = %m.contract.sha256, "model reloaded")
                }
                Err(err) => {
                    tracing::error!(error = %err, "model reload failed; keeping the running model")
                }
            }
        }
    });
    Ok(())
}

/// Runs until `cancel` fires, then stops taking files, finishes those in flight and returns.
pub async fn run(
    engine: Arc<Engine>,
    watch: WatchOptions,
    route: RouteOptions,
    cancel: CancellationToken,
) -> Result<WatchStats, PipelineError> {
    reconcile_moves(&engine).await?;
    serve_metrics(&engine, &watch, &cancel).await?;
    let wake = Arc::new(Notify::new());
    let net_cancel = CancellationToken::new();
    // Explain hands held-back plates' montages to the note writer in memory when notes carry
    // them, so the writer need not read the file back.
    let montages = Arc::new(crate::route::MontageHandOff::default());
    engine.keep_montage_jpeg(engine.config.notes.enabled && engine.config.notes.secondary_capture);
    let forwarder = start_forwarder(&engine, wake.clone(), net_cancel.clone(), montages.clone());
    start_receiver(&engine, &watch, &cancel).await?;
    let in_flight: InFlight = Arc::new(Mutex::new(Default::default()));
    let found = ingest::spawn(watch.clone(), in_flight.clone(), cancel.clone())?;
    let jobs: Jobs = Arc::new(Mutex::new(HashMap::new()));
    let workers = engine.config.scan.decode_workers.max(1);
    let (to_decode_tx, to_decode_rx) = mpsc::channel::<PathBuf>(workers * 2);
    let routing = Arc::new(Routing {
        opts: route,
        wake,
        montages,
    });
    let stats = Arc::new(Mutex::new(WatchStats::default()));
    let admission = Admission {
        engine: engine.clone(),
        routing: routing.clone(),
        in_flight: in_flight.clone(),
        jobs: jobs.clone(),
        stats: stats.clone(),
        max_attempts: watch.max_attempts,
    }
    .spawn(found, to_decode_tx);
    let finisher = Arc::new(WatchFinisher {
        routing,
        in_flight,
        jobs,
        put_back: Default::default(),
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

/// Moves an earlier run made but did not record are recorded now.
async fn reconcile_moves(engine: &Engine) -> Result<(), PipelineError> {
    let reconciled = engine.recorder.reconcile_moves().await?;
    if reconciled > 0 {
        tracing::warn!(
            reconciled,
            "recorded moves that an earlier run made but did not record"
        );
    }
    Ok(())
}

/// `/healthz` and `/metrics`, unless disabled. A daemon that cannot serve them stops at start
/// rather than run unseen (two daemons of one host given the same address, say).
async fn serve_metrics(
    engine: &Engine,
    watch: &WatchOptions,
    cancel: &CancellationToken,
) -> Result<(), PipelineError> {
    if watch.metrics_listen.is_empty() {
        return Ok(());
    }
    let failed = |source| PipelineError::Metrics {
        addr: watch.metrics_listen.clone(),
        source,
    };
    let addr = watch.metrics_listen.parse().map_err(|e| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not host:port ({e})"),
        ))
    })?;
    let bound = crate::metrics::serve(addr, engine.metrics.clone(), cancel.clone())
        .await
        .map_err(failed)?;
    tracing::info!(addr = %bound, "metrics listening");
    Ok(())
}

/// The network side of routing: rejection notes and the outbox, woken by each routed plate.
fn start_forwarder(
    engine: &Engine,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    montages: Arc<crate::route::MontageHandOff>,
) -> tokio::task::JoinHandle<()> {
    Arc::new(Forwarder {
        montages,
        recorder: engine.recorder.clone(),
        forward: engine.config.forward.clone(),
        notes: engine.config.notes.clone(),
        notes_root: engine.config.notes_root(),
        calling_ae_title: engine.config.calling_ae_title(),
        status: engine.metrics.forward.clone(),
        transcoder: Transcoder {
            policy: engine.config.decode.clone(),
            pool: engine.decoder.clone(),
        },
    })
    .spawn(wake, cancel)
}

/// The DICOM receiver, when `[dicom] listen` is set: instances go to the first inbox.
async fn start_receiver(
    engine: &Engine,
    watch: &WatchOptions,
    cancel: &CancellationToken,
) -> Result<(), PipelineError> {
    let config = &engine.config;
    if config.dicom.listen.is_empty() {
        return Ok(());
    }
    let inbox = watch.inboxes.first().cloned().unwrap_or_default();
    let swept = crate::ingest::received::sweep_partials(&inbox);
    if swept > 0 {
        tracing::warn!(swept, "removed partial network transfers of an earlier run");
    }
    let (depth, limit) = (
        config.decode.max_sequence_depth,
        config.decode.max_file_bytes as usize,
    );
    let scp = Arc::new(crate::ingest::scp::Scp {
        options: config.dicom.clone(),
        inbox,
        classes: crate::net::accepted_classes(&config.decode.modalities),
        transfer_syntaxes: crate::decode::SUPPORTED_TRANSFER_SYNTAXES.to_vec(),
        max_object_bytes: config.decode.max_file_bytes,
        // Decode's check (the pre-scan, then the SOP UIDs) decides how a received data set is
        // answered; it runs in a decode worker like every other parse of received bytes. A
        // deflated data set may inflate to `decode.max_file_bytes`, the bound decode itself
        // applies, and no more (the inflation streams through a bounded reader).
        check: match engine.decoder.clone() {
            Some(pool) => Arc::new(move |bytes: &[u8]| {
                pool.check(bytes, depth, limit)
                    .map(|u| (u.sop_class, u.sop_instance))
            }),
            None => Arc::new(move |bytes: &[u8]| {
                crate::decode::check_data_set(bytes, depth, limit)
                    .map(|u| (u.sop_class, u.sop_instance))
            }),
        },
        stats: engine.metrics.scp.clone(),
    });
    let addr = crate::ingest::scp::serve(scp, cancel.clone()).await?;
    tracing::info!(addr = %addr, ae_title = %config.dicom.ae_title, "dicom listening");
    Ok(())
}
