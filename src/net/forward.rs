//! After a plate is routed: its rejection note is written and its outbox rows are created
//! (dispatch), then a sender works through the outbox by C-STORE. Both are driven by database
//! state, so a restart at any point redoes only what was not committed: a dispatch rewrites
//! the same note (its UIDs derive from the plate), and an instance is marked sent only after
//! the destination answered success, never to be sent again.

use super::dimse::{self, status, Command};
use super::notes::{self, Rejection, WrittenNote};
use super::{Destination, ForwardOptions, NoteOptions, UnusablePolicy};
use crate::decode::prescan;
use crate::pipeline::Engine;
use crate::record::{now, RecordError};
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

fn later(secs: u64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs as i64))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Where notes go: `[notes] folder`, or `<route root>/rejection-notes`, by day.
pub fn notes_folder(engine: &Engine) -> PathBuf {
    let base = if engine.config.notes.folder.as_os_str().is_empty() {
        engine.config.route_root().join("rejection-notes")
    } else {
        engine.config.notes.folder.clone()
    };
    base.join(chrono::Utc::now().format("%Y-%m-%d").to_string())
}

#[derive(sqlx::FromRow)]
struct Routed {
    job_id: i64,
    routed_path: String,
    plate_row: i64,
    verdict: String,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    reason_code: Option<String>,
    unusable_score: Option<f64>,
    threshold: Option<f64>,
    model_name: Option<String>,
    model_version: Option<String>,
    montage_path: Option<String>,
}

/// Writes notes and outbox rows for every routed, undispatched job. Returns how many.
pub async fn dispatch_pending(engine: &Engine) -> Result<usize, ForwardError> {
    // Routed paths are this node's: each daemon dispatches only its own jobs.
    let node = engine.recorder.site.as_str();
    let due: Vec<Routed> = crate::on_pool!(engine.recorder.pool(), pool => {
        // Quarantined files and duplicates have nothing to send or note.
        sqlx::query(
            "UPDATE jobs SET dispatched = 1
              WHERE node = $1 AND dispatched = 0 AND routed_path IS NOT NULL AND state <> 'done'",
        )
        .bind(node)
        .execute(pool)
        .await?;
        sqlx::query_as(
            "SELECT j.id AS job_id, j.routed_path, p.id AS plate_row, p.verdict, p.sop_class_uid,
                    p.sop_instance_uid, p.reason_code, p.unusable_score, p.threshold, p.model_name,
                    p.model_version, p.montage_path
               FROM jobs j JOIN plates p ON p.id = j.plate_row
              WHERE j.node = $1 AND j.dispatched = 0 AND j.routed_path IS NOT NULL
                AND j.state = 'done'
              ORDER BY j.id LIMIT 256",
        )
        .bind(node)
        .fetch_all(pool)
        .await?
    });
    let n = due.len();
    for job in due {
        dispatch_one(engine, job).await?;
    }
    Ok(n)
}

async fn dispatch_one(engine: &Engine, job: Routed) -> Result<(), ForwardError> {
    let (fwd, note_opts): (&ForwardOptions, &NoteOptions) =
        (&engine.config.forward, &engine.config.notes);
    let unusable = job.verdict == "unusable";
    let mut written: Vec<WrittenNote> = Vec::new();
    if unusable && note_opts.enabled {
        let types: Vec<(String,)> = crate::on_pool!(engine.recorder.pool(), pool => {
            sqlx::query_as(
                "SELECT artifact_type FROM plate_artifacts WHERE plate_row = $1 ORDER BY score DESC",
            )
            .bind(job.plate_row)
            .fetch_all(pool)
            .await?
        });
        let rejection = Rejection {
            plate_path: PathBuf::from(&job.routed_path),
            reason_code: job.reason_code.clone(),
            artifact_types: types.into_iter().map(|t| t.0).collect(),
            score: job.unusable_score,
            threshold: job.threshold,
            model: format!(
                "{} {}",
                job.model_name.as_deref().unwrap_or("?"),
                job.model_version.as_deref().unwrap_or("?")
            ),
            montage_path: job.montage_path.as_ref().map(PathBuf::from),
        };
        let (folder, capture) = (notes_folder(engine), note_opts.secondary_capture);
        let made =
            tokio::task::spawn_blocking(move || notes::write_notes(&rejection, &folder, capture))
                .await;
        match made {
            Ok(Ok(w)) => written = w,
            // The plate is judged and routed; a note that cannot be made (the routed file was
            // removed by hand, the disk is full) is logged for a person, not retried forever.
            Ok(Err(e)) => {
                tracing::error!(job = job.job_id, error = %e, "rejection note not written")
            }
            Err(e) => tracing::error!(job = job.job_id, error = %e, "rejection note crashed"),
        }
    }
    let t = now();
    let node = engine.recorder.site.as_str();
    crate::on_pool!(engine.recorder.pool(), pool => {
        let mut tx = pool.begin().await?;
        for n in &written {
            sqlx::query(
                "INSERT INTO rejection_notes (plate_row, kind, sop_instance_uid, path, reason_code, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(job.plate_row)
            .bind(n.kind)
            .bind(&n.sop_instance_uid)
            .bind(n.path.display().to_string())
            .bind(&job.reason_code)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        }
        let send_plate =
            job.verdict == "usable" || (unusable && fwd.unusable == UnusablePolicy::Forward);
        for dest in &fwd.destinations {
            let mut items: Vec<(&str, String, String, String)> = Vec::new();
            if send_plate {
                if let (Some(class), Some(uid)) = (&job.sop_class_uid, &job.sop_instance_uid) {
                    items.push(("plate", job.routed_path.clone(), class.clone(), uid.clone()));
                }
            }
            if fwd.send_notes {
                for n in &written {
                    items.push((
                        n.kind,
                        n.path.display().to_string(),
                        n.sop_class_uid.clone(),
                        n.sop_instance_uid.clone(),
                    ));
                }
            }
            for (kind, path, class, uid) in items {
                sqlx::query(
                    "INSERT INTO outbox (node, destination, plate_row, kind, path, sop_class_uid,
                                         sop_instance_uid, next_attempt_at, created_at)
                     VALUES ($8, $1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
                )
                .bind(&dest.name)
                .bind(job.plate_row)
                .bind(kind)
                .bind(path)
                .bind(class)
                .bind(uid)
                .bind(&t)
                .bind(node)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("UPDATE jobs SET dispatched = 1, updated_at = $1 WHERE id = $2")
            .bind(&t)
            .bind(job.job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(())
}

#[derive(sqlx::FromRow, Clone)]
struct OutItem {
    id: i64,
    path: String,
    sop_class_uid: String,
    sop_instance_uid: String,
    attempts: i64,
}

/// One outbox item's fate.
enum Sent {
    Done,
    Retry(String, Option<u16>),
    /// No point retrying (the destination cannot take this transfer syntax).
    Fail(String),
}

/// Records an item's fate; for a failure, whether it was given up and the retry delay.
async fn settle(
    engine: &Engine,
    opts: &ForwardOptions,
    item: &OutItem,
    outcome: &Sent,
) -> Result<(bool, u64), ForwardError> {
    let (why, code, permanent) = match outcome {
        Sent::Done => {
            crate::on_pool!(engine.recorder.pool(), pool => {
                sqlx::query(
                    "UPDATE outbox SET state = 'sent', attempts = attempts + 1, sent_at = $1,
                            last_status = '0x0000', last_error = NULL WHERE id = $2",
                )
                .bind(now())
                .bind(item.id)
                .execute(pool)
                .await
                .map(|_| ())?
            });
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
    crate::on_pool!(engine.recorder.pool(), pool => {
        sqlx::query(
            "UPDATE outbox SET state = $1, attempts = $2, next_attempt_at = $3,
                    last_status = $4, last_error = $5 WHERE id = $6",
        )
        .bind(if give_up { "failed" } else { "pending" })
        .bind(attempts)
        .bind(later(delay))
        .bind(&code)
        .bind(why)
        .bind(item.id)
        .execute(pool)
        .await
        .map(|_| ())?
    });
    if give_up {
        tracing::error!(outbox = item.id, attempts, error = %why, "forwarding given up; the item is marked failed");
    }
    Ok((give_up, delay))
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

fn load(path: &str) -> Result<Payload, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let (ts, data_start) = prescan::read_meta(&bytes).map_err(|e| format!("{path}: {e}"))?;
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
fn reencode(p: &Payload, to: &str) -> Result<Vec<u8>, String> {
    use dicom_encoding::TransferSyntaxIndex;
    let obj = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&p.bytes[128..])
        .map_err(|e| e.to_string())?;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(to)
        .ok_or_else(|| format!("unknown transfer syntax {to}"))?;
    let mut out = Vec::with_capacity(p.bytes.len());
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

async fn send_command(
    assoc: &mut AsyncClientAssociation<TcpStream>,
    pc: u8,
    c: &Command,
) -> Result<(), String> {
    let pdu = c.pdu(pc);
    assoc.send(&pdu).await.map_err(|e| e.to_string())
}

async fn receive_response(
    assoc: &mut AsyncClientAssociation<TcpStream>,
) -> Result<Command, String> {
    let mut buf = Vec::new();
    loop {
        match assoc.receive().await.map_err(|e| e.to_string())? {
            Pdu::PData { data } => {
                for v in data {
                    if v.value_type != PDataValueType::Command {
                        return Err("data set in a C-STORE response".into());
                    }
                    buf.extend_from_slice(&v.data);
                    if buf.len() > 64 * 1024 {
                        return Err("response command too large".into());
                    }
                    if v.is_last {
                        return Command::decode(&buf).map_err(|e| e.to_string());
                    }
                }
            }
            Pdu::AbortRQ { source } => {
                return Err(format!("aborted by the destination ({source:?})"))
            }
            other => return Err(format!("unexpected {}", other.short_description())),
        }
    }
}

/// Sends one item over an established association. `Err` means the association is broken.
async fn store_one(
    assoc: &mut AsyncClientAssociation<TcpStream>,
    item: &OutItem,
    message_id: u16,
) -> Result<Sent, String> {
    let path = item.path.clone();
    let payload = match tokio::task::spawn_blocking(move || load(&path)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Ok(Sent::Retry(e, None)),
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
    send_command(assoc, pc, &rq).await?;
    {
        let mut w = assoc.send_pdata(pc);
        w.write_all(&data).await.map_err(|e| e.to_string())?;
        w.finish().await.map_err(|e| e.to_string())?;
    }
    let rsp = receive_response(assoc).await?;
    if rsp.field != dimse::C_STORE_RSP || rsp.responded_to != message_id {
        return Err(format!("unexpected response {:#06x}", rsp.field));
    }
    if status::is_stored(rsp.status) {
        Ok(Sent::Done)
    } else {
        Ok(Sent::Retry(
            format!("status {:#06x} {}", rsp.status, rsp.error_comment),
            Some(rsp.status),
        ))
    }
}

/// Sends the due items of one destination over one association. Returns how many were sent.
async fn send_destination(
    engine: &Engine,
    opts: &ForwardOptions,
    dest: &Destination,
    cancel: &CancellationToken,
) -> Result<usize, ForwardError> {
    let node = engine.recorder.site.as_str();
    let items: Vec<OutItem> = crate::on_pool!(engine.recorder.pool(), pool => {
        sqlx::query_as(
            "SELECT id, path, sop_class_uid, sop_instance_uid, attempts FROM outbox
              WHERE node = $3 AND destination = $1 AND state = 'pending' AND next_attempt_at <= $2
              ORDER BY id LIMIT 64",
        )
        .bind(&dest.name)
        .bind(now())
        .bind(node)
        .fetch_all(pool)
        .await?
    });
    if items.is_empty() {
        return Ok(0);
    }
    // Offer each SOP class with the files' own transfer syntaxes first, then the native ones.
    let mut offers: Vec<(String, Vec<String>)> = Vec::new();
    for it in &items {
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
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(opts.calling_ae_title.clone())
        .called_ae_title(dest.ae_title.clone())
        .max_pdu_length(opts.max_pdu)
        .connection_timeout(Duration::from_secs(opts.connect_timeout_secs.max(1)))
        .read_timeout(Duration::from_secs(60))
        .write_timeout(Duration::from_secs(60));
    // One presentation context per (class, transfer syntax): a peer accepts or refuses each
    // on its own, and a file is sent in its own syntax whenever the peer takes it.
    for (class, syntaxes) in &offers {
        let mut all = syntaxes.clone();
        for n in NATIVE {
            if !all.iter().any(|t| t == n) {
                all.push(n.to_string());
            }
        }
        for ts in all {
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
                settle(engine, opts, it, &Sent::Retry(why.clone(), None)).await?;
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
                let (_, delay) = settle(engine, opts, it, &outcome).await?;
                match &outcome {
                    Sent::Done => sent += 1,
                    Sent::Retry(why, _) => {
                        tracing::warn!(outbox = it.id, retry_in_secs = delay, error = %why, "not stored; will retry")
                    }
                    Sent::Fail(_) => {}
                }
            }
            Err(why) => {
                // This item's fate is unknown to us; it is retried (the destination dedupes by
                // SOP Instance UID if it did store it).
                settle(engine, opts, it, &Sent::Retry(why.clone(), None)).await?;
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

/// Counts per state, for the log and the tests.
pub async fn outbox_counts(engine: &Engine) -> Result<Vec<(String, i64)>, ForwardError> {
    Ok(crate::on_pool!(engine.recorder.pool(), pool => {
        sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
            .fetch_all(pool)
            .await?
    }))
}

/// Runs dispatch and sending until `cancel`; `wake` is notified when a plate was routed.
pub fn spawn(
    engine: Arc<Engine>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let opts = engine.config.forward.clone();
        loop {
            if let Err(e) = dispatch_pending(&engine).await {
                tracing::error!(error = %e, "dispatch failed");
            }
            for dest in &opts.destinations {
                if cancel.is_cancelled() {
                    break;
                }
                if let Err(e) = send_destination(&engine, &opts, dest, &cancel).await {
                    tracing::error!(destination = %dest.name, error = %e, "forwarding failed");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        // A last dispatch so every routed plate leaves with its note and outbox rows written.
        if let Err(e) = dispatch_pending(&engine).await {
            tracing::error!(error = %e, "dispatch failed");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
