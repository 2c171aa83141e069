//! Forwarding into a real PACS: a private Orthanc (Debian's) started by each test, checked
//! through its REST API: what it stores, in which study and transfer syntax, and what the
//! operator sees in plateqc's log when the PACS refuses.

use crate::support::cli::{override_to_usable, plateqc_command};
use crate::support::daemon::{site, sql, wait_until, Site};
use crate::support::dicom::{count, dciodvfy_errors, dcmdump, wait_dispatched};
use crate::support::orthanc::{start_orthanc, start_orthanc_dicomweb, Orthanc, Stored};
use crate::support::{pydicom_describe, root};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// A site whose daemon forwards to Orthanc as destination `pacs`, calling
/// it `called` (Orthanc's own title is ORTHANC); `forward` is added to `[forward]`.
fn orthanc_site(o: &Orthanc, called: &str, forward: &str) -> Site {
    let s = site();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!(
        "[dicom]\nae_title = \"PLATEQC\"\n\
         [forward]\n\
         destinations = [{{ name = \"pacs\", ae_title = \"{called}\", address = \"127.0.0.1:{}\" }}]\n{forward}",
        o.dicom
    ));
    std::fs::write(&s.config, cfg).unwrap();
    s
}

/// The daemon of an Orthanc site, once it says it is watching. It has no DICOM listener (the
/// plates come through the inbox), so no port of its own can be taken by a parallel test.
fn start_daemon(s: &Site) -> (crate::support::daemon::Daemon, PathBuf) {
    let log = s.root.join("daemon.log");
    let child = crate::support::daemon::spawn_daemon(
        s,
        "info",
        std::fs::File::create(&log).unwrap().into(),
    );
    let d = crate::support::daemon::Daemon { child };
    wait_until("the daemon watching", Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("watching")
    });
    (d, log)
}

/// `n` demo plates of both verdicts into the site's inbox (all of them for a large `n`).
fn copy_demo(s: &Site, n: usize) -> Vec<PathBuf> {
    let demo = crate::support::demo::mixed(n);
    for f in &demo {
        std::fs::copy(f, s.inbox.join(f.file_name().unwrap())).unwrap();
    }
    demo
}

/// Waits for every outbox row to be sent; on timeout, the rows that were not.
fn drained(s: &Site) {
    let t = std::time::Instant::now();
    while count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state <> 'sent'") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "outbox not drained:\n{}",
            sql(
                &s.db,
                "SELECT kind, state, attempts, last_error FROM outbox WHERE state <> 'sent'"
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn uids(db: &std::path::Path, q: &str) -> BTreeSet<String> {
    sql(db, q).lines().map(str::to_string).collect()
}

fn by_sop(stored: &[Stored]) -> HashMap<String, Stored> {
    stored
        .iter()
        .map(|s| (s.sop_instance_uid.clone(), s.clone()))
        .collect()
}

/// `hold`: usable plates reach Orthanc in their own transfer syntax, unusable ones never do,
/// each unusable plate's KOS note and montage capture land in that plate's study, and a
/// reviewer's override to usable sends the held plate after all.
#[test]
fn orthanc_gets_usable_plates_and_notes_in_their_studies_and_a_released_plate() {
    let s0 = site();
    let o = start_orthanc(&s0.root, None);
    let s = orthanc_site(&o, "ORTHANC", "retry_base_secs = 1\nretry_max_secs = 2\n");
    let demo = copy_demo(&s, usize::MAX);
    let (_daemon, log) = start_daemon(&s);
    wait_dispatched(&s.db, demo.len());
    drained(&s);
    let usable = uids(
        &s.db,
        "SELECT sop_instance_uid FROM plates WHERE verdict = 'usable'",
    );
    let unusable = uids(
        &s.db,
        "SELECT sop_instance_uid FROM plates WHERE verdict = 'unusable'",
    );
    assert!(!usable.is_empty() && !unusable.is_empty());
    let stored = o.instances();
    let plates: BTreeSet<String> = stored
        .iter()
        .filter(|i| i.modality == "IO")
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(plates, usable, "Orthanc holds exactly the usable plates");

    // Each plate in the syntax it arrived in (Orthanc takes every common one by default).
    let sop = by_sop(&stored);
    for line in sql(
        &s.db,
        "SELECT o.sop_instance_uid, o.sent_transfer_syntax FROM outbox o WHERE o.kind = 'plate'",
    )
    .lines()
    {
        let (uid, ts) = line.split_once('|').unwrap();
        assert_eq!(sop[uid].transfer_syntax, ts, "{uid}");
    }

    // Notes: one KOS and one SC per unusable plate, in the plate's own study.
    let notes = sql(
        &s.db,
        "SELECT n.kind, n.sop_instance_uid, p.study_instance_uid FROM rejection_notes n
           JOIN plates p ON p.id = n.plate_row WHERE p.verdict = 'unusable'",
    );
    let mut kinds = HashMap::<&str, usize>::new();
    for line in notes.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let got = sop
            .get(f[1])
            .unwrap_or_else(|| panic!("note {} of kind {} not in Orthanc", f[1], f[0]));
        assert_eq!(
            got.study_instance_uid, f[2],
            "note {} in its plate's study",
            f[1]
        );
        assert_eq!(
            got.modality,
            if f[0] == "kos" { "KO" } else { "OT" },
            "{got:?}"
        );
        *kinds
            .entry(if f[0] == "kos" { "kos" } else { "sc" })
            .or_default() += 1;
    }
    assert_eq!(kinds.get("kos"), Some(&unusable.len()));
    assert_eq!(kinds.get("sc"), Some(&unusable.len()));

    // A reviewer's override releases one held plate to Orthanc.
    let held = unusable.iter().next().unwrap().clone();
    override_to_usable(&s.config, &held);
    wait_until(
        "the released plate in Orthanc",
        Duration::from_secs(60),
        || o.instances().iter().any(|i| i.sop_instance_uid == held),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("held plate released by a reviewer's override"),
        "{text}"
    );
}

/// An Orthanc that accepts only uncompressed syntaxes, with `unusable = "forward"`: every
/// plate arrives (the compressed ones decompressed to explicit VR little endian with the same
/// pixels as the original, recorded on the outbox row), and unusable plates with their notes.
#[test]
fn orthanc_restricted_to_uncompressed_syntaxes_gets_every_plate_transcoded_with_its_pixels() {
    let s0 = site();
    let o = start_orthanc(&s0.root, Some(&[IMPLICIT_LE, EXPLICIT_LE]));
    let s = orthanc_site(
        &o,
        "ORTHANC",
        "unusable = \"forward\"\nretry_base_secs = 1\nretry_max_secs = 2\n",
    );
    let demo = copy_demo(&s, 12);
    let (_daemon, _log) = start_daemon(&s);
    wait_dispatched(&s.db, demo.len());
    drained(&s);
    let stored = o.instances();
    let sop = by_sop(&stored);
    let all = uids(&s.db, "SELECT sop_instance_uid FROM plates");
    let got: BTreeSet<String> = stored
        .iter()
        .filter(|i| i.modality == "IO")
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(got, all, "forward: every plate reaches Orthanc");
    for i in &stored {
        assert!(
            i.transfer_syntax == IMPLICIT_LE || i.transfer_syntax == EXPLICIT_LE,
            "{i:?}"
        );
    }
    assert!(
        count(
            &s.db,
            "SELECT COUNT(*) FROM rejection_notes n JOIN plates p ON p.id = n.plate_row
              WHERE p.verdict = 'unusable'"
        ) > 0
    );
    for uid in uids(&s.db, "SELECT sop_instance_uid FROM rejection_notes") {
        assert!(sop.contains_key(&uid), "note {uid} in Orthanc");
    }
    // A montage capture, decompressed from JPEG to RGB, is still a valid Secondary Capture.
    let sc = sql(
        &s.db,
        "SELECT sop_instance_uid FROM rejection_notes WHERE kind = 'sc' LIMIT 1",
    );
    let copy = s.root.join("capture-from-orthanc.dcm");
    o.download(&sop[&sc].id, &copy);
    let (errors, text) = dciodvfy_errors(&copy);
    assert!(errors.is_empty(), "{text}");
    assert!(dcmdump(&copy).contains("(0028,0004) CS [RGB]"));
    // The transcoded plates: recorded as such, pixels equal to the original's (pydicom reads
    // both the file from the inbox copy and the one Orthanc stored).
    let rows = sql(
        &s.db,
        &format!(
            "SELECT o.sop_instance_uid, p.source_path FROM outbox o
               JOIN plates p ON p.sop_instance_uid = o.sop_instance_uid
              WHERE o.kind = 'plate' AND o.sent_transfer_syntax = '{EXPLICIT_LE}'"
        ),
    );
    let mut checked = 0;
    for line in rows.lines() {
        let (uid, source) = line.split_once('|').unwrap();
        let name = std::path::Path::new(source).file_name().unwrap();
        let original = root().join("demo/inbox").join(name);
        let syntax = dcmdump(&original);
        if syntax.contains("=LittleEndianExplicit") {
            continue; // it was explicit VR little endian already
        }
        let copy = s.root.join(format!("{uid}.from-orthanc.dcm"));
        o.download(&sop[uid].id, &copy);
        let d = pydicom_describe(&[original.clone(), copy]);
        for k in ["rows", "columns", "sum", "sumsq", "min", "max", "head"] {
            assert_eq!(d[0][k], d[1][k], "{k} of {uid}: {d:?}");
        }
        checked += 1;
    }
    assert!(
        checked > 0,
        "a compressed plate among the twelve demo plates"
    );
}

/// A destination AE title that Orthanc does not answer to: the operator sees one WARN naming
/// the destination, the refusal and the fix; with the right title a restart sends everything.
#[test]
fn a_wrong_ae_title_towards_orthanc_is_one_warn_with_the_fix_and_the_fix_sends() {
    let s0 = site();
    let o = start_orthanc(&s0.root, None);
    let s = orthanc_site(
        &o,
        "NOTORTHANC",
        "send_notes = false\nretry_base_secs = 3600\nretry_max_secs = 3600\n",
    );
    let demo = copy_demo(&s, 8);
    let (daemon, log) = start_daemon(&s);
    wait_dispatched(&s.db, demo.len());
    let usable = count(
        &s.db,
        "SELECT COUNT(*) FROM plates WHERE verdict = 'usable'",
    );
    assert!(usable > 0, "a usable plate among the eight demo plates");
    wait_until("every item tried", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE attempts >= 1") == usable
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot forward to this destination"))
        .collect();
    assert_eq!(warns.len(), 1, "{text}");
    assert!(warns[0].contains("WARN") && warns[0].contains("destination=pacs"));
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
    assert!(o.instances().is_empty());
    drop(daemon);

    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, cfg.replace("\"NOTORTHANC\"", "\"ORTHANC\"")).unwrap();
    let (_daemon, _log) = start_daemon(&s);
    wait_until("sent after the fix", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE state = 'sent'") == usable
    });
    assert_eq!(
        o.instances().iter().filter(|i| i.modality == "IO").count(),
        usable
    );
}

/// A site forwarding to a STOW-RS destination `web` at `url` with HTTP basic authentication
/// (`password_file`) and, for https, the site's CA.
fn web_site(url: &str, password_file: &Path, ca: Option<&Path>) -> Site {
    let s = site();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    let ca = ca
        .map(|c| format!(", ca_file = \"{}\"", c.display()))
        .unwrap_or_default();
    cfg.push_str(&format!(
        "[dicom]\nae_title = \"PLATEQC\"\n\
         [forward]\nretry_base_secs = 1\nretry_max_secs = 2\n\
         destinations = [{{ name = \"web\", url = \"{url}\", username = \"plateqc\", password_file = \"{}\"{ca} }}]\n",
        password_file.display()
    ));
    std::fs::write(&s.config, cfg).unwrap();
    s
}

fn probe(s: &Site) -> (Option<i32>, String) {
    let out = plateqc_command()
        .args([
            "--config",
            s.config.to_str().unwrap(),
            "check-config",
            "--probe",
        ])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// STOW-RS into Orthanc's DICOMweb plugin: a wrong password is one WARN naming HTTP 401 and
/// the password file (and a failed probe); once the file holds the right password, the next
/// pass stores the usable plates and the notes, without a restart.
#[test]
fn stow_rs_to_orthanc_dicomweb_names_a_wrong_password_and_stores_once_it_is_fixed() {
    let s0 = site();
    let o = start_orthanc_dicomweb(&s0.root, ("plateqc", "s3cret"), None);
    let pw = s0.root.join("stow-password");
    std::fs::write(&pw, "wrong\n").unwrap();
    let url = format!("http://127.0.0.1:{}/dicom-web", o.http);
    let s = web_site(&url, &pw, None);
    let (code, out) = probe(&s);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HTTP 401") && out.contains("password_file"),
        "{out}"
    );

    let demo = copy_demo(&s, 8);
    let (_daemon, log) = start_daemon(&s);
    wait_dispatched(&s.db, demo.len());
    wait_until("every item tried", Duration::from_secs(60), || {
        count(&s.db, "SELECT COUNT(*) FROM outbox WHERE attempts >= 1")
            == count(&s.db, "SELECT COUNT(*) FROM outbox")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot forward to this destination"))
        .collect();
    assert_eq!(warns.len(), 1, "{text}");
    assert!(warns[0].contains("destination=web"), "{}", warns[0]);
    assert!(warns[0].contains("HTTP 401"), "{}", warns[0]);
    assert!(warns[0].contains("password_file"), "{}", warns[0]);
    assert!(o.instances().is_empty());

    std::fs::write(&pw, "s3cret\n").unwrap();
    assert_eq!(probe(&s).0, Some(0));
    drained(&s);
    let stored = by_sop(&o.instances());
    let usable = uids(
        &s.db,
        "SELECT sop_instance_uid FROM plates WHERE verdict = 'usable'",
    );
    let notes = uids(&s.db, "SELECT sop_instance_uid FROM rejection_notes");
    assert!(!usable.is_empty() && !notes.is_empty());
    for uid in usable.iter().chain(&notes) {
        assert!(stored.contains_key(uid), "{uid} stored over STOW-RS");
    }
    let unusable = uids(
        &s.db,
        "SELECT sop_instance_uid FROM plates WHERE verdict = 'unusable'",
    );
    assert!(unusable.iter().all(|u| !stored.contains_key(u)), "held");
    // Each plate stored in its own transfer syntax, as recorded on the outbox row.
    for line in sql(
        &s.db,
        "SELECT sop_instance_uid, sent_transfer_syntax FROM outbox WHERE kind = 'plate'",
    )
    .lines()
    {
        let (uid, ts) = line.split_once('|').unwrap();
        assert_eq!(stored[uid].transfer_syntax, ts, "{uid}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("forwarding to this destination works again"),
        "{text}"
    );
}

/// STOW-RS over HTTPS to an Orthanc whose certificate a site CA signed: without `ca_file` the
/// probe names the TLS failure and the setting; with it, plates are stored (each one confirmed
/// by the server's answer naming its SOP Instance UID).
#[test]
fn stow_rs_over_https_trusts_the_site_ca_from_ca_file() {
    let s0 = site();
    let dir = s0.root.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ssl = |args: &[&str]| {
        crate::support::cli::succeeds(
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir),
        );
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=plateqc test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "srv.pem",
    ]);
    let mut pem = std::fs::read(dir.join("srv.pem")).unwrap();
    pem.extend(std::fs::read(dir.join("srv.key")).unwrap());
    std::fs::write(dir.join("server.pem"), pem).unwrap();

    let o = start_orthanc_dicomweb(
        &s0.root,
        ("plateqc", "s3cret"),
        Some(&dir.join("server.pem")),
    );
    let pw = s0.root.join("stow-password");
    std::fs::write(&pw, "s3cret").unwrap();
    let url = format!("https://127.0.0.1:{}/dicom-web", o.https_port);
    let untrusted = web_site(&url, &pw, None);
    let (code, out) = probe(&untrusted);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("TLS failed") && out.contains("ca_file"),
        "{out}"
    );

    let s = web_site(&url, &pw, Some(&dir.join("ca.pem")));
    let (code, out) = probe(&s);
    assert_eq!(code, Some(0), "{out}");
    let demo = copy_demo(&s, 6);
    let (_daemon, _log) = start_daemon(&s);
    wait_dispatched(&s.db, demo.len());
    drained(&s);
    let sent = uids(
        &s.db,
        "SELECT sop_instance_uid FROM outbox WHERE state = 'sent'",
    );
    assert!(!sent.is_empty());
    let stored = by_sop(&o.instances());
    assert!(
        sent.iter().all(|u| stored.contains_key(u)),
        "every sent item in Orthanc"
    );
}
