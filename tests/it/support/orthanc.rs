//! A private Orthanc as the PACS (Debian's `orthanc`, installed by `make setup`): its own DICOM
//! and HTTP ports on loopback, its own storage and index in the test's folder, no plugins. What
//! it holds is read back through its REST API, so a test sees the archive as a PACS user would.

use super::daemon::wait_until;
use super::dicom::{free_port, wait_listening};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Orthanc {
    child: Child,
    pub http: u16,
    pub dicom: u16,
    pub log: PathBuf,
    /// `user:password` when Orthanc asks for HTTP basic authentication.
    basic: Option<String>,
    /// The TLS reverse proxy in front of the HTTP port, and its port (0 without one).
    proxy: Option<Child>,
    pub https_port: u16,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        for c in std::iter::once(&mut self.child).chain(self.proxy.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One instance Orthanc stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub modality: String,
    pub transfer_syntax: String,
}

/// Starts Orthanc with AE title `ORTHANC`, checking the called AE title (as a strict PACS
/// does). `accepted` limits the transfer syntaxes it accepts (None: Orthanc's defaults, which
/// take every common compressed syntax).
pub fn start_orthanc(root: &Path, accepted: Option<&[&str]>) -> Orthanc {
    let mut extra = serde_json::json!({});
    if let Some(ts) = accepted {
        extra["AcceptedTransferSyntaxes"] = serde_json::json!(ts);
    }
    launch(root, extra, None)
}

/// Orthanc with its DICOMweb plugin (Debian's `orthanc-dicomweb`) at `/dicom-web` and HTTP
/// basic authentication for `user`. With `tls_pem` (certificate and key) it is also reachable
/// over HTTPS at `https_port`, through a TLS reverse proxy (socat) as Orthanc's manual
/// recommends: Debian 12's Orthanc 1.10.1 serving HTTPS itself dies (SIGSEGV in a civetweb
/// worker) on the handshake of a rustls client, which is what plateqc is.
pub fn start_orthanc_dicomweb(root: &Path, user: (&str, &str), tls_pem: Option<&Path>) -> Orthanc {
    let extra = serde_json::json!({
        "AuthenticationEnabled": true,
        "RegisteredUsers": { user.0: user.1 },
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
    });
    let auth = format!("{}:{}", user.0, user.1);
    let mut o = launch(root, extra, Some(auth));
    if let Some(pem) = tls_pem {
        let port = free_port();
        let proxy = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}",
                pem.display()
            ))
            .arg(format!("TCP:127.0.0.1:{}", o.http))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed by `make setup`");
        o.proxy = Some(proxy);
        wait_listening(port, "the TLS proxy");
        o.https_port = port;
    }
    o
}

fn launch(root: &Path, extra: Value, basic: Option<String>) -> Orthanc {
    let dir = root.join(format!("orthanc-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (http, dicom) = (free_port(), free_port());
    let mut cfg = serde_json::json!({
        "Name": "plateqc-test-pacs",
        "StorageDirectory": dir.join("storage"),
        "IndexDirectory": dir.join("index"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": true,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "Plugins": [],
        "StableAge": 1,
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let cfg_path = dir.join("orthanc.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let log = dir.join("orthanc.log");
    let child = Command::new("Orthanc")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("Orthanc (Debian package orthanc) is installed by `make setup`");
    let o = Orthanc {
        child,
        http,
        dicom,
        log,
        basic,
        proxy: None,
        https_port: 0,
    };
    wait_listening(dicom, "Orthanc");
    wait_until("Orthanc's REST API", Duration::from_secs(60), || {
        o.try_get("/system").is_some()
    });
    o
}

impl Orthanc {
    fn try_get(&self, path: &str) -> Option<Vec<u8>> {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let auth = self
            .basic
            .as_ref()
            .map(|b| {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD.encode(b);
                format!("Authorization: Basic {b}\r\n")
            })
            .unwrap_or_default();
        c.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").as_bytes())
            .ok()?;
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]);
        head.starts_with("HTTP/1.")
            .then_some(())
            .filter(|_| head.split_whitespace().nth(1) == Some("200"))?;
        Some(raw[split + 4..].to_vec())
    }

    /// The body of a successful GET.
    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        self.try_get(path)
            .unwrap_or_else(|| panic!("Orthanc GET {path} failed; log:\n{}", self.log_text()))
    }

    pub fn get(&self, path: &str) -> Value {
        serde_json::from_slice(&self.get_bytes(path)).unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every instance Orthanc holds, with the tags a test asks about.
    pub fn instances(&self) -> Vec<Stored> {
        let ids = self.get("/instances");
        ids.as_array()
            .unwrap()
            .iter()
            .map(|id| {
                let id = id.as_str().unwrap().to_string();
                let tags = self.get(&format!("/instances/{id}/simplified-tags"));
                let tag = |k: &str| tags[k].as_str().unwrap_or_default().to_string();
                let ts = self.get_bytes(&format!("/instances/{id}/metadata/TransferSyntax"));
                Stored {
                    sop_instance_uid: tag("SOPInstanceUID"),
                    study_instance_uid: tag("StudyInstanceUID"),
                    modality: tag("Modality"),
                    transfer_syntax: String::from_utf8_lossy(&ts).trim().to_string(),
                    id,
                }
            })
            .collect()
    }

    /// Writes the stored DICOM file of instance `id` to `dst`.
    pub fn download(&self, id: &str, dst: &Path) {
        std::fs::write(dst, self.get_bytes(&format!("/instances/{id}/file"))).unwrap();
    }
}
