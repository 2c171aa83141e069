//! `plateqc calibrate`: a site's decision threshold from its own reviewed plates. The model's
//! threshold was chosen on synthetic plates; a site's scanner, plates and processing move the
//! scores, and the reviewed plates show by how much. The rule: the lowest threshold that rejects
//! at most the target share of the plates reviewers called usable (the most sensitive threshold
//! that keeps the false-reject rate at target on these plates), with the recall it gives on the
//! plates they called unusable and its 95 % Wilson interval.

use super::{wilson_pct, ReportError};
use crate::record::calibrations::{self as db, Calibration};
use crate::record::{now, Pool};
use serde::Serialize;

/// What `calibrate` is asked.
#[derive(Debug, Clone)]
pub struct CalibrateRequest {
    pub target_false_reject: f64,
    /// The model whose scores are calibrated; default: the one that judged the latest image.
    pub model_version: Option<String>,
    /// The model's own threshold, for the comparison (None: not shown).
    pub model_threshold: Option<f64>,
    pub by: String,
    /// Fewer reviewed usable or unusable plates than these and nothing is chosen.
    pub min_usable: usize,
    pub min_unusable: usize,
    /// Show the choice without recording it.
    pub dry_run: bool,
}

/// A threshold and how it does on the reviewed plates.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Operating {
    pub threshold: f64,
    pub false_reject: f64,
    pub recall: f64,
    pub recall_ci_low: f64,
    pub recall_ci_high: f64,
}

/// How `threshold` does on the reviewed scores.
pub fn operating(usable: &[f64], unusable: &[f64], threshold: f64) -> Operating {
    let rejected = |v: &[f64]| v.iter().filter(|&&s| s >= threshold).count();
    let (fr, tp) = (rejected(usable), rejected(unusable));
    let (lo, hi) = wilson_pct(tp as i64, unusable.len() as i64);
    Operating {
        threshold,
        false_reject: fr as f64 / usable.len().max(1) as f64,
        recall: tp as f64 / unusable.len().max(1) as f64,
        recall_ci_low: lo / 100.0,
        recall_ci_high: hi / 100.0,
    }
}

/// The lowest threshold that rejects at most `target` of the usable scores: just above the
/// (k+1)-th highest usable score, k = floor(target x n). Scores are in [0, 1].
pub fn choose(usable: &[f64], unusable: &[f64], target: f64) -> Operating {
    let mut u: Vec<f64> = usable.to_vec();
    u.sort_by(|a, b| b.total_cmp(a));
    let k = (target * u.len() as f64 + 1e-9).floor() as usize;
    let threshold = match u.get(k) {
        // the smallest step above that score, kept a readable number
        Some(&s) => ((s + 1e-6) * 1e6).ceil() / 1e6,
        None => 0.0,
    };
    operating(usable, unusable, threshold.min(1.0))
}

/// The outcome of `calibrate`.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    pub model_version: String,
    pub reviewed_usable: usize,
    pub reviewed_unusable: usize,
    pub chosen: Operating,
    /// The model's own threshold on the same plates.
    pub model: Option<Operating>,
    /// The recorded calibration (None on a dry run).
    pub recorded: Option<Calibration>,
}

/// Chooses (and unless `dry_run`, records) this site's threshold.
pub async fn calibrate(
    pool: &Pool,
    site: &str,
    req: &CalibrateRequest,
) -> Result<CalibrationReport, ReportError> {
    if !(0.0..0.5).contains(&req.target_false_reject) {
        return Err(ReportError::Invalid(format!(
            "--target-false-reject {}: expected a share from 0 to below 0.5 (e.g. 0.05)",
            req.target_false_reject
        )));
    }
    if req.by.trim().is_empty() && !req.dry_run {
        return Err(ReportError::Invalid(
            "who calibrates (--by) is required".into(),
        ));
    }
    let version = match &req.model_version {
        Some(v) => v.clone(),
        None => db::latest_model_version(pool, site).await?.ok_or_else(|| {
            ReportError::NotFound(format!("site {site:?} has judged no plate yet"))
        })?,
    };
    let rows = db::reviewed_scores(pool, site, &version).await?;
    let usable: Vec<f64> = rows
        .iter()
        .filter(|r| r.1 == "usable")
        .map(|r| r.2)
        .collect();
    let unusable: Vec<f64> = rows
        .iter()
        .filter(|r| r.1 == "unusable")
        .map(|r| r.2)
        .collect();
    if usable.len() < req.min_usable || unusable.len() < req.min_unusable {
        return Err(ReportError::Invalid(format!(
            "too few reviewed plates of site {site:?} judged by model {version}: {} usable (need \
             {}), {} unusable (need {}); review more (plateqc override / review-import) first",
            usable.len(),
            req.min_usable,
            unusable.len(),
            req.min_unusable
        )));
    }
    let chosen = choose(&usable, &unusable, req.target_false_reject);
    let model = req
        .model_threshold
        .map(|t| operating(&usable, &unusable, t));
    let recorded = if req.dry_run {
        None
    } else {
        let mut c = Calibration {
            id: 0,
            site: site.to_string(),
            model_version: version.clone(),
            threshold: chosen.threshold,
            model_threshold: req.model_threshold,
            target_false_reject: req.target_false_reject,
            reviewed_usable: usable.len() as i64,
            reviewed_unusable: unusable.len() as i64,
            false_reject: chosen.false_reject,
            recall: chosen.recall,
            recall_ci_low: chosen.recall_ci_low,
            recall_ci_high: chosen.recall_ci_high,
            plate_rows: rows
                .iter()
                .map(|r| r.0.to_string())
                .collect::<Vec<_>>()
                .join(","),
            calibrated_by: req.by.trim().to_string(),
            created_at: now(),
        };
        c.id = db::insert(pool, &c).await?;
        Some(c)
    };
    Ok(CalibrationReport {
        model_version: version,
        reviewed_usable: usable.len(),
        reviewed_unusable: unusable.len(),
        chosen,
        model,
        recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_rejects_at_most_the_target_share_of_usable_plates() {
        // 20 usable plates scored 0.00..0.95; 5 % of 20 = 1 may be rejected.
        let usable: Vec<f64> = (0..20).map(|i| i as f64 * 0.05).collect();
        let unusable = [0.5, 0.92, 0.97, 0.99];
        let c = choose(&usable, &unusable, 0.05);
        assert!((c.threshold - 0.900001).abs() < 1e-9, "{c:?}");
        assert_eq!(c.false_reject, 1.0 / 20.0);
        assert_eq!(c.recall, 0.75);
        // a stricter target moves the threshold above every usable score
        let c = choose(&usable, &unusable, 0.0);
        assert!(c.threshold > 0.95 && c.false_reject == 0.0, "{c:?}");
        assert_eq!(c.recall, 0.5);
        assert!(c.recall_ci_low < 0.5 && c.recall_ci_high > 0.5);
    }
}
