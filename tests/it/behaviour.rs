//! What the bundled model must do, on counterfactual pairs made by
//! `models/plateqc_model/make_fixtures.py` (`tests/behaviour/`, seeds and artifact types fixed
//! before the model was trained): a plate full of dental work (fillings, crowns, posts,
//! implants, bridges) stays usable, and the very same plate (same scene, noise and vendor
//! processing) with one severity-3 artifact in the diagnostic region turns unusable. Judged end
//! to end by `plateqc scan`; the verdicts are read back from its database with the sqlite3 tool.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::cli::plateqc_command;
use crate::support::{root, stdout_of};

#[test]
fn heavy_dental_work_stays_usable_and_a_severity_3_artifact_turns_the_same_plate_unusable() {
    let dir = root().join("tests/behaviour");
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap())
            .unwrap();
    let labels = labels.as_array().unwrap();
    assert!(labels.len() >= 8, "{} behaviour files", labels.len());
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("qc.sqlite");
    let mut scan = plateqc_command();
    scan.arg("scan")
        .arg(&dir)
        .arg("--db")
        .arg(&db)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .env("PLATEQC_LOG", "warn");
    stdout_of(scan, "plateqc scan tests/behaviour");
    let mut query = Command::new("sqlite3");
    query
        .arg("-separator")
        .arg("|")
        .arg(&db)
        .arg("SELECT source_path, verdict, unusable_score, coalesce(artifact_types, '') FROM plate_verdicts");
    let rows = String::from_utf8(stdout_of(query, "sqlite3")).unwrap();
    let judged: BTreeMap<String, (String, String, String)> = rows
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let name = std::path::Path::new(f[0])
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, (f[1].to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .collect();
    let mut wrong = Vec::new();
    for l in labels {
        let file = l["file"].as_str().unwrap();
        let want = if l["usable"].as_bool().unwrap() {
            "usable"
        } else {
            "unusable"
        };
        let (verdict, score, types) = judged
            .get(file)
            .unwrap_or_else(|| panic!("{file} was not judged: {judged:?}"));
        if verdict != want {
            wrong.push(format!(
                "{file}: {verdict} (P(unusable) {score}, types [{types}]), wanted {want}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Both halves of every pair are there: the test is about the pairs, not about a count.
    let clean = labels.iter().filter(|l| l["usable"] == true).count();
    assert_eq!(clean * 2, labels.len(), "one clean and one damaged plate per scene");
}
