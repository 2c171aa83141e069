//! Route, the last room: what happens to a plate once its outcome is recorded. The file leaves
//! the inbox for `accepted/`, `rejected/`, `quarantine/` or `duplicates/` in dated folders
//! (never overwriting, never leaving a half-copied file, never removing the input before the
//! copy at the destination is durable, see [`route_and_close`]); then the network side writes
//! rejection notes ([`notes`]) and forwards plates and notes through the durable outbox
//! ([`forward`]).

pub mod forward;
pub mod notes;
pub mod stow;
pub mod trouble;

use crate::fsutil::{
    create_private_dir_all, move_file, move_file_unsynced, sanitize_component, sync_dir,
    write_private,
};
use crate::outcome::Verdict;
use crate::record::{RecordError, Recorder};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot move {from} to {to}: {source}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the routing worker stopped: {0}")]
    Worker(String),
}

/// Where a plate goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    Accepted,
    Rejected,
    Quarantine,
    /// Identical content was judged before; kept for the record, not judged again.
    Duplicates,
    /// Judged, but the verdict waits for a person (`plates.needs_review`).
    Review,
}

impl Destination {
    pub fn folder(&self) -> &'static str {
        match self {
            Destination::Accepted => "accepted",
            Destination::Rejected => "rejected",
            Destination::Quarantine => "quarantine",
            Destination::Duplicates => "duplicates",
            Destination::Review => "review",
        }
    }

    /// Where a judged plate goes: `review/` while its verdict waits for a person.
    pub fn for_judged(verdict: Verdict, needs_review: bool) -> Destination {
        if needs_review && verdict != Verdict::Error {
            Destination::Review
        } else {
            Destination::for_verdict(verdict)
        }
    }

    pub fn for_verdict(verdict: Verdict) -> Destination {
        match verdict {
            Verdict::Usable => Destination::Accepted,
            Verdict::Unusable => Destination::Rejected,
            Verdict::Error => Destination::Quarantine,
        }
    }
}

/// Routing settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteOptions {
    /// Root of `accepted/`, `rejected/`, `quarantine/` and `duplicates/`; empty means the
    /// output folder (`paths.out`), beside `overlays/`.
    pub root: PathBuf,
    /// Leave usable plates where they are instead of moving them to `accepted/`.
    pub keep_accepted_in_place: bool,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            root: PathBuf::new(),
            keep_accepted_in_place: false,
        }
    }
}

/// Picks the destination of `src` in `<root>/<destination>/<YYYY-MM-DD>/`: its file name
/// (sanitized), with `-1`, `-2`, ... added on a collision. Creates the folder.
pub fn plan_target(
    src: &Path,
    dest: Destination,
    opts: &RouteOptions,
    day: &str,
) -> Result<PathBuf, RouteError> {
    plan_target_avoiding(src, dest, opts, day, &HashSet::new())
}

/// [`plan_target`], also avoiding names already planned for other files (`claimed`).
fn plan_target_avoiding(
    src: &Path,
    dest: Destination,
    opts: &RouteOptions,
    day: &str,
    claimed: &HashSet<PathBuf>,
) -> Result<PathBuf, RouteError> {
    let dir = opts.root.join(dest.folder()).join(day);
    create_private_dir_all(&dir).map_err(|e| RouteError::Write {
        path: dir.clone(),
        source: e,
    })?;
    let name = src
        .file_name()
        .map(|n| sanitize_component(&n.to_string_lossy()))
        .unwrap_or_else(|| "plate.dcm".into());
    Ok(unique_path(&dir, &name, claimed))
}

/// Plans and moves in one step (for callers that need no intent record).
pub fn route_file(
    src: &Path,
    dest: Destination,
    opts: &RouteOptions,
    day: &str,
) -> Result<PathBuf, RouteError> {
    let target = plan_target(src, dest, opts, day)?;
    move_file(src, &target).map_err(|e| RouteError::Move {
        from: src.into(),
        to: target.clone(),
        source: e,
    })?;
    Ok(target)
}

/// Writes `<routed file>.reason.txt` beside a quarantined or rejected file.
pub fn write_reason(routed: &Path, text: &str) -> Result<PathBuf, RouteError> {
    let mut name = routed.file_name().unwrap_or_default().to_os_string();
    name.push(".reason.txt");
    let path = routed.with_file_name(name);
    write_private(&path, text.as_bytes()).map_err(|e| RouteError::Write {
        path: path.clone(),
        source: e,
    })?;
    Ok(path)
}

/// Where finished files go, and whom to tell once they are there.
pub struct Routing {
    pub opts: RouteOptions,
    /// Wakes the network side, which dispatches routed plates (notes, outbox).
    pub wake: Arc<Notify>,
    /// Montages of held-back plates on their way to the note writer.
    pub montages: Arc<MontageHandOff>,
}

/// Montage JPEGs made by explain for plates the daemon holds back, by job, until the job's
/// rejection note is written. Only a shortcut: a note whose montage is not here (the daemon
/// restarted, the plate waited for review, more were waiting than kept) reads the file.
#[derive(Default)]
pub struct MontageHandOff {
    by_job: std::sync::Mutex<std::collections::VecDeque<(i64, Arc<crate::explain::MontageJpeg>)>>,
}

impl MontageHandOff {
    /// The most montages kept (tens of kB each); the oldest make room for new ones.
    const KEPT: usize = 128;

    pub fn put(&self, job_id: i64, jpeg: Arc<crate::explain::MontageJpeg>) {
        if let Ok(mut q) = self.by_job.lock() {
            if q.len() >= Self::KEPT {
                q.pop_front();
            }
            q.push_back((job_id, jpeg));
        }
    }

    /// Takes the job's montage out, if it is here.
    pub fn take(&self, job_id: i64) -> Option<Arc<crate::explain::MontageJpeg>> {
        let mut q = self.by_job.lock().ok()?;
        let at = q.iter().position(|(j, _)| *j == job_id)?;
        q.remove(at).map(|(_, m)| m)
    }
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// A finished file about to leave the inbox.
pub struct Leaving {
    pub job_id: i64,
    pub path: PathBuf,
    pub dest: Destination,
    /// The verdict, or `duplicate`, for the log.
    pub label: &'static str,
    /// Written beside a quarantined file as its reason note.
    pub error: Option<String>,
}

/// Where a leaving file is to go: `Ok(None)` when it stays where it is (accepted plates kept in
/// place).
pub type Plan = Result<Option<PathBuf>, RouteError>;

/// Plans where each file of a group goes, with names unique within the group as well as on
/// disk (two plates named alike that finish together must not be planned onto one name).
pub async fn plan_targets(opts: &RouteOptions, leaving: &[Leaving]) -> Vec<Plan> {
    let items: Vec<(PathBuf, Destination)> =
        leaving.iter().map(|l| (l.path.clone(), l.dest)).collect();
    let opts = opts.clone();
    let n = items.len();
    let planned = tokio::task::spawn_blocking(move || {
        let day = today();
        let mut claimed = HashSet::new();
        items
            .iter()
            .map(|(src, dest)| {
                if *dest == Destination::Accepted && opts.keep_accepted_in_place {
                    return Ok(None);
                }
                let target = plan_target_avoiding(src, *dest, &opts, &day, &claimed)?;
                claimed.insert(target.clone());
                Ok(Some(target))
            })
            .collect::<Vec<Plan>>()
    })
    .await;
    match planned {
        Ok(p) => p,
        Err(join) => {
            let why = join.to_string();
            (0..n)
                .map(|_| Err(RouteError::Worker(why.clone())))
                .collect()
        }
    }
}

/// Moves one finished file and closes its job: the target is planned and written down as the
/// job's intent first, so a crash after the move but before its record is reconciled at
/// start-up ([`Recorder::reconcile_moves`]). A routing failure (full disk, unwritable folder)
/// is logged and the file stays in the inbox with its outcome committed; the next rescan
/// finds it and retries the move without judging it again.
pub async fn route_and_close(recorder: &Recorder, routing: &Routing, leaving: Leaving) {
    let plan = plan_targets(&routing.opts, std::slice::from_ref(&leaving))
        .await
        .pop()
        .unwrap_or(Ok(None));
    let plan = match plan {
        Ok(Some(target)) => match recorder.set_routing_to(leaving.job_id, &target).await {
            Ok(()) => Ok(Some(target)),
            Err(e) => Err(e.into()),
        },
        other => other,
    };
    move_planned(recorder, routing, vec![(leaving, plan)]).await;
}

/// Moves files whose targets are already committed as their jobs' intents, syncs each target
/// folder once (not once per file), writes the reason notes, and records all the moves in one
/// transaction. Each failure is logged; its file stays in the inbox (or, moved but not made
/// durable, is reconciled at the next start).
pub async fn move_planned(recorder: &Recorder, routing: &Routing, planned: Vec<(Leaving, Plan)>) {
    let moved = tokio::task::spawn_blocking(move || {
        let mut moved: Vec<(Leaving, PathBuf)> = Vec::new();
        for (l, plan) in planned {
            match plan {
                Ok(None) => {
                    let here = l.path.clone();
                    moved.push((l, here));
                }
                Ok(Some(target)) => match move_file_unsynced(&l.path, &target) {
                    Ok(()) => moved.push((l, target)),
                    Err(e) => log_not_moved(&l, &RouteError::Move {
                        from: l.path.clone(),
                        to: target,
                        source: e,
                    }),
                },
                Err(e) => log_not_moved(&l, &e),
            }
        }
        let folders: HashSet<PathBuf> = moved
            .iter()
            .filter(|(l, to)| l.path != *to)
            .filter_map(|(_, to)| to.parent().map(Path::to_path_buf))
            .collect();
        let unsynced: HashSet<PathBuf> = folders
            .into_iter()
            .filter(|d| match sync_dir(Some(d)) {
                Ok(()) => false,
                Err(e) => {
                    tracing::error!(folder = %d.display(), error = %e, "moved, but cannot make the moves durable; they are reconciled at the next start");
                    true
                }
            })
            .collect();
        moved.retain(|(_, to)| !to.parent().is_some_and(|d| unsynced.contains(d)));
        for (l, to) in &moved {
            if let (Some(text), true) = (&l.error, l.path != *to) {
                if let Err(e) = write_reason(to, text) {
                    tracing::error!(path = %to.display(), error = %e, "moved, but could not write its reason note");
                }
            }
        }
        moved
    })
    .await;
    let moved = match moved {
        Ok(m) => m,
        Err(join) => {
            tracing::error!(error = %join, "routing stopped unexpectedly; the files are retried or reconciled at the next start");
            return;
        }
    };
    let done: Vec<(i64, &Path)> = moved
        .iter()
        .map(|(l, to)| (l.job_id, to.as_path()))
        .collect();
    if let Err(e) = recorder.mark_routed_many(&done).await {
        tracing::error!(files = done.len(), error = %e, "moved, but could not record the moves; they are reconciled at the next start");
        return;
    }
    for (l, to) in &moved {
        tracing::info!(path = %l.path.display(), verdict = l.label, to = %to.display(), "routed");
    }
    if !moved.is_empty() {
        routing.wake.notify_one();
    }
}

fn log_not_moved(l: &Leaving, e: &RouteError) {
    tracing::error!(path = %l.path.display(), error = %e, "could not move the file; it stays in the inbox and is retried");
}

fn unique_path(dir: &Path, name: &str, claimed: &HashSet<PathBuf>) -> PathBuf {
    let free = |p: &Path| !p.exists() && !claimed.contains(p);
    let first = dir.join(name);
    if free(&first) {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    (1..)
        .map(|i| dir.join(format!("{stem}-{i}{ext}")))
        .find(|p| free(p))
        .expect("an unused name exists")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn montage_hand_off_gives_each_job_its_own_once_and_keeps_the_newest() {
        let m = |w: u32| {
            Arc::new(crate::explain::MontageJpeg {
                bytes: vec![w as u8],
                width: w,
                height: 1,
            })
        };
        let h = MontageHandOff::default();
        h.put(1, m(1));
        h.put(2, m(2));
        assert_eq!(h.take(2).map(|j| j.width), Some(2));
        assert!(h.take(2).is_none(), "taken once");
        assert_eq!(h.take(1).map(|j| j.width), Some(1));
        for job in 0..(MontageHandOff::KEPT as i64 + 5) {
            h.put(job, m(job as u32));
        }
        // The oldest made room; the newest are all there.
        assert!(h.take(0).is_none() && h.take(4).is_none());
        assert!(h.take(5).is_some());
        assert!(h.take(MontageHandOff::KEPT as i64 + 4).is_some());
    }

    #[test]
    fn routes_into_dated_folders_without_overwriting() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = RouteOptions {
            root: tmp.path().join("routed"),
            keep_accepted_in_place: false,
        };
        let mut routed = Vec::new();
        for i in 0..3 {
            let src = tmp.path().join("a.dcm");
            fs::write(&src, format!("plate {i}")).unwrap();
            routed.push(route_file(&src, Destination::Rejected, &opts, "2026-11-26").unwrap());
            assert!(!src.exists());
        }
        let names: Vec<_> = routed
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["a.dcm", "a-1.dcm", "a-2.dcm"]);
        assert!(routed[0].starts_with(tmp.path().join("routed/rejected/2026-11-26")));
        assert_eq!(fs::read_to_string(&routed[2]).unwrap(), "plate 2");
        let reason = write_reason(&routed[0], "not DICOM").unwrap();
        assert_eq!(reason.file_name().unwrap(), "a.dcm.reason.txt");
    }

    /// Plates of one group are planned before any moves: two alike-named files (from two
    /// inboxes) must get two names, and a name already on disk is avoided as before.
    #[tokio::test]
    async fn a_group_plans_distinct_targets_for_alike_names() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = RouteOptions {
            root: tmp.path().join("routed"),
            keep_accepted_in_place: false,
        };
        let day_dir = opts.root.join("rejected").join(today());
        fs::create_dir_all(&day_dir).unwrap();
        fs::write(day_dir.join("p.dcm"), "earlier").unwrap();
        let leaving = |job_id, inbox: &str, dest| Leaving {
            job_id,
            path: tmp.path().join(inbox).join("p.dcm"),
            dest,
            label: "unusable",
            error: None,
        };
        let group = [
            leaving(1, "a", Destination::Rejected),
            leaving(2, "b", Destination::Rejected),
            leaving(3, "c", Destination::Accepted),
        ];
        let plans: Vec<PathBuf> = plan_targets(&opts, &group)
            .await
            .into_iter()
            .map(|p| p.unwrap().unwrap())
            .collect();
        assert_eq!(plans[0], day_dir.join("p-1.dcm"));
        assert_eq!(plans[1], day_dir.join("p-2.dcm"));
        assert_eq!(
            plans[2],
            opts.root.join("accepted").join(today()).join("p.dcm")
        );
        // Kept in place: no target at all.
        let keep = RouteOptions {
            keep_accepted_in_place: true,
            ..opts.clone()
        };
        let plans = plan_targets(&keep, &group[2..]).await;
        assert!(matches!(plans[..], [Ok(None)]));
    }

    #[test]
    fn names_from_outside_are_sanitized() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = RouteOptions {
            root: tmp.path().join("r"),
            keep_accepted_in_place: false,
        };
        let src = tmp.path().join("we ird;name.dcm");
        fs::write(&src, "x").unwrap();
        let p = route_file(&src, Destination::Quarantine, &opts, "d").unwrap();
        assert_eq!(p.file_name().unwrap(), "we_ird_name.dcm");
    }

    #[test]
    fn verdicts_map_to_destinations() {
        assert_eq!(
            Destination::for_verdict(Verdict::Usable),
            Destination::Accepted
        );
        assert_eq!(
            Destination::for_verdict(Verdict::Unusable),
            Destination::Rejected
        );
        assert_eq!(
            Destination::for_verdict(Verdict::Error),
            Destination::Quarantine
        );
    }
}
