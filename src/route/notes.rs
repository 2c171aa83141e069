//! Rejection notes the DICOM way: a Key Object Selection document titled (113001, DCM,
//! "Rejected for Quality Reasons") with the CID 7011 reason as its title modifier (TID 2010),
//! referencing the rejected plate in its own study, so an archive that honours IHE rejection
//! notes hides it; and optionally the Grad-CAM montage as a Secondary Capture image in the same
//! study, so the dentist's viewer shows why. UIDs are derived from the plate, so redoing a note
//! after a crash rewrites the same object rather than making a second one.

use crate::cid7011::meaning as cid7011_meaning;
use crate::explain::MontageJpeg;
use crate::net::derived_uid;
use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};

pub const KOS_CLASS: &str = "1.2.840.10008.5.1.4.1.1.88.59";
pub const SC_CLASS: &str = "1.2.840.10008.5.1.4.1.1.7";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// JPEG Baseline (Process 1), which every viewer and archive reads: the montage capture.
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

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

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("cannot read the rejected plate {path}: {why}")]
    Source { path: PathBuf, why: String },
    #[error("cannot build the note: {0}")]
    Build(String),
    #[error("cannot read the montage {path}: {why}")]
    Montage { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the note says about the plate, from its QC record.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The routed plate file, read for its patient and study attributes.
    pub plate_path: PathBuf,
    /// Primary CID 7011 code, if the model named one.
    pub reason_code: Option<String>,
    /// Artifact types reported, strongest first.
    pub artifact_types: Vec<String>,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    pub model: String,
    pub montage_path: Option<PathBuf>,
    /// The montage's JPEG bytes (the daemon's pipeline hands them on); otherwise the montage
    /// file is read here.
    pub montage_jpeg: Option<std::sync::Arc<MontageJpeg>>,
}

/// A written note, for the database and the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenNote {
    pub kind: &'static str,
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// Patient and study attributes copied into the notes so they file under the same study.
/// Copied byte for byte, never logged.
const COPIED: [Tag; 12] = [
    tags::SPECIFIC_CHARACTER_SET,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
];
/// Type 2 attributes among them: present, possibly empty.
const TYPE2: [(Tag, VR); 9] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
];

struct Plate {
    copied: Vec<Elem>,
    study_uid: String,
    series_uid: String,
    sop_class: String,
    sop_instance: String,
    image_laterality: String,
    /// The plate's Instance Number (trimmed), empty when it has none.
    instance_number: String,
}

type Elem = dicom_object::mem::InMemElement;

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn read_plate(path: &Path) -> Result<Plate, NoteError> {
    let fail = |why: String| NoteError::Source {
        path: path.to_path_buf(),
        why,
    };
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| fail(e.to_string()))?;
    let ds: &InMemDicomObject = &obj;
    let mut copied = Vec::new();
    for tag in COPIED {
        if let Ok(Some(e)) = ds.element_opt(tag) {
            copied.push(Elem::new(tag, e.vr(), e.value().clone()));
        }
    }
    let plate = Plate {
        copied,
        study_uid: text(ds, tags::STUDY_INSTANCE_UID),
        series_uid: text(ds, tags::SERIES_INSTANCE_UID),
        sop_class: text(ds, tags::SOP_CLASS_UID),
        sop_instance: text(ds, tags::SOP_INSTANCE_UID),
        image_laterality: text(ds, tags::IMAGE_LATERALITY),
        instance_number: text(ds, tags::INSTANCE_NUMBER).trim().to_string(),
    };
    if plate.study_uid.is_empty() || plate.sop_instance.is_empty() || plate.sop_class.is_empty() {
        return Err(fail("no Study/SOP Instance/SOP Class UID".into()));
    }
    Ok(plate)
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(Elem::new(tag, vr, PrimitiveValue::from(value)));
}

fn seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(Elem::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put_str(&mut c, tags::CODE_VALUE, VR::SH, value);
    put_str(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

fn sop_ref(class: &str, instance: &str) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    put_str(&mut r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put_str(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance);
    r
}

/// Patient, General Study, equipment and the common parts of a new instance in the plate's
/// study: one series per study for plateqc's notes, numbered apart from the scanner's.
fn common(
    plate: &Plate,
    class: &str,
    instance: &str,
    modality: &str,
    series_number: &str,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    for e in &plate.copied {
        obj.put(e.clone());
    }
    for (tag, vr) in TYPE2 {
        if obj.element_opt(tag).ok().flatten().is_none() {
            obj.put(Elem::new(tag, vr, PrimitiveValue::Empty));
        }
    }
    let now = chrono::Utc::now();
    let (date, time) = (
        now.format("%Y%m%d").to_string(),
        now.format("%H%M%S").to_string(),
    );
    put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, class);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, instance);
    put_str(&mut obj, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
    put_str(&mut obj, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, &date);
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, &time);
    put_str(&mut obj, tags::MODALITY, VR::CS, modality);
    // One note series per plate series (and kind), so each note can carry its plate's
    // Instance Number: a reader sees "note 3" beside "image 3". A plate without a series UID
    // (seen on some exports) files its notes under one series per study.
    let of = if plate.series_uid.is_empty() {
        format!("study {}", plate.study_uid)
    } else {
        plate.series_uid.clone()
    };
    let series = derived_uid(&format!("plateqc {modality} series of {of}"));
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series);
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, series_number);
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "plateqc rejection notes",
    );
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, &note_number(plate));
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, "plateqc");
    put_str(
        &mut obj,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    obj
}

/// A note's Instance Number: its plate's, when that is a valid IS value; otherwise a number
/// from the plate's SOP Instance UID (1-99999, the same on every rewrite of the note), so the
/// notes of one series are told apart even for plates that carry no number.
fn note_number(plate: &Plate) -> String {
    if let Ok(n) = plate.instance_number.parse::<i64>() {
        if (0..=i64::from(i32::MAX)).contains(&n) {
            return n.to_string();
        }
    }
    let digest = sha2::Sha256::digest(plate.sop_instance.as_bytes());
    let v = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (1 + v % 99_999).to_string()
}

fn describe(r: &Rejection) -> String {
    let mut s = String::from("plateqc: unusable");
    if let (Some(score), Some(t)) = (r.score, r.threshold) {
        s.push_str(&format!(" (score {score:.3}, threshold {t:.3})"));
    }
    if !r.artifact_types.is_empty() {
        s.push_str("; ");
        s.push_str(&r.artifact_types.join(", "));
    }
    s.push_str("; model ");
    s.push_str(&r.model);
    s
}

fn kos(plate: &Plate, r: &Rejection, uid: &str) -> InMemDicomObject {
    let mut obj = common(plate, KOS_CLASS, uid, "KO", "9901");
    obj.put(Elem::new(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        VR::SQ,
        DataSetSequence::<InMemDicomObject>::from(Vec::new()),
    ));
    let mut series_item = InMemDicomObject::new_empty();
    put_str(
        &mut series_item,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &plate.series_uid,
    );
    seq(
        &mut series_item,
        tags::REFERENCED_SOP_SEQUENCE,
        vec![sop_ref(&plate.sop_class, &plate.sop_instance)],
    );
    let mut study_item = InMemDicomObject::new_empty();
    put_str(
        &mut study_item,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        &plate.study_uid,
    );
    seq(
        &mut study_item,
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![series_item],
    );
    seq(
        &mut obj,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![study_item],
    );

    put_str(&mut obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    seq(
        &mut obj,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code("113001", "DCM", "Rejected for Quality Reasons")],
    );
    put_str(&mut obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put_str(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_str(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "2010");
    seq(&mut obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);

    // A plate judged unusable with no named type is noted as 111207 "Image artifact(s)".
    let reason = r
        .reason_code
        .as_deref()
        .filter(|c| cid7011_meaning(c).is_some())
        .unwrap_or("111207");
    let mut modifier = InMemDicomObject::new_empty();
    put_str(
        &mut modifier,
        tags::RELATIONSHIP_TYPE,
        VR::CS,
        "HAS CONCEPT MOD",
    );
    put_str(&mut modifier, tags::VALUE_TYPE, VR::CS, "CODE");
    seq(
        &mut modifier,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code("113011", "DCM", "Document Title Modifier")],
    );
    seq(
        &mut modifier,
        tags::CONCEPT_CODE_SEQUENCE,
        vec![code(
            reason,
            "DCM",
            cid7011_meaning(reason).unwrap_or_default(),
        )],
    );
    let mut description = InMemDicomObject::new_empty();
    put_str(
        &mut description,
        tags::RELATIONSHIP_TYPE,
        VR::CS,
        "CONTAINS",
    );
    put_str(&mut description, tags::VALUE_TYPE, VR::CS, "TEXT");
    seq(
        &mut description,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code("113012", "DCM", "Key Object Description")],
    );
    put_str(&mut description, tags::TEXT_VALUE, VR::UT, &describe(r));
    let mut image = InMemDicomObject::new_empty();
    put_str(&mut image, tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS");
    put_str(&mut image, tags::VALUE_TYPE, VR::CS, "IMAGE");
    seq(
        &mut image,
        tags::REFERENCED_SOP_SEQUENCE,
        vec![sop_ref(&plate.sop_class, &plate.sop_instance)],
    );
    seq(
        &mut obj,
        tags::CONTENT_SEQUENCE,
        vec![modifier, description, image],
    );
    obj
}

fn secondary_capture(
    plate: &Plate,
    r: &Rejection,
    uid: &str,
    montage: &MontageJpeg,
) -> InMemDicomObject {
    let mut obj = common(plate, SC_CLASS, uid, "OT", "9902");
    put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put_str(&mut obj, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY");
    put_str(&mut obj, tags::DERIVATION_DESCRIPTION, VR::ST, &describe(r));
    put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    obj.put(Elem::new(
        tags::PATIENT_ORIENTATION,
        VR::CS,
        PrimitiveValue::Empty,
    ));
    // The montage shows the plate's side; stating it also settles the series' Laterality
    // condition (required for paired body parts unless Image Laterality is present).
    let side = match plate.image_laterality.as_str() {
        s @ ("R" | "L" | "B" | "U") => s,
        _ => "U",
    };
    put_str(&mut obj, tags::IMAGE_LATERALITY, VR::CS, side);
    seq(
        &mut obj,
        tags::SOURCE_IMAGE_SEQUENCE,
        vec![sop_ref(&plate.sop_class, &plate.sop_instance)],
    );
    obj.put(Elem::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(3u16),
    ));
    put_str(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "YBR_FULL_422",
    );
    obj.put(Elem::new(
        tags::PLANAR_CONFIGURATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    obj.put(Elem::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(montage.height as u16),
    ));
    obj.put(Elem::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(montage.width as u16),
    ));
    for (tag, v) in [
        (tags::BITS_ALLOCATED, 8u16),
        (tags::BITS_STORED, 8),
        (tags::HIGH_BIT, 7),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(Elem::new(tag, VR::US, PrimitiveValue::from(v)));
    }
    let raw_len = montage.width as usize * montage.height as usize * 3;
    put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01");
    put_str(
        &mut obj,
        tags::LOSSY_IMAGE_COMPRESSION_RATIO,
        VR::DS,
        &format!("{:.2}", raw_len as f64 / montage.bytes.len().max(1) as f64),
    );
    put_str(
        &mut obj,
        tags::LOSSY_IMAGE_COMPRESSION_METHOD,
        VR::CS,
        "ISO_10918_1",
    );
    let mut fragment = montage.bytes.clone();
    if fragment.len() % 2 == 1 {
        fragment.push(0);
    }
    obj.put(Elem::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(Vec::<u32>::new(), vec![fragment]),
    ));
    obj
}

/// The montage of an earlier run, read back: a JPEG as explain writes it (baseline, 4:2:2,
/// what the capture declares) is embedded byte for byte; anything else, such as the PNG of a
/// record made before montages were JPEGs, is decoded and encoded.
fn montage_from_file(path: &Path) -> Result<MontageJpeg, NoteError> {
    let fail = |why: String| NoteError::Montage {
        path: path.to_path_buf(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    if let Some((width, height)) = baseline_422(&bytes) {
        return Ok(MontageJpeg {
            bytes,
            width,
            height,
        });
    }
    let img = image::load_from_memory(&bytes).map_err(|e| fail(e.to_string()))?;
    MontageJpeg::encode(&img.to_rgb8()).map_err(NoteError::Build)
}

/// The size of a baseline JPEG with three components, the first sampled 2x1 and the others
/// 1x1 (YBR_FULL_422 in the capture's terms), from its frame header; `None` for anything else.
fn baseline_422(b: &[u8]) -> Option<(u32, u32)> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        if *b.get(at)? != 0xFF {
            return None;
        }
        let marker = *b.get(at + 1)?;
        let len = u16::from_be_bytes([*b.get(at + 2)?, *b.get(at + 3)?]) as usize;
        let seg = b.get(at + 4..at + 2 + len)?;
        match marker {
            0xC0 => {
                // Precision, height, width, component count, then (id, sampling, table) each.
                let [8, h0, h1, w0, w1, 3, comps @ ..] = seg else {
                    return None;
                };
                let (h, w) = (
                    u16::from_be_bytes([*h0, *h1]),
                    u16::from_be_bytes([*w0, *w1]),
                );
                let sampling = [comps.get(1)?, comps.get(4)?, comps.get(7)?];
                let ok = sampling == [&0x21, &0x11, &0x11] && h > 0 && w > 0;
                return ok.then_some((u32::from(w), u32::from(h)));
            }
            // Any other frame type (progressive, lossless, ...) or the scan before a frame.
            0xC1..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDA => return None,
            _ => at += 2 + len,
        }
    }
}

/// Writes the file complete under its name (staged and renamed) but not synced: see
/// [`write_notes_unsynced`].
fn write(
    obj: InMemDicomObject,
    class: &str,
    uid: &str,
    syntax: &str,
    path: &Path,
) -> Result<(), NoteError> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(syntax)
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(uid)
        .implementation_class_uid(crate::net::implementation_class_uid())
        .implementation_version_name(crate::net::IMPLEMENTATION_VERSION)
        .build()
        .map_err(|e| NoteError::Build(e.to_string()))?;
    let file = obj.with_exact_meta(meta);
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| NoteError::Build(e.to_string()))?;
    crate::fsutil::write_private_with(path, &bytes, false).map_err(|source| NoteError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the note (and the secondary capture, if asked and a montage exists) into `folder`,
/// durably: on return the files and their names survive a power cut.
pub fn write_notes(
    r: &Rejection,
    folder: &Path,
    with_capture: bool,
) -> Result<Vec<WrittenNote>, NoteError> {
    let written = write_notes_unsynced(r, folder, with_capture)?;
    sync_notes(&written)?;
    Ok(written)
}

/// Makes notes written by [`write_notes_unsynced`] durable: each file's content, then each
/// folder once (their names), however many notes share it. The daemon writes the notes of all
/// plates routed together first and syncs them here in one pass, instead of a file and a
/// folder sync per note, before their rows are committed.
pub fn sync_notes<'a>(written: impl IntoIterator<Item = &'a WrittenNote>) -> Result<(), NoteError> {
    let failed = |path: &Path, source| NoteError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut folders: Vec<&Path> = Vec::new();
    for n in written {
        std::fs::File::open(&n.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| failed(&n.path, e))?;
        if let Some(dir) = n.path.parent() {
            if !folders.contains(&dir) {
                folders.push(dir);
            }
        }
    }
    for dir in folders {
        crate::fsutil::sync_dir(Some(dir)).map_err(|e| failed(dir, e))?;
    }
    Ok(())
}

/// As [`write_notes`], without syncing: the files are complete under their names (written
/// under a temporary name and renamed) but may not survive a power cut until [`sync_notes`]
/// has run on them. Nothing may be recorded as written before that.
pub fn write_notes_unsynced(
    r: &Rejection,
    folder: &Path,
    with_capture: bool,
) -> Result<Vec<WrittenNote>, NoteError> {
    let plate = read_plate(&r.plate_path)?;
    let stem = crate::fsutil::sanitize_component(&plate.sop_instance);
    let mut out = Vec::new();
    let kos_uid = derived_uid(&format!(
        "plateqc rejection note for {}",
        plate.sop_instance
    ));
    let kos_path = folder.join(format!("{stem}.kos.dcm"));
    write(
        kos(&plate, r, &kos_uid),
        KOS_CLASS,
        &kos_uid,
        EXPLICIT_LE,
        &kos_path,
    )?;
    out.push(WrittenNote {
        kind: "kos",
        path: kos_path,
        sop_class_uid: KOS_CLASS.into(),
        sop_instance_uid: kos_uid,
    });
    if let (true, Some(m)) = (with_capture, r.montage_path.as_ref()) {
        let jpeg = match &r.montage_jpeg {
            Some(j) => j.clone(),
            None => std::sync::Arc::new(montage_from_file(m)?),
        };
        let sc_uid = derived_uid(&format!("plateqc montage for {}", plate.sop_instance));
        let sc_path = folder.join(format!("{stem}.sc.dcm"));
        write(
            secondary_capture(&plate, r, &sc_uid, &jpeg),
            SC_CLASS,
            &sc_uid,
            JPEG_BASELINE,
            &sc_path,
        )?;
        out.push(WrittenNote {
            kind: "sc",
            path: sc_path,
            sop_class_uid: SC_CLASS.into(),
            sop_instance_uid: sc_uid,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_baseline_422_frame_header_is_taken_as_is() {
        let rgb = image::RgbImage::from_fn(37, 11, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let ours = MontageJpeg::encode(&rgb).unwrap();
        assert_eq!(baseline_422(&ours.bytes), Some((37, 11)));
        // Another encoder's chroma sampling, a PNG, and nothing at all are not.
        let mut other = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut other)
            .encode_image(&rgb)
            .unwrap();
        assert_eq!(baseline_422(&other), None);
        let mut png = Vec::new();
        rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(baseline_422(&png), None);
        assert_eq!(baseline_422(&[]), None);
        // Every truncation of our own file, and a frame header shorter than its fields (length
        // 2, then 7), end in None rather than a panic.
        let sof = ours
            .bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap();
        for cut in 0..ours.bytes.len().min(sof + 20) {
            let got = baseline_422(&ours.bytes[..cut]);
            assert!(got.is_none() || cut > sof + 18, "cut {cut}: {got:?}");
        }
        for len in [2u16, 7] {
            let mut short = ours.bytes[..sof + 2].to_vec();
            short.extend_from_slice(&len.to_be_bytes());
            short.extend_from_slice(&ours.bytes[sof + 4..]);
            assert_eq!(baseline_422(&short), None, "length {len}");
        }
    }
}
