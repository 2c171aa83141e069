//! The C-STORE / C-ECHO service class provider. Each association runs in its own task with an
//! idle timeout; a received instance is streamed to a hidden temporary file, made durable, and
//! renamed into the inbox before success is answered, so an acknowledged plate survives a
//! crash and an unacknowledged one is simply sent again by its sender. From the inbox it takes
//! the same path as a copied file.

use super::received::{finish_incoming, open_incoming};
use crate::fsutil::sanitize_component;
use crate::net::dimse::{self, status, Command};
use dicom_ul::association::server::{AccessControl, ServerAssociationOptions};
use dicom_ul::association::Association;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::Pdu;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ScpError {
    // The cause is part of the message (`error`, not a `source`), as the daemon prints it.
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
}

/// Why an association was aborted: the peer broke the protocol, went away, or plateqc is
/// stopping.
#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error("plateqc is shutting down")]
    ShuttingDown,
    #[error("release requested in the middle of a message")]
    ReleaseMidMessage,
    #[error("aborted by the peer ({0})")]
    AbortedByPeer(String),
    #[error("unexpected {0}")]
    UnexpectedPdu(String),
    #[error(transparent)]
    Association(#[from] dicom_ul::association::Error),
    #[error("command fragment inside a data set")]
    CommandInDataSet,
    #[error("command set too large")]
    CommandTooLarge,
    #[error(transparent)]
    Command(#[from] crate::net::dimse::CommandError),
    #[error("unsupported DIMSE command {0:#06x}")]
    UnsupportedCommand(u16),
    #[error("data set without a command")]
    DataWithoutCommand,
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
    /// A connection must complete its association request within this long. A connection
    /// takes an association slot only once its peer has started the request, so connections
    /// that never speak (port scanners, health checks, a hung sender) cannot lock real
    /// senders out; they wait in a separate, bounded pool and are closed after this time.
    pub handshake_timeout_secs: u64,
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
            handshake_timeout_secs: 10,
        }
    }
}

impl DicomOptions {
    /// Checks shared by `check-config` and start-up.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !crate::net::valid_ae_title(&self.ae_title) {
            p.push(format!(
                "[dicom] ae_title {:?} must be 1-16 characters",
                self.ae_title
            ));
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!("[dicom] listen {:?} is not host:port", self.listen));
        }
        if self.max_associations == 0 {
            p.push("[dicom] max_associations must be at least 1".into());
        }
        if self.handshake_timeout_secs == 0 {
            p.push("[dicom] handshake_timeout_secs must be at least 1".into());
        }
        if !(4096..=16_777_216).contains(&self.max_pdu) {
            p.push(format!(
                "[dicom] max_pdu {} must be 4096..=16777216",
                self.max_pdu
            ));
        }
        p
    }
}

/// Counters for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct ScpStats {
    pub associations: AtomicU64,
    pub refused_associations: AtomicU64,
    pub stored: AtomicU64,
    pub failed: AtomicU64,
    pub echoes: AtomicU64,
}

/// Everything an association needs; shared by all of them.
pub struct Scp {
    pub options: DicomOptions,
    /// Where received files are written (`<inbox>/net/<calling AE>/`).
    pub inbox: PathBuf,
    pub classes: Vec<&'static str>,
    pub transfer_syntaxes: Vec<&'static str>,
    /// Objects larger than this are refused with "out of resources" while being received.
    pub max_object_bytes: u64,
    /// The check a received data set must pass to be answered success (decode's, handed in by
    /// the daemon): `Err(reason)` answers "cannot understand" and the instance is kept, so the
    /// pipeline records what was sent. `Ok` gives the data set's SOP Class and Instance UIDs;
    /// when they are not the command's, the instance is refused (0xA900) and nothing is kept.
    pub check: Check,
    pub stats: Arc<ScpStats>,
}

/// See [`Scp::check`]: the data set's (SOP Class UID, SOP Instance UID), or why it cannot be
/// understood.
pub type Check =
    Arc<dyn Fn(&[u8]) -> Result<(Option<String>, Option<String>), String> + Send + Sync>;

struct AllowList {
    calling: Vec<String>,
}

impl AccessControl for AllowList {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let calling = calling_ae_title.trim();
        if !self.calling.is_empty() && !self.calling.iter().any(|a| a.trim() == calling) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Binds the listener and serves associations until `cancel`; returns the bound address.
pub async fn serve(scp: Arc<Scp>, cancel: CancellationToken) -> Result<SocketAddr, ScpError> {
    let listener = TcpListener::bind(&scp.options.listen)
        .await
        .map_err(|error| ScpError::Bind {
            addr: scp.options.listen.clone(),
            error,
        })?;
    let bound = listener.local_addr().map_err(|error| ScpError::Bind {
        addr: scp.options.listen.clone(),
        error,
    })?;
    let slots = Arc::new(Semaphore::new(scp.options.max_associations));
    let bound_pending = pending_bound(scp.options.max_associations);
    let silent = Arc::new(Silent::new(bound_pending));
    let refusing = Arc::new(Semaphore::new(bound_pending));
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let (socket, peer) = match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    // EMFILE and friends: the connection stays queued and accept fails again at
                    // once; pause (longer each time) instead of spinning on it.
                    let pause = backoff.pause();
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let _ = socket.set_nodelay(true);
            let (id, dropped) = silent.enter();
            let (scp, cancel, slots) = (scp.clone(), cancel.clone(), slots.clone());
            let (silent, refusing) = (silent.clone(), refusing.clone());
            tokio::spawn(async move {
                let handshake = Duration::from_secs(scp.options.handshake_timeout_secs.max(1));
                // A slot is taken only once the peer has sent something; until then the
                // connection is one of a bounded number of silent ones, the oldest of which
                // makes room for a newcomer.
                // `peek` waits for a byte that is really there (`readable` may wake without one)
                // and leaves it for the association to read.
                let mut first = [0u8; 1];
                let spoke = tokio::select! {
                    _ = cancel.cancelled() => false,
                    _ = dropped.cancelled() => false,
                    r = tokio::time::timeout(handshake, socket.peek(&mut first)) => matches!(r, Ok(Ok(n)) if n > 0),
                };
                silent.leave(id);
                if !spoke {
                    tracing::info!(peer = %peer, "connection closed: no association request");
                    return;
                }
                match slots.try_acquire_owned() {
                    Ok(slot) => {
                        association(&scp, socket, peer, cancel, handshake).await;
                        drop(slot);
                    }
                    Err(_) => {
                        scp.stats.refused_associations.fetch_add(1, Relaxed);
                        // Refusing politely takes a task for up to the handshake time: bounded.
                        if let Ok(permit) = refusing.try_acquire_owned() {
                            refuse_busy(socket, peer, handshake).await;
                            drop(permit);
                        } else {
                            tracing::warn!(peer = %peer, "connection closed: too many at once");
                        }
                    }
                }
            });
        }
    });
    Ok(bound)
}

/// Connections that have not spoken yet, at most `bound` (see [`pending_bound`]). A newcomer
/// beyond the bound closes the oldest: a real sender speaks at once and moves on to a slot, so
/// a flood of silent connections can delay it by no more than its own first packet.
struct Silent {
    bound: usize,
    waiting: std::sync::Mutex<(u64, std::collections::VecDeque<(u64, CancellationToken)>)>,
}

impl Silent {
    fn new(bound: usize) -> Silent {
        Silent {
            bound: bound.max(1),
            waiting: Default::default(),
        }
    }

    /// Registers a new connection; its token is cancelled if it is pushed out.
    fn enter(&self) -> (u64, CancellationToken) {
        let token = CancellationToken::new();
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.0 += 1;
        let id = w.0;
        while w.1.len() >= self.bound {
            if let Some((_, oldest)) = w.1.pop_front() {
                oldest.cancel();
            }
        }
        w.1.push_back((id, token.clone()));
        (id, token)
    }

    fn leave(&self, id: u64) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.1.retain(|(i, _)| *i != id);
    }
}

/// Silent connections (and refusals in progress) at most: generous beside the slots, yet
/// bounded, so a flood of connections costs a fixed number of sockets and tasks.
fn pending_bound(max_associations: usize) -> usize {
    max_associations.saturating_mul(4).max(16)
}

/// The pause after a failed `accept`: 50 ms, doubling to 2 s, back to the start on success.
#[derive(Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    pub fn pause(&mut self) -> Duration {
        let ms = 50u64.saturating_mul(1 << self.failures.min(6)).min(2000);
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(ms)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Reads the association request and answers A-ASSOCIATE-RJ (transient, local limit
/// exceeded), so the sender retries later instead of seeing a reset connection.
async fn refuse_busy(mut socket: TcpStream, peer: SocketAddr, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let mut head = [0u8; 6];
        socket.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as u64;
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut (&mut socket).take(len.min(1 << 20)), &mut sink).await?;
        // A-ASSOCIATE-RJ: result 2 (transient), source 3 (provider, presentation), reason 2.
        socket.write_all(&[0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2]).await?;
        socket.shutdown().await
    })
    .await;
    tracing::warn!(peer = %peer, "association refused: too many at once");
}

pub(super) struct Incoming {
    pub(super) rq: Command,
    pub(super) tmp: PathBuf,
    pub(super) file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    bytes: u64,
    /// Set when the instance will be refused; the rest of its data is read and dropped.
    refusal: Option<(u16, String)>,
}

enum State {
    Idle,
    Command(Vec<u8>),
    Data(Box<Incoming>),
}

/// The most command bytes accepted before the command is complete; real ones are ~200.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

async fn association(
    scp: &Scp,
    socket: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
    handshake: Duration,
) {
    let idle = Duration::from_secs(scp.options.idle_timeout_secs.max(1));
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(AllowList {
            calling: scp.options.allowed_calling.clone(),
        })
        .ae_title(scp.options.ae_title.clone())
        .max_pdu_length(scp.options.max_pdu)
        .read_timeout(idle)
        .write_timeout(idle)
        .with_abstract_syntax(crate::net::VERIFICATION);
    for c in &scp.classes {
        options = options.with_abstract_syntax(*c);
    }
    for ts in &scp.transfer_syntaxes {
        options = options.with_transfer_syntax(*ts);
    }
    // The whole request within the handshake time: a peer that sends a byte and stalls holds
    // its slot no longer than that.
    let established = tokio::time::timeout(handshake, options.establish_async(socket)).await;
    let mut assoc = match established {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            scp.stats.refused_associations.fetch_add(1, Relaxed);
            tracing::warn!(peer = %peer, error = %e, "association not established");
            return;
        }
        Err(_) => {
            scp.stats.refused_associations.fetch_add(1, Relaxed);
            tracing::warn!(peer = %peer, "association not established: no complete request in time");
            return;
        }
    };
    scp.stats.associations.fetch_add(1, Relaxed);
    let calling = assoc.peer_ae_title().trim().to_string();
    let contexts: Vec<(u8, String, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                pc.abstract_syntax.clone(),
                pc.transfer_syntax.clone(),
            )
        })
        .collect();
    tracing::info!(peer = %peer, calling = %calling, contexts = contexts.len(), "association accepted");
    let folder = scp.inbox.join("net").join(sanitize_component(&calling));
    let mut state = State::Idle;
    let mut stored = 0u64;
    let outcome: Result<&'static str, AssociationError> = loop {
        let pdu = tokio::select! {
            _ = cancel.cancelled() => break Err(AssociationError::ShuttingDown),
            p = assoc.receive() => p,
        };
        let values = match pdu {
            Ok(Pdu::PData { data }) => data,
            Ok(Pdu::ReleaseRQ) => {
                if matches!(state, State::Idle) {
                    let _ = assoc.send(&Pdu::ReleaseRP).await;
                    break Ok("released");
                }
                break Err(AssociationError::ReleaseMidMessage);
            }
            Ok(Pdu::AbortRQ { source }) => {
                break Err(AssociationError::AbortedByPeer(format!("{source:?}")))
            }
            Ok(other) => {
                break Err(AssociationError::UnexpectedPdu(
                    other.short_description().to_string(),
                ))
            }
            Err(e) => break Err(e.into()),
        };
        let mut failed = None;
        for v in values {
            match step(scp, &mut assoc, &contexts, &folder, &calling, state, v).await {
                Ok((next, done)) => {
                    state = next;
                    stored += done;
                }
                Err(e) => {
                    state = State::Idle;
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
    };
    if let State::Data(inc) = state {
        let _ = tokio::fs::remove_file(&inc.tmp).await;
    }
    match outcome {
        Ok(how) => {
            tracing::info!(peer = %peer, calling = %calling, stored, how, "association ended")
        }
        Err(why) => {
            let _ = assoc.abort().await;
            tracing::warn!(peer = %peer, calling = %calling, stored, reason = %why, "association aborted");
        }
    }
}

/// Sends a command on presentation context `pc`.
async fn respond(
    assoc: &mut dicom_ul::association::server::AsyncServerAssociation<TcpStream>,
    pc: u8,
    rsp: &Command,
) -> Result<(), AssociationError> {
    Ok(assoc.send(&rsp.pdu(pc)).await?)
}

/// Handles one P-DATA value; returns the next state and how many instances were stored.
/// An error aborts the association (protocol violation or a dead peer).
async fn step(
    scp: &Scp,
    assoc: &mut dicom_ul::association::server::AsyncServerAssociation<TcpStream>,
    contexts: &[(u8, String, String)],
    folder: &Path,
    calling: &str,
    state: State,
    v: PDataValue,
) -> Result<(State, u64), AssociationError> {
    let pc = v.presentation_context_id;
    match v.value_type {
        PDataValueType::Command => {
            let mut buf = match state {
                State::Idle => Vec::new(),
                State::Command(b) => b,
                State::Data(inc) => {
                    let _ = tokio::fs::remove_file(&inc.tmp).await;
                    return Err(AssociationError::CommandInDataSet);
                }
            };
            if buf.len() + v.data.len() > MAX_COMMAND_BYTES {
                return Err(AssociationError::CommandTooLarge);
            }
            buf.extend_from_slice(&v.data);
            if !v.is_last {
                return Ok((State::Command(buf), 0));
            }
            let rq = Command::decode(&buf)?;
            let context = contexts.iter().find(|c| c.0 == pc);
            match rq.field {
                dimse::C_ECHO_RQ => {
                    scp.stats.echoes.fetch_add(1, Relaxed);
                    respond(assoc, pc, &Command::response_to(&rq, status::SUCCESS, "")).await?;
                    Ok((State::Idle, 0))
                }
                dimse::C_STORE_RQ if rq.has_data_set => {
                    let mut inc = Incoming {
                        rq,
                        tmp: PathBuf::new(),
                        file: None,
                        bytes: 0,
                        refusal: None,
                    };
                    match context {
                        Some((_, abs, ts)) if *abs == inc.rq.sop_class => {
                            match open_incoming(folder, &inc.rq, ts, calling).await {
                                Ok((tmp, file)) => {
                                    inc.tmp = tmp;
                                    inc.file = Some(file);
                                }
                                Err(e) => {
                                    inc.refusal = Some((
                                        status::OUT_OF_RESOURCES,
                                        format!("cannot write: {e}"),
                                    ))
                                }
                            }
                        }
                        _ => {
                            inc.refusal = Some((
                                status::SOP_CLASS_NOT_SUPPORTED,
                                "SOP class not negotiated on this presentation context".into(),
                            ))
                        }
                    }
                    Ok((State::Data(Box::new(inc)), 0))
                }
                other => Err(AssociationError::UnsupportedCommand(other)),
            }
        }
        PDataValueType::Data => {
            let State::Data(mut inc) = state else {
                return Err(AssociationError::DataWithoutCommand);
            };
            if inc.refusal.is_none() {
                inc.bytes += v.data.len() as u64;
                let written = if inc.bytes > scp.max_object_bytes {
                    Err(format!("object larger than {} bytes", scp.max_object_bytes))
                } else if let Some(f) = inc.file.as_mut() {
                    f.write_all(&v.data)
                        .await
                        .map_err(|e| format!("cannot write: {e}"))
                } else {
                    Ok(())
                };
                if let Err(why) = written {
                    inc.file = None;
                    let _ = tokio::fs::remove_file(&inc.tmp).await;
                    inc.refusal = Some((status::OUT_OF_RESOURCES, why));
                }
            }
            if !v.is_last {
                return Ok((State::Data(inc), 0));
            }
            let (code, comment) = match inc.refusal.take() {
                Some(r) => r,
                None => finish_incoming(scp, &mut inc, folder).await,
            };
            let stored = u64::from(code == status::SUCCESS);
            if stored == 1 {
                scp.stats.stored.fetch_add(1, Relaxed);
            } else {
                scp.stats.failed.fetch_add(1, Relaxed);
                tracing::warn!(calling, status = format!("{code:#06x}"), reason = %comment, "C-STORE refused");
            }
            respond(assoc, pc, &Command::response_to(&inc.rq, code, &comment)).await?;
            Ok((State::Idle, stored))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pauses_grow_and_reset() {
        let mut b = AcceptBackoff::default();
        let ms: Vec<u128> = (0..9).map(|_| b.pause().as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.pause().as_millis(), 50);
    }

    #[test]
    fn a_newcomer_beyond_the_bound_closes_the_oldest_silent_one() {
        let silent = Silent::new(2);
        let (a, ta) = silent.enter();
        let (_b, tb) = silent.enter();
        let (_c, tc) = silent.enter();
        assert!(ta.is_cancelled(), "the oldest made room");
        assert!(!tb.is_cancelled() && !tc.is_cancelled());
        silent.leave(a);
        silent.leave(_b);
        let (_d, td) = silent.enter();
        assert!(!tc.is_cancelled() && !td.is_cancelled(), "room was left");
    }
}
