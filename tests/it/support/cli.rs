//! The `plateqc` binary run as a command, the way an operator runs it.

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub fn plateqc_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plateqc"))
}

/// `plateqc [--config CONFIG] scan TARGET --db DB --out OUT`, warnings only in its log.
pub fn scan_command(config: Option<&Path>, target: &Path, db: &Path, out: &Path) -> Command {
    let mut cmd = plateqc_command();
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("scan")
        .arg(target)
        .arg("--db")
        .arg(db)
        .arg("--out")
        .arg(out)
        .env("PLATEQC_LOG", "warn");
    cmd
}

/// Runs plateqc with `args` (warnings only in its log) and returns what it did.
pub fn plateqc(args: &[&str]) -> Output {
    plateqc_command()
        .args(args)
        .env("PLATEQC_LOG", "warn")
        .output()
        .expect("run plateqc")
}

/// Runs plateqc, which must succeed; returns its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = plateqc(args);
    assert!(
        out.status.success(),
        "plateqc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cmd`, which must succeed (its standard error is shown otherwise); returns its output.
pub fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("start the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A reviewer overrides the image `uid` to usable (`plateqc override`), as QA would.
pub fn override_to_usable(config: &Path, uid: &str) {
    succeeds(
        plateqc_command()
            .args(["--config", config.to_str().unwrap(), "override", uid])
            .args(["--verdict", "usable", "--by", "QA"])
            .args(["--reason", "artifact outside the teeth"]),
    );
}
