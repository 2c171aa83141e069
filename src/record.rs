//! The QC history in SQLite: embedded append-only migrations, WAL, a private database file.

use crate::fsutil::create_private_dir_all;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database write failed: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("site key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// An artifact type reported for a plate.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub artifact_type: String,
    pub reason_code: String,
    pub score: f32,
}

/// Everything recorded about one plate file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlateRecord {
    pub run_id: String,
    pub processed_at: String,
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
    pub transfer_syntax: Option<String>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub bits_stored: Option<i64>,
    pub photometric: Option<String>,
    pub verdict: String,
    pub unusable_score: Option<f64>,
    pub threshold: Option<f64>,
    pub reason_code: Option<String>,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    pub model_sha256: Option<String>,
    pub cam_method: Option<String>,
    pub overlays: BTreeMap<String, String>,
    pub montage_path: Option<String>,
    pub decode_ms: Option<f64>,
    pub infer_ms: Option<f64>,
    pub explain_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub error_stage: Option<String>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub findings: Vec<Finding>,
}

#[derive(Clone)]
pub struct Recorder {
    pool: SqlitePool,
    pub path: PathBuf,
}

impl Recorder {
    /// Opens (creating with mode 0600 if needed) and migrates the database.
    pub async fn open(path: &Path) -> Result<Recorder, RecordError> {
        let open_err = |reason: String| RecordError::Open {
            path: path.into(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        // Create the file ourselves so its mode is 0600 whatever the umask; SQLite gives the
        // WAL and shared-memory files the same mode as the database.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_err(e.to_string()))?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| open_err(e.to_string()))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            // One connection: every write is serialized here instead of failing with SQLITE_BUSY
            // when two deferred transactions try to upgrade; readers elsewhere use WAL.
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Recorder {
            pool,
            path: path.into(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Inserts one plate and its findings in a single transaction; returns the row id.
    pub async fn insert(&self, r: &PlateRecord) -> Result<i64, RecordError> {
        let mut tx = self.pool.begin().await?;
        let id = insert_plate(&mut tx, r).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// What the database already knows about a file about to be taken from an inbox.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStart {
    /// New work: a job row is committed as `processing`.
    Process { job_id: i64, attempts: i64 },
    /// Its outcome was committed but the file was never moved (crash between the two).
    Resume {
        job_id: i64,
        state: String,
        plate_row: Option<i64>,
    },
    /// Identical content was already recorded: recorded as a duplicate of that plate.
    Duplicate { job_id: i64, of_plate: i64 },
    /// It was taken `attempts` times and never finished: it crashes us, so it is quarantined.
    Poison { job_id: i64, attempts: i64 },
    /// Judged before and deliberately left in place (accepted plates kept in the inbox).
    AlreadyHere,
}

impl Recorder {
    /// Decides, in one transaction, how a file from the inbox is handled.
    pub async fn start_job(
        &self,
        path: &str,
        sha256: &str,
        size: i64,
        max_attempts: i64,
    ) -> Result<JobStart, RecordError> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        let kept: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM jobs WHERE source_path = ? AND sha256 = ? AND routed_path = source_path LIMIT 1")
                .bind(path)
                .bind(sha256)
                .fetch_optional(&mut *tx)
                .await?;
        if kept.is_some() {
            return Ok(JobStart::AlreadyHere);
        }
        let open: Option<(i64, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, state, attempts, plate_row FROM jobs WHERE source_path = ? AND sha256 = ? AND routed_path IS NULL",
        )
        .bind(path)
        .bind(sha256)
        .fetch_optional(&mut *tx)
        .await?;
        let start = match open {
            Some((id, state, _, plate_row)) if state != "processing" => JobStart::Resume {
                job_id: id,
                state,
                plate_row,
            },
            Some((id, _, attempts, _)) if attempts >= max_attempts => JobStart::Poison {
                job_id: id,
                attempts,
            },
            Some((id, _, attempts, _)) => {
                sqlx::query("UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE id = ?")
                    .bind(&now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                JobStart::Process {
                    job_id: id,
                    attempts: attempts + 1,
                }
            }
            None => {
                let earlier: Option<(i64,)> =
                    sqlx::query_as("SELECT id FROM plates WHERE sha256 = ? AND verdict <> 'error' ORDER BY id LIMIT 1")
                        .bind(sha256)
                        .fetch_optional(&mut *tx)
                        .await?;
                let state = if earlier.is_some() {
                    "duplicate"
                } else {
                    "processing"
                };
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO jobs (source_path, sha256, size_bytes, state, duplicate_of, first_seen, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(path)
                .bind(sha256)
                .bind(size)
                .bind(state)
                .bind(earlier.map(|e| e.0))
                .bind(&now)
                .bind(&now)
                .fetch_one(&mut *tx)
                .await?;
                match earlier {
                    Some((of,)) => JobStart::Duplicate {
                        job_id: id,
                        of_plate: of,
                    },
                    None => JobStart::Process {
                        job_id: id,
                        attempts: 1,
                    },
                }
            }
        };
        tx.commit().await?;
        Ok(start)
    }

    /// Records a judged plate and closes its job in one transaction; returns the plate row and
    /// whether its SOP Instance UID was already known with other content.
    pub async fn finish_job(
        &self,
        job_id: i64,
        r: &PlateRecord,
    ) -> Result<(i64, bool), RecordError> {
        let mut tx = self.pool.begin().await?;
        let conflict = match &r.sop_instance_uid {
            Some(uid) => {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM plates WHERE sop_instance_uid = ? AND sha256 <> ?",
                )
                .bind(uid)
                .bind(&r.sha256)
                .fetch_one(&mut *tx)
                .await?;
                n > 0
            }
            None => false,
        };
        let row = insert_plate(&mut tx, r).await?;
        let state = if r.verdict == "error" {
            "quarantined"
        } else {
            "done"
        };
        sqlx::query("UPDATE jobs SET state = ?, plate_row = ?, uid_conflict = ?, updated_at = ? WHERE id = ?")
            .bind(state)
            .bind(row)
            .bind(conflict as i64)
            .bind(now())
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((row, conflict))
    }

    /// Records a file that was never judged (it crashed us repeatedly) and closes its job.
    pub async fn quarantine_job(&self, job_id: i64, r: &PlateRecord) -> Result<i64, RecordError> {
        let mut tx = self.pool.begin().await?;
        let row = insert_plate(&mut tx, r).await?;
        sqlx::query(
            "UPDATE jobs SET state = 'quarantined', plate_row = ?, updated_at = ? WHERE id = ?",
        )
        .bind(row)
        .bind(now())
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The verdict recorded in a plate row.
    pub async fn verdict_of(
        &self,
        plate_row: i64,
    ) -> Result<Option<(String, Option<String>)>, RecordError> {
        Ok(
            sqlx::query_as("SELECT verdict, error FROM plates WHERE id = ?")
                .bind(plate_row)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Writes down where a file is about to be moved, before moving it.
    pub async fn set_routing_to(&self, job_id: i64, target: &str) -> Result<(), RecordError> {
        sqlx::query("UPDATE jobs SET routing_to = ?, updated_at = ? WHERE id = ?")
            .bind(target)
            .bind(now())
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// After a crash between a move and its record: jobs whose source is gone and whose planned
    /// destination exists were moved; record it. Returns how many were reconciled.
    pub async fn reconcile_moves(&self) -> Result<usize, RecordError> {
        let open: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, source_path, routing_to FROM jobs WHERE routed_path IS NULL AND routing_to IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for (id, src, to) in open {
            if !std::path::Path::new(&src).exists() && std::path::Path::new(&to).exists() {
                self.mark_routed(id, &to).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The file has left the inbox.
    pub async fn mark_routed(&self, job_id: i64, routed: &str) -> Result<(), RecordError> {
        sqlx::query("UPDATE jobs SET routed_path = ?, updated_at = ? WHERE id = ?")
            .bind(routed)
            .bind(now())
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn insert_plate(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    r: &PlateRecord,
) -> Result<i64, RecordError> {
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
            montage_path, decode_ms, infer_ms, explain_ms, total_ms, error_stage, error_kind, error)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                 ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
    .bind(&r.verdict)
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
    .bind(&r.error_stage)
    .bind(&r.error_kind)
    .bind(&r.error)
    .fetch_one(&mut **tx)
    .await?;
    for f in &r.findings {
        sqlx::query("INSERT INTO plate_artifacts (plate_row, artifact_type, reason_code, score) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(&f.artifact_type)
            .bind(&f.reason_code)
            .bind(f.score as f64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(id)
}

/// Hashes patient IDs with a per-site secret, so records of one patient can be linked inside
/// the site but the ID cannot be recovered or matched against another site's database.
#[derive(Clone)]
pub struct PatientHasher {
    key: Vec<u8>,
}

impl PatientHasher {
    /// Loads the key file, creating it (mode 0600, 32 random bytes) on first use.
    pub fn load_or_create(path: &Path) -> Result<PatientHasher, RecordError> {
        let key_err = |reason: String| RecordError::Key {
            path: path.into(),
            reason,
        };
        if !path.exists() {
            let mut key = [0u8; 32];
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .map_err(|e| key_err(format!("cannot read randomness: {e}")))?;
            crate::fsutil::write_private(path, hex::encode(key).as_bytes())
                .map_err(|e| key_err(e.to_string()))?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| key_err(e.to_string()))?;
        let key = hex::decode(text.trim()).map_err(|_| key_err("not a hex key".into()))?;
        if key.len() < 16 {
            return Err(key_err("key shorter than 16 bytes".into()));
        }
        Ok(PatientHasher { key })
    }

    pub fn hash(&self, patient_id: &str) -> String {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(patient_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn database_is_private_migrated_and_view_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("qc.sqlite");
        let rec = Recorder::open(&db).await.unwrap();
        assert_eq!(
            std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut r = PlateRecord {
            run_id: "r".into(),
            processed_at: "2026-11-26T00:00:00Z".into(),
            source_path: "/in/a.dcm".into(),
            sha256: "ab".into(),
            verdict: "unusable".into(),
            sop_instance_uid: Some("1.2.3".into()),
            ..Default::default()
        };
        r.findings = vec![
            Finding {
                artifact_type: "dust".into(),
                reason_code: "111214".into(),
                score: 0.6,
            },
            Finding {
                artifact_type: "scratch".into(),
                reason_code: "111214".into(),
                score: 0.9,
            },
        ];
        rec.insert(&r).await.unwrap();
        let (verdict, types): (String, String) = sqlx::query_as(
            "SELECT verdict, artifact_types FROM plate_verdicts WHERE sop_instance_uid = '1.2.3'",
        )
        .fetch_one(rec.pool())
        .await
        .unwrap();
        assert_eq!(verdict, "unusable");
        assert_eq!(types, "scratch,dust");
        let bad = PlateRecord {
            verdict: "maybe".into(),
            ..r.clone()
        };
        assert!(rec.insert(&bad).await.is_err(), "verdict is constrained");
        rec.close().await;
        // Reopening an existing database applies no migration twice.
        Recorder::open(&db).await.unwrap();
    }

    #[test]
    fn patient_hash_is_keyed_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = PatientHasher::load_or_create(&dir.path().join("k1")).unwrap();
        let a2 = PatientHasher::load_or_create(&dir.path().join("k1")).unwrap();
        let b = PatientHasher::load_or_create(&dir.path().join("k2")).unwrap();
        assert_eq!(a.hash("P1"), a2.hash("P1"));
        assert_ne!(a.hash("P1"), b.hash("P1"));
        assert_ne!(a.hash("P1"), a.hash("P2"));
        assert!(!a.hash("P1").contains("P1"));
    }
}
