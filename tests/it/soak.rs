//! The soak test: the real daemon takes a few hundred plates mixed with broken files while it
//! is killed (SIGKILL) at random moments and started again; in the end every file is in the
//! database once and under the output folders once, and nothing is left in the inbox.

use crate::support::daemon::{fixture_files, sha, site, spawn_daemon, sql, Site};
use crate::support::dicom::plates_as_new_instances;
use crate::support::root;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Plates made from the fixtures, and how many times the daemon is killed.
const PLATES: usize = 300;
const KILLS: usize = 8;

/// A small generator for the kill moments; its seed is printed, so a failing run can be
/// replayed with `PLATEQC_SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Every entry under `dir`, links not followed.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(entries(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn count(s: &Site, q: &str) -> usize {
    sql(&s.db, q).parse().unwrap_or(0)
}

/// Broken files of every kind: the hostile corpus, truncated plates, bytes that are not DICOM
/// and an empty file.
fn malformed(staging: &Path, plates: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("tests/hostile"))
        .unwrap()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "dcm") {
            let to = staging.join(format!(
                "hostile-{}",
                p.file_name().unwrap().to_string_lossy()
            ));
            std::fs::copy(&p, &to).unwrap();
            out.push(to);
        }
    }
    for (i, p) in plates.iter().take(10).enumerate() {
        let bytes = std::fs::read(p).unwrap();
        let to = staging.join(format!("truncated-{i:02}.dcm"));
        std::fs::write(&to, &bytes[..bytes.len() * (i + 1) / 12]).unwrap();
        out.push(to);
    }
    for i in 0..10 {
        let to = staging.join(format!("not-dicom-{i:02}.dcm"));
        let text = format!("not a plate {i}\n").repeat(50 * (i + 1));
        std::fs::write(&to, text).unwrap();
        out.push(to);
    }
    let empty = staging.join("empty.dcm");
    std::fs::write(&empty, b"").unwrap();
    out.push(empty);
    out
}

fn start(s: &Site, run: usize) -> Child {
    let log = std::fs::File::create(s.root.join(format!("daemon-{run}.log"))).unwrap();
    spawn_daemon(s, "warn", Stdio::from(log))
}

#[test]
fn killed_at_random_the_daemon_still_settles_every_file_exactly_once() {
    let seed = std::env::var("PLATEQC_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak seed {seed} (PLATEQC_SOAK_SEED replays it)");
    let mut rng = Rng(seed);
    let s = site();
    let staging = s.root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    // The small fixtures, several codecs: fast to judge, so the test is about the daemon.
    let sources: Vec<PathBuf> = fixture_files()
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            ["01_", "05_", "11_", "12_", "13_", "16_"]
                .iter()
                .any(|k| n.starts_with(k))
        })
        .collect();
    assert_eq!(sources.len(), 6);
    let plates = plates_as_new_instances(&sources, &staging, PLATES);
    let broken = malformed(&staging, &plates);
    let mut files: Vec<PathBuf> = plates.iter().chain(&broken).cloned().collect();
    // Shuffled, so broken files arrive between plates.
    for i in (1..files.len()).rev() {
        files.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|p| {
            (
                sha(p),
                p.file_name().unwrap().to_string_lossy().into_owned(),
            )
        })
        .collect();
    assert_eq!(
        expected.len(),
        files.len(),
        "every file is distinct content"
    );
    let total = files.len();
    let good: Vec<String> = plates.iter().map(|p| sha(p)).collect();

    // Files arrive in batches (renamed in, as a writer's "done"), between and during runs.
    let mut batches: Vec<Vec<PathBuf>> = files.chunks(total / 4 + 1).map(|c| c.to_vec()).collect();
    batches.reverse();
    let deliver = |batches: &mut Vec<Vec<PathBuf>>| {
        if let Some(batch) = batches.pop() {
            for p in batch {
                std::fs::rename(&p, s.inbox.join(p.file_name().unwrap())).unwrap();
            }
        }
    };
    deliver(&mut batches);
    let started = Instant::now();
    let routed = |s: &Site| count(s, "SELECT count(*) FROM jobs WHERE routed_path IS NOT NULL");
    for run in 0..KILLS {
        let mut d = start(&s, run);
        // Kill after a random amount of progress (recorded rows, or nothing yet) and a random
        // few hundred milliseconds more: during start-up, judging, recording or moving.
        let before = routed(&s);
        let want = before + rng.below(35) as usize;
        let t = Instant::now();
        while routed(&s) < want.min(total) && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if rng.below(2) == 0 {
            deliver(&mut batches);
        }
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        d.kill().unwrap(); // SIGKILL
        d.wait().unwrap();
        eprintln!(
            "kill {}: {} of {total} routed at {:.1} s",
            run + 1,
            routed(&s),
            started.elapsed().as_secs_f64()
        );
    }
    while !batches.is_empty() {
        deliver(&mut batches);
    }
    let mut d = start(&s, KILLS);
    let t = Instant::now();
    while routed(&s) < total || !entries(&s.inbox).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{} of {total} routed; left in the inbox: {:?}",
            routed(&s),
            entries(&s.inbox)
        );
        assert!(d.try_wait().unwrap().is_none(), "the daemon exited");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A moment for anything that would wrongly happen twice.
    std::thread::sleep(Duration::from_millis(1500));
    d.kill().unwrap();
    d.wait().unwrap();
    eprintln!("settled in {:.1} s", started.elapsed().as_secs_f64());

    // Exactly once in the database: one plate row and one closed job per file.
    assert_eq!(count(&s, "SELECT count(*) FROM plates"), total);
    assert_eq!(
        count(&s, "SELECT count(DISTINCT sha256) FROM plates"),
        total
    );
    assert_eq!(count(&s, "SELECT count(*) FROM jobs"), total);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM jobs WHERE routed_path IS NULL OR state = 'processing'"
        ),
        0
    );
    let recorded: Vec<String> = sql(&s.db, "SELECT sha256 FROM plates")
        .lines()
        .map(str::to_string)
        .collect();
    for sha in &recorded {
        assert!(
            expected.contains_key(sha),
            "a row for a file never sent: {sha}"
        );
    }
    // Every plate judged: a kill is never charged to a plate that was merely in flight.
    let errors = sql(
        &s.db,
        "SELECT sha256, error_kind, error FROM plates WHERE verdict = 'error'",
    );
    for line in errors.lines() {
        let sha = line.split('|').next().unwrap();
        assert!(
            !good.iter().any(|g| g == sha),
            "a good plate was not judged: {line} ({})",
            expected[sha]
        );
    }
    assert_eq!(
        count(&s, "SELECT count(*) FROM plates WHERE verdict = 'error'"),
        broken.len()
    );

    // Exactly once on disk: under accepted/, rejected/ or quarantine/, nothing in the inbox.
    assert!(entries(&s.inbox).is_empty());
    let mut seen: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for folder in ["accepted", "rejected", "quarantine", "duplicates"] {
        for p in entries(&s.out.join(folder)) {
            let name = p.file_name().unwrap().to_string_lossy();
            if name.ends_with(".reason.txt") {
                continue;
            }
            assert!(
                !name.starts_with('.'),
                "a temporary file left: {}",
                p.display()
            );
            seen.entry(sha(&p)).or_default().push(p);
        }
    }
    let twice: Vec<_> = seen.values().filter(|v| v.len() > 1).collect();
    assert!(twice.is_empty(), "routed more than once: {twice:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|(sha, _)| !seen.contains_key(*sha))
        .map(|(_, name)| name)
        .collect();
    assert!(missing.is_empty(), "never routed: {missing:?}");
    assert_eq!(seen.len(), total);
}
