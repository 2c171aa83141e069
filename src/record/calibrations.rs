//! Site calibrations (`calibrations`): the threshold a site chose from its reviewed plates, and
//! the reviewed scores it is chosen from. Choosing is the reviewer side's (`report::calibrate`);
//! applying it is the pipeline's.

use super::{Pool, RecordError, Recorder};
use crate::on_pool;
use serde::Serialize;

/// One recorded calibration.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Calibration {
    pub id: i64,
    pub site: String,
    pub model_version: String,
    pub threshold: f64,
    pub model_threshold: Option<f64>,
    pub target_false_reject: f64,
    pub reviewed_usable: i64,
    pub reviewed_unusable: i64,
    pub false_reject: f64,
    pub recall: f64,
    pub recall_ci_low: f64,
    pub recall_ci_high: f64,
    /// The reviewed plates it rests on (plate ids, comma-separated).
    pub plate_rows: String,
    pub calibrated_by: String,
    pub created_at: String,
}

const COLUMNS: &str = "site, model_version, threshold, model_threshold, target_false_reject,
     reviewed_usable, reviewed_unusable, false_reject, recall, recall_ci_low, recall_ci_high,
     plate_rows, calibrated_by, created_at";

/// A reviewed plate's score: (plate row, the reviewed verdict, the model's unusable score).
pub type Reviewed = (i64, String, f64);

/// This site's reviewed plates judged by `model_version`, with their scores (latest judgement
/// and latest review of each image).
pub async fn reviewed_scores(
    pool: &Pool,
    site: &str,
    model_version: &str,
) -> Result<Vec<Reviewed>, RecordError> {
    Ok(on_pool!(pool, p => sqlx::query_as::<_, Reviewed>(
        "SELECT plate_row, verdict, unusable_score FROM qc_images
          WHERE overridden = 1 AND coalesce(site, '') = $1 AND model_version = $2
            AND unusable_score IS NOT NULL
          ORDER BY plate_row",
    )
    .bind(site)
    .bind(model_version)
    .fetch_all(p)
    .await?))
}

/// The model version that judged this site's latest image, if any.
pub async fn latest_model_version(pool: &Pool, site: &str) -> Result<Option<String>, RecordError> {
    let row: Option<(Option<String>,)> = on_pool!(pool, p => sqlx::query_as(
        "SELECT model_version FROM plates
          WHERE coalesce(site, '') = $1 AND verdict <> 'error' AND model_version IS NOT NULL
          ORDER BY id DESC LIMIT 1",
    )
    .bind(site)
    .fetch_optional(p)
    .await?);
    Ok(row.and_then(|r| r.0))
}

/// Records a calibration; returns its id.
pub async fn insert(pool: &Pool, c: &Calibration) -> Result<i64, RecordError> {
    let sql = format!(
        "INSERT INTO calibrations ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id"
    );
    let (id,): (i64,) = on_pool!(pool, p => sqlx::query_as(&sql)
        .bind(&c.site)
        .bind(&c.model_version)
        .bind(c.threshold)
        .bind(c.model_threshold)
        .bind(c.target_false_reject)
        .bind(c.reviewed_usable)
        .bind(c.reviewed_unusable)
        .bind(c.false_reject)
        .bind(c.recall)
        .bind(c.recall_ci_low)
        .bind(c.recall_ci_high)
        .bind(&c.plate_rows)
        .bind(&c.calibrated_by)
        .bind(&c.created_at)
        .fetch_one(p)
        .await?);
    Ok(id)
}

/// Every calibration of a site, oldest first.
pub async fn all(pool: &Pool, site: &str) -> Result<Vec<Calibration>, RecordError> {
    let sql = format!("SELECT id, {COLUMNS} FROM calibrations WHERE site = $1 ORDER BY id");
    Ok(on_pool!(pool, p => sqlx::query_as::<_, Calibration>(&sql)
        .bind(site)
        .fetch_all(p)
        .await?))
}

impl Recorder {
    /// The threshold this site chose for `model_version`, if it calibrated one.
    pub async fn site_calibration(
        &self,
        model_version: &str,
    ) -> Result<Option<Calibration>, RecordError> {
        let sql = format!(
            "SELECT id, {COLUMNS} FROM calibrations WHERE site = $1 AND model_version = $2
              ORDER BY id DESC LIMIT 1"
        );
        Ok(
            on_pool!(&self.pool, p => sqlx::query_as::<_, Calibration>(&sql)
            .bind(self.site.as_str())
            .bind(model_version)
            .fetch_optional(p)
            .await?),
        )
    }
}
