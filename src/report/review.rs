//! The reviewer's side: a person overrides a verdict (append-only, who / when / why), the full
//! history of one instance, and the overridden plates exported as a labelled set.

use super::{csv_field, fetch_all_text, ReportError};
use crate::on_pool;
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
    if req.verdict != "usable" && req.verdict != "unusable" {
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
    let uid = req.sop_instance_uid.clone();
    let current: Vec<(i64, String, String)> = fetch_all_text!(
        pool,
        (i64, String, String),
        "SELECT plate_row, model_verdict, verdict FROM qc_images WHERE sop_instance_uid = $1",
        std::slice::from_ref(&uid)
    );
    let Some((plate_row, model_verdict, previous_verdict)) = current.into_iter().next() else {
        return Err(ReportError::NotFound(format!(
            "no judged plate with SOP Instance UID {uid} in this database"
        )));
    };
    let created = now();
    let id: i64 = on_pool!(pool, p => sqlx::query_scalar(
        "INSERT INTO overrides (sop_instance_uid, verdict, reviewer, reason, created_at, plate_row,
                                model_verdict, site)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(&uid)
    .bind(&req.verdict)
    .bind(req.reviewer.trim())
    .bind(req.reason.trim())
    .bind(&created)
    .bind(plate_row)
    .bind(&model_verdict)
    .bind(&req.site)
    .fetch_one(p)
    .await?);
    Ok(OverrideReceipt {
        id,
        plate_row,
        model_verdict,
        previous_verdict,
        verdict: req.verdict.clone(),
    })
}

/// One judgement of the instance (a row of `plates`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Judgement {
    pub plate_row: i64,
    pub processed_at: String,
    pub site: Option<String>,
    pub source_path: String,
    pub sha256: String,
    pub sop_instance_uid: Option<String>,
    pub verdict: String,
    pub unusable_score: Option<f64>,
    pub artifact_types: Option<String>,
    pub reason_code: Option<String>,
    pub model_version: Option<String>,
    pub montage_path: Option<String>,
    pub error: Option<String>,
}

/// One reviewer override.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OverrideRow {
    pub id: i64,
    pub sop_instance_uid: String,
    pub verdict: String,
    pub reviewer: String,
    pub reason: String,
    pub created_at: String,
    pub model_verdict: Option<String>,
    pub site: Option<String>,
}

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
    let binds = [uid.clone(), sha.clone()];
    let judgements: Vec<Judgement> = on_pool!(pool, p => {
        let mut q = sqlx::query_as::<_, Judgement>(
            "SELECT p.id AS plate_row, p.processed_at, p.site, p.source_path, p.sha256,
                    p.sop_instance_uid, p.verdict, p.unusable_score, v.artifact_types,
                    p.reason_code, p.model_version, p.montage_path, p.error
             FROM plates p JOIN plate_verdicts v ON v.plate_row = p.id
             WHERE (p.sop_instance_uid = $1 AND $1 <> '') OR (p.sha256 = $2 AND $2 <> '')
             ORDER BY p.id",
        );
        for b in &binds {
            q = q.bind(b);
        }
        q.fetch_all(p).await?
    });
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
        let rows: Vec<OverrideRow> = on_pool!(pool, p => sqlx::query_as::<_, OverrideRow>(
            "SELECT id, sop_instance_uid, verdict, reviewer, reason, created_at, model_verdict, site
             FROM overrides WHERE sop_instance_uid = $1 ORDER BY id",
        )
        .bind(u)
        .fetch_all(p)
        .await?);
        overrides.extend(rows);
    }
    overrides.sort_by_key(|o| o.id);
    let effective_verdict = overrides.last().map(|o| o.verdict.clone()).or_else(|| {
        judgements
            .iter()
            .rev()
            .find(|j| j.verdict != "error")
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

type LabelRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<f64>,
    Option<String>,
    String,
    String,
    String,
);

/// Copies every overridden plate's DICOM file into `out/images/` and writes `out/labels.csv`
/// (format in docs/reports.md). A file is taken from where the watch daemon moved it, or
/// where it was scanned, and only when its sha256 still matches the judged content.
pub async fn export_labels(pool: &Pool, out: &Path) -> Result<ExportSummary, ReportError> {
    let rows: Vec<LabelRow> = fetch_all_text!(
        pool,
        LabelRow,
        "SELECT plate_row, sop_instance_uid, sha256, source_path, verdict, model_verdict,
                unusable_score, model_version, override_by, override_reason, override_at
         FROM qc_images WHERE overridden = 1 ORDER BY plate_row",
        &[]
    );
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let images = out.join("images");
    crate::fsutil::create_private_dir_all(&images).map_err(io(&images))?;
    let mut csv = String::from(
        "file,sop_instance_uid,sha256,label,model_verdict,unusable_score,model_version,reviewer,reason,overridden_at\n",
    );
    let mut written = 0;
    let mut missing = Vec::new();
    for (row, uid, sha, source, label, model_verdict, score, version, by, reason, at) in rows {
        let routed: Vec<(Option<String>,)> = fetch_all_text!(
            pool,
            (Option<String>,),
            "SELECT routed_path FROM jobs WHERE plate_row = CAST($1 AS INTEGER) AND routed_path IS NOT NULL",
            &[row.to_string()]
        );
        let candidates: Vec<PathBuf> = routed
            .into_iter()
            .filter_map(|r| r.0)
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
