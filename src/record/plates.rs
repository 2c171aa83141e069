//! Judged plates: one row per file judged (verdict, scores, identity, timings, where its
//! overlays went) and one per reported artifact type.

use super::{now, Pool, RecordError, Recorder};
use crate::decode::{PlateHeader, UidSource};
use crate::infer::{Judgement, ModelContract};
use crate::on_pool;
use crate::outcome::{FailureKind, ReviewReason, Stage, Verdict};
use crate::privacy::PatientHasher;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::infer::Finding;

/// Everything recorded about one plate file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlateRecord {
    pub run_id: String,
    pub processed_at: String,
    /// The file as it is named on disk, bytes kept (names need not be UTF-8); the finisher
    /// moves this path. `source_path` is its readable form, as stored.
    #[serde(skip)]
    pub source: PathBuf,
    pub source_path: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub modality: Option<String>,
    pub patient_id_hash: Option<String>,
    pub acquisition_datetime: Option<String>,
    pub station_name: Option<String>,
    pub operator: Option<String>,
    pub device_serial: Option<String>,
    pub plate_identifier: Option<String>,
    pub body_part: Option<String>,
    pub view_position: Option<String>,
    pub anatomic_region: Option<String>,
    pub exposure_index: Option<f64>,
    pub deviation_index: Option<f64>,
    pub transfer_syntax: Option<String>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub bits_stored: Option<i64>,
    pub photometric: Option<String>,
    pub verdict: Verdict,
    pub unusable_score: Option<f64>,
    pub threshold: Option<f64>,
    pub reason_code: Option<String>,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    pub model_sha256: Option<String>,
    pub cam_method: Option<String>,
    pub overlays: BTreeMap<String, String>,
    pub montage_path: Option<String>,
    /// Why the overlays are missing from a judged plate (its verdict stands).
    pub overlay_error: Option<String>,
    /// How the plate was handled other than usual, in words (`plates.remark`).
    pub remark: Option<String>,
    pub decode_ms: Option<f64>,
    pub infer_ms: Option<f64>,
    pub explain_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub error_stage: Option<Stage>,
    pub error_kind: Option<FailureKind>,
    pub error: Option<String>,
    pub findings: Vec<Finding>,
    /// Why the verdict waits for a person (`plates.needs_review`, `plates.review_reason`).
    pub review: Option<ReviewReason>,
    /// The model's feature distance, for models that export one.
    pub feature_distance: Option<f64>,
    /// The file could not be read for a reason that may pass (see
    /// [`crate::fsutil::is_transient`]): the daemon leaves it in the inbox and tries again
    /// later instead of recording this failure.
    #[serde(skip)]
    pub transient: bool,
    /// The montage as JPEG for the rejection note of a plate the daemon holds back; handed
    /// to the note writer in memory, never stored.
    #[serde(skip)]
    pub montage_jpeg: Option<std::sync::Arc<crate::explain::MontageJpeg>>,
}

impl PlateRecord {
    /// A record of the file at `path`, in run `run_id`, not judged yet.
    pub fn for_file(run_id: &str, path: &Path) -> PlateRecord {
        PlateRecord {
            run_id: run_id.to_string(),
            source: path.to_path_buf(),
            source_path: path.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    /// The plate's identity and acquisition facts; its patient ID only as the site's hash.
    pub fn set_identity(&mut self, h: &PlateHeader, hasher: &PatientHasher) {
        self.sop_instance_uid = Some(h.sop_instance_uid.clone()).filter(|s| !s.is_empty());
        self.remark = match h.sop_instance_uid_from {
            UidSource::DataSet => None,
            UidSource::FileMeta => Some(
                "SOP Instance UID missing from the data set: taken from the file meta \
                 information (0002,0003)"
                    .into(),
            ),
            UidSource::Missing => Some(
                "no SOP Instance UID in the file: judged and recorded by its sha256; not \
                 forwarded to a PACS and no rejection note (both need the UID)"
                    .into(),
            ),
        };
        self.sop_class_uid = Some(h.sop_class_uid.clone());
        self.study_instance_uid = Some(h.study_instance_uid.clone()).filter(|s| !s.is_empty());
        self.series_instance_uid = Some(h.series_instance_uid.clone()).filter(|s| !s.is_empty());
        self.modality = Some(h.modality.clone()).filter(|s| !s.is_empty());
        self.patient_id_hash = h.patient_id.as_deref().map(|id| hasher.hash(id));
        self.acquisition_datetime = h.acquisition_datetime.clone();
        self.station_name = h.station_name.clone();
        self.operator = h.operator.clone();
        self.device_serial = h.device_serial.clone();
        self.plate_identifier = h.plate_id.clone();
        self.body_part = h.body_part.clone();
        self.view_position = h.view_position.clone();
        self.anatomic_region = h.anatomic_region.clone();
        self.exposure_index = h.exposure_index;
        self.deviation_index = h.deviation_index;
        self.transfer_syntax = Some(h.transfer_syntax.clone());
        self.rows = Some(h.rows as i64);
        self.columns = Some(h.columns as i64);
        self.bits_stored = Some(h.bits_stored as i64);
        self.photometric = Some(h.photometric.clone());
    }

    /// The model's judgement, and which model and heat-map method gave it.
    pub fn set_judgement(&mut self, j: &Judgement, contract: &ModelContract, cam_method: &str) {
        self.verdict = j.verdict;
        self.unusable_score = Some(j.unusable_score as f64);
        self.threshold = Some(contract.threshold as f64);
        self.model_name = Some(contract.model_name.clone());
        self.model_version = Some(contract.model_version.clone());
        self.model_sha256 = Some(contract.sha256.clone());
        self.cam_method = Some(cam_method.to_string());
        self.findings = j.findings.clone();
        self.reason_code = j.reason_code.clone();
        self.review = j.review;
        self.feature_distance = j.feature_distance.map(f64::from);
    }

    /// The plate could not be judged: `stage` failed with `kind`; `started` is when work on
    /// the plate began.
    pub fn failed(
        mut self,
        stage: Stage,
        kind: FailureKind,
        message: String,
        started: Instant,
    ) -> PlateRecord {
        self.verdict = Verdict::Error;
        self.error_stage = Some(stage);
        self.error_kind = Some(kind);
        self.error = Some(message);
        self.total_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        self.processed_at = now();
        self
    }
}

impl Recorder {
    /// Inserts one plate and its findings in a single transaction; returns the row id.
    pub async fn insert(&self, r: &PlateRecord) -> Result<i64, RecordError> {
        Ok(self.insert_many(std::slice::from_ref(r)).await?[0])
    }

    /// Inserts plates and their findings in a single transaction; returns the row ids in order.
    pub async fn insert_many(&self, records: &[PlateRecord]) -> Result<Vec<i64>, RecordError> {
        let site = self.site.as_str();
        let locks = self.image_locks(records);
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            if let Some(sql) = &locks {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            let mut ids = Vec::with_capacity(records.len());
            for r in records {
                ids.push(insert_plate!(tx, r, site));
            }
            tx.commit().await?;
            Ok(ids)
        })
    }

    /// The statement (`lock_images_sql`) a transaction recording `records` runs first, on
    /// PostgreSQL; None on SQLite or when none of them supersedes anything.
    pub(crate) fn image_locks<'a>(
        &self,
        records: impl IntoIterator<Item = &'a PlateRecord>,
    ) -> Option<String> {
        match self.pool {
            Pool::Postgres(_) => lock_images_sql(&image_lock_keys(&self.site, records)),
            Pool::Sqlite(_) => None,
        }
    }

    /// The verdict recorded in a plate row, with its error message and whether it waits for
    /// a person.
    pub async fn verdict_of(
        &self,
        plate_row: i64,
    ) -> Result<Option<(Verdict, Option<String>, bool)>, RecordError> {
        let row: Option<(String, Option<String>, i64)> = on_pool!(&self.pool, pool =>
            sqlx::query_as("SELECT verdict, error, needs_review FROM plates WHERE id = $1")
                .bind(plate_row)
                .fetch_optional(pool)
                .await?
        );
        Ok(row.map(|(v, e, r)| (v.parse().unwrap_or(Verdict::Error), e, r != 0)))
    }
}

/// The advisory-lock keys that serialise recording the judgements among `records` on
/// PostgreSQL: one per (site, SOP Instance UID) that a judgement supersedes by, sorted and
/// without repeats.
///
/// Why: a judgement marks the earlier ones of its image at its site `superseded` in its own
/// transaction (`insert_plate!`). Two processes recording the same image at the same site in
/// overlapping transactions (a `scan` beside that site's daemon) would each miss the other's
/// uncommitted row and leave both unmarked, so the image would count twice. Holding the key's
/// transaction lock from before the insert to the commit orders them: the second inserts after
/// the first committed, and its mark sees the first. Taken in sorted order, so two batches
/// holding the same images in opposite orders wait for each other instead of deadlocking.
/// SQLite needs none: it runs one writer at a time.
fn image_lock_keys<'a>(site: &str, records: impl IntoIterator<Item = &'a PlateRecord>) -> Vec<i64> {
    use sha2::{Digest, Sha256};
    let mut keys: Vec<i64> = records
        .into_iter()
        .filter(|r| r.verdict != Verdict::Error)
        .filter_map(|r| r.sop_instance_uid.as_deref().filter(|u| !u.is_empty()))
        .map(|uid| {
            let d = Sha256::new()
                .chain_update(b"plateqc image\0")
                .chain_update(site.as_bytes())
                .chain_update(b"\0")
                .chain_update(uid.as_bytes())
                .finalize();
            i64::from_be_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The statement that takes the transaction-scoped advisory locks `image_lock_keys` chose, in
/// their order, in one round trip (a function scan yields the array's elements in order); None
/// when there are none. The keys are integers written into the text, as SQLite, which shares
/// the callers' code, could not bind an array.
fn lock_images_sql(keys: &[i64]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let list: Vec<String> = keys.iter().map(i64::to_string).collect();
    Some(format!(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest('{{{}}}'::int8[]) AS k",
        list.join(",")
    ))
}

/// Inserts a plate and its findings inside the open transaction `$tx` (of either backend) and
/// evaluates to the new row id. A judgement's transaction first runs `Recorder::image_locks`.
macro_rules! insert_plate {
    ($tx:ident, $r:expr, $site:expr) => {{
        let r: &PlateRecord = $r;
        let overlays = if r.overlays.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&r.overlays).unwrap_or_default())
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO plates (run_id, processed_at, source_path, sha256, size_bytes, sop_instance_uid,
                sop_class_uid, study_instance_uid, series_instance_uid, modality, patient_id_hash,
                acquisition_datetime, station_name, operator, device_serial, plate_identifier,
                transfer_syntax, rows, columns, bits_stored, photometric, verdict, unusable_score,
                threshold, reason_code, model_name, model_version, model_sha256, cam_method, overlays,
                montage_path, decode_ms, infer_ms, explain_ms, total_ms, error_stage, error_kind, error,
                site, overlay_error, remark, body_part, view_position, anatomic_region,
                exposure_index, deviation_index, needs_review, review_reason, feature_distance)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                     $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34,
                     $35, $36, $37, $38, $39, $40, $41, $42, $43, $44, $45, $46, $47, $48, $49)
             RETURNING id",
        )
        .bind(&r.run_id)
        .bind(&r.processed_at)
        .bind(&r.source_path)
        .bind(&r.sha256)
        .bind(r.size_bytes)
        .bind(&r.sop_instance_uid)
        .bind(&r.sop_class_uid)
        .bind(&r.study_instance_uid)
        .bind(&r.series_instance_uid)
        .bind(&r.modality)
        .bind(&r.patient_id_hash)
        .bind(&r.acquisition_datetime)
        .bind(&r.station_name)
        .bind(&r.operator)
        .bind(&r.device_serial)
        .bind(&r.plate_identifier)
        .bind(&r.transfer_syntax)
        .bind(r.rows)
        .bind(r.columns)
        .bind(r.bits_stored)
        .bind(&r.photometric)
        .bind(r.verdict.as_str())
        .bind(r.unusable_score)
        .bind(r.threshold)
        .bind(&r.reason_code)
        .bind(&r.model_name)
        .bind(&r.model_version)
        .bind(&r.model_sha256)
        .bind(&r.cam_method)
        .bind(overlays)
        .bind(&r.montage_path)
        .bind(r.decode_ms)
        .bind(r.infer_ms)
        .bind(r.explain_ms)
        .bind(r.total_ms)
        .bind(r.error_stage.map(|s| s.as_str()))
        .bind(r.error_kind.map(|k| k.as_str()))
        .bind(&r.error)
        .bind($site)
        .bind(&r.overlay_error)
        .bind(&r.remark)
        .bind(&r.body_part)
        .bind(&r.view_position)
        .bind(&r.anatomic_region)
        .bind(r.exposure_index)
        .bind(r.deviation_index)
        .bind(i64::from(r.review.is_some()))
        .bind(r.review.map(|x| x.as_str()))
        .bind(r.feature_distance)
        .fetch_one(&mut *$tx)
        .await?;
        // This judgement replaces the earlier ones of the same image at the same site
        // (qc_images counts the latest only): marked here, once, instead of searched for by
        // every report. An error is no judgement, and an image without a UID stands alone.
        if r.verdict != $crate::outcome::Verdict::Error && r.sop_instance_uid.as_deref().is_some_and(|u| !u.is_empty()) {
            sqlx::query(
                "UPDATE plates SET superseded = 1
                  WHERE sop_instance_uid = $1 AND coalesce(site, '') = coalesce($2, '')
                    AND verdict <> 'error' AND id < $3 AND superseded = 0",
            )
            .bind(&r.sop_instance_uid)
            .bind($site)
            .bind(id)
            .execute(&mut *$tx)
            .await?;
        }
        for f in &r.findings {
            sqlx::query("INSERT INTO plate_artifacts (plate_row, artifact_type, reason_code, score) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(&f.artifact_type)
                .bind(&f.reason_code)
                .bind(f.score as f64)
                .execute(&mut *$tx)
                .await?;
        }
        id
    }};
}
pub(crate) use insert_plate;

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(uid: Option<&str>, verdict: Verdict) -> PlateRecord {
        PlateRecord {
            sop_instance_uid: uid.map(str::to_string),
            verdict,
            ..Default::default()
        }
    }

    #[test]
    fn image_lock_keys_are_sorted_unique_and_only_for_judgements_that_supersede() {
        let records = [
            judged(Some("1.2.3"), Verdict::Usable),
            judged(Some("1.2.4"), Verdict::Unusable),
            judged(Some("1.2.3"), Verdict::Unusable),
            judged(Some("1.2.5"), Verdict::Error),
            judged(Some(""), Verdict::Usable),
            judged(None, Verdict::Usable),
        ];
        let keys = image_lock_keys("north", &records);
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // The same image in another order gives the same keys; at another site, others.
        let reversed: Vec<_> = records.iter().rev().collect();
        assert_eq!(image_lock_keys("north", reversed), keys);
        let sql = lock_images_sql(&keys).unwrap();
        assert!(
            sql.contains(&format!("'{{{},{}}}'::int8[]", keys[0], keys[1])),
            "{sql}"
        );
        assert_eq!(lock_images_sql(&[]), None);
        let south = image_lock_keys("south", &records);
        assert!(
            south.iter().all(|k| !keys.contains(k)),
            "{south:?} {keys:?}"
        );
    }
}
