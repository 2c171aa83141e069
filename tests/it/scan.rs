//! The whole scan pipeline with the real ONNX Runtime, the bundled model and a real SQLite
//! file, on real DICOM files mixed with broken ones.

use crate::support::cli::{plateqc_command, scan_command, succeeds};
use crate::support::daemon::sql;
use crate::support::*;
use plateqc::config::Config;
use plateqc::outcome::{FailureKind, Verdict};
use plateqc::pipeline::{self, Engine};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Real images (any modality) and every kind of bad input, in one folder.
fn mixed_inbox(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let src = pydicom_test_files();
    let good: Vec<PathBuf> = [
        "MR_small.dcm",
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "JPGExtended.dcm",
    ]
    .iter()
    .map(|f| {
        let to = dir.join(f);
        std::fs::copy(src.join(f), &to).unwrap();
        to
    })
    .collect();
    let mut bad = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        bad.push(p);
    };
    put("empty.dcm", b"");
    put("notes.dcm", b"this is a text file with a .dcm name\n");
    let mr = read(&src.join("MR_small.dcm"));
    put("truncated.dcm", &mr[..mr.len() / 3]);
    put("plan.dcm", &read(&src.join("rtplan.dcm")));
    put("broken-jpeg.dcm", &read(&src.join("JPEG-lossy.dcm")));
    // Hidden and partial files are someone else's business and must not be touched.
    std::fs::write(dir.join(".hidden.dcm"), b"x").unwrap();
    std::fs::write(dir.join("incoming.dcm.part"), b"x").unwrap();
    (good, bad)
}

fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.paths.db = dir.join("db/qc.sqlite");
    c.paths.out = dir.join("out");
    c.decode.modalities = Vec::new();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_gets_exactly_one_row_and_bad_files_do_not_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let (good, bad) = mixed_inbox(&inbox);
    let cfg = config(tmp.path());
    let engine = Arc::new(Engine::start(cfg.clone()).await.unwrap());
    let files = plateqc::ingest::collect_files(std::slice::from_ref(&inbox));
    assert_eq!(
        files.len(),
        good.len() + bad.len(),
        "hidden and partial files are skipped"
    );
    let outcomes = pipeline::run(
        engine.clone(),
        files.clone(),
        Arc::new(()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(outcomes.len(), files.len());
    // Outcomes come back in input order, one per file.
    let paths: Vec<String> = outcomes
        .iter()
        .map(|o| o.record.source_path.clone())
        .collect();
    let expected: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(paths, expected);

    for o in &outcomes {
        let r = &o.record;
        let is_good = good
            .iter()
            .any(|g| g.display().to_string() == r.source_path);
        if is_good {
            assert_ne!(
                r.verdict,
                Verdict::Error,
                "{}: {:?}",
                r.source_path,
                r.error
            );
            let score = r.unusable_score.unwrap();
            assert!((0.0..=1.0).contains(&score));
            assert_eq!(
                r.verdict == Verdict::Unusable,
                score >= r.threshold.unwrap()
            );
            assert_eq!(r.overlays.len(), 3, "one overlay per exported layer");
            for p in r.overlays.values().chain(r.montage_path.iter()) {
                let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{p}");
                let img = image::open(p).unwrap();
                assert!(img.width() > 0);
            }
            // Per-layer overlays are at the plate's native size.
            let first = image::open(r.overlays.values().next().unwrap()).unwrap();
            assert_eq!(first.width() as i64, r.columns.unwrap());
            assert_eq!(first.height() as i64, r.rows.unwrap());
            assert_eq!(r.sha256.len(), 64);
        } else {
            assert_eq!(
                r.verdict,
                Verdict::Error,
                "{} should have failed",
                r.source_path
            );
            assert!(r.error.as_deref().is_some_and(|e| !e.is_empty()));
            assert!(r.error_stage.is_some() && r.error_kind.is_some());
        }
    }

    // The database holds the same, through the documented view.
    let pool = engine.recorder.sqlite_pool().unwrap();
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT source_path, verdict, error FROM plate_verdicts ORDER BY plate_row")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), files.len());
    let errors = rows.iter().filter(|r| r.1 == "error").count();
    assert_eq!(errors, bad.len());
    let kinds: Vec<(String, i64)> = sqlx::query_as(
        "SELECT error_kind, count(*) FROM plates WHERE verdict = 'error' GROUP BY error_kind ORDER BY error_kind",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let kinds: std::collections::BTreeMap<_, _> = kinds.into_iter().collect();
    assert_eq!(kinds.get("not_dicom"), Some(&2), "{kinds:?}");
    assert_eq!(kinds.get("policy"), Some(&1), "{kinds:?}");
    assert_eq!(kinds.get("pixels"), Some(&1), "{kinds:?}");
    assert_eq!(kinds.get("malformed"), Some(&1), "{kinds:?}");

    // Privacy: the patient ID is a keyed hash and no patient name reaches the database.
    let (hash,): (Option<String>,) =
        sqlx::query_as("SELECT patient_id_hash FROM plates WHERE source_path LIKE '%MR_small.dcm'")
            .fetch_one(pool)
            .await
            .unwrap();
    let hash = hash.expect("MR_small has a Patient ID");
    assert_eq!(hash.len(), 32);
    engine.recorder.clone().close().await;
    let db_bytes = std::fs::read(&cfg.paths.db).unwrap();
    let wal = std::fs::read(cfg.paths.db.with_extension("sqlite-wal")).unwrap_or_default();
    for needle in [b"CompressedSamples".as_slice(), b"4MR1".as_slice()] {
        let hit = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(
            !hit(&db_bytes) && !hit(&wal),
            "{} found in the database",
            String::from_utf8_lossy(needle)
        );
    }
    assert_eq!(
        std::fs::metadata(&cfg.paths.db)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn cli_scan_reports_summary_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    mixed_inbox(&inbox);
    let db = tmp.path().join("qc.sqlite");
    let run = |extra: &[&str]| {
        let mut cmd = plateqc_command();
        cmd.args([
            "scan",
            inbox.to_str().unwrap(),
            "--modalities",
            "any",
            "--db",
        ])
        .arg(&db)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .args(extra);
        cmd.output().unwrap()
    };
    let out = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failures give exit 1\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("error            5"), "{stdout}");
    assert!(stdout.contains(db.to_str().unwrap()), "{stdout}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    let out = run(&["--no-fail-on-error"]);
    assert_eq!(out.status.code(), Some(0));

    // Non-dental images are refused by the default policy, with a reason per file.
    let out = plateqc_command()
        .args(["scan", inbox.join("CT_small.dcm").to_str().unwrap(), "--db"])
        .arg(&db)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("modality 'CT' is not accepted"));
}

#[test]
fn cli_inspect_shows_verdict_and_overlays() {
    let tmp = tempfile::tempdir().unwrap();
    let file = pydicom_test_files().join("MR_small.dcm");
    let out = plateqc_command()
        .args([
            "inspect",
            file.to_str().unwrap(),
            "--modalities",
            "any",
            "--db",
        ])
        .arg(tmp.path().join("qc.sqlite"))
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each line is an 18-character label and its value.
    let lines: Vec<(&str, &str)> = stdout
        .lines()
        .filter(|l| l.len() > 18)
        .map(|l| (l[..18].trim(), l[18..].trim()))
        .collect();
    let value = |label: &str| -> &str {
        lines
            .iter()
            .find(|(k, _)| *k == label)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no '{label}' line in\n{stdout}"))
    };
    assert_eq!(value("transfer syntax"), "1.2.840.10008.1.2.1", "{stdout}");
    // Looking at a file records nothing: the history named by --db is not even created.
    assert!(value("recorded").starts_with("no"), "{stdout}");
    assert!(
        !tmp.path().join("qc.sqlite").exists(),
        "inspect created a history"
    );
    let reference = &pydicom_describe(std::slice::from_ref(&file))[0];
    assert!(
        value("image").starts_with(&format!(
            "{} x {},",
            reference["columns"], reference["rows"]
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains("CompressedSamples"),
        "no patient name on screen: {stdout}"
    );

    // What it says is what `scan` records for the same file (here `inspect --record`, which
    // records as scan does), and what it names exists.
    let db = tmp.path().join("qc.sqlite");
    let recorded = succeeds(
        plateqc_command()
            .args([
                "inspect",
                "--record",
                file.to_str().unwrap(),
                "--modalities",
                "any",
                "--db",
            ])
            .arg(&db)
            .arg("--out")
            .arg(tmp.path().join("out")),
    );
    let recorded = String::from_utf8_lossy(&recorded.stdout);
    assert!(
        recorded.contains(&format!("recorded          yes, in {}", db.display())),
        "{recorded}"
    );
    assert_eq!(sql(&db, "SELECT count(*) FROM plates"), "1");
    let row = sql(
        &db,
        "SELECT sop_instance_uid, verdict, unusable_score, threshold, montage_path, overlays
         FROM plates WHERE id = 1",
    );
    let row: Vec<&str> = row.split('|').collect();
    assert_eq!(value("SOP instance"), row[0]);
    let verdict = value("verdict");
    assert!(["usable", "unusable"].contains(&verdict), "{stdout}");
    assert_eq!(verdict, row[1]);
    let (score, threshold) = value("unusable score")
        .strip_suffix(')')
        .and_then(|v| v.split_once(" (threshold "))
        .map(|(s, t)| (s.parse::<f64>().unwrap(), t.parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("score line: {stdout}"));
    assert!(
        (score - row[2].parse::<f64>().unwrap()).abs() < 1e-4,
        "{stdout}"
    );
    assert!(
        (threshold - row[3].parse::<f64>().unwrap()).abs() < 1e-4,
        "{stdout}"
    );
    assert_eq!(verdict == "unusable", score >= threshold, "{stdout}");
    let montage = value("montage");
    assert_eq!(montage, row[4]);
    let shown = image::open(montage).unwrap_or_else(|e| panic!("{montage}: {e}"));
    assert!(
        shown.width() > shown.height(),
        "a montage of panels side by side"
    );
    let overlays: Vec<&str> = lines
        .iter()
        .filter(|(k, _)| k.starts_with("overlay "))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        overlays.len(),
        3,
        "one overlay per exported layer: {stdout}"
    );
    for o in &overlays {
        assert!(row[5].contains(o), "{o} not recorded in {}", row[5]);
        image::open(o).unwrap_or_else(|e| panic!("{o}: {e}"));
    }
}

#[test]
fn a_bad_model_is_refused_with_the_broken_rule() {
    let tmp = tempfile::tempdir().unwrap();
    // A real ONNX file that is not a plateqc model at all.
    let foreign = support_file("not-a-plateqc-model.onnx");
    let out = plateqc_command()
        .args(["check-config", "--model", foreign.to_str().unwrap(), "--db"])
        .arg(tmp.path().join("qc.sqlite"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("breaks the plateqc model contract"),
        "{stderr}"
    );
    assert!(stderr.contains("plateqc.layers"), "{stderr}");
    // And a model path that does not exist.
    let out = plateqc_command()
        .args(["check-config", "--model", "/nonexistent/model.onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.onnx"));
}

/// Every fixture (all transfer syntaxes, photometrics and bit depths) is judged, none fails,
/// and each verdict agrees with the PyTorch reference probability and the model's threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_are_all_judged_like_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.decode.modalities = vec!["IO".into()];
    let engine = Arc::new(Engine::start(cfg).await.unwrap());
    let dir = root().join("tests/fixtures");
    let files = plateqc::ingest::collect_files(std::slice::from_ref(&dir));
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let entries = golden["files"].as_array().unwrap();
    assert_eq!(
        files.len(),
        entries.len(),
        "only the .dcm fixtures are taken"
    );
    let outcomes = pipeline::run(
        engine.clone(),
        files,
        Arc::new(()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let threshold = engine.model().contract.threshold as f64;
    for o in &outcomes {
        let r = &o.record;
        assert_ne!(
            r.verdict,
            Verdict::Error,
            "{}: {:?}",
            r.source_path,
            r.error
        );
        let name = Path::new(&r.source_path)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let e = entries.iter().find(|e| e["file"] == name).unwrap();
        let p_ref = e["probabilities"][1].as_f64().unwrap();
        if (p_ref - threshold).abs() > 1e-3 {
            let want = if p_ref >= threshold {
                Verdict::Unusable
            } else {
                Verdict::Usable
            };
            assert_eq!(
                r.verdict, want,
                "{name}: reference p={p_ref}, ours {:?}",
                r.unusable_score
            );
        }
        if r.verdict == Verdict::Unusable {
            assert!(
                r.reason_code.as_deref().is_some_and(|c| c.len() == 6),
                "{name}: CID 7011 code"
            );
        }
    }
}

/// The example queries in docs/schema.md run against a real history database and return rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_queries_run() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    mixed_inbox(&inbox);
    let engine = Arc::new(Engine::start(config(tmp.path())).await.unwrap());
    let files = plateqc::ingest::collect_files(std::slice::from_ref(&inbox));
    pipeline::run(
        engine.clone(),
        files,
        Arc::new(()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let doc = std::fs::read_to_string(root().join("docs/schema.md")).unwrap();
    let block = doc
        .split("```sql")
        .nth(1)
        .expect("an sql block")
        .split("```")
        .next()
        .unwrap();
    let mut ran = 0;
    for stmt in block.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let sql: String = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if sql.trim().is_empty() {
            continue;
        }
        sqlx::query(&sql)
            .fetch_all(engine.recorder.sqlite_pool().unwrap())
            .await
            .unwrap_or_else(|e| panic!("documented query failed: {e}\n{sql}"));
        ran += 1;
    }
    assert!(ran >= 5, "{ran} queries");
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM plate_verdicts WHERE verdict = 'error'")
            .fetch_one(engine.recorder.sqlite_pool().unwrap())
            .await
            .unwrap();
    assert_eq!(n, 5);
}

/// A file over the size limit is refused before it is read into memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_files_are_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.decode.max_file_bytes = 4096;
    let engine = Arc::new(Engine::start(cfg).await.unwrap());
    let file = pydicom_test_files().join("MR_small.dcm");
    let out = pipeline::run(engine, vec![file], Arc::new(()), CancellationToken::new())
        .await
        .unwrap();
    let r = &out[0].record;
    assert_eq!(r.verdict, Verdict::Error);
    assert_eq!(r.error_kind, Some(FailureKind::TooLarge));
    assert!(r.sha256.is_empty(), "the file was not read");
}

/// `check-config` output gets pasted into tickets: a database password never appears in it.
#[test]
fn check_config_hides_the_database_password() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("plateqc.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\ndb = \"postgres://qc:s3cret-pw@db.invalid:5432/qc\"\nkey_file = \"{}\"\n[record]\nsite = \"north\"\n",
            tmp.path().join("site.key").display()
        ),
    )
    .unwrap();
    let out = plateqc_command()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("postgres://qc:***@db.invalid"), "{stdout}");
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
}

/// Writes `fixture` again through pydicom (the independent writer and reader) without the data
/// set's SOP Instance UID, and with the file meta's copy kept or removed too.
fn without_sop_instance_uid(fixture: &Path, to: &Path, keep_meta: bool) {
    let script = r#"
import sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
del ds.SOPInstanceUID
if sys.argv[3] == "0":
    del ds.file_meta.MediaStorageSOPInstanceUID
ds.save_as(sys.argv[2], enforce_file_format=False)
again = pydicom.dcmread(sys.argv[2])
assert "SOPInstanceUID" not in again and again.pixel_array.size > 0
"#;
    succeeds(
        std::process::Command::new(python())
            .args(["-c", script])
            .arg(fixture)
            .arg(to)
            .arg(if keep_meta { "1" } else { "0" }),
    );
}

/// A JPEG Lossless SV1 plate without its SOP Instance UID (seen in the field): judged like any
/// plate and keyed by its sha256, with a remark that says so; the UID is taken from the file
/// meta information when that still has it.
#[test]
fn a_plate_without_sop_instance_uid_is_judged_by_sha256_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let fixture = root().join("tests/fixtures/15_jpeg_lossless_sv1_u16.dcm");
    without_sop_instance_uid(&fixture, &inbox.join("no_uid.dcm"), false);
    without_sop_instance_uid(&fixture, &inbox.join("meta_uid.dcm"), true);
    let (db, out_dir) = (tmp.path().join("qc.sqlite"), tmp.path().join("out"));
    let out = scan_command(None, &inbox, &db, &out_dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("error            0"), "{stdout}");
    let row = |file: &str| {
        sql(
            &db,
            &format!(
                "SELECT verdict, coalesce(sop_instance_uid, 'NULL'), sha256, remark, overlays \
                 FROM plates WHERE source_path LIKE '%/{file}'"
            ),
        )
    };
    let no_uid = row("no_uid.dcm");
    let f: Vec<&str> = no_uid.split('|').collect();
    assert!(f[0] == "usable" || f[0] == "unusable", "{no_uid}");
    assert_eq!(f[1], "NULL", "{no_uid}");
    assert!(
        f[3].contains("no SOP Instance UID") && f[3].contains("sha256"),
        "{no_uid}"
    );
    // Its overlays are filed under its sha256.
    assert!(
        f[4].contains(&format!("sha256-{}", &f[2][..16])),
        "{no_uid}"
    );
    let meta = row("meta_uid.dcm");
    let g: Vec<&str> = meta.split('|').collect();
    let want_uid = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)",
        ])
        .arg(&fixture)
        .output()
        .unwrap();
    assert_eq!(
        g[1],
        String::from_utf8_lossy(&want_uid.stdout).trim(),
        "{meta}"
    );
    assert!(g[3].contains("file meta"), "{meta}");
    // A plate with its UID has no remark.
    let plain = inbox.join("plain.dcm");
    std::fs::copy(&fixture, &plain).unwrap();
    scan_command(None, &plain, &db, &out_dir).output().unwrap();
    assert_eq!(row("plain.dcm").split('|').nth(3), Some(""));
}

/// A clinic's server must not be profiled from a plate scan: ONNX Runtime's Microsoft build
/// writes a device id under the home folder and tries to send usage telemetry unless told not
/// to, so `scan` with a fresh, writable HOME must leave that folder empty.
#[test]
fn a_scan_writes_nothing_into_the_home_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let plate = std::fs::read_dir(root().join("demo/inbox"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "dcm"))
        .expect("a demo plate");
    std::fs::copy(&plate, inbox.join("plate.dcm")).unwrap();
    succeeds(
        scan_command(
            None,
            &inbox,
            &tmp.path().join("qc.sqlite"),
            &tmp.path().join("out"),
        )
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("ORT_DISABLE_TELEMETRY"),
    );
    let left: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "written into HOME: {left:?}");
}

/// After `calibrate`, `scan` judges with the site's threshold and records it on every plate.
#[test]
fn scan_judges_with_the_sites_calibrated_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("qc.sqlite");
    let inbox = root().join("demo/inbox");
    let config = tmp.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndb = \"{}\"\nout = \"{}\"\n[record]\nsite = \"clinic\"\n",
            db.display(),
            tmp.path().join("out").display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let scan = || {
        let out = plateqc_command()
            .args(["--config", cfg, "scan", inbox.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    scan();
    // Every plate reviewed as the model judged it.
    let rows = sql(&db, "SELECT sop_instance_uid, verdict FROM plates");
    let mut csv = String::from("sop_instance_uid,verdict,by,reason\n");
    for l in rows.lines() {
        let (uid, v) = l.split_once('|').unwrap();
        csv.push_str(&format!("{uid},{v},QA,agreed\n"));
    }
    std::fs::write(tmp.path().join("r.csv"), csv).unwrap();
    succeeds(plateqc_command().args([
        "--config",
        cfg,
        "review-import",
        tmp.path().join("r.csv").to_str().unwrap(),
    ]));
    let out = succeeds(plateqc_command().args([
        "--config",
        cfg,
        "calibrate",
        "--by",
        "QA",
        "--min-usable",
        "5",
        "--min-unusable",
        "5",
        "--format",
        "json",
    ]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = r["chosen"]["threshold"].as_f64().unwrap();
    let own = r["model"]["threshold"]
        .as_f64()
        .expect("the configured model is compared");
    assert!(
        (t - own).abs() > 1e-6,
        "calibrated {t} equals the model's {own}"
    );
    let log = scan();
    assert!(log.contains("calibrated threshold applies"), "{log}");
    let latest = sql(
        &db,
        "SELECT DISTINCT threshold FROM plates WHERE id > (SELECT max(id) / 2 FROM plates)",
    );
    let recorded: f64 = latest.trim().parse().unwrap_or_else(|_| panic!("{latest}"));
    assert!((recorded - t).abs() < 1e-6, "{recorded} vs {t}");
}

/// The AAPM Report 305 elements a plate carries (body part, view, anatomic region, exposure
/// and deviation index) are read from its header into the history; a plate without them
/// records nothing for them.
#[test]
fn the_view_body_part_and_exposure_indicator_of_a_plate_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let demo: Vec<PathBuf> = crate::support::daemon::files_under(&root().join("demo/inbox"))
        .into_iter()
        .take(2)
        .collect();
    let tagged = inbox.join("tagged.dcm");
    let mut py = std::process::Command::new(python());
    py.args([
        "-c",
        "import sys, pydicom\n\
         from pydicom.dataset import Dataset\n\
         from pydicom.uid import generate_uid\n\
         ds = pydicom.dcmread(sys.argv[1])\n\
         ds.SOPInstanceUID = generate_uid()\n\
         ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID\n\
         ds.BodyPartExamined = 'JAW'\n\
         ds.ViewPosition = 'LL'\n\
         region = Dataset()\n\
         region.CodeValue = 'T-D1213'\n\
         region.CodingSchemeDesignator = 'SRT'\n\
         region.CodeMeaning = 'Mandible'\n\
         ds.AnatomicRegionSequence = [region]\n\
         ds.ExposureIndex = 512.5\n\
         ds.DeviationIndex = -0.75\n\
         ds.save_as(sys.argv[2])",
    ])
    .arg(&demo[0])
    .arg(&tagged);
    stdout_of(py, "pydicom, tagging a plate");
    std::fs::copy(&demo[1], inbox.join("plain.dcm")).unwrap();
    let db = tmp.path().join("qc.sqlite");
    succeeds(&mut scan_command(
        None,
        &inbox,
        &db,
        &tmp.path().join("out"),
    ));
    let row = |name: &str| {
        sql(
            &db,
            &format!(
                "SELECT body_part, view_position, anatomic_region, exposure_index, deviation_index
                   FROM qc_images WHERE source_path LIKE '%{name}'"
            ),
        )
    };
    assert_eq!(row("tagged.dcm"), "JAW|LL|Mandible|512.5|-0.75");
    // The plain demo plate: what its header carries (pydicom's reading), no exposure indicator.
    let mut py = std::process::Command::new(python());
    py.args([
        "-c",
        "import sys, pydicom\n\
         ds = pydicom.dcmread(sys.argv[1])\n\
         r = ds.get('AnatomicRegionSequence')\n\
         print(ds.get('BodyPartExamined', ''), ds.get('ViewPosition', ''),\n\
               r[0].CodeMeaning if r else '', ds.get('ExposureIndex', ''), sep='|')",
    ])
    .arg(&demo[1]);
    let expected = String::from_utf8(stdout_of(py, "pydicom")).unwrap();
    assert_eq!(format!("{}|", expected.trim()), row("plain.dcm"));
    assert!(
        row("plain.dcm").ends_with("||"),
        "no exposure indicator made up"
    );
}

/// `infer.review_unfamiliar`: a plate whose exported feature distance is at or above the
/// model's `plateqc.feature_distance_threshold` is recorded with its verdict, `needs_review`
/// and the reason `unfamiliar`, and one below it is not; the distance is recorded for every
/// judged plate. Judged on non-dental radiographs (pydicom's test files) beside the fixtures;
/// which of them the model finds unfamiliar is the model's business, so the test reads the
/// threshold from the model and checks the rule on each plate, and needs one on each side.
#[test]
fn an_unfamiliar_plate_waits_for_review_when_the_site_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    let src = pydicom_test_files();
    for name in [
        "693_J2KI.dcm",
        "CT_small.dcm",
        "MR_small.dcm",
        "JPEG2000.dcm",
    ] {
        std::fs::copy(src.join(name), inbox.join(name)).unwrap();
    }
    for name in ["01_explicit_le_u16_rescale.dcm", "06_rle_s12.dcm"] {
        std::fs::copy(root().join("tests/fixtures").join(name), inbox.join(name)).unwrap();
    }
    let cfg = dir.path().join("plateqc.toml");
    std::fs::write(
        &cfg,
        "[infer]\nreview_unfamiliar = true\nreview_margin = 0.0\n",
    )
    .unwrap();
    let db = dir.path().join("qc.sqlite");
    succeeds(
        scan_command(Some(&cfg), &inbox, &db, &dir.path().join("out"))
            .args(["--modalities", "any"]),
    );
    let model =
        plateqc::infer::Model::load(&Config::default().paths.model, None, &Default::default())
            .unwrap();
    let limit = model
        .contract
        .feature_distance_threshold
        .expect("the shipped model exports feature_distance") as f64;
    let rows = sql(
        &db,
        "SELECT feature_distance, needs_review, coalesce(review_reason, '-') FROM plates
          WHERE verdict <> 'error'",
    );
    let (mut over, mut under) = (0, 0);
    for line in rows.lines() {
        let v: Vec<&str> = line.split('|').collect();
        let d: f64 = v[0]
            .parse()
            .unwrap_or_else(|_| panic!("no distance: {line}"));
        if d >= limit {
            over += 1;
            assert_eq!(&v[1..], ["1", "unfamiliar"], "{line} (threshold {limit})");
        } else {
            under += 1;
            assert_eq!(&v[1..], ["0", "-"], "{line} (threshold {limit})");
        }
    }
    assert!(
        over > 0 && under > 0,
        "plates on both sides of {limit}: {rows}"
    );
}
