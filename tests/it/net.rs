//! The DICOM network side against independent peers: DCMTK's echoscu/storescu/storescp,
//! pynetdicom, and dicom3tools' dciodvfy as the validator of every object plateqc writes.

use crate::support::daemon::{files_under, http_get_from_log, sql, wait_until};
use crate::support::dicom::{
    copy_as_new_instance, count, dciodvfy_errors, dcmdump, echo, free_port, net_site, peer,
    start_net_daemon, start_pacs, wait_dispatched,
};
use crate::support::{pydicom_describe, python, root, stdout_of, support_file};
use plateqc::route::notes::{self, Rejection};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The reason codes and meanings plateqc writes into rejection notes and reports are exactly
/// CID 7011 as PS3.16 spells it (pydicom's generated copy of the DCM dictionary is the
/// reference; it once caught "Under-exposed" for "Under exposed").
#[test]
fn cid7011_table_matches_ps3_16() {
    let mut cmd = Command::new(python());
    cmd.args([
        "-c",
        "import json\nfrom pydicom.sr.codedict import Collection\nc = Collection('CID7011')\n\
         print(json.dumps({getattr(c, k).value: getattr(c, k).meaning for k in c.dir()}))",
    ]);
    let reference: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&stdout_of(cmd, "pydicom's CID 7011"))
            .expect("a JSON object of code -> meaning");
    let ours: std::collections::BTreeMap<String, String> = plateqc::cid7011::CODES
        .iter()
        .map(|(c, m)| (c.to_string(), m.to_string()))
        .collect();
    assert_eq!(ours, reference);
    assert_eq!(plateqc::cid7011::meaning("111211"), Some("Under exposed"));
    assert_eq!(plateqc::cid7011::meaning("999999"), None);
}

#[test]
fn rejection_note_and_capture_are_valid_dicom_referencing_the_plate() {
    let tmp = tempfile::tempdir().unwrap();
    let plate = root().join("tests/fixtures/01_explicit_le_u16_rescale.dcm");
    let montage = tmp.path().join("montage.png");
    image::RgbImage::from_fn(97, 40, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(&montage)
        .unwrap();
    let r = Rejection {
        plate_path: plate.clone(),
        reason_code: Some("111214".into()),
        artifact_types: vec!["scratch".into(), "dust".into()],
        score: Some(0.91),
        threshold: Some(0.28),
        model: "plateqc-psp-cnn 1".into(),
        montage_path: Some(montage),
        montage_jpeg: None,
    };
    let written = notes::write_notes(&r, tmp.path(), true).unwrap();
    assert_eq!(written.len(), 2);
    let plate_dump = dcmdump(&plate);
    let plate_uid = plate_dump
        .lines()
        .find(|l| l.starts_with("(0008,0018)"))
        .and_then(|l| l.split('[').nth(1))
        .and_then(|s| s.split(']').next())
        .unwrap()
        .to_string();
    for n in &written {
        let (errors, text) = dciodvfy_errors(&n.path);
        assert!(
            errors.is_empty(),
            "{} ({}):\n{text}",
            n.kind,
            n.path.display()
        );
        let dump = dcmdump(&n.path);
        assert!(
            dump.contains(&plate_uid),
            "{} does not reference the plate",
            n.kind
        );
    }
    // The capture is JPEG baseline, and an independent decoder (DCMTK) shows the montage.
    let sc = dcmdump(&written[1].path);
    assert!(
        sc.contains("=JPEGBaseline") || sc.contains("1.2.840.10008.1.2.4.50"),
        "capture not JPEG baseline:\n{sc}"
    );
    assert!(sc.contains("[YBR_FULL_422]"), "{sc}");
    let shown = tmp.path().join("shown.png");
    let status = std::process::Command::new("dcmj2pnm")
        .arg("+on")
        .arg(&written[1].path)
        .arg(&shown)
        .status()
        .expect("dcmj2pnm (DCMTK)");
    assert!(status.success());
    let shown = image::open(&shown).unwrap().to_rgb8();
    let original = image::open(r.montage_path.as_ref().unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(shown.dimensions(), original.dimensions());
    let diff: f64 = shown
        .as_raw()
        .iter()
        .zip(original.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / original.as_raw().len() as f64;
    assert!(diff < 3.0, "mean difference {diff} per sample");
    let kos = dcmdump(&written[0].path);
    for needle in [
        "113001",
        "Rejected for Quality Reasons",
        "111214",
        "Detector artifact(s)",
        "(0008,0060) CS [KO]",
    ] {
        assert!(kos.contains(needle), "KOS lacks {needle}:\n{kos}");
    }
    // Redoing the note after a crash gives the same object, not a second one.
    let again = notes::write_notes(&r, tmp.path(), true).unwrap();
    assert_eq!(again, written);
    // The daemon hands the montage on already encoded (from the image explain drew); the
    // capture carries the same image and sizes as when the note reads the PNG back.
    let handed = tmp.path().join("handed");
    std::fs::create_dir_all(&handed).unwrap();
    let drawn = image::open(r.montage_path.as_ref().unwrap())
        .unwrap()
        .to_rgb8();
    let with_jpeg = Rejection {
        montage_jpeg: Some(std::sync::Arc::new(
            plateqc::explain::MontageJpeg::encode(&drawn).unwrap(),
        )),
        ..r.clone()
    };
    let from_memory = notes::write_notes(&with_jpeg, &handed, true).unwrap();
    assert_eq!(from_memory.len(), 2);
    let capture = |p: &Path| {
        let o = dicom_object::open_file(p).unwrap();
        let value = |t| o.element(t).unwrap().value().clone();
        use dicom_dictionary_std::tags as t;
        [
            t::ROWS,
            t::COLUMNS,
            t::LOSSY_IMAGE_COMPRESSION_RATIO,
            t::PIXEL_DATA,
        ]
        .map(value)
    };
    assert_eq!(capture(&written[1].path), capture(&from_memory[1].path));
    assert_eq!(from_memory[1].sop_instance_uid, written[1].sop_instance_uid);

    // A montage as explain writes it now (montage.jpg), read back after a restart: embedded
    // byte for byte, the same capture as from memory. A JPEG the capture could not declare as
    // it is (another encoder's chroma sampling) is decoded and encoded instead.
    let from_file = tmp.path().join("from-file");
    std::fs::create_dir_all(&from_file).unwrap();
    let jpg = from_file.join("montage.jpg");
    std::fs::write(&jpg, &with_jpeg.montage_jpeg.as_ref().unwrap().bytes).unwrap();
    let read_back = Rejection {
        montage_path: Some(jpg.clone()),
        ..r.clone()
    };
    let from_jpg = notes::write_notes(&read_back, &from_file, true).unwrap();
    assert_eq!(capture(&from_jpg[1].path), capture(&from_memory[1].path));
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let foreign = other.join("montage.jpg");
    image::DynamicImage::ImageRgb8(drawn.clone())
        .save_with_format(&foreign, image::ImageFormat::Jpeg)
        .unwrap();
    let foreign_bytes = std::fs::read(&foreign).unwrap();
    let redone = notes::write_notes(
        &Rejection {
            montage_path: Some(foreign),
            ..r.clone()
        },
        &other,
        true,
    )
    .unwrap();
    let (errors, text) = dciodvfy_errors(&redone[1].path);
    assert!(errors.is_empty(), "{text}");
    let sc = dicom_object::open_file(&redone[1].path).unwrap();
    let pixels = sc
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .value()
        .fragments()
        .unwrap()[0]
        .clone();
    assert!(
        !pixels.starts_with(&foreign_bytes),
        "a 4:4:4 or 4:2:0 JPEG embedded as YBR_FULL_422"
    );
    assert_eq!(
        capture(&redone[1].path)[..2],
        capture(&from_memory[1].path)[..2],
        "the same rows and columns"
    );

    // Another plate of the same series, numbered 7: its note joins the same note series and
    // carries the plate's number; a plate without a number still gets a distinct one.
    let field = |dump: &str, tag: &str| -> String {
        dump.lines()
            .find(|l| l.starts_with(tag))
            .and_then(|l| l.split('[').nth(1))
            .and_then(|s| s.split(']').next())
            .unwrap_or_default()
            .to_string()
    };
    let notes_of = |plate: &Path, dir: &str| {
        let folder = tmp.path().join(dir);
        std::fs::create_dir_all(&folder).unwrap();
        let r = Rejection {
            plate_path: plate.to_path_buf(),
            montage_path: None,
            montage_jpeg: None,
            ..r.clone()
        };
        dcmdump(&notes::write_notes(&r, &folder, false).unwrap()[0].path)
    };
    let modified = |name: &str, edits: &[&str]| {
        let p = tmp.path().join(name);
        std::fs::copy(&plate, &p).unwrap();
        let mut cmd = std::process::Command::new("dcmodify");
        cmd.arg("-nb").args(edits).arg(&p);
        assert!(cmd.status().expect("dcmodify (DCMTK)").success());
        p
    };
    let seventh = modified(
        "seventh.dcm",
        &["-m", "(0008,0018)=2.25.7007", "-m", "(0020,0013)=7"],
    );
    let unnumbered = modified(
        "unnumbered.dcm",
        &["-m", "(0008,0018)=2.25.7008", "-ea", "(0020,0013)"],
    );
    let first = dcmdump(&written[0].path);
    let (a, b, c) = (
        first,
        notes_of(&seventh, "seventh"),
        notes_of(&unnumbered, "unnumbered"),
    );
    assert_eq!(
        field(&a, "(0020,000e)"),
        field(&b, "(0020,000e)"),
        "one note series per plate series"
    );
    assert_eq!(field(&b, "(0020,0013)"), "7");
    assert_eq!(field(&a, "(0020,0013)"), field(&plate_dump, "(0020,0013)"));
    let n: u32 = field(&c, "(0020,0013)").parse().unwrap();
    assert!((1..=99_999).contains(&n));
    assert_ne!(field(&b, "(0008,0018)"), field(&c, "(0008,0018)"));
}

#[test]
fn storescu_folder_is_judged_usable_ones_reach_the_pacs_rejects_get_valid_notes() {
    let (port, pacs_port) = (free_port(), free_port());
    let s = net_site(port, pacs_port, "", "");
    let pacs = start_pacs(&s.root, pacs_port);
    let (_daemon, log) = start_net_daemon(&s, port);

    assert!(
        echo(port, "SCANNER"),
        "C-ECHO from an allowed AE must succeed"
    );
    assert!(
        !echo(port, "INTRUDER"),
        "a calling AE outside the allow-list must be rejected"
    );

    let demo = root().join("demo/inbox");
    let sent = files_under(&demo).len();
    let mut storescu = Command::new("storescu");
    storescu
        // Like a plate scanner: each file in its own transfer syntax (JPEG, JPEG-LS, JPEG 2000,
        // RLE, deflate, big endian ...), all in one association.
        .arg("-xf")
        .arg(support_file("storescu-plateqc.cfg"))
        .args([
            "Plates",
            "-aet",
            "SCANNER",
            "-aec",
            "PLATEQC",
            "+sd",
            "+r",
            "127.0.0.1",
        ])
        .arg(port.to_string())
        .arg(&demo);
    stdout_of(storescu, "storescu");
    wait_until(
        "every received plate judged and dispatched",
        Duration::from_secs(300),
        || count(&s.db, "SELECT COUNT(*) FROM jobs WHERE dispatched = 1") == sent,
    );
    wait_until("the outbox drained", Duration::from_secs(120), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'") == 0
    });
    let usable = count(
        &s.db,
        "SELECT COUNT(*) FROM plates WHERE verdict = 'usable'",
    );
    let unusable = count(
        &s.db,
        "SELECT COUNT(*) FROM plates WHERE verdict = 'unusable'",
    );
    assert_eq!(
        usable + unusable,
        sent,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(usable > 0 && unusable > 0, "the demo set has both verdicts");

    // Exactly the usable plates reached the PACS, with the notes of the rejected ones.
    let mut at_pacs = pacs.stored(|p| p != "KO" && p != "SC");
    assert_eq!(pacs.stored(|p| p == "KO").len(), unusable);
    assert_eq!(pacs.stored(|p| p == "SC").len(), unusable);
    let usable_uids = sql(
        &s.db,
        "SELECT sop_instance_uid FROM plates WHERE verdict = 'usable' ORDER BY 1",
    );
    at_pacs.sort();
    assert_eq!(at_pacs.join("\n"), usable_uids);
    assert_eq!(
        pacs.store_requests(),
        usable + 2 * unusable,
        "nothing sent twice"
    );

    // Every note plateqc wrote is valid, and each names a rejected plate.
    let notes: Vec<PathBuf> = files_under(&s.out.join("rejection-notes"));
    assert_eq!(notes.len(), 2 * unusable);
    let rejected = sql(
        &s.db,
        "SELECT sop_instance_uid FROM plates WHERE verdict = 'unusable'",
    );
    for n in &notes {
        let (errors, text) = dciodvfy_errors(n);
        assert!(errors.is_empty(), "{}:\n{text}", n.display());
        let dump = dcmdump(n);
        assert!(
            rejected.lines().any(|u| dump.contains(u)),
            "{} references no rejected plate",
            n.display()
        );
    }
    assert_eq!(
        count(
            &s.db,
            "SELECT COUNT(*) FROM rejection_notes WHERE kind = 'kos'"
        ),
        unusable
    );
}

#[test]
fn pynetdicom_concurrent_associations_limit_abort_and_junk_leave_the_daemon_serving() {
    let (port, nowhere) = (free_port(), free_port());
    let s = net_site(
        port,
        nowhere,
        "max_associations = 3\nidle_timeout_secs = 5\nhandshake_timeout_secs = 5",
        "",
    );
    let (_daemon, log) = start_net_daemon(&s, port);

    // The association limit: three are served, the next two are refused, not queued.
    let held = peer(&["hold", &port.to_string(), "5"], &[]);
    assert_eq!(
        held["accepted"],
        serde_json::json!([true, true, true, false, false])
    );

    // Three senders at once, every fixture in its own transfer syntax.
    let fixtures: Vec<PathBuf> = files_under(&root().join("tests/fixtures"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    let sent = peer(&["concurrent", &port.to_string(), "3"], &fixtures);
    let statuses = sent["statuses"].as_object().unwrap();
    assert_eq!(statuses.len(), fixtures.len());
    assert!(statuses.values().all(|v| v == 0), "{statuses:?}");

    // A connection that never speaks is dropped after the handshake timeout, holding nothing.
    {
        use std::io::Read;
        let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 16];
        let n = silent.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "expected the daemon to close a silent connection");
        assert!(
            t.elapsed() >= Duration::from_secs(4),
            "closed before the handshake timeout"
        );
    }

    // An abort in the middle of a data set, and junk on another association.
    let aborted = peer(&["abort", &port.to_string()], &[fixtures[0].clone()]);
    assert_eq!(aborted["aborted"], true, "{aborted}");
    assert_ne!(
        aborted["status"], 0,
        "the transfer finished before the abort: {aborted}"
    );
    let junk = peer(&["garbage", &port.to_string()], &[]);
    assert_eq!(junk["aborted_by_peer"], true);

    // Still serving, and every acknowledged plate is judged; the aborted one left nothing.
    assert!(echo(port, "PYNET"));
    let judged = || count(&s.db, "SELECT COUNT(*) FROM plates");
    let waited = Instant::now();
    while judged() < fixtures.len() && waited.elapsed() < Duration::from_secs(400) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        judged(),
        fixtures.len(),
        "{}\n{}",
        sql(&s.db, "SELECT source_path, verdict, error FROM plates"),
        std::fs::read_to_string(&log).unwrap()
    );
    let uid = aborted["uid"].as_str().unwrap();
    assert_eq!(
        count(
            &s.db,
            &format!("SELECT COUNT(*) FROM plates WHERE sop_instance_uid = '{uid}'")
        ),
        0
    );
    let leftovers: Vec<PathBuf> = files_under(&s.inbox)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("too many at once"), "{text}");
    assert!(text.contains("association aborted"), "{text}");
    // The counters a monitoring system scrapes say the same.
    let metrics = http_get_from_log(&log, "/metrics");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{metrics}"))
    };
    // Two refused for the limit; the readiness probe's bare TCP connection counts too.
    assert!(value("plateqc_dicom_associations_total{outcome=\"refused\"}") >= 2);
    assert_eq!(
        value("plateqc_dicom_requests_total{result=\"stored\"}"),
        fixtures.len() as u64
    );
}

#[test]
fn outbox_waits_for_a_down_pacs_survives_a_restart_and_never_sends_twice() {
    let (port, pacs_port) = (free_port(), free_port());
    // Never give up here: on a loaded machine judging the plates can take longer than the
    // default 50 attempts, and an item given up on before the PACS comes up is never sent.
    let s = net_site(
        port,
        pacs_port,
        "",
        "send_notes = false\nmax_attempts = 100000\n",
    );
    // Plates dropped into the folder inbox are forwarded too, not only received ones.
    let demo = crate::support::demo::mixed(8);
    for f in &demo {
        std::fs::copy(f, s.inbox.join(f.file_name().unwrap())).unwrap();
    }
    let (daemon, _log) = start_net_daemon(&s, port);
    wait_dispatched(&s.db, demo.len());
    let usable = count(
        &s.db,
        "SELECT COUNT(*) FROM plates WHERE verdict = 'usable'",
    );
    assert!(usable > 0);
    // The PACS is down: the items wait and are retried.
    wait_until("retries recorded", Duration::from_secs(60), || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND attempts >= 2",
        ) == usable
    });
    assert!(sql(&s.db, "SELECT last_error FROM outbox LIMIT 1").contains("cannot associate"));
    // Restart the daemon while they wait, then bring the PACS up.
    drop(daemon);
    let (_daemon, _log) = start_net_daemon(&s, port);
    let pacs = start_pacs(&s.root, pacs_port);
    let drained = Instant::now();
    while count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state = 'sent'") != usable {
        assert!(
            drained.elapsed() < Duration::from_secs(120),
            "outbox not drained: {}",
            sql(&s.db, "SELECT state, attempts, last_error FROM outbox")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pacs.stored(|_| true).len(), usable);
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM outbox"),
        usable,
        "held plates are not queued"
    );
    // Another restart sends nothing again. A usable plate dropped in after the restart is the
    // probe: the outbox is sent in queue order, so once the probe is stored, anything the
    // restart had queued again would have gone out before it.
    drop(_daemon);
    let (_daemon, _log) = start_net_daemon(&s, port);
    let judged_usable = sql(
        &s.db,
        "SELECT source_path FROM plates WHERE verdict = 'usable' ORDER BY id LIMIT 1",
    );
    let original = root()
        .join("demo/inbox")
        .join(Path::new(&judged_usable).file_name().unwrap());
    let staged = s.root.join("probe.dcm");
    copy_as_new_instance(
        &original,
        &staged,
        "2.25.314159265358979323846264338327950288",
    );
    std::fs::rename(&staged, s.inbox.join("probe.dcm")).unwrap();
    wait_until(
        "the probe plate stored at the PACS",
        Duration::from_secs(240),
        || count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state = 'sent'") == usable + 1,
    );
    assert_eq!(
        pacs.store_requests(),
        usable + 1,
        "something was sent twice"
    );
}

#[test]
fn oversized_instances_are_refused_out_of_resources_and_leave_nothing() {
    let (port, nowhere) = (free_port(), free_port());
    let s = net_site(port, nowhere, "", "");
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str("[decode]\nmax_file_bytes = 200000\n");
    std::fs::write(&s.config, cfg).unwrap();
    let (_daemon, _log) = start_net_daemon(&s, port);
    let big = root().join("tests/fixtures/17_explicit_le_u16_native.dcm");
    let small = root().join("tests/fixtures/16_explicit_le_u12_small.dcm");
    assert!(std::fs::metadata(&big).unwrap().len() > 200_000);
    assert!(std::fs::metadata(&small).unwrap().len() < 200_000);
    let sent = peer(&["concurrent", &port.to_string(), "1"], &[big, small]);
    let statuses: Vec<i64> = sent["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 0xA700], "{sent}");
    // Routed, not only recorded: the row is committed before the file leaves the inbox.
    wait_until(
        "the small plate judged and moved",
        Duration::from_secs(240),
        || {
            count(
                &s.db,
                "SELECT COUNT(*) FROM jobs WHERE routed_path IS NOT NULL",
            ) == 1
        },
    );
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM plates"), 1);
    let leftovers: Vec<PathBuf> = files_under(&s.inbox.join("net"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn forward_policy_sends_unusable_plates_followed_by_their_rejection_notes() {
    let (port, pacs_port) = (free_port(), free_port());
    let s = net_site(port, pacs_port, "", "unusable = \"forward\"\n");
    let pacs = start_pacs(&s.root, pacs_port);
    let demo = files_under(&root().join("demo/inbox"));
    for f in &demo {
        std::fs::copy(f, s.inbox.join(f.file_name().unwrap())).unwrap();
    }
    let (_daemon, _log) = start_net_daemon(&s, port);
    wait_dispatched(&s.db, demo.len());
    wait_until("the outbox drained", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'") == 0
    });
    let unusable = count(
        &s.db,
        "SELECT COUNT(*) FROM plates WHERE verdict = 'unusable'",
    );
    assert!(unusable > 0, "the demo inbox has unusable plates");
    assert_eq!(pacs.stored(|p| p != "KO" && p != "SC").len(), demo.len());
    assert_eq!(pacs.stored(|p| p == "KO").len(), unusable);
    // Each rejected plate is queued before its note, so the archive has it when the note comes.
    let misordered = count(
        &s.db,
        "SELECT COUNT(*) FROM outbox n JOIN outbox p ON p.plate_row = n.plate_row AND p.kind = 'plate'
          WHERE n.kind = 'kos' AND n.id < p.id",
    );
    assert_eq!(misordered, 0);
}

/// Connections that never speak hold no association slot and are bounded: with two slots,
/// forty silent connections leave real senders associating at once, the oldest silent ones
/// are closed to make room, and the rest after the handshake timeout.
#[test]
fn silent_connections_hold_no_slot_and_are_bounded() {
    use std::io::Read;
    let (port, nowhere) = (free_port(), free_port());
    let s = net_site(
        port,
        nowhere,
        "max_associations = 2\nhandshake_timeout_secs = 6",
        "",
    );
    let (_daemon, log) = start_net_daemon(&s, port);
    let silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert!(
        echo(port, "SCANNER"),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "served at once, not after a silent one timed out"
    );
    let closed = |conns: &[std::net::TcpStream]| {
        conns
            .iter()
            .filter(|c| {
                c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let mut buf = [0u8; 8];
                let mut r: &std::net::TcpStream = c;
                match r.read(&mut buf) {
                    Ok(0) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(_) => false,
                }
            })
            .count()
    };
    // At most 16 wait at once (four per slot, at least 16): the others were closed already.
    let early = closed(&silent);
    assert!(early >= 40 - 16, "{early} of 40 closed early");
    assert!(
        early < 40,
        "the newest ones still wait for the handshake timeout"
    );
    // Both slots are free for two senders at once.
    let held = peer(&["hold", &port.to_string(), "2"], &[]);
    assert_eq!(held["accepted"], serde_json::json!([true, true]));
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        closed(&silent),
        40,
        "all closed after the handshake timeout"
    );
}

/// A C-STORE whose data set is another instance than the one its command announces is refused
/// with 0xA900 ("data set does not match SOP class", as dcmtk answers) and leaves nothing
/// behind; the same file sent truthfully on the same association is stored and judged.
#[test]
fn a_data_set_that_is_not_the_announced_instance_is_refused_and_not_kept() {
    let (port, nowhere) = (free_port(), free_port());
    let s = net_site(port, nowhere, "", "");
    let (_daemon, _log) = start_net_daemon(&s, port);
    let f = root().join("tests/fixtures/16_explicit_le_u12_small.dcm");
    let got = peer(&["mismatch", &port.to_string()], &[f]);
    assert_eq!(got["mismatch"], 0xA900, "{got}");
    assert_eq!(got["match"], 0, "{got}");
    wait_until("the truthful one judged", Duration::from_secs(240), || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM jobs WHERE routed_path IS NOT NULL",
        ) == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    let uid = got["uid"].as_str().unwrap();
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM plates"), 1);
    assert_eq!(
        count(
            &s.db,
            &format!("SELECT COUNT(*) FROM plates WHERE sop_instance_uid = '{uid}'")
        ),
        1
    );
    assert!(
        files_under(&s.inbox).is_empty(),
        "{:?}",
        files_under(&s.inbox)
    );
}

/// Out of file handles, neither accept loop (the receiver's, /metrics') spins: connections
/// the daemon cannot accept queue up while its CPU time stays low, and it says why.
#[test]
fn out_of_file_handles_the_accept_loops_pause() {
    let (port, nowhere) = (free_port(), free_port());
    let s = net_site(port, nowhere, "handshake_timeout_secs = 30", "");
    let (d, log) = start_net_daemon(&s, port);
    let mut metrics_addr = None;
    wait_until("the metrics address", Duration::from_secs(30), || {
        metrics_addr = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.split("metrics listening addr=")
                    .nth(1)
                    .map(|a| a.trim().to_string())
            });
        metrics_addr.is_some()
    });
    let metrics_addr = metrics_addr.unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let pid = d.child.id() as libc::pid_t;
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    // The lowest free descriptor: a limit there leaves the daemon no new one (the kernel
    // hands out the lowest free number, and refuses any at or above the limit).
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    // SAFETY: plain struct arguments; only the soft limit of the daemon changes.
    unsafe {
        let mut old: libc::rlimit = std::mem::zeroed();
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let low = libc::rlimit {
            rlim_cur: lowest_free,
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &low, std::ptr::null_mut()),
            0
        );
    }
    // Connections that queue up, which the daemon cannot accept.
    let _held: Vec<std::net::TcpStream> = (0..24)
        .flat_map(|_| {
            [
                std::net::TcpStream::connect(&metrics_addr).unwrap(),
                std::net::TcpStream::connect(("127.0.0.1", port)).unwrap(),
            ]
        })
        .collect();
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 of proc(5), in clock ticks (100 a second).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks() - before;
    let text = std::fs::read_to_string(&log).unwrap();
    let now_open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    assert!(
        text.contains("metrics accept failed"),
        "lowest free fd {lowest_free}, {now_open} open, {limits}\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("accept failed") && !l.contains("metrics accept failed")),
        "the receiver's loop met it too: {text}"
    );
    assert!(
        used < 60,
        "{used} ticks of CPU in 3 s while out of file handles"
    );
}

/// A deflated data set may inflate to `decode.max_file_bytes` in the receiver's check, the
/// bound decode applies, not four times that: here the limit lies halfway between the file's
/// size and its 8-bit pixel data's (which the inflated data set holds and more), so the file is
/// within it but its data set is not: it is answered "cannot understand" and, kept for the
/// record, quarantined as malformed.
#[test]
fn a_deflated_data_set_inflates_no_further_than_max_file_bytes() {
    let deflated = root().join("tests/fixtures/04_deflated_le_u8.dcm");
    let file_len = std::fs::metadata(&deflated).unwrap().len();
    let d = &pydicom_describe(std::slice::from_ref(&deflated))[0];
    let pixel_bytes = d["rows"].as_u64().unwrap() * d["columns"].as_u64().unwrap();
    assert!(
        pixel_bytes > file_len + 1000,
        "the fixture must deflate: {file_len} bytes on disk, {pixel_bytes} of pixels"
    );
    let limit = (file_len + pixel_bytes) / 2;
    let (port, nowhere) = (free_port(), free_port());
    let s = net_site(port, nowhere, "", "");
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!("[decode]\nmax_file_bytes = {limit}\n"));
    std::fs::write(&s.config, cfg).unwrap();
    let (_daemon, _log) = start_net_daemon(&s, port);
    let sent = peer(&["concurrent", &port.to_string(), "1"], &[deflated]);
    let statuses: Vec<i64> = sent["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [0xC000], "{sent}");
    wait_until("the file recorded", Duration::from_secs(120), || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM jobs WHERE routed_path IS NOT NULL",
        ) == 1
    });
    let row = sql(&s.db, "SELECT verdict, error FROM plates");
    assert!(
        row.starts_with("error|") && row.contains(&format!("inflates to more than {limit}")),
        "{row}"
    );
}

/// A PACS that checks its called AE title, with plateqc configured to call it by a wrong one:
/// `check-config --probe` says so with the setting to fix; the daemon logs one WARN naming the
/// destination, the refusal and the hint (not one per plate or retry); /metrics shows the
/// destination down and its waiting entries; `plateqc outbox list` shows them. With the AE
/// title fixed, a restart sends at once although the retry schedule said an hour, and the
/// compressed plates this PACS refuses in their own syntax arrive decompressed, with the pixel
/// values pydicom reads from the original (the syntax used is on the outbox row).
#[test]
fn a_wrong_called_ae_title_is_named_once_in_the_log_metrics_and_outbox_and_a_fix_sends_at_once() {
    use crate::support::cli::plateqc_command;
    let (port, pacs_port) = (free_port(), free_port());
    let s = net_site(
        port,
        pacs_port,
        "",
        "send_notes = false\nretry_base_secs = 3600\nretry_max_secs = 3600\n",
    );
    let right = std::fs::read_to_string(&s.config).unwrap();
    // An hour between attempts instead of net_site's 1-2 s (a TOML key may appear only once).
    let right = right.replace("retry_base_secs = 1\nretry_max_secs = 2\n", "");
    let wrong = right.replace("ae_title = \"PACS\"", "ae_title = \"NOTPACS\"");
    std::fs::write(&s.config, &wrong).unwrap();
    let stored = s.root.join("pacs");
    std::fs::create_dir_all(&stored).unwrap();
    let mut scp = Command::new(python())
        .arg(support_file("net_peer.py"))
        .args(["strict-scp", &pacs_port.to_string(), "PACS"])
        .arg(&stored)
        .arg("600")
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(&mut scp);
    crate::support::dicom::wait_listening(pacs_port, "strict-scp");

    let probe = |cfg: &Path| {
        plateqc_command()
            .args(["--config", cfg.to_str().unwrap(), "check-config", "--probe"])
            .output()
            .unwrap()
    };
    let p = probe(&s.config);
    let out = String::from_utf8_lossy(&p.stdout);
    assert_eq!(p.status.code(), Some(1), "{out}");
    assert!(out.contains("called AE title not recognised"), "{out}");
    assert!(out.contains("set ae_title of destination pacs"), "{out}");

    let demo = crate::support::demo::mixed(6);
    for f in &demo {
        std::fs::copy(f, s.inbox.join(f.file_name().unwrap())).unwrap();
    }
    let (daemon, log) = start_net_daemon(&s, port);
    wait_dispatched(&s.db, demo.len());
    let usable = count(
        &s.db,
        "SELECT COUNT(*) FROM plates WHERE verdict = 'usable'",
    );
    assert!(usable > 0);
    wait_until("every item tried", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE attempts >= 1") == usable
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot forward to this destination"))
        .collect();
    assert_eq!(warns.len(), 1, "{text}");
    assert!(warns[0].contains("WARN"), "{}", warns[0]);
    assert!(warns[0].contains("destination=pacs"), "{}", warns[0]);
    assert!(
        warns[0].contains("called AE title not recognised"),
        "{}",
        warns[0]
    );
    assert!(
        warns[0].contains("set ae_title of destination pacs"),
        "{}",
        warns[0]
    );
    // /metrics refreshes the waiting counts every 5 s
    wait_until("metrics show the backlog", Duration::from_secs(20), || {
        let m = http_get_from_log(&log, "/metrics");
        m.contains("plateqc_destination_up{destination=\"pacs\"} 0")
            && m.contains(&format!(
                "plateqc_outbox_items{{destination=\"pacs\",state=\"pending\"}} {usable}"
            ))
    });
    let list = plateqc_command()
        .args(["--config", s.config.to_str().unwrap(), "outbox", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{listed}");
    assert!(
        listed.contains(&format!("pacs: {usable} pending")),
        "{listed}"
    );
    assert_eq!(
        listed.matches("called AE title not recognised").count(),
        usable,
        "{listed}"
    );
    drop(daemon);

    // The fix: the right AE title. The next attempt is an hour away, yet a restart sends now.
    std::fs::write(&s.config, &right).unwrap();
    assert_eq!(probe(&s.config).status.code(), Some(0));
    let (_daemon, log) = start_net_daemon(&s, port);
    let fixed = Instant::now();
    while count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state = 'sent'") != usable {
        assert!(
            fixed.elapsed() < Duration::from_secs(60),
            "not sent after the fix: {}\n{}",
            sql(
                &s.db,
                "SELECT state, attempts, next_attempt_at, last_error FROM outbox"
            ),
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let converted: Vec<(String, String)> = sql(
        &s.db,
        "SELECT path, sop_instance_uid FROM outbox WHERE sent_transfer_syntax = '1.2.840.10008.1.2.1'
            OR sent_transfer_syntax = '1.2.840.10008.1.2'",
    )
    .lines()
    .filter_map(|l| {
        let (p, u) = l.split_once('|')?;
        Some((p.to_string(), u.to_string()))
    })
    .collect();
    assert!(
        !converted.is_empty(),
        "a compressed usable plate among the first six"
    );
    for (original, uid) in &converted {
        let got = pydicom_describe(&[PathBuf::from(original), stored.join(format!("{uid}.dcm"))]);
        for k in ["rows", "columns", "sum", "sumsq", "min", "max", "head"] {
            assert_eq!(got[0][k], got[1][k], "{k} of {uid}: {got:?}");
        }
    }
    wait_until(
        "metrics show the destination up",
        Duration::from_secs(20),
        || {
            let m = http_get_from_log(&log, "/metrics");
            m.contains("plateqc_destination_up{destination=\"pacs\"} 1")
                && m.contains(&format!(
                    "plateqc_forwarded_total{{destination=\"pacs\"}} {usable}"
                ))
        },
    );
}

/// Kills a helper process when the test ends, passed or failed.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A held plate that a reviewer overrides to usable goes to the PACS after all, and the log
/// says that its rejection note, already stored there, stays (an IOCM archive would keep
/// hiding the plate until the note is deleted there).
#[test]
fn an_override_to_usable_releases_a_held_plate_to_the_pacs() {
    use crate::support::cli::{override_to_usable, plateqc_command};
    let (port, pacs_port) = (free_port(), free_port());
    let s = net_site(port, pacs_port, "", "");
    let pacs = start_pacs(&s.root, pacs_port);
    let demo = files_under(&root().join("demo/inbox"));
    for f in &demo {
        std::fs::copy(f, s.inbox.join(f.file_name().unwrap())).unwrap();
    }
    let (_daemon, log) = start_net_daemon(&s, port);
    wait_dispatched(&s.db, demo.len());
    wait_until("the outbox drained", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'") == 0
    });
    let held = sql(
        &s.db,
        "SELECT sop_instance_uid FROM plates WHERE verdict = 'unusable' ORDER BY id LIMIT 1",
    );
    assert!(!held.is_empty(), "the demo inbox has unusable plates");
    assert!(!pacs.stored(|p| p != "KO" && p != "SC").contains(&held));
    assert!(!pacs.stored(|p| p == "KO").is_empty(), "notes were sent");
    override_to_usable(&s.config, &held);
    wait_until(
        "the released plate stored at the PACS",
        Duration::from_secs(60),
        || pacs.stored(|p| p != "KO" && p != "SC").contains(&held),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("held plate released by a reviewer's override"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains(&held) && l.contains("already stored")),
        "{text}"
    );
    // The review page shows each unusable plate's rejection note and where it went.
    let page = s.root.join("review.html");
    crate::support::cli::succeeds(
        plateqc_command()
            .args(["--config", s.config.to_str().unwrap(), "report", "--html"])
            .arg(&page),
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<th>Rejection note</th>"));
    let kos = sql(
        &s.db,
        &format!(
            "SELECT n.sop_instance_uid FROM rejection_notes n JOIN plates p ON p.id = n.plate_row
              WHERE n.kind = 'kos' AND p.sop_instance_uid = '{held}'"
        ),
    );
    assert!(
        html.contains(&format!("note {kos} written; sent to pacs")),
        "no note line for {kos}"
    );
    // Released once: another pass of the forwarder queues nothing more.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        count(
            &s.db,
            &format!(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'plate' AND sop_instance_uid = '{held}'"
            )
        ),
        1
    );
}

/// Doubtful plates wait for a person (issue 17, item 3): a plate whose score is within
/// `infer.review_margin` log-odds of the threshold is recorded with its verdict and
/// `needs_review`, filed under `review/`, and nothing leaves for it, neither the plate nor a
/// rejection note, while the other plates go on. A reviewer's confirmation of a
/// usable one sends it to the PACS; deciding another one unusable writes and sends its note;
/// the plates no one has decided keep waiting and head the review page.
#[test]
fn a_plate_near_the_threshold_waits_in_review_until_a_person_decides() {
    use crate::support::cli::{plateqc_command, succeeds};
    let (port, pacs_port) = (free_port(), free_port());
    let s = net_site(port, pacs_port, "", "");
    // The site's test default turns review off. The margin here is wider than the product's
    // 0.5 so that the demo inbox, judged by model 1.5.0, has doubtful plates of both verdicts
    // (the nearest unusable plate is 0.71 log-odds above the threshold) and plates of both
    // outside review (the farthest usable one is 1.07 below); a new model may need another.
    let cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("review_margin = 0.0\n", "review_margin = 1.0\n");
    std::fs::write(&s.config, cfg).unwrap();
    let pacs = start_pacs(&s.root, pacs_port);
    let demo = files_under(&root().join("demo/inbox"));
    for f in &demo {
        std::fs::copy(f, s.inbox.join(f.file_name().unwrap())).unwrap();
    }
    let (_daemon, log) = start_net_daemon(&s, port);
    wait_until("plates routed", Duration::from_secs(240), || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM jobs WHERE routed_path IS NOT NULL AND state = 'done'",
        ) == demo.len()
    });
    let waiting: Vec<(String, String)> = sql(
        &s.db,
        "SELECT sop_instance_uid, verdict FROM plate_verdicts
          WHERE needs_review = 1 AND review_reason = 'near_threshold' ORDER BY plate_row",
    )
    .lines()
    .map(|l| {
        let (u, v) = l.split_once('|').unwrap();
        (u.to_string(), v.to_string())
    })
    .collect();
    let good = waiting.iter().find(|(_, v)| v == "usable").cloned();
    let bad = waiting.iter().find(|(_, v)| v == "unusable").cloned();
    let (Some((good, _)), Some((bad, _))) = (good, bad) else {
        panic!("the demo inbox has near-threshold plates of both verdicts: {waiting:?}");
    };
    // Every plate outside review is dispatched and sent; the waiting ones are not.
    wait_until("the others dispatched", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM jobs WHERE dispatched = 1") == demo.len() - waiting.len()
    });
    wait_until("the outbox drained", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'") == 0
    });
    let in_review: Vec<PathBuf> = files_under(&s.out.join("review"));
    assert_eq!(in_review.len(), waiting.len(), "{in_review:?}");
    for (uid, _) in &waiting {
        let about = |table: &str| {
            count(
                &s.db,
                &format!(
                    "SELECT COUNT(*) FROM {table} t JOIN plates p ON p.id = t.plate_row
                      WHERE p.sop_instance_uid = '{uid}'"
                ),
            )
        };
        assert_eq!(about("rejection_notes"), 0, "no note for {uid} yet");
        assert_eq!(about("outbox"), 0, "nothing queued for {uid} yet");
    }
    let stored = pacs.stored(|p| p != "KO" && p != "SC");
    assert!(!stored.is_empty(), "the plates outside review were sent");
    assert!(!stored.contains(&good));
    let gauge = |n: usize| format!("plateqc_plates_awaiting_review {n}\n");
    wait_until(
        "/metrics counts the waiting plates",
        Duration::from_secs(30),
        || http_get_from_log(&log, "/metrics").contains(&gauge(waiting.len())),
    );

    // The review page lists the waiting plates first, and says what to do.
    let page = s.root.join("review.html");
    succeeds(
        plateqc_command()
            .args(["--config", s.config.to_str().unwrap(), "report", "--html"])
            .arg(&page),
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let first_row = html.find("<tr class=\"plate").unwrap();
    assert!(
        html[first_row..].starts_with("<tr class=\"plate waiting\""),
        "waiting plates first"
    );
    assert!(
        html.contains(&format!("{} plates wait for a person", waiting.len())),
        "the count of waiting plates"
    );

    // Decisions: a confirmation sends the plate; "unusable" writes and sends the note.
    let decide = |uid: &str, verdict: &str| {
        succeeds(
            plateqc_command()
                .args(["--config", s.config.to_str().unwrap(), "override", uid])
                .args([
                    "--verdict",
                    verdict,
                    "--by",
                    "QA",
                    "--reason",
                    "looked at it",
                ]),
        );
    };
    decide(&good, "usable");
    decide(&bad, "unusable");
    wait_until(
        "the confirmed plate at the PACS",
        Duration::from_secs(60),
        || pacs.stored(|p| p != "KO" && p != "SC").contains(&good),
    );
    wait_until(
        "the decided plate's note sent",
        Duration::from_secs(60),
        || {
            count(
                &s.db,
                &format!(
                    "SELECT COUNT(*) FROM outbox o JOIN plates p ON p.id = o.plate_row
                  WHERE p.sop_instance_uid = '{bad}' AND o.kind = 'kos' AND o.state = 'sent'"
                ),
            ) == 1
        },
    );
    assert!(
        !pacs.stored(|p| p != "KO" && p != "SC").contains(&bad),
        "a plate decided unusable is held"
    );
    // The undecided ones still wait.
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM jobs WHERE dispatched = 0"),
        waiting.len() - 2
    );
    wait_until("/metrics counts the rest", Duration::from_secs(30), || {
        http_get_from_log(&log, "/metrics").contains(&gauge(waiting.len() - 2))
    });

    // A waiting image sent again (another file, same instance) is judged again and waits
    // again; the judgement it replaced is settled with nothing sent, and a decision then sends
    // the image once.
    let (again, _) = waiting
        .iter()
        .find(|(u, _)| u != &good && u != &bad)
        .cloned()
        .expect("a third near-threshold plate in the demo inbox");
    let name = sql(
        &s.db,
        &format!("SELECT source_path FROM plates WHERE sop_instance_uid = '{again}'"),
    );
    let name = Path::new(&name).file_name().unwrap().to_owned();
    let resent = s.root.join("resent.dcm");
    let mut py = Command::new(python());
    py.args([
        "-c",
        "import sys, pydicom\n\
         ds = pydicom.dcmread(sys.argv[1])\n\
         ds.StationName = 'RESENT'\n\
         ds.save_as(sys.argv[2])",
    ])
    .arg(root().join("demo/inbox").join(&name))
    .arg(&resent);
    stdout_of(py, "pydicom, a changed copy of a waiting plate");
    std::fs::copy(&resent, s.inbox.join("resent.dcm")).unwrap();
    let rows_of = |uid: &str| {
        sql(
            &s.db,
            &format!(
                "SELECT p.id, p.superseded, j.dispatched FROM plates p
                   JOIN jobs j ON j.plate_row = p.id
                  WHERE p.sop_instance_uid = '{uid}' ORDER BY p.id"
            ),
        )
    };
    wait_until("the old judgement settled", Duration::from_secs(60), || {
        let r = rows_of(&again);
        r.lines().count() == 2 && r.lines().next().unwrap().ends_with("|1|1")
    });
    assert!(rows_of(&again).lines().nth(1).unwrap().ends_with("|0|0"));
    let sent_for = |uid: &str| {
        count(
            &s.db,
            &format!(
                "SELECT COUNT(*) FROM outbox o JOIN plates p ON p.id = o.plate_row
                  WHERE p.sop_instance_uid = '{uid}'"
            ),
        )
    };
    assert_eq!(sent_for(&again), 0, "nothing for the replaced judgement");
    decide(&again, "usable");
    wait_until("the image sent once", Duration::from_secs(60), || {
        sent_for(&again) == 1
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("ERROR"), "{text}");
}
