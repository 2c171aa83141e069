//! plateqc: quality control for dental phosphor-plate X-rays.
//!
//! The pipeline follows the data: [`decode`] (DICOM to stored values and the model tensor),
//! [`infer`] (the ONNX classifier), [`explain`] (Grad-CAM from the model's own outputs, overlay
//! images), [`record`] (the QC history, SQLite or PostgreSQL); [`pipeline`] wires them with
//! bounded channels, [`report`] reads the history back (reject analysis, review page,
//! overrides) and [`cli`] is what the binary calls.

pub mod cid7011;
pub mod cli;
pub mod config;
pub mod decode;
pub mod explain;
pub mod fsutil;
pub mod infer;
pub mod ingest;
pub mod metrics;
pub mod net;
pub mod outcome;
pub mod pipeline;
pub mod privacy;
pub mod record;
pub mod report;
pub mod route;
pub mod watch;
