//! Ingest, the first room: where plates come from. Inbox folders watched for complete files
//! ([`inbox`]), the DICOM C-STORE receiver that drops instances into an inbox ([`scp`], with
//! [`received`] making each one durable there), and the file collection and ignore rules that
//! `scan` and the watcher share. Nothing here reads a plate's content; that is decode's job.

pub mod inbox;
pub mod received;
pub mod scp;

pub use inbox::{spawn, InFlight, IngestError, WatchOptions};

use std::path::{Path, PathBuf};

/// Expands folders recursively, skipping hidden and partial files, in a stable order.
///
/// Links are treated as `find -H` does: a path given by the user is followed (a linked folder
/// is scanned, a linked file is read under its real name), but a link met inside a folder is
/// not: it is listed as itself, and the pipeline records it as a link (error kind `symlink`)
/// without reading what it points to. So a folder with a link loop is scanned once, and a link
/// never pulls in files from elsewhere unnoticed.
pub fn collect_files(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut stack = vec![input.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut entries: Vec<_> = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                for (p, t) in entries.into_iter().rev() {
                    if is_ignored(&p) {
                        continue;
                    }
                    if t.is_dir() {
                        stack.push(p);
                    } else if t.is_file() || t.is_symlink() {
                        out.push(p);
                    }
                }
            }
        } else if input.is_symlink() {
            out.push(std::fs::canonicalize(input).unwrap_or_else(|_| input.clone()));
        } else {
            out.push(input.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Files that are being written or are not plates: dotfiles, `*.part`, `*.tmp`, our sidecars.
pub fn is_ignored(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    name.starts_with('.')
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with(".reason.txt")
        || name.ends_with(".jsonl")
        || name.ends_with(".npz")
        || name.ends_with(".json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_inside_folders_are_listed_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("in");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a.dcm"), b"a").unwrap();
        std::fs::write(outside.join("secret.dcm"), b"s").unwrap();
        symlink(&root, root.join("sub/loop")).unwrap();
        symlink(&outside, root.join("elsewhere")).unwrap();
        symlink(outside.join("secret.dcm"), root.join("link.dcm")).unwrap();
        let found = collect_files(std::slice::from_ref(&root));
        assert_eq!(
            found,
            [
                root.join("a.dcm"),
                root.join("elsewhere"),
                root.join("link.dcm"),
                root.join("sub/loop"),
            ],
            "each link listed once as itself, the loop not walked, nothing from outside"
        );
        // A link named by the user is followed, to the real file.
        let given = collect_files(&[root.join("link.dcm")]);
        assert_eq!(
            given,
            [std::fs::canonicalize(outside.join("secret.dcm")).unwrap()]
        );
    }
}
