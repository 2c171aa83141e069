//! The decode stage for one file: its size checked before it is read, its content hashed, its
//! pixels decoded, then turned into the model's tensor and the display image, after which the
//! decoded values are dropped. A failure says which file, which instance when the header could
//! be read, and what is known of it for the record.

use super::{decode, decode_header, display, preprocess, DecodeError, DecodePolicy, PlateHeader};
use crate::outcome::{FailureKind, Stage};
use sha2::Digest;
use std::path::{Path, PathBuf};

/// A plate ready for inference and explanation.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub sha256: String,
    pub size_bytes: i64,
    pub header: PlateHeader,
    /// Display grayscale at native size (see [`display::display_gray`]).
    pub gray: Vec<u8>,
    /// The model input, `2 x S x S`.
    pub tensor: Vec<f32>,
    /// Where the plate sits in the tensor, to map heat maps back onto it.
    pub letterbox: preprocess::Letterbox,
}

/// Why a file was not loaded. Every one is a normal, recorded outcome.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("file is {size} bytes, limit {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Decode(DecodeError),
}

/// A file that could not be loaded, with what is known of it.
#[derive(Debug, thiserror::Error)]
#[error("{failure}")]
pub struct LoadError {
    pub path: PathBuf,
    /// The SOP Instance UID, when the header could be read.
    pub sop_instance_uid: Option<String>,
    /// The file's size (0 when it could not be read).
    pub size_bytes: i64,
    /// sha256 of the content, when it was read.
    pub sha256: Option<String>,
    /// The readable header of a file whose pixels could not be decoded: identity for the record.
    pub header: Option<Box<PlateHeader>>,
    pub failure: LoadFailure,
}

impl LoadError {
    /// The stage that failed: reading the file, or decoding it.
    pub fn stage(&self) -> Stage {
        match self.failure {
            LoadFailure::Read(_) | LoadFailure::TooLarge { .. } => Stage::Read,
            LoadFailure::Decode(_) => Stage::Decode,
        }
    }

    pub fn kind(&self) -> FailureKind {
        match &self.failure {
            LoadFailure::Read(_) => FailureKind::Io,
            LoadFailure::TooLarge { .. } => FailureKind::TooLarge,
            LoadFailure::Decode(e) => e.kind(),
        }
    }
}

/// Reads, decodes and preprocesses the plate at `path` for a model of input size `input_size`.
pub fn load(path: &Path, policy: &DecodePolicy, input_size: usize) -> Result<Loaded, LoadError> {
    let fail = |size_bytes: i64, sha256: Option<String>, failure| LoadError {
        path: path.to_path_buf(),
        sop_instance_uid: None,
        size_bytes,
        sha256,
        header: None,
        failure,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(0, None, LoadFailure::Read(e)))?
        .len();
    if size > policy.max_file_bytes {
        return Err(fail(
            size as i64,
            None,
            LoadFailure::TooLarge {
                size,
                limit: policy.max_file_bytes,
            },
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(size as i64, None, LoadFailure::Read(e)))?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    let plate = match decode(&bytes, policy) {
        Ok(p) => p,
        Err(e) => {
            // The header may still be readable; keep what identity we can for the record.
            let header = decode_header(&bytes, policy).ok().map(Box::new);
            return Err(LoadError {
                sop_instance_uid: header.as_ref().map(|h| h.sop_instance_uid.clone()),
                header,
                ..fail(size as i64, Some(sha256), LoadFailure::Decode(e))
            });
        }
    };
    drop(bytes);
    let (tensor, letterbox) = preprocess::preprocess(&plate, input_size);
    let gray = display::display_gray(&plate);
    Ok(Loaded {
        sha256,
        size_bytes: size as i64,
        header: plate.header,
        gray,
        tensor,
        letterbox,
    })
}
