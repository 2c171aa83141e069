//! No file can take plateqc down: the hostile files of `tests/hostile/` (written by its
//! `make.py`, each named after the bug it pins) and the nested-sequence bomb built here, mixed
//! with good plates, through the real binary. Each must end as one recorded row; the good
//! plates are judged; the process exits normally.

use crate::support::cli::plateqc_command;
use crate::support::daemon::{fixture_files, sql};
use crate::support::root;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The files of `tests/hostile/`.
pub fn hostile_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/hostile"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    v.sort();
    v
}

/// The file of issue 13's measurement: 200 000 levels of an unknown explicit VR (`XX`) with an
/// undefined 32-bit length, which dicom-rs reads as nested UN sequences while the old
/// pre-scan read a 16-bit length of 12 and saw a flat list (4 MB, so built here).
pub fn prescan_unknown_vr_nesting() -> Vec<u8> {
    let ts = b"1.2.840.10008.1.2.1\0";
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    let mut meta = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
    meta.extend_from_slice(&(ts.len() as u16).to_le_bytes());
    meta.extend_from_slice(ts);
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    f.extend_from_slice(&meta);
    f.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'I', b'O']);
    for _ in 0..200_000 {
        f.extend_from_slice(&[
            0x09, 0x00, 0x10, 0x10, b'X', b'X', 0x0C, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF,
            0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
    }
    f
}

/// A folder of every hostile file and three good plates; returns (hostile, good) paths.
pub fn mixed_folder(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut hostile = Vec::new();
    for f in hostile_files() {
        let to = dir.join(f.file_name().unwrap());
        std::fs::copy(&f, &to).unwrap();
        hostile.push(to);
    }
    let bomb = dir.join("prescan_unknown_vr_nesting.dcm");
    std::fs::write(&bomb, prescan_unknown_vr_nesting()).unwrap();
    hostile.push(bomb);
    let mut good = Vec::new();
    for f in fixture_files().iter().step_by(6) {
        let to = dir.join(format!("good-{}", f.file_name().unwrap().to_string_lossy()));
        std::fs::copy(f, &to).unwrap();
        good.push(to);
    }
    (hostile, good)
}

/// Caps a child's address space, so that a regression here costs the test, not the machine.
pub fn capped(cmd: &mut std::process::Command, bytes: u64) -> &mut std::process::Command {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn scan_of_hostile_files_exits_normally_with_one_row_each() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("in");
    let (hostile, good) = mixed_folder(&inbox);
    let db = tmp.path().join("qc.sqlite");
    let mut cmd = plateqc_command();
    cmd.arg("scan")
        .arg(&inbox)
        .arg("--db")
        .arg(&db)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .env("PLATEQC_LOG", "warn");
    let out = capped(&mut cmd, 8 << 30).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "scan must end normally, with errors reported: {:?}\n{stderr}",
        out.status
    );
    let total = hostile.len() + good.len();
    assert_eq!(sql(&db, "SELECT count(*) FROM plates"), total.to_string());
    for f in &hostile {
        let name = f.file_name().unwrap().to_string_lossy();
        let row = sql(
            &db,
            &format!("SELECT verdict, error_kind FROM plates WHERE source_path LIKE '%/{name}'"),
        );
        assert!(row.starts_with("error|"), "{name}: {row}");
    }
    let judged = sql(
        &db,
        "SELECT count(*) FROM plates WHERE source_path LIKE '%/good-%' AND verdict <> 'error'",
    );
    assert_eq!(judged, good.len().to_string(), "{stderr}");
}
