//! The reviewer's side: a person overrides a verdict (append-only, who / when / why), the full
//! history of one instance, and the overridden plates exported as a labelled set.

use super::{csv_field, ReportError};
use crate::outcome::Verdict;
use crate::record::overrides::{self as db, NewOverride};
use crate::record::{now, Pool};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A reviewer's verdict on one instance.
#[derive(Debug, Clone)]
pub struct OverrideRequest {
    pub sop_instance_uid: String,
    pub verdict: String,
    pub reviewer: String,
    pub reason: String,
    pub site: String,
}

/// What an override replaced.
#[derive(Debug, Clone, Serialize)]
pub struct OverrideReceipt {
    pub id: i64,
    pub plate_row: i64,
    pub model_verdict: String,
    pub previous_verdict: String,
    pub verdict: String,
}

/// Appends an override for an instance that has been judged.
pub async fn add_override(
    pool: &Pool,
    req: &OverrideRequest,
) -> Result<OverrideReceipt, ReportError> {
    if !req
        .verdict
        .parse::<Verdict>()
        .is_ok_and(Verdict::is_judgement)
    {
        return Err(ReportError::Invalid(format!(
            "--verdict {}: expected usable or unusable",
            req.verdict
        )));
    }
    if req.reviewer.trim().is_empty() || req.reason.trim().is_empty() {
        return Err(ReportError::Invalid(
            "an override needs who (--by) and why (--reason)".into(),
        ));
    }
    let uid = req.sop_instance_uid.as_str();
    let Some((plate_row, model_verdict, previous_verdict)) = db::current_verdict(pool, uid).await?
    else {
        return Err(ReportError::NotFound(format!(
            "no judged plate with SOP Instance UID {uid} in this database"
        )));
    };
    let created = now();
    let id = db::insert_override(
        pool,
        &NewOverride {
            sop_instance_uid: uid,
            verdict: &req.verdict,
            reviewer: req.reviewer.trim(),
            reason: req.reason.trim(),
            created_at: &created,
            plate_row,
            model_verdict: &model_verdict,
            site: &req.site,
        },
    )
    .await?;
    Ok(OverrideReceipt {
        id,
        plate_row,
        model_verdict,
        previous_verdict,
        verdict: req.verdict.clone(),
    })
}

pub use crate::record::overrides::{Judgement, OverrideRow};

/// Everything recorded about one instance or file.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub query: String,
    pub sop_instance_uids: Vec<String>,
    pub judgements: Vec<Judgement>,
    pub overrides: Vec<OverrideRow>,
    /// The verdict that counts now: the latest override, or else the latest judgement.
    pub effective_verdict: Option<String>,
}

/// What `history` was asked about: a UID, or a file (matched by its UID and its sha256).
pub struct HistoryKey {
    pub uid: Option<String>,
    pub sha256: Option<String>,
    pub label: String,
}

impl HistoryKey {
    /// A path to an existing file is read (its SOP Instance UID from the header, when it is
    /// DICOM, and its sha256); anything else is taken as a SOP Instance UID.
    pub fn from_arg(arg: &str, policy: &crate::decode::DecodePolicy) -> Result<Self, ReportError> {
        let path = Path::new(arg);
        if !path.is_file() {
            return Ok(HistoryKey {
                uid: Some(arg.to_string()),
                sha256: None,
                label: arg.to_string(),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
            path: path.into(),
            source,
        })?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let uid = crate::decode::decode_header(&bytes, policy)
            .ok()
            .map(|h| h.sop_instance_uid)
            .filter(|u| !u.is_empty());
        Ok(HistoryKey {
            uid,
            sha256: Some(sha),
            label: path.display().to_string(),
        })
    }
}

pub async fn history(pool: &Pool, key: &HistoryKey) -> Result<History, ReportError> {
    let uid = key.uid.clone().unwrap_or_default();
    let sha = key.sha256.clone().unwrap_or_default();
    let judgements = db::judgements(pool, &uid, &sha).await?;
    let mut uids: Vec<String> = judgements
        .iter()
        .filter_map(|j| j.sop_instance_uid.clone())
        .collect();
    if !uid.is_empty() {
        uids.push(uid.clone());
    }
    uids.sort();
    uids.dedup();
    let mut overrides: Vec<OverrideRow> = Vec::new();
    for u in &uids {
        let rows = db::overrides_of(pool, u).await?;
        overrides.extend(rows);
    }
    overrides.sort_by_key(|o| o.id);
    let effective_verdict = overrides.last().map(|o| o.verdict.clone()).or_else(|| {
        judgements
            .iter()
            .rev()
            .find(|j| j.verdict != Verdict::Error.as_str())
            .or(judgements.last())
            .map(|j| j.verdict.clone())
    });
    Ok(History {
        query: key.label.clone(),
        sop_instance_uids: uids,
        judgements,
        overrides,
        effective_verdict,
    })
}

pub fn history_table(h: &History) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "history of {}", h.query);
    if h.judgements.is_empty() && h.overrides.is_empty() {
        let _ = writeln!(s, "  nothing recorded");
        return s;
    }
    for j in &h.judgements {
        let _ = writeln!(
            s,
            "  {}  judged   {:<9} score {}  {}{}  model {}  site {}  row {}\n      file {}  sha256 {}",
            j.processed_at,
            j.verdict,
            j.unusable_score
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            j.artifact_types.as_deref().unwrap_or("-"),
            j.reason_code
                .as_deref()
                .map(|c| format!(" (CID 7011 {c})"))
                .unwrap_or_default(),
            j.model_version.as_deref().unwrap_or("-"),
            j.site.as_deref().unwrap_or("-"),
            j.plate_row,
            j.source_path,
            j.sha256,
        );
        if let Some(e) = &j.error {
            let _ = writeln!(s, "      error {e}");
        }
        if let Some(m) = &j.montage_path {
            let _ = writeln!(s, "      montage {m}");
        }
    }
    for o in &h.overrides {
        let _ = writeln!(
            s,
            "  {}  override {:<9} by {} (model said {}): {}",
            o.created_at,
            o.verdict,
            o.reviewer,
            o.model_verdict.as_deref().unwrap_or("-"),
            o.reason
        );
    }
    let _ = writeln!(
        s,
        "  effective verdict: {}",
        h.effective_verdict.as_deref().unwrap_or("-")
    );
    s
}

/// What `export-labels` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub written: usize,
    pub missing: Vec<String>,
    pub labels: PathBuf,
}

/// Copies every overridden plate's DICOM file into `out/images/` and writes `out/labels.csv`
/// (format in docs/reports.md). A file is taken from where the watch daemon moved it, or
/// where it was scanned, and only when its sha256 still matches the judged content.
pub async fn export_labels(pool: &Pool, out: &Path) -> Result<ExportSummary, ReportError> {
    let rows = db::overridden_plates(pool).await?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let images = out.join("images");
    crate::fsutil::create_private_dir_all(&images).map_err(io(&images))?;
    let mut csv = String::from(
        "file,sop_instance_uid,sha256,label,model_verdict,unusable_score,model_version,reviewer,reason,overridden_at,review\n",
    );
    let mut written = 0;
    let mut missing = Vec::new();
    for (row, uid, sha, source, label, model_verdict, score, version, by, reason, at) in rows {
        let candidates: Vec<PathBuf> = db::routed_paths(pool, row)
            .await?
            .into_iter()
            .chain(std::iter::once(source.clone()))
            .map(PathBuf::from)
            .collect();
        let found = candidates.iter().find_map(|c| {
            let bytes = std::fs::read(c).ok()?;
            (hex::encode(Sha256::digest(&bytes)) == sha).then_some(bytes)
        });
        let Some(bytes) = found else {
            tracing::warn!(sop_instance_uid = %uid, source = %source, "overridden plate's file not found with its judged content; not exported");
            missing.push(uid);
            continue;
        };
        let name = format!(
            "{}.dcm",
            crate::fsutil::sanitize_component(&format!("{uid}_{}", &sha[..12.min(sha.len())]))
        );
        let to = images.join(&name);
        crate::fsutil::write_private(&to, &bytes).map_err(io(&to))?;
        let review = if label == model_verdict {
            "confirmed"
        } else {
            "overturned"
        };
        let fields = [
            format!("images/{name}"),
            uid,
            sha,
            label,
            model_verdict,
            score.map(|s| format!("{s:.6}")).unwrap_or_default(),
            version.unwrap_or_default(),
            by,
            reason,
            at,
            review.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        csv.push_str(&line.join(","));
        csv.push('\n');
        written += 1;
    }
    let labels = out.join("labels.csv");
    crate::fsutil::write_private(&labels, csv.as_bytes()).map_err(io(&labels))?;
    Ok(ExportSummary {
        written,
        missing,
        labels,
    })
}

/// What `review-import` did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ImportSummary {
    /// Reviews recorded now.
    pub recorded: usize,
    /// Of those, how many confirm the model's verdict (the rest overturn it).
    pub confirmed: usize,
    /// Rows whose review was already the latest one recorded (a file imported twice).
    pub already: usize,
}

/// One row of a review file.
#[derive(Debug, Clone, serde::Deserialize)]
struct ReviewLine {
    sop_instance_uid: String,
    verdict: String,
    by: String,
    reason: String,
}

/// Imports reviews from a CSV file with the header `sop_instance_uid,verdict,by,reason`: a
/// verdict equal to the model's confirms it, another overturns it; both are reviews
/// (`export-labels` exports them, calibration counts them). Every row is checked before any is
/// recorded, so a file with a bad row records nothing and names every bad line. A row equal to
/// the instance's latest review is skipped, so importing a file twice records nothing twice.
pub async fn import_reviews(
    pool: &Pool,
    file: &Path,
    site: &str,
) -> Result<ImportSummary, ReportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .map_err(|e| ReportError::Invalid(format!("{}: {e}", file.display())))?;
    let headers = reader
        .headers()
        .map_err(|e| ReportError::Invalid(format!("{}: {e}", file.display())))?
        .clone();
    for want in ["sop_instance_uid", "verdict", "by", "reason"] {
        if !headers.iter().any(|h| h == want) {
            return Err(ReportError::Invalid(format!(
                "{}: the header must name sop_instance_uid,verdict,by,reason (no {want})",
                file.display()
            )));
        }
    }
    let mut problems = Vec::new();
    let mut todo: Vec<(OverrideRequest, String)> = Vec::new();
    let mut summary = ImportSummary::default();
    for (i, row) in reader.deserialize::<ReviewLine>().enumerate() {
        let line = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        if !row
            .verdict
            .parse::<Verdict>()
            .is_ok_and(Verdict::is_judgement)
        {
            problems.push(format!(
                "line {line}: verdict {:?} (usable or unusable)",
                row.verdict
            ));
            continue;
        }
        if row.by.is_empty() || row.reason.is_empty() {
            problems.push(format!(
                "line {line}: who (by) and why (reason) are required"
            ));
            continue;
        }
        let Some((_, model_verdict, _)) = db::current_verdict(pool, &row.sop_instance_uid).await?
        else {
            problems.push(format!(
                "line {line}: no judged plate with SOP Instance UID {}",
                row.sop_instance_uid
            ));
            continue;
        };
        let latest = db::overrides_of(pool, &row.sop_instance_uid).await?;
        if latest.last().is_some_and(|o| {
            o.verdict == row.verdict && o.reviewer == row.by && o.reason == row.reason
        }) {
            summary.already += 1;
            continue;
        }
        todo.push((
            OverrideRequest {
                sop_instance_uid: row.sop_instance_uid,
                verdict: row.verdict,
                reviewer: row.by,
                reason: row.reason,
                site: site.to_string(),
            },
            model_verdict,
        ));
    }
    if !problems.is_empty() {
        return Err(ReportError::Invalid(format!(
            "{}: nothing imported:\n  - {}",
            file.display(),
            problems.join("\n  - ")
        )));
    }
    for (req, model_verdict) in &todo {
        add_override(pool, req).await?;
        summary.recorded += 1;
        if req.verdict == *model_verdict {
            summary.confirmed += 1;
        }
    }
    Ok(summary)
}
