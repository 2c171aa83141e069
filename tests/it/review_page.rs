//! The review page from a real scan of the demo plates, loaded in headless Chromium: the
//! rendered DOM is checked, a row's click handler opens its montage, and a screenshot is kept
//! in target/.

use crate::support::cli::ok;
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return c.into();
        }
    }
    panic!("chromium is not installed: run `make setup` (it installs Debian's chromium); this test does not skip");
}

/// Runs headless Chromium on the page with a private profile; returns stdout.
fn browse(profile: &Path, args: &[&str], url: &str) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg("120")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url);
    String::from_utf8_lossy(&stdout_of(cmd, "chromium")).into_owned()
}

#[test]
fn review_page_renders_in_chromium_and_a_click_opens_the_montage() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("qc.sqlite");
    let db = db.to_str().unwrap();
    let out = tmp.path().join("out");
    ok(&[
        "scan",
        root().join("demo/inbox").to_str().unwrap(),
        "--db",
        db,
        "--out",
        out.to_str().unwrap(),
        "--no-fail-on-error",
    ]);
    // A reviewer note with markup in it must come out as text.
    let first = root().join("demo/inbox/plate_03.dcm");
    let h: Value = serde_json::from_str(&ok(&[
        "history",
        first.to_str().unwrap(),
        "--db",
        db,
        "--format",
        "json",
    ]))
    .unwrap();
    let uid = h["sop_instance_uids"][0].as_str().unwrap().to_string();
    let row = h["judgements"][0]["plate_row"].as_i64().unwrap();
    ok(&[
        "override",
        &uid,
        "--verdict",
        "unusable",
        "--by",
        "QA <b>lead</b>",
        "--reason",
        "<script>alert('x')</script> fingerprint",
        "--db",
        db,
    ]);
    let page = tmp.path().join("review.html");
    ok(&[
        "report",
        "--db",
        db,
        "--html",
        page.to_str().unwrap(),
        "--limit",
        "25",
    ]);
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained, escaped, and without patient data.
    for forbidden in [
        "http://",
        "https://",
        "src=\"/",
        "href=\"/",
        "file:",
        "<script>alert",
    ] {
        assert!(!html.contains(forbidden), "page contains {forbidden:?}");
    }
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; fingerprint"));
    assert!(html.contains("QA &lt;b&gt;lead&lt;/b&gt;"));
    let names = Command::new("dcmdump")
        .args(["+P", "PatientName", "+P", "PatientID"])
        .arg(&first)
        .output()
        .expect("dcmdump (installed by make setup)");
    let names = String::from_utf8_lossy(&names.stdout);
    let mut checked = 0;
    for line in names.lines() {
        let value = line.split('[').nth(1).and_then(|v| v.split(']').next());
        if let Some(v) = value.filter(|v| v.len() > 3) {
            assert!(!html.contains(v), "patient data {v:?} on the page");
            checked += 1;
        }
    }
    assert_eq!(
        checked, 2,
        "PatientName and PatientID were checked: {names}"
    );
    assert!(!html.contains("SYNTH^PATIENT"));

    // Rendered: 25 rows, charts, and the dialog closed until a row is clicked.
    let profile = tmp.path().join("profile");
    let url = format!("file://{}", page.display());
    let dom = browse(&profile, &["--dump-dom"], &url);
    // (Plates waiting for review are rows too: `class="plate waiting"`.)
    assert_eq!(dom.matches("<tr class=\"plate").count(), 25, "rows");
    assert!(dom.contains("id=\"chart-time\"") && dom.contains("id=\"chart-plates\""));
    assert!(
        dom.matches("<circle").count() >= 2,
        "points on the rate chart"
    );
    let dialog = dom
        .split("<dialog")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    assert!(!dialog.contains("open"), "viewer starts closed: {dialog}");

    // The fragment makes the page click the overridden plate's row on load.
    let clicked = browse(&profile, &["--dump-dom"], &format!("{url}#plate-{row}"));
    let dialog = clicked
        .split("<dialog")
        .nth(1)
        .unwrap()
        .split("</dialog>")
        .next()
        .unwrap();
    assert!(
        dialog.contains("open=\"\""),
        "viewer opened: {}",
        &dialog[..dialog.len().min(300)]
    );
    assert!(dialog.contains(&format!("data-row=\"{row}\"")));
    // Base64 has no spaces or '>', so the tag ends at the first '>'.
    let img = dialog
        .split("<img")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    assert!(
        img.contains("src=\"data:image/jpeg;base64,") && !img.contains(" hidden"),
        "montage shown: {}",
        &img[..img.len().min(200)]
    );
    assert!(dialog.contains("unusable"), "caption names the verdict");

    let shot = root().join("target/review-page.png");
    // `target/` is not there when the build goes elsewhere (CARGO_TARGET_DIR).
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    browse(
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1800",
        ],
        &format!("{url}#plate-{row}"),
    );
    let png = image::open(&shot).expect("a screenshot");
    assert_eq!((png.width(), png.height()), (1280, 1800));
    let gray = png.to_luma8();
    let (lo, hi) = gray
        .pixels()
        .fold((255u8, 0u8), |(lo, hi), p| (lo.min(p.0[0]), hi.max(p.0[0])));
    assert!(hi - lo > 100, "the screenshot shows something");
    // Straight to stderr: libtest captures print! but not the stream itself, so the path shows
    // in `make test` output.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "review page screenshot: {}",
        shot.display()
    );
}
