//! Infer, the third room: the ONNX artifact classifier through ONNX Runtime. The model
//! contract is read from the model, never assumed ([`contract`]); batched inference returns
//! scores plus the Grad-CAM inputs, and [`judge`] turns a plate's scores into its verdict and
//! findings.

mod contract;

use crate::outcome::{ReviewReason, Verdict};
use contract::read_contract;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor, TensorRef};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("ONNX Runtime library {path} could not be loaded ({reason}); run `make setup` to install it, or point `ORT_DYLIB_PATH` / `model.ort_library` at libonnxruntime.so")]
    Runtime { path: PathBuf, reason: String },
    #[error("model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("model {path} breaks the plateqc model contract: {rule}")]
    Contract { path: PathBuf, rule: String },
    #[error("inference failed: {0}")]
    Run(String),
}

/// One artifact type the model reports, with its CID 7011 reason code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArtifactType {
    pub name: String,
    pub code: String,
    #[serde(default)]
    pub meaning: String,
}

/// Everything plateqc needs to know about a model, read from its inputs, outputs and metadata.
#[derive(Debug, Clone, Serialize)]
pub struct ModelContract {
    pub input_size: usize,
    pub preprocessing: String,
    pub classes: Vec<String>,
    pub unusable_index: usize,
    pub artifact_types: Vec<ArtifactType>,
    pub layers: Vec<String>,
    pub threshold: f32,
    pub artifact_threshold: f32,
    pub model_name: String,
    pub model_version: String,
    pub has_target_input: bool,
    /// sha256 of the model file, so every recorded verdict names the exact weights.
    pub sha256: String,
    /// The optional `feature_distance` output's threshold (`plateqc.feature_distance_threshold`):
    /// at or above it the model has not seen the like of the plate. `None`: no such output.
    pub feature_distance_threshold: Option<f32>,
}

impl ModelContract {
    /// What the decode stage must produce for this model (`read_contract` refuses a model
    /// whose preprocessing this build does not implement).
    pub fn input(&self) -> crate::decode::preprocess::Input {
        use crate::decode::preprocess::{Input, Psp};
        Input {
            size: self.input_size,
            psp: Psp::from_id(&self.preprocessing).unwrap_or(Psp::V1),
        }
    }
}

/// Thread settings; spinning is off by default because a daemon idles most of the time and
/// spinning threads would burn a core between plates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferOptions {
    pub intra_threads: usize,
    pub inter_threads: usize,
    pub spinning: bool,
    /// Plates per inference call at most (what is waiting is taken, nothing is waited for).
    /// Default 1: on 2 cores batches of 1, 2, 4 and 8 ran 120 plates in the same time
    /// (1.9-2.2 s) while the parent's peak RSS grew 83, 94, 118, 160 MB (issue 15).
    pub batch_size: usize,
    /// Which class Grad-CAM explains: `unusable` (why the model would reject) or `predicted`.
    pub explain_target: ExplainTarget,
    /// A plate whose unusable score is within this many log-odds of the threshold is recorded
    /// with its verdict and `needs_review`; nothing leaves for it until a person decides.
    /// 0 turns it off. The default 0.5 is a factor of about 1.65 in the odds either side.
    pub review_margin: f32,
    /// Whether a plate at or above the model's feature-distance threshold (models that export
    /// `feature_distance`) needs review too. On by default: since model 1.3.2 the distance
    /// flags most images that are not intraoral plates (CT, MR, noise, charts, panoramic-like
    /// strips; 65 % of a foreign set) and about 1 % of ordinary plates, none of them usable
    /// (models/README.md, "Feature distance"). The model calls such images unusable and
    /// would name artifacts that are not there; a person should see them instead. It does not
    /// single out plates from another scanner's rendering (family B): calibration does that.
    pub review_unfamiliar: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExplainTarget {
    Unusable,
    Predicted,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            intra_threads: 2,
            inter_threads: 1,
            spinning: false,
            batch_size: 1,
            explain_target: ExplainTarget::Unusable,
            review_margin: 0.5,
            review_unfamiliar: true,
        }
    }
}

/// Activations and gradients of one exported layer for one plate, `[C, h, w]`.
#[derive(Debug, Clone)]
pub struct LayerMaps {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub activation: Vec<f32>,
    pub gradient: Vec<f32>,
}

/// The model's answer for one plate.
#[derive(Debug, Clone)]
pub struct Inference {
    pub logits: Vec<f32>,
    pub probabilities: Vec<f32>,
    pub unusable_score: f32,
    pub artifact_scores: Vec<f32>,
    pub layers: Vec<LayerMaps>,
    /// The model's distance of this plate from what it was trained on, when it exports one.
    pub feature_distance: Option<f32>,
}

static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where the set-up puts libonnxruntime; compiled in so the binary needs no environment.
pub fn default_library_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/onnxruntime/lib/libonnxruntime.so")
}

/// Loads ONNX Runtime once per process. `ORT_DYLIB_PATH` wins over the configured path.
pub fn init_runtime(
    configured: Option<&Path>,
) -> Result<&'static ort::environment::Environment, InferError> {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| configured.map(Path::to_path_buf))
        .unwrap_or_else(default_library_path);
    let result = RUNTIME.get_or_init(|| {
        if !path.exists() {
            return Err(format!("{} does not exist", path.display()));
        }
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        // No usage telemetry from a clinic's server (Microsoft's builds enable it by default).
        builder
            .with_name("plateqc")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    });
    result.as_ref().map_err(|reason| InferError::Runtime {
        path,
        reason: reason.clone(),
    })
}

pub struct Model {
    session: Mutex<Session>,
    pub contract: ModelContract,
    pub path: PathBuf,
    options: InferOptions,
}

impl Model {
    pub fn load(
        path: &Path,
        ort_library: Option<&Path>,
        options: &InferOptions,
    ) -> Result<Model, InferError> {
        let env = init_runtime(ort_library)?;
        let bytes = std::fs::read(path).map_err(|e| InferError::Load {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let load_err = |e: ort::Error| InferError::Load {
            path: path.into(),
            reason: e.to_string(),
        };
        let session = Session::builder(env)
            .map_err(load_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load_err(e.into()))?
            .with_intra_threads(options.intra_threads.max(1))
            .map_err(|e| load_err(e.into()))?
            .with_inter_threads(options.inter_threads.max(1))
            .map_err(|e| load_err(e.into()))?
            .with_intra_op_spinning(options.spinning)
            .map_err(|e| load_err(e.into()))?
            .with_inter_op_spinning(options.spinning)
            .map_err(|e| load_err(e.into()))?
            .commit_from_memory(&bytes)
            .map_err(load_err)?;
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let contract = read_contract(&session, path, sha256)?;
        Ok(Model {
            session: Mutex::new(session),
            contract,
            path: path.into(),
            options: options.clone(),
        })
    }

    /// Runs one batch of preprocessed tensors (each `2*S*S` long).
    pub fn infer(&self, batch: &[&[f32]]) -> Result<Vec<Inference>, InferError> {
        let c = &self.contract;
        let s = c.input_size;
        let n = batch.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut data = Vec::with_capacity(n * 2 * s * s);
        for t in batch {
            if t.len() != 2 * s * s {
                return Err(InferError::Run(format!(
                    "tensor has {} values, expected {}",
                    t.len(),
                    2 * s * s
                )));
            }
            data.extend_from_slice(t);
        }
        let run_err = |e: ort::Error| InferError::Run(e.to_string());
        let image = Tensor::from_array(([n, 2, s, s], data.into_boxed_slice())).map_err(run_err)?;
        let target: i64 = match self.options.explain_target {
            ExplainTarget::Unusable => c.unusable_index as i64,
            ExplainTarget::Predicted => -1,
        };
        let targets = vec![target; n];
        let target_tensor =
            TensorRef::from_array_view(([n], targets.as_slice())).map_err(run_err)?;
        let mut session = unpoisoned(&self.session);
        let outputs = if c.has_target_input {
            session
                .run(ort::inputs!["image" => image, "target_class" => target_tensor])
                .map_err(run_err)?
        } else {
            session
                .run(ort::inputs!["image" => image])
                .map_err(run_err)?
        };
        let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>), InferError> {
            let value = outputs
                .get(name)
                .ok_or_else(|| InferError::Run(format!("model produced no '{name}'")))?;
            let (shape, values) = value.try_extract_tensor::<f32>().map_err(run_err)?;
            Ok((shape.iter().map(|&d| d as usize).collect(), values.to_vec()))
        };
        let (_, logits) = get("logits")?;
        let (_, probs) = get("probabilities")?;
        let (_, arts) = get("artifact_scores")?;
        let distances = match c.feature_distance_threshold {
            Some(_) => Some(get("feature_distance")?.1),
            None => None,
        };
        let k = c.artifact_types.len();
        let nc = c.classes.len();
        let mut layer_data = Vec::new();
        for layer in &c.layers {
            let (shape, act) = get(&format!("act_{layer}"))?;
            let (gshape, grad) = get(&format!("grad_{layer}"))?;
            if shape.len() != 4 || shape != gshape || shape[0] != n {
                return Err(InferError::Run(format!(
                    "layer {layer}: activation {shape:?} and gradient {gshape:?} disagree"
                )));
            }
            layer_data.push((shape, act, grad));
        }
        let mut result = Vec::with_capacity(n);
        for i in 0..n {
            let layers = layer_data
                .iter()
                .map(|(shape, act, grad)| {
                    let per = shape[1] * shape[2] * shape[3];
                    LayerMaps {
                        channels: shape[1],
                        height: shape[2],
                        width: shape[3],
                        activation: act[i * per..(i + 1) * per].to_vec(),
                        gradient: grad[i * per..(i + 1) * per].to_vec(),
                    }
                })
                .collect();
            let probabilities = probs[i * nc..(i + 1) * nc].to_vec();
            result.push(Inference {
                logits: logits[i * nc..(i + 1) * nc].to_vec(),
                unusable_score: probabilities[c.unusable_index],
                probabilities,
                artifact_scores: arts[i * k..(i + 1) * k].to_vec(),
                layers,
                feature_distance: distances.as_ref().and_then(|d| d.get(i).copied()),
            });
        }
        Ok(result)
    }
}

/// An artifact type reported for a plate.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub artifact_type: String,
    pub reason_code: String,
    pub score: f32,
}

/// The model's verdict on one plate, with its findings.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// [`Verdict::Unusable`] when the unusable score reaches the model's threshold.
    pub verdict: Verdict,
    pub unusable_score: f32,
    /// Artifact types at or above the model's reporting threshold, strongest first.
    pub findings: Vec<Finding>,
    /// The CID 7011 code of the strongest artifact type, for an unusable plate.
    pub reason_code: Option<String>,
    /// The strongest artifact type and its score, reported or not: a reader of a rejected plate
    /// wants a hint even below the reporting threshold. `None` for a model without types.
    pub likeliest: Option<(String, f32)>,
    /// Why the verdict waits for a person, if it does.
    pub review: Option<ReviewReason>,
    pub feature_distance: Option<f32>,
}

/// Log-odds of a probability, kept finite at 0 and 1.
fn log_odds(p: f32) -> f64 {
    let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// Whether the plate waits for a person: the model has not seen its like (takes precedence),
/// or its score is too close to the threshold to stand alone.
pub fn review_reason(
    contract: &ModelContract,
    options: &InferOptions,
    inference: &Inference,
) -> Option<ReviewReason> {
    let unfamiliar = options.review_unfamiliar
        && matches!(
            (inference.feature_distance, contract.feature_distance_threshold),
            (Some(d), Some(t)) if d >= t
        );
    let near = options.review_margin > 0.0
        && (log_odds(inference.unusable_score) - log_odds(contract.threshold)).abs()
            < f64::from(options.review_margin);
    if unfamiliar {
        Some(ReviewReason::Unfamiliar)
    } else if near {
        Some(ReviewReason::NearThreshold)
    } else {
        None
    }
}

impl Model {
    /// Judges one plate's inference by the model's contract and this site's review settings.
    pub fn judge(&self, inference: &Inference) -> Judgement {
        let mut j = judge(&self.contract, inference);
        j.review = review_reason(&self.contract, &self.options, inference);
        j
    }
}

/// Judges one plate's inference by the model's contract (no review rule: see [`Model::judge`]).
pub fn judge(contract: &ModelContract, inference: &Inference) -> Judgement {
    let unusable = inference.unusable_score >= contract.threshold;
    let mut ranked: Vec<(usize, f32)> = inference
        .artifact_scores
        .iter()
        .copied()
        .enumerate()
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let findings = ranked
        .iter()
        .filter(|(_, s)| *s >= contract.artifact_threshold)
        .map(|&(i, s)| Finding {
            artifact_type: contract.artifact_types[i].name.clone(),
            reason_code: contract.artifact_types[i].code.clone(),
            score: s,
        })
        .collect();
    let reason_code = if unusable {
        ranked
            .first()
            .map(|&(i, _)| contract.artifact_types[i].code.clone())
    } else {
        None
    };
    Judgement {
        verdict: if unusable {
            Verdict::Unusable
        } else {
            Verdict::Usable
        },
        unusable_score: inference.unusable_score,
        findings,
        reason_code,
        likeliest: ranked
            .first()
            .map(|&(i, s)| (contract.artifact_types[i].name.clone(), s)),
        review: None,
        feature_distance: inference.feature_distance,
    }
}

/// The session, even after a panic elsewhere while it was held: the pipeline catches a panic
/// around inference and fails that batch only, and the ONNX Runtime session is not left
/// half-changed by our code, so a poisoned lock must not fail every later plate.
fn unpoisoned<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(threshold: f32, distance: Option<f32>) -> ModelContract {
        ModelContract {
            input_size: 256,
            preprocessing: "plateqc-psp-v2".into(),
            classes: vec!["usable".into(), "unusable".into()],
            unusable_index: 1,
            artifact_types: Vec::new(),
            layers: vec!["last".into()],
            threshold,
            artifact_threshold: 0.5,
            model_name: "m".into(),
            model_version: "1".into(),
            has_target_input: true,
            sha256: String::new(),
            feature_distance_threshold: distance,
        }
    }

    fn inference(score: f32, distance: Option<f32>) -> Inference {
        Inference {
            logits: vec![0.0, 0.0],
            probabilities: vec![1.0 - score, score],
            unusable_score: score,
            artifact_scores: Vec::new(),
            layers: Vec::new(),
            feature_distance: distance,
        }
    }

    /// Issue 17, item 3: within the margin (in log-odds, so the band is as wide in odds at a
    /// threshold of 0.07 as at 0.5) a plate waits for review on either side; beyond it, not;
    /// an unfamiliar plate waits whatever its score; margin 0 and `review_unfamiliar = false`
    /// turn each rule off.
    #[test]
    fn doubtful_plates_wait_for_review() {
        let opts = InferOptions {
            review_unfamiliar: true,
            ..InferOptions::default()
        };
        let c = contract(0.0689, Some(3.0));
        let why = |score, d| review_reason(&c, &opts, &inference(score, d));
        // 0.5 log-odds either side of 0.0689 is 0.0431 .. 0.1088.
        assert_eq!(why(0.06, None), Some(ReviewReason::NearThreshold));
        assert_eq!(why(0.10, Some(1.0)), Some(ReviewReason::NearThreshold));
        assert_eq!(why(0.04, Some(1.0)), None);
        assert_eq!(why(0.12, Some(1.0)), None);
        assert_eq!(why(0.99, Some(3.0)), Some(ReviewReason::Unfamiliar));
        assert_eq!(why(0.06, Some(4.0)), Some(ReviewReason::Unfamiliar));
        let at_half = contract(0.5, None);
        assert_eq!(
            review_reason(&at_half, &opts, &inference(0.6, None)),
            Some(ReviewReason::NearThreshold)
        );
        assert_eq!(review_reason(&at_half, &opts, &inference(0.7, None)), None);
        let off = InferOptions {
            review_margin: 0.0,
            review_unfamiliar: false,
            ..InferOptions::default()
        };
        assert_eq!(review_reason(&c, &off, &inference(0.0689, Some(9.0))), None);
        // The verdict itself does not change.
        let j = judge(&c, &inference(0.06, None));
        assert_eq!(j.verdict, Verdict::Usable);
    }

    /// Issue 13, item 8: a panic while the session was held does not fail later plates.
    #[test]
    fn a_panic_does_not_poison_the_session_for_later_plates() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("inference panicked");
        })
        .join();
        assert!(m.is_poisoned());
        *unpoisoned(&m) += 1;
        assert_eq!(*unpoisoned(&m), 2);
    }
}
