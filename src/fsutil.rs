//! File helpers shared by every stage that writes: patient images and their derivatives are
//! private to the service account, and a reader never sees a half-written file.

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
}
