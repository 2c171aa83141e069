//! Wiring of the stages: ingest -> decode -> infer -> explain -> record, with bounded channels
//! between them and CPU work on blocking threads. Only ingest watches the cancellation token;
//! every later stage finishes what it holds and stops when its input closes, so a shutdown
//! never leaves a plate half-recorded.

use crate::config::Config;
use crate::decode::{self, preprocess, PlateHeader};
use crate::explain::{self, overlay};
use crate::infer::{Inference, Model};
use crate::privacy::{KeyError, PatientHasher};
use crate::record::{Finding, PlateRecord, RecordError, Recorder};
use futures::future::BoxFuture;
use futures::StreamExt;
use sha2::Digest;
use std::collections::BTreeMap;
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
    #[error("{0}")]
    Setup(String),
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

/// The most plates a pipeline holds in memory at once with these settings: `workers` being
/// decoded and as many decoded waiting for their turn, `2 x batch` queued for inference, one
/// batch being inferred, `2 x batch` queued for explanation, `workers` being explained.
pub fn resident_bound(workers: usize, batch: usize) -> usize {
    3 * workers + 5 * batch
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
    lut: Arc<[[u8; 3]; 256]>,
    blend: Arc<overlay::BlendTable>,
    pub residency: Arc<Residency>,
    pub metrics: Arc<crate::metrics::Metrics>,
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
        let opts = self.config.infer.clone();
        let path = self.config.paths.model.clone();
        let ort = self.config.paths.ort_library.clone();
        let model = tokio::task::spawn_blocking(move || Model::load(&path, ort.as_deref(), &opts))
            .await
            .map_err(|e| PipelineError::Setup(e.to_string()))?
            .map_err(|e| PipelineError::Setup(e.to_string()))?;
        let model = Arc::new(model);
        if let Ok(mut m) = self.model.write() {
            *m = model.clone();
        }
        Ok(model)
    }

    pub async fn start(config: Config) -> Result<Engine, PipelineError> {
        let opts = config.infer.clone();
        let model_path = config.paths.model.clone();
        let ort = config.paths.ort_library.clone();
        let model =
            tokio::task::spawn_blocking(move || Model::load(&model_path, ort.as_deref(), &opts))
                .await
                .map_err(|e| PipelineError::Setup(e.to_string()))?
                .map_err(|e| PipelineError::Setup(e.to_string()))?;
        let recorder = Recorder::open_as(&config.paths.db, &config.site()).await?;
        let hasher = PatientHasher::load_or_create(&config.key_file())?;
        let lut = Arc::new(overlay::lut_for(config.explain.colormap));
        let blend = Arc::new(overlay::BlendTable::new(&lut, config.explain.alpha));
        let run_id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        );
        Ok(Engine {
            config: Arc::new(config),
            model: std::sync::RwLock::new(Arc::new(model)),
            recorder,
            hasher,
            run_id,
            lut,
            blend,
            residency: Arc::new(Residency::default()),
            metrics: Arc::new(crate::metrics::Metrics::default()),
        })
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
    header: PlateHeader,
    gray: Vec<u8>,
    tensor: Vec<f32>,
    letterbox: preprocess::Letterbox,
    started: Instant,
}

struct Inferred {
    decoded: Decoded,
    inference: Inference,
}

// Both variants are moved, never copied, through short bounded channels; boxing would add
// an allocation per plate for no measurable gain.
#[allow(clippy::large_enum_variant)]
enum Item<T> {
    Ok(T),
    Done(PlateRecord),
}

fn failure(
    mut base: PlateRecord,
    stage: &str,
    kind: &str,
    message: String,
    started: Instant,
) -> PlateRecord {
    base.verdict = "error".into();
    base.error_stage = Some(stage.into());
    base.error_kind = Some(kind.into());
    base.error = Some(message);
    base.total_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    base.processed_at = crate::record::now();
    base
}

/// The record of a plate whose blocking worker panicked: the panic costs this plate only.
fn crashed(source_path: String, stage: &str, join: tokio::task::JoinError) -> PlateRecord {
    let base = PlateRecord {
        source_path,
        ..Default::default()
    };
    failure(
        base,
        stage,
        "panic",
        format!("{stage} crashed: {join}"),
        Instant::now(),
    )
}

fn decode_file(engine: &Engine, path: &Path) -> Item<Decoded> {
    let started = Instant::now();
    let resident = engine.residency.enter();
    let mut base = PlateRecord {
        run_id: engine.run_id.clone(),
        source_path: path.display().to_string(),
        ..Default::default()
    };
    let policy = &engine.config.decode;
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            return Item::Done(failure(
                base,
                "read",
                "io",
                format!("cannot read: {e}"),
                started,
            ))
        }
    };
    base.size_bytes = size as i64;
    if size > policy.max_file_bytes {
        return Item::Done(failure(
            base,
            "read",
            "too_large",
            format!("file is {size} bytes, limit {}", policy.max_file_bytes),
            started,
        ));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Item::Done(failure(
                base,
                "read",
                "io",
                format!("cannot read: {e}"),
                started,
            ))
        }
    };
    base.sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let plate = match decode::decode(&bytes, policy) {
        Ok(p) => p,
        Err(e) => {
            // The header may still be readable; keep what identity we can for the record.
            if let Ok(h) = decode::decode_header(&bytes, policy) {
                fill_identity(&mut base, &h, &engine.hasher);
            }
            return Item::Done(failure(base, "decode", e.kind(), e.to_string(), started));
        }
    };
    drop(bytes);
    fill_identity(&mut base, &plate.header, &engine.hasher);
    let model = engine.model();
    let (tensor, letterbox) = preprocess::preprocess(&plate, model.contract.input_size);
    let gray = overlay::display_gray(&plate);
    base.decode_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    Item::Ok(Decoded {
        _resident: resident,
        model,
        base,
        header: plate.header,
        gray,
        tensor,
        letterbox,
        started,
    })
}

fn fill_identity(r: &mut PlateRecord, h: &PlateHeader, hasher: &PatientHasher) {
    r.sop_instance_uid = Some(h.sop_instance_uid.clone());
    r.sop_class_uid = Some(h.sop_class_uid.clone());
    r.study_instance_uid = Some(h.study_instance_uid.clone()).filter(|s| !s.is_empty());
    r.series_instance_uid = Some(h.series_instance_uid.clone()).filter(|s| !s.is_empty());
    r.modality = Some(h.modality.clone()).filter(|s| !s.is_empty());
    r.patient_id_hash = h.patient_id.as_deref().map(|id| hasher.hash(id));
    r.acquisition_datetime = h.acquisition_datetime.clone();
    r.station_name = h.station_name.clone();
    r.operator = h.operator.clone();
    r.device_serial = h.device_serial.clone();
    r.plate_identifier = h.plate_id.clone();
    r.transfer_syntax = Some(h.transfer_syntax.clone());
    r.rows = Some(h.rows as i64);
    r.columns = Some(h.columns as i64);
    r.bits_stored = Some(h.bits_stored as i64);
    r.photometric = Some(h.photometric.clone());
}

fn infer_batch(batch: Vec<Decoded>) -> Vec<Item<Inferred>> {
    // Split at model changes (a reload mid-batch): each run goes to its own model.
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
    let tensors: Vec<&[f32]> = batch.iter().map(|d| d.tensor.as_slice()).collect();
    // A panic inside the runtime bindings must cost this batch, not the whole run.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.infer(&tensors)))
        .unwrap_or_else(|_| Err(crate::infer::InferError::Run("inference panicked".into())));
    match result {
        Ok(results) => {
            let per_plate = started.elapsed().as_secs_f64() * 1e3 / batch.len() as f64;
            batch
                .into_iter()
                .zip(results)
                .map(|(mut decoded, inference)| {
                    decoded.base.infer_ms = Some(per_plate);
                    decoded.tensor = Vec::new();
                    Item::Ok(Inferred { decoded, inference })
                })
                .collect()
        }
        Err(e) => batch
            .into_iter()
            .map(|d| Item::Done(failure(d.base, "infer", "model", e.to_string(), d.started)))
            .collect(),
    }
}

fn explain_plate(engine: &Engine, item: Inferred) -> PlateRecord {
    let started = Instant::now();
    let Inferred { decoded, inference } = item;
    let Decoded {
        mut base,
        header,
        gray,
        letterbox,
        started: plate_started,
        ..
    } = decoded;
    let model = decoded.model.clone();
    let contract = &model.contract;
    let cfg = &engine.config.explain;
    let unusable = inference.unusable_score >= contract.threshold;
    base.verdict = if unusable { "unusable" } else { "usable" }.into();
    base.unusable_score = Some(inference.unusable_score as f64);
    base.threshold = Some(contract.threshold as f64);
    base.model_name = Some(contract.model_name.clone());
    base.model_version = Some(contract.model_version.clone());
    base.model_sha256 = Some(contract.sha256.clone());
    base.cam_method = Some(cfg.method.label().to_string());
    let mut ranked: Vec<(usize, f32)> = inference
        .artifact_scores
        .iter()
        .copied()
        .enumerate()
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    base.findings = ranked
        .iter()
        .filter(|(_, s)| *s >= contract.artifact_threshold)
        .map(|&(i, s)| Finding {
            artifact_type: contract.artifact_types[i].name.clone(),
            reason_code: contract.artifact_types[i].code.clone(),
            score: s,
        })
        .collect();
    if unusable {
        base.reason_code = ranked
            .first()
            .map(|&(i, _)| contract.artifact_types[i].code.clone());
    }

    if cfg.write_overlays {
        let (w, h) = (header.columns as usize, header.rows as usize);
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let uid = crate::fsutil::sanitize_component(&header.sop_instance_uid);
        let short = &base.sha256[..base.sha256.len().min(8)];
        let dir = engine
            .config
            .paths
            .out
            .join("overlays")
            .join(day)
            .join(format!("{uid}_{short}"));
        // Montage panels are made at panel size from the start (heat maps sampled straight to
        // that size) rather than by shrinking native-size overlays.
        let (pw, ph) = overlay::panel_size(w, h, cfg.montage_height);
        let small_gray = overlay::shrink_raw(&gray, w, h, pw, ph, 1);
        let mut panels = vec![overlay::Panel {
            label: "ORIGINAL".into(),
            image: overlay::gray_rgb(&small_gray, pw, ph),
        }];
        let mut overlays = BTreeMap::new();
        for (name, maps) in contract.layers.iter().zip(&inference.layers) {
            let cam = explain::cam(maps, cfg.method);
            let heat = explain::to_native(&cam, &letterbox, h, w);
            let img = engine.blend.blend(&gray, &heat, w, h);
            let path = dir.join(format!("{}.png", crate::fsutil::sanitize_component(name)));
            if let Err(e) = overlay::save_png(&img, &path) {
                return failure(base, "explain", "write", e.to_string(), plate_started);
            }
            overlays.insert(name.clone(), path.display().to_string());
            let empty = if cam.is_empty() { " (EMPTY)" } else { "" };
            drop(img);
            let small_heat = explain::to_native(&cam, &letterbox, ph, pw);
            panels.push(overlay::Panel {
                label: format!("{} {}{}", name, cfg.method.label(), empty),
                image: engine.blend.blend(&small_gray, &small_heat, pw, ph),
            });
        }
        let mut lines = vec![format!(
            "{} {:.2} (THRESHOLD {:.2})  {}",
            base.verdict.to_uppercase(),
            inference.unusable_score,
            contract.threshold,
            contract.model_version
        )];
        if base.findings.is_empty() {
            // Say what the model leans to even below the reporting threshold: a reader of a
            // rejected plate wants a hint, clearly marked as weak.
            lines.push(match ranked.first() {
                Some(&(i, score)) => format!(
                    "NO TYPE ABOVE {:.2}; LIKELIEST {} {:.2}",
                    contract.artifact_threshold, contract.artifact_types[i].name, score
                ),
                None => "NO ARTIFACT TYPES IN THIS MODEL".into(),
            });
        } else {
            lines.push(
                base.findings
                    .iter()
                    .take(4)
                    .map(|f| format!("{} {:.2}", f.artifact_type, f.score))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        let m = overlay::montage(&panels, &lines, unusable, &engine.lut, cfg.montage_height);
        let montage_path = dir.join("montage.png");
        if let Err(e) = overlay::save_png(&m, &montage_path) {
            return failure(base, "explain", "write", e.to_string(), plate_started);
        }
        base.overlays = overlays;
        base.montage_path = Some(montage_path.display().to_string());
    }
    base.explain_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    base.total_ms = Some(plate_started.elapsed().as_secs_f64() * 1e3);
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

/// What the last stage does with a judged plate.
pub trait Finisher: Send + Sync {
    fn finish<'a>(
        &'a self,
        engine: &'a Engine,
        record: PlateRecord,
    ) -> BoxFuture<'a, Result<Outcome, PipelineError>>;
}

/// `scan`: record the plate, touch nothing else.
pub struct RecordOnly;

impl Finisher for RecordOnly {
    fn finish<'a>(
        &'a self,
        engine: &'a Engine,
        record: PlateRecord,
    ) -> BoxFuture<'a, Result<Outcome, PipelineError>> {
        Box::pin(async move {
            let row_id = engine.recorder.insert(&record).await?;
            Ok(Outcome { row_id, record })
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
    let (to_record_tx, mut to_record_rx) = mpsc::channel::<PlateRecord>(workers * 2);

    // Decode: up to `workers` plates at once, output kept in input order.
    let e = engine.clone();
    let decode = tokio::spawn(async move {
        let mut stream = tokio_stream_from(to_decode_rx)
            .map(|path| {
                let e = e.clone();
                async move {
                    let p = path.clone();
                    tokio::task::spawn_blocking(move || decode_file(&e, &p))
                        .await
                        .unwrap_or_else(|join| {
                            Item::Done(crashed(path.display().to_string(), "decode", join))
                        })
                }
            })
            .buffered(workers);
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
                            let path = inf.decoded.base.source_path.clone();
                            tokio::task::spawn_blocking(move || explain_plate(&e, inf))
                                .await
                                .unwrap_or_else(|join| crashed(path, "explain", join))
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

    // Record: one transaction per plate, in order.
    let mut outcomes = Vec::new();
    let mut record_error = None;
    while let Some(mut r) = to_record_rx.recv().await {
        if r.run_id.is_empty() {
            r.run_id = engine.run_id.clone();
        }
        let path = r.source_path.clone();
        match finisher.finish(&engine, r).await {
            Ok(outcome) => {
                engine.metrics.observe(&outcome.record);
                engine.metrics.plates_in_memory.store(
                    engine.residency.now() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                log_outcome(&outcome);
                progress.done(&outcome);
                if keep {
                    outcomes.push(outcome);
                }
            }
            Err(e) => {
                tracing::error!(path = %path, error = %e, "could not record plate; stopping");
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
    match r.verdict.as_str() {
        "error" => tracing::warn!(
            path = %r.source_path,
            stage = r.error_stage.as_deref().unwrap_or(""),
            kind = r.error_kind.as_deref().unwrap_or(""),
            error = r.error.as_deref().unwrap_or(""),
            "plate failed"
        ),
        v => tracing::debug!(
            path = %r.source_path,
            sop = r.sop_instance_uid.as_deref().unwrap_or(""),
            verdict = v,
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
