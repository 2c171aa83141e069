//! The outbox (`outbox`) and the rejection notes written for it (`rejection_notes`): what each
//! routed plate sends where, and each item's attempts and fate. Rows are keyed by node, so
//! daemons of several sites sharing one PostgreSQL database each send only their own.

use super::jobs::JobState;
use super::{now, RecordError, Recorder};
use crate::on_pool;
use crate::outcome::stored_enum;

stored_enum! {
    /// Where an outbox item stands (`outbox.state`).
    pub enum OutboxState {
        /// To be sent at `next_attempt_at`.
        Pending = "pending",
        /// The destination answered success; never sent again.
        Sent = "sent",
        /// Given up after `forward.max_attempts` (or refused for good); left for a person.
        Failed = "failed",
    }
}

/// A routed plate whose notes and outbox rows are not yet written.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Routed {
    pub job_id: i64,
    pub routed_path: String,
    pub plate_row: i64,
    pub verdict: String,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub reason_code: Option<String>,
    pub unusable_score: Option<f64>,
    pub threshold: Option<f64>,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    pub montage_path: Option<String>,
}

/// A rejection note written to disk, or an instance queued for one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `plate`, `kos` (the note) or `sc` (the montage as a Secondary Capture).
    pub kind: &'static str,
    pub path: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// An item due for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutItem {
    pub id: i64,
    pub path: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub attempts: i64,
}

/// A failed attempt to send an item, as recorded.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// Given up: the item is marked failed and left for a person.
    pub give_up: bool,
    pub attempts: i64,
    pub next_attempt_at: String,
    /// The status the destination answered, `0x....`, if it answered one.
    pub status: Option<String>,
    pub error: &'a str,
}

impl Recorder {
    /// This node's routed plates still to dispatch, oldest first (at most 256). Jobs with
    /// nothing to send or note (quarantined files, duplicates) are marked dispatched here.
    pub async fn undispatched(&self) -> Result<Vec<Routed>, RecordError> {
        let node = self.site.as_str();
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE jobs SET dispatched = 1
                  WHERE node = $1 AND dispatched = 0 AND routed_path IS NOT NULL AND state <> $2",
            )
            .bind(node)
            .bind(JobState::Done.as_str())
            .execute(pool)
            .await?;
            sqlx::query_as(
                "SELECT j.id AS job_id, j.routed_path, p.id AS plate_row, p.verdict, p.sop_class_uid,
                        p.sop_instance_uid, p.reason_code, p.unusable_score, p.threshold, p.model_name,
                        p.model_version, p.montage_path
                   FROM jobs j JOIN plates p ON p.id = j.plate_row
                  WHERE j.node = $1 AND j.dispatched = 0 AND j.routed_path IS NOT NULL
                    AND j.state = $2
                  ORDER BY j.id LIMIT 256",
            )
            .bind(node)
            .bind(JobState::Done.as_str())
            .fetch_all(pool)
            .await?
        }))
    }

    /// The artifact types reported for a plate, strongest first.
    pub async fn artifact_types(&self, plate_row: i64) -> Result<Vec<String>, RecordError> {
        let types: Vec<(String,)> = on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT artifact_type FROM plate_artifacts WHERE plate_row = $1 ORDER BY score DESC",
            )
            .bind(plate_row)
            .fetch_all(pool)
            .await?
        });
        Ok(types.into_iter().map(|t| t.0).collect())
    }

    /// Records a routed plate's notes and queues its items, per destination in the order given,
    /// and marks its job dispatched, in one transaction. Redoing it after a crash adds nothing
    /// twice.
    pub async fn dispatch(
        &self,
        job: &Routed,
        notes: &[Instance],
        queue: &[(&str, Vec<Instance>)],
    ) -> Result<(), RecordError> {
        let t = now();
        let node = self.site.as_str();
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            for n in notes {
                sqlx::query(
                    "INSERT INTO rejection_notes (plate_row, kind, sop_instance_uid, path, reason_code, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(job.plate_row)
                .bind(n.kind)
                .bind(&n.sop_instance_uid)
                .bind(&n.path)
                .bind(&job.reason_code)
                .bind(&t)
                .execute(&mut *tx)
                .await?;
            }
            for (destination, items) in queue {
                for item in items {
                    sqlx::query(
                        "INSERT INTO outbox (node, destination, plate_row, kind, path, sop_class_uid,
                                             sop_instance_uid, next_attempt_at, created_at)
                         VALUES ($8, $1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
                    )
                    .bind(destination)
                    .bind(job.plate_row)
                    .bind(item.kind)
                    .bind(&item.path)
                    .bind(&item.sop_class_uid)
                    .bind(&item.sop_instance_uid)
                    .bind(&t)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            sqlx::query("UPDATE jobs SET dispatched = 1, updated_at = $1 WHERE id = $2")
                .bind(&t)
                .bind(job.job_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// This node's pending items for `destination` whose next attempt is due (at most 64).
    pub async fn due_items(&self, destination: &str) -> Result<Vec<OutItem>, RecordError> {
        let node = self.site.as_str();
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT id, path, sop_class_uid, sop_instance_uid, attempts FROM outbox
                  WHERE node = $3 AND destination = $1 AND state = $4 AND next_attempt_at <= $2
                  ORDER BY id LIMIT 64",
            )
            .bind(destination)
            .bind(now())
            .bind(node)
            .bind(OutboxState::Pending.as_str())
            .fetch_all(pool)
            .await?
        }))
    }

    /// The destination answered success: the item is never sent again.
    pub async fn mark_sent(&self, item: i64) -> Result<(), RecordError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE outbox SET state = $3, attempts = attempts + 1, sent_at = $1,
                        last_status = '0x0000', last_error = NULL WHERE id = $2",
            )
            .bind(now())
            .bind(item)
            .bind(OutboxState::Sent.as_str())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or given up.
    pub async fn mark_failed(&self, item: i64, f: &Failure<'_>) -> Result<(), RecordError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE outbox SET state = $1, attempts = $2, next_attempt_at = $3,
                        last_status = $4, last_error = $5 WHERE id = $6",
            )
            .bind(if f.give_up {
                OutboxState::Failed
            } else {
                OutboxState::Pending
            }
            .as_str())
            .bind(f.attempts)
            .bind(&f.next_attempt_at)
            .bind(&f.status)
            .bind(f.error)
            .bind(item)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Items per state, for the log and the tests.
    pub async fn outbox_counts(&self) -> Result<Vec<(OutboxState, i64)>, RecordError> {
        let rows: Vec<(String, i64)> = on_pool!(&self.pool, pool => {
            sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((s.parse().ok()?, n)))
            .collect())
    }
}
