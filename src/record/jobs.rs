//! The daemon's jobs journal (`jobs`): a row per file taken from an inbox, committed before
//! any work, closed together with the plate row, and carrying the move's intent and result,
//! so a restart after a crash finishes every file exactly once.

use super::plates::insert_plate;
use super::{now, PlateRecord, RecordError, Recorder};
use crate::on_pool;
use crate::outcome::{stored_enum, Verdict};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

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
    /// New work (or work this run took before and put back after a transient read error): the
    /// job is committed as `processing`, taken `attempts` times in all.
    Process { job_id: i64, attempts: i64 },
    /// Taken by an earlier run that stopped before finishing it. The stop may have been this
    /// file's doing or a neighbour's (or a power cut): it is to be judged alone, see
    /// [`Recorder::take_alone`]. It was taken alone `alone_runs` times before.
    Suspect { job_id: i64, alone_runs: i64 },
    /// Its outcome was committed but the file was never moved (crash between the two).
    Resume {
        job_id: i64,
        state: JobState,
        plate_row: Option<i64>,
    },
    /// Identical content was already recorded: recorded as a duplicate of that plate.
    Duplicate { job_id: i64, of_plate: i64 },
    /// plateqc stopped `alone_runs` times while judging this file with nothing else in flight:
    /// it crashes us, so it is quarantined unjudged.
    Poison { job_id: i64, alone_runs: i64 },
    /// Judged before and deliberately left in place (accepted plates kept in the inbox).
    AlreadyHere,
}

/// A judged plate whose job [`Recorder::finish_jobs`] closes, with where its file is about to
/// be moved (`None`: not planned, e.g. kept in place or the folder could not be made).
pub struct Finish<'a> {
    pub job_id: i64,
    pub record: &'a PlateRecord,
    pub routing_to: Option<&'a Path>,
}

/// An unfinished job as read: id, state, attempts, plate row, the run that took it last, and
/// how often it was taken alone.
type OpenJob = (i64, String, i64, Option<i64>, Option<String>, i64);

/// A complete file found in the inbox, with its content's hash and size.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub path: &'a Path,
    pub sha256: &'a str,
    pub size: i64,
}

/// How a local path is keyed in the journal: its readable form, and the hex of its bytes when
/// it is not valid UTF-8 ('' otherwise), so the real path can always be rebuilt.
pub fn path_key(path: &Path) -> (String, String) {
    match path.to_str() {
        Some(s) => (s.to_string(), String::new()),
        None => (
            path.to_string_lossy().into_owned(),
            hex::encode(path.as_os_str().as_bytes()),
        ),
    }
}

/// The path a journal key names (see [`path_key`]).
pub fn path_of_key(display: &str, hex_bytes: &str) -> PathBuf {
    if hex_bytes.is_empty() {
        return PathBuf::from(display);
    }
    match hex::decode(hex_bytes) {
        Ok(bytes) => PathBuf::from(std::ffi::OsString::from_vec(bytes)),
        Err(_) => PathBuf::from(display),
    }
}

// The journal (`jobs`) is keyed by this node's local paths: every query names the node, so
// daemons of several sites sharing one PostgreSQL database never see each other's files.
//
// Why attempts are charged only to a file judged alone: when the daemon process dies (kill -9,
// abort, power cut) every job it had in flight is left `processing`, and nothing says which
// plate, if any, killed it; the decode workers' own deaths are already charged to their plate
// (error kind `crash`). Charging every job left behind would quarantine innocent neighbours
// after a few unrelated stops. So a job left by an earlier run is a suspect, not a culprit:
// the daemon waits until nothing else is in flight, commits `alone_runs + 1`, and judges it
// with nothing beside it. If plateqc stops then, no other plate was there to blame; after
// `watch.max_attempts` such stops the file is quarantined. A stop unrelated to any plate costs
// a suspect one count only if it lands in that short window alone.
impl Recorder {
    /// Decides, in one transaction, how a file from the inbox is handled. `run_id` names this
    /// daemon run; `max_alone` is `watch.max_attempts`.
    pub async fn start_job(
        &self,
        path: &Path,
        sha256: &str,
        size: i64,
        max_alone: i64,
        run_id: &str,
    ) -> Result<JobStart, RecordError> {
        let file = Arrival { path, sha256, size };
        let mut starts = self.start_jobs(&[file], max_alone, run_id).await?;
        Ok(starts.remove(0))
    }

    /// [`Recorder::start_job`] for files found together, in one transaction (one commit and
    /// one journal sync for the lot). The files are decided in order; the answer stops after
    /// the first one left unfinished by an earlier run ([`JobStart::Suspect`] or
    /// [`JobStart::Poison`]), since that one is judged alone and no job may be opened for a
    /// later file before that is done (a stop then would be charged to them too). The caller
    /// hands the files past the answer's length in again.
    pub async fn start_jobs(
        &self,
        files: &[Arrival<'_>],
        max_alone: i64,
        run_id: &str,
    ) -> Result<Vec<JobStart>, RecordError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let now = now();
        let node = self.site.as_str();
        let mut starts = Vec::with_capacity(files.len());
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            for file in files {
                let sha256 = file.sha256;
                let (path, path_hex) = path_key(file.path);
                let kept: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM jobs WHERE node = $1 AND source_path = $2 AND source_hex = $4 AND sha256 = $3 AND routed_path = source_path LIMIT 1",
                )
                .bind(node)
                .bind(&path)
                .bind(sha256)
                .bind(&path_hex)
                .fetch_optional(&mut *tx)
                .await?;
                if kept.is_some() {
                    starts.push(JobStart::AlreadyHere);
                    continue;
                }
                let open: Option<OpenJob> = sqlx::query_as(
                    "SELECT id, state, attempts, plate_row, run_id, alone_runs FROM jobs
                     WHERE node = $1 AND source_path = $2 AND source_hex = $4 AND sha256 = $3 AND routed_path IS NULL",
                )
                .bind(node)
                .bind(&path)
                .bind(sha256)
                .bind(&path_hex)
                .fetch_optional(&mut *tx)
                .await?;
                let start = match open {
                    Some((id, state, attempts, plate_row, taken_by, alone_runs)) => {
                        // A state the schema does not allow cannot be read; it is treated as
                        // unfinished.
                        let state = state.parse().unwrap_or(JobState::Processing);
                        if state != JobState::Processing {
                            JobStart::Resume {
                                job_id: id,
                                state,
                                plate_row,
                            }
                        } else if taken_by.as_deref() == Some(run_id) {
                            // Put back by this very run (a transient read error): no stop
                            // between.
                            sqlx::query("UPDATE jobs SET attempts = attempts + 1, updated_at = $1 WHERE id = $2")
                                .bind(&now)
                                .bind(id)
                                .execute(&mut *tx)
                                .await?;
                            JobStart::Process {
                                job_id: id,
                                attempts: attempts + 1,
                            }
                        } else if alone_runs >= max_alone {
                            JobStart::Poison {
                                job_id: id,
                                alone_runs,
                            }
                        } else {
                            JobStart::Suspect {
                                job_id: id,
                                alone_runs,
                            }
                        }
                    }
                    None => {
                        // Duplicates are this site's: the same content sent to another site is
                        // that site's plate and is judged and routed there. Rows from before
                        // sites were recorded (NULL) are the local database's own.
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
                            "INSERT INTO jobs (node, source_path, source_hex, sha256, size_bytes, state, duplicate_of, first_seen, updated_at, run_id)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                        )
                        .bind(node)
                        .bind(&path)
                        .bind(&path_hex)
                        .bind(sha256)
                        .bind(file.size)
                        .bind(state.as_str())
                        .bind(earlier.map(|e| e.0))
                        .bind(&now)
                        .bind(&now)
                        .bind(run_id)
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
                let alone = matches!(start, JobStart::Suspect { .. } | JobStart::Poison { .. });
                starts.push(start);
                if alone {
                    break;
                }
            }
            tx.commit().await?;
        });
        Ok(starts)
    }

    /// Commits that a suspect job (see [`JobStart::Suspect`]) is about to be judged alone by
    /// run `run_id`; returns how often it has been taken alone now.
    pub async fn take_alone(&self, job_id: i64, run_id: &str) -> Result<i64, RecordError> {
        on_pool!(&self.pool, pool => {
            let n: i64 = sqlx::query_scalar(
                "UPDATE jobs SET alone_runs = alone_runs + 1, attempts = attempts + 1, run_id = $1, updated_at = $2
                 WHERE id = $3 RETURNING alone_runs",
            )
            .bind(run_id)
            .bind(now())
            .bind(job_id)
            .fetch_one(pool)
            .await?;
            Ok(n)
        })
    }

    /// Records a judged plate and closes its job in one transaction; returns the plate row and
    /// whether its SOP Instance UID was already known with other content.
    pub async fn finish_job(
        &self,
        job_id: i64,
        r: &PlateRecord,
    ) -> Result<(i64, bool), RecordError> {
        let done = self
            .finish_jobs(&[Finish {
                job_id,
                record: r,
                routing_to: None,
            }])
            .await?;
        Ok(done[0])
    }

    /// Records several judged plates, closes their jobs and writes down where each file is
    /// about to be moved, all in one transaction (one commit, one fsync of the journal, however
    /// many plates were ready together). Returns each plate's row and whether its SOP Instance
    /// UID was already known with other content, in the order given.
    pub async fn finish_jobs(&self, items: &[Finish<'_>]) -> Result<Vec<(i64, bool)>, RecordError> {
        let site = self.site.as_str();
        let now = now();
        let locks = self.image_locks(items.iter().map(|i| i.record));
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            if let Some(sql) = &locks {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let r = item.record;
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
                // Targets are planned from sanitized names under the configured root: UTF-8.
                let routing_to = item.routing_to.map(|t| t.to_string_lossy().into_owned());
                sqlx::query(
                    "UPDATE jobs SET state = $1, plate_row = $2, uid_conflict = $3, updated_at = $4,
                         routing_to = COALESCE($6, routing_to)
                     WHERE id = $5",
                )
                .bind(state.as_str())
                .bind(row)
                .bind(conflict as i64)
                .bind(&now)
                .bind(item.job_id)
                .bind(routing_to)
                .execute(&mut *tx)
                .await?;
                out.push((row, conflict));
            }
            tx.commit().await?;
            Ok(out)
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
    pub async fn set_routing_to(&self, job_id: i64, target: &Path) -> Result<(), RecordError> {
        // Targets are planned from sanitized names under the configured root: UTF-8 there.
        let target = target.to_string_lossy();
        on_pool!(&self.pool, pool => {
            sqlx::query("UPDATE jobs SET routing_to = $1, updated_at = $2 WHERE id = $3")
                .bind(target.as_ref())
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
        let open: Vec<(i64, String, String, String)> = on_pool!(&self.pool, pool => sqlx::query_as(
            "SELECT id, source_path, source_hex, routing_to FROM jobs WHERE node = $1 AND routed_path IS NULL AND routing_to IS NOT NULL",
        )
        .bind(node)
        .fetch_all(pool)
        .await?);
        let mut n = 0;
        for (id, src, src_hex, to) in open {
            let (src, to) = (path_of_key(&src, &src_hex), PathBuf::from(to));
            // symlink_metadata: a moved symbolic link counts as moved even if it dangles.
            let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
            if !present(&src) && present(&to) {
                self.mark_routed(id, &to).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The file has left the inbox (or, kept in place, is settled where it is).
    pub async fn mark_routed(&self, job_id: i64, routed: &Path) -> Result<(), RecordError> {
        self.mark_routed_many(&[(job_id, routed)]).await
    }

    /// Several files have left the inbox: one transaction for all of them.
    pub async fn mark_routed_many(&self, moved: &[(i64, &Path)]) -> Result<(), RecordError> {
        if moved.is_empty() {
            return Ok(());
        }
        let now = now();
        on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            for (job_id, routed) in moved {
                // Kept in place, the routed path is the source path, compared as stored (lossy form).
                sqlx::query("UPDATE jobs SET routed_path = $1, updated_at = $2 WHERE id = $3")
                    .bind(routed.to_string_lossy().as_ref())
                    .bind(&now)
                    .bind(*job_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Pool;

    /// Three stops with plates in flight quarantine none of them: each is judged alone once
    /// after a stop; only a file that stops plateqc while alone, `max` times, is poison.
    #[tokio::test]
    async fn stops_are_charged_only_to_a_plate_judged_alone() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::open(&dir.path().join("qc.sqlite")).await.unwrap();
        let (a, b) = (Path::new("/in/a.dcm"), Path::new("/in/b.dcm"));
        for p in [a, b] {
            let s = rec.start_job(p, "sha", 1, 3, "run-1").await.unwrap();
            assert!(matches!(s, JobStart::Process { attempts: 1, .. }), "{s:?}");
        }
        // Runs 2..=4 each stop with both files in flight: neither is charged.
        for run in ["run-2", "run-3", "run-4"] {
            for p in [a, b] {
                let s = rec.start_job(p, "sha", 1, 3, run).await.unwrap();
                assert!(
                    matches!(s, JobStart::Suspect { alone_runs: 0, .. }),
                    "{run}: {s:?}"
                );
            }
        }
        // Judged alone, `a` stops plateqc three times; the third stop makes it poison.
        for (i, run) in ["run-5", "run-6", "run-7"].into_iter().enumerate() {
            let s = rec.start_job(a, "sha", 1, 3, run).await.unwrap();
            let JobStart::Suspect { job_id, alone_runs } = s else {
                panic!("{run}: {s:?}")
            };
            assert_eq!(alone_runs, i as i64);
            assert_eq!(rec.take_alone(job_id, run).await.unwrap(), i as i64 + 1);
            // Taken again within the same run (put back after a transient error): no charge.
            let again = rec.start_job(a, "sha", 1, 3, run).await.unwrap();
            assert!(matches!(again, JobStart::Process { .. }), "{again:?}");
        }
        let s = rec.start_job(a, "sha", 1, 3, "run-8").await.unwrap();
        assert!(matches!(s, JobStart::Poison { alone_runs: 3, .. }), "{s:?}");
        let s = rec.start_job(b, "sha", 1, 3, "run-8").await.unwrap();
        assert!(
            matches!(s, JobStart::Suspect { alone_runs: 0, .. }),
            "{s:?}"
        );
    }

    /// Files found together get their jobs in one transaction, decided in order as one by one;
    /// the answer stops after a file an earlier run left unfinished, and no job is opened for
    /// the files after it (they are admitted again once it has been judged alone).
    #[tokio::test]
    async fn files_found_together_are_started_together_up_to_a_suspect() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::open(&dir.path().join("qc.sqlite")).await.unwrap();
        let (a, b, c, d) = (
            Path::new("/in/a.dcm"),
            Path::new("/in/b.dcm"),
            Path::new("/in/c.dcm"),
            Path::new("/in/d.dcm"),
        );
        let arrival = |path, sha256| Arrival {
            path,
            sha256,
            size: 1,
        };
        // An earlier run left `b` in flight.
        let JobStart::Process { job_id: b_job, .. } =
            rec.start_job(b, "sha-b", 1, 3, "run-1").await.unwrap()
        else {
            panic!("a new job")
        };
        let files = [
            arrival(a, "sha-a"),
            arrival(b, "sha-b"),
            arrival(c, "sha-c"),
            arrival(d, "sha-d"),
        ];
        let starts = rec.start_jobs(&files, 3, "run-2").await.unwrap();
        assert_eq!(starts.len(), 2, "{starts:?}");
        assert!(matches!(starts[0], JobStart::Process { attempts: 1, .. }));
        assert!(
            matches!(starts[1], JobStart::Suspect { job_id, alone_runs: 0 } if job_id == b_job),
            "{:?}",
            starts[1]
        );
        let Pool::Sqlite(pool) = &rec.pool else {
            unreachable!()
        };
        let paths: Vec<String> = sqlx::query_scalar("SELECT source_path FROM jobs ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(paths, ["/in/b.dcm", "/in/a.dcm"], "no job for c or d yet");
        // The rest, handed in again, start as they would have one by one.
        let rest = rec.start_jobs(&files[2..], 3, "run-2").await.unwrap();
        assert_eq!(rest.len(), 2);
        assert!(rest.iter().all(|s| matches!(s, JobStart::Process { .. })));
        // An empty batch answers nothing.
        assert!(rec.start_jobs(&[], 3, "run-2").await.unwrap().is_empty());
    }

    /// Plates that finish together are recorded, closed and given their move intents in one
    /// transaction, in order; their moves are then recorded together.
    #[tokio::test]
    async fn a_group_is_finished_and_routed_together() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::open(&dir.path().join("qc.sqlite")).await.unwrap();
        let mut ids = Vec::new();
        let mut records = Vec::new();
        for (i, verdict) in [Verdict::Usable, Verdict::Error, Verdict::Unusable]
            .into_iter()
            .enumerate()
        {
            let path = PathBuf::from(format!("/in/{i}.dcm"));
            let Ok(JobStart::Process { job_id, .. }) =
                rec.start_job(&path, &format!("sha{i}"), 1, 3, "r").await
            else {
                panic!("a new job")
            };
            ids.push(job_id);
            let mut r = PlateRecord::for_file("r", &path);
            r.sha256 = format!("sha{i}");
            r.verdict = verdict;
            records.push(r);
        }
        let targets = [
            Some(PathBuf::from("/out/0.dcm")),
            None,
            Some(PathBuf::from("/out/2.dcm")),
        ];
        let items: Vec<Finish> = ids
            .iter()
            .zip(&records)
            .zip(&targets)
            .map(|((&job_id, record), t)| Finish {
                job_id,
                record,
                routing_to: t.as_deref(),
            })
            .collect();
        let rows = rec.finish_jobs(&items).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert!(
            rows.windows(2).all(|w| w[0].0 < w[1].0),
            "rows in order: {rows:?}"
        );
        let Pool::Sqlite(pool) = &rec.pool else {
            unreachable!()
        };
        let jobs: Vec<(i64, String, Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT id, state, plate_row, routing_to FROM jobs ORDER BY id")
                .fetch_all(pool)
                .await
                .unwrap();
        let states: Vec<&str> = jobs.iter().map(|j| j.1.as_str()).collect();
        assert_eq!(states, ["done", "quarantined", "done"]);
        assert_eq!(
            jobs.iter().map(|j| j.2).collect::<Vec<_>>(),
            rows.iter().map(|r| Some(r.0)).collect::<Vec<_>>()
        );
        assert_eq!(jobs[0].3.as_deref(), Some("/out/0.dcm"));
        assert_eq!(jobs[1].3, None);
        let moved = [
            (ids[0], Path::new("/out/0.dcm")),
            (ids[2], Path::new("/out/2.dcm")),
        ];
        rec.mark_routed_many(&moved).await.unwrap();
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE routed_path IS NULL")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(open, 1);
    }

    /// A name that is not UTF-8 is its own job, and its real path comes back from the journal.
    #[tokio::test]
    async fn non_utf8_names_are_keyed_by_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::open(&dir.path().join("qc.sqlite")).await.unwrap();
        let x = Path::new(std::ffi::OsStr::from_bytes(b"/in/plate-\xff.dcm"));
        let y = Path::new(std::ffi::OsStr::from_bytes(b"/in/plate-\xfe.dcm"));
        assert_eq!(x.to_string_lossy(), y.to_string_lossy());
        let (dx, hx) = path_key(x);
        assert_eq!(path_of_key(&dx, &hx), x);
        assert_eq!(path_key(Path::new("/in/a.dcm")).1, "");
        let jx = rec.start_job(x, "sha", 1, 3, "r").await.unwrap();
        let jy = rec.start_job(y, "sha", 1, 3, "r").await.unwrap();
        let (JobStart::Process { job_id: ix, .. }, JobStart::Process { job_id: iy, .. }) = (jx, jy)
        else {
            panic!("two new jobs")
        };
        assert_ne!(ix, iy);
        // A move recorded as intended but not as done is reconciled from the real path.
        let moved = dir.path().join("moved.dcm");
        std::fs::write(&moved, b"x").unwrap();
        rec.set_routing_to(ix, &moved).await.unwrap();
        assert_eq!(rec.reconcile_moves().await.unwrap(), 1);
    }
}
