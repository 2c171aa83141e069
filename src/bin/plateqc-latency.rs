//! Latency and throughput of the `watch` daemon, measured from outside as a clinic sees it.
//!
//! Starts the real `plateqc watch` (the binary beside this one) on a temporary site, renames
//! plates into its inbox at a steady rate, and reads from the database when each verdict was
//! recorded: latency = recorded time - the moment the file became complete (its rename). Then a
//! burst of the same plates measures sustained throughput, and `plateqc scan` over the same
//! files in the same run is the baseline the daemon's throughput is expressed against.
//!
//! `plateqc-latency DIR [--rate PER_SECOND] [--count N]`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn sql(db: &Path, q: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(q)
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let (mut rate, mut count) = (5.0f64, 60usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rate" => rate = args.next().and_then(|v| v.parse().ok()).expect("--rate N"),
            "--count" => count = args.next().and_then(|v| v.parse().ok()).expect("--count N"),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.expect("usage: plateqc-latency DIR [--rate PER_SECOND] [--count N]");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("source folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no .dcm files in {}", dir.display());
    let exe = std::env::current_exe().unwrap().with_file_name("plateqc");
    let site = std::env::temp_dir().join(format!("plateqc-latency-{}", std::process::id()));
    let (inbox, staging, out) = (site.join("inbox"), site.join("staging"), site.join("out"));
    for d in [&inbox, &staging] {
        std::fs::create_dir_all(d).unwrap();
    }
    let db = site.join("qc.sqlite");
    let config = site.join("plateqc.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndb = \"{}\"\nout = \"{}\"\n[watch]\ninboxes = [\"{}\"]\nmetrics_listen = \"\"\n",
            db.display(),
            out.display(),
            inbox.display()
        ),
    )
    .unwrap();
    // Distinct content per drop (the preamble is ignored by readers), so none is a duplicate.
    let stage = |tag: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let mut bytes = std::fs::read(&sources[i % sources.len()]).unwrap();
                bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
                bytes[8] = tag.as_bytes()[0];
                let name = format!("{tag}{i:05}.dcm");
                std::fs::write(staging.join(&name), bytes).unwrap();
                name
            })
            .collect()
    };
    let mut daemon = Command::new(&exe)
        .arg("--config")
        .arg(&config)
        .arg("watch")
        .env("PLATEQC_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("start plateqc watch");
    std::thread::sleep(Duration::from_secs(2));
    let recorded = |prefix: &str| -> HashMap<String, f64> {
        sql(
            &db,
            &format!(
                "SELECT source_path, processed_at FROM plates WHERE source_path LIKE '%/{prefix}%'"
            ),
        )
        .lines()
        .filter_map(|l| {
            let (p, t) = l.split_once('|')?;
            let name = Path::new(p).file_name()?.to_string_lossy().into_owned();
            let t = chrono::DateTime::parse_from_rfc3339(t).ok()?;
            Some((name, t.timestamp_micros() as f64 / 1e6))
        })
        .collect()
    };
    let wait_for = |prefix: &str, n: usize| {
        let t = Instant::now();
        while recorded(prefix).len() < n {
            assert!(t.elapsed() < Duration::from_secs(900), "timed out");
            // Fine polling: a burst lasts about a second, and a coarse poll would add up to
            // its own period to the measured time (at 200 ms that was 8-16 % of the burst).
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Phase 1: steady drops.
    let names = stage("s", count);
    let mut complete_at = HashMap::new();
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let due = start + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        std::fs::rename(staging.join(name), inbox.join(name)).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        complete_at.insert(name.clone(), now);
    }
    wait_for("s", count);
    let done = recorded("s");
    let mut lat: Vec<f64> = names
        .iter()
        .map(|n| (done[n] - complete_at[n]) * 1e3)
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));

    // Phase 2: a burst, for sustained throughput.
    let burst = stage("b", count);
    let t = Instant::now();
    for name in &burst {
        std::fs::rename(staging.join(name), inbox.join(name)).unwrap();
    }
    wait_for("b", count);
    let daemon_rate = count as f64 / t.elapsed().as_secs_f64();
    let _ = daemon.kill();
    let _ = daemon.wait();

    // Baseline: scan over the same burst files (now routed) in this same run.
    let routed: Vec<PathBuf> = ["accepted", "rejected", "quarantine"]
        .iter()
        .map(|d| out.join(d))
        .filter(|d| d.exists())
        .collect();
    let t = Instant::now();
    let status = Command::new(&exe)
        .arg("scan")
        .args(&routed)
        .arg("--db")
        .arg(site.join("scan.sqlite"))
        .arg("--out")
        .arg(site.join("scan-out"))
        .arg("--no-fail-on-error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let scanned: usize = sql(&site.join("scan.sqlite"), "SELECT count(*) FROM plates")
        .trim()
        .parse()
        .unwrap_or(0);
    let scan_rate = scanned as f64 / t.elapsed().as_secs_f64();

    println!(
        "steady drops: {count} plates at {rate}/s; latency from complete file to recorded verdict:"
    );
    println!(
        "  p50 {:.0} ms   p95 {:.0} ms   max {:.0} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat[lat.len() - 1]
    );
    println!("burst of {count}: daemon {daemon_rate:.1} plates/s; scan baseline {scan_rate:.1} plates/s ({scanned} plates, incl. start-up); ratio {:.2}", daemon_rate / scan_rate);
    let _ = std::fs::remove_dir_all(&site);
}
