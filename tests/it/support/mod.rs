//! Shared helpers: where the test environment lives, the independent reader, and (in the
//! sub-modules) the binary as a command, the daemon on a temporary site, its DICOM peers and a
//! private PostgreSQL server. The files beside them are the tests' own data and peers.

pub mod cli;
pub mod daemon;
pub mod demo;
pub mod dicom;
pub mod orthanc;
pub mod pg;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of this folder (`tests/it/support/`).
pub fn support_file(name: &str) -> PathBuf {
    root().join("tests/it/support").join(name)
}

/// The Python of `.venv-test`, created by `make setup`.
pub fn python() -> PathBuf {
    let p = root().join(".venv-test/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `make setup` (the README's test command does)",
        p.display()
    );
    p
}

/// Real non-dental radiographs shipped inside the pydicom wheel.
pub fn pydicom_test_files() -> PathBuf {
    let lib = root().join(".venv-test/lib");
    let entry = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make setup`", lib.display()))
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .expect("a python3.x folder in .venv-test/lib");
    let dir = entry.path().join("site-packages/pydicom/data/test_files");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    dir
}

/// Runs an independent tool that must succeed; returns its standard output (the panic says
/// what failed, with the tool's standard error).
pub fn stdout_of(mut cmd: Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// pydicom's description of each file's pixels, keyed by path.
pub fn pydicom_describe(files: &[PathBuf]) -> Vec<Value> {
    let mut cmd = Command::new(python());
    cmd.arg(support_file("pydicom_pixels.py")).args(files);
    String::from_utf8(stdout_of(cmd, "pydicom reader"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Statistics of decoded stored values, in the shape pydicom_pixels.py prints.
pub struct Stats {
    pub sum: i128,
    pub sumsq: i128,
    pub min: i64,
    pub max: i64,
}

pub fn stats(px: &[i32]) -> Stats {
    let mut s = Stats {
        sum: 0,
        sumsq: 0,
        min: i64::MAX,
        max: i64::MIN,
    };
    for &v in px {
        let v = v as i64;
        s.sum += v as i128;
        s.sumsq += (v * v) as i128;
        s.min = s.min.min(v);
        s.max = s.max.max(v);
    }
    s
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
