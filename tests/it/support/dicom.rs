//! The daemon on the network and its independent peers: DCMTK (`storescp` standing in for the
//! PACS, `echoscu`, `dcmdump`), pynetdicom (`net_peer.py`) and dicom3tools' `dciodvfy`.

use super::daemon::{
    files_under, site, spawn_daemon, sql, wait_until, wait_until_or, Daemon, Site,
};
use super::{python, stdout_of, support_file};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// dciodvfy's complaints about a file: its error and warning lines (plateqc's own objects
/// are held to no warnings at all).
pub fn dciodvfy_errors(path: &Path) -> (Vec<String>, String) {
    let out = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (dicom3tools) is installed by `make setup`");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = text
        .lines()
        .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
        .map(str::to_string)
        .collect();
    (errors, text)
}

/// `dcmdump`'s text of a file.
pub fn dcmdump(path: &Path) -> String {
    let mut cmd = Command::new("dcmdump");
    cmd.arg(path);
    String::from_utf8_lossy(&stdout_of(cmd, &format!("dcmdump {}", path.display()))).into_owned()
}

/// A TCP port free on loopback right now, below the kernel's ephemeral range (32768 and up on
/// Linux). Tests restart daemons on the same port, which stays unbound for a moment; a port
/// from the ephemeral range could meanwhile become the source port of any outgoing connection
/// on the machine (the suite makes many), and the restarted daemon could not bind it. Each call
/// moves on through the range, so the tests of one run never share a port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 32_768 - LOW;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Start at a place of this process's own, so runs side by side do not walk in step.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on loopback between {LOW} and 32767");
}

/// Waits until something accepts connections on `port`.
pub fn wait_listening(port: u16, who: &str) {
    wait_until(
        &format!("{who} listening on {port}"),
        Duration::from_secs(60),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// DCMTK's storescp standing in for the PACS; its verbose log counts the C-STOREs it took.
pub struct Pacs {
    child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_pacs(root: &Path, port: u16) -> Pacs {
    let dir = root.join("pacs");
    std::fs::create_dir_all(&dir).unwrap();
    let log = root.join(format!("pacs-{}.log", free_port()));
    let child = Command::new("storescp")
        .args(["-v", "+xa", "-aet", "PACS", "-od"])
        .arg(&dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("storescp (dcmtk) is installed by `make setup`");
    wait_listening(port, "storescp");
    Pacs { child, dir, log }
}

impl Pacs {
    /// Files the PACS stored whose storescp name prefix (`KO`, `SC`, `DXo` for intra-oral
    /// plates, ...) passes `keep`, with the SOP Instance UID that follows the prefix.
    pub fn stored(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        files_under(&self.dir)
            .into_iter()
            .filter_map(|p| {
                let name = p.file_name()?.to_string_lossy().into_owned();
                let (prefix, uid) = name.split_once('.')?;
                keep(prefix).then(|| uid.to_string())
            })
            .collect()
    }
    pub fn store_requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Received Store Request")
            .count()
    }
}

/// A site whose daemon listens on `port` and forwards to a PACS on `pacs_port`; `dicom` is
/// added to the `[dicom]` section, `extra` after the `[forward]` one.
pub fn net_site(port: u16, pacs_port: u16, dicom: &str, extra: &str) -> Site {
    let s = site();
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!(
        "[dicom]\nlisten = \"127.0.0.1:{port}\"\nae_title = \"PLATEQC\"\nallowed_calling = [\"SCANNER\", \"PYNET\"]\n{dicom}\n\
         [forward]\nretry_base_secs = 1\nretry_max_secs = 2\n\
         destinations = [{{ name = \"pacs\", ae_title = \"PACS\", address = \"127.0.0.1:{pacs_port}\" }}]\n{extra}"
    ));
    std::fs::write(&s.config, cfg).unwrap();
    s
}

/// The daemon of a `net_site`, logging at info into `<site>/daemon.log`, once it listens.
pub fn start_net_daemon(s: &Site, port: u16) -> (Daemon, PathBuf) {
    let log = s.root.join("daemon.log");
    let child = spawn_daemon(s, "info", std::fs::File::create(&log).unwrap().into());
    let mut d = Daemon { child };
    let log_of = || std::fs::read_to_string(&log).unwrap_or_default();
    // Not wait_listening: a daemon that exits (or hangs) at start says why in the failure.
    wait_until_or(
        Duration::from_secs(60),
        || {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!(
                    "plateqc exited ({status}) before listening on {port}; its log:\n{}",
                    log_of()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        },
        || {
            format!(
                "plateqc not listening on {port} after 60 s; its log:\n{}",
                log_of()
            )
        },
    );
    (d, log)
}

/// A C-ECHO from `calling` (echoscu) succeeded.
pub fn echo(port: u16, calling: &str) -> bool {
    Command::new("echoscu")
        .args(["-aet", calling, "-aec", "PLATEQC", "127.0.0.1"])
        .arg(port.to_string())
        .status()
        .expect("echoscu (dcmtk)")
        .success()
}

/// A count query's answer.
pub fn count(db: &Path, q: &str) -> usize {
    sql(db, q).parse().unwrap_or(0)
}

/// Waits (up to 4 minutes) until the daemon recording into `db` has dispatched `n` jobs:
/// judged, routed, and their notes and outbox entries written.
pub fn wait_dispatched(db: &Path, n: usize) {
    wait_until("plates dispatched", Duration::from_secs(240), || {
        count(db, "SELECT COUNT(*) FROM jobs WHERE dispatched = 1") == n
    });
}

/// Runs `net_peer.py` (pynetdicom) and returns its JSON report.
pub fn peer(args: &[&str], files: &[PathBuf]) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(support_file("net_peer.py")).args(args).args(files);
    serde_json::from_slice(&stdout_of(cmd, &format!("net_peer.py {args:?}"))).unwrap()
}

/// A copy of the plate `src` as another instance (written by pydicom): the same pixels and
/// header, a new SOP Instance UID, so it is judged like `src` but is not its duplicate.
pub fn copy_as_new_instance(src: &Path, dst: &Path, uid: &str) {
    let mut cmd = Command::new(python());
    cmd.args([
        "-c",
        "import sys, pydicom\n\
         ds = pydicom.dcmread(sys.argv[1])\n\
         ds.SOPInstanceUID = sys.argv[3]\n\
         ds.file_meta.MediaStorageSOPInstanceUID = sys.argv[3]\n\
         ds.save_as(sys.argv[2])",
    ])
    .arg(src)
    .arg(dst)
    .arg(uid);
    stdout_of(cmd, "pydicom, writing a plate as a new instance");
}

/// `n` plates in `dir` named `plate-000.dcm`, ... : copies of `sources` in turn (written by
/// pydicom in one process), each a new instance with its own SOP Instance UID.
pub fn plates_as_new_instances(sources: &[PathBuf], dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut cmd = Command::new(python());
    cmd.args([
        "-c",
        "import sys, pydicom\n\
         from pydicom.uid import generate_uid\n\
         out, n = sys.argv[1], int(sys.argv[2])\n\
         sources = [pydicom.dcmread(p) for p in sys.argv[3:]]\n\
         for i in range(n):\n\
         \x20   ds = sources[i % len(sources)]\n\
         \x20   uid = generate_uid()\n\
         \x20   ds.SOPInstanceUID = uid\n\
         \x20   ds.file_meta.MediaStorageSOPInstanceUID = uid\n\
         \x20   ds.save_as(f'{out}/plate-{i:03d}.dcm')",
    ])
    .arg(dir)
    .arg(n.to_string())
    .args(sources);
    stdout_of(cmd, "pydicom, writing plates as new instances");
    (0..n)
        .map(|i| dir.join(format!("plate-{i:03}.dcm")))
        .collect()
}
