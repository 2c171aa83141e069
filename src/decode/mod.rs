//! Decode, the second room: DICOM bytes to stored pixel values, with every check that keeps a
//! bad file from hurting us done before the expensive or dangerous step it guards; then the
//! model tensor ([`preprocess`]) and the display image ([`display`]). [`load`] is the stage as
//! the pipeline runs it, one file at a time.

pub mod codec;
pub mod display;
pub mod jpeg;
pub mod load;
pub mod preprocess;
pub mod prescan;
pub mod worker;

pub use load::{load, LoadError, LoadFailure, Loaded};

/// What the pipeline needs from a decoded plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    /// The model's input (size and preprocessing).
    pub input: preprocess::Input,
    /// The 8-bit display image the overlays are drawn on; without overlays it is neither made
    /// nor, from a decode worker, sent.
    pub display: bool,
}

use crate::outcome::FailureKind;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use serde::{Deserialize, Serialize};

/// Why a plate could not be decoded. Every variant is a normal, recorded outcome.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum DecodeError {
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    #[error("malformed DICOM: {0}")]
    Malformed(String),
    #[error("refused by policy: {0}")]
    Policy(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("pixel data could not be decoded: {0}")]
    Pixels(String),
}

impl DecodeError {
    /// The failure kind recorded in the database and counted in the metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            DecodeError::NotDicom(_) => FailureKind::NotDicom,
            DecodeError::Malformed(_) => FailureKind::Malformed,
            DecodeError::Policy(_) => FailureKind::Policy,
            DecodeError::Unsupported(_) => FailureKind::Unsupported,
            DecodeError::Pixels(_) => FailureKind::Pixels,
        }
    }
}

/// What a site accepts, and the limits that keep a hostile header from costing memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodePolicy {
    /// Accepted modalities (`IO`, `DX`, `CR`, `PX`, ...); empty means any single-frame grayscale
    /// image, for test data from other modalities.
    pub modalities: Vec<String>,
    /// Largest accepted Rows and Columns: a 4 kpx edge is far beyond any intraoral plate.
    pub max_dimension: u32,
    /// Largest accepted Rows x Columns, the pixel budget every codec header is held to before
    /// a buffer is sized from it.
    pub max_pixels: u64,
    /// Largest accepted file, checked before reading it.
    pub max_file_bytes: u64,
    /// Deepest sequence nesting accepted; real images stay below 6.
    pub max_sequence_depth: usize,
    /// Decode each file in a worker process (see [`worker`]), so that a file that crashes a
    /// parser or a codec costs only itself. Off only for tests and the benchmark's baseline.
    pub isolate: bool,
    /// Address space of a decode worker, in MiB.
    pub worker_memory_mb: u64,
    /// CPU seconds a decode worker may spend on one file before it is ended (SIGXCPU).
    pub worker_cpu_secs: u64,
    /// Seconds the pipeline waits for a worker's answer before killing it.
    pub worker_timeout_secs: u64,
}

impl Default for DecodePolicy {
    fn default() -> Self {
        DecodePolicy {
            modalities: vec!["IO".into()],
            max_dimension: 8192,
            max_pixels: 8192 * 8192,
            max_file_bytes: 512 * 1024 * 1024,
            max_sequence_depth: 16,
            isolate: true,
            worker_memory_mb: 4096,
            worker_cpu_secs: 60,
            worker_timeout_secs: 120,
        }
    }
}

/// Identity and acquisition facts of a plate. Patient names are never read into it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlateHeader {
    pub sop_class_uid: String,
    /// Empty when the file has none (see `sop_instance_uid_from`).
    pub sop_instance_uid: String,
    #[serde(default)]
    pub sop_instance_uid_from: UidSource,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    /// Kept only long enough to be hashed with the site key before recording.
    #[serde(skip)]
    pub patient_id: Option<String>,
    pub acquisition_datetime: Option<String>,
    pub station_name: Option<String>,
    pub operator: Option<String>,
    pub device_serial: Option<String>,
    pub plate_id: Option<String>,
    pub transfer_syntax: String,
    pub rows: u32,
    pub columns: u32,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub pixel_signed: bool,
    pub photometric: String,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    pub window: Option<(f64, f64)>,
    /// What AAPM Report 305 keeps per image where the plate carries it: Body Part Examined,
    /// View Position, the first Anatomic Region's code meaning (dental plates name the region
    /// of the teeth there), and the IEC 62494-1 Exposure Index and Deviation Index.
    #[serde(default)]
    pub body_part: Option<String>,
    #[serde(default)]
    pub view_position: Option<String>,
    #[serde(default)]
    pub anatomic_region: Option<String>,
    #[serde(default)]
    pub exposure_index: Option<f64>,
    #[serde(default)]
    pub deviation_index: Option<f64>,
}

/// Where a plate's SOP Instance UID came from. Real files lack it now and then (seen on JPEG
/// Lossless SV1 plates); such a plate is still judged, keyed by its sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum UidSource {
    /// (0008,0018) of the data set, as it should be.
    #[default]
    DataSet,
    /// Only the file meta information's Media Storage SOP Instance UID (0002,0003) had it.
    FileMeta,
    /// Neither: `sop_instance_uid` is empty.
    Missing,
}

impl PlateHeader {
    pub fn is_monochrome1(&self) -> bool {
        self.photometric == "MONOCHROME1"
    }
}

/// A decoded plate: stored values of frame 1, masked to Bits Stored and sign-extended.
#[derive(Debug, Clone)]
pub struct Plate {
    pub header: PlateHeader,
    pub pixels: Vec<i32>,
}

impl Plate {
    pub fn width(&self) -> usize {
        self.header.columns as usize
    }
    pub fn height(&self) -> usize {
        self.header.rows as usize
    }
}

/// Decodes a whole Part 10 file held in memory.
pub fn decode(bytes: &[u8], policy: &DecodePolicy) -> Result<Plate, DecodeError> {
    let (obj, header) = open(bytes, policy, true)?;
    check_policy(&header, &obj, policy)?;
    let pixels = decode_pixels(&obj, &header)?;
    Ok(Plate { header, pixels })
}

/// A plate's stored values as uncompressed Pixel Data (little endian, Bits Allocated wide), for
/// a destination that refuses the file's compressed syntax. The values are those the plate was
/// judged on: masked to Bits Stored, sign-extended, bits above them (overlays) zero.
pub fn native_pixel_data(bytes: &[u8], policy: &DecodePolicy) -> Result<Vec<u8>, DecodeError> {
    let plate = decode(bytes, policy)?;
    Ok(pack_native(&plate.pixels, plate.header.bits_allocated))
}

/// Stored values into little-endian words of `bits_allocated` (8 or 16; two's complement for
/// signed ones), padded to an even length as Pixel Data must be.
pub fn pack_native(pixels: &[i32], bits_allocated: u16) -> Vec<u8> {
    let mut out: Vec<u8> = if bits_allocated == 8 {
        pixels.iter().map(|&v| v as u8).collect()
    } else {
        pixels
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect()
    };
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// Reads only the header, for `inspect` and for early routing decisions.
pub fn decode_header(bytes: &[u8], policy: &DecodePolicy) -> Result<PlateHeader, DecodeError> {
    open(bytes, policy, false).map(|(_, header)| header)
}

/// The SOP Class and Instance UIDs a received data set carries ((0008,0016), (0008,0018)),
/// for the receiver to compare with its C-STORE command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSetUids {
    pub sop_class: Option<String>,
    pub sop_instance: Option<String>,
}

/// The receiver's check of a data set before it answers a C-STORE: the structural pre-scan
/// (`max_inflated` bounds a deflated data set), then dicom-rs up to the pixel data for the SOP
/// UIDs. `Err` says why the data set cannot be understood.
pub fn check_data_set(
    bytes: &[u8],
    max_depth: usize,
    max_inflated: usize,
) -> Result<DataSetUids, String> {
    let scan = prescan::prescan(bytes, max_depth, max_inflated).map_err(|e| e.to_string())?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(prescan::dicom_rs_input(bytes, &scan.meta))
        .map_err(|e| flatten_error(&e))?;
    Ok(DataSetUids {
        sop_class: text(&obj, tags::SOP_CLASS_UID),
        sop_instance: text(&obj, tags::SOP_INSTANCE_UID),
    })
}

/// The pre-scan, then dicom-rs on bytes the pre-scan let through; pixel data is read only when
/// asked for.
fn open(
    bytes: &[u8],
    policy: &DecodePolicy,
    with_pixels: bool,
) -> Result<(DefaultDicomObject, PlateHeader), DecodeError> {
    let scan = prescan::prescan(
        bytes,
        policy.max_sequence_depth,
        policy.max_file_bytes as usize,
    )
    .map_err(|e| match e {
        prescan::PrescanError::NotDicom => DecodeError::NotDicom(e.to_string()),
        other => DecodeError::Malformed(other.to_string()),
    })?;
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    if !with_pixels {
        options = options.read_until(tags::PIXEL_DATA);
    }
    // dicom-rs reads the data set from the byte where the pre-scan read it, behind a meta group
    // rebuilt from the one the pre-scan read (see `prescan`).
    let obj = options
        .from_reader(prescan::dicom_rs_input(bytes, &scan.meta))
        .map_err(|e| DecodeError::Malformed(flatten_error(&e)))?;
    let header = read_header(&obj, &scan.transfer_syntax)?;
    Ok((obj, header))
}

/// dicom-rs errors nest their causes; one line with all of them is what an operator needs.
fn flatten_error(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        src = s.source();
    }
    msg
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag).and_then(|e| tidy(&e.to_str().ok()?))
}

/// A DICOM string without its padding (NUL or space) and surrounding blanks; `None` if empty.
fn tidy(s: &str) -> Option<String> {
    Some(s.trim_end_matches(['\0', ' ']).trim().to_string()).filter(|s| !s.is_empty())
}

/// A descriptive header value for the QC history: tidied, at most 64 characters.
fn label(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    text(obj, tag).map(|s| s.chars().take(64).collect())
}

/// The code meaning of the first item of a code sequence.
fn first_code_meaning(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let item = obj.get(tag)?.items()?.first()?;
    label(item, tags::CODE_MEANING)
}

/// A finite number, or none.
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

fn float(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
}

fn read_header(obj: &DefaultDicomObject, ts: &str) -> Result<PlateHeader, DecodeError> {
    let dims = |tag, name: &str| -> Result<u32, DecodeError> {
        let v = int(obj, tag)
            .ok_or_else(|| DecodeError::Policy(format!("not an image: missing {name}")))?;
        u32::try_from(v).map_err(|_| DecodeError::Malformed(format!("{name} is {v}")))
    };
    let acquisition_datetime = text(obj, tags::ACQUISITION_DATE_TIME).or_else(|| {
        let date = text(obj, tags::ACQUISITION_DATE).or_else(|| text(obj, tags::CONTENT_DATE))?;
        let time = text(obj, tags::ACQUISITION_TIME)
            .or_else(|| text(obj, tags::CONTENT_TIME))
            .unwrap_or_default();
        Some(format!("{date}{time}"))
    });
    let window = match (
        float(obj, tags::WINDOW_CENTER),
        float(obj, tags::WINDOW_WIDTH),
    ) {
        (Some(c), Some(w)) if w > 0.0 => Some((c, w)),
        _ => None,
    };
    let bits_allocated = int(obj, tags::BITS_ALLOCATED).unwrap_or(0) as u16;
    let (sop_instance_uid, sop_instance_uid_from) = match text(obj, tags::SOP_INSTANCE_UID) {
        Some(uid) => (uid, UidSource::DataSet),
        None => match tidy(&obj.meta().media_storage_sop_instance_uid) {
            Some(uid) => (uid, UidSource::FileMeta),
            None => (String::new(), UidSource::Missing),
        },
    };
    let sop_class_uid = text(obj, tags::SOP_CLASS_UID)
        .or_else(|| tidy(&obj.meta().media_storage_sop_class_uid))
        .ok_or_else(|| DecodeError::Malformed("missing SOP Class UID".into()))?;
    Ok(PlateHeader {
        sop_class_uid,
        sop_instance_uid,
        sop_instance_uid_from,
        study_instance_uid: text(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        series_instance_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        modality: text(obj, tags::MODALITY).unwrap_or_default(),
        patient_id: text(obj, tags::PATIENT_ID),
        acquisition_datetime,
        station_name: text(obj, tags::STATION_NAME),
        operator: text(obj, tags::OPERATORS_NAME),
        device_serial: text(obj, tags::DEVICE_SERIAL_NUMBER),
        plate_id: text(obj, tags::PLATE_ID),
        transfer_syntax: ts.to_string(),
        rows: dims(tags::ROWS, "Rows")?,
        columns: dims(tags::COLUMNS, "Columns")?,
        bits_allocated,
        bits_stored: int(obj, tags::BITS_STORED).unwrap_or(bits_allocated as i64) as u16,
        pixel_signed: int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
        rescale_slope: float(obj, tags::RESCALE_SLOPE).unwrap_or(1.0),
        rescale_intercept: float(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
        window,
        body_part: label(obj, tags::BODY_PART_EXAMINED),
        view_position: label(obj, tags::VIEW_POSITION),
        anatomic_region: first_code_meaning(obj, tags::ANATOMIC_REGION_SEQUENCE),
        exposure_index: finite(float(obj, tags::EXPOSURE_INDEX)),
        deviation_index: finite(float(obj, tags::DEVIATION_INDEX)),
    })
}

fn check_policy(
    h: &PlateHeader,
    obj: &DefaultDicomObject,
    policy: &DecodePolicy,
) -> Result<(), DecodeError> {
    if !policy.modalities.is_empty()
        && !policy
            .modalities
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&h.modality))
    {
        return Err(DecodeError::Policy(format!(
            "modality '{}' is not accepted (accepted: {})",
            h.modality.escape_debug(),
            policy.modalities.join(", ")
        )));
    }
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(DecodeError::Policy("not an image: no Pixel Data".into()));
    }
    let samples = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples != 1 || !matches!(h.photometric.as_str(), "MONOCHROME1" | "MONOCHROME2") {
        return Err(DecodeError::Unsupported(format!(
            "only grayscale plates are judged (photometric '{}', {samples} samples)",
            h.photometric.escape_debug()
        )));
    }
    let frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    if frames != 1 {
        return Err(DecodeError::Unsupported(format!(
            "{frames} frames; plates are single-frame"
        )));
    }
    if h.rows == 0
        || h.columns == 0
        || h.rows > policy.max_dimension
        || h.columns > policy.max_dimension
    {
        return Err(DecodeError::Policy(format!(
            "{}x{} pixels is outside 1..={} per side",
            h.columns, h.rows, policy.max_dimension
        )));
    }
    let pixels = (h.rows as u64).checked_mul(h.columns as u64);
    if pixels.is_none_or(|p| p > policy.max_pixels) {
        return Err(DecodeError::Policy(format!(
            "{}x{} pixels is more than the budget of {}",
            h.columns, h.rows, policy.max_pixels
        )));
    }
    if !matches!(h.bits_allocated, 8 | 16) || h.bits_stored == 0 || h.bits_stored > h.bits_allocated
    {
        return Err(DecodeError::Unsupported(format!(
            "{} bits stored in {} allocated",
            h.bits_stored, h.bits_allocated
        )));
    }
    if !h.rescale_slope.is_finite() || h.rescale_slope == 0.0 || !h.rescale_intercept.is_finite() {
        return Err(DecodeError::Malformed(format!(
            "rescale slope {} intercept {}",
            h.rescale_slope, h.rescale_intercept
        )));
    }
    Ok(())
}

const JPEG_SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];

/// Transfer syntaxes this build decodes; network negotiation offers exactly these.
pub const SUPPORTED_TRANSFER_SYNTAXES: [&str; 13] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
];

fn decode_pixels(obj: &DefaultDicomObject, h: &PlateHeader) -> Result<Vec<i32>, DecodeError> {
    let ts = h.transfer_syntax.as_str();
    if !SUPPORTED_TRANSFER_SYNTAXES.contains(&ts) {
        return Err(DecodeError::Unsupported(format!("transfer syntax {ts}")));
    }
    let n = h.rows as usize * h.columns as usize;
    let expect = codec::Expect {
        rows: h.rows,
        columns: h.columns,
        bits_allocated: h.bits_allocated,
    };
    let fragments = obj
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.value().fragments());
    // A compressed frame: its codec header is checked against the DICOM header before any
    // codec allocates from it.
    let stream = || -> Result<Vec<u8>, DecodeError> {
        let fragments = fragments.ok_or_else(|| {
            DecodeError::Malformed(
                "compressed transfer syntax without encapsulated pixel data".into(),
            )
        })?;
        let stream: Vec<u8> = fragments.iter().flatten().copied().collect();
        codec::check(ts, &stream, &expect).map_err(DecodeError::Pixels)?;
        Ok(stream)
    };
    let raw: Vec<i32> = if JPEG_SYNTAXES.contains(&ts) {
        let img = jpeg::decode(&stream()?, h.columns as usize, h.rows as usize)
            .map_err(DecodeError::Pixels)?;
        img.samples
    } else if JPEG_LS_SYNTAXES.contains(&ts) {
        decode_jpegls(&stream()?, n)?
    } else {
        if ts == RLE_LOSSLESS {
            for f in fragments.into_iter().flatten() {
                codec::rle_table(f, &expect).map_err(DecodeError::Pixels)?;
            }
        } else if JPEG_2000_SYNTAXES.contains(&ts) {
            stream()?;
        }
        let decoded = obj
            .decode_pixel_data_frame(0)
            .map_err(|e| DecodeError::Pixels(flatten_error(&e)))?;
        let data = decoded
            .frame_data(0)
            .map_err(|e| DecodeError::Pixels(flatten_error(&e)))?;
        samples_of(data, n, h.bits_allocated == 8)?
    };
    Ok(mask_stored(raw, h.bits_stored, h.pixel_signed))
}

/// `n` stored values from little-endian bytes, one or two per sample.
fn samples_of(data: &[u8], n: usize, one_byte: bool) -> Result<Vec<i32>, DecodeError> {
    let bytes_per = if one_byte { 1 } else { 2 };
    if data.len() < n * bytes_per {
        return Err(DecodeError::Pixels(format!(
            "pixel data holds {} bytes, {} needed",
            data.len(),
            n * bytes_per
        )));
    }
    Ok(if one_byte {
        data[..n].iter().map(|&b| b as i32).collect()
    } else {
        data[..2 * n]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32)
            .collect()
    })
}

const JPEG_LS_SYNTAXES: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];
const JPEG_2000_SYNTAXES: [&str; 2] = ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"];

/// JPEG-LS through CharLS (the build dicom-rs uses), its SOF55 already checked. CharLS gives
/// one byte per sample up to 8 bits of precision and two above, whatever Bits Allocated says.
/// A stream CharLS refuses for zero padding before EOI (see
/// [`codec::without_padding_before_eoi`]) is read again without it.
fn decode_jpegls(stream: &[u8], n: usize) -> Result<Vec<i32>, DecodeError> {
    let precision = codec::jpegls_frame(stream)
        .map_err(DecodeError::Pixels)?
        .precision;
    let decoded = match charls::CharLS::default().decode(stream) {
        Ok(d) => d,
        Err(first) => codec::without_padding_before_eoi(stream)
            .and_then(|s| charls::CharLS::default().decode(&s).ok())
            .ok_or_else(|| DecodeError::Pixels(format!("JPEG-LS: {first}")))?,
    };
    samples_of(&decoded, n, precision <= 8)
}

const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Keeps the low Bits Stored bits (overlay bits or garbage above them are common in old
/// scanners' output) and sign-extends when Pixel Representation says so.
fn mask_stored(mut v: Vec<i32>, bits: u16, signed: bool) -> Vec<i32> {
    let bits = bits.min(31) as u32;
    let mask = (1i64 << bits) as i32 - 1;
    let sign = 1i32 << (bits - 1);
    for x in v.iter_mut() {
        let m = *x & mask;
        *x = if signed && m & sign != 0 {
            m - (1 << bits)
        } else {
            m
        };
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_drops_high_bits_and_sign_extends() {
        assert_eq!(
            mask_stored(vec![0xF0FF, 0x0FFF], 12, false),
            vec![0x0FF, 0xFFF]
        );
        assert_eq!(
            mask_stored(vec![0x0FFF, 0x07FF, 0x0800], 12, true),
            vec![-1, 2047, -2048]
        );
        assert_eq!(mask_stored(vec![255], 8, false), vec![255]);
    }
}
