//! Load test of one PostgreSQL database shared by many sites, as a chain would run it
//! (`scripts/pg-load.sh` starts a private server and runs this against it).
//!
//! Phase 1: `--sites N` concurrent daemons' worth of journal traffic, each site with its own
//! recorder and connection pool, running the daemon's own statements (a committed job per
//! file, the plate rows with their findings and the move intents committed per group, the
//! moves recorded) as fast as the database takes them, for `--secs` seconds. Reports rows per
//! second and, sampled every 50 ms from `pg_locks`, how often a session waited for a lock.
//! Judging is left out on purpose: on two cores the model, not the database, would set the
//! pace, and this is about what the database can take.
//!
//! Phase 2: the history grows (synthesised by SQL, spread over the sites, stations, operators,
//! devices and plates of a chain, two years of days, one image in 200 overridden) to each size
//! of `--sizes`, and after each step `plateqc report` runs as a whole process, over everything
//! and for one site, timed.
//!
//! `plateqc-pgload URL [--sites N] [--secs S] [--group G] [--sizes 10000,100000,1000000]`

use plateqc::outcome::Verdict;
use plateqc::record::{Finding, Finish, JobStart, PlateRecord, Recorder};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    sites: usize,
    secs: u64,
    group: usize,
    sizes: Vec<i64>,
}

const USAGE: &str = "usage: plateqc-pgload URL [--sites N] [--secs S] [--group G] [--sizes A,B,C]";

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        sites: 8,
        secs: 20,
        group: 4,
        sizes: vec![10_000, 100_000, 1_000_000],
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |what: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} N"))
        };
        match x.as_str() {
            "--sites" => a.sites = num("--sites") as usize,
            "--secs" => a.secs = num("--secs"),
            "--group" => a.group = num("--group").max(1) as usize,
            "--sizes" => {
                a.sizes = it
                    .next()
                    .expect("--sizes A,B,C")
                    .split(',')
                    .map(|v| v.trim().parse().expect("a row count"))
                    .collect()
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ if x.starts_with('-') => panic!("unknown option {x}\n{USAGE}"),
            _ => a.url = x,
        }
    }
    assert!(!a.url.is_empty(), "{USAGE}");
    a
}

/// A plate as a daemon would record it: one in ten unusable, with a finding.
fn record(site: usize, n: u64) -> PlateRecord {
    let unusable = n % 10 == 0;
    let path = PathBuf::from(format!("/srv/inbox/site{site}/p{n}.dcm"));
    let mut r = PlateRecord::for_file("load", &path);
    r.sha256 = format!("load-{site}-{n}");
    r.size_bytes = 300_000;
    r.sop_instance_uid = Some(format!("1.2.826.0.1.3680043.9.7777.9.{site}.{n}"));
    r.station_name = Some(format!("ST-{site}-{}", n % 5));
    r.operator = Some(format!("OP-{}", n % 7));
    r.device_serial = Some(format!("DEV-{site}"));
    r.plate_identifier = Some(format!("PLATE-{site}-{}", n % 50));
    r.acquisition_datetime = Some("20261201101500".into());
    r.verdict = if unusable {
        Verdict::Unusable
    } else {
        Verdict::Usable
    };
    r.unusable_score = Some(if unusable { 0.9 } else { 0.1 });
    r.threshold = Some(0.5);
    r.model_version = Some("load".into());
    if unusable {
        r.reason_code = Some("111214".into());
        r.findings = vec![Finding {
            artifact_type: "scratch".into(),
            reason_code: "111214".into(),
            score: 0.9,
        }];
    }
    r
}

/// One site's daemon traffic until `stop`; counts plates and rows written.
async fn site_load(
    url: String,
    site: usize,
    group: usize,
    stop: Instant,
    plates: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
) {
    let rec = Recorder::open_as(Path::new(&url), &format!("load-site-{site}"))
        .await
        .expect("open");
    let mut n = 0u64;
    while Instant::now() < stop {
        let mut batch = Vec::with_capacity(group);
        for _ in 0..group {
            n += 1;
            let r = record(site, n);
            let start = rec
                .start_job(&r.source, &r.sha256, r.size_bytes, 3, "load")
                .await
                .expect("start_job");
            let JobStart::Process { job_id, .. } = start else {
                panic!("unexpected {start:?}")
            };
            batch.push((job_id, r));
        }
        let targets: Vec<PathBuf> = batch
            .iter()
            .map(|(_, r)| PathBuf::from(format!("/srv/out/{}", r.sha256)))
            .collect();
        let finishing: Vec<Finish> = batch
            .iter()
            .zip(&targets)
            .map(|((job_id, r), t)| Finish {
                job_id: *job_id,
                record: r,
                routing_to: Some(t),
            })
            .collect();
        rec.finish_jobs(&finishing).await.expect("finish_jobs");
        let moved: Vec<(i64, &Path)> = batch
            .iter()
            .zip(&targets)
            .map(|((j, _), t)| (*j, t.as_path()))
            .collect();
        rec.mark_routed_many(&moved).await.expect("mark_routed");
        let findings: u64 = batch.iter().map(|(_, r)| r.findings.len() as u64).sum();
        plates.fetch_add(group as u64, Ordering::Relaxed);
        // A job row and a plate row per plate, plus its findings.
        rows.fetch_add(2 * group as u64 + findings, Ordering::Relaxed);
    }
    rec.close().await;
}

/// Grows `plates` to `target` rows with a chain's worth of variety, and their findings.
async fn grow(conn: &mut sqlx::PgConnection, target: i64) {
    let (have,): (i64,) = sqlx::query_as("SELECT count(*) FROM plates")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    if have >= target {
        return;
    }
    let (from, to) = (have + 1, target);
    // 8 sites, 40 stations, 30 operators, 16 devices, 2000 plates, 730 days; one in ten
    // unusable; one image in 50 also judged at a second site (the UID of its neighbour).
    sqlx::query(
        "INSERT INTO plates (run_id, processed_at, source_path, sha256, size_bytes, sop_instance_uid,
             station_name, operator, device_serial, plate_identifier, acquisition_datetime, verdict,
             unusable_score, threshold, reason_code, model_version, site)
         SELECT 'synth', to_char(d, 'YYYY-MM-DD') || 'T10:00:00.000Z', '/synth/' || g, 'synth-' || g, 300000,
             '1.2.826.0.1.3680043.9.8888.' || (CASE WHEN g % 50 = 0 THEN g - 1 ELSE g END),
             'ST-' || (g % 40), 'OP-' || (g % 30), 'DEV-' || (g % 16), 'PLATE-' || (g % 2000),
             to_char(d, 'YYYYMMDD') || '101500',
             CASE WHEN g % 10 = 0 THEN 'unusable' ELSE 'usable' END,
             CASE WHEN g % 10 = 0 THEN 0.9 ELSE 0.1 END, 0.5,
             CASE WHEN g % 10 = 0 THEN '111214' END, 'synth', 'site-' || (g % 8)
         FROM generate_series($1::bigint, $2::bigint) AS g,
              LATERAL (SELECT date '2025-01-01' + (g % 730)::int AS d) AS day",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO plate_artifacts (plate_row, artifact_type, reason_code, score)
         SELECT id, CASE WHEN id % 3 = 0 THEN 'scratch' ELSE 'dust' END, '111214', 0.9
         FROM plates WHERE verdict = 'unusable' AND run_id = 'synth' AND id >= $1",
    )
    .bind(from)
    .execute(&mut *conn)
    .await
    .unwrap();
    // Reviewers overturned one image in 200 (a report corrects its kept tallies for each
    // overridden image, so their number is part of what a report costs).
    sqlx::query(
        "INSERT INTO overrides (sop_instance_uid, verdict, reviewer, reason, created_at)
         SELECT sop_instance_uid, CASE WHEN verdict = 'unusable' THEN 'usable' ELSE 'unusable' END,
                'synth-reviewer', 'synthesised', processed_at
           FROM plates WHERE run_id = 'synth' AND id >= $1 AND id % 200 = 7",
    )
    .bind(from)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE plates")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("ANALYZE plate_artifacts, overrides")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// `plateqc report` as a whole process; its wall time in seconds (best of three).
fn time_report(url: &str, extra: &[&str]) -> f64 {
    let exe = std::env::current_exe().unwrap().with_file_name("plateqc");
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(&exe)
                .args(["report", "--db", url, "--format", "json"])
                .args(extra)
                .output()
                .expect("plateqc report");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    // Migrate once before the sites start.
    Recorder::open_as(Path::new(&a.url), "load-setup")
        .await
        .expect("open the database")
        .close()
        .await;

    let (plates, rows) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let stop = started + Duration::from_secs(a.secs);
    let tasks: Vec<_> = (0..a.sites)
        .map(|s| {
            tokio::spawn(site_load(
                a.url.clone(),
                s,
                a.group,
                stop,
                plates.clone(),
                rows.clone(),
            ))
        })
        .collect();
    // Lock waits, sampled: sessions of this database waiting for a lock, every 50 ms.
    let mut probe = sqlx::PgConnection::connect(&a.url).await.expect("probe");
    let (mut samples, mut waiting_samples, mut waiting_max) = (0u64, 0u64, 0i64);
    while Instant::now() < stop {
        let (w,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE NOT l.granted AND a.datname = current_database()",
        )
        .fetch_one(&mut probe)
        .await
        .unwrap();
        samples += 1;
        if w > 0 {
            waiting_samples += 1;
        }
        waiting_max = waiting_max.max(w);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let (p, r) = (plates.load(Ordering::Relaxed), rows.load(Ordering::Relaxed));
    println!(
        "{} sites, groups of {}, {secs:.1} s: {p} plates = {:.0} plates/s, {r} rows = {:.0} rows/s",
        a.sites,
        a.group,
        p as f64 / secs,
        r as f64 / secs
    );
    println!(
        "  lock waits: some session waiting in {waiting_samples} of {samples} samples ({:.1} %), at most {waiting_max} at once",
        100.0 * waiting_samples as f64 / samples.max(1) as f64
    );
    let (deadlocks,): (i64,) =
        sqlx::query_as("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&mut probe)
            .await
            .unwrap();
    println!("  deadlocks: {deadlocks}");

    println!("report latency as the history grows (best of 3, whole process):");
    for &size in &a.sizes {
        let t = Instant::now();
        grow(&mut probe, size).await;
        let grown = t.elapsed().as_secs_f64();
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM plates")
            .fetch_one(&mut probe)
            .await
            .unwrap();
        let all = time_report(&a.url, &[]);
        let one = time_report(&a.url, &["--site", "site-3"]);
        let recent = time_report(&a.url, &["--since", "2026-11-01"]);
        println!(
            "  {n:>8} plates (grown in {grown:.1} s): report {all:.2} s, --site {one:.2} s, --since (last month) {recent:.2} s"
        );
    }
    probe.close().await.ok();
}
