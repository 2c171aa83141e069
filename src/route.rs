//! Moving judged plates out of the inbox: accepted, rejected or quarantined, in dated folders,
//! never overwriting, never leaving a half-copied file, and never removing the input before
//! the copy at the destination is durable.

use crate::fsutil::{create_private_dir_all, sanitize_component, temp_sibling, write_private};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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

    pub fn for_verdict(verdict: &str) -> Destination {
        match verdict {
            "usable" => Destination::Accepted,
            "unusable" => Destination::Rejected,
            _ => Destination::Quarantine,
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

/// Rename when source and target share a file system; otherwise copy to a hidden temporary
/// name, fsync, rename into place, fsync the folder, and only then remove the source.
pub fn move_file(src: &Path, target: &Path) -> io::Result<()> {
    match rename_noreplace(src, target) {
        Ok(()) => {
            sync_dir(target.parent());
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = temp_sibling(target);
            let copied = (|| {
                fs::copy(src, &tmp)?;
                fs::File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, target)?;
                sync_dir(target.parent());
                Ok(())
            })();
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
                return copied;
            }
            fs::remove_file(src)
        }
        Err(e) => Err(e),
    }
}

/// A rename that never replaces an existing file (two plates planned onto one name must not
/// overwrite each other); falls back to a checked rename where the file system lacks it.
fn rename_noreplace(src: &Path, target: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(src)?, c(target)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them like rename(2).
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if target.exists() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(src, target)
        }
        _ => Err(err),
    }
}

fn sync_dir(dir: Option<&Path>) {
    if let Some(d) = dir {
        if let Ok(f) = fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_move_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::write(&a, "new").unwrap();
        fs::write(&b, "old").unwrap();
        assert!(move_file(&a, &b).is_err());
        assert_eq!(fs::read_to_string(&b).unwrap(), "old");
        assert!(a.exists());
    }

    /// Across file systems (the temp dir and /dev/shm, a tmpfs, where there is one) the move
    /// copies, syncs, renames into place and only then removes the source.
    #[test]
    fn moves_across_file_systems() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let src_dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let dst_dir = tempfile::tempdir_in(shm).unwrap();
        let src = src_dir.path().join("p.dcm");
        fs::write(&src, b"plate bytes").unwrap();
        let target = dst_dir.path().join("p.dcm");
        move_file(&src, &target).unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read(&target).unwrap(), b"plate bytes");
        let names: Vec<_> = fs::read_dir(dst_dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary left behind: {names:?}");
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
        assert_eq!(Destination::for_verdict("usable"), Destination::Accepted);
        assert_eq!(Destination::for_verdict("unusable"), Destination::Rejected);
        assert_eq!(Destination::for_verdict("error"), Destination::Quarantine);
    }
}
