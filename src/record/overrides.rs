//! Reviewer overrides (`overrides`, append-only) and the queries that read an instance's whole
//! record back: its judgements, its overrides, and the overridden plates for the labelled
//! export. Deciding whether an override is acceptable is the reviewer side's (`report`).

use super::{Pool, RecordError};
use crate::on_pool;
use serde::Serialize;

/// A reviewer's verdict on one instance, as recorded.
#[derive(Debug, Clone)]
pub struct NewOverride<'a> {
    pub sop_instance_uid: &'a str,
    pub verdict: &'a str,
    pub reviewer: &'a str,
    pub reason: &'a str,
    pub created_at: &'a str,
    pub plate_row: i64,
    pub model_verdict: &'a str,
    pub site: &'a str,
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

/// An overridden plate for the labelled export: plate row, SOP Instance UID, sha256, source
/// path, verdict, model verdict, score, model version, reviewer, reason, override time.
pub type LabelRow = (
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

/// The judged plate an instance's override applies to: its row, the model's verdict and the
/// verdict that counts now.
pub async fn current_verdict(
    pool: &Pool,
    sop_instance_uid: &str,
) -> Result<Option<(i64, String, String)>, RecordError> {
    let rows: Vec<(i64, String, String)> = on_pool!(pool, p => sqlx::query_as(
        "SELECT plate_row, model_verdict, verdict FROM qc_images WHERE sop_instance_uid = $1",
    )
    .bind(sop_instance_uid)
    .fetch_all(p)
    .await?);
    Ok(rows.into_iter().next())
}

/// Appends an override; returns its id.
pub async fn insert_override(pool: &Pool, o: &NewOverride<'_>) -> Result<i64, RecordError> {
    Ok(on_pool!(pool, p => sqlx::query_scalar(
        "INSERT INTO overrides (sop_instance_uid, verdict, reviewer, reason, created_at, plate_row,
                                model_verdict, site)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(o.sop_instance_uid)
    .bind(o.verdict)
    .bind(o.reviewer)
    .bind(o.reason)
    .bind(o.created_at)
    .bind(o.plate_row)
    .bind(o.model_verdict)
    .bind(o.site)
    .fetch_one(p)
    .await?))
}

/// Every judgement of the instance `uid` or of the content `sha256` (either may be empty).
pub async fn judgements(
    pool: &Pool,
    uid: &str,
    sha256: &str,
) -> Result<Vec<Judgement>, RecordError> {
    Ok(on_pool!(pool, p => {
        sqlx::query_as::<_, Judgement>(
            "SELECT p.id AS plate_row, p.processed_at, p.site, p.source_path, p.sha256,
                    p.sop_instance_uid, p.verdict, p.unusable_score, v.artifact_types,
                    p.reason_code, p.model_version, p.montage_path, p.error
             FROM plates p JOIN plate_verdicts v ON v.plate_row = p.id
             WHERE (p.sop_instance_uid = $1 AND $1 <> '') OR (p.sha256 = $2 AND $2 <> '')
             ORDER BY p.id",
        )
        .bind(uid)
        .bind(sha256)
        .fetch_all(p)
        .await?
    }))
}

/// Every override of the instance `uid`, oldest first.
pub async fn overrides_of(pool: &Pool, uid: &str) -> Result<Vec<OverrideRow>, RecordError> {
    Ok(on_pool!(pool, p => sqlx::query_as::<_, OverrideRow>(
        "SELECT id, sop_instance_uid, verdict, reviewer, reason, created_at, model_verdict, site
         FROM overrides WHERE sop_instance_uid = $1 ORDER BY id",
    )
    .bind(uid)
    .fetch_all(p)
    .await?))
}

/// The overridden plates, by plate row.
pub async fn overridden_plates(pool: &Pool) -> Result<Vec<LabelRow>, RecordError> {
    Ok(on_pool!(pool, p => sqlx::query_as::<_, LabelRow>(
        "SELECT plate_row, sop_instance_uid, sha256, source_path, verdict, model_verdict,
                unusable_score, model_version, override_by, override_reason, override_at
         FROM qc_images WHERE overridden = 1 ORDER BY plate_row",
    )
    .fetch_all(p)
    .await?))
}

/// Where the watch daemon moved a plate's file (one path per job that routed it).
pub async fn routed_paths(pool: &Pool, plate_row: i64) -> Result<Vec<String>, RecordError> {
    let rows: Vec<(Option<String>,)> = on_pool!(pool, p => sqlx::query_as(
        "SELECT routed_path FROM jobs WHERE plate_row = CAST($1 AS INTEGER) AND routed_path IS NOT NULL",
    )
    .bind(plate_row.to_string())
    .fetch_all(p)
    .await?);
    Ok(rows.into_iter().filter_map(|r| r.0).collect())
}
