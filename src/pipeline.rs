//! Wiring of the stages: ingest -> decode -> infer -> explain -> record, with bounded channels
//! between them and CPU work on blocking threads. Only ingest watches the cancellation token;
//! every later stage finishes what it holds and stops when its input closes, so a shutdown
//! never leaves a plate half-recorded. The work of each stage is its room's
//! ([`decode::load`], [`infer::Model::judge`], [`Painter::write_overlays`]); this module only moves
//! plates between them and turns their outcomes into the record.

use crate::config::Config;
use crate::decode::{self, Loaded};
use crate::explain::{Painter, PlateImage};
use crate::infer::{InferError, Inference, Judgement, Model};
use crate::outcome::{FailureKind, Stage, Verdict};
use crate::privacy::{KeyError, PatientHasher};
use crate::record::{PlateRecord, RecordError, Recorder};
use futures::future::BoxFuture;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Route(#[from] crate::route::RouteError),
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The model could not be loaded, at start or on reload.
    #[error(transparent)]
    Model(#[from] InferError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Scp(#[from] crate::ingest::scp::ScpError),
    /// A blocking worker panicked or was cancelled.
    #[error(transparent)]
    Worker(#[from] tokio::task::JoinError),
    /// The daemon's `/metrics` endpoint could not be served: it does not run without it.
    #[error("cannot serve /metrics on {addr}: {source}; another daemon may be using that address: give each daemon its own [watch] metrics_listen (\"\" turns the endpoint off)")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// Counts plates whose pixels (or anything derived from them) are held in memory, and the
/// peak: the bounded channels are what bound it, and this is how tests and logs see the bound.
#[derive(Default)]
pub struct Residency {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Residency {
    pub fn now(&self) -> usize {
        self.now.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn enter(self: &Arc<Self>) -> Resident {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.now.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(n, Relaxed);
        Resident(self.clone())
    }
}

/// Held by a plate from the start of its decode until its overlays are written.
struct Resident(Arc<Residency>);

impl Drop for Resident {
    fn drop(&mut self) {
        self.0
            .now
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The most plates a pipeline holds in memory at once with these settings: `workers + 1` being
/// decoded and as many decoded waiting for their turn, `2 x batch` queued for inference, one
/// batch being inferred, `2 x batch` queued for explanation, `workers` being explained.
pub fn resident_bound(workers: usize, batch: usize) -> usize {
    3 * workers + 2 + 5 * batch
}

/// Everything the stages share for a run.
pub struct Engine {
    pub config: Arc<Config>,
    /// The current model; swapped whole on reload. Each plate keeps the model it was
    /// preprocessed for until it is explained, so a reload never mixes two contracts.
    model: std::sync::RwLock<Arc<Model>>,
    pub recorder: Recorder,
    pub hasher: PatientHasher,
    pub run_id: String,
    painter: Painter,
    pub residency: Arc<Residency>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The decode workers (`decode.isolate`); `None` decodes in this process.
    pub decoder: Option<Arc<decode::worker::DecodePool>>,
    /// Whether explain hands unusable plates' montages on as JPEG: set by the daemon when it
    /// writes rejection notes with a secondary capture (`scan` writes no notes).
    montage_jpeg: std::sync::atomic::AtomicBool,
}

/// The site's calibrated threshold (`plateqc calibrate`) replaces the model's own when the
/// site calibrated this model version; every plate row records the threshold that judged it.
async fn calibrated(recorder: &Recorder, mut model: Model) -> Result<Model, PipelineError> {
    if let Some(c) = recorder
        .site_calibration(&model.contract.model_version)
        .await?
    {
        tracing::info!(
            calibration = c.id,
            threshold = c.threshold,
            model_threshold = model.contract.threshold,
            by = %c.calibrated_by,
            at = %c.created_at,
            "the site's calibrated threshold applies"
        );
        model.contract.threshold = c.threshold as f32;
    }
    Ok(model)
}

/// Loads the configured model on a blocking thread.
async fn load_model(config: &Config) -> Result<Model, PipelineError> {
    let opts = config.infer.clone();
    let path = config.paths.model.clone();
    let ort = config.paths.ort_library.clone();
    Ok(tokio::task::spawn_blocking(move || Model::load(&path, ort.as_deref(), &opts)).await??)
}

impl Engine {
    /// The model new plates are judged with.
    pub fn model(&self) -> Arc<Model> {
        self.model
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Loads the model file again (e.g. on SIGHUP) and swaps it in if it honours the contract;
    /// plates already in the pipeline finish with the model they started with.
    pub async fn reload_model(&self) -> Result<Arc<Model>, PipelineError> {
        let model = load_model(&self.config).await?;
        let model = Arc::new(calibrated(&self.recorder, model).await?);
        if let Ok(mut m) = self.model.write() {
            *m = model.clone();
        }
        Ok(model)
    }

    pub async fn start(config: Config) -> Result<Engine, PipelineError> {
        let model = load_model(&config).await?;
        let recorder = Recorder::open_as(&config.paths.db, &config.site()).await?;
        let model = calibrated(&recorder, model).await?;
        let hasher = PatientHasher::load_or_create(&config.key_file())?;
        let painter = Painter::new(&config.explain);
        let run_id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        );
        let decoder = config.decode.isolate.then(|| {
            let pool = decode::worker::DecodePool::new(
                decode::worker::default_program(),
                decode::worker::WorkerLimits::of(&config.decode),
            );
            pool.warm(config.scan.decode_workers.max(1));
            Arc::new(pool)
        });
        Ok(Engine {
            decoder,
            config: Arc::new(config),
            model: std::sync::RwLock::new(Arc::new(model)),
            recorder,
            hasher,
            run_id,
            painter,
            residency: Arc::new(Residency::default()),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            montage_jpeg: Default::default(),
        })
    }

    /// Asks explain for the montage of every unusable plate as JPEG ([`PlateRecord::montage_jpeg`]).
    pub fn keep_montage_jpeg(&self, on: bool) {
        self.montage_jpeg
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What became of one file, for the summary and the CLI.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub row_id: i64,
    pub record: PlateRecord,
}

/// Reports progress; the CLI shows a bar on a terminal and log lines otherwise.
pub trait Progress: Send + Sync {
    fn done(&self, outcome: &Outcome);
}

impl Progress for () {
    fn done(&self, _: &Outcome) {}
}

/// A plate between decode and infer: display image kept, raw pixels dropped (memory).
struct Decoded {
    _resident: Resident,
    model: Arc<Model>,
    base: PlateRecord,
    plate: Loaded,
    started: Instant,
}

struct Inferred {
    decoded: Decoded,
    inference: Inference,
    judgement: Judgement,
}

// Both variants are moved, never copied, through short bounded channels; boxing would add
// an allocation per plate for no measurable gain.
#[allow(clippy::large_enum_variant)]
enum Item<T> {
    Ok(T),
    Done(PlateRecord),
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The record of a plate whose blocking worker panicked: the panic costs this plate only.
fn crashed(source: &Path, stage: Stage, join: tokio::task::JoinError) -> PlateRecord {
    let base = PlateRecord::for_file("", source);
    base.failed(
        stage,
        FailureKind::Panic,
        format!("{stage} crashed: {join}"),
        Instant::now(),
    )
}

/// Waits before each new try of a read or write that failed for a reason that may pass
/// ([`crate::fsutil::is_transient`]): a short burst of file-handle or disk trouble costs a
/// couple of seconds, not a plate. The daemon tries a plate that still cannot be read again
/// later, with a longer backoff (see `watch::finisher`).
const TRANSIENT_RETRY: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(400),
    std::time::Duration::from_millis(1600),
];

/// Decode stage: the plate, preprocessed for the current model, and its identity recorded.
fn decode_plate(engine: &Engine, path: &Path) -> Item<Decoded> {
    let started = Instant::now();
    let resident = engine.residency.enter();
    let model = engine.model();
    let mut base = PlateRecord::for_file(&engine.run_id, path);
    // Links found in an inbox or a folder are not followed: what they point to is not the
    // site's to hand over (it may be anywhere, or a loop); the link is recorded and routed.
    if let Some(digest) = crate::fsutil::symlink_digest(path) {
        base.sha256 = digest;
        return Item::Done(
            base.failed(
                Stage::Read,
                FailureKind::Symlink,
                "a symbolic link: plateqc does not follow links found in an inbox or a scanned \
             folder; copy or move the file itself there"
                    .into(),
                started,
            ),
        );
    }
    let policy = &engine.config.decode;
    let want = decode::Want {
        input: model.contract.input(),
        display: engine.painter.options().write_overlays,
    };
    let transient = |e: &decode::load::LoadError| matches!(&e.failure, decode::load::LoadFailure::Read(io) if crate::fsutil::is_transient(io));
    let loaded =
        crate::fsutil::retry_transient(&TRANSIENT_RETRY, transient, || match &engine.decoder {
            Some(pool) => decode::load::load_isolated(path, policy, want, pool),
            None => decode::load(path, policy, want),
        });
    match loaded {
        Ok(plate) => {
            base.size_bytes = plate.size_bytes;
            base.sha256 = plate.sha256.clone();
            base.set_identity(&plate.header, &engine.hasher);
            base.decode_ms = Some(ms_since(started));
            Item::Ok(Decoded {
                _resident: resident,
                model,
                base,
                plate,
                started,
            })
        }
        Err(e) => {
            base.transient = transient(&e);
            base.size_bytes = e.size_bytes;
            base.sha256 = e.sha256.clone().unwrap_or_default();
            if let Some(h) = &e.header {
                base.set_identity(h, &engine.hasher);
            }
            Item::Done(base.failed(e.stage(), e.kind(), e.to_string(), started))
        }
    }
}

/// Infer stage: one batch, split at model changes (a reload mid-batch) so that each run goes
/// to its own model.
fn infer_batch(batch: Vec<Decoded>) -> Vec<Item<Inferred>> {
    let mut out = Vec::with_capacity(batch.len());
    let mut run: Vec<Decoded> = Vec::new();
    for d in batch {
        if run.last().is_some_and(|r| !Arc::ptr_eq(&r.model, &d.model)) {
            out.extend(infer_run(std::mem::take(&mut run)));
        }
        run.push(d);
    }
    out.extend(infer_run(run));
    out
}

fn infer_run(batch: Vec<Decoded>) -> Vec<Item<Inferred>> {
    let Some(model) = batch.first().map(|d| d.model.clone()) else {
        return Vec::new();
    };
    let started = Instant::now();
    let tensors: Vec<&[f32]> = batch.iter().map(|d| d.plate.tensor.as_slice()).collect();
    // A panic inside the runtime bindings must cost this batch, not the whole run.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.infer(&tensors)))
        .unwrap_or_else(|_| Err(InferError::Run("inference panicked".into())));
    match result {
        Ok(results) => {
            let per_plate = ms_since(started) / batch.len() as f64;
            batch
                .into_iter()
                .zip(results)
                .map(|(mut decoded, inference)| {
                    decoded.base.infer_ms = Some(per_plate);
                    decoded.plate.tensor = Vec::new();
                    let judgement = model.judge(&inference);
                    Item::Ok(Inferred {
                        decoded,
                        inference,
                        judgement,
                    })
                })
                .collect()
        }
        Err(e) => batch
            .into_iter()
            .map(|d| {
                Item::Done(d.base.failed(
                    Stage::Infer,
                    FailureKind::Model,
                    e.to_string(),
                    d.started,
                ))
            })
            .collect(),
    }
}

/// Explain stage: the judgement recorded, the overlays written.
fn explain_plate(engine: &Engine, item: Inferred) -> PlateRecord {
    let started = Instant::now();
    let Inferred {
        decoded,
        inference,
        judgement,
    } = item;
    let Decoded {
        _resident,
        model,
        mut base,
        plate,
        started: plate_started,
    } = decoded;
    let painter = &engine.painter;
    base.set_judgement(
        &judgement,
        &model.contract,
        painter.options().method.label(),
    );
    if painter.options().write_overlays {
        let dir = crate::explain::overlay_dir(
            &engine.config.paths.out,
            &plate.header.sop_instance_uid,
            &base.sha256,
        );
        let image = PlateImage {
            gray: &plate.gray,
            width: plate.header.columns as usize,
            height: plate.header.rows as usize,
            letterbox: &plate.letterbox,
        };
        // Only a plate held back without review gets its rejection note now.
        let jpeg = engine
            .montage_jpeg
            .load(std::sync::atomic::Ordering::Relaxed)
            && judgement.verdict == crate::outcome::Verdict::Unusable
            && base.review.is_none();
        let written = crate::fsutil::retry_transient(
            &TRANSIENT_RETRY,
            crate::explain::ExplainError::is_transient,
            || painter.write_overlays(&dir, &image, &model.contract, &inference, &judgement, jpeg),
        );
        match written {
            Ok(o) => {
                base.overlays = o.layers;
                base.montage_path = Some(o.montage);
                base.montage_jpeg = o.montage_jpeg.map(Arc::new);
            }
            // The verdict does not depend on its pictures: it is kept, and the missing
            // overlays are recorded (`plates.overlay_error`) and counted in the reports.
            Err(e) => {
                tracing::warn!(path = %base.source_path, error = %e, "overlays not written; the verdict is recorded without them");
                base.overlay_error = Some(e.to_string());
            }
        }
    }
    base.explain_ms = Some(ms_since(started));
    base.total_ms = Some(ms_since(plate_started));
    base.processed_at = crate::record::now();
    base
}

/// Runs the pipeline over `files`; returns the outcome of every file, in input order.
pub async fn run(
    engine: Arc<Engine>,
    files: Vec<PathBuf>,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Vec<Outcome>, PipelineError> {
    let workers = engine.config.scan.decode_workers.max(1);
    let (tx, rx) = mpsc::channel::<PathBuf>(workers * 2);
    // Ingest: the only stage that listens for cancellation.
    let ingest = tokio::spawn(async move {
        for f in files {
            tokio::select! {
                _ = cancel.cancelled() => break,
                sent = tx.send(f) => if sent.is_err() { break },
            }
        }
    });
    let result = run_stream(engine, rx, Arc::new(RecordOnly), progress, true).await;
    let _ = ingest.await;
    result
}

/// What the last stage does with a judged plate: `None` when it put the plate back for a later
/// try instead of recording it (the daemon, on a transient read failure).
pub trait Finisher: Send + Sync {
    /// Finishes the plates that were ready together, in order, as one unit: either all are
    /// recorded (`None` for a plate put back to be tried again) or, on an error, none is.
    /// A lone plate is a group of one; under a burst the group grows by itself, so a
    /// commit and its fsync are shared by several plates without any plate waiting for others.
    fn finish<'a>(
        &'a self,
        engine: &'a Engine,
        records: Vec<PlateRecord>,
    ) -> BoxFuture<'a, Result<Vec<Option<Outcome>>, PipelineError>>;
}

/// The most plates finished together: bounds a group's transaction and the plates a failed
/// commit sends back to be judged again.
const MAX_GROUP: usize = 32;

/// `scan`: record the plate, touch nothing else. A scan is one pass over what is there: a
/// file still unreadable after the in-stage retries is recorded as an `io` error.
pub struct RecordOnly;

impl Finisher for RecordOnly {
    fn finish<'a>(
        &'a self,
        engine: &'a Engine,
        records: Vec<PlateRecord>,
    ) -> BoxFuture<'a, Result<Vec<Option<Outcome>>, PipelineError>> {
        Box::pin(async move {
            let rows = engine.recorder.insert_many(&records).await?;
            Ok(rows
                .into_iter()
                .zip(records)
                .map(|(row_id, record)| Some(Outcome { row_id, record }))
                .collect())
        })
    }
}

/// Runs decode -> infer -> explain -> finish over paths arriving on `inputs` until it closes.
/// Outcomes are returned when `keep` is set (a daemon would accumulate them forever).
pub async fn run_stream(
    engine: Arc<Engine>,
    to_decode_rx: mpsc::Receiver<PathBuf>,
    finisher: Arc<dyn Finisher>,
    progress: Arc<dyn Progress>,
    keep: bool,
) -> Result<Vec<Outcome>, PipelineError> {
    let workers = engine.config.scan.decode_workers.max(1);
    let batch_size = engine.config.infer.batch_size.max(1);
    let (to_infer_tx, mut to_infer_rx) = mpsc::channel::<Item<Decoded>>(batch_size * 2);
    let (to_explain_tx, to_explain_rx) = mpsc::channel::<Item<Inferred>>(batch_size * 2);
    // Room for a whole group: while a group is committed (fsyncs, and in the daemon the moves),
    // explanation goes on filling the next one instead of stalling on a full channel. Records
    // hold no pixels, so this costs no memory the resident bound counts.
    let (to_record_tx, mut to_record_rx) = mpsc::channel::<PlateRecord>(MAX_GROUP.max(workers * 2));

    // Decode: `workers` plates at once plus one, output kept in input order. The extra plate in
    // flight keeps the decoders busy while a finished plate waits for its place in the order or
    // for the hand-over from a decode worker (`make bench`: +20 % verdicts-only throughput).
    let in_flight = workers + 1;
    let e = engine.clone();
    let decode = tokio::spawn(async move {
        let mut stream = tokio_stream_from(to_decode_rx)
            .map(|path| {
                let e = e.clone();
                async move {
                    let p = path.clone();
                    tokio::task::spawn_blocking(move || decode_plate(&e, &p))
                        .await
                        .unwrap_or_else(|join| Item::Done(crashed(&path, Stage::Decode, join)))
                }
            })
            .buffered(in_flight);
        while let Some(item) = stream.next().await {
            if to_infer_tx.send(item).await.is_err() {
                break;
            }
        }
    });

    // Infer: batches whatever is waiting, up to batch_size plates, without waiting for more;
    // failed items ride along in their place so the output keeps the input order.
    let infer = tokio::spawn(async move {
        while let Some(first) = to_infer_rx.recv().await {
            let mut window = vec![first];
            let plates =
                |w: &Vec<Item<Decoded>>| w.iter().filter(|i| matches!(i, Item::Ok(_))).count();
            while plates(&window) < batch_size {
                match to_infer_rx.try_recv() {
                    Ok(item) => window.push(item),
                    Err(_) => break,
                }
            }
            let mut slots: Vec<Option<PlateRecord>> = Vec::with_capacity(window.len());
            let mut batch = Vec::new();
            for item in window {
                match item {
                    Item::Ok(d) => {
                        slots.push(None);
                        batch.push(d);
                    }
                    Item::Done(r) => slots.push(Some(r)),
                }
            }
            let results = if batch.is_empty() {
                Vec::new()
            } else {
                match tokio::task::spawn_blocking(move || infer_batch(batch)).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            };
            let mut results = results.into_iter();
            for slot in slots {
                let item = match slot {
                    Some(r) => Item::Done(r),
                    None => match results.next() {
                        Some(i) => i,
                        None => return,
                    },
                };
                if to_explain_tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    });

    // Explain: heat maps and PNGs on blocking threads, in order.
    let e = engine.clone();
    let explain = tokio::spawn(async move {
        let mut stream = tokio_stream_from(to_explain_rx)
            .map(|item| {
                let e = e.clone();
                async move {
                    match item {
                        Item::Done(r) => r,
                        Item::Ok(inf) => {
                            let path = inf.decoded.base.source.clone();
                            tokio::task::spawn_blocking(move || explain_plate(&e, inf))
                                .await
                                .unwrap_or_else(|join| crashed(&path, Stage::Explain, join))
                        }
                    }
                }
            })
            .buffered(workers);
        while let Some(r) = stream.next().await {
            if to_record_tx.send(r).await.is_err() {
                break;
            }
        }
    });

    // Record, in order: whatever is ready together is finished as one group.
    let mut outcomes = Vec::new();
    let mut record_error = None;
    while let Some(first) = to_record_rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match to_record_rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        for r in &mut group {
            if r.run_id.is_empty() {
                r.run_id = engine.run_id.clone();
            }
        }
        let first_path = group[0].source_path.clone();
        let n = group.len();
        match finisher.finish(&engine, group).await {
            Ok(done) => {
                for outcome in done.into_iter().flatten() {
                    engine.metrics.observe(&outcome.record);
                    log_outcome(&outcome);
                    progress.done(&outcome);
                    if keep {
                        outcomes.push(outcome);
                    }
                }
                engine.metrics.plates_in_memory.store(
                    engine.residency.now() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Err(e) => {
                tracing::error!(path = %first_path, plates = n, error = %e, "could not record plates; stopping");
                record_error = Some(e);
                break;
            }
        }
    }
    drop(to_record_rx);
    let _ = tokio::join!(decode, infer, explain);
    match record_error {
        Some(e) => Err(e),
        None => Ok(outcomes),
    }
}

fn log_outcome(o: &Outcome) {
    let r = &o.record;
    match r.verdict {
        Verdict::Error => tracing::warn!(
            path = %r.source_path,
            stage = r.error_stage.map(Stage::as_str).unwrap_or(""),
            kind = r.error_kind.map(FailureKind::as_str).unwrap_or(""),
            error = r.error.as_deref().unwrap_or(""),
            "plate failed"
        ),
        v => tracing::debug!(
            path = %r.source_path,
            sop = r.sop_instance_uid.as_deref().unwrap_or(""),
            verdict = v.as_str(),
            score = r.unusable_score.unwrap_or(f64::NAN),
            "plate judged"
        ),
    }
}

/// A receiver as a stream, without pulling in tokio-stream for one adapter.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
