//! The real daemon (`plateqc watch`, a child process) on temporary folders.

use crate::support::daemon::{
    files_under, fixture_files, http_get_from_log, sha, site, sql, start, start_logged, wait_until,
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
/// `pipeline::resident_bound(workers, batch)` plates in memory (28 with 2 workers and batches of
/// 4), loses none, and stops cleanly on SIGTERM.
#[test]
fn a_burst_is_back_pressured_to_a_bounded_number_of_plates() {
    let s = site();
    let (workers, batch) = (2usize, 4usize);
    let cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("[infer]\n", &format!("[infer]\nbatch_size = {batch}\n"))
        + &format!("[scan]\ndecode_workers = {workers}\n");
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
    let (mut daemon, log) = start_logged(&s, "info,jpeg2k=warn");
    let child = &mut daemon.child;
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
    let get = |path: &str| http_get_from_log(&log, path);
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
    let (mut daemon, log) = start_logged(&s, "info,jpeg2k=warn");
    let child = &mut daemon.child;
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
    hup(child);
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
    hup(child);
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

/// A stop with plates in flight (kill -9, a power cut) is charged to no plate blindly. Here
/// the journal says four files were taken three times by runs that stopped, which the old
/// count quarantined unjudged: each is now judged alone once and gets its verdict. Only a file
/// that stopped plateqc three times while alone is quarantined as a crash.
#[test]
fn stops_with_plates_in_flight_quarantine_no_neighbour() {
    let s = site();
    let mut names = Vec::new();
    for (i, f) in fixture_files().iter().take(4).enumerate() {
        let name = format!("p{i}.dcm");
        std::fs::copy(f, s.inbox.join(&name)).unwrap();
        names.push(name);
    }
    std::fs::copy(&fixture_files()[4], s.inbox.join("poison.dcm")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let rec = plateqc::record::Recorder::open(&s.db).await.unwrap();
        for n in names.iter().chain(["poison.dcm".to_string()].iter()) {
            let p = s.inbox.join(n);
            let size = std::fs::metadata(&p).unwrap().len() as i64;
            rec.start_job(&p, &sha(&p), size, 3, "an-earlier-run")
                .await
                .unwrap();
        }
        let pool = rec.sqlite_pool().unwrap();
        sqlx::query("UPDATE jobs SET attempts = 3")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("UPDATE jobs SET alone_runs = 3 WHERE source_path LIKE '%poison.dcm'")
            .execute(pool)
            .await
            .unwrap();
        rec.close().await;
    });
    let (mut daemon, log) = start_logged(&s, "info");
    let child = &mut daemon.child;
    wait_until("all five routed", Duration::from_secs(180), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
        ) == "5"
    });
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    // The closing line counts what this run took up from the stopped one.
    let text = std::fs::read_to_string(&log).unwrap();
    let stopped = text
        .lines()
        .find(|l| l.contains("stopped") && l.contains("judged="))
        .unwrap_or_else(|| panic!("no closing line:\n{text}"));
    for want in ["resumed=5", "judged_alone=4", "quarantined_crashers=1"] {
        assert!(stopped.contains(want), "{want} not in: {stopped}");
    }
    let judged = sql(
        &s.db,
        "SELECT count(*) FROM plates WHERE verdict IN ('usable', 'unusable') AND source_path NOT LIKE '%poison.dcm'",
    );
    assert_eq!(
        judged,
        "4",
        "{}\n{}",
        sql(&s.db, "SELECT source_path, verdict, error FROM plates"),
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE alone_runs = 1 AND source_path NOT LIKE '%poison.dcm'"
        ),
        "4",
        "each neighbour was judged alone once"
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT verdict, error_kind FROM plates WHERE source_path LIKE '%poison.dcm'"
        ),
        "error|crash"
    );
    assert!(files_under(&s.out.join("quarantine"))
        .iter()
        .any(|p| p.ends_with("poison.dcm")));
    assert!(files_under(&s.inbox).is_empty());
}

/// Entries of the inbox, links not followed.
fn entries_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(entries_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A file whose name is not UTF-8 is judged and routed like any other (it was rebuilt from a
/// lossy string and stuck in flight); links in the inbox, to a file outside it or looping
/// back to it, are not followed: each is recorded as a link and moved to quarantine as a
/// link with its reason, and what it points to is left alone.
#[test]
fn odd_names_and_links_in_the_inbox_are_settled_once_without_following() {
    use std::os::unix::ffi::OsStrExt;
    let s = site();
    let outside = s.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let real = outside.join("real.dcm");
    std::fs::copy(&fixture_files()[0], &real).unwrap();
    let real_sha = sha(&real);
    let odd = s
        .inbox
        .join(std::ffi::OsStr::from_bytes(b"plate-\xff\xfe.dcm"));
    std::fs::copy(&fixture_files()[1], &odd).unwrap();
    std::os::unix::fs::symlink(&real, s.inbox.join("link.dcm")).unwrap();
    std::fs::create_dir_all(s.inbox.join("sub")).unwrap();
    std::os::unix::fs::symlink(&s.inbox, s.inbox.join("sub/loop")).unwrap();
    let (mut daemon, log) = start_logged(&s, "info");
    let child = &mut daemon.child;
    wait_until("three entries routed", Duration::from_secs(120), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
        ) == "3"
    });
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(sql(&s.db, "SELECT count(*) FROM plates"), "3", "{text}");
    assert_eq!(
        sql(
            &s.db,
            "SELECT verdict <> 'error' FROM plates WHERE source_path LIKE '%plate-%'"
        ),
        "1",
        "the odd name was judged: {text}"
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE source_hex <> '' AND routed_path IS NOT NULL"
        ),
        "1"
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT count(*) FROM plates WHERE error_kind = 'symlink'"
        ),
        "2"
    );
    assert!(
        entries_under(&s.inbox).is_empty(),
        "{:?}",
        entries_under(&s.inbox)
    );
    let quarantined = entries_under(&s.out.join("quarantine"));
    let links: Vec<_> = quarantined
        .iter()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .unwrap()
                .file_type()
                .is_symlink()
        })
        .collect();
    assert_eq!(links.len(), 2, "{quarantined:?}");
    assert!(quarantined
        .iter()
        .any(|p| p.to_string_lossy().ends_with("link.dcm.reason.txt")));
    assert_eq!(sha(&real), real_sha, "the link's target is untouched");
    assert!(real.exists());
}

/// An overlay that cannot be written (here `out/overlays` is a file) costs the overlays, not
/// the verdict: the plate is judged and routed by its verdict, the missing overlays are
/// recorded and the report counts them.
#[test]
fn a_failed_overlay_write_keeps_the_verdict_and_is_reported() {
    let s = site();
    std::fs::create_dir_all(&s.out).unwrap();
    std::fs::write(s.out.join("overlays"), b"in the way").unwrap();
    let _d = start(&s);
    std::fs::copy(&fixture_files()[3], s.inbox.join("p.dcm")).unwrap();
    wait_until("the plate routed", Duration::from_secs(90), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL",
        ) == "1"
    });
    let row = sql(
        &s.db,
        "SELECT verdict, montage_path IS NULL, overlay_error LIKE 'cannot write overlay%' FROM plates",
    );
    assert!(
        row == "usable|1|1" || row == "unusable|1|1",
        "{row}: {}",
        sql(&s.db, "SELECT overlay_error, error FROM plates")
    );
    let folder = if row.starts_with("usable") {
        "accepted"
    } else {
        "rejected"
    };
    assert_eq!(
        files_under(&s.out.join(folder))
            .iter()
            .filter(|p| p.ends_with("p.dcm"))
            .count(),
        1
    );
    let report = crate::support::cli::plateqc(&["report", "--db", s.db.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(text.contains("judged without overlays 1"), "{text}");
}

/// A plate that cannot be read for a reason that may pass is neither recorded nor quarantined:
/// it stays in the inbox, its job open, and is judged normally once it can be read. The EIO is
/// real: once the plate is admitted (its job committed) and before it is decoded, the daemon's
/// own `/proc/PID/mem` is bind-mounted over it (reading that at offset 0 is EIO), and unmounted
/// after the daemon has put the plate back.
///
/// Not in `make test`: it needs root (mount), and it races the daemon. The plate is admitted
/// only when the bounded decode queue has room for it, so on a loaded machine its decode can
/// start before the mount lands (seen once in a merged run: judged, then the move failed on the
/// busy mount point). Run it alone with `cargo test --release --test it -- --ignored
/// transient_read`.
#[test]
#[ignore = "needs root and races the daemon's decode; run with --ignored"]
fn a_transient_read_error_puts_the_plate_back_instead_of_quarantining_it() {
    let s = site();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    // One decode at a time, so the plates ahead keep the last one waiting after admission.
    cfg.push_str("[scan]\ndecode_workers = 1\n");
    std::fs::write(&s.config, cfg).unwrap();
    for f in fixture_files() {
        std::fs::copy(&f, s.inbox.join(f.file_name().unwrap())).unwrap();
    }
    let target = s.inbox.join("zz-last.dcm");
    let staged = s.root.join("zz-last.dcm");
    std::fs::copy(&fixture_files()[15], &staged).unwrap();
    std::fs::write(&staged, {
        // Distinct content from its fixture (the preamble is ignored by readers).
        let mut b = std::fs::read(&staged).unwrap();
        b[0] = 0x5a;
        b
    })
    .unwrap();
    std::fs::rename(&staged, &target).unwrap();
    let (d, log) = start_logged(&s, "info");
    let pid = d.child.id();
    let t = std::time::Instant::now();
    while sql(
        &s.db,
        "SELECT count(*) FROM jobs WHERE source_path LIKE '%zz-last.dcm'",
    ) != "1"
    {
        assert!(t.elapsed() < Duration::from_secs(60), "never admitted");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mounted = std::process::Command::new("mount")
        .arg("--bind")
        .arg(format!("/proc/{pid}/mem"))
        .arg(&target)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount --bind (the tests run as root)");
    let put_back = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .any(|l| l.contains("cannot read the plate for now") && l.contains("zz-last.dcm"))
    };
    let waited = std::time::Instant::now();
    while !put_back() && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let was_put_back = put_back();
    let rows_then = sql(
        &s.db,
        "SELECT count(*) FROM plates WHERE source_path LIKE '%zz-last.dcm'",
    );
    let unmounted = std::process::Command::new("umount")
        .arg(&target)
        .status()
        .unwrap();
    assert!(unmounted.success());
    assert!(
        was_put_back,
        "put back: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(rows_then, "0", "nothing recorded for a transient failure");
    wait_until("judged once readable", Duration::from_secs(60), || {
        sql(
            &s.db,
            "SELECT count(*) FROM jobs WHERE source_path LIKE '%zz-last.dcm' AND routed_path IS NOT NULL",
        ) == "1"
    });
    drop(d);
    assert_eq!(
        sql(
            &s.db,
            "SELECT verdict <> 'error', count(*) FROM plates WHERE source_path LIKE '%zz-last.dcm'"
        ),
        "1|1"
    );
    assert_eq!(
        sql(
            &s.db,
            "SELECT attempts FROM jobs WHERE source_path LIKE '%zz-last.dcm'"
        ),
        "2",
        "taken again by the same run: not charged as a stop"
    );
}

/// `/metrics` carries the site's recent reject analysis as `plateqc report` computes it (rate,
/// images, AAPM Report 151 level, the site's levels, plates due for replacement), and every
/// metric the example alert rules (deploy/plateqc-alerts.yml) name exists.
#[test]
fn metrics_carry_the_recent_reject_analysis_and_every_metric_the_alert_rules_use() {
    let s = site();
    let history = s.root.join("history");
    std::fs::create_dir_all(&history).unwrap();
    for f in files_under(&root().join("demo/inbox")) {
        std::fs::copy(&f, history.join(f.file_name().unwrap())).unwrap();
    }
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(
        "[record]\nsite = \"north\"\n[report]\ntarget_pct = 50.0\ninvestigate_above_pct = 55.0\n\
         investigate_below_pct = 45.0\nmin_images = 5\nrecent_days = 36500\n",
    );
    // A destination, so that its series exist (nothing listens there; nothing is sent).
    cfg.push_str(&format!(
        "[forward]\ndestinations = [{{ name = \"pacs\", ae_title = \"PACS\", address = \"127.0.0.1:{}\" }}]\n",
        crate::support::dicom::free_port()
    ));
    std::fs::write(&s.config, cfg).unwrap();
    // The history the daemon starts with: the demo plates, judged by `scan` as site north.
    let out = crate::support::cli::plateqc_command()
        .args(["--config", s.config.to_str().unwrap(), "scan"])
        .arg(&history)
        .arg("--no-fail-on-error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(
        &crate::support::cli::plateqc_command()
            .args([
                "--config",
                s.config.to_str().unwrap(),
                "report",
                "--format",
                "json",
            ])
            .args(["--site", "north", "--since", "1970-01-01"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let images = report["totals"]["images"].as_i64().unwrap();
    assert!(images > 0);
    let level = report["totals"]["level"].as_str().unwrap().to_string();

    let (mut daemon, log) = start_logged(&s, "info");
    let child = &mut daemon.child;
    wait_until("metrics listening", Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("metrics listening")
    });
    let mut metrics = String::new();
    wait_until(
        "the reject analysis in /metrics",
        Duration::from_secs(60),
        || {
            metrics = http_get_from_log(&log, "/metrics");
            metrics.contains(&format!("plateqc_reject_images {images}\n"))
        },
    );
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{metrics}"))
    };
    assert_eq!(
        value("plateqc_reject_rate_percent "),
        report["totals"]["reject_pct"].as_f64().unwrap()
    );
    assert_eq!(
        value(&format!("plateqc_reject_level{{level=\"{level}\"}}")),
        1.0
    );
    let ones = metrics
        .lines()
        .filter(|l| l.starts_with("plateqc_reject_level{") && l.ends_with(" 1"))
        .count();
    assert_eq!(ones, 1, "one level at a time:\n{metrics}");
    assert_eq!(
        value("plateqc_reject_level_percent{bound=\"investigate_above\"}"),
        55.0
    );
    assert_eq!(
        value("plateqc_plates_due_for_replacement "),
        report["plates_to_replace"].as_array().unwrap().len() as f64
    );
    // A usable plate arriving now (as a new instance) is queued for the destination that does
    // not answer: its series appear too.
    let usable = sql(
        &s.db,
        "SELECT source_path FROM plates WHERE verdict = 'usable' LIMIT 1",
    );
    let name = std::path::Path::new(&usable)
        .file_name()
        .unwrap()
        .to_owned();
    crate::support::dicom::copy_as_new_instance(
        &root().join("demo/inbox").join(name),
        &s.inbox.join("new.dcm"),
        "1.2.826.0.1.3680043.9.7777.42.1",
    );
    // And a file that is not DICOM at all: a failure, counted by kind.
    std::fs::write(s.inbox.join("junk.dcm"), b"not a plate").unwrap();
    wait_until(
        "the destination reported down",
        Duration::from_secs(120),
        || {
            metrics = http_get_from_log(&log, "/metrics");
            metrics.contains("plateqc_destination_up{destination=\"pacs\"} 0")
                && metrics.contains("plateqc_failures_total{kind=")
        },
    );
    // Every metric an example alert rule names is one the daemon serves.
    let rules = std::fs::read_to_string(root().join("deploy/plateqc-alerts.yml")).unwrap();
    let mut named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("plateqc_"))
        .collect();
    named.sort();
    named.dedup();
    assert!(named.len() >= 5, "{named:?}");
    for m in named {
        assert!(
            metrics.contains(&format!("# TYPE {m} ")),
            "{m} (deploy/plateqc-alerts.yml) is not served"
        );
    }
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
