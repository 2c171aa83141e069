//! After a plate is routed: its rejection note is written and its outbox rows are created
//! (dispatch), then a sender works through the outbox by C-STORE. Both are driven by database
//! state, so a restart at any point redoes only what was not committed: a dispatch rewrites
//! the same note (its UIDs derive from the plate), and an instance is marked sent only after
//! the destination answered success, never to be sent again.

use super::notes::{self, NoteOptions, Rejection, WrittenNote};
use crate::decode::prescan;
use crate::net::dimse::{status, Command};
use crate::net::scu::{self, ScuError};
use crate::outcome::Verdict;
use crate::record::outbox::{Failure, Instance, OutItem, Routed};
use crate::record::{RecordError, Recorder};
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::ClientAssociationOptions;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
    /// Calling AE title used towards the destinations; unset, this node's own `[dicom]
    /// ae_title`, so a PACS that checks who calls sees the same name both ways.
    pub calling_ae_title: Option<String>,
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
            calling_ae_title: None,
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

impl ForwardOptions {
    /// Checks shared by `check-config` and start-up.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let ae_ok = crate::net::valid_ae_title;
        if let Some(t) = self.calling_ae_title.as_deref().filter(|t| !ae_ok(t)) {
            p.push(format!(
                "[forward] calling_ae_title {t:?} must be 1-16 characters"
            ));
        }
        for dest in &self.destinations {
            if !ae_ok(&dest.ae_title) {
                p.push(format!(
                    "[forward] destination {}: ae_title {:?} must be 1-16 characters",
                    dest.name, dest.ae_title
                ));
            }
            if !host_and_port(&dest.address) {
                p.push(format!(
                    "[forward] destination {}: address {:?} is not host:port (a port 1-65535)",
                    dest.name, dest.address
                ));
            }
        }
        let mut names: Vec<&str> = self.destinations.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() != self.destinations.len() {
            p.push("[forward] destination names must be unique".into());
        }
        if self.max_attempts < 1 {
            p.push("[forward] max_attempts must be at least 1".into());
        }
        if !(4096..=16_777_216).contains(&self.max_pdu) {
            p.push(format!(
                "[forward] max_pdu {} must be 4096..=16777216",
                self.max_pdu
            ));
        }
        p
    }
}

/// `host:port` with a host (a name, an IPv4 address or a bracketed IPv6 one) and a port
/// 1-65535: `127.0.0.1:abc` or `pacs:0` would only fail at the first store.
fn host_and_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && !host.contains(':')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Everything the network side of routing needs.
pub struct Forwarder {
    pub recorder: Recorder,
    pub forward: ForwardOptions,
    pub notes: NoteOptions,
    /// Root of the rejection notes (`[notes] folder`, or `<route root>/rejection-notes`);
    /// notes are filed by day below it.
    pub notes_root: PathBuf,
    /// The calling AE title of every association (see [`ForwardOptions::calling_ae_title`]).
    pub calling_ae_title: String,
}

fn later(secs: u64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs as i64))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Forwarder {
    /// Where today's notes go.
    fn notes_folder(&self) -> PathBuf {
        self.notes_root
            .join(chrono::Utc::now().format("%Y-%m-%d").to_string())
    }

    /// Writes notes and outbox rows for every routed, undispatched job. Returns how many.
    pub async fn dispatch_pending(&self) -> Result<usize, ForwardError> {
        // Routed paths are this node's: each daemon dispatches only its own jobs.
        let due = self.recorder.undispatched().await?;
        let n = due.len();
        for job in due {
            self.dispatch_one(job).await?;
        }
        Ok(n)
    }

    async fn dispatch_one(&self, job: Routed) -> Result<(), ForwardError> {
        let (fwd, note_opts) = (&self.forward, &self.notes);
        let verdict: Verdict = job.verdict.parse().unwrap_or(Verdict::Error);
        let unusable = verdict == Verdict::Unusable;
        let mut written: Vec<WrittenNote> = Vec::new();
        if unusable && note_opts.enabled {
            let rejection = Rejection {
                plate_path: PathBuf::from(&job.routed_path),
                reason_code: job.reason_code.clone(),
                artifact_types: self.recorder.artifact_types(job.plate_row).await?,
                score: job.unusable_score,
                threshold: job.threshold,
                model: format!(
                    "{} {}",
                    job.model_name.as_deref().unwrap_or("?"),
                    job.model_version.as_deref().unwrap_or("?")
                ),
                montage_path: job.montage_path.as_ref().map(PathBuf::from),
            };
            let (folder, capture) = (self.notes_folder(), note_opts.secondary_capture);
            let made = tokio::task::spawn_blocking(move || {
                notes::write_notes(&rejection, &folder, capture)
            })
            .await;
            match made {
                Ok(Ok(w)) => written = w,
                // The plate is judged and routed; a note that cannot be made (the routed file
                // was removed by hand, the disk is full) is logged for a person, not retried
                // forever.
                Ok(Err(e)) => {
                    tracing::error!(job = job.job_id, error = %e, "rejection note not written")
                }
                Err(e) => tracing::error!(job = job.job_id, error = %e, "rejection note crashed"),
            }
        }
        let notes: Vec<Instance> = written
            .iter()
            .map(|n| Instance {
                kind: n.kind,
                path: n.path.display().to_string(),
                sop_class_uid: n.sop_class_uid.clone(),
                sop_instance_uid: n.sop_instance_uid.clone(),
            })
            .collect();
        let send_plate =
            verdict == Verdict::Usable || (unusable && fwd.unusable == UnusablePolicy::Forward);
        let mut items: Vec<Instance> = Vec::new();
        if send_plate {
            if let (Some(class), Some(uid)) = (&job.sop_class_uid, &job.sop_instance_uid) {
                items.push(Instance {
                    kind: "plate",
                    path: job.routed_path.clone(),
                    sop_class_uid: class.clone(),
                    sop_instance_uid: uid.clone(),
                });
            }
        }
        if fwd.send_notes {
            items.extend(notes.iter().cloned());
        }
        let queue: Vec<(&str, Vec<Instance>)> = fwd
            .destinations
            .iter()
            .map(|d| (d.name.as_str(), items.clone()))
            .collect();
        self.recorder.dispatch(&job, &notes, &queue).await?;
        Ok(())
    }

    /// Records an item's fate; for a failure, whether it was given up and the retry delay.
    async fn settle(&self, item: &OutItem, outcome: &Sent) -> Result<(bool, u64), ForwardError> {
        let opts = &self.forward;
        let (why, code, permanent) = match outcome {
            Sent::Done => {
                self.recorder.mark_sent(item.id).await?;
                return Ok((false, 0));
            }
            Sent::Retry(why, code) => (why, code.map(|c| format!("{c:#06x}")), false),
            Sent::Fail(why) => (why, None, true),
        };
        let attempts = item.attempts + 1;
        let give_up = permanent || attempts >= opts.max_attempts;
        let delay = opts
            .retry_base_secs
            .saturating_mul(1u64 << (attempts - 1).clamp(0, 20))
            .min(opts.retry_max_secs);
        let failure = Failure {
            give_up,
            attempts,
            next_attempt_at: later(delay),
            status: code,
            error: why,
        };
        self.recorder.mark_failed(item.id, &failure).await?;
        if give_up {
            tracing::error!(outbox = item.id, attempts, error = %why, "forwarding given up; the item is marked failed");
        }
        Ok((give_up, delay))
    }

    /// Sends the due items of one destination over one association. Returns how many were
    /// sent.
    async fn send_destination(
        &self,
        dest: &Destination,
        cancel: &CancellationToken,
    ) -> Result<usize, ForwardError> {
        let opts = &self.forward;
        let items = self.recorder.due_items(&dest.name).await?;
        if items.is_empty() {
            return Ok(0);
        }
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(self.calling_ae_title.clone())
            .called_ae_title(dest.ae_title.clone())
            .max_pdu_length(opts.max_pdu)
            .connection_timeout(Duration::from_secs(opts.connect_timeout_secs.max(1)))
            .read_timeout(Duration::from_secs(60))
            .write_timeout(Duration::from_secs(60));
        // One presentation context per (class, transfer syntax): a peer accepts or refuses
        // each on its own, and a file is sent in its own syntax whenever the peer takes it.
        for (class, syntaxes) in offers(&items).await {
            for ts in syntaxes {
                options = options.with_presentation_context(class.clone(), vec![ts]);
            }
        }
        let mut assoc = match options.establish_async(dest.address.as_str()).await {
            Ok(a) => a,
            Err(e) => {
                let why = format!(
                    "cannot associate with {} ({}): {e}",
                    dest.name, dest.address
                );
                for it in &items {
                    self.settle(it, &Sent::Retry(why.clone(), None)).await?;
                }
                return Ok(0);
            }
        };
        let mut sent = 0;
        let mut broken = None;
        for (i, it) in items.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            match store_one(&mut assoc, it, (i + 1) as u16).await {
                Ok(outcome) => {
                    let (_, delay) = self.settle(it, &outcome).await?;
                    match &outcome {
                        Sent::Done => sent += 1,
                        Sent::Retry(why, _) => {
                            tracing::warn!(outbox = it.id, retry_in_secs = delay, error = %why, "not stored; will retry")
                        }
                        Sent::Fail(_) => {}
                    }
                }
                Err(why) => {
                    // This item's fate is unknown to us; it is retried (the destination dedupes
                    // by SOP Instance UID if it did store it).
                    self.settle(it, &Sent::Retry(why.to_string(), None)).await?;
                    broken = Some(why);
                    break;
                }
            }
        }
        match broken {
            Some(why) => {
                tracing::warn!(destination = %dest.name, error = %why, "association broken");
                let _ = assoc.abort().await;
            }
            None => {
                let _ = assoc.release().await;
            }
        }
        if sent > 0 {
            tracing::info!(destination = %dest.name, sent, "forwarded");
        }
        Ok(sent)
    }

    /// Runs dispatch and sending until `cancel`; `wake` is notified when a plate was routed.
    pub fn spawn(
        self: Arc<Self>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.dispatch_pending().await {
                    tracing::error!(error = %e, "dispatch failed");
                }
                for dest in &self.forward.destinations {
                    if cancel.is_cancelled() {
                        break;
                    }
                    if let Err(e) = self.send_destination(dest, &cancel).await {
                        tracing::error!(destination = %dest.name, error = %e, "forwarding failed");
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            // A last dispatch so every routed plate leaves with its note and outbox rows
            // written.
            if let Err(e) = self.dispatch_pending().await {
                tracing::error!(error = %e, "dispatch failed");
            }
        })
    }
}

/// One outbox item's fate.
enum Sent {
    Done,
    Retry(String, Option<u16>),
    /// No point retrying (the destination cannot take this transfer syntax).
    Fail(String),
}

/// A file to send could not be read or re-encoded.
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Meta {
        path: String,
        source: prescan::PrescanError,
    },
    #[error("{0}")]
    Parse(Box<dicom_object::ReadError>),
    #[error("unknown transfer syntax {0}")]
    UnknownSyntax(String),
    #[error("{0}")]
    Write(Box<dicom_object::WriteError>),
}

/// The SOP classes of the items, each with the transfer syntaxes to offer: the files' own
/// first, then the native ones.
async fn offers(items: &[OutItem]) -> Vec<(String, Vec<String>)> {
    let mut offers: Vec<(String, Vec<String>)> = Vec::new();
    for it in items {
        let path = it.path.clone();
        let ts = tokio::task::spawn_blocking(move || file_transfer_syntax(&path))
            .await
            .ok()
            .flatten();
        let entry = match offers.iter_mut().find(|(c, _)| *c == it.sop_class_uid) {
            Some(e) => e,
            None => {
                offers.push((it.sop_class_uid.clone(), Vec::new()));
                offers.last_mut().expect("just pushed")
            }
        };
        if let Some(ts) = ts {
            if !entry.1.contains(&ts) {
                entry.1.insert(0, ts);
            }
        }
    }
    for (_, syntaxes) in offers.iter_mut() {
        for n in NATIVE {
            if !syntaxes.iter().any(|t| t == n) {
                syntaxes.push(n.to_string());
            }
        }
    }
    offers
}

const NATIVE: [&str; 3] = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
];

/// The bytes of a file to send: its transfer syntax and data set.
struct Payload {
    ts: String,
    bytes: Vec<u8>,
    data_start: usize,
}

fn load(path: &str) -> Result<Payload, PayloadError> {
    let bytes = std::fs::read(path).map_err(|source| PayloadError::Read {
        path: path.into(),
        source,
    })?;
    let (ts, data_start) = prescan::read_meta(&bytes).map_err(|source| PayloadError::Meta {
        path: path.into(),
        source,
    })?;
    Ok(Payload {
        ts: ts.trim_end_matches(['\0', ' ']).to_string(),
        bytes,
        data_start,
    })
}

/// The transfer syntax named in a file's meta group, read from its first bytes only: the offer
/// is built before sending, and reading whole plates for it would read each one twice.
fn file_transfer_syntax(path: &str) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(16 * 1024);
    std::fs::File::open(path)
        .ok()?
        .take(16 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    let (ts, _) = prescan::read_meta(&head).ok()?;
    Some(ts.trim_end_matches(['\0', ' ']).to_string())
}

/// Re-encodes a native (uncompressed) data set into another native transfer syntax, for a
/// destination that did not accept the file's own.
fn reencode(p: &Payload, to: &str) -> Result<Vec<u8>, PayloadError> {
    use dicom_encoding::TransferSyntaxIndex;
    let obj = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&p.bytes[128..])
        .map_err(|e| PayloadError::Parse(Box::new(e)))?;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(to)
        .ok_or_else(|| PayloadError::UnknownSyntax(to.into()))?;
    let mut out = Vec::with_capacity(p.bytes.len());
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| PayloadError::Write(Box::new(e)))?;
    Ok(out)
}

/// Sends one item over an established association. `Err` means the association is broken.
async fn store_one(
    assoc: &mut AsyncClientAssociation<TcpStream>,
    item: &OutItem,
    message_id: u16,
) -> Result<Sent, ScuError> {
    let path = item.path.clone();
    let payload = match tokio::task::spawn_blocking(move || load(&path)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Ok(Sent::Retry(e.to_string(), None)),
        Err(e) => return Ok(Sent::Retry(e.to_string(), None)),
    };
    let accepted: Vec<(u8, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && pc.abstract_syntax == item.sop_class_uid
        })
        .map(|pc| (pc.id, pc.transfer_syntax.clone()))
        .collect();
    let (pc, data): (u8, Vec<u8>) =
        if let Some((id, _)) = accepted.iter().find(|(_, ts)| *ts == payload.ts) {
            (*id, payload.bytes[payload.data_start..].to_vec())
        } else if let Some((id, ts)) = accepted
            .iter()
            .find(|(_, ts)| NATIVE.contains(&payload.ts.as_str()) && NATIVE.contains(&ts.as_str()))
        {
            match reencode(&payload, ts) {
                Ok(d) => (*id, d),
                Err(e) => return Ok(Sent::Fail(format!("cannot re-encode to {ts}: {e}"))),
            }
        } else {
            return Ok(Sent::Fail(format!(
                "the destination accepts {} in none of the offered transfer syntaxes (file: {})",
                item.sop_class_uid, payload.ts
            )));
        };
    let rq = Command::store_rq(message_id, &item.sop_class_uid, &item.sop_instance_uid);
    let rsp = scu::c_store(assoc, pc, &rq, &data).await?;
    if status::is_stored(rsp.status) {
        Ok(Sent::Done)
    } else {
        Ok(Sent::Retry(
            format!("status {:#06x} {}", rsp.status, rsp.error_comment),
            Some(rsp.status),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_addresses_are_host_and_port() {
        for good in [
            "10.0.0.5:104",
            "pacs.clinic.local:11112",
            "[::1]:104",
            "pacs_1:4242",
        ] {
            assert!(host_and_port(good), "{good}");
        }
        for bad in [
            "127.0.0.1:abc",
            "pacs",
            "pacs:0",
            ":104",
            "pacs:70000",
            "::1:104",
            "a b:104",
        ] {
            assert!(!host_and_port(bad), "{bad}");
        }
        let mut f = ForwardOptions::default();
        f.destinations.push(Destination {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            address: "127.0.0.1:abc".into(),
        });
        assert_eq!(f.validate().len(), 1, "{:?}", f.validate());
    }

    #[test]
    fn native_payloads_reencode_between_little_endian_syntaxes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/17_explicit_le_u16_native.dcm"
        );
        let p = load(path).unwrap();
        assert_eq!(p.ts, "1.2.840.10008.1.2.1");
        let implicit = reencode(&p, "1.2.840.10008.1.2").unwrap();
        // Same values, 4 bytes less per short-form element header is not guaranteed, but the
        // pixel data must be there byte for byte.
        let px = &p.bytes[p.bytes.len() - 1024..];
        assert!(implicit.windows(px.len()).any(|w| w == px));
        assert_ne!(implicit, p.bytes[p.data_start..].to_vec());
    }
}
