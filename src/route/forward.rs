//! After a plate is routed: its rejection note is written and its outbox rows are created
//! (dispatch), then a sender works through the outbox by C-STORE. Both are driven by database
//! state, so a restart at any point redoes only what was not committed: a dispatch rewrites
//! the same note (its UIDs derive from the plate), and an instance is marked sent only after
//! the destination answered success, never to be sent again.

use super::notes::{self, NoteOptions, Rejection, WrittenNote};
use super::stow;
use super::trouble::Trouble;
use crate::decode::worker::DecodePool;
use crate::decode::{self, prescan, DecodePolicy};
use crate::net::dimse::{status, Command};
use crate::net::scu::{self, ScuError};
use crate::outcome::Verdict;
use crate::record::outbox::{Dispatch, Failure, Instance, OutItem, OutboxState, Routed};
use crate::record::{RecordError, Recorder};
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::ClientAssociationOptions;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One remote store: a Storage SCP (usually the PACS: `ae_title` and `address`) or a
/// DICOMweb STOW-RS endpoint (`url`, with optional credentials and CA).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Short name used in the outbox and the logs.
    pub name: String,
    #[serde(default)]
    pub ae_title: String,
    /// `host:port`.
    #[serde(default)]
    pub address: String,
    /// The DICOMweb base URL (`http(s)://host/dicom-web`); instances go to `<url>/studies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP basic authentication: the user, and a file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Bearer authentication: a file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the server's certificate, instead of the built-in roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Destination {
    /// Where it is, as the log and the hints name it: the URL or `host:port`.
    pub fn target(&self) -> &str {
        self.url.as_deref().unwrap_or(&self.address)
    }
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
            if dest.url.is_some() {
                p.extend(web_problems(dest));
                continue;
            }
            for (key, set) in [
                ("username", dest.username.is_some()),
                ("password_file", dest.password_file.is_some()),
                ("token_file", dest.token_file.is_some()),
                ("ca_file", dest.ca_file.is_some()),
            ] {
                if set {
                    p.push(format!(
                        "[forward] destination {}: {key} belongs to a DICOMweb destination (url)",
                        dest.name
                    ));
                }
            }
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
/// What is wrong with a STOW-RS destination's settings.
fn web_problems(dest: &Destination) -> Vec<String> {
    let mut p = Vec::new();
    let name = &dest.name;
    let url = dest.url.as_deref().unwrap_or_default();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {}
        _ => p.push(format!(
            "[forward] destination {name}: url {url:?} is not http(s)://host[:port]/path (the DICOMweb base, e.g. http://pacs:8042/dicom-web)"
        )),
    }
    if !dest.ae_title.is_empty() || !dest.address.is_empty() {
        p.push(format!(
            "[forward] destination {name}: url and ae_title/address are two kinds of destination; set one"
        ));
    }
    if dest.username.is_some() != dest.password_file.is_some() {
        p.push(format!(
            "[forward] destination {name}: username and password_file go together"
        ));
    }
    if dest.username.is_some() && dest.token_file.is_some() {
        p.push(format!(
            "[forward] destination {name}: basic (username) or bearer (token_file) authentication, not both"
        ));
    }
    if dest.ca_file.is_some() && !url.starts_with("https://") {
        p.push(format!(
            "[forward] destination {name}: ca_file needs an https:// url"
        ));
    }
    p
}

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

/// Where each destination stands, shared with `/metrics`: written by the forwarder, read at
/// every scrape.
#[derive(Debug, Default)]
pub struct ForwardStatus {
    destinations: Mutex<BTreeMap<String, DestinationStatus>>,
    /// This node's plates waiting for a person's decision before anything leaves for them.
    awaiting_review: std::sync::atomic::AtomicI64,
}

/// One destination as the forwarder last saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationStatus {
    /// Whether the last contact worked; None before the first.
    pub up: Option<bool>,
    /// What is wrong while it is not up.
    pub trouble: Option<Trouble>,
    /// This node's entries waiting to be sent, and given up on (refreshed every few seconds).
    pub pending: i64,
    pub failed: i64,
    /// Instances stored there since this process started.
    pub sent: u64,
}

impl ForwardStatus {
    /// Every configured destination, by name.
    pub fn snapshot(&self) -> Vec<(String, DestinationStatus)> {
        let map = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Plates waiting for review, as last counted (refreshed every few seconds).
    pub fn awaiting_review(&self) -> i64 {
        self.awaiting_review
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn update<T>(&self, name: &str, f: impl FnOnce(&mut DestinationStatus) -> T) -> T {
        let mut map = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(name.to_string()).or_default())
    }
}

/// How often the waiting-entry counts of `/metrics` are read from the database.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

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
    /// Per-destination state, for the log's state changes and `/metrics`.
    pub status: Arc<ForwardStatus>,
    /// How a compressed plate is decompressed for a destination that refuses its syntax.
    pub transcoder: Transcoder,
    /// Montages handed on by the pipeline for the notes' secondary captures.
    pub montages: Arc<super::MontageHandOff>,
}

/// What transcoding needs: the decode policy and the decode workers (`None`: in this process,
/// when `decode.isolate` is off). The file's pixels are decoded where every plate is.
#[derive(Clone, Default)]
pub struct Transcoder {
    pub policy: DecodePolicy,
    pub pool: Option<Arc<DecodePool>>,
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
    ///
    /// The plates due together are dispatched together: every note is written first, then all
    /// of them synced in one pass (each file, then each folder once), then the notes' rows, the
    /// outbox rows and the jobs' marks committed in one transaction. A crash before that commit
    /// leaves the jobs undispatched and the next run writes the same notes again (their UIDs
    /// come from the plate), so nothing is recorded that is not on disk and nothing twice.
    pub async fn dispatch_pending(&self) -> Result<usize, ForwardError> {
        // Routed paths are this node's: each daemon dispatches only its own jobs.
        let due = self.recorder.undispatched().await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut wanted: Vec<(i64, Rejection)> = Vec::new();
        for job in &due {
            // Taken whether or not a note is written, so nothing lingers for a job done with.
            let montage = self.montages.take(job.job_id);
            if let Some(mut r) = self.rejection_for(job).await? {
                r.montage_jpeg = montage;
                wanted.push((job.job_id, r));
            }
        }
        let written = if wanted.is_empty() {
            Default::default()
        } else {
            let (folder, capture) = (self.notes_folder(), self.notes.secondary_capture);
            tokio::task::spawn_blocking(move || write_notes_of(wanted, &folder, capture))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "rejection notes crashed");
                    Default::default()
                })
        };
        let batch: Vec<Dispatch> = due
            .iter()
            .map(|job| self.plan(job, written.get(&job.job_id).map_or(&[][..], Vec::as_slice)))
            .collect();
        self.recorder.dispatch(&batch).await?;
        Ok(due.len())
    }

    /// The rejection note a routed job needs, if any: an unusable plate, notes enabled, and
    /// not replaced while it waited for review.
    async fn rejection_for(&self, job: &Routed) -> Result<Option<Rejection>, ForwardError> {
        let verdict: Verdict = job.verdict.parse().unwrap_or(Verdict::Error);
        if job.replaced_in_review != 0 || verdict != Verdict::Unusable || !self.notes.enabled {
            return Ok(None);
        }
        Ok(Some(Rejection {
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
            montage_jpeg: None,
        }))
    }

    /// What a routed job leaves behind, given the notes written for it: the notes' rows and
    /// the items queued per destination.
    fn plan<'a>(&'a self, job: &'a Routed, written: &[WrittenNote]) -> Dispatch<'a> {
        if job.replaced_in_review != 0 {
            tracing::info!(
                job = job.job_id,
                "a later judgement of the same image replaced this one while it waited for \
                 review; nothing is sent for it"
            );
            return Dispatch {
                job,
                notes: Vec::new(),
                queue: Vec::new(),
            };
        }
        let fwd = &self.forward;
        let verdict: Verdict = job.verdict.parse().unwrap_or(Verdict::Error);
        let unusable = verdict == Verdict::Unusable;
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
        let queue = fwd
            .destinations
            .iter()
            .map(|d| (d.name.as_str(), items.clone()))
            .collect();
        Dispatch { job, notes, queue }
    }

    /// A destination failed: logged once when its trouble starts or changes kind, so an
    /// operator sees a wrong port or AE title at once and is not flooded while it lasts.
    fn trouble(&self, dest: &Destination, t: Trouble) {
        let news = self.status.update(&dest.name, |st| {
            let news = !st.trouble.as_ref().is_some_and(|old| old.same_kind(&t));
            st.up = Some(false);
            st.trouble = Some(t.clone());
            news
        });
        if news {
            tracing::warn!(
                destination = %dest.name,
                address = %dest.target(),
                called = %dest.ae_title,
                calling = %self.calling_ae_title,
                error = %t.describe(),
                hint = %t.hint(&dest.name, &dest.ae_title, &self.calling_ae_title, dest.target()),
                "cannot forward to this destination; its items wait and are retried"
            );
        }
    }

    /// A destination took what was sent: logged when it comes back from trouble.
    fn fine(&self, dest: &Destination, sent: usize) {
        let was = self.status.update(&dest.name, |st| {
            st.up = Some(true);
            st.sent += sent as u64;
            st.trouble.take()
        });
        if let Some(t) = was {
            tracing::info!(destination = %dest.name, after = %t.describe(), "forwarding to this destination works again");
        }
    }

    /// Refreshes the waiting-entry counts of every destination (and of entries queued for a
    /// destination no longer configured, so they show up instead of waiting unseen).
    async fn refresh_backlog(&self) -> Result<(), ForwardError> {
        let waiting = self.recorder.awaiting_review().await?;
        self.status
            .awaiting_review
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
        let rows = self.recorder.outbox_backlog().await?;
        for dest in &self.forward.destinations {
            self.status.update(&dest.name, |st| {
                st.pending = 0;
                st.failed = 0;
            });
        }
        for (name, state, n) in rows {
            self.status.update(&name, |st| match state {
                OutboxState::Pending => st.pending = n,
                OutboxState::Failed => st.failed = n,
                OutboxState::Sent => {}
            });
        }
        Ok(())
    }

    /// Held plates a reviewer has judged usable since are queued for the destinations (the
    /// override is the person's decision the hold waited for); their notes not yet sent are
    /// dropped, and a note already stored somewhere is named, since an archive that applies
    /// rejection notes keeps hiding the plate until it is removed there.
    async fn release_overridden(&self) -> Result<(), ForwardError> {
        if self.forward.destinations.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self
            .forward
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        for plate in self.recorder.released_plates().await? {
            let sent_notes = self.recorder.release(&plate, &names).await?;
            tracing::info!(
                sop_instance_uid = %plate.sop_instance_uid,
                destinations = names.len(),
                "held plate released by a reviewer's override to usable"
            );
            for (destination, note) in sent_notes {
                tracing::warn!(
                    %destination,
                    plate = %plate.sop_instance_uid,
                    note = %note,
                    "the plate's rejection note was already stored there; an archive that \
                     applies rejection notes (IHE IOCM) keeps the plate hidden until the note is \
                     deleted there"
                );
            }
        }
        Ok(())
    }

    /// At start: pending entries are due now (the restart may have fixed the configuration),
    /// and entries for destinations that are no longer configured are named in the log.
    async fn start_up(&self) -> Result<(), ForwardError> {
        let n = self.recorder.retry_pending_now().await?;
        if n > 0 {
            tracing::info!(
                items = n,
                "outbox entries waiting for a retry are tried now"
            );
        }
        for (name, state, n) in self.recorder.outbox_backlog().await? {
            if !self.forward.destinations.iter().any(|d| d.name == name) {
                tracing::warn!(
                    destination = %name,
                    state = state.as_str(),
                    items = n,
                    "outbox entries for a destination that is not configured; \
                     `plateqc outbox drop --destination {name}` drops them"
                );
            }
        }
        Ok(())
    }

    /// Records an item's fate; for a failure, whether it was given up and the retry delay.
    async fn settle(&self, item: &OutItem, outcome: &Sent) -> Result<(bool, u64), ForwardError> {
        let opts = &self.forward;
        let (why, code, permanent) = match outcome {
            Sent::Done(ts) => {
                self.recorder.mark_sent(item.id, ts).await?;
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
        if dest.url.is_some() {
            return self.send_web(dest, &items, cancel).await;
        }
        let mut options = association_options(dest, &self.calling_ae_title, opts)
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
                let t = Trouble::from_association(&e);
                let why = format!(
                    "cannot associate with {} ({}): {}",
                    dest.name,
                    dest.address,
                    t.describe()
                );
                for it in &items {
                    self.settle(it, &Sent::Retry(why.clone(), None)).await?;
                }
                self.trouble(dest, t);
                return Ok(0);
            }
        };
        let mut sent = 0;
        let mut broken = None;
        let mut refused: Option<Trouble> = None;
        for (i, it) in items.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            match store_one(&mut assoc, it, (i + 1) as u16, &self.transcoder).await {
                Ok(outcome) => {
                    let (_, delay) = self.settle(it, &outcome).await?;
                    match &outcome {
                        Sent::Done(_) => sent += 1,
                        Sent::Retry(why, code) => {
                            // The destination's state change is the WARN; each item is detail.
                            tracing::debug!(outbox = it.id, retry_in_secs = delay, error = %why, "not stored; will retry");
                            if let Some(code) = code {
                                refused = Some(Trouble::Status {
                                    code: *code,
                                    comment: String::new(),
                                });
                            }
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
                self.trouble(dest, Trouble::from_scu(&why));
                let _ = assoc.abort().await;
            }
            None => {
                let _ = assoc.release().await;
                match refused {
                    Some(t) => self.trouble(dest, t),
                    None => self.fine(dest, sent),
                }
            }
        }
        if sent > 0 {
            tracing::info!(destination = %dest.name, sent, "forwarded");
        }
        Ok(sent)
    }

    /// Sends due items to a STOW-RS destination, one request per instance, stopping the pass
    /// at the first trouble of the destination as a whole. Returns how many were stored.
    async fn send_web(
        &self,
        dest: &Destination,
        items: &[OutItem],
        cancel: &CancellationToken,
    ) -> Result<usize, ForwardError> {
        let timeout = Duration::from_secs(self.forward.connect_timeout_secs.max(1));
        let client = match stow::StowClient::new(dest, timeout) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let t = Trouble::Setup(e.to_string());
                for it in items {
                    self.settle(it, &Sent::Retry(t.describe(), None)).await?;
                }
                self.trouble(dest, t);
                return Ok(0);
            }
        };
        let (mut sent, mut trouble) = (0, None);
        for (i, it) in items.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            let (c, path, uid) = (client.clone(), it.path.clone(), it.sop_instance_uid.clone());
            let done = tokio::task::spawn_blocking(move || match load(&path) {
                Ok(p) => (c.store(&uid, &p.bytes), p.ts),
                Err(e) => (
                    stow::StowAnswer::NotStored {
                        status: 0,
                        why: e.to_string(),
                        permanent: false,
                    },
                    String::new(),
                ),
            })
            .await;
            let (answer, ts) = match done {
                Ok(d) => d,
                Err(e) => {
                    self.settle(it, &Sent::Retry(e.to_string(), None)).await?;
                    continue;
                }
            };
            let outcome = match answer {
                stow::StowAnswer::Stored => Sent::Done(ts),
                stow::StowAnswer::NotStored {
                    why,
                    permanent: true,
                    ..
                } => Sent::Fail(why),
                stow::StowAnswer::NotStored { status, why, .. } => {
                    tracing::debug!(outbox = it.id, error = %why, "not stored; will retry");
                    if status != 0 {
                        trouble = Some(Trouble::Http { status });
                    }
                    Sent::Retry(why, None)
                }
                stow::StowAnswer::Trouble(t) => {
                    let why = format!(
                        "cannot store at {} ({}): {}",
                        dest.name,
                        dest.target(),
                        t.describe()
                    );
                    // The destination, not this item, is the trouble: the rest of the pass
                    // waits with it, as when an association cannot be established.
                    for rest in &items[i..] {
                        self.settle(rest, &Sent::Retry(why.clone(), None)).await?;
                    }
                    trouble = Some(t);
                    break;
                }
            };
            self.settle(it, &outcome).await?;
            if matches!(outcome, Sent::Done(_)) {
                sent += 1;
            }
        }
        match trouble {
            Some(t) => self.trouble(dest, t),
            None => self.fine(dest, sent),
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
            if let Err(e) = self.start_up().await {
                tracing::error!(error = %e, "outbox start-up failed");
            }
            let mut backlog_at: Option<Instant> = None;
            loop {
                if backlog_at.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                    backlog_at = Some(Instant::now());
                    if let Err(e) = self.release_overridden().await {
                        tracing::error!(error = %e, "releasing overridden plates failed");
                    }
                    if let Err(e) = self.refresh_backlog().await {
                        tracing::error!(error = %e, "reading the outbox failed");
                    }
                }
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

/// Writes the notes of several jobs, then syncs them all in one pass; the notes of each job,
/// by job id. The plate is judged and routed whatever happens here: a note that cannot be made
/// (the routed file was removed by hand, the disk is full) is logged for a person and not
/// retried forever, and notes that cannot be synced are not recorded.
fn write_notes_of(
    wanted: Vec<(i64, Rejection)>,
    folder: &std::path::Path,
    capture: bool,
) -> HashMap<i64, Vec<WrittenNote>> {
    let mut written = HashMap::with_capacity(wanted.len());
    for (job, r) in wanted {
        // One plate's note failing, even by a panic in reading its file back, costs only its
        // own note, not those of the plates dispatched with it.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            notes::write_notes_unsynced(&r, folder, capture)
        }));
        match made {
            Ok(Ok(w)) => {
                written.insert(job, w);
            }
            Ok(Err(e)) => tracing::error!(job, error = %e, "rejection note not written"),
            Err(_) => tracing::error!(job, "rejection note crashed; not written"),
        }
    }
    if let Err(e) = notes::sync_notes(written.values().flatten()) {
        let notes = written.values().map(Vec::len).sum::<usize>();
        tracing::error!(error = %e, notes, "rejection notes written but not synced; not recorded");
        written.clear();
    }
    written
}

/// The AE titles, PDU size and connect timeout of every association with `dest`, for
/// forwarding and for the probe alike (the probe must call the way forwarding does).
fn association_options(
    dest: &Destination,
    calling_ae_title: &str,
    opts: &ForwardOptions,
) -> ClientAssociationOptions<'static> {
    ClientAssociationOptions::new()
        .calling_ae_title(calling_ae_title.to_string())
        .called_ae_title(dest.ae_title.clone())
        .max_pdu_length(opts.max_pdu)
        .connection_timeout(Duration::from_secs(opts.connect_timeout_secs.max(1)))
}

/// A C-ECHO to a destination with the calling AE title and timeouts forwarding uses
/// (`check-config --probe`): the round trip time, or what is wrong.
pub async fn probe(
    dest: &Destination,
    calling_ae_title: &str,
    opts: &ForwardOptions,
) -> Result<Duration, Trouble> {
    let started = Instant::now();
    let mut assoc = association_options(dest, calling_ae_title, opts)
        .read_timeout(Duration::from_secs(opts.connect_timeout_secs.max(1)))
        .with_presentation_context(crate::net::VERIFICATION, vec![NATIVE[1], NATIVE[0]])
        .establish_async(dest.address.as_str())
        .await
        .map_err(|e| Trouble::from_association(&e))?;
    let pc = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.id);
    let Some(pc) = pc else {
        let _ = assoc.abort().await;
        return Err(Trouble::NoContext);
    };
    let answer = scu::c_echo(&mut assoc, pc, 1).await;
    let _ = assoc.release().await;
    match answer {
        Ok(0) => Ok(started.elapsed()),
        Ok(code) => Err(Trouble::Status {
            code,
            comment: String::new(),
        }),
        Err(e) => Err(Trouble::from_scu(&e)),
    }
}

/// One outbox item's fate.
enum Sent {
    /// Stored, in this transfer syntax.
    Done(String),
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
    #[error("cannot decompress: {0}")]
    Transcode(String),
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

/// A payload's data set (after the 128-byte preamble), structure only: pixel data, native or
/// encapsulated, is one value here and never decoded.
fn parse(p: &Payload) -> Result<dicom_object::DefaultDicomObject, PayloadError> {
    dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&p.bytes[128..])
        .map_err(|e| PayloadError::Parse(Box::new(e)))
}

/// Re-encodes a native (uncompressed) data set into another native transfer syntax, for a
/// destination that did not accept the file's own.
fn reencode(p: &Payload, to: &str) -> Result<Vec<u8>, PayloadError> {
    use dicom_encoding::TransferSyntaxIndex;
    let obj = parse(p)?;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(to)
        .ok_or_else(|| PayloadError::UnknownSyntax(to.into()))?;
    let mut out = Vec::with_capacity(p.bytes.len());
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| PayloadError::Write(Box::new(e)))?;
    Ok(out)
}

/// Decompresses a compressed plate to the native syntax `to` for a destination that refuses
/// its own: the stored values are decoded where every plate is decoded (a decode worker), put
/// into the data set as uncompressed Pixel Data, and the data set as sent is read back and its
/// pixel data compared with the decode before it goes out.
///
/// `capture`: the item is one of plateqc's own montage captures (colour JPEG baseline, written
/// by `notes`), decompressed by [`transcode_capture`] instead.
fn transcode(
    p: &Payload,
    to: &str,
    t: &Transcoder,
    capture: bool,
) -> Result<Vec<u8>, PayloadError> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_encoding::TransferSyntaxIndex;
    let failed = |e: &dyn std::fmt::Display| PayloadError::Transcode(e.to_string());
    if capture {
        return transcode_capture(p, to);
    }
    let native = match &t.pool {
        Some(pool) => pool
            .native(&p.bytes, &t.policy)
            .map_err(|died| failed(&died.0))?,
        None => decode::native_pixel_data(&p.bytes, &t.policy),
    }
    .map_err(|e| failed(&e))?;
    let mut obj = parse(p)?;
    let bits = obj
        .element(tags::BITS_ALLOCATED)
        .ok()
        .and_then(|e| e.to_int::<u16>().ok())
        .unwrap_or(16);
    let vr = if bits == 8 { VR::OB } else { VR::OW };
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        vr,
        PrimitiveValue::from(native.clone()),
    ));
    // JPEG baseline and extended are always lossy; the archive must know the pixels were.
    if matches!(
        p.ts.as_str(),
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51"
    ) && obj.element(tags::LOSSY_IMAGE_COMPRESSION).is_err()
    {
        obj.put(DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION,
            VR::CS,
            PrimitiveValue::from("01"),
        ));
    }
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(to)
        .ok_or_else(|| PayloadError::UnknownSyntax(to.into()))?;
    let mut out = Vec::with_capacity(native.len() + 4096);
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| PayloadError::Write(Box::new(e)))?;
    let back = dicom_object::InMemDicomObject::read_dataset_with_ts(&out[..], ts)
        .map_err(|e| PayloadError::Parse(Box::new(e)))?;
    let sent_px = back
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.to_bytes().ok().map(|b| b.into_owned()));
    if sent_px.as_deref() != Some(native.as_slice()) {
        return Err(failed(
            &"the written pixel data differs from the decoded plate",
        ));
    }
    Ok(out)
}

/// Decompresses a montage capture (colour JPEG baseline, written by `notes`) to packed RGB in
/// the native syntax `to`. The file is plateqc's own, so it is decoded here rather than in a
/// decode worker, with the same size and scan limits. The pixels stay marked lossy (Lossy
/// Image Compression 01, as written).
fn transcode_capture(p: &Payload, to: &str) -> Result<Vec<u8>, PayloadError> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_encoding::TransferSyntaxIndex;
    let failed = |e: &dyn std::fmt::Display| PayloadError::Transcode(e.to_string());
    let mut obj = parse(p)?;
    let int = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(0) as usize
    };
    let (rows, columns) = (int(tags::ROWS), int(tags::COLUMNS));
    if int(tags::SAMPLES_PER_PIXEL) != 3 || p.ts != notes::JPEG_BASELINE {
        return Err(failed(&"not a colour JPEG baseline capture"));
    }
    let stream = obj
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.fragments().and_then(|f| f.first().cloned()))
        .ok_or_else(|| failed(&"the capture has no JPEG fragment"))?;
    let rgb = crate::decode::jpeg::decode_rgb8(&stream, columns, rows).map_err(|e| failed(&e))?;
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("RGB"),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(rgb),
    ));
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(to)
        .ok_or_else(|| PayloadError::UnknownSyntax(to.into()))?;
    let mut out = Vec::with_capacity(rows * columns * 3 + 4096);
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| PayloadError::Write(Box::new(e)))?;
    Ok(out)
}

/// Sends one item over an established association. `Err` means the association is broken.
async fn store_one(
    assoc: &mut AsyncClientAssociation<TcpStream>,
    item: &OutItem,
    message_id: u16,
    transcoder: &Transcoder,
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
    let own = accepted.iter().find(|(_, ts)| *ts == payload.ts);
    let native = accepted
        .iter()
        .find(|(_, ts)| NATIVE.contains(&ts.as_str()));
    let (pc, ts, data): (u8, String, Vec<u8>) = if let Some((id, ts)) = own {
        (
            *id,
            ts.clone(),
            payload.bytes[payload.data_start..].to_vec(),
        )
    } else if let Some((id, ts)) = native {
        let (to, t) = (ts.clone(), transcoder.clone());
        let capture = item.sop_class_uid == notes::SC_CLASS;
        let made = tokio::task::spawn_blocking(move || {
            let d = if NATIVE.contains(&payload.ts.as_str()) {
                reencode(&payload, &to)
            } else {
                transcode(&payload, &to, &t, capture)
            };
            (d, payload.ts)
        })
        .await;
        match made {
            Ok((Ok(d), _)) => (*id, ts.clone(), d),
            Ok((Err(e), from)) => {
                return Ok(Sent::Fail(format!(
                    "the destination refuses {from}; converting to {ts} failed: {e}"
                )))
            }
            Err(e) => return Ok(Sent::Retry(e.to_string(), None)),
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
        Ok(Sent::Done(ts))
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
            ..Destination::default()
        });
        assert_eq!(f.validate().len(), 1, "{:?}", f.validate());
    }

    #[test]
    fn a_dicomweb_destination_is_checked_as_one() {
        let web = |url: &str| Destination {
            name: "web".into(),
            url: Some(url.into()),
            ..Destination::default()
        };
        let problems = |d: Destination| {
            let f = ForwardOptions {
                destinations: vec![d],
                ..ForwardOptions::default()
            };
            f.validate()
        };
        assert!(problems(web("http://pacs:8042/dicom-web")).is_empty());
        assert!(problems(web("https://pacs/dicom-web/")).is_empty());
        for bad in [
            "pacs:8042/dicom-web",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            assert_eq!(problems(web(bad)).len(), 1, "{bad}");
        }
        let mut d = web("http://pacs/dicom-web");
        d.username = Some("u".into());
        assert_eq!(
            problems(d.clone()).len(),
            1,
            "username without password_file"
        );
        d.password_file = Some("/etc/pw".into());
        assert!(problems(d.clone()).is_empty());
        d.token_file = Some("/etc/token".into());
        assert_eq!(problems(d.clone()).len(), 1, "basic and bearer at once");
        let mut d = web("http://pacs/dicom-web");
        d.ca_file = Some("/etc/ca.pem".into());
        assert_eq!(problems(d).len(), 1, "ca_file needs https");
        let mut d = web("http://pacs/dicom-web");
        d.ae_title = "PACS".into();
        assert_eq!(problems(d).len(), 1, "url and ae_title at once");
        let dimse = Destination {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            address: "pacs:104".into(),
            token_file: Some("/etc/token".into()),
            ..Destination::default()
        };
        assert_eq!(
            problems(dimse).len(),
            1,
            "a token for a C-STORE destination"
        );
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
