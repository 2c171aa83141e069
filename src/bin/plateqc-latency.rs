//! Latency and throughput of the `watch` daemon, measured from outside as a clinic sees it.
//!
//! Starts the real `plateqc watch` (the binary beside this one) on a temporary site, renames
//! plates into its inbox at a steady rate, and reads from the daemon's journal when each plate
//! was finished (verdict committed, file moved out of the inbox, rejection note written):
//! latency = that time - the moment the file became complete (its rename). Then bursts of the same plates measure sustained throughput;
//! after each, `plateqc scan` over the same files is the baseline the daemon's throughput is
//! expressed against (rounds alternate, so drift in the machine's speed hits both alike).
//!
//! `plateqc-latency DIR [--rate PER_SECOND] [--count N] [--burst N] [--rounds N] [--config-extra
//! TOML]`: `count` steady drops, then `rounds` bursts of `burst` plates, each followed by its scan
//! baseline. `--config-extra` appends a file to the daemon's generated configuration (e.g. a
//! `[notes]` table with `enabled = false`, to measure what the rejection notes cost); `scan`
//! runs with its defaults. `--keep` leaves the temporary site (journal, outputs, notes) in place
//! for a closer look.

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

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces), so that
/// field n of proc(5) is at index n - 3.
fn stat_fields(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// CPU seconds (user, system) used so far by a running process and every process below it:
/// the daemon decodes in worker processes of its own (`decode.isolate`), whose time counts in
/// its parent only once they have exited and been reaped.
fn cpu_of(pid: u32) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field =
        |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    let all: Vec<(u32, Vec<String>)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .map(|p| (p, stat_fields(p)))
                .collect()
        })
        .unwrap_or_default();
    let parent = |f: &[String]| f.get(1).and_then(|v| v.parse::<u32>().ok());
    let (mut user, mut sys) = (0.0, 0.0);
    let mut below = vec![pid];
    while let Some(p) = below.pop() {
        let Some((_, f)) = all.iter().find(|(q, _)| *q == p) else {
            continue;
        };
        // utime, stime, and cutime, cstime of its reaped children (fields 14-17).
        user += field(f, 11) + field(f, 13);
        sys += field(f, 12) + field(f, 14);
        below.extend(
            all.iter()
                .filter(|(_, g)| parent(g) == Some(p))
                .map(|(q, _)| *q),
        );
    }
    (user, sys)
}

/// CPU seconds (user, system) of the children reaped so far.
fn cpu_of_children() -> (f64, f64) {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime), secs(u.ru_stime))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

const USAGE: &str =
    "usage: plateqc-latency DIR [--rate PER_SECOND] [--count N] [--burst N] [--rounds N] \
     [--config-extra TOML] [--keep]";

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut extra = String::new();
    let mut keep = false;
    let (mut rate, mut count, mut burst_count, mut rounds) = (5.0f64, 60usize, 120usize, 5usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rate" => rate = args.next().and_then(|v| v.parse().ok()).expect("--rate N"),
            "--count" => count = args.next().and_then(|v| v.parse().ok()).expect("--count N"),
            "--burst" => burst_count = args.next().and_then(|v| v.parse().ok()).expect("--burst N"),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r| r > 0)
                    .expect("--rounds N (at least 1)")
            }
            "--config-extra" => {
                let path = args.next().expect("--config-extra TOML");
                extra = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("--config-extra {path}: {e}"));
            }
            "--keep" => keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ if a.starts_with('-') => panic!("unknown option {a}\n{USAGE}"),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.expect(USAGE);
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
            "[paths]\ndb = \"{}\"\nout = \"{}\"\n[watch]\ninboxes = [\"{}\"]\nmetrics_listen = \"\"\n{extra}\n",
            db.display(),
            out.display(),
            inbox.display()
        ),
    )
    .unwrap();
    // Every drop is a new image: its own SOP Instance UID (so distinct content, no duplicate,
    // and no drop is a re-scan of an earlier one, which would settle a plate waiting for review
    // and re-stamp its journal row when the re-scan arrives).
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let drops = std::cell::Cell::new(0u64);
    let stage = |tag: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let src = &sources[i % sources.len()];
                let mut obj = dicom_object::open_file(src)
                    .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
                drops.set(drops.get() + 1);
                let uid = format!("2.25.{stamp}{:08}", drops.get());
                obj.put_str(
                    dicom_dictionary_std::tags::SOP_INSTANCE_UID,
                    dicom_core::VR::UI,
                    uid.clone(),
                );
                obj.update_meta(|m| m.media_storage_sop_instance_uid = uid);
                let name = format!("{tag}{i:05}.dcm");
                obj.write_to_file(staging.join(&name))
                    .unwrap_or_else(|e| panic!("writing {name} from {}: {e}", src.display()));
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
    // When each plate was finished, from the journal: its file left the inbox after its verdict
    // was committed, and its rejection note was written (`updated_at` of a routed job is
    // stamped last by whichever came later).
    let routed_at = |prefix: &str| -> HashMap<String, f64> {
        sql(
            &db,
            &format!(
                "SELECT source_path, updated_at FROM jobs WHERE routed_path IS NOT NULL AND source_path LIKE '%/{prefix}%'"
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
    // Waits by watching the inbox empty (a directory listing costs next to nothing; a sqlite3
    // process every few milliseconds took CPU from the daemon on two cores), then confirms
    // from the journal. The figures come from the journal's times, not from this loop.
    let daemon_pid = daemon.id();
    let wait_for = |prefix: &str, n: usize| -> HashMap<String, f64> {
        let t = Instant::now();
        loop {
            assert!(t.elapsed() < Duration::from_secs(900), "timed out");
            // A daemon that stopped (a zombie until reaped) will never finish the plates.
            let state =
                std::fs::read_to_string(format!("/proc/{daemon_pid}/stat")).unwrap_or_default();
            assert!(
                state
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z')),
                "plateqc watch stopped; run it by hand with {} to see why",
                config.display()
            );
            let left = std::fs::read_dir(&inbox)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                        .count()
                })
                .unwrap_or(0);
            if left == 0 {
                // The network side's work (rejection notes, outbox rows) counts too: a plate is
                // finished once its job is dispatched, which stamps `updated_at` again. A plate
                // near the threshold (`[infer] review_margin`) is finished when it is filed for
                // review: nothing is dispatched for it until a person decides.
                let pending = sql(
                    &db,
                    &format!(
                        "SELECT count(*) FROM jobs j LEFT JOIN plates p ON p.id = j.plate_row
                          WHERE j.dispatched = 0 AND coalesce(p.needs_review, 0) = 0
                            AND j.source_path LIKE '%/{prefix}%'"
                    ),
                );
                if pending.trim() == "0" {
                    let done = routed_at(prefix);
                    if done.len() >= n {
                        return done;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
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
    let done = wait_for("s", count);
    let mut lat: Vec<f64> = names
        .iter()
        .map(|n| (done[n] - complete_at[n]) * 1e3)
        .collect();
    // The slowest plates by name (their order of arrival), so a tail can be told apart from
    // start-up or from one kind of plate.
    let mut slowest: Vec<(f64, &String)> = names
        .iter()
        .zip(lat.iter().copied())
        .map(|(n, l)| (l, n))
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    lat.sort_by(|a, b| a.total_cmp(b));

    // Phase 2: bursts, for sustained throughput, each followed by `plateqc scan` over the same
    // files as the baseline: rounds alternate so that the machine's drift hits both alike.
    let mut ratios = Vec::new();
    let mut rounds_text = Vec::new();
    for round in 0..rounds {
        let tag = format!("b{round}-");
        let burst = stage(&tag, burst_count);
        let daemon_cpu0 = cpu_of(daemon_pid);
        let burst_start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        for name in &burst {
            std::fs::rename(staging.join(name), inbox.join(name)).unwrap();
        }
        let done = wait_for(&tag, burst_count);
        let last = done.values().copied().fold(f64::MIN, f64::max);
        let daemon_rate = burst_count as f64 / (last - burst_start);
        let daemon_cpu1 = cpu_of(daemon_pid);

        let routed: Vec<PathBuf> = sql(
            &db,
            &format!("SELECT routed_path FROM jobs WHERE routed_path IS NOT NULL AND source_path LIKE '%/{tag}%'"),
        )
        .lines()
        .map(PathBuf::from)
        .collect();
        let scan_db = site.join(format!("scan-{round}.sqlite"));
        let scan_cpu0 = cpu_of_children();
        let t = Instant::now();
        let status = Command::new(&exe)
            .arg("scan")
            .args(&routed)
            .arg("--db")
            .arg(&scan_db)
            .arg("--out")
            .arg(site.join(format!("scan-out-{round}")))
            .arg("--no-fail-on-error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let scan_secs = t.elapsed().as_secs_f64();
        let scan_cpu1 = cpu_of_children();
        let scanned: usize = sql(&scan_db, "SELECT count(*) FROM plates")
            .trim()
            .parse()
            .unwrap_or(0);
        assert_eq!(scanned, burst_count, "scan baseline judged every plate");
        let scan_rate = scanned as f64 / scan_secs;
        ratios.push(daemon_rate / scan_rate);
        // CPU per plate (user + system, ms; the daemon with its decode workers) tells work the
        // daemon does beyond scan's from cores it leaves idle: the burst's CPU is read up to
        // the last plate's finish.
        let per_plate = |a: (f64, f64), b: (f64, f64)| {
            (
                (b.0 - a.0) * 1e3 / burst_count as f64,
                (b.1 - a.1) * 1e3 / burst_count as f64,
            )
        };
        let (du, ds) = per_plate(daemon_cpu0, daemon_cpu1);
        let (su, ss) = per_plate(scan_cpu0, scan_cpu1);
        rounds_text.push(format!(
            "  round {}: daemon {daemon_rate:.1} plates/s, scan {scan_rate:.1} plates/s (incl. start-up), ratio {:.2}; \
             CPU per plate user+sys: daemon {du:.1}+{ds:.1} ms, scan {su:.1}+{ss:.1} ms",
            round + 1,
            daemon_rate / scan_rate
        ));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let mut sorted = ratios.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));

    println!(
        "steady drops: {count} plates at {rate}/s; latency from complete file to recorded verdict, routed file and rejection note:"
    );
    println!(
        "  p50 {:.0} ms   p95 {:.0} ms   max {:.0} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat[lat.len() - 1]
    );
    println!(
        "  slowest: {}",
        slowest
            .iter()
            .take(4)
            .map(|(l, n)| format!("{n} {l:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("bursts of {burst_count}, each against `plateqc scan` over the same files:");
    for line in &rounds_text {
        println!("{line}");
    }
    println!(
        "  daemon / scan: median {:.2} (min {:.2}, max {:.2}) over {rounds} rounds",
        percentile(&sorted, 0.5),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    if keep {
        println!(
            "kept the site (journal, outputs, notes): {}",
            site.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&site);
    }
}
