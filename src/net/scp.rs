//! The C-STORE / C-ECHO service class provider. Each association runs in its own task with an
//! idle timeout; a received instance is streamed to a hidden temporary file, made durable, and
//! renamed into the inbox before success is answered, so an acknowledged plate survives a
//! crash and an unacknowledged one is simply sent again by its sender. From the inbox it takes
//! the same path as a copied file.

use super::dimse::{self, status, Command};
use super::DicomOptions;
use crate::decode::prescan;
use crate::fsutil::{create_private_dir_all, sanitize_component};
use dicom_ul::association::server::{AccessControl, ServerAssociationOptions};
use dicom_ul::association::Association;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::Pdu;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
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
    pub max_sequence_depth: usize,
    pub stats: Arc<ScpStats>,
}

/// Implementation Class UID written into received files' meta groups.
pub fn implementation_class_uid() -> String {
    super::derived_uid("plateqc implementation class 1")
}
pub const IMPLEMENTATION_VERSION: &str = "PLATEQC_0_1";

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
        .map_err(|source| ScpError::Bind {
            addr: scp.options.listen.clone(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ScpError::Bind {
        addr: scp.options.listen.clone(),
        source,
    })?;
    let slots = Arc::new(Semaphore::new(scp.options.max_associations));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (scp, cancel) = (scp.clone(), cancel.clone());
                    tokio::spawn(async move {
                        association(&scp, socket, peer, cancel).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    scp.stats.refused_associations.fetch_add(1, Relaxed);
                    let idle = Duration::from_secs(scp.options.idle_timeout_secs.max(1));
                    tokio::spawn(refuse_busy(socket, peer, idle));
                }
            }
        }
    });
    Ok(bound)
}

/// Reads the association request and answers A-ASSOCIATE-RJ (transient, local limit
/// exceeded), so the sender retries later instead of seeing a reset connection.
async fn refuse_busy(mut socket: TcpStream, peer: SocketAddr, idle: Duration) {
    let _ = tokio::time::timeout(idle, async {
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

struct Incoming {
    rq: Command,
    tmp: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
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

async fn association(scp: &Scp, socket: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
    let idle = Duration::from_secs(scp.options.idle_timeout_secs.max(1));
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(AllowList {
            calling: scp.options.allowed_calling.clone(),
        })
        .ae_title(scp.options.ae_title.clone())
        .max_pdu_length(scp.options.max_pdu)
        .read_timeout(idle)
        .write_timeout(idle)
        .with_abstract_syntax(super::VERIFICATION);
    for c in &scp.classes {
        options = options.with_abstract_syntax(*c);
    }
    for ts in &scp.transfer_syntaxes {
        options = options.with_transfer_syntax(*ts);
    }
    let mut assoc = match options.establish_async(socket).await {
        Ok(a) => a,
        Err(e) => {
            scp.stats.refused_associations.fetch_add(1, Relaxed);
            tracing::warn!(peer = %peer, error = %e, "association not established");
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
    let outcome: Result<&'static str, String> = loop {
        let pdu = tokio::select! {
            _ = cancel.cancelled() => break Err("plateqc is shutting down".into()),
            p = assoc.receive() => p,
        };
        let values = match pdu {
            Ok(Pdu::PData { data }) => data,
            Ok(Pdu::ReleaseRQ) => {
                if matches!(state, State::Idle) {
                    let _ = assoc.send(&Pdu::ReleaseRP).await;
                    break Ok("released");
                }
                break Err("release requested in the middle of a message".into());
            }
            Ok(Pdu::AbortRQ { source }) => break Err(format!("aborted by the peer ({source:?})")),
            Ok(other) => break Err(format!("unexpected {}", other.short_description())),
            Err(e) => break Err(e.to_string()),
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
) -> Result<(), String> {
    let pdu = rsp.pdu(pc);
    assoc.send(&pdu).await.map_err(|e| e.to_string())
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
) -> Result<(State, u64), String> {
    let pc = v.presentation_context_id;
    match v.value_type {
        PDataValueType::Command => {
            let mut buf = match state {
                State::Idle => Vec::new(),
                State::Command(b) => b,
                State::Data(inc) => {
                    let _ = tokio::fs::remove_file(&inc.tmp).await;
                    return Err("command fragment inside a data set".into());
                }
            };
            if buf.len() + v.data.len() > MAX_COMMAND_BYTES {
                return Err("command set too large".into());
            }
            buf.extend_from_slice(&v.data);
            if !v.is_last {
                return Ok((State::Command(buf), 0));
            }
            let rq = Command::decode(&buf).map_err(|e| e.to_string())?;
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
                other => Err(format!("unsupported DIMSE command {other:#06x}")),
            }
        }
        PDataValueType::Data => {
            let State::Data(mut inc) = state else {
                return Err("data set without a command".into());
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

/// Explicit VR Little Endian element of the file meta group.
fn meta_element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
    let pad = if vr == b"UI" { 0 } else { b' ' };
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(pad);
    }
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&v);
}

/// Preamble, `DICM` and the file meta group for a received instance.
pub fn file_meta(sop_class: &str, sop_instance: &str, ts: &str, source_ae: &str) -> Vec<u8> {
    let mut group = Vec::with_capacity(256);
    meta_element(&mut group, 0x0001, b"OB", &[0, 1]);
    meta_element(&mut group, 0x0002, b"UI", sop_class.as_bytes());
    meta_element(&mut group, 0x0003, b"UI", sop_instance.as_bytes());
    meta_element(&mut group, 0x0010, b"UI", ts.as_bytes());
    meta_element(
        &mut group,
        0x0012,
        b"UI",
        implementation_class_uid().as_bytes(),
    );
    meta_element(&mut group, 0x0013, b"SH", IMPLEMENTATION_VERSION.as_bytes());
    if !source_ae.is_empty() {
        meta_element(&mut group, 0x0016, b"AE", source_ae.as_bytes());
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta_element(&mut out, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
}

async fn open_incoming(
    folder: &Path,
    rq: &Command,
    ts: &str,
    calling: &str,
) -> std::io::Result<(PathBuf, tokio::io::BufWriter<tokio::fs::File>)> {
    let folder_owned = folder.to_path_buf();
    tokio::task::spawn_blocking(move || create_private_dir_all(&folder_owned))
        .await
        .map_err(std::io::Error::other)??;
    let tmp = crate::fsutil::temp_sibling(&folder.join(incoming_name(rq)));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true).mode(0o600);
    let file = tokio::fs::OpenOptions::from(opts).open(&tmp).await?;
    let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    w.write_all(&file_meta(&rq.sop_class, &rq.sop_instance, ts, calling))
        .await?;
    Ok((tmp, w))
}

fn incoming_name(rq: &Command) -> String {
    let uid = sanitize_component(&rq.sop_instance);
    if uid.is_empty() {
        "instance.dcm".into()
    } else {
        format!("{uid}.dcm")
    }
}

/// Makes the received file durable and moves it into the inbox. Returns the status to answer.
/// A data set that fails the pre-scan is still moved in (the pipeline records and quarantines
/// it, so the site sees what was sent) but is answered "cannot understand".
async fn finish_incoming(scp: &Scp, inc: &mut Incoming, folder: &Path) -> (u16, String) {
    let Some(mut w) = inc.file.take() else {
        return (status::OUT_OF_RESOURCES, "no file".into());
    };
    let flushed = async {
        w.flush().await?;
        let f = w.into_inner();
        f.sync_all().await
    }
    .await;
    if let Err(e) = flushed {
        let _ = tokio::fs::remove_file(&inc.tmp).await;
        return (status::OUT_OF_RESOURCES, format!("cannot write: {e}"));
    }
    let (tmp, name, folder) = (
        inc.tmp.clone(),
        incoming_name(&inc.rq),
        folder.to_path_buf(),
    );
    let (depth, limit) = (scp.max_sequence_depth, scp.max_object_bytes as usize);
    let moved = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
        let bytes = std::fs::read(&tmp)?;
        let verdict = prescan::prescan(&bytes, depth, limit.saturating_mul(4))
            .err()
            .map(|e| e.to_string());
        drop(bytes);
        move_in_unique(&tmp, &folder, &name)?;
        Ok(verdict)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match moved {
        Ok(None) => (status::SUCCESS, String::new()),
        Ok(Some(bad)) => (status::CANNOT_UNDERSTAND, bad),
        Err(e) => {
            let _ = tokio::fs::remove_file(&inc.tmp).await;
            (status::OUT_OF_RESOURCES, format!("cannot store: {e}"))
        }
    }
}

/// Renames `tmp` to `folder/name`, or `name-1`, `name-2`, ... if taken; never overwrites.
fn move_in_unique(tmp: &Path, folder: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "dcm"));
    for n in 0..10_000 {
        let candidate = if n == 0 {
            folder.join(name)
        } else {
            folder.join(format!("{stem}-{n}.{ext}"))
        };
        match crate::route::move_file(tmp, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free name in the inbox"))
}

/// Removes hidden partial files a crashed run left under `<inbox>/net`; their senders were
/// never told success, so they send them again.
pub fn sweep_partials(inbox: &Path) -> usize {
    let mut removed = 0;
    let Ok(dirs) = std::fs::read_dir(inbox.join("net")) else {
        return 0;
    };
    for d in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                && name.ends_with(".tmp")
                && std::fs::remove_file(f.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conformance_statement_names_our_implementation_class() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/conformance.md"))
                .unwrap();
        assert!(doc.contains(&implementation_class_uid()));
        assert!(doc.contains(IMPLEMENTATION_VERSION));
        for ts in crate::decode::SUPPORTED_TRANSFER_SYNTAXES {
            assert!(
                doc.contains(&format!("| {ts} |")),
                "{ts} missing from the statement"
            );
        }
    }

    #[test]
    fn meta_group_is_what_the_prescan_reads_back() {
        let mut bytes = file_meta(
            "1.2.840.10008.5.1.4.1.1.1.3",
            "1.2.3.4.5",
            "1.2.840.10008.1.2",
            "SCANNER",
        );
        let meta_len = bytes.len();
        // An empty data set after the meta group is still a well-formed file.
        let (ts, end) = prescan::read_meta(&bytes).unwrap();
        assert_eq!(ts.trim_end_matches('\0'), "1.2.840.10008.1.2");
        assert_eq!(end, meta_len);
        bytes.extend_from_slice(&[0x08, 0, 0x60, 0, 2, 0, 0, 0, b'I', b'O']);
        assert!(prescan::prescan(&bytes, 8, 1 << 20).is_ok());
    }

    #[test]
    fn unique_names_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let mut made = Vec::new();
        for i in 0..3 {
            let tmp = dir.path().join(format!(".t{i}.tmp"));
            std::fs::write(&tmp, [i as u8]).unwrap();
            made.push(move_in_unique(&tmp, dir.path(), "1.2.3.dcm").unwrap());
        }
        let names: Vec<_> = made
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["1.2.3.dcm", "1.2.3-1.dcm", "1.2.3-2.dcm"]);
        assert_eq!(std::fs::read(&made[2]).unwrap(), [2]);
    }
}
