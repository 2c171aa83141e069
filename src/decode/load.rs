//! The decode stage for one file: its size checked before it is read, its content hashed, its
//! pixels decoded, then turned into the model's tensor and the display image, after which the
//! decoded values are dropped. A failure says which file, which instance when the header could
//! be read, and what is known of it for the record.

use super::preprocess;
use super::worker::{self, DecodePool, Decoded, Refused};
use super::{DecodeError, DecodePolicy, PlateHeader, Want};
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
    /// The decode worker died on this file (a parser or codec crashed, ran out of its memory
    /// or time); the message names the signal.
    #[error("{0}")]
    Crash(String),
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
            LoadFailure::Decode(_) | LoadFailure::Crash(_) => Stage::Decode,
        }
    }

    pub fn kind(&self) -> FailureKind {
        match &self.failure {
            LoadFailure::Read(_) => FailureKind::Io,
            LoadFailure::TooLarge { .. } => FailureKind::TooLarge,
            LoadFailure::Decode(e) => e.kind(),
            LoadFailure::Crash(_) => FailureKind::Crash,
        }
    }
}

/// Reads, decodes and preprocesses the plate at `path` as `want` asks (the model's input, the
/// display image or not),
/// in this process (tests and the benchmark's baseline; the pipeline uses [`load_isolated`]).
pub fn load(path: &Path, policy: &DecodePolicy, want: Want) -> Result<Loaded, LoadError> {
    let (bytes, size, sha256) = read(path, policy)?;
    let answer = worker::decode_bytes(&bytes, policy, want);
    drop(bytes);
    finish(path, size, sha256, Ok(answer))
}

/// As [`load`], with the bytes decoded in one of `pool`'s worker processes: the file is read
/// and hashed here, everything that parses it runs there.
pub fn load_isolated(
    path: &Path,
    policy: &DecodePolicy,
    want: Want,
    pool: &DecodePool,
) -> Result<Loaded, LoadError> {
    let (bytes, size, sha256) = read(path, policy)?;
    let answer = pool.decode(&bytes, policy, want);
    drop(bytes);
    finish(path, size, sha256, answer.map_err(|died| died.0))
}

fn failure(
    path: &Path,
    size_bytes: i64,
    sha256: Option<String>,
    failure: LoadFailure,
) -> LoadError {
    LoadError {
        path: path.to_path_buf(),
        sop_instance_uid: None,
        size_bytes,
        sha256,
        header: None,
        failure,
    }
}

/// The file's bytes, size and sha256, its size checked before it is read.
fn read(path: &Path, policy: &DecodePolicy) -> Result<(Vec<u8>, u64, String), LoadError> {
    let size = std::fs::metadata(path)
        .map_err(|e| failure(path, 0, None, LoadFailure::Read(e)))?
        .len();
    if size > policy.max_file_bytes {
        return Err(failure(
            path,
            size as i64,
            None,
            LoadFailure::TooLarge {
                size,
                limit: policy.max_file_bytes,
            },
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| failure(path, size as i64, None, LoadFailure::Read(e)))?;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    Ok((bytes, size, sha256))
}

fn finish(
    path: &Path,
    size: u64,
    sha256: String,
    answer: Result<Result<Decoded, Refused>, String>,
) -> Result<Loaded, LoadError> {
    match answer {
        Ok(Ok(d)) => Ok(Loaded {
            sha256,
            size_bytes: size as i64,
            header: d.header,
            gray: d.gray,
            tensor: d.tensor,
            letterbox: d.letterbox,
        }),
        Ok(Err(Refused { error, header })) => Err(LoadError {
            sop_instance_uid: header.as_ref().map(|h| h.sop_instance_uid.clone()),
            header,
            ..failure(path, size as i64, Some(sha256), LoadFailure::Decode(error))
        }),
        Err(died) => Err(failure(
            path,
            size as i64,
            Some(sha256),
            LoadFailure::Crash(died),
        )),
    }
}
