//! STOW-RS destinations (DICOMweb Store Instances, PS3.18 §10.5): a destination with a `url`
//! gets each outbox item as one `multipart/related; type="application/dicom"` POST to
//! `<url>/studies`, the same durable outbox and retry rules as a C-STORE destination. An item
//! counts as stored only when the answer lists its SOP Instance UID in the Referenced SOP
//! Sequence; an answer that lists it as failed, or does not list it, is retried.
//!
//! The HTTP client is blocking (ureq, rustls with Mozilla's roots built in, or the site's own
//! CA from `ca_file`): the forwarder calls it off the async runtime.

use super::forward::Destination;
use super::trouble::Trouble;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one request may take in all (a plate is a few MB at most).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The most of an answer read: a STOW-RS answer names the instances of one request.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// A destination's settings that cannot be used (a secret or CA file unreadable).
#[derive(Debug, thiserror::Error)]
pub enum StowSetupError {
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ca_file {path}: {why}")]
    Ca { path: PathBuf, why: String },
}

/// The fate of one instance sent.
#[derive(Debug, PartialEq)]
pub enum StowAnswer {
    Stored,
    /// The server answered but did not store it; `permanent` when retrying cannot help.
    NotStored {
        status: u16,
        why: String,
        permanent: bool,
    },
    /// The destination as a whole does not take requests (unreachable, credentials, URL,
    /// server error): the rest of this pass waits too.
    Trouble(Trouble),
}

/// One STOW-RS destination's client: its agent (connection reuse, TLS roots, timeouts), the
/// store URL and the Authorization header read from the secret files.
pub struct StowClient {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
}

fn read_secret(what: &'static str, path: &Path) -> Result<String, StowSetupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|source| StowSetupError::File {
            what,
            path: path.to_path_buf(),
            source,
        })
}

impl StowClient {
    /// Reads the destination's secrets and CA now, so that a changed password or token file
    /// is picked up on the next pass without a restart.
    pub fn new(
        dest: &Destination,
        connect_timeout: Duration,
    ) -> Result<StowClient, StowSetupError> {
        let authorization = match (&dest.username, &dest.password_file, &dest.token_file) {
            (Some(user), Some(pw), _) => {
                let pw = read_secret("password_file", pw)?;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
                Some(format!("Basic {pair}"))
            }
            (_, _, Some(token)) => Some(format!("Bearer {}", read_secret("token_file", token)?)),
            _ => None,
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &dest.ca_file {
            let pem = std::fs::read(ca).map_err(|source| StowSetupError::File {
                what: "ca_file",
                path: ca.clone(),
                source,
            })?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(StowSetupError::Ca {
                            path: ca.clone(),
                            why: e.to_string(),
                        })
                    }
                }
            }
            if certs.is_empty() {
                return Err(StowSetupError::Ca {
                    path: ca.clone(),
                    why: "no PEM certificate in it".into(),
                });
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(connect_timeout))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls.build())
            .user_agent(concat!("plateqc/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(StowClient {
            agent: config.into(),
            base: dest
                .url
                .clone()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            authorization,
        })
    }

    /// Stores one DICOM file (Part 10, with its preamble and meta group) and judges the
    /// answer for `sop_instance_uid`.
    pub fn store(&self, sop_instance_uid: &str, file: &[u8]) -> StowAnswer {
        let boundary = boundary_for(file);
        let mut body = Vec::with_capacity(file.len() + 256);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut rq = self
            .agent
            .post(format!("{}/studies", self.base))
            .header(
                "Content-Type",
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header("Accept", "application/dicom+json");
        if let Some(a) = &self.authorization {
            rq = rq.header("Authorization", a);
        }
        match rq.send(&body[..]) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_ANSWER_BYTES)
                    .read_to_string()
                    .unwrap_or_default();
                judge(status, &text, sop_instance_uid)
            }
            Err(e) => StowAnswer::Trouble(trouble_of(&e)),
        }
    }

    /// `check-config --probe`: a QIDO-RS search for one study with the same credentials and
    /// TLS settings (it reads nothing that matters); the round trip or what is wrong.
    pub fn probe(&self) -> Result<Duration, Trouble> {
        let started = Instant::now();
        let mut rq = self
            .agent
            .get(format!("{}/studies?limit=1", self.base))
            .header("Accept", "application/dicom+json");
        if let Some(a) = &self.authorization {
            rq = rq.header("Authorization", a);
        }
        match rq.call() {
            Ok(resp) if resp.status().is_success() => Ok(started.elapsed()),
            Ok(resp) => Err(Trouble::Http {
                status: resp.status().as_u16(),
            }),
            Err(e) => Err(trouble_of(&e)),
        }
    }
}

/// A multipart boundary that does not occur in the file: derived from its digest, lengthened
/// in the (practically impossible) case that it does.
fn boundary_for(file: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(file));
    let mut b = format!("plateqc-{}", &digest[..32]);
    while file.windows(b.len()).any(|w| w == b.as_bytes()) {
        b.push('x');
    }
    b
}

/// Why a request got no HTTP answer at all.
fn trouble_of(e: &ureq::Error) -> Trouble {
    match e {
        ureq::Error::HostNotFound => Trouble::Unresolved("host not found".into()),
        ureq::Error::Timeout(_) => Trouble::Unreachable,
        ureq::Error::ConnectionFailed => Trouble::Refused,
        ureq::Error::Tls(_) | ureq::Error::Pem(_) | ureq::Error::Rustls(_) => {
            Trouble::Tls(e.to_string())
        }
        // rustls' verdicts on the peer's certificate arrive wrapped in an io::Error
        other if other.to_string().contains("certificate") => Trouble::Tls(other.to_string()),
        ureq::Error::Io(io) => match Trouble::from_io(io) {
            Trouble::Broken(why) => Trouble::RequestFailed(why),
            t => t,
        },
        other => Trouble::RequestFailed(other.to_string()),
    }
}

/// The SOP Instance UIDs (0008,1155) listed in a sequence of a DICOM JSON answer.
fn listed<'a>(answer: &'a Value, sequence: &str) -> impl Iterator<Item = &'a Value> + 'a {
    answer[sequence]["Value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["00081155"]["Value"][0].is_string())
}

/// Judges a STOW-RS answer (PS3.18 §10.5.3) for one instance.
fn judge(status: u16, text: &str, uid: &str) -> StowAnswer {
    match status {
        401 | 403 | 404 | 405 | 407 | 500..=599 => {
            return StowAnswer::Trouble(Trouble::Http { status });
        }
        415 => {
            return StowAnswer::NotStored {
                status,
                why: "HTTP 415: the server takes neither this media type nor this transfer syntax"
                    .into(),
                permanent: true,
            };
        }
        _ => {}
    }
    let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let is_ours = |item: &&Value| item["00081155"]["Value"][0].as_str() == Some(uid);
    if (200..300).contains(&status) && listed(&answer, "00081199").any(|i| is_ours(&i)) {
        return StowAnswer::Stored;
    }
    let why = match listed(&answer, "00081198").find(|i| is_ours(i)) {
        Some(item) => match item["00081197"]["Value"][0].as_u64() {
            Some(code) => {
                format!("HTTP {status}: the server lists it as failed, reason {code:#06x}")
            }
            None => format!("HTTP {status}: the server lists it as failed"),
        },
        None => format!("HTTP {status}: the answer does not list the instance as stored"),
    };
    StowAnswer::NotStored {
        status,
        why,
        permanent: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1.2.3.4";

    fn seq(tag: &str, uid: &str, reason: Option<u16>) -> String {
        let reason = reason
            .map(|r| format!(",\"00081197\":{{\"vr\":\"US\",\"Value\":[{r}]}}"))
            .unwrap_or_default();
        format!(
            "\"{tag}\":{{\"vr\":\"SQ\",\"Value\":[{{\"00081155\":{{\"vr\":\"UI\",\"Value\":[\"{uid}\"]}}{reason}}}]}}"
        )
    }

    #[test]
    fn stored_only_when_the_answer_references_this_instance() {
        let ok = format!("{{{}}}", seq("00081199", UID, None));
        assert_eq!(judge(200, &ok, UID), StowAnswer::Stored);
        assert_eq!(judge(202, &ok, UID), StowAnswer::Stored);
        let other = format!("{{{}}}", seq("00081199", "9.9", None));
        assert!(matches!(
            judge(200, &other, UID),
            StowAnswer::NotStored {
                permanent: false,
                ..
            }
        ));
        assert!(matches!(
            judge(200, "not json", UID),
            StowAnswer::NotStored {
                permanent: false,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_instance_carries_its_reason_and_is_retried() {
        let failed = format!("{{{}}}", seq("00081198", UID, Some(0xA700)));
        match judge(409, &failed, UID) {
            StowAnswer::NotStored {
                status: 409,
                why,
                permanent: false,
            } => assert!(why.contains("0xa700"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_url_and_server_errors_are_destination_trouble() {
        for status in [401, 403, 404, 405, 500, 503] {
            assert_eq!(
                judge(status, "", UID),
                StowAnswer::Trouble(Trouble::Http { status })
            );
        }
        assert!(matches!(
            judge(415, "", UID),
            StowAnswer::NotStored {
                permanent: true,
                ..
            }
        ));
    }

    #[test]
    fn the_boundary_never_occurs_in_the_file() {
        let file = b"DICM some bytes".to_vec();
        let b = boundary_for(&file);
        let mut sneaky = file.clone();
        sneaky.extend_from_slice(b.as_bytes());
        let b2 = boundary_for(&sneaky);
        assert!(!sneaky.windows(b2.len()).any(|w| w == b2.as_bytes()));
    }

    #[test]
    fn basic_and_bearer_credentials_come_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let mut dest = Destination {
            name: "web".into(),
            url: Some("http://127.0.0.1:1/dicom-web/".into()),
            username: Some("plateqc".into()),
            password_file: Some(pw.clone()),
            ..Destination::default()
        };
        let c = StowClient::new(&dest, Duration::from_secs(1)).unwrap();
        assert_eq!(c.base, "http://127.0.0.1:1/dicom-web");
        assert_eq!(
            c.authorization.as_deref(),
            Some("Basic cGxhdGVxYzpzM2NyZXQ=")
        );
        dest.username = None;
        dest.password_file = None;
        dest.token_file = Some(dir.path().join("missing"));
        assert!(matches!(
            StowClient::new(&dest, Duration::from_secs(1)),
            Err(StowSetupError::File {
                what: "token_file",
                ..
            })
        ));
    }
}
