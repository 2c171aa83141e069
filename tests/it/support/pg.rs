//! A private PostgreSQL server for the tests: `initdb` into a temporary folder, started with
//! `pg_ctl` on a Unix socket in that folder (no TCP port), once per test binary; each test gets
//! its own database. As root the server runs as the `postgres` user (PostgreSQL refuses root).
//! A small watcher stops the server and removes the folder when the test binary exits.

use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The server binaries: Debian's newest `/usr/lib/postgresql/<version>/bin`, else PATH.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    match which {
        Some(o) => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
            .parent()
            .unwrap()
            .to_path_buf(),
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: run `make setup`, which installs Debian's postgresql"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the server's owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str, log: &Path) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn start() -> PgServer {
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!("plateqc-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(
            st.success(),
            "cannot hand {} to the postgres user (is Debian's postgresql installed? run `make setup`)",
            dir.display()
        );
    }
    let data = dir.join("data");
    let log = dir.join("server.log");
    let mut initdb = as_owner(&bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(initdb, "initdb", &log);
    let port = 5432;
    let mut pg_ctl = as_owner(&bin.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!(
            "-k {} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=200",
            dir.display()
        ))
        .args(["-w", "-t", "60", "start"]);
    run(pg_ctl, "pg_ctl start", &log);
    // Stop the server and remove its folder once this test binary has exited.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {owner}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        owner = if is_root() { "runuser -u postgres -- " } else { "" },
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    // `setsid -f` forks the watcher into its own session and returns at once.
    let st = Command::new("setsid")
        .args(["-f", "sh", "-c", &stop])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the server's watcher");
    assert!(st.success(), "setsid failed");
    PgServer { dir, port }
}

fn url(db: &str) -> String {
    let s = SERVER.get_or_init(start);
    format!(
        "postgres://postgres@localhost/{db}?host={}&port={}",
        s.dir.display(),
        s.port
    )
}

/// A new, empty database on the private server; returns its URL.
pub async fn fresh_database() -> String {
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&url("postgres"))
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    admin.close().await.ok();
    url(&name)
}
