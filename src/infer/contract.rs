//! The model contract (`models/README.md`), read from a model's metadata, inputs and outputs;
//! a model that breaks it is refused with every broken rule named.

use super::{ArtifactType, InferError, ModelContract};
use crate::decode::preprocess;
use ort::session::Session;
use ort::value::ValueType;
use std::path::Path;

pub(super) fn read_contract(
    session: &Session,
    path: &Path,
    sha256: String,
) -> Result<ModelContract, InferError> {
    let mut broken: Vec<String> = Vec::new();
    let meta = session.metadata().map_err(|e| InferError::Load {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let mut prop = |key: &str| -> Option<String> {
        let v = meta.custom(key);
        if v.is_none() {
            broken.push(format!("metadata '{key}' is missing"));
        }
        v
    };
    let contract_version = prop("plateqc.contract");
    let preprocessing = prop("plateqc.preprocessing").unwrap_or_default();
    let input_size = prop("plateqc.input_size");
    let classes = prop("plateqc.classes");
    let artifact_types = prop("plateqc.artifact_types");
    let layers = prop("plateqc.layers");
    let threshold = prop("plateqc.threshold");
    let artifact_threshold = prop("plateqc.artifact_threshold");
    let model_name = prop("plateqc.model_name").unwrap_or_default();
    let model_version = prop("plateqc.model_version").unwrap_or_default();

    if let Some(v) = &contract_version {
        if v != "1" {
            broken.push(format!("contract version {v} is not 1"));
        }
    }
    if preprocess::Psp::from_id(&preprocessing).is_none() {
        broken.push(format!(
            "preprocessing '{preprocessing}' is not implemented here (this build implements {})",
            preprocess::SUPPORTED.join(", ")
        ));
    }
    let parse_json =
        |what: &str, v: &Option<String>, broken: &mut Vec<String>| -> Option<serde_json::Value> {
            let s = v.as_ref()?;
            match serde_json::from_str(s) {
                Ok(j) => Some(j),
                Err(e) => {
                    broken.push(format!("metadata '{what}' is not valid JSON: {e}"));
                    None
                }
            }
        };
    let classes: Vec<String> = parse_json("plateqc.classes", &classes, &mut broken)
        .and_then(|j| serde_json::from_value(j).ok())
        .unwrap_or_default();
    let artifact_types: Vec<ArtifactType> =
        parse_json("plateqc.artifact_types", &artifact_types, &mut broken)
            .map(|j| {
                serde_json::from_value(j).unwrap_or_else(|e| {
                    broken.push(format!(
                        "metadata 'plateqc.artifact_types' entries need name and code: {e}"
                    ));
                    Vec::new()
                })
            })
            .unwrap_or_default();
    let layers: Vec<String> = parse_json("plateqc.layers", &layers, &mut broken)
        .and_then(|j| serde_json::from_value(j).ok())
        .unwrap_or_default();
    let unusable_index = classes.iter().position(|c| c == "unusable");
    if classes.len() != 2 || unusable_index.is_none() || !classes.iter().any(|c| c == "usable") {
        broken.push(format!(
            "classes must be 'usable' and 'unusable', found {classes:?}"
        ));
    }
    if layers.is_empty() {
        broken.push("no explainable layers listed in 'plateqc.layers'".into());
    }
    let num = |key: &str, v: &Option<String>, broken: &mut Vec<String>| -> Option<f64> {
        let s = v.as_ref()?;
        match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Some(x),
            _ => {
                broken.push(format!("metadata '{key}' = '{s}' is not a number"));
                None
            }
        }
    };
    let input_size = num("plateqc.input_size", &input_size, &mut broken).unwrap_or(0.0) as usize;
    let threshold = num("plateqc.threshold", &threshold, &mut broken).unwrap_or(0.5) as f32;
    let artifact_threshold = num(
        "plateqc.artifact_threshold",
        &artifact_threshold,
        &mut broken,
    )
    .unwrap_or(0.5) as f32;
    if !(0.0..=1.0).contains(&threshold) {
        broken.push(format!("threshold {threshold} is outside 0..1"));
    }

    // Inputs and outputs must be what the metadata promises.
    let shape_of = |vt: &ValueType| {
        vt.tensor_shape()
            .map(|s| s.iter().copied().collect::<Vec<i64>>())
    };
    let input = session.inputs().iter().find(|i| i.name() == "image");
    match input.map(|i| shape_of(i.dtype())) {
        None => broken.push("no input named 'image'".into()),
        Some(Some(shape)) => {
            let s = input_size as i64;
            let ok = shape.len() == 4
                && (shape[1] == 2)
                && (shape[2] == s || shape[2] < 0)
                && (shape[3] == s || shape[3] < 0);
            if !ok {
                broken.push(format!(
                    "input 'image' has shape {shape:?}, expected [N, 2, {s}, {s}]"
                ));
            }
        }
        Some(None) => broken.push("input 'image' is not a tensor".into()),
    }
    let has_target_input = session.inputs().iter().any(|i| i.name() == "target_class");
    for other in session.inputs() {
        if other.name() != "image" && other.name() != "target_class" {
            broken.push(format!("unexpected input '{}'", other.name()));
        }
    }
    let output_names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    let mut required = vec![
        "logits".to_string(),
        "probabilities".into(),
        "artifact_scores".into(),
    ];
    for l in &layers {
        required.push(format!("act_{l}"));
        required.push(format!("grad_{l}"));
    }
    for r in &required {
        if !output_names.contains(&r.as_str()) {
            broken.push(format!("output '{r}' is missing"));
        }
    }
    if let Some(o) = session
        .outputs()
        .iter()
        .find(|o| o.name() == "artifact_scores")
    {
        if let Some(shape) = shape_of(o.dtype()) {
            if shape.len() != 2 || (shape[1] >= 0 && shape[1] as usize != artifact_types.len()) {
                broken.push(format!(
                    "output 'artifact_scores' has shape {shape:?} but {} artifact types are listed",
                    artifact_types.len()
                ));
            }
        }
    }
    // Optional: a feature distance with its threshold, for plates the model has not seen the
    // like of. The output without its threshold could not be used, so it breaks the contract.
    let distance_output = session
        .outputs()
        .iter()
        .find(|o| o.name() == "feature_distance");
    let feature_distance_threshold = match distance_output {
        None => None,
        Some(o) => {
            if let Some(shape) = shape_of(o.dtype()) {
                if shape.len() != 1 {
                    broken.push(format!(
                        "output 'feature_distance' has shape {shape:?}, expected [N]"
                    ));
                }
            }
            let key = "plateqc.feature_distance_threshold";
            let value = meta.custom(key);
            if value.is_none() {
                broken.push(format!("output 'feature_distance' needs metadata '{key}'"));
            }
            match num(key, &value, &mut broken) {
                Some(t) if t <= 0.0 || !(t as f32).is_finite() => {
                    broken.push(format!("metadata '{key}' = {t} must be a positive float32"));
                    None
                }
                t => t.map(|t| t as f32),
            }
        }
    };
    if !broken.is_empty() {
        return Err(InferError::Contract {
            path: path.into(),
            rule: broken.join("; "),
        });
    }
    Ok(ModelContract {
        input_size,
        preprocessing,
        unusable_index: unusable_index.unwrap_or(1),
        classes,
        artifact_types,
        layers,
        threshold,
        artifact_threshold,
        model_name,
        model_version,
        has_target_input,
        sha256,
        feature_distance_threshold,
    })
}
