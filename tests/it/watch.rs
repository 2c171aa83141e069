//! The real daemon (`plateqc watch`, a child process) on temporary folders.

use crate::support::daemon::{
    files_under, fixture_files, sha, site, sql, start, start_logged, wait_until,
};
use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

#[test]
fn slow_writes_renames_bad_files_and_resends_are_each_handled_once() {
    let s = site();
    let _d = start(&s);
    let fx = fixture_files();
    // Dropped whole.
    std::fs::copy(&fx[0], s.inbox.join("a.dcm")).unwrap();
    // Written slowly through one handle, pausing longer than a tick but shorter than the quiet time.
    let bytes = std::fs::read(&fx[1]).unwrap();
    {
        let mut f = std::fs::File::create(s.inbox.join("slow.dcm")).unwrap();
        for chunk in bytes.chunks(bytes.len() / 5 + 1) {
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    // A writer's atomic rename, into a sub-folder.
    std::fs::create_dir_all(s.inbox.join("room2")).unwrap();
    std::fs::write(
        s.inbox.join("room2/b.dcm.part"),
        std::fs::read(&fx[2]).unwrap(),
    )
    .unwrap();
    std::fs::rename(
        s.inbox.join("room2/b.dcm.part"),
        s.inbox.join("room2/b.dcm"),
    )
    .unwrap();
    // Bad input, and files that are not ours to take.
    std::fs::write(s.inbox.join("broken.dcm"), b"not a plate").unwrap();
    std::fs::write(s.inbox.join(".hidden.dcm"), b"x").unwrap();
    std::fs::write(s.inbox.join("upload.dcm.part"), b"x").unwrap();

    wait_until("four jobs routed", Duration::from_secs(60), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
        ) == "4"
    });
    // The same content sent again under another name is a duplicate, not a second plate.
    std::fs::copy(&fx[0], s.inbox.join("a-again.dcm")).unwrap();
    wait_until("the duplicate routed", Duration::from_secs(60), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE state = 'duplicate' AND routed_path IS NOT NULL",
        ) == "1"
    });

    assert_eq!(sql(&s.db, "SELECT count(*) FROM plates"), "4");
    let slow = sql(
        &s.db,
        "SELECT verdict FROM plates WHERE source_path LIKE '%slow.dcm'",
    );
    assert_ne!(slow, "error", "slow file read whole");
    assert_eq!(
        sql(
            &s.db,
            "SELECT sha256 FROM plates WHERE source_path LIKE '%slow.dcm'"
        ),
        sha(&fx[1])
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT error_kind FROM plates WHERE source_path LIKE '%broken.dcm'"
        ),
        "not_dicom"
    );
    let left: BTreeSet<String> = files_under(&s.inbox)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        left,
        BTreeSet::from([".hidden.dcm".to_string(), "upload.dcm.part".to_string()])
    );
    let routed = files_under(&s.out);
    let in_folder = |f: &str| {
        routed
            .iter()
            .filter(|p| p.components().any(|c| c.as_os_str() == f))
            .count()
    };
    assert_eq!(
        in_folder("quarantine"),
        2,
        "broken.dcm and its reason: {routed:?}"
    );
    assert!(routed
        .iter()
        .any(|p| p.to_string_lossy().ends_with("broken.dcm.reason.txt")));
    assert_eq!(in_folder("duplicates"), 1);
    assert_eq!(in_folder("accepted") + in_folder("rejected"), 3);
}

/// SIGKILL while plates are in flight, then a restart: every plate ends recorded exactly once
/// and routed, none lost.
#[test]
fn sigkill_mid_run_then_restart_is_exactly_once() {
    let s = site();
    // Many distinct files: fixture copies whose preambles (ignored by readers) differ.
    let mut expected = BTreeMap::new();
    let staging = s.root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for round in 0..4u8 {
        for (i, f) in fixture_files().iter().enumerate() {
            let mut bytes = std::fs::read(f).unwrap();
            bytes[0] = round + 1;
            let name = format!("r{round}-{i:02}.dcm");
            std::fs::write(staging.join(&name), &bytes).unwrap();
            expected.insert(sha(&staging.join(&name)), name);
        }
    }
    for name in expected.values() {
        std::fs::rename(staging.join(name), s.inbox.join(name)).unwrap();
    }
    let total = expected.len();
    let mut d = start(&s);
    wait_until("a few plates recorded", Duration::from_secs(90), || {
        sql(&s.db, "SELECT count(*) FROM plates")
            .parse::<usize>()
            .unwrap_or(0)
            >= 5
    });
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let at_kill: usize = sql(&s.db, "SELECT count(*) FROM plates").parse().unwrap();
    assert!(
        at_kill < total,
        "the kill landed mid-run ({at_kill} of {total})"
    );

    let _d2 = start(&s);
    wait_until("every plate routed", Duration::from_secs(240), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
        )
        .parse::<usize>()
        .unwrap_or(0)
            >= total
    });
    // Exactly once: one plate row per content, no duplicates, nothing left behind.
    assert_eq!(
        sql(&s.db, "SELECT count(*) FROM plates")
            .parse::<usize>()
            .unwrap(),
        total
    );
    assert_eq!(
        sql(&s.db, "SELECT count(DISTINCT sha256) FROM plates")
            .parse::<usize>()
            .unwrap(),
        total
    );
    assert_eq!(
        sql(&s.db, "SELECT count(*) FROM jobs WHERE state = 'duplicate'"),
        "0"
    );
    assert!(files_under(&s.inbox).is_empty(), "inbox emptied");
    // Routed plates only: rejection notes of unusable plates live beside them in out/.
    let routed: BTreeSet<String> = files_under(&s.out)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .filter(|p| !p.starts_with(s.out.join("rejection-notes")))
        .map(|p| sha(p))
        .collect();
    assert_eq!(
        routed,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "every file arrived, intact"
    );
}

/// A routing failure (here the output root is a file, not a folder) loses nothing: the outcome
/// is committed, the file stays in the inbox, and once the problem is fixed it is moved without
/// being judged again.
#[test]
fn unwritable_output_keeps_the_file_and_recovers_without_rejudging() {
    let s = site();
    std::fs::write(&s.out, b"in the way").unwrap();
    let _d = start(&s);
    std::fs::copy(&fixture_files()[3], s.inbox.join("p.dcm")).unwrap();
    wait_until("the plate recorded", Duration::from_secs(60), || {
        sql(&s.db, "SELECT count(*) FROM plates") == "1"
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        s.inbox.join("p.dcm").exists(),
        "the file is not removed when it cannot be moved"
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NULL AND state <> 'processing'"
        ),
        "1"
    );
    std::fs::remove_file(&s.out).unwrap();
    wait_until(
        "the file moved on a rescan",
        Duration::from_secs(30),
        || !s.inbox.join("p.dcm").exists(),
    );
    wait_until("the move recorded", Duration::from_secs(10), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
        ) == "1"
    });
    assert_eq!(
        sql(&s.db, "SELECT count(*) FROM plates"),
        "1",
        "judged once"
    );
}

/// A burst far larger than the pipeline's buffers: the daemon holds at most
/// `pipeline::resident_bound(workers, batch)` plates in memory (26 with 2 workers and batches of
/// 4), loses none, and stops cleanly on SIGTERM.
#[test]
fn a_burst_is_back_pressured_to_a_bounded_number_of_plates() {
    let s = site();
    let (workers, batch) = (2usize, 4usize);
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!(
        "[scan]\ndecode_workers = {workers}\n[infer]\nbatch_size = {batch}\n"
    ));
    std::fs::write(&s.config, cfg).unwrap();
    let staging = s.root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    // The smaller fixtures, 25 distinct variants each.
    let small: Vec<PathBuf> = fixture_files()
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() < 200_000)
        .collect();
    let mut names = Vec::new();
    for round in 0..25u8 {
        for (i, f) in small.iter().enumerate() {
            let mut bytes = std::fs::read(f).unwrap();
            bytes[0] = round + 1;
            let name = format!("b{round:02}-{i:02}.dcm");
            std::fs::write(staging.join(&name), &bytes).unwrap();
            names.push(name);
        }
    }
    let total = names.len();
    assert!(total >= 200, "{total} files");
    let (mut child, log) = start_logged(&s, "info,jpeg2k=warn");
    for name in &names {
        std::fs::rename(staging.join(name), s.inbox.join(name)).unwrap();
    }
    wait_until("the burst routed", Duration::from_secs(300), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
        )
        .parse::<usize>()
        .unwrap_or(0)
            >= total
    });
    // The metrics endpoint agrees with the database.
    let text = std::fs::read_to_string(&log).unwrap();
    let addr = text
        .lines()
        .find_map(|l| l.split("metrics listening addr=").nth(1))
        .map(|a| a.trim().to_string())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{text}"));
    let get = |path: &str| {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    let judged: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("plateqc_plates_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(judged as usize, total, "{metrics}");
    assert!(metrics.contains("plateqc_stage_seconds_count{stage=\"total\"}"));
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let peak: usize = text
        .lines()
        .find(|l| l.contains("stopped"))
        .and_then(|l| l.split("peak_plates_in_memory=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak in the log:\n{text}"));
    let bound = plateqc::pipeline::resident_bound(workers, batch);
    assert!(
        peak >= 1 && peak <= bound,
        "peak {peak} plates in memory, bound {bound}"
    );
    assert_eq!(
        sql(&s.db, "SELECT count(*) FROM plates")
            .parse::<usize>()
            .unwrap(),
        total
    );
}

/// SIGHUP reloads the model file; a file that breaks the contract is refused and the running
/// model keeps judging, so no plate is dropped either way.
#[test]
fn sighup_reloads_the_model_and_refuses_a_broken_one() {
    let s = site();
    let model = s.root.join("model.onnx");
    std::fs::copy(plateqc::config::default_model_path(), &model).unwrap();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg = cfg.replace(
        "[paths]\n",
        &format!("[paths]\nmodel = \"{}\"\n", model.display()),
    );
    std::fs::write(&s.config, cfg).unwrap();
    let (mut child, log) = start_logged(&s, "info,jpeg2k=warn");
    let fx = fixture_files();
    let hup = |child: &Child| unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let log_has = |needle: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)
    };
    wait_until("the daemon watching", Duration::from_secs(30), || {
        log_has("watching")
    });

    std::fs::copy(support_file("not-a-plateqc-model.onnx"), &model).unwrap();
    hup(&child);
    wait_until("the broken model refused", Duration::from_secs(30), || {
        log_has("model reload failed")
    });
    std::fs::copy(&fx[0], s.inbox.join("after-bad-reload.dcm")).unwrap();
    wait_until(
        "a plate judged after the refused reload",
        Duration::from_secs(60),
        || {
            sql(
                &s.db,
                "SELECT count(*) FROM plates WHERE verdict <> 'error'",
            ) == "1"
        },
    );

    std::fs::copy(plateqc::config::default_model_path(), &model).unwrap();
    hup(&child);
    wait_until("the model reloaded", Duration::from_secs(30), || {
        log_has("model reloaded")
    });
    std::fs::copy(&fx[1], s.inbox.join("after-good-reload.dcm")).unwrap();
    wait_until(
        "a plate judged after the reload",
        Duration::from_secs(60),
        || {
            sql(
                &s.db,
                "SELECT count(*) FROM plates WHERE verdict <> 'error'",
            ) == "2"
        },
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A different file carrying a SOP Instance UID already recorded is judged and recorded on its
/// own, and flagged; it is never merged with the first.
#[test]
fn a_known_uid_with_other_content_is_flagged_not_merged() {
    let s = site();
    let _d = start(&s);
    let original = fixture_files()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("explicit_le"))
        .unwrap();
    std::fs::copy(&original, s.inbox.join("first.dcm")).unwrap();
    wait_until("the first plate", Duration::from_secs(60), || {
        sql(&s.db, "SELECT count(*) FROM plates") == "1"
    });
    let mut bytes = std::fs::read(&original).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01; // one pixel changed; same header, same UID
    std::fs::write(s.root.join("second.dcm"), &bytes).unwrap();
    std::fs::rename(s.root.join("second.dcm"), s.inbox.join("second.dcm")).unwrap();
    wait_until("the second plate", Duration::from_secs(60), || {
        sql(&s.db, "SELECT count(*) FROM plates") == "2"
    });
    assert_eq!(
        sql(&s.db, "SELECT count(DISTINCT sop_instance_uid) FROM plates"),
        "1"
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT uid_conflict FROM jobs WHERE source_path LIKE '%second.dcm'"
        ),
        "1"
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT uid_conflict FROM jobs WHERE source_path LIKE '%first.dcm'"
        ),
        "0"
    );
    assert_eq!(
        sql(&s.db, "SELECT count(*) FROM jobs WHERE state = 'duplicate'"),
        "0"
    );
}
