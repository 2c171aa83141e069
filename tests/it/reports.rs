//! Reject analysis, reviewer overrides, history and the labelled export, each run on a real
//! SQLite file and on a real PostgreSQL server (tests/it/pg.rs) through the real binary, with
//! the same assertions; the two backends must also give byte-identical JSON reports.

use crate::support::cli::{ok, plateqc, plateqc_command};
use crate::support::daemon::{files_under, Daemon};
use crate::support::dicom::free_port;
use crate::support::pg;
use crate::support::*;
use plateqc::config::Config;
use plateqc::outcome::Verdict;
use plateqc::pipeline::{self, Engine};
use plateqc::record::{Finding, JobStart, PlateRecord, Recorder};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The database argument of each backend: a fresh SQLite file and a fresh PostgreSQL database.
async fn backends(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("sqlite", dir.join("sqlite/qc.sqlite").display().to_string()),
        ("postgres", pg::fresh_database().await),
    ]
}

fn report_json(db: &str, extra: &[&str]) -> Value {
    let mut args = vec!["report", "--db", db, "--format", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

fn uid(plate: &str, i: usize) -> String {
    format!("1.2.826.0.1.3680043.9.7777.{}.{i}", plate.as_bytes()[6])
}

/// One judged scan of a physical plate on day 2026-03-01 + `i`.
fn scan(plate: &str, station: &str, i: usize, finding: Option<(&str, &str)>) -> PlateRecord {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + chrono::Days::new(i as u64);
    PlateRecord {
        run_id: "test".into(),
        processed_at: "2026-11-26T10:00:00.000Z".into(),
        source_path: format!("/nowhere/{plate}-{i}.dcm"),
        sha256: format!("{plate}-{i}"),
        size_bytes: 1,
        sop_instance_uid: Some(uid(plate, i)),
        acquisition_datetime: Some(format!("{}101500", day.format("%Y%m%d"))),
        station_name: Some(station.into()),
        operator: Some(format!("OP^{station}")),
        device_serial: Some(format!("DEV-{station}")),
        plate_identifier: Some(plate.into()),
        verdict: if finding.is_some() {
            Verdict::Unusable
        } else {
            Verdict::Usable
        },
        unusable_score: Some(if finding.is_some() { 0.9 } else { 0.1 }),
        threshold: Some(0.5),
        reason_code: finding.map(|f| f.1.to_string()),
        model_version: Some("t".into()),
        findings: finding
            .map(|(t, c)| {
                vec![Finding {
                    artifact_type: t.into(),
                    reason_code: c.into(),
                    score: 0.9,
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// PLATE-A (station ST-1): 25 scans, scratched on the 5 oldest and on 10 of its last 20.
/// PLATE-B (ST-2): 20 scans, scratched on 8. PLATE-C (ST-2): 10 scans, cone cut on 2.
/// Plus one file that failed, one re-scan of PLATE-A's latest image, and PLATE-C's last scan
/// without overlays.
async fn record_scenario(db: &str) {
    let rec = Recorder::open_as(Path::new(db), "north").await.unwrap();
    let scratch = Some(("scratch", "111214"));
    for i in 0..25 {
        let hit = i < 5 || (i % 2 == 1 && i < 24);
        rec.insert(&scan(
            "PLATE-A",
            "ST-1",
            i,
            if hit { scratch } else { None },
        ))
        .await
        .unwrap();
    }
    for i in 0..20 {
        rec.insert(&scan(
            "PLATE-B",
            "ST-2",
            i,
            if i < 8 { scratch } else { None },
        ))
        .await
        .unwrap();
    }
    for i in 0..10 {
        let cut = (i >= 8).then_some(("cone_cut", "111209"));
        let mut s = scan("PLATE-C", "ST-2", i, cut);
        if i == 9 {
            s.overlay_error = Some("cannot write overlay: disk full".into());
        }
        rec.insert(&s).await.unwrap();
    }
    rec.insert(&scan("PLATE-A", "ST-1", 24, None))
        .await
        .unwrap();
    rec.insert(&PlateRecord {
        run_id: "test".into(),
        processed_at: "2026-03-02T08:00:00.000Z".into(),
        source_path: "/nowhere/broken.dcm".into(),
        verdict: Verdict::Error,
        error: Some("not DICOM".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    rec.close().await;
}

fn group<'a>(report: &'a Value, section: &str, key: &str) -> &'a Value {
    report[section]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("{section} has no {key}: {}", report[section]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_answers_how_many_why_where_and_which_plates_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for (backend, db) in backends(tmp.path()).await {
        record_scenario(&db).await;
        let before = report_json(&db, &[]);
        assert_eq!(
            before["totals"]["images"], 55,
            "{backend}: a re-scan counts once"
        );
        assert_eq!(before["totals"]["rejected"], 25, "{backend}");
        assert_eq!(before["errors"], 1, "{backend}");
        assert_eq!(before["without_overlays"], 1, "{backend}");
        assert_eq!(
            report_json(&db, &["--station", "ST-1"])["without_overlays"],
            0,
            "{backend}: PLATE-C is scanned at ST-2"
        );
        let worn: Vec<&str> = before["plates_to_replace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["plate_identifier"].as_str().unwrap())
            .collect();
        assert_eq!(worn, ["PLATE-A"], "{backend}: 10 of 20 yes, 8 of 20 no");
        assert_eq!(before["plates_to_replace"][0]["hits"], 10, "{backend}");
        assert_eq!(before["plates_to_replace"][0]["recent_scans"], 20);

        // Reviewers: one scratched PLATE-A scan is usable after all, one PLATE-C scan is not.
        ok(&[
            "override",
            &uid("PLATE-A", 23),
            "--verdict",
            "usable",
            "--by",
            "Dr. Q",
            "--reason",
            "scratch outside the diagnostic area",
            "--db",
            &db,
        ]);
        ok(&[
            "override",
            &uid("PLATE-C", 0),
            "--verdict",
            "unusable",
            "--by",
            "Dr. Q",
            "--reason",
            "motion the model missed",
            "--db",
            &db,
        ]);
        let r = report_json(&db, &[]);
        let t = &r["totals"];
        assert_eq!(t["images"], 55, "{backend}");
        assert_eq!(t["rejected"], 25, "{backend}: one out, one in");
        assert_eq!(t["model_rejected"], 25, "{backend}");
        assert_eq!(t["overridden"], 2, "{backend}");
        assert_eq!(t["overturned"], 2, "{backend}");
        assert_eq!(t["reject_pct"], 45.5, "{backend}");
        let st1 = group(&r, "by_station", "ST-1");
        assert_eq!(
            (st1["images"].as_i64(), st1["rejected"].as_i64()),
            (Some(25), Some(14))
        );
        let st2 = group(&r, "by_station", "ST-2");
        assert_eq!(
            (st2["images"].as_i64(), st2["rejected"].as_i64()),
            (Some(30), Some(11))
        );
        assert_eq!(group(&r, "by_operator", "OP^ST-2")["rejected"], 11);
        assert_eq!(group(&r, "by_device", "DEV-ST-1")["overturned"], 1);
        assert_eq!(group(&r, "by_plate", "PLATE-A")["rejected"], 14);
        assert_eq!(group(&r, "by_site", "north")["images"], 55);
        assert_eq!(group(&r, "by_day", "2026-03-01")["images"], 3);
        // 2026-03-01 is a Sunday: the end of ISO week 9; Monday starts week 10.
        assert_eq!(group(&r, "by_week", "2026-W09")["images"], 3, "{backend}");
        assert_eq!(group(&r, "by_week", "2026-W10")["images"], 21, "{backend}");
        // Trend: W09 has 3 of 3 rejected; W10 (days 1-7) PLATE-A 6 + PLATE-B 7 of 21 images.
        assert_eq!(r["trend"][0]["iso_week"], "2026-W09");
        assert_eq!(r["trend"][0]["reject_pct"], 100.0);
        assert!(r["trend"][0]["change_pct"].is_null());
        assert_eq!(r["trend"][1]["iso_week"], "2026-W10");
        assert_eq!(r["trend"][1]["reject_pct"], 61.9, "{backend}");
        assert_eq!(r["trend"][1]["change_pct"], -38.1, "{backend}");
        let reasons = &r["reasons"];
        assert_eq!(reasons[0]["artifact_type"], "scratch");
        assert_eq!(
            reasons[0]["rejected"], 22,
            "{backend}: the overturned scan no longer counts"
        );
        assert_eq!(reasons[1]["artifact_type"], "cone_cut");
        assert_eq!(reasons[1]["reason_code"], "111209");
        assert_eq!(
            r["rejected_without_type"], 1,
            "{backend}: the reviewer's own reject"
        );
        let codes = &r["reason_codes"];
        assert_eq!(codes[0]["reason_code"], "111214");
        assert_eq!(codes[0]["rejected"], 22);
        assert_eq!(codes[0]["meaning"], "Detector artifact(s)");
        // The override removed one of PLATE-A's scratches from its last 20 scans: 9 of 20.
        assert_eq!(r["plates_to_replace"][0]["hits"], 9, "{backend}");
        let strict = report_json(&db, &["--wear-hits", "10"]);
        assert_eq!(strict["plates_to_replace"].as_array().unwrap().len(), 0);
        let loose = report_json(&db, &["--wear-hits", "8"]);
        assert_eq!(loose["plates_to_replace"].as_array().unwrap().len(), 2);

        // Filters.
        let f = report_json(&db, &["--station", "ST-2"]);
        assert_eq!(
            (
                f["totals"]["images"].as_i64(),
                f["totals"]["rejected"].as_i64()
            ),
            (Some(30), Some(11))
        );
        let f = report_json(&db, &["--since", "2026-03-21"]);
        assert_eq!(
            (
                f["totals"]["images"].as_i64(),
                f["totals"]["rejected"].as_i64()
            ),
            (Some(5), Some(1)),
            "{backend}"
        );
        let f = report_json(&db, &["--until", "2026-03-05"]);
        assert_eq!(
            (
                f["totals"]["images"].as_i64(),
                f["totals"]["rejected"].as_i64()
            ),
            (Some(15), Some(11)),
            "{backend}"
        );
        let f = report_json(&db, &["--plate", "PLATE-B", "--operator", "OP^ST-2"]);
        assert_eq!(f["totals"]["images"], 20);
        assert_eq!(f["plates_to_replace"].as_array().unwrap().len(), 0);
        let bad = plateqc(&["report", "--db", &db, "--since", "1 March"]);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("expected a date"));

        // The other formats say the same.
        let table = ok(&["report", "--db", &db]);
        assert!(
            table.contains("images 55   rejected 25 (45.5%, 95% CI 33.0-58.5%)"),
            "{table}"
        );
        assert!(
            table.contains("overall: INVESTIGATE: above the upper level"),
            "{table}"
        );
        assert!(
            table.contains("PLATE-A") && table.contains("9 of last 20 scans"),
            "{table}"
        );
        let csv = ok(&["report", "--db", &db, "--format", "csv"]);
        assert!(
            csv.lines()
                .any(|l| l == "total,all,,55,25,45.5,2,2,33.0,58.5,investigate_high"),
            "{csv}"
        );
        assert!(
            csv.lines()
                .any(|l| l == "station,ST-1,,25,14,56.0,1,1,37.1,73.3,too_few"),
            "{csv}"
        );
        assert!(
            csv.lines()
                .any(|l| l.starts_with("replace_plate,PLATE-A,scratch,20,9")),
            "{csv}"
        );
        let page = tmp.path().join(format!("review-{backend}.html"));
        let out = plateqc(&[
            "report",
            "--db",
            &db,
            "--html",
            page.to_str().unwrap(),
            "--limit",
            "40",
        ]);
        assert!(out.status.success(), "{backend}");
        let html = std::fs::read_to_string(&page).unwrap();
        assert_eq!(html.matches("<tr class=\"plate\"").count(), 40, "{backend}");
        assert!(html.contains("PLATE-A") && html.contains("scratch outside the diagnostic area"));
        reports.push((backend, r));
    }
    // Same answers from both databases, to the byte.
    let (a, b) = (&reports[0].1, &reports[1].1);
    assert_eq!(
        serde_json::to_string_pretty(a).unwrap(),
        serde_json::to_string_pretty(b).unwrap(),
        "SQLite and PostgreSQL disagree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_are_append_only_and_history_shows_everything_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db) in backends(tmp.path()).await {
        record_scenario(&db).await;
        let a24 = uid("PLATE-A", 24);
        let unknown = plateqc(&[
            "override",
            "1.2.3.4.5",
            "--verdict",
            "usable",
            "--by",
            "X",
            "--reason",
            "r",
            "--db",
            &db,
        ]);
        assert!(!unknown.status.success(), "{backend}");
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("no judged plate"));
        let bad = plateqc(&[
            "override",
            &a24,
            "--verdict",
            "maybe",
            "--by",
            "X",
            "--reason",
            "r",
            "--db",
            &db,
        ]);
        assert!(
            !bad.status.success(),
            "{backend}: verdict is usable or unusable"
        );
        let blank = plateqc(&[
            "override",
            &a24,
            "--verdict",
            "unusable",
            "--by",
            " ",
            "--reason",
            "r",
            "--db",
            &db,
        ]);
        assert!(!blank.status.success(), "{backend}: who is required");
        for (verdict, reason) in [
            ("unusable", "roller marks"),
            ("usable", "second opinion: fine"),
        ] {
            ok(&[
                "override",
                &a24,
                "--verdict",
                verdict,
                "--by",
                "Dr. Q",
                "--reason",
                reason,
                "--db",
                &db,
            ]);
        }
        let h: Value =
            serde_json::from_str(&ok(&["history", &a24, "--db", &db, "--format", "json"])).unwrap();
        assert_eq!(
            h["judgements"].as_array().unwrap().len(),
            2,
            "{backend}: scan and re-scan"
        );
        let o = h["overrides"].as_array().unwrap();
        assert_eq!(o.len(), 2, "{backend}");
        assert_eq!(o[0]["verdict"], "unusable");
        assert_eq!(o[0]["reviewer"], "Dr. Q");
        assert_eq!(o[0]["model_verdict"], "usable");
        assert_eq!(o[1]["reason"], "second opinion: fine");
        assert!(o[1]["created_at"].as_str().unwrap().starts_with("20"));
        assert_eq!(o[1]["site"], plateqc::record::default_site().as_str());
        assert_eq!(h["effective_verdict"], "usable");
        let table = ok(&["history", &a24, "--db", &db]);
        assert!(
            table.contains("override unusable") && table.contains("effective verdict: usable"),
            "{table}"
        );
        let none = plateqc(&["history", "9.9.9", "--db", &db]);
        assert_eq!(none.status.code(), Some(1), "{backend}: nothing recorded");

        // The history table refuses edits and deletions.
        let rec = Recorder::open_as(Path::new(&db), "north").await.unwrap();
        let upd = "UPDATE overrides SET verdict = 'unusable'";
        let del = "DELETE FROM overrides";
        for sql in [upd, del] {
            let res =
                plateqc::on_pool!(rec.pool(), p => sqlx::query(sql).execute(p).await.map(|_| ()));
            let err = res.expect_err(sql).to_string();
            assert!(err.contains("append-only"), "{backend}: {err}");
        }
        rec.close().await;
    }
}

/// Real DICOM plates judged by the real pipeline into each backend; history by file, re-scan,
/// and the labelled export with checked copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_plates_history_by_file_and_labelled_export_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let mut files = Vec::new();
    for i in 0..6 {
        let name = format!("plate_{i:02}.dcm");
        std::fs::copy(root().join("demo/inbox").join(&name), inbox.join(&name)).unwrap();
        files.push(inbox.join(&name));
    }
    for (backend, db) in backends(tmp.path()).await {
        let mut cfg = Config::default();
        cfg.paths.db = PathBuf::from(&db);
        cfg.paths.out = tmp.path().join(format!("out-{backend}"));
        cfg.paths.key_file = Some(tmp.path().join("site.key"));
        cfg.record.site = Some("clinic-north".into());
        for round in 0..2 {
            let engine = Arc::new(Engine::start(cfg.clone()).await.unwrap());
            let out = pipeline::run(
                engine.clone(),
                files.clone(),
                Arc::new(()),
                CancellationToken::new(),
            )
            .await
            .unwrap();
            assert!(
                out.iter().all(|o| o.record.verdict != Verdict::Error),
                "{backend} round {round}"
            );
            engine.recorder.clone().close().await;
        }
        let r = report_json(&db, &[]);
        assert_eq!(
            r["totals"]["images"], 6,
            "{backend}: scanned twice, counted once"
        );
        assert_eq!(group(&r, "by_site", "clinic-north")["images"], 6);

        // History by file: matched by the UID in its header and by its sha256.
        let h: Value = serde_json::from_str(&ok(&[
            "history",
            files[0].to_str().unwrap(),
            "--db",
            &db,
            "--format",
            "json",
        ]))
        .unwrap();
        let j = h["judgements"].as_array().unwrap();
        assert_eq!(j.len(), 2, "{backend}");
        let uid0 = j[0]["sop_instance_uid"].as_str().unwrap().to_string();
        assert!(j.iter().all(|x| x["site"] == "clinic-north"));
        let model_said = j[1]["verdict"].as_str().unwrap().to_string();
        let flipped = if model_said == "usable" {
            "unusable"
        } else {
            "usable"
        };
        ok(&[
            "override",
            &uid0,
            "--verdict",
            flipped,
            "--by",
            "QA",
            "--reason",
            "checked",
            "--db",
            &db,
        ]);
        let h1: Value = serde_json::from_str(&ok(&[
            "history",
            files[1].to_str().unwrap(),
            "--db",
            &db,
            "--format",
            "json",
        ]))
        .unwrap();
        let uid1 = h1["sop_instance_uids"][0].as_str().unwrap().to_string();
        ok(&[
            "override",
            &uid1,
            "--verdict",
            "unusable",
            "--by",
            "QA",
            "--reason",
            "cone cut",
            "--db",
            &db,
        ]);

        let export = tmp.path().join(format!("labels-{backend}"));
        ok(&["export-labels", export.to_str().unwrap(), "--db", &db]);
        let labels = std::fs::read_to_string(export.join("labels.csv")).unwrap();
        let lines: Vec<&str> = labels.lines().collect();
        assert_eq!(
            lines[0],
            "file,sop_instance_uid,sha256,label,model_verdict,unusable_score,model_version,reviewer,reason,overridden_at,review"
        );
        assert_eq!(lines.len(), 3, "{backend}: {labels}");
        for line in &lines[1..] {
            let f: Vec<&str> = line.split(',').collect();
            let copy = export.join(f[0]);
            let bytes = std::fs::read(&copy).unwrap();
            use sha2::Digest;
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                f[2],
                "{backend}: copy is the judged file"
            );
            assert!(f[1] == uid0 || f[1] == uid1);
            if f[1] == uid0 {
                assert_eq!((f[3], f[4]), (flipped, model_said.as_str()));
            } else {
                assert_eq!(f[3], "unusable");
            }
            assert_eq!(f[7], "QA");
        }
        // A labelled plate whose file has gone is reported, not silently dropped.
        std::fs::rename(&files[1], tmp.path().join("moved.dcm")).unwrap();
        let again = plateqc(&[
            "export-labels",
            tmp.path().join("again").to_str().unwrap(),
            "--db",
            &db,
        ]);
        assert_eq!(again.status.code(), Some(1), "{backend}");
        assert!(String::from_utf8_lossy(&again.stderr).contains(&uid1));
        std::fs::rename(tmp.path().join("moved.dcm"), &files[1]).unwrap();
    }
}

/// The watch journal in a shared database: each node sees only its own files; duplicates are
/// per site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_rows_belong_to_their_node_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db) in backends(tmp.path()).await {
        let north = Recorder::open_as(Path::new(&db), "north").await.unwrap();
        let south = Recorder::open_as(Path::new(&db), "south").await.unwrap();
        let a = Path::new("/inbox/a.dcm");
        let n = north.start_job(a, "aaa", 1, 3, "run-1").await.unwrap();
        let JobStart::Process { job_id, .. } = n else {
            panic!("{backend}: {n:?}")
        };
        let s = south.start_job(a, "aaa", 1, 3, "run-1").await.unwrap();
        assert!(
            matches!(s, JobStart::Process { attempts: 1, .. }),
            "{backend}: same path, other node: {s:?}"
        );
        let mut r = scan("PLATE-A", "ST-1", 0, None);
        r.sha256 = "aaa".into();
        north.finish_job(job_id, &r).await.unwrap();
        let again = north
            .start_job(Path::new("/inbox/b.dcm"), "aaa", 1, 3, "run-1")
            .await
            .unwrap();
        assert!(
            matches!(again, JobStart::Duplicate { .. }),
            "{backend}: {again:?}"
        );
        // South's open job is still its own unfinished work, not a duplicate: taken again by
        // the same run, or, by a later run, a suspect to be judged alone.
        let s2 = south.start_job(a, "aaa", 1, 3, "run-1").await.unwrap();
        assert!(
            matches!(s2, JobStart::Process { attempts: 2, .. }),
            "{backend}: {s2:?}"
        );
        let s3 = south.start_job(a, "aaa", 1, 3, "run-2").await.unwrap();
        assert!(
            matches!(s3, JobStart::Suspect { alone_runs: 0, .. }),
            "{backend}: {s3:?}"
        );
        north.close().await;
        south.close().await;
    }
}

/// Every query in docs/reports.md runs on both backends and returns rows on the scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_report_queries_run_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let doc = std::fs::read_to_string(root().join("docs/reports.md")).unwrap();
    let mut queries = Vec::new();
    for block in doc.split("```sql").skip(1) {
        let block = block.split("```").next().unwrap();
        for stmt in block.split(';') {
            let sql: String = stmt
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if !sql.trim().is_empty() {
                queries.push(sql);
            }
        }
    }
    assert!(queries.len() >= 12, "{} queries documented", queries.len());
    for (backend, db) in backends(tmp.path()).await {
        record_scenario(&db).await;
        ok(&[
            "override",
            &uid("PLATE-A", 23),
            "--verdict",
            "usable",
            "--by",
            "Dr. Q",
            "--reason",
            "ok",
            "--db",
            &db,
        ]);
        let rec = Recorder::open_as(Path::new(&db), "north").await.unwrap();
        for sql in &queries {
            let rows = plateqc::on_pool!(rec.pool(), p => sqlx::query(sql).fetch_all(p).await.map(|r| r.len()))
                .unwrap_or_else(|e| panic!("{backend}: documented query failed: {e}\n{sql}"));
            assert!(rows > 0, "{backend}: no rows from\n{sql}");
        }
        rec.close().await;
    }
}

/// Each site counts the images it judged: the same instance judged at two sites counts at
/// both, a re-scan at one site still replaces that site's earlier judgement, and another
/// site's later traffic changes nothing in a site's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_site_counts_the_images_it_judged() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db) in backends(tmp.path()).await {
        let north = Recorder::open_as(Path::new(&db), "north").await.unwrap();
        let south = Recorder::open_as(Path::new(&db), "south").await.unwrap();
        let scratch = Some(("scratch", "111214"));
        // North: X rejected, Y usable then re-scanned usable.
        north
            .insert(&scan("PLATE-X", "ST-N", 0, scratch))
            .await
            .unwrap();
        north
            .insert(&scan("PLATE-Y", "ST-N", 0, None))
            .await
            .unwrap();
        let before = report_json(&db, &["--site", "north"]);
        north
            .insert(&scan("PLATE-Y", "ST-N", 0, None))
            .await
            .unwrap();
        // South judges the same X later, as usable.
        south
            .insert(&scan("PLATE-X", "ST-S", 0, None))
            .await
            .unwrap();
        let n = report_json(&db, &["--site", "north"]);
        assert_eq!(n["totals"]["images"], 2, "{backend}: {n}");
        assert_eq!(n["totals"]["rejected"], 1, "{backend}: {n}");
        assert_eq!(
            n["totals"], before["totals"],
            "{backend}: south's traffic changed north"
        );
        let s = report_json(&db, &["--site", "south"]);
        assert_eq!(s["totals"]["images"], 1, "{backend}: {s}");
        assert_eq!(s["totals"]["rejected"], 0, "{backend}: {s}");
        let all = report_json(&db, &[]);
        assert_eq!(all["totals"]["images"], 3, "{backend}: {all}");
        north.close().await;
        south.close().await;
    }
}

/// A report over everything or one site, with its filter left out: on PostgreSQL these read
/// migration 0014's kept tallies, and the same report with a date filter that excludes
/// nothing counts the images instead.
fn kept_and_counted(db: &str, site: &[&str]) -> (Value, Value) {
    let mut counted_args = site.to_vec();
    counted_args.extend_from_slice(&["--since", "1900-01-01"]);
    let (mut kept, mut counted) = (report_json(db, site), report_json(db, &counted_args));
    kept.as_object_mut().unwrap().remove("filter");
    counted.as_object_mut().unwrap().remove("filter");
    (kept, counted)
}

fn override_verdict(db: &str, uid: &str, verdict: &str) {
    ok(&[
        "override",
        uid,
        "--verdict",
        verdict,
        "--by",
        "QA",
        "--reason",
        "looked",
        "--db",
        db,
    ]);
}

/// PostgreSQL keeps running tallies of the judged images (migration 0014) for reports over
/// everything or one site: after re-scans, judgements of one image at two sites, overrides
/// that turn images either way (and one turned back), an error, an administrator's correction
/// of a station name and a deleted judgement, every such report equals counting the images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_tallies_agree_with_counting_the_images_on_postgres() {
    let url = pg::fresh_database().await;
    record_scenario(&url).await;
    let south = Recorder::open_as(Path::new(&url), "south").await.unwrap();
    let scratch = Some(("scratch", "111214"));
    for i in 0..6 {
        // PLATE-A's images judged again at south, half of them found scratched there.
        south
            .insert(&scan(
                "PLATE-A",
                "ST-S",
                i,
                (i % 2 == 0).then_some(scratch).flatten(),
            ))
            .await
            .unwrap();
    }
    let check = |when: &str| {
        for site in [&[][..], &["--site", "north"][..], &["--site", "south"][..]] {
            let (kept, counted) = kept_and_counted(&url, site);
            assert_eq!(kept, counted, "{when}, {site:?}");
        }
    };
    check("recorded");
    let all = report_json(&url, &[]);
    assert_eq!(all["totals"]["images"], 55 + 6, "{all}");
    // Overrides at both sites' image, a rejected one made usable, a usable one rejected, and
    // one turned and turned back.
    override_verdict(&url, &uid("PLATE-A", 0), "usable");
    override_verdict(&url, &uid("PLATE-A", 2), "usable");
    override_verdict(&url, &uid("PLATE-B", 15), "unusable");
    override_verdict(&url, &uid("PLATE-C", 3), "unusable");
    override_verdict(&url, &uid("PLATE-C", 3), "usable");
    check("overridden");
    let overridden = report_json(&url, &["--site", "south"]);
    assert_eq!(overridden["totals"]["overridden"], 2, "{overridden}");
    // Re-scans after the overrides: the later judgement counts, with the image's override.
    south
        .insert(&scan("PLATE-A", "ST-S", 0, scratch))
        .await
        .unwrap();
    south.close().await;
    check("re-scanned");
    // What an administrator might do by hand: rename a station, delete a judgement.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE plates SET station_name = 'ST-2b' WHERE station_name = 'ST-2' AND id % 2 = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM plate_artifacts WHERE plate_row = (SELECT max(id) FROM plates WHERE plate_identifier = 'PLATE-B')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM plates WHERE id = (SELECT max(id) FROM plates WHERE plate_identifier = 'PLATE-B')")
        .execute(&pool)
        .await
        .unwrap();
    check("edited by hand");
    // The remedy the report names, should the tallies ever disagree: a recount.
    sqlx::query("UPDATE report_tallies SET images = images + 5 WHERE dim = 1")
        .execute(&pool)
        .await
        .unwrap();
    let (kept, counted) = kept_and_counted(&url, &[]);
    assert_ne!(kept, counted, "the tallies are what the report reads");
    sqlx::query("SELECT report_tallies_recount()")
        .execute(&pool)
        .await
        .unwrap();
    check("recounted");
    pool.close().await;
}

/// Two processes recording the same images at the same site at once on PostgreSQL (a `scan`
/// beside that site's daemon), in batches holding them in opposite orders: every image ends
/// with exactly one judgement that counts (none left unmarked twice by overlapping
/// transactions), and neither batch fails on a deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_recordings_of_one_image_count_it_once_on_postgres() {
    let url = pg::fresh_database().await;
    let first = Recorder::open_as(Path::new(&url), "north").await.unwrap();
    let second = Recorder::open_as(Path::new(&url), "north").await.unwrap();
    let pool = match first.pool() {
        plateqc::record::Pool::Postgres(p) => p.clone(),
        _ => unreachable!(),
    };
    let forward: Vec<PlateRecord> = (0..40).map(|i| scan("PLATE-R", "ST-1", i, None)).collect();
    let backward: Vec<PlateRecord> = forward.iter().rev().cloned().collect();
    // Same order first (without the lock: both judgements of an image stay unmarked), then
    // opposite orders (without sorted locks: a deadlock fails one batch).
    for (phase, other) in [("same order", &forward), ("opposite orders", &backward)] {
        for _round in 0..3 {
            let (a, b) = tokio::join!(first.insert_many(&forward), second.insert_many(other));
            a.unwrap_or_else(|e| panic!("{phase}: {e}"));
            b.unwrap_or_else(|e| panic!("{phase}: {e}"));
        }
        let counted: Vec<(String, i64)> = sqlx::query_as(
            "SELECT sop_instance_uid, sum(1 - superseded) FROM plates
              GROUP BY sop_instance_uid HAVING sum(1 - superseded) <> 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(
            counted.is_empty(),
            "{phase}: images not counted once: {counted:?}"
        );
    }
    let (judgements,): (i64,) = sqlx::query_as("SELECT count(*) FROM plates")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(judgements, 40 * 12);
    let report = report_json(&url, &["--site", "north"]);
    assert_eq!(report["totals"]["images"], 40, "{report}");
    let (kept, counted) = kept_and_counted(&url, &[]);
    assert_eq!(
        kept, counted,
        "the kept tallies after overlapping recordings"
    );
    first.close().await;
    second.close().await;
}

/// Two sites' daemons record into one PostgreSQL database: each judges and routes its own
/// files, the same content at both sites is judged at both (not a duplicate), and every row
/// says which site wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_daemons_share_one_postgres_database() {
    let tmp = tempfile::tempdir().unwrap();
    let url = pg::fresh_database().await;
    let mut daemons = Vec::new();
    let mut inboxes = Vec::new();
    for site in ["north", "south"] {
        let dir = tmp.path().join(site);
        let (child, _log) = pg_daemon(&dir, &url, site, "127.0.0.1:0");
        daemons.push(Daemon { child });
        inboxes.push(dir.join("inbox"));
    }
    let demo = root().join("demo/inbox");
    let put = |inbox: &Path, name: &str| {
        // Written under a temporary name and renamed in, as a scanner would.
        let part = inbox.join(format!("{name}.part"));
        std::fs::copy(demo.join(name), &part).unwrap();
        std::fs::rename(&part, inbox.join(name)).unwrap();
    };
    let rec = Recorder::open_as(Path::new(&url), "test").await.unwrap();
    let pool = match rec.pool() {
        plateqc::record::Pool::Postgres(p) => p.clone(),
        _ => unreachable!(),
    };
    let wait_routed = |n: i64| {
        let pool = pool.clone();
        let tmp = tmp.path().to_path_buf();
        async move {
            let started = std::time::Instant::now();
            loop {
                let (routed,): (i64,) =
                    sqlx::query_as("SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                if routed == n {
                    return;
                }
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(90),
                    "timed out: {routed} of {n} files routed; logs: {}{}",
                    std::fs::read_to_string(tmp.join("north/daemon.log")).unwrap_or_default(),
                    std::fs::read_to_string(tmp.join("south/daemon.log")).unwrap_or_default()
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    for name in ["plate_00.dcm", "plate_01.dcm", "plate_02.dcm"] {
        put(&inboxes[0], name);
    }
    wait_routed(3).await;
    // South gets the same plate_00 later, and three of its own.
    for name in [
        "plate_00.dcm",
        "plate_03.dcm",
        "plate_04.dcm",
        "plate_05.dcm",
    ] {
        put(&inboxes[1], name);
    }
    wait_routed(7).await;
    let per_site: Vec<(String, i64)> =
        sqlx::query_as("SELECT site, count(*) FROM plates GROUP BY site ORDER BY site")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_site, vec![("north".into(), 3), ("south".into(), 4)]);
    let jobs: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT node, state, count(*) FROM jobs GROUP BY node, state ORDER BY node, state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        jobs,
        vec![
            ("north".into(), "done".into(), 3),
            ("south".into(), "done".into(), 4)
        ],
        "plate_00 at both sites is judged at both, not a duplicate"
    );
    for (i, site) in ["north", "south"].iter().enumerate() {
        let routed = tmp.path().join(site).join("out");
        let moved: Vec<PathBuf> = files_under(&routed)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .filter(|p| !p.starts_with(routed.join("rejection-notes")))
            .collect();
        assert_eq!(moved.len(), [3, 4][i], "{site}: {moved:?}");
        assert!(moved
            .iter()
            .all(|p| !p.to_string_lossy().contains("duplicates")));
    }
    drop(daemons);
    // The shared database answers for both sites.
    // Each site counts what it judged: plate_00, judged at both, counts at both.
    let r = report_json(&url, &[]);
    assert_eq!(
        r["totals"]["images"], 7,
        "six instances, one of them at two sites"
    );
    let south = report_json(&url, &["--site", "south"]);
    assert_eq!(south["totals"]["images"], 4);
    let north = report_json(&url, &["--site", "north"]);
    assert_eq!(
        north["totals"]["images"], 3,
        "south judging plate_00 later takes nothing from north"
    );
    rec.close().await;
}

/// A `watch` daemon on a shared database from a config of its own; its stderr goes to a file.
fn pg_daemon(dir: &Path, url: &str, site: &str, metrics: &str) -> (std::process::Child, PathBuf) {
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let config = dir.join("plateqc.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndb = \"{url}\"\nout = \"{}\"\nkey_file = \"{}\"\n[record]\nsite = \"{site}\"\n[watch]\ninboxes = [\"{}\"]\nquiet_ms = 400\nrescan_secs = 2\nmetrics_listen = \"{metrics}\"\n",
            dir.join("out").display(),
            dir.join("site.key").display(),
            inbox.display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_plateqc"))
        .arg("--config")
        .arg(&config)
        .arg("watch")
        .env("PLATEQC_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// Waits for `child` to exit within `secs`; its status, or `None` if it is still running.
fn exited_within(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(secs) {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

fn log_waits_for(log: &Path, needle: &str, secs: u64) -> String {
    let t = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(secs),
            "no {needle:?} in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// What an operator running several daemons on one PostgreSQL database meets, each answered:
/// `scan --db URL` needs a site name and a key file, given by flags without a config; a
/// second daemon claiming a running site is refused, as is one whose metrics address is
/// taken; and a daemon started before its database waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_sharing_postgres_refuse_clearly_wait_and_close_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let url = pg::fresh_database().await;
    let plate = root().join("demo/inbox/plate_00.dcm");
    let plate = plate.to_str().unwrap();
    let key = tmp.path().join("scan.key");
    let out = tmp.path().join("scan-out");
    let refused = plateqc(&["scan", plate, "--db", &url]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("--site") && why.contains("--key-file"),
        "{why}"
    );
    ok(&[
        "scan",
        plate,
        "--db",
        &url,
        "--key-file",
        key.to_str().unwrap(),
        "--site",
        "front-desk",
        "--out",
        out.to_str().unwrap(),
    ]);

    let (mut north, north_log) = pg_daemon(&tmp.path().join("north"), &url, "north", "127.0.0.1:0");
    let text = log_waits_for(&north_log, "metrics listening", 60);
    let metrics_addr = text
        .lines()
        .find_map(|l| l.split("metrics listening addr=").nth(1))
        .unwrap()
        .trim()
        .to_string();
    // Another daemon as site north, on its own folders: refused, naming the site.
    let (mut twin, twin_log) = pg_daemon(&tmp.path().join("twin"), &url, "north", "127.0.0.1:0");
    let status = exited_within(&mut twin, 60).expect("the second north daemon stops");
    assert!(!status.success());
    let text = std::fs::read_to_string(&twin_log).unwrap();
    assert!(
        text.contains("another plateqc watch is running as site \"north\""),
        "{text}"
    );
    // A daemon of another site given north's metrics address: refused at start, saying why.
    let (mut south, south_log) = pg_daemon(&tmp.path().join("south"), &url, "south", &metrics_addr);
    let status = exited_within(&mut south, 60).expect("the south daemon stops");
    assert!(!status.success());
    let text = std::fs::read_to_string(&south_log).unwrap();
    assert!(text.contains("cannot serve /metrics on"), "{text}");
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(north.id() as i32, libc::SIGTERM) };
    assert!(exited_within(&mut north, 60)
        .expect("north stops")
        .success());
    // Once north has stopped, its site is free again.
    let (mut again, again_log) = pg_daemon(&tmp.path().join("again"), &url, "north", "127.0.0.1:0");
    log_waits_for(&again_log, "watching", 60);
    // SAFETY: as above.
    unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
    assert!(exited_within(&mut again, 60).expect("stops").success());
    report_json(&url, &[]);

    // A daemon whose database does not answer yet waits, says so, and still stops on SIGTERM.
    let nobody = format!("postgres://postgres@127.0.0.1:{}/qc", free_port());
    let (mut early, early_log) = pg_daemon(&tmp.path().join("early"), &nobody, "early", "");
    log_waits_for(&early_log, "database not reachable; waiting for it", 30);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(early.try_wait().unwrap().is_none(), "it keeps waiting");
    // SAFETY: as above.
    unsafe { libc::kill(early.id() as i32, libc::SIGTERM) };
    assert!(exited_within(&mut early, 10)
        .expect("stops while waiting")
        .success());
}

/// The per-image export (AAPM Report 305 elements) and the rate levels, on both backends: a
/// rejected image followed by the same patient at the same site within 30 minutes is a
/// repeat; one followed later, or whose patient is not known, is not (or is unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_image_export_marks_repeats_and_rates_carry_intervals_and_levels_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db) in backends(tmp.path()).await {
        let rec = Recorder::open_as(Path::new(&db), "north").await.unwrap();
        let bad = Some(("scratch", "111214"));
        let at = |plate: &str, i: usize, time: &str, patient: Option<&str>, finding| {
            let mut r = scan(plate, "ST-1", i, finding);
            r.acquisition_datetime = Some(format!("20260301{time}"));
            r.patient_id_hash = patient.map(String::from);
            r
        };
        let mut tagged = at("PLATE-A", 0, "101500", Some("p1"), bad);
        tagged.body_part = Some("JAW".into());
        tagged.view_position = Some("".into());
        tagged.anatomic_region = Some("Maxillary left molar region".into());
        tagged.exposure_index = Some(412.5);
        tagged.deviation_index = Some(-1.25);
        for r in [
            tagged,
            at("PLATE-A", 1, "103000", Some("p1"), None),
            at("PLATE-B", 2, "101500", Some("p2"), bad),
            at("PLATE-B", 3, "110000", Some("p2"), None),
            at("PLATE-C", 4, "101500", None, bad),
        ] {
            rec.insert(&r).await.unwrap();
        }
        rec.close().await;
        let out = tmp.path().join(format!("{backend}-images.csv"));
        ok(&["report", "--db", &db, "--images", out.to_str().unwrap()]);
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let repeated: Vec<(String, String)> = lines
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                (
                    c[col("sop_instance_uid")].to_string(),
                    c[col("repeated")].to_string(),
                )
            })
            .collect();
        let of = |plate: &str, i: usize| {
            repeated
                .iter()
                .find(|(u, _)| *u == uid(plate, i))
                .map(|(_, r)| r.as_str())
                .unwrap_or_else(|| panic!("{backend}: no row for {plate} {i}:\n{text}"))
        };
        assert_eq!(of("PLATE-A", 0), "yes", "{backend}");
        // The view / body part and exposure indicator travel with the image (qc_images too).
        let row = text
            .lines()
            .find(|l| l.starts_with(&uid("PLATE-A", 0)))
            .unwrap();
        let c: Vec<&str> = row.split(',').collect();
        assert_eq!(c[col("body_part")], "JAW", "{backend}");
        assert_eq!(c[col("anatomic_region")], "Maxillary left molar region");
        assert_eq!(c[col("exposure_index")], "412.5", "{backend}");
        assert_eq!(c[col("deviation_index")], "-1.25", "{backend}");
        let plain = text
            .lines()
            .find(|l| l.starts_with(&uid("PLATE-B", 2)))
            .unwrap();
        let c: Vec<&str> = plain.split(',').collect();
        assert_eq!(
            c[col("exposure_index")],
            "",
            "{backend}: not carried, not made up"
        );
        assert_eq!(of("PLATE-B", 2), "no", "{backend}");
        assert_eq!(of("PLATE-C", 4), "", "{backend}: patient unknown");
        assert_eq!(
            of("PLATE-A", 1),
            "",
            "{backend}: usable images are not repeats"
        );
        // 3 of 5 rejected: too few to judge by default, judged with --min-images 5.
        let r = report_json(&db, &[]);
        assert_eq!(r["totals"]["level"], "too_few", "{backend}");
        assert_eq!(r["totals"]["ci_low_pct"], 23.1, "{backend}");
        assert_eq!(r["totals"]["ci_high_pct"], 88.2, "{backend}");
        let r = report_json(&db, &["--min-images", "5"]);
        assert_eq!(r["totals"]["level"], "investigate_high", "{backend}");
        assert_eq!(r["levels"]["min_images"], 5);
        // The site's own levels from its config file; a flag still wins.
        let cfg = tmp.path().join(format!("{backend}-levels.toml"));
        std::fs::write(
            &cfg,
            "[report]\ntarget_pct = 50.0\ninvestigate_above_pct = 70.0\n\
             investigate_below_pct = 40.0\nmin_images = 5\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let r: Value = serde_json::from_str(&ok(&[
            "--config", c, "report", "--db", &db, "--format", "json",
        ]))
        .unwrap();
        assert_eq!(
            r["totals"]["level"], "within",
            "{backend}: 60 % within 40-70 %"
        );
        let r: Value = serde_json::from_str(&ok(&[
            "--config",
            c,
            "report",
            "--db",
            &db,
            "--format",
            "json",
            "--investigate-above-pct",
            "55",
        ]))
        .unwrap();
        assert_eq!(r["totals"]["level"], "investigate_high", "{backend}");
    }
}

/// Reviews in bulk from a CSV file, on both backends: a bad row records nothing and is named
/// by its line; a good file records confirmations and overturns, both counted as reviews;
/// importing it again records nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_import_from_csv_all_or_nothing_and_once_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db) in backends(tmp.path()).await {
        record_scenario(&db).await;
        // PLATE-B's scan 0 was judged unusable (scratched), scan 10 usable.
        let (bad, good) = (uid("PLATE-B", 0), uid("PLATE-B", 10));
        let file = tmp.path().join(format!("{backend}-reviews.csv"));
        let write = |rows: &str| {
            std::fs::write(&file, format!("sop_instance_uid,verdict,by,reason\n{rows}")).unwrap()
        };
        write(&format!(
            "{bad},unusable,QA,\"scratch across the roots, confirmed\"\n\
             {good},unusable,QA,missed a fingerprint\n\
             1.2.3.404,usable,QA,not judged here\n"
        ));
        let out = plateqc_command()
            .args(["review-import", file.to_str().unwrap(), "--db", &db])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{backend}: {err}");
        assert!(err.contains("line 4") && err.contains("1.2.3.404"), "{err}");
        assert_eq!(
            report_json(&db, &[])["totals"]["overridden"],
            0,
            "{backend}"
        );
        write(&format!(
            "{bad},unusable,QA,\"scratch across the roots, confirmed\"\n\
             {good},unusable,QA,missed a fingerprint\n"
        ));
        let said = ok(&["review-import", file.to_str().unwrap(), "--db", &db]);
        assert!(
            said.contains("2 reviews recorded (1 confirm the model, 1 overturn it)"),
            "{said}"
        );
        let said = ok(&["review-import", file.to_str().unwrap(), "--db", &db]);
        assert!(
            said.contains("0 reviews recorded") && said.contains("2 already"),
            "{said}"
        );
        let t = &report_json(&db, &[])["totals"];
        assert_eq!(
            (t["overridden"].as_i64(), t["overturned"].as_i64()),
            (Some(2), Some(1))
        );
        let history = ok(&["history", &bad, "--db", &db, "--format", "json"]);
        assert!(
            history.contains("scratch across the roots, confirmed"),
            "{history}"
        );
    }
}

/// Calibration from reviewed plates, on both backends: refused with too few reviews; with
/// enough, the threshold rejects at most the target share of reviewed-usable plates, is
/// recorded with who chose it and on which plates (scan::scan_judges_with_the_sites_calibrated_threshold
/// shows it applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_calibrates_its_threshold_from_reviews_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db) in backends(tmp.path()).await {
        record_scenario(&db).await; // site "north", model "t": scratched 0.9, clean 0.1
        let config = tmp.path().join(format!("{backend}.toml"));
        std::fs::write(
            &config,
            format!(
                "[paths]\ndb = \"{db}\"\nkey_file = \"{}\"\n[record]\nsite = \"north\"\n",
                tmp.path().join("site.key").display()
            ),
        )
        .unwrap();
        let cfg = config.to_str().unwrap();
        let calibrate = |extra: &[&str]| {
            let mut args = vec![
                "--config",
                cfg,
                "calibrate",
                "--by",
                "QA",
                "--format",
                "json",
            ];
            args.extend_from_slice(extra);
            plateqc_command().args(&args).output().unwrap()
        };
        let out = calibrate(&[]);
        assert_eq!(out.status.code(), Some(2), "{backend}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("too few reviewed plates"));
        // Reviews: PLATE-B's 20 scans as the model said (8 unusable, 12 usable), but scan 19
        // is called unusable by the reviewer although the model scored it 0.1.
        let mut rows = String::from("sop_instance_uid,verdict,by,reason\n");
        for i in 0..20 {
            let v = if i < 8 || i == 19 {
                "unusable"
            } else {
                "usable"
            };
            rows.push_str(&format!("{},{v},QA,looked at it\n", uid("PLATE-B", i)));
        }
        let file = tmp.path().join(format!("{backend}-reviews.csv"));
        std::fs::write(&file, rows).unwrap();
        ok(&["--config", cfg, "review-import", file.to_str().unwrap()]);
        let out = calibrate(&[
            "--min-usable",
            "10",
            "--min-unusable",
            "5",
            "--model-version",
            "t",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["reviewed_usable"], 11, "{backend}: {r}");
        assert_eq!(r["reviewed_unusable"], 9);
        // 5 % of 11 usable is 0 false rejects: the threshold sits just above 0.1, and the
        // plate the model missed (0.1) stays missed: recall 8 of 9.
        let t = r["chosen"]["threshold"].as_f64().unwrap();
        assert!(t > 0.1 && t < 0.1001, "{t}");
        assert_eq!(r["chosen"]["false_reject"], 0.0);
        assert!((r["chosen"]["recall"].as_f64().unwrap() - 8.0 / 9.0).abs() < 1e-9);
        assert_eq!(r["recorded"]["calibrated_by"], "QA");
        assert_eq!(
            r["recorded"]["plate_rows"]
                .as_str()
                .unwrap()
                .split(',')
                .count(),
            20
        );
        let listed = ok(&["--config", cfg, "calibrate", "--list"]);
        assert!(
            listed.contains("model t") && listed.contains("by QA"),
            "{listed}"
        );
    }
}
