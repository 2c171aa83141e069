//! A daemon's hold on its site, and its patience with a database that is not up yet.
//!
//! The journal (`jobs`) is keyed by site: a second `watch` running under the same site name
//! would take up the first one's unfinished files as its own and judge them again. So a daemon
//! claims its site for as long as it runs, and a second claim is refused at start. The claim
//! ends with the process (a lock on a file beside a SQLite database; a session-level advisory
//! lock in PostgreSQL, released by the server when the connection closes), so a crash never
//! leaves a stale claim behind.

use super::{redact_password, DbLocation, Pool, RecordError, Recorder};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Held while the daemon runs; [`SiteClaim::release`] gives it up cleanly.
pub enum SiteClaim {
    /// A lock file beside the SQLite database, locked with `flock`.
    File(std::fs::File),
    /// The connection whose session holds the advisory lock.
    Session(Box<sqlx::PgConnection>),
}

impl SiteClaim {
    /// Gives the claim up; a PostgreSQL session is closed properly (the server logs no lost
    /// client).
    pub async fn release(self) {
        match self {
            SiteClaim::File(f) => drop(f),
            SiteClaim::Session(conn) => {
                let _ = conn.close().await;
            }
        }
    }
}

impl Recorder {
    /// Claims this recorder's site for a daemon; refused while another daemon holds it.
    pub async fn claim_site(&self) -> Result<SiteClaim, RecordError> {
        let taken = || RecordError::SiteTaken {
            site: self.site.clone(),
        };
        match (&self.pool, &self.location) {
            (Pool::Postgres(pool), _) => {
                let mut conn = pool.acquire().await?.detach();
                let key = format!("plateqc watch site {}", self.site);
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                        .bind(&key)
                        .fetch_one(&mut conn)
                        .await?;
                if !got {
                    let _ = conn.close().await;
                    return Err(taken());
                }
                Ok(SiteClaim::Session(Box::new(conn)))
            }
            (Pool::Sqlite(_), DbLocation::Sqlite(db)) => {
                let name = crate::fsutil::sanitize_component(&self.site);
                let mut lock = db.clone().into_os_string();
                lock.push(format!(".site-{name}.lock"));
                let lock = PathBuf::from(lock);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    // Private, as every file plateqc makes.
                    .mode(0o600)
                    .open(&lock)
                    .map_err(|e| RecordError::Open {
                        path: lock.clone(),
                        reason: e.to_string(),
                    })?;
                // SAFETY: a valid open descriptor; flock has no other preconditions.
                let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if rc != 0 {
                    let err = std::io::Error::last_os_error();
                    return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                        taken()
                    } else {
                        RecordError::Open {
                            path: lock,
                            reason: err.to_string(),
                        }
                    });
                }
                Ok(SiteClaim::File(file))
            }
            (Pool::Sqlite(_), DbLocation::Postgres(_)) => unreachable!("a SQLite pool has a file"),
        }
    }
}

/// The longest pause between two tries to reach the database at start.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// Waits until a PostgreSQL server answers (a SQLite file needs no wait): a daemon started
/// before its database (a reboot, a server restart) keeps trying, with a pause that doubles up
/// to 30 s, and logs each failed try. Errors that waiting cannot mend (a malformed URL, wrong
/// credentials, a missing database) end the wait at once. `false` when `cancel` fired first.
pub async fn wait_for_database(
    location: &DbLocation,
    cancel: &CancellationToken,
) -> Result<bool, RecordError> {
    let DbLocation::Postgres(url) = location else {
        return Ok(true);
    };
    let shown = redact_password(url);
    let options = PgConnectOptions::from_str(url).map_err(|e| RecordError::Open {
        path: shown.clone().into(),
        reason: e.to_string(),
    })?;
    let mut pause = Duration::from_secs(1);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match options.connect().await {
            Ok(conn) => {
                let _ = conn.close().await;
                if tries > 1 {
                    tracing::info!(database = %shown, tries, "database reachable");
                }
                return Ok(true);
            }
            Err(e) if worth_waiting_for(&e) => {
                tracing::warn!(database = %shown, error = %e, retry_in_secs = pause.as_secs(), tries,
                    "database not reachable; waiting for it");
            }
            Err(e) => {
                return Err(RecordError::Open {
                    path: shown.into(),
                    reason: e.to_string(),
                })
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(LONGEST_WAIT);
    }
}

/// Network failures and a server that is starting, stopping or out of connections pass by
/// themselves; anything else (authentication, a missing database, bad settings) does not.
fn worth_waiting_for(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exception; 57P0x: shutdown / starting up; 53300: too many
            // connections.
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One daemon per site on a SQLite file: a second claim is refused until the first ends.
    #[tokio::test]
    async fn a_site_is_claimed_by_one_daemon_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("qc.sqlite");
        let north = Recorder::open_as(&db, "north").await.unwrap();
        let north_again = Recorder::open_as(&db, "north").await.unwrap();
        let south = Recorder::open_as(&db, "south").await.unwrap();
        let claim = north.claim_site().await.unwrap();
        assert!(matches!(
            north_again.claim_site().await,
            Err(RecordError::SiteTaken { .. })
        ));
        let other = south.claim_site().await.expect("another site is free");
        claim.release().await;
        let again = north_again.claim_site().await.expect("free once released");
        again.release().await;
        other.release().await;
    }

    #[tokio::test]
    async fn a_sqlite_file_needs_no_wait_and_a_bad_url_ends_it() {
        let cancel = CancellationToken::new();
        let local = DbLocation::Sqlite("x.sqlite".into());
        assert!(wait_for_database(&local, &cancel).await.unwrap());
        let bad = DbLocation::Postgres("postgres://u@h/db?sslmode=sometimes".into());
        assert!(wait_for_database(&bad, &cancel).await.is_err());
    }
}
