//! Received instances made durable in the inbox: each is streamed to a hidden temporary file
//! beside its final name with a file meta group in front, synced, checked and renamed into
//! `<inbox>/net/<calling AE>/` before the sender is answered.

use super::scp::{Incoming, Scp};
use crate::fsutil::{create_private_dir_all, move_file, sanitize_component};
use crate::net::dimse::{status, Command};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

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
        crate::net::implementation_class_uid().as_bytes(),
    );
    meta_element(
        &mut group,
        0x0013,
        b"SH",
        crate::net::IMPLEMENTATION_VERSION.as_bytes(),
    );
    if !source_ae.is_empty() {
        meta_element(&mut group, 0x0016, b"AE", source_ae.as_bytes());
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta_element(&mut out, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
}

pub(super) async fn open_incoming(
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

pub(super) fn incoming_name(rq: &Command) -> String {
    let uid = sanitize_component(&rq.sop_instance);
    if uid.is_empty() {
        "instance.dcm".into()
    } else {
        format!("{uid}.dcm")
    }
}

/// What the check of a received data set decided.
enum Admit {
    /// Moved into the inbox; `Some(reason)` when it is to be answered "cannot understand".
    Kept(Option<String>),
    /// Not the instance the command announced: refused, nothing kept.
    Mismatch(String),
}

/// Compares the data set's SOP UIDs with the command's (as dcmtk's storescp does, both answer
/// 0xA900 "data set does not match SOP class"); missing UIDs are left to the pipeline, which
/// records the file as it does any broken one.
fn mismatch(rq: &Command, class: Option<&str>, instance: Option<&str>) -> Option<String> {
    let differs =
        |got: Option<&str>, want: &str| got.is_some_and(|g| g != want.trim_end_matches('\0'));
    if differs(class, &rq.sop_class) {
        return Some(format!(
            "data set SOP Class UID {} is not the command's {}",
            class.unwrap_or(""),
            rq.sop_class
        ));
    }
    if differs(instance, &rq.sop_instance) {
        return Some(format!(
            "data set SOP Instance UID {} is not the command's {}",
            instance.unwrap_or(""),
            rq.sop_instance
        ));
    }
    None
}

/// Makes the received file durable and moves it into the inbox. Returns the status to answer.
/// A data set that fails the check is still moved in (the pipeline records and quarantines
/// it, so the site sees what was sent) but is answered "cannot understand"; one whose SOP
/// UIDs are not the command's is refused and removed.
pub(super) async fn finish_incoming(scp: &Scp, inc: &mut Incoming, folder: &Path) -> (u16, String) {
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
    let check = scp.check.clone();
    let rq = inc.rq.clone();
    let moved = tokio::task::spawn_blocking(move || -> std::io::Result<Admit> {
        let bytes = std::fs::read(&tmp)?;
        let checked = check(&bytes);
        drop(bytes);
        let problem = match checked {
            Ok((class, instance)) => {
                if let Some(why) = mismatch(&rq, class.as_deref(), instance.as_deref()) {
                    return Ok(Admit::Mismatch(why));
                }
                None
            }
            Err(problem) => Some(problem),
        };
        move_in_unique(&tmp, &folder, &name)?;
        Ok(Admit::Kept(problem))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match moved {
        Ok(Admit::Kept(None)) => (status::SUCCESS, String::new()),
        Ok(Admit::Kept(Some(bad))) => (status::CANNOT_UNDERSTAND, bad),
        Ok(Admit::Mismatch(why)) => {
            let _ = tokio::fs::remove_file(&inc.tmp).await;
            (status::DATA_SET_MISMATCH, why)
        }
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
        match move_file(tmp, &candidate) {
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
    use crate::decode::prescan;
    use crate::net::{implementation_class_uid, IMPLEMENTATION_VERSION};

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
    fn data_set_uids_must_be_the_commands() {
        let rq = Command {
            sop_class: "1.2.840.10008.5.1.4.1.1.1.3".into(),
            sop_instance: "1.2.3.4".into(),
            ..Default::default()
        };
        let class = Some("1.2.840.10008.5.1.4.1.1.1.3");
        assert_eq!(mismatch(&rq, class, Some("1.2.3.4")), None);
        let other = mismatch(&rq, class, Some("1.2.3.5")).unwrap();
        assert!(other.contains("SOP Instance UID 1.2.3.5"), "{other}");
        let wrong_class = mismatch(&rq, Some("1.2.840.10008.5.1.4.1.1.1.1"), Some("1.2.3.4"));
        assert!(wrong_class.unwrap().contains("SOP Class UID"));
        // Missing UIDs are the pipeline's to record, like any broken file.
        assert_eq!(mismatch(&rq, None, None), None);
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
