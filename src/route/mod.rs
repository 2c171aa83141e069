//! Route, the last room: what happens to a plate once its outcome is recorded. The file leaves
//! the inbox for `accepted/`, `rejected/`, `quarantine/` or `duplicates/` in dated folders
//! (never overwriting, never leaving a half-copied file, never removing the input before the
//! copy at the destination is durable, see [`route_and_close`]); then the network side writes
//! rejection notes ([`notes`]) and forwards plates and notes through the durable outbox
//! ([`forward`]).

pub mod forward;
pub mod notes;

use crate::fsutil::{create_private_dir_all, move_file, sanitize_component, write_private};
use crate::outcome::Verdict;
use crate::record::{RecordError, Recorder};
use serde::{Deserialize, Serialize};
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
    #[error(transparent)]
    Worker(#[from] tokio::task::JoinError),
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
}

impl Destination {
    pub fn folder(&self) -> &'static str {
        match self {
            Destination::Accepted => "accepted",
            Destination::Rejected => "rejected",
            Destination::Quarantine => "quarantine",
            Destination::Duplicates => "duplicates",
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
    let dir = opts.root.join(dest.folder()).join(day);
    create_private_dir_all(&dir).map_err(|e| RouteError::Write {
        path: dir.clone(),
        source: e,
    })?;
    let name = src
        .file_name()
        .map(|n| sanitize_component(&n.to_string_lossy()))
        .unwrap_or_else(|| "plate.dcm".into());
    Ok(unique_path(&dir, &name))
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
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// Moves a finished file and closes its job; `label` (the verdict, or `duplicate`) is for the
/// log. A routing failure (full disk, unwritable folder)
/// is logged and the file stays in the inbox with its outcome committed; the next rescan finds
/// it and retries the move without judging it again.
pub async fn route_and_close(
    recorder: &Recorder,
    routing: &Routing,
    job_id: i64,
    path: &Path,
    label: &str,
    error: Option<&str>,
    dest: Destination,
) {
    match move_out(recorder, &routing.opts, job_id, path, error, dest).await {
        Ok(routed) => {
            if let Err(e) = recorder.mark_routed(job_id, &routed).await {
                tracing::error!(path = %path.display(), error = %e, "moved, but could not record the move");
            } else {
                tracing::info!(path = %path.display(), verdict = label, to = %routed.display(), "routed");
                routing.wake.notify_one();
            }
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "could not move the file; it stays in the inbox and is retried")
        }
    }
}

/// Plans the target, writes it down as the job's intent, moves the file and writes its reason
/// note; returns where the file now is.
async fn move_out(
    recorder: &Recorder,
    opts: &RouteOptions,
    job_id: i64,
    path: &Path,
    error: Option<&str>,
    dest: Destination,
) -> Result<PathBuf, RouteError> {
    if dest == Destination::Accepted && opts.keep_accepted_in_place {
        return Ok(path.to_path_buf());
    }
    // Intent first: a crash after the move but before its record is reconciled at start-up.
    let (src, o) = (path.to_path_buf(), opts.clone());
    let target =
        tokio::task::spawn_blocking(move || plan_target(&src, dest, &o, &today())).await??;
    recorder.set_routing_to(job_id, &target).await?;
    let (src, note) = (path.to_path_buf(), error.map(str::to_string));
    tokio::task::spawn_blocking(move || -> Result<PathBuf, RouteError> {
        move_file(&src, &target).map_err(|e| RouteError::Move {
            from: src.clone(),
            to: target.clone(),
            source: e,
        })?;
        if let Some(text) = note {
            write_reason(&target, &text)?;
        }
        Ok(target)
    })
    .await?
}

fn unique_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    (1..)
        .map(|i| dir.join(format!("{stem}-{i}{ext}")))
        .find(|p| !p.exists())
        .expect("an unused name exists")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
