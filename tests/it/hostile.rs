//! No file can take plateqc down: the hostile files of `tests/hostile/` (written by its
//! `make.py`, each named after the bug it pins) and the nested-sequence bomb built here, mixed
//! with good plates, through the real binary. Each must end as one recorded row; the good
//! plates are judged; the process exits normally.

use crate::support::cli::scan_command;
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
    let mut cmd = scan_command(None, &inbox, &db, &tmp.path().join("out"));
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
        // A refusal with its reason, not a decode worker that died on the file.
        assert_ne!(row, "error|crash", "{name}");
    }
    let judged = sql(
        &db,
        "SELECT count(*) FROM plates WHERE source_path LIKE '%/good-%' AND verdict <> 'error'",
    );
    assert_eq!(judged, good.len().to_string(), "{stderr}");
}

/// A legitimate 4096 x 4096 plate (32 MB, explicit VR little endian, 12 bits in 16) whose
/// decode needs more than a small worker memory cap: a real allocation failure, so a real
/// crash (SIGABRT) of the worker that holds it.
pub fn large_plate() -> Vec<u8> {
    fn el(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]) {
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OW" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(v);
    }
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    el(&mut f, 2, 0x10, b"UI", b"1.2.840.10008.1.2.1\0");
    el(&mut f, 8, 0x16, b"UI", b"1.2.840.10008.5.1.4.1.1.1.3\0");
    el(&mut f, 8, 0x18, b"UI", b"2.25.4096409640964096");
    el(&mut f, 8, 0x60, b"CS", b"IO");
    el(&mut f, 0x28, 0x02, b"US", &1u16.to_le_bytes());
    el(&mut f, 0x28, 0x04, b"CS", b"MONOCHROME2 ");
    el(&mut f, 0x28, 0x10, b"US", &4096u16.to_le_bytes());
    el(&mut f, 0x28, 0x11, b"US", &4096u16.to_le_bytes());
    el(&mut f, 0x28, 0x100, b"US", &16u16.to_le_bytes());
    el(&mut f, 0x28, 0x101, b"US", &12u16.to_le_bytes());
    el(&mut f, 0x28, 0x102, b"US", &11u16.to_le_bytes());
    el(&mut f, 0x28, 0x103, b"US", &0u16.to_le_bytes());
    let pixels: Vec<u8> = (0..4096u32 * 4096)
        .flat_map(|i| ((i % 4093) as u16).to_le_bytes())
        .collect();
    el(&mut f, 0x7FE0, 0x10, b"OW", &pixels);
    f
}

/// A worker that dies costs its plate only: recorded as `crash` naming the signal, and the
/// plates after it are judged by a new worker.
#[test]
fn a_crashing_decode_worker_costs_only_its_plate() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("a-large.dcm"), large_plate()).unwrap();
    let good = fixture_files();
    for f in good.iter().take(4) {
        std::fs::copy(f, inbox.join(f.file_name().unwrap())).unwrap();
    }
    let config = tmp.path().join("plateqc.toml");
    std::fs::write(
        &config,
        "[decode]\nworker_memory_mb = 128\n[scan]\ndecode_workers = 1\n",
    )
    .unwrap();
    let db = tmp.path().join("qc.sqlite");
    let mut cmd = scan_command(Some(&config), &inbox, &db, &tmp.path().join("out"));
    let out = capped(&mut cmd, 8 << 30).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        sql(
            &db,
            "SELECT verdict, error_stage, error_kind, error FROM plates WHERE source_path LIKE '%a-large.dcm'"
        ),
        "error|decode|crash|decode worker killed by signal 6 (SIGABRT)"
    );
    assert_eq!(
        sql(&db, "SELECT count(*) FROM plates WHERE verdict <> 'error'"),
        "4"
    );
}

/// The daemon takes every hostile file, a crashing one among them, beside good plates, and is
/// the same process at the end: one row and one routed file for each.
#[test]
fn watch_daemon_survives_hostile_files_as_the_same_process() {
    use crate::support::daemon::{files_under, site, start, wait_until};
    let s = site();
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str("[decode]\nworker_memory_mb = 128\n");
    std::fs::write(&s.config, config).unwrap();
    let mut d = start(&s);
    let pid = d.child.id();
    let staging = s.root.join("staging");
    let (hostile, good) = mixed_folder(&staging);
    std::fs::write(staging.join("a-large.dcm"), large_plate()).unwrap();
    let total = hostile.len() + good.len() + 1;
    for e in std::fs::read_dir(&staging).unwrap().flatten() {
        std::fs::rename(e.path(), s.inbox.join(e.file_name())).unwrap();
    }
    wait_until(
        "every file routed",
        std::time::Duration::from_secs(180),
        || {
            sql(
                &s.db,
                "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
            ) == total.to_string()
        },
    );
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    assert_eq!(d.child.id(), pid);
    assert_eq!(sql(&s.db, "SELECT count(*) FROM plates"), total.to_string());
    assert_eq!(
        sql(
            &s.db,
            "SELECT count(*) FROM plates WHERE verdict <> 'error'"
        ),
        good.len().to_string()
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT error_kind FROM plates WHERE source_path LIKE '%a-large.dcm'"
        ),
        "crash"
    );
    assert!(files_under(&s.inbox).is_empty());
    let routed = files_under(&s.out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .filter(|p| !p.starts_with(s.out.join("rejection-notes")))
        .count();
    assert_eq!(routed, total);
}

/// Every hostile file is refused with a typed error by the in-process decode a worker runs,
/// without a panic (the worker would contain one, but it is still a bug: `make fuzz` found
/// `rle_segment_shorter_than_plane.dcm` as one).
#[test]
fn hostile_files_are_typed_refusals_in_process() {
    use plateqc::decode::preprocess::{Input, Psp};
    use plateqc::decode::worker::decode_bytes;
    use plateqc::decode::DecodePolicy;
    let policy = DecodePolicy::default();
    for (i, f) in hostile_files().into_iter().enumerate() {
        // Both preprocessings: a file that gets that far must not break either.
        let psp = if i % 2 == 0 { Psp::V1 } else { Psp::V2 };
        let want = plateqc::decode::Want {
            input: Input { size: 256, psp },
            display: true,
        };
        let bytes = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let answer = std::panic::catch_unwind(|| decode_bytes(&bytes, &policy, want))
            .unwrap_or_else(|_| panic!("{name}: decoding panicked"));
        match answer {
            Ok(_) => panic!("{name} was decoded"),
            Err(r) => eprintln!("{name}: {}", r.error),
        }
    }
}
