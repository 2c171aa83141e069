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
    /// 1 when the plate waited for review and a later judgement of the same image at this
    /// site replaced it before anyone decided: nothing is sent for it (the later one speaks).
    pub replaced_in_review: i64,
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

/// What one routed plate leaves behind: its notes (written and synced) and, per destination,
/// the instances to queue there.
#[derive(Debug, Clone)]
pub struct Dispatch<'a> {
    pub job: &'a Routed,
    pub notes: Vec<Instance>,
    pub queue: Vec<(&'a str, Vec<Instance>)>,
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

/// A judged plate `p` that waits for review and no one has decided on yet (no override or
/// confirmation of its instance). Without a UID it cannot be reviewed, so it never waits. The
/// dispatch holds such plates back and the waiting count counts them: one definition for both.
const UNDECIDED: &str = "(p.needs_review = 1 AND p.sop_instance_uid IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM overrides o WHERE o.sop_instance_uid = p.sop_instance_uid))";

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
            // A plate that waits for review is dispatched once a reviewer has decided (an
            // override or a confirmation of its instance), with the reviewer's verdict: the
            // note is written and the plate queued only then. Without a UID it cannot be
            // reviewed, and nothing would be sent for it anyway. One that a later judgement
            // of the same image replaced while it waited is settled with nothing sent.
            sqlx::query_as(&format!(
                "SELECT j.id AS job_id, j.routed_path, p.id AS plate_row,
                        CASE WHEN p.needs_review = 1
                             THEN coalesce((SELECT o.verdict FROM overrides o
                                             WHERE o.sop_instance_uid = p.sop_instance_uid
                                             ORDER BY o.id DESC LIMIT 1), p.verdict)
                             ELSE p.verdict END AS verdict,
                        p.sop_class_uid, p.sop_instance_uid, p.reason_code, p.unusable_score,
                        p.threshold, p.model_name, p.model_version, p.montage_path,
                        CASE WHEN {UNDECIDED} AND p.superseded = 1
                             THEN 1 ELSE 0 END AS replaced_in_review
                   FROM jobs j JOIN plates p ON p.id = j.plate_row
                  WHERE j.node = $1 AND j.dispatched = 0 AND j.routed_path IS NOT NULL
                    AND j.state = $2 AND NOT ({UNDECIDED} AND p.superseded = 0)
                  ORDER BY j.id LIMIT 256"
            ))
            .bind(node)
            .bind(JobState::Done.as_str())
            .fetch_all(pool)
            .await?
        }))
    }

    /// This node's routed plates that wait for a person's decision (`needs_review`, no
    /// override or confirmation of the instance yet): nothing has left for them.
    pub async fn awaiting_review(&self) -> Result<i64, RecordError> {
        let node = self.site.as_str();
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM jobs j JOIN plates p ON p.id = j.plate_row
                  WHERE j.node = $1 AND j.dispatched = 0 AND j.routed_path IS NOT NULL
                    AND j.state = $2 AND {UNDECIDED} AND p.superseded = 0"
            ))
            .bind(node)
            .bind(JobState::Done.as_str())
            .fetch_one(pool)
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

    /// Records each routed plate's notes and queues its items, per destination in the order
    /// given, and marks its job dispatched: the plates dispatched together in one transaction
    /// (one commit, one sync of the journal, however many there are). Redoing it after a crash
    /// adds nothing twice.
    pub async fn dispatch(&self, batch: &[Dispatch<'_>]) -> Result<(), RecordError> {
        if batch.is_empty() {
            return Ok(());
        }
        let t = now();
        let node = self.site.as_str();
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            for d in batch {
                let job = d.job;
                for n in &d.notes {
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
                for (destination, items) in &d.queue {
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
            }
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

    /// The destination answered success: the item is never sent again. `syntax` is the
    /// transfer syntax it went in (another than the file's when it was converted).
    pub async fn mark_sent(&self, item: i64, syntax: &str) -> Result<(), RecordError> {
        on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE outbox SET state = $3, attempts = attempts + 1, sent_at = $1,
                        last_status = '0x0000', last_error = NULL, sent_transfer_syntax = $4
                  WHERE id = $2",
            )
            .bind(now())
            .bind(item)
            .bind(OutboxState::Sent.as_str())
            .bind(syntax)
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

/// A held plate a reviewer has since judged usable: to be sent after all.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Released {
    pub plate_row: i64,
    pub routed_path: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// Which outbox entries an operator's `plateqc outbox retry|drop` acts on. Sent entries are
/// history and are never touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxSelect {
    /// These entries (any node's).
    Ids(Vec<i64>),
    /// This node's waiting entries for one destination; `failed_only` leaves pending ones.
    Destination { name: String, failed_only: bool },
    /// Every failed entry of this node.
    AllFailed,
}

/// One outbox entry as `plateqc outbox list` shows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub node: String,
    pub destination: String,
    pub kind: String,
    pub sop_instance_uid: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    /// The transfer syntax it was stored in, when sent.
    pub sent_transfer_syntax: Option<String>,
}

impl Recorder {
    /// This node's plates the model judged unusable and a reviewer's latest override made
    /// usable, that were routed and dispatched but never queued themselves (held back).
    pub async fn released_plates(&self) -> Result<Vec<Released>, RecordError> {
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT p.id AS plate_row, j.routed_path, p.sop_class_uid, p.sop_instance_uid
                   FROM overrides o
                   JOIN plates p ON p.id = o.plate_row
                   JOIN jobs j ON j.plate_row = p.id
                  WHERE j.node = $1 AND j.dispatched = 1 AND j.routed_path IS NOT NULL
                    AND o.verdict = 'usable' AND p.verdict = 'unusable'
                    AND p.sop_class_uid IS NOT NULL AND p.sop_instance_uid IS NOT NULL
                    AND o.id = (SELECT max(x.id) FROM overrides x
                                 WHERE x.sop_instance_uid = o.sop_instance_uid)
                    AND NOT EXISTS (SELECT 1 FROM outbox b
                                     WHERE b.plate_row = p.id AND b.kind = 'plate')
                  ORDER BY p.id LIMIT 64",
            )
            .bind(self.site.as_str())
            .fetch_all(pool)
            .await?
        }))
    }

    /// Queues a released plate for every destination and drops its rejection notes that
    /// have not gone out yet, in one transaction. Returns the notes already stored at a
    /// destination, as (destination, SOP Instance UID): they stay there.
    pub async fn release(
        &self,
        plate: &Released,
        destinations: &[&str],
    ) -> Result<Vec<(String, String)>, RecordError> {
        let t = now();
        let node = self.site.as_str();
        Ok(on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            for d in destinations {
                sqlx::query(
                    "INSERT INTO outbox (node, destination, plate_row, kind, path, sop_class_uid,
                                         sop_instance_uid, next_attempt_at, created_at)
                     VALUES ($1, $2, $3, 'plate', $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
                )
                .bind(node)
                .bind(*d)
                .bind(plate.plate_row)
                .bind(&plate.routed_path)
                .bind(&plate.sop_class_uid)
                .bind(&plate.sop_instance_uid)
                .bind(&t)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "DELETE FROM outbox WHERE plate_row = $1 AND kind IN ('kos', 'sc')
                    AND state IN ($2, $3)",
            )
            .bind(plate.plate_row)
            .bind(OutboxState::Pending.as_str())
            .bind(OutboxState::Failed.as_str())
            .execute(&mut *tx)
            .await?;
            let sent: Vec<(String, String)> = sqlx::query_as(
                "SELECT destination, sop_instance_uid FROM outbox
                  WHERE plate_row = $1 AND kind = 'kos' AND state = $2 ORDER BY id",
            )
            .bind(plate.plate_row)
            .bind(OutboxState::Sent.as_str())
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            sent
        }))
    }

    /// This node's waiting entries per destination and state (pending and failed only: sent
    /// entries are the growing history, counted by the forwarder as it sends).
    pub async fn outbox_backlog(&self) -> Result<Vec<(String, OutboxState, i64)>, RecordError> {
        let node = self.site.as_str();
        let rows: Vec<(String, String, i64)> = on_pool!(&self.pool, pool => {
            sqlx::query_as(
                "SELECT destination, state, COUNT(*) FROM outbox
                  WHERE node = $1 AND state IN ($2, $3)
                  GROUP BY destination, state ORDER BY destination, state",
            )
            .bind(node)
            .bind(OutboxState::Pending.as_str())
            .bind(OutboxState::Failed.as_str())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(d, s, n)| Some((d, s.parse().ok()?, n)))
            .collect())
    }

    /// Makes every pending entry of this node due now (returns how many were waiting). Called
    /// when the forwarder starts: a restart usually follows a configuration fix, and the retry
    /// schedule (up to `retry_max_secs` away) survives restarts.
    pub async fn retry_pending_now(&self) -> Result<u64, RecordError> {
        let t = now();
        Ok(on_pool!(&self.pool, pool => {
            sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1
                  WHERE node = $2 AND state = $3 AND next_attempt_at > $1",
            )
            .bind(&t)
            .bind(self.site.as_str())
            .bind(OutboxState::Pending.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Outbox entries, newest first: `states` empty means every state.
    pub async fn outbox_list(
        &self,
        states: &[OutboxState],
        destination: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, RecordError> {
        let all: Vec<&str> = if states.is_empty() {
            OutboxState::ALL.iter().map(|s| s.as_str()).collect()
        } else {
            states.iter().map(|s| s.as_str()).collect()
        };
        let mut out = Vec::new();
        for state in all {
            let rows: Vec<OutboxRow> = on_pool!(&self.pool, pool => {
                sqlx::query_as(
                    "SELECT id, node, destination, kind, sop_instance_uid, state, attempts,
                            next_attempt_at, last_status, last_error, created_at, sent_at,
                            sent_transfer_syntax
                       FROM outbox
                      WHERE state = $1 AND ($2 IS NULL OR destination = $2)
                      ORDER BY id DESC LIMIT $3",
                )
                .bind(state)
                .bind(destination)
                .bind(limit)
                .fetch_all(pool)
                .await?
            });
            out.extend(rows);
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.id));
        out.truncate(limit.max(0) as usize);
        Ok(out)
    }

    /// Requeues the selected waiting entries for an attempt now, with their attempts counted
    /// from zero again. Returns how many.
    pub async fn outbox_retry(&self, select: &OutboxSelect) -> Result<u64, RecordError> {
        self.outbox_change(select, false).await
    }

    /// Deletes the selected waiting entries: they will not be sent. Returns how many.
    pub async fn outbox_drop(&self, select: &OutboxSelect) -> Result<u64, RecordError> {
        self.outbox_change(select, true).await
    }

    async fn outbox_change(&self, select: &OutboxSelect, drop: bool) -> Result<u64, RecordError> {
        use Bind::{Int, Text};
        let (pending, failed) = (OutboxState::Pending.as_str(), OutboxState::Failed.as_str());
        let waiting = || [Text(pending.into()), Text(failed.into())];
        let node = || Text(self.site.clone());
        // One statement per id, or one for the whole selection; each filter numbers its own
        // parameters from $1 (PostgreSQL wants every bound parameter named in the statement).
        let statements: Vec<(&str, Vec<Bind>)> = match select {
            OutboxSelect::Ids(ids) => ids
                .iter()
                .map(|id| {
                    let [p, f] = waiting();
                    ("id = $1 AND state IN ($2, $3)", vec![Int(*id), p, f])
                })
                .collect(),
            OutboxSelect::Destination {
                name,
                failed_only: true,
            } => vec![(
                "destination = $1 AND node = $2 AND state = $3",
                vec![Text(name.clone()), node(), Text(failed.into())],
            )],
            OutboxSelect::Destination { name, .. } => {
                let [p, f] = waiting();
                vec![(
                    "destination = $1 AND node = $2 AND state IN ($3, $4)",
                    vec![Text(name.clone()), node(), p, f],
                )]
            }
            OutboxSelect::AllFailed => vec![(
                "node = $1 AND state = $2",
                vec![node(), Text(failed.into())],
            )],
        };
        let t = now();
        let mut n = 0;
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            for (filter, binds) in &statements {
                let k = binds.len();
                let sql = if drop {
                    format!("DELETE FROM outbox WHERE {filter}")
                } else {
                    // Attempts count from zero again: the operator starts a fresh schedule.
                    format!(
                        "UPDATE outbox SET state = ${}, attempts = 0, next_attempt_at = ${},
                                last_error = NULL WHERE {filter}",
                        k + 1,
                        k + 2
                    )
                };
                let mut q = sqlx::query(&sql);
                for b in binds {
                    q = match b {
                        Int(v) => q.bind(*v),
                        Text(v) => q.bind(v.as_str()),
                    };
                }
                if !drop {
                    q = q.bind(pending).bind(&t);
                }
                n += q.execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(n)
    }
}

/// A parameter of an outbox selection statement.
enum Bind {
    Int(i64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three entries for `pacs` of this node (pending, failed, sent), one failed of another
    /// node, one pending for a destination no longer configured.
    async fn outbox_with_entries(rec: &Recorder) {
        let me = rec.site.clone();
        let rows = [
            (me.as_str(), "pacs", "pending"),
            (me.as_str(), "pacs", "failed"),
            (me.as_str(), "pacs", "sent"),
            ("other-node", "pacs", "failed"),
            (me.as_str(), "old", "pending"),
        ];
        on_pool!(rec.pool(), pool => {
            for (i, (node, dest, state)) in rows.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO outbox (node, destination, kind, path, sop_class_uid,
                                         sop_instance_uid, state, attempts, next_attempt_at,
                                         created_at, last_error)
                     VALUES ($1, $2, 'plate', '/x', '1.2', $3, $4, 7, '2999-01-01T00:00:00.000Z',
                             '2026-01-01T00:00:00.000Z', 'status 0xa700')",
                )
                .bind(*node)
                .bind(*dest)
                .bind(format!("1.2.3.{i}"))
                .bind(*state)
                .execute(pool)
                .await
                .unwrap();
            }
        });
    }

    fn states(rows: &[OutboxRow]) -> Vec<(String, String, i64)> {
        let mut v: Vec<_> = rows
            .iter()
            .map(|r| (r.destination.clone(), r.state.clone(), r.attempts))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn an_operator_requeues_and_drops_waiting_entries_and_never_touches_sent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::open(&dir.path().join("qc.sqlite")).await.unwrap();
        outbox_with_entries(&rec).await;
        let backlog = rec.outbox_backlog().await.unwrap();
        assert_eq!(
            backlog,
            vec![
                ("old".into(), OutboxState::Pending, 1),
                ("pacs".into(), OutboxState::Failed, 1),
                ("pacs".into(), OutboxState::Pending, 1),
            ],
            "this node's waiting entries only"
        );
        // Start-up: the pending entries an hour (here: centuries) away are due now.
        assert_eq!(rec.retry_pending_now().await.unwrap(), 2);
        assert_eq!(rec.due_items("pacs").await.unwrap().len(), 1);
        // Every failed entry of this node back in the queue, attempts from zero.
        assert_eq!(rec.outbox_retry(&OutboxSelect::AllFailed).await.unwrap(), 1);
        let all = rec.outbox_list(&[], None, 100).await.unwrap();
        assert_eq!(
            states(&all),
            vec![
                ("old".into(), "pending".into(), 7),
                ("pacs".into(), "failed".into(), 7),
                ("pacs".into(), "pending".into(), 0),
                ("pacs".into(), "pending".into(), 7),
                ("pacs".into(), "sent".into(), 7),
            ]
        );
        // A sent entry cannot be requeued or dropped, even by id.
        let sent = all.iter().find(|r| r.state == "sent").unwrap().id;
        assert_eq!(
            rec.outbox_retry(&OutboxSelect::Ids(vec![sent]))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            rec.outbox_drop(&OutboxSelect::Ids(vec![sent]))
                .await
                .unwrap(),
            0
        );
        // The other node's failed entry by id, then the stale destination by name.
        let theirs = all.iter().find(|r| r.node == "other-node").unwrap().id;
        assert_eq!(
            rec.outbox_retry(&OutboxSelect::Ids(vec![theirs]))
                .await
                .unwrap(),
            1
        );
        let old = OutboxSelect::Destination {
            name: "old".into(),
            failed_only: false,
        };
        assert_eq!(rec.outbox_drop(&old).await.unwrap(), 1);
        let left = rec.outbox_list(&[], None, 100).await.unwrap();
        assert_eq!(left.len(), 4);
        assert!(left.iter().all(|r| r.destination == "pacs"));
        let waiting = rec
            .outbox_list(
                &[OutboxState::Pending, OutboxState::Failed],
                Some("pacs"),
                100,
            )
            .await
            .unwrap();
        assert_eq!(waiting.len(), 3);
        assert!(
            waiting.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );
    }
}
