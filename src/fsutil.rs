//! File helpers shared by every stage that writes: patient images and their derivatives are
//! private to the service account, a reader never sees a half-written file, and a move never
//! overwrites and never removes its source before the copy is durable.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Creates a directory tree with mode 0700 for the parts it creates.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_private_with(path, bytes, true)
}

/// As [`write_private`]; `durable = false` skips the fsync for derived files (overlays) that can
/// be regenerated from the plate, where an fsync per image would dominate the run time.
pub fn write_private_with(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir_all(dir)?;
    }
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A hidden temporary name beside `path`; watchers ignore dotfiles, so it is never picked up.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = format!(".{name}.{}.{}.tmp", std::process::id(), next_counter());
    path.with_file_name(unique)
}

fn next_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Makes a string derived from DICOM tags safe as one path component: UIDs and IDs come from
/// outside and may hold separators, `..`, or control characters.
pub fn sanitize_component(raw: &str) -> String {
    let mut s: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(96)
        .collect();
    while s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    if s.is_empty() {
        s.push_str("unknown");
    }
    s
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sanitizing_blocks_traversal_and_separators() {
        assert_eq!(sanitize_component("1.2.840.10008.5"), "1.2.840.10008.5");
        assert_eq!(sanitize_component("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(sanitize_component("a/b\\c\0d"), "a_b_c_d");
        assert_eq!(sanitize_component(""), "unknown");
        assert_eq!(sanitize_component(".hidden"), "_hidden");
        assert!(sanitize_component(&"9".repeat(500)).len() <= 96);
    }

    #[test]
    fn private_files_are_mode_0600_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.png");
        write_private(&p, b"hello").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
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
}
