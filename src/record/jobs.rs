//! The daemon's jobs journal (`jobs`): a row per file taken from an inbox, committed before
//! any work, closed together with the plate row, and carrying the move's intent and result,
//! so a restart after a crash finishes every file exactly once.

use super::plates::insert_plate;
use super::{now, PlateRecord, RecordError, Recorder};
use crate::on_pool;
use crate::outcome::{stored_enum, Verdict};

stored_enum! {
    /// Where a job stands (`jobs.state`).
    pub enum JobState {
        /// Taken; its plate is being judged.
        Processing = "processing",
        /// Judged and recorded.
        Done = "done",
        /// Recorded as not judgeable (or crashing plateqc); the file goes to quarantine.
        Quarantined = "quarantined",
        /// Identical content was judged before; not judged again.
        Duplicate = "duplicate",
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
        state: JobState,
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
            // A state the schema does not allow cannot be read; it is treated as unfinished.
            let open = open.map(|(id, state, attempts, plate_row)| {
                (id, state.parse().unwrap_or(JobState::Processing), attempts, plate_row)
            });
            let start = match open {
                Some((id, state, _, plate_row)) if state != JobState::Processing => {
                    JobStart::Resume {
                        job_id: id,
                        state,
                        plate_row,
                    }
                }
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
                        "SELECT id FROM plates WHERE sha256 = $1 AND verdict <> $3 AND (site = $2 OR site IS NULL) ORDER BY id LIMIT 1",
                    )
                    .bind(sha256)
                    .bind(node)
                    .bind(Verdict::Error.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let state = if earlier.is_some() {
                        JobState::Duplicate
                    } else {
                        JobState::Processing
                    };
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO jobs (node, source_path, sha256, size_bytes, state, duplicate_of, first_seen, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    )
                    .bind(node)
                    .bind(path)
                    .bind(sha256)
                    .bind(size)
                    .bind(state.as_str())
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
            let state = if r.verdict == Verdict::Error {
                JobState::Quarantined
            } else {
                JobState::Done
            };
            sqlx::query("UPDATE jobs SET state = $1, plate_row = $2, uid_conflict = $3, updated_at = $4 WHERE id = $5")
                .bind(state.as_str())
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
                "UPDATE jobs SET state = $4, plate_row = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(row)
            .bind(now())
            .bind(job_id)
            .bind(JobState::Quarantined.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row)
        })
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
