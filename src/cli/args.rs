//! The command line's arguments: what each subcommand takes, with the help text operators see.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "plateqc",
    version,
    about = "Quality control for dental phosphor-plate X-rays"
)]
pub struct Cli {
    /// TOML configuration file (see plateqc.example.toml); flags override it.
    #[arg(long, global = true, env = "PLATEQC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: `human` or `json`.
    #[arg(long, global = true, default_value = "human")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// QC history: a SQLite file or a postgres:// URL (default: paths.db of the config).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// This machine's patient-ID key file (paths.key_file); required with a postgres:// URL.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// This site's name in the records ([record] site); required with a postgres:// URL.
    #[arg(long)]
    pub site: Option<String>,
    /// Folder for overlays and montages.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// ONNX model file following models/README.md.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Accepted modalities, comma-separated (e.g. IO,DX,CR,PX), or `any`.
    #[arg(long)]
    pub modalities: Option<String>,
    /// Heat-map method: gradcam, gradcampp or layercam.
    #[arg(long)]
    pub cam_method: Option<String>,
    /// Heat-map colours: turbo, inferno, viridis or jet.
    #[arg(long)]
    pub colormap: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Judge every plate under the given files or folders (recursive) and record the results.
    Scan {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
        /// Exit 0 even when some files failed.
        #[arg(long)]
        no_fail_on_error: bool,
    },
    /// Show one file's header, verdict, reasons and where its overlays went. Records nothing
    /// unless `--record`: looking at a file does not change the QC history or its reject
    /// statistics.
    Inspect {
        file: PathBuf,
        /// Record the judgement in the QC history (as `scan` of this one file would).
        #[arg(long)]
        record: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run as a service: judge every complete file arriving in the inbox folders, record it,
    /// and move it to accepted/, rejected/ or quarantine/. Stops on SIGINT or SIGTERM after
    /// finishing the plates in flight.
    Watch {
        /// Inbox folder (repeatable); overrides `watch.inboxes`.
        #[arg(long = "inbox")]
        inboxes: Vec<PathBuf>,
        /// Receive plates by DICOM C-STORE on this `host:port` (overrides `dicom.listen`).
        #[arg(long)]
        dicom_listen: Option<String>,
        /// This node's AE title (overrides `dicom.ae_title`).
        #[arg(long)]
        ae_title: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Validate the configuration and the model, print the effective settings, and exit.
    CheckConfig {
        #[command(flatten)]
        common: Common,
        /// Also C-ECHO every forwarding destination with the AE titles forwarding uses; exit 1
        /// when one does not answer, with what to check.
        #[arg(long)]
        probe: bool,
    },
    /// The forwarding outbox: see what waits or failed, requeue it, or drop it.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Internal: a decode worker, started by plateqc itself for every file's parsing.
    #[command(name = "__decode-worker", hide = true)]
    DecodeWorker {
        /// Address space cap of the worker, in bytes.
        #[arg(long)]
        memory_bytes: u64,
        /// CPU seconds per file.
        #[arg(long)]
        cpu_secs: u64,
    },
    /// Reject analysis: how many images were rejected, why, at which station, by whom, on
    /// which device and plate, over time, and which physical plates to replace. Reviewer
    /// overrides count.
    Report {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        filter: FilterArgs,
        /// Output: table (for people), csv or json.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also write a self-contained review page (HTML, no server needed) to this file.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Also write one CSV row per judged image (AAPM Report 305 data elements) to this file.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Most recent images listed on the review page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// A plate is worn when a wear artifact is on at least this many ...
        #[arg(long, default_value_t = 9)]
        wear_hits: i64,
        /// ... of its last this many scans.
        #[arg(long, default_value_t = 20)]
        wear_window: i64,
        /// Target reject rate in percent (AAPM Report 151; default `[report] target_pct`, 8).
        #[arg(long)]
        target_pct: Option<f64>,
        /// Investigate a rate above this percentage (default `[report]`, 10) ...
        #[arg(long)]
        investigate_above_pct: Option<f64>,
        /// ... or below this one (rejects may go unrecorded; default `[report]`, 5).
        #[arg(long)]
        investigate_below_pct: Option<f64>,
        /// A rate over fewer images than this is shown but not judged (default `[report]`, 30).
        #[arg(long)]
        min_images: Option<i64>,
    },
    /// Every record of one instance: each judgement and each reviewer override. Takes a SOP
    /// Instance UID, or a file (matched by the UID in its header and by its sha256).
    History {
        target: String,
        #[command(flatten)]
        db: DbArg,
        /// Output: table or json.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Record a person's verdict on a judged instance (append-only: who, when, why).
    Override {
        sop_instance_uid: String,
        /// The verdict the reviewer gives: usable or unusable.
        #[arg(long)]
        verdict: String,
        /// Who reviews (name or initials).
        #[arg(long = "by")]
        by: String,
        /// Why the model's verdict was wrong (or right).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Record reviews in bulk from a CSV file with the header sop_instance_uid,verdict,by,reason
    /// (a verdict equal to the model's confirms it). Every row is checked first; a file with a
    /// bad row records nothing. Rows already recorded are skipped.
    ReviewImport {
        file: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
    /// Choose this site's decision threshold from its reviewed plates for a target false-reject
    /// rate, show the recall it gives (with a 95% interval) and record who chose it on which
    /// plates. `watch` and `scan` use it from their next start (or SIGHUP).
    Calibrate {
        /// Share of plates reviewers called usable that may be rejected.
        #[arg(long, default_value_t = 0.05)]
        target_false_reject: f64,
        /// The model whose scores are calibrated (default: the one that judged the latest
        /// image of this site).
        #[arg(long)]
        model_version: Option<String>,
        /// Who calibrates (recorded).
        #[arg(long = "by", default_value = "")]
        by: String,
        /// Refuse with fewer reviewed usable plates than this ...
        #[arg(long, default_value_t = 20)]
        min_usable: usize,
        /// ... or fewer reviewed unusable ones.
        #[arg(long, default_value_t = 10)]
        min_unusable: usize,
        /// Show the choice, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// List this site's calibrations instead.
        #[arg(long)]
        list: bool,
        /// Output: table or json.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        db: DbArg,
    },
    /// Write the overridden plates as a labelled set for retraining: OUT/images/*.dcm and
    /// OUT/labels.csv (see docs/reports.md).
    ExportLabels {
        out: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum OutboxAction {
    /// Entries newest first, with each one's attempts and last error, and the counts per
    /// destination and state.
    List {
        /// pending, failed, sent, or waiting (pending and failed).
        #[arg(long, default_value = "waiting")]
        state: String,
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Output: table, csv or json.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        db: DbArg,
    },
    /// Requeue waiting entries for an attempt now, attempts counted from zero (a running
    /// daemon picks them up within a second).
    Retry {
        #[command(flatten)]
        select: OutboxSelectArgs,
        #[command(flatten)]
        db: DbArg,
    },
    /// Delete waiting entries: they will not be sent. Sent entries are history and stay.
    Drop {
        #[command(flatten)]
        select: OutboxSelectArgs,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Args, Debug, Clone, Default)]
#[group(required = true, multiple = false)]
pub struct OutboxSelectArgs {
    /// These entries (ids from `plateqc outbox list`).
    #[arg(long = "id", num_args = 1..)]
    pub ids: Vec<i64>,
    /// This node's waiting entries for this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Every failed entry of this node.
    #[arg(long)]
    pub failed: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct DbArg {
    /// QC history: a SQLite file or a postgres:// URL (default: paths.db of the config).
    #[arg(long, value_name = "FILE|URL")]
    pub db: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// First day included (YYYY-MM-DD; acquisition date, else processing date).
    #[arg(long)]
    pub since: Option<String>,
    /// Last day included (YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this site (the recording daemon's `record.site`).
    #[arg(long)]
    pub site: Option<String>,
    /// Only this Station Name.
    #[arg(long)]
    pub station: Option<String>,
    /// Only this Operators' Name.
    #[arg(long)]
    pub operator: Option<String>,
    /// Only this Device Serial Number.
    #[arg(long)]
    pub device: Option<String>,
    /// Only this Plate ID.
    #[arg(long)]
    pub plate: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Table,
    Csv,
    Json,
}
