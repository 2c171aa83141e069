//! Record, the fifth room and the one door to the database: the QC history in SQLite
//! (embedded append-only migrations, WAL, synchronous FULL, a private database file, one
//! writer) or in a shared PostgreSQL database (its own migrations under
//! `migrations/postgres/`, same tables, views and columns), chosen by the database URL.
//!
//! Every statement that writes lives here, by subject: judged plates ([`plates`]), the daemon's
//! jobs journal ([`jobs`]), the outbox and rejection notes ([`outbox`]), and reviewer
//! overrides with the history and export queries that read them ([`overrides`]). The reject
//! analysis (`report`) only reads the stable views.

pub mod calibrations;
pub mod jobs;
pub mod outbox;
pub mod overrides;
pub mod plates;
pub mod site;

pub use jobs::{Finish, JobStart};
pub use plates::{Finding, PlateRecord};

use crate::fsutil::create_private_dir_all;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
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
    #[error("another plateqc watch is running as site {site:?} on this database; give each daemon its own [record] site")]
    SiteTaken { site: String },
}

/// How this daemon appears in a shared history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordOptions {
    /// Name of this site / machine, written with every plate, override and journal row so that
    /// several sites can record into one PostgreSQL database; the host name when unset.
    pub site: Option<String>,
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
    // WAL and shared-memory files the same mode as the database. Only when it is new: closing
    // any descriptor of a database file drops every POSIX lock this process holds on it, so
    // opening an existing file here would strip a connection this process already has (a
    // second recorder on the same file) of its locks, and another process would then take
    // the WAL for unused and reset it under that connection.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(open_err(e.to_string())),
    }
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
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| open_err(e.to_string()))?
        // The reports are a dozen small aggregates; PostgreSQL's JIT compiles each of them
        // for longer than it runs (qc_images at 100,000 plates: 460 ms with JIT, 160 without).
        // work_mem: the report's counting pass hashes seven groupings at once (GROUPING SETS);
        // with the default 4 MB the planner sorts a million rows to disk instead.
        .options([("jit", "off"), ("work_mem", "32MB")]);
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

/// The time stamp format of every recorded row: UTC, RFC 3339, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Verdict;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

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
            verdict: Verdict::Unusable,
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
        let bad = sqlx::query(
            "INSERT INTO plates (run_id, processed_at, source_path, sha256, size_bytes, verdict)
             VALUES ('r', 't', '/in/b.dcm', 'cd', 0, 'maybe')",
        )
        .execute(rec.sqlite_pool().unwrap())
        .await;
        assert!(bad.is_err(), "verdict is constrained");
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
}
