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
pub fn collect_files(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut stack = vec![input.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut entries: Vec<_> =
                    entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                entries.sort();
                for p in entries.into_iter().rev() {
                    if is_ignored(&p) {
                        continue;
                    }
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.is_file() {
                        out.push(p);
                    }
                }
            }
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
