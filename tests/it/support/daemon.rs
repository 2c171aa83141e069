//! The real daemon (`plateqc watch`, a child process) on a temporary site: its folders, its
//! config, its database read back with `sqlite3`, and waiting on a condition with a deadline.

use super::root;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Site {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub inbox: PathBuf,
    pub out: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
}

/// A daemon's site in a temporary folder: its inbox, output, database and config. Review of
/// near-threshold plates is off (`infer.review_margin = 0`), so that every plate of a test
/// leaves with its verdict; the review tests turn it back on.
pub fn site() -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (inbox, out, db) = (
        root.join("inbox"),
        root.join("out"),
        root.join("db/qc.sqlite"),
    );
    std::fs::create_dir_all(&inbox).unwrap();
    let config = root.join("plateqc.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\ndb = \"{}\"\nout = \"{}\"\n[infer]\nreview_margin = 0.0\n[watch]\ninboxes = [\"{}\"]\nquiet_ms = 400\nrescan_secs = 2\nmetrics_listen = \"127.0.0.1:0\"\n",
            db.display(),
            out.display(),
            inbox.display()
        ),
    )
    .unwrap();
    Site {
        _tmp: tmp,
        root,
        inbox,
        out,
        db,
        config,
    }
}

pub fn start(site: &Site) -> Daemon {
    Daemon {
        child: spawn_daemon(site, "warn", Stdio::null()),
    }
}

/// The daemon with its log (at `filter`) in `<site>/daemon.log`; returns the daemon (killed
/// when dropped, so a failing test does not leave it running) and the log.
pub fn start_logged(site: &Site, filter: &str) -> (Daemon, PathBuf) {
    let log = site.root.join("daemon.log");
    let child = spawn_daemon(site, filter, std::fs::File::create(&log).unwrap().into());
    (Daemon { child }, log)
}

pub fn spawn_daemon(site: &Site, filter: &str, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_plateqc"))
        .arg("--config")
        .arg(&site.config)
        .arg("watch")
        .env("PLATEQC_LOG", filter)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

pub fn sql(db: &Path, query: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .expect("sqlite3 (installed by make setup)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn wait_until(what: &str, limit: Duration, ok: impl FnMut() -> bool) {
    wait_until_or(limit, ok, || format!("timed out waiting for {what}"));
}

/// [`wait_until`] whose timeout message is built when it times out, so it can carry what
/// was learnt meanwhile (a daemon's log, say).
pub fn wait_until_or(limit: Duration, mut ok: impl FnMut() -> bool, why: impl FnOnce() -> String) {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() >= limit {
            panic!("{}", why());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn sha(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

pub fn fixture_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    v.sort();
    v
}

/// GET `path` from the daemon whose log (at info) is `log`: its metrics address is the one it
/// logged when it started listening.
pub fn http_get_from_log(log: &Path, path: &str) -> String {
    use std::io::{Read, Write};
    let text = std::fs::read_to_string(log).unwrap();
    let addr = text
        .lines()
        .find_map(|l| l.split("metrics listening addr=").nth(1))
        .map(|a| a.trim().to_string())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{text}"));
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}
