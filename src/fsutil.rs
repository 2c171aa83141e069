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
    write_private_streamed(path, durable, |f| f.write_all(bytes))
}

/// As [`write_private_with`], with the content produced by `write` straight into the file
/// (through a buffer), so that a large derived image never has to be held whole in memory.
pub fn write_private_streamed(
    path: &Path,
    durable: bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    staged(path, write, durable, |tmp| fs::rename(tmp, path))?;
    // The rename is durable only once the folder is synced; a failure says the file may not
    // survive a power cut, which a durable write must not hide.
    if durable {
        sync_dir(path.parent())?;
    }
    Ok(())
}

/// Creates `path` with `bytes` (mode 0600) only if it does not exist yet, atomically: the
/// content is written and synced under a temporary name and linked into place, which fails
/// if another process got there first. Returns `false` when the file already existed (the
/// caller reads the winner's content, never a half-written one).
pub fn create_private_once(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    // link(2) never replaces: of two processes creating the file at once, one wins.
    let created = staged(
        path,
        |f| f.write_all(bytes),
        true,
        |tmp| match fs::hard_link(tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
    )?;
    if created {
        sync_dir(path.parent())?;
    }
    Ok(created)
}

/// Lets `write` fill a new temporary sibling of `path` (mode 0600, synced when `durable`)
/// and hands it to `place`, which puts it at `path`; the temporary name never outlives the
/// call (a rename consumed it, a link or a failure leaves it to remove).
fn staged<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    durable: bool,
    place: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    if let Some(dir) = path.parent() {
        create_private_dir_all(dir)?;
    }
    let tmp = temp_sibling(path);
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut buffered = io::BufWriter::with_capacity(64 * 1024, f);
        write(&mut buffered)?;
        let f = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        if durable {
            f.sync_all()?;
        }
        place(&tmp)
    })();
    // After a rename there is nothing left to remove; after a link or a failure there is.
    let _ = fs::remove_file(&tmp);
    result
}

/// The identity of a symbolic link (sha256 of its target's name, never of what it points
/// to), or `None` when `path` is not a link. plateqc does not follow links found in an inbox
/// or a scanned folder; this names such a link in the journal and the record.
pub fn symlink_digest(path: &Path) -> Option<String> {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let target = fs::read_link(path).unwrap_or_default();
    let mut h = sha2::Sha256::new();
    h.update(b"symlink\0");
    h.update(target.as_os_str().as_bytes());
    Some(hex::encode(h.finalize()))
}

/// Runs `op`, again after each of `delays` while it fails with an error `transient` accepts;
/// returns the last result.
pub fn retry_transient<T, E>(
    delays: &[std::time::Duration],
    transient: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut result = op();
    for d in delays {
        match &result {
            Err(e) if transient(e) => {
                std::thread::sleep(*d);
                result = op();
            }
            _ => break,
        }
    }
    result
}

/// I/O failures that say nothing about the file itself and may pass: out of file handles
/// (EMFILE, ENFILE), memory or disk space (ENOMEM, ENOSPC, EDQUOT), a device or network file
/// system error (EIO, ESTALE, ETIMEDOUT), or an interrupted or busy call. Anything else (the
/// file is gone, a folder, not permitted) is taken as the file's lasting state.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::ENOSPC
                | libc::EDQUOT
                | libc::EIO
                | libc::ESTALE
                | libc::ETIMEDOUT
                | libc::EAGAIN
                | libc::EINTR
                | libc::EBUSY
        )
    ) || e.kind() == io::ErrorKind::Interrupted
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
    move_file_unsynced(src, target)?;
    sync_dir(target.parent())
}

/// [`move_file`] without the last sync of the target folder, for a caller that moves several
/// files and syncs each folder once ([`sync_dir`]) before it relies on the moves. (Across file
/// systems the folder is synced here anyway: the source is removed only after that.)
pub fn move_file_unsynced(src: &Path, target: &Path) -> io::Result<()> {
    match rename_noreplace(src, target) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = temp_sibling(target);
            let copied = (|| {
                // A symbolic link is moved as a link: copying would follow it.
                if fs::symlink_metadata(src)?.file_type().is_symlink() {
                    std::os::unix::fs::symlink(fs::read_link(src)?, &tmp)?;
                } else {
                    fs::copy(src, &tmp)?;
                    fs::File::open(&tmp)?.sync_all()?;
                }
                rename_noreplace(&tmp, target)?;
                sync_dir(target.parent())
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

/// Syncs a folder, making the renames and links in it durable. Errors are returned: a move or
/// a received plate acknowledged on an unsynced folder could vanish at a power cut.
pub fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    let d = match dir {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return Ok(()),
    };
    fs::File::open(d)?.sync_all()
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

    /// A folder that cannot be synced is an error, not silence (procfs has no fsync).
    #[test]
    fn folder_sync_errors_are_returned() {
        assert!(sync_dir(Some(Path::new("/proc/self"))).is_err());
        assert!(sync_dir(Some(Path::new("/nonexistent-plateqc-dir"))).is_err());
        let dir = tempfile::tempdir().unwrap();
        sync_dir(Some(dir.path())).unwrap();
    }

    #[test]
    fn create_once_keeps_the_first_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        assert!(create_private_once(&p, b"first").unwrap());
        assert!(!create_private_once(&p, b"second").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn transient_errors_are_told_apart() {
        for e in [libc::EMFILE, libc::ENFILE, libc::ENOSPC, libc::EIO] {
            assert!(is_transient(&io::Error::from_raw_os_error(e)), "{e}");
        }
        for e in [libc::ENOENT, libc::EACCES, libc::EISDIR, libc::ENOTDIR] {
            assert!(!is_transient(&io::Error::from_raw_os_error(e)), "{e}");
        }
        // A real EIO from the kernel: reading unmapped memory through procfs.
        let real = fs::read("/proc/self/mem").unwrap_err();
        assert!(is_transient(&real), "{real}");
    }

    #[test]
    fn transient_failures_are_retried_and_lasting_ones_not() {
        let delays = [std::time::Duration::from_millis(1); 2];
        let mut tries = 0;
        let r = retry_transient(&delays, is_transient, || {
            tries += 1;
            fs::read("/proc/self/mem")
        });
        assert!(r.is_err());
        assert_eq!(tries, 3, "EIO: tried once and again after each delay");
        tries = 0;
        let r = retry_transient(&delays, is_transient, || {
            tries += 1;
            fs::read("/nonexistent-plateqc-file")
        });
        assert!(r.is_err());
        assert_eq!(tries, 1, "ENOENT: not retried");
        tries = 0;
        let r = retry_transient(&delays, is_transient, || {
            tries += 1;
            if tries < 2 {
                Err(io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok(tries)
            }
        });
        assert_eq!(r.unwrap(), 2, "succeeds once the handles are back");
    }

    #[test]
    fn links_are_named_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (f, l) = (dir.path().join("f"), dir.path().join("l"));
        fs::write(&f, b"x").unwrap();
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(symlink_digest(&f).is_none());
        let d = symlink_digest(&l).unwrap();
        fs::write(&f, b"other content").unwrap();
        assert_eq!(
            symlink_digest(&l).unwrap(),
            d,
            "the link's name, not its target's bytes"
        );
        // A link moved across file systems stays a link (copying would follow it).
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let other = tempfile::tempdir_in(shm).unwrap();
            let moved = other.path().join("l");
            move_file(&l, &moved).unwrap();
            assert!(fs::symlink_metadata(&moved)
                .unwrap()
                .file_type()
                .is_symlink());
            assert!(fs::symlink_metadata(&l).is_err());
        }
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
