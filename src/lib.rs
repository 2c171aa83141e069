//! plateqc: quality control for dental phosphor-plate X-rays.
//!
//! The rooms follow the plate: [`ingest`] (inbox watching, the DICOM receiver) -> [`decode`]
//! (DICOM to stored values, the model tensor and the display image) -> [`infer`] (the ONNX
//! classifier and its verdict) -> [`explain`] (Grad-CAM from the model's own outputs, overlay
//! images) -> [`record`] (the QC history, SQLite or PostgreSQL) -> [`route`] (moving files,
//! rejection notes, forwarding). Each uses only the rooms before it and the shared kit below
//! them ([`net`], [`outcome`], [`privacy`], [`cid7011`], [`fsutil`]). Around them: [`config`]
//! gathers their options, [`pipeline`] wires them with bounded channels, [`watch`] is the
//! daemon, [`metrics`] its endpoint, [`report`] reads the history back (reject analysis, review
//! page, overrides) and [`cli`] is what the binary calls.

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
