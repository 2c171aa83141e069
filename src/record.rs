//! The QC history: SQLite (embedded append-only migrations, WAL, synchronous FULL, a private
//! database file, one writer) or a shared PostgreSQL database (its own migrations under
//! `migrations/postgres/`, same tables, views and columns), chosen by the database URL.

use crate::fsutil::create_private_dir_all;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
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

/// Where the QC history lives, from `paths.db` / `--db`: a SQLite file (a plain path or a
/// `sqlite://` URL), or a shared PostgreSQL database (`postgres://` or `postgresql://` URL).
#[derive(Debug, Clone, PartialEq)]
pub enum DbLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbLocation {
    pub fn parse(db: &Path) -> DbLocation {
        let text = db.to_string_lossy();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            DbLocation::Postgres(text.into_owned())
        } else if let Some(rest) = text.strip_prefix("sqlite://") {
            DbLocation::Sqlite(PathBuf::from(rest))
        } else {
            DbLocation::Sqlite(db.to_path_buf())
        }
    }

    /// For messages: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            DbLocation::Sqlite(p) => p.display().to_string(),
            DbLocation::Postgres(url) => redact_password(url),
        }
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The connection pool of one backend. Every query text is shared (`$1` placeholders, which
/// SQLite accepts too); [`on_pool!`] expands the same code once per backend.
#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool, compiled once for each backend.
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::record::Pool::Sqlite($p) => $body,
            $crate::record::Pool::Postgres($p) => $body,
        }
    };
}

/// This machine's name, the default site of its records.
pub fn default_site() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[derive(Clone)]
pub struct Recorder {
    pool: Pool,
    pub location: DbLocation,
    /// Written into `plates.site` and `overrides.site`; the `jobs.node` of this daemon.
    pub site: String,
}

impl Recorder {
    /// Opens (creating a SQLite file with mode 0600 if needed) and migrates the database; the
    /// records are this machine's (`site` = its host name).
    pub async fn open(db: &Path) -> Result<Recorder, RecordError> {
        Recorder::open_as(db, &default_site()).await
    }

    /// Opens the database given by a path or URL, recording as `site`.
    pub async fn open_as(db: &Path, site: &str) -> Result<Recorder, RecordError> {
        let location = DbLocation::parse(db);
        let pool = match &location {
            DbLocation::Sqlite(path) => Pool::Sqlite(open_sqlite(path).await?),
            DbLocation::Postgres(url) => Pool::Postgres(open_postgres(url).await?),
        };
        Ok(Recorder {
            pool,
            location,
            site: site.to_string(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The SQLite pool, when that is the backend (tests and SQLite-only tools).
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.pool {
            Pool::Sqlite(p) => Some(p),
            Pool::Postgres(_) => None,
        }
    }

    /// Inserts one plate and its findings in a single transaction; returns the row id.
    pub async fn insert(&self, r: &PlateRecord) -> Result<i64, RecordError> {
        let site = self.site.as_str();
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let id = insert_plate!(tx, r, site);
            tx.commit().await?;
            Ok(id)
        })
    }

    pub async fn close(self) {
        on_pool!(self.pool, pool => pool.close().await)
    }
}

async fn open_sqlite(path: &Path) -> Result<SqlitePool, RecordError> {
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
    // Only the files directly in migrations/ (sqlx ignores the postgres/ sub-folder).
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

async fn open_postgres(url: &str) -> Result<PgPool, RecordError> {
    let open_err = |reason: String| RecordError::Open {
        path: redact_password(url).into(),
        reason,
    };
    let options = PgConnectOptions::from_str(url).map_err(|e| open_err(e.to_string()))?;
    let pool = PgPoolOptions::new()
        // A daemon writes from one task at a time; a second connection lets a reader (metrics,
        // a report) through while a transaction is open. Durability is the server's.
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|e| open_err(e.to_string()))?;
    // sqlx takes an advisory lock, so daemons of several sites starting at once migrate once.
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
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

// The journal (`jobs`) is keyed by this node's local paths: every query names the node, so
// daemons of several sites sharing one PostgreSQL database never see each other's files.
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
        let node = self.site.as_str();
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let kept: Option<(i64,)> = sqlx::query_as(
                "SELECT id FROM jobs WHERE node = $1 AND source_path = $2 AND sha256 = $3 AND routed_path = source_path LIMIT 1",
            )
            .bind(node)
            .bind(path)
            .bind(sha256)
            .fetch_optional(&mut *tx)
            .await?;
            if kept.is_some() {
                return Ok(JobStart::AlreadyHere);
            }
            let open: Option<(i64, String, i64, Option<i64>)> = sqlx::query_as(
                "SELECT id, state, attempts, plate_row FROM jobs WHERE node = $1 AND source_path = $2 AND sha256 = $3 AND routed_path IS NULL",
            )
            .bind(node)
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
                    sqlx::query("UPDATE jobs SET attempts = attempts + 1, updated_at = $1 WHERE id = $2")
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
                    // Duplicates are this site's: the same content sent to another site is
                    // that site's plate and is judged and routed there. Rows from before sites
                    // were recorded (NULL) are the local database's own.
                    let earlier: Option<(i64,)> = sqlx::query_as(
                        "SELECT id FROM plates WHERE sha256 = $1 AND verdict <> 'error' AND (site = $2 OR site IS NULL) ORDER BY id LIMIT 1",
                    )
                    .bind(sha256)
                    .bind(node)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let state = if earlier.is_some() {
                        "duplicate"
                    } else {
                        "processing"
                    };
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO jobs (node, source_path, sha256, size_bytes, state, duplicate_of, first_seen, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    )
                    .bind(node)
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
        })
    }

    /// Records a judged plate and closes its job in one transaction; returns the plate row and
    /// whether its SOP Instance UID was already known with other content.
    pub async fn finish_job(
        &self,
        job_id: i64,
        r: &PlateRecord,
    ) -> Result<(i64, bool), RecordError> {
        let site = self.site.as_str();
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let conflict = match &r.sop_instance_uid {
                Some(uid) => {
                    let (n,): (i64,) = sqlx::query_as(
                        "SELECT count(*) FROM plates WHERE sop_instance_uid = $1 AND sha256 <> $2",
                    )
                    .bind(uid)
                    .bind(&r.sha256)
                    .fetch_one(&mut *tx)
                    .await?;
                    n > 0
                }
                None => false,
            };
            let row = insert_plate!(tx, r, site);
            let state = if r.verdict == "error" {
                "quarantined"
            } else {
                "done"
            };
            sqlx::query("UPDATE jobs SET state = $1, plate_row = $2, uid_conflict = $3, updated_at = $4 WHERE id = $5")
                .bind(state)
                .bind(row)
                .bind(conflict as i64)
                .bind(now())
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((row, conflict))
        })
    }

    /// Records a file that was never judged (it crashed us repeatedly) and closes its job.
    pub async fn quarantine_job(&self, job_id: i64, r: &PlateRecord) -> Result<i64, RecordError> {
        let site = self.site.as_str();
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let row = insert_plate!(tx, r, site);
            sqlx::query(
                "UPDATE jobs SET state = 'quarantined', plate_row = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(row)
            .bind(now())
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    /// The verdict recorded in a plate row.
    pub async fn verdict_of(
        &self,
        plate_row: i64,
    ) -> Result<Option<(String, Option<String>)>, RecordError> {
        on_pool!(&self.pool, pool => Ok(
            sqlx::query_as("SELECT verdict, error FROM plates WHERE id = $1")
                .bind(plate_row)
                .fetch_optional(pool)
                .await?,
        ))
    }

    /// Writes down where a file is about to be moved, before moving it.
    pub async fn set_routing_to(&self, job_id: i64, target: &str) -> Result<(), RecordError> {
        on_pool!(&self.pool, pool => {
            sqlx::query("UPDATE jobs SET routing_to = $1, updated_at = $2 WHERE id = $3")
                .bind(target)
                .bind(now())
                .bind(job_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// After a crash between a move and its record: this node's jobs whose source is gone and
    /// whose planned destination exists were moved; record it. Returns how many were reconciled.
    pub async fn reconcile_moves(&self) -> Result<usize, RecordError> {
        let node = self.site.as_str();
        let open: Vec<(i64, String, String)> = on_pool!(&self.pool, pool => sqlx::query_as(
            "SELECT id, source_path, routing_to FROM jobs WHERE node = $1 AND routed_path IS NULL AND routing_to IS NOT NULL",
        )
        .bind(node)
        .fetch_all(pool)
        .await?);
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
        on_pool!(&self.pool, pool => {
            sqlx::query("UPDATE jobs SET routed_path = $1, updated_at = $2 WHERE id = $3")
                .bind(routed)
                .bind(now())
                .bind(job_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

/// Code meanings of the CID 7011 "Rejected for Quality Reasons" codes, shared by the reports
/// and the rejection notes so both name a reason the same way. Spelled exactly as PS3.16 does
/// (checked against pydicom's copy of the DCM dictionary by `tests/it/net.rs`).
pub fn cid7011_meaning(code: &str) -> Option<&'static str> {
    CID7011.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

/// The CID 7011 codes (DCM) and their meanings.
pub const CID7011: [(&str, &str); 16] = [
    ("111207", "Image artifact(s)"),
    ("111208", "Grid artifact(s)"),
    ("111209", "Positioning"),
    ("111210", "Motion blur"),
    ("111211", "Under exposed"),
    ("111212", "Over exposed"),
    ("111213", "No image"),
    ("111214", "Detector artifact(s)"),
    ("111215", "Artifact(s) other than grid or detector artifact"),
    ("111216", "Mechanical failure"),
    ("111217", "Electrical failure"),
    ("111218", "Software failure"),
    ("111219", "Inappropriate image processing"),
    ("111220", "Other failure"),
    ("111221", "Unknown failure"),
    ("113026", "Double exposure"),
];

/// The time stamp format of every recorded row: UTC, RFC 3339, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Inserts a plate and its findings inside the open transaction `$tx` (of either backend) and
/// evaluates to the new row id.
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
                site)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                     $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34,
                     $35, $36, $37, $38, $39)
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
        .bind($site)
        .fetch_one(&mut *$tx)
        .await?;
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
use insert_plate;

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
        .fetch_one(rec.sqlite_pool().unwrap())
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
    fn database_location_is_chosen_by_url() {
        assert_eq!(
            DbLocation::parse(Path::new("demo/out/qc.sqlite")),
            DbLocation::Sqlite("demo/out/qc.sqlite".into())
        );
        assert_eq!(
            DbLocation::parse(Path::new("sqlite:///var/lib/qc.sqlite")),
            DbLocation::Sqlite("/var/lib/qc.sqlite".into())
        );
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h:5433/db?sslmode=require",
        ] {
            assert_eq!(
                DbLocation::parse(Path::new(url)),
                DbLocation::Postgres(url.into())
            );
        }
        let secret = DbLocation::parse(Path::new("postgres://qc:s3cret@db.example/qc"));
        assert_eq!(secret.display(), "postgres://qc:***@db.example/qc");
        assert_eq!(redact_password("postgres://qc@h/db"), "postgres://qc@h/db");
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
