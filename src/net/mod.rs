//! The DICOM network side: a C-STORE/C-ECHO service class provider that drops received
//! instances into the inbox ([`scp`]), rejection notes for unusable plates ([`notes`]), and a
//! durable outbox that forwards accepted plates (and, if configured, the notes) to the PACS
//! ([`forward`]). The network is an ingest and a route; judging stays in the pipeline.

pub mod dimse;
pub mod forward;
pub mod notes;
pub mod scp;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Storage SOP classes for a modality code, For Presentation first.
pub fn storage_classes(modality: &str) -> &'static [&'static str] {
    match modality {
        "IO" => &[
            "1.2.840.10008.5.1.4.1.1.1.3",
            "1.2.840.10008.5.1.4.1.1.1.3.1",
        ],
        // Panoramic and cephalometric images use the Digital X-Ray classes.
        "DX" | "PX" => &[
            "1.2.840.10008.5.1.4.1.1.1.1",
            "1.2.840.10008.5.1.4.1.1.1.1.1",
        ],
        "CR" => &["1.2.840.10008.5.1.4.1.1.1"],
        _ => &[],
    }
}

/// The storage SOP classes accepted for the modalities the decoder judges: receiving what
/// would only be quarantined helps no one. An empty list (any modality) accepts all four.
pub fn accepted_classes(modalities: &[String]) -> Vec<&'static str> {
    let all = ["IO", "DX", "PX", "CR"];
    let wanted: Vec<&str> = if modalities.is_empty() {
        all.to_vec()
    } else {
        modalities.iter().map(String::as_str).collect()
    };
    let mut out: Vec<&'static str> = Vec::new();
    for m in wanted {
        for c in storage_classes(m) {
            if !out.contains(c) {
                out.push(c);
            }
        }
    }
    out
}

/// `[dicom]`: the receiving side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomOptions {
    /// `host:port` to listen on; empty turns the receiver off. Loopback unless the site's
    /// network is meant to reach it.
    pub listen: String,
    /// This node's AE title; associations calling another title are rejected.
    pub ae_title: String,
    /// Calling AE titles allowed to connect; empty allows any.
    pub allowed_calling: Vec<String>,
    /// Associations served at once; more are rejected as "local limit exceeded".
    pub max_associations: usize,
    /// Largest PDU this node receives.
    pub max_pdu: u32,
    /// An association idle this long (no PDU) is aborted, so a stalled sender holds nothing.
    pub idle_timeout_secs: u64,
}

impl Default for DicomOptions {
    fn default() -> Self {
        DicomOptions {
            listen: String::new(),
            ae_title: "PLATEQC".into(),
            allowed_calling: Vec::new(),
            max_associations: 8,
            max_pdu: 65_536,
            idle_timeout_secs: 60,
        }
    }
}

/// One remote store SCP (usually the PACS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Short name used in the outbox and the logs.
    pub name: String,
    pub ae_title: String,
    /// `host:port`.
    pub address: String,
}

/// What happens to unusable plates on the network side.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnusablePolicy {
    /// Keep them off the PACS; the rejection note is written (and sent, if configured).
    Hold,
    /// Send them on together with their rejection note, so the archive hides them itself.
    Forward,
}

/// `[forward]`: the sending side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardOptions {
    pub destinations: Vec<Destination>,
    /// Calling AE title used towards the destinations.
    pub calling_ae_title: String,
    pub unusable: UnusablePolicy,
    /// Also send rejection notes (and their secondary captures) to the destinations.
    pub send_notes: bool,
    /// First retry delay; doubled per failed attempt up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// After this many failed attempts an item is marked failed and left for a person.
    pub max_attempts: i64,
    pub connect_timeout_secs: u64,
    pub max_pdu: u32,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            destinations: Vec::new(),
            calling_ae_title: "PLATEQC".into(),
            unusable: UnusablePolicy::Hold,
            send_notes: true,
            retry_base_secs: 5,
            retry_max_secs: 600,
            max_attempts: 50,
            connect_timeout_secs: 10,
            max_pdu: 65_536,
        }
    }
}

/// `[notes]`: rejection notes for unusable plates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoteOptions {
    /// Write a Key Object Selection "Rejected for Quality Reasons" per unusable plate.
    pub enabled: bool,
    /// Also write the montage as a Secondary Capture image in the plate's study.
    pub secondary_capture: bool,
    /// Folder of the notes; empty means `<route root>/rejection-notes`.
    pub folder: PathBuf,
}

impl Default for NoteOptions {
    fn default() -> Self {
        NoteOptions {
            enabled: true,
            secondary_capture: true,
            folder: PathBuf::new(),
        }
    }
}

/// Checks shared by `check-config` and start-up.
pub fn validate(d: &DicomOptions, f: &ForwardOptions) -> Vec<String> {
    let mut p = Vec::new();
    let ae_ok = |t: &str| !t.trim().is_empty() && t.len() <= 16 && !t.contains('\\');
    if !ae_ok(&d.ae_title) {
        p.push(format!(
            "[dicom] ae_title {:?} must be 1-16 characters",
            d.ae_title
        ));
    }
    if !d.listen.is_empty() && d.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(format!("[dicom] listen {:?} is not host:port", d.listen));
    }
    if d.max_associations == 0 {
        p.push("[dicom] max_associations must be at least 1".into());
    }
    if !(4096..=16_777_216).contains(&d.max_pdu) {
        p.push(format!(
            "[dicom] max_pdu {} must be 4096..=16777216",
            d.max_pdu
        ));
    }
    if !ae_ok(&f.calling_ae_title) {
        p.push(format!(
            "[forward] calling_ae_title {:?} must be 1-16 characters",
            f.calling_ae_title
        ));
    }
    for dest in &f.destinations {
        if !ae_ok(&dest.ae_title) {
            p.push(format!(
                "[forward] destination {}: ae_title {:?} must be 1-16 characters",
                dest.name, dest.ae_title
            ));
        }
        if dest.address.rsplit_once(':').is_none() {
            p.push(format!(
                "[forward] destination {}: address {:?} is not host:port",
                dest.name, dest.address
            ));
        }
    }
    let mut names: Vec<&str> = f.destinations.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    names.dedup();
    if names.len() != f.destinations.len() {
        p.push("[forward] destination names must be unique".into());
    }
    if f.max_attempts < 1 {
        p.push("[forward] max_attempts must be at least 1".into());
    }
    if !(4096..=16_777_216).contains(&f.max_pdu) {
        p.push(format!(
            "[forward] max_pdu {} must be 4096..=16777216",
            f.max_pdu
        ));
    }
    p
}

/// A new UID under the UUID-derived root 2.25 (PS3.5 B.2): 128 random bits as a decimal.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    if getrandom_fill(&mut b).is_err() {
        // Fall back to time and process: still unique on this node.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ ((std::process::id() as u128) << 96)).to_le_bytes();
    }
    format!("2.25.{}", u128::from_le_bytes(b))
}

/// A UID derived from `seed`: the same note for the same plate after a crash and redo.
pub fn derived_uid(seed: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_le_bytes(b))
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_distinct() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        for u in [&a, &b, &derived_uid("x")] {
            assert!(u.len() <= 64, "{u}");
            assert!(u.chars().all(|c| c.is_ascii_digit() || c == '.'));
            assert!(
                u.split('.')
                    .all(|c| !c.is_empty() && (c == "0" || !c.starts_with('0'))),
                "bad component in {u}"
            );
        }
        assert_eq!(derived_uid("plate"), derived_uid("plate"));
    }

    #[test]
    fn classes_follow_the_decoded_modalities() {
        assert_eq!(accepted_classes(&["IO".into()]).len(), 2);
        assert_eq!(accepted_classes(&[]).len(), 5);
        assert!(accepted_classes(&["PX".into()]).contains(&"1.2.840.10008.5.1.4.1.1.1.1"));
    }
}
