//! Configuration: a TOML file parsed section by section so that every mistake is reported in
//! one go, then command-line flags on top.
//!
//! Each section's options live beside the code that uses them; this module only gathers them.

use crate::decode::DecodePolicy;
use crate::explain::ExplainOptions;
use crate::infer::InferOptions;
use crate::ingest::scp::DicomOptions;
use crate::ingest::WatchOptions;
use crate::record::{DbLocation, RecordOptions};
use crate::route::forward::ForwardOptions;
use crate::route::notes::NoteOptions;
use crate::route::RouteOptions;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("configuration {path} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<String>,
}

/// Where things live. Relative paths in a config file are relative to the working directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// The QC history: a SQLite file, or a `postgres://` URL for a database shared by sites.
    pub db: PathBuf,
    /// Root of overlay and montage images (dated sub-folders below it).
    pub out: PathBuf,
    /// The ONNX model following `models/README.md`.
    pub model: PathBuf,
    /// libonnxruntime.so; `ORT_DYLIB_PATH` overrides, the set-up's copy is the default.
    pub ort_library: Option<PathBuf>,
    /// Secret for hashing patient IDs; created on first use beside the database if unset.
    pub key_file: Option<PathBuf>,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            db: PathBuf::from("plateqc.sqlite"),
            out: PathBuf::from("plateqc-out"),
            model: default_model_path(),
            ort_library: None,
            key_file: None,
        }
    }
}

/// The bundled model, compiled in so that the binary works from any directory of a checkout.
pub fn default_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/plateqc.onnx")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanOptions {
    /// Plates decoded at once; each holds a decoded plate in memory.
    pub decode_workers: usize,
    /// Exit non-zero when any file failed, so scripts notice.
    pub fail_on_error: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            decode_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            fail_on_error: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    pub paths: Paths,
    pub record: RecordOptions,
    pub decode: DecodePolicy,
    pub infer: InferOptions,
    pub explain: ExplainOptions,
    pub scan: ScanOptions,
    pub watch: WatchOptions,
    pub route: RouteOptions,
    pub dicom: DicomOptions,
    pub forward: ForwardOptions,
    pub notes: NoteOptions,
    pub report: ReportOptions,
}

/// `[report]`: the reject-rate levels `plateqc report` holds every rate against (AAPM Report
/// 151: a target and investigation levels above and below it). The defaults are figures
/// quoted for general radiography; a dental site sets its own. Flags override them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportOptions {
    pub target_pct: f64,
    pub investigate_above_pct: f64,
    pub investigate_below_pct: f64,
    /// Rates over fewer images are shown, not judged.
    pub min_images: i64,
    /// The daemon's `/metrics` reject rate and level are over this many recent days.
    pub recent_days: u32,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            target_pct: 8.0,
            investigate_above_pct: 10.0,
            investigate_below_pct: 5.0,
            min_images: 30,
            recent_days: 28,
        }
    }
}

const SECTIONS: [&str; 12] = [
    "paths", "record", "decode", "infer", "explain", "scan", "watch", "route", "dicom", "forward",
    "notes", "report",
];

impl Config {
    /// Parses a TOML text, collecting every problem instead of stopping at the first.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: origin.to_string(),
            problems,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown section [{key}] (known: {})",
                    SECTIONS.join(", ")
                ));
            }
        }
        fn section<T: serde::de::DeserializeOwned + Default>(
            table: &toml::Table,
            name: &str,
            problems: &mut Vec<String>,
        ) -> T {
            match table.get(name) {
                None => T::default(),
                Some(v) => v.clone().try_into().unwrap_or_else(|e: toml::de::Error| {
                    problems.push(format!("[{name}]: {}", e.message()));
                    T::default()
                }),
            }
        }
        let config = Config {
            paths: section(&table, "paths", &mut problems),
            record: section(&table, "record", &mut problems),
            decode: section(&table, "decode", &mut problems),
            infer: section(&table, "infer", &mut problems),
            explain: section(&table, "explain", &mut problems),
            scan: section(&table, "scan", &mut problems),
            watch: section(&table, "watch", &mut problems),
            route: section(&table, "route", &mut problems),
            dicom: section(&table, "dicom", &mut problems),
            forward: section(&table, "forward", &mut problems),
            notes: section(&table, "notes", &mut problems),
            report: section(&table, "report", &mut problems),
        };
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            problems: vec![format!("cannot read: {e}")],
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Range checks that serde cannot express.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.infer.batch_size == 0 || self.infer.batch_size > 64 {
            p.push(format!(
                "[infer] batch_size {} must be 1..=64",
                self.infer.batch_size
            ));
        }
        let margin = self.infer.review_margin;
        if !(margin.is_finite() && (0.0..=10.0).contains(&margin)) {
            p.push(format!(
                "[infer] review_margin {margin} must be 0 (off) to 10 log-odds"
            ));
        }
        if self.infer.intra_threads == 0 {
            p.push("[infer] intra_threads must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.explain.alpha) {
            p.push(format!(
                "[explain] alpha {} must be within 0..1",
                self.explain.alpha
            ));
        }
        if !(32..=4096).contains(&self.explain.montage_height) {
            p.push(format!(
                "[explain] montage_height {} must be 32..=4096",
                self.explain.montage_height
            ));
        }
        if self
            .record
            .site
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            p.push("[record] site must not be empty".into());
        }
        let shared = matches!(DbLocation::parse(&self.paths.db), DbLocation::Postgres(_));
        if shared && self.paths.key_file.is_none() {
            p.push(
                "paths.key_file (or --key-file) must be set when paths.db is a PostgreSQL URL (the patient-ID key stays on this machine)"
                    .into(),
            );
        }
        if shared && self.record.site.is_none() {
            // The host name would merge two daemons of one host into one site, and a container
            // would become a new site each time it is re-created.
            p.push(
                "[record] site (or --site) must be set when paths.db is a PostgreSQL URL: a name for this site that stays the same across restarts, hosts and containers"
                    .into(),
            );
        }
        if !self.watch.metrics_listen.is_empty()
            && self
                .watch
                .metrics_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            p.push(format!(
                "[watch] metrics_listen {:?} is not host:port (e.g. 127.0.0.1:9898), nor \"\" to turn the endpoint off",
                self.watch.metrics_listen
            ));
        }
        if self.report.recent_days == 0 {
            p.push("[report] recent_days must be at least 1".into());
        }
        if self.scan.decode_workers == 0 {
            p.push("[scan] decode_workers must be at least 1".into());
        }
        if self.decode.max_dimension == 0 {
            p.push("[decode] max_dimension must be positive".into());
        }
        if self.decode.max_pixels == 0 {
            p.push("[decode] max_pixels must be positive".into());
        }
        if self.decode.max_sequence_depth == 0 || self.decode.max_sequence_depth > 64 {
            p.push("[decode] max_sequence_depth must be 1..=64".into());
        }
        if self.watch.max_attempts < 1 {
            p.push("[watch] max_attempts must be at least 1".into());
        }
        if self.watch.quiet_ms < 50 {
            p.push("[watch] quiet_ms below 50 would take files still being written".into());
        }
        p.extend(self.dicom.validate());
        p.extend(self.forward.validate());
        if !self.dicom.listen.is_empty() && self.watch.inboxes.is_empty() {
            p.push("[dicom] listen needs an inbox to receive into".into());
        }
        // Output inside an inbox would be taken again as input, forever.
        let route_root = self.route_root();
        for inbox in &self.watch.inboxes {
            let inbox_abs = absolute(inbox);
            for (what, out) in [
                ("paths.out", &self.paths.out),
                ("route.root", &route_root),
                ("notes.folder", &self.notes.folder),
            ] {
                if out.as_os_str().is_empty() {
                    continue;
                }
                if absolute(out).starts_with(&inbox_abs) {
                    p.push(format!(
                        "{what} {} is inside the inbox {}",
                        out.display(),
                        inbox.display()
                    ));
                }
            }
        }
        p
    }

    /// Where routed files go: `route.root`, or the output folder when unset.
    pub fn route_root(&self) -> PathBuf {
        if self.route.root.as_os_str().is_empty() {
            self.paths.out.clone()
        } else {
            self.route.root.clone()
        }
    }

    /// Where rejection notes go: `notes.folder`, or `<route root>/rejection-notes`.
    pub fn notes_root(&self) -> PathBuf {
        if self.notes.folder.as_os_str().is_empty() {
            self.route_root().join("rejection-notes")
        } else {
            self.notes.folder.clone()
        }
    }

    /// The site name recorded with every row.
    pub fn site(&self) -> String {
        self.record
            .site
            .clone()
            .unwrap_or_else(crate::record::default_site)
    }

    /// The calling AE title towards the destinations: `[forward] calling_ae_title`, or else
    /// this node's own `[dicom] ae_title`.
    pub fn calling_ae_title(&self) -> String {
        self.forward
            .calling_ae_title
            .clone()
            .unwrap_or_else(|| self.dicom.ae_title.clone())
    }

    /// The site key's location: configured, or beside the database.
    pub fn key_file(&self) -> PathBuf {
        self.paths.key_file.clone().unwrap_or_else(|| {
            let mut p = self.paths.db.clone().into_os_string();
            p.push(".key");
            PathBuf::from(p)
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::colormap::Colormap;
    use crate::explain::CamMethod;

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [paths]
            db = "x.sqlite"
            colour = "red"
            [explain]
            alpha = 3.0
            [infer]
            batch_size = 0
            [extra]
            a = 1
        "#;
        let err = Config::from_toml(text, "t.toml").unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("unknown section [extra]"), "{all}");
        assert!(all.contains("colour"), "{all}");
        assert!(all.contains("alpha"), "{all}");
        assert!(all.contains("batch_size"), "{all}");
        assert_eq!(err.problems.len(), 4, "{all}");
    }

    #[test]
    fn a_review_margin_must_be_a_sane_number_of_log_odds() {
        for bad in ["-0.5", "11", "nan", "inf"] {
            let text = format!("[infer]\nreview_margin = {bad}\n");
            let err = Config::from_toml(&text, "t").unwrap_err();
            assert!(
                err.problems.iter().any(|p| p.contains("review_margin")),
                "{bad}: {:?}",
                err.problems
            );
        }
        for good in ["0.0", "0.5", "2"] {
            let text = format!("[infer]\nreview_margin = {good}\n");
            assert!(Config::from_toml(&text, "t").is_ok(), "{good}");
        }
    }

    #[test]
    fn output_inside_an_inbox_is_refused() {
        let text = "[paths]\nout = \"/srv/inbox/out\"\n[watch]\ninboxes = [\"/srv/inbox\"]\n";
        let err = Config::from_toml(text, "t").unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.contains("inside the inbox")),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", "t").unwrap();
        assert_eq!(c.decode.modalities, vec!["IO".to_string()]);
        assert_eq!(c.explain.colormap, Colormap::Turbo);
    }

    #[test]
    fn enums_parse_from_text() {
        let c = Config::from_toml(
            "[explain]\nmethod = \"layercam\"\ncolormap = \"inferno\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.explain.method, CamMethod::LayerCam);
        assert_eq!(c.explain.colormap, Colormap::Inferno);
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The shipped example must stay loadable and equal to the defaults it documents.
    #[test]
    fn example_config_parses_to_the_defaults() {
        let text = include_str!("../plateqc.example.toml");
        let c = Config::from_toml(text, "plateqc.example.toml").unwrap();
        let d = Config::default();
        assert_eq!(c.paths.db, d.paths.db);
        assert_eq!(c.decode.max_file_bytes, d.decode.max_file_bytes);
        assert_eq!(c.infer.batch_size, d.infer.batch_size);
        assert_eq!(c.explain.alpha, d.explain.alpha);
        assert_eq!(c.report, d.report);
    }

    #[test]
    fn a_shared_database_needs_a_local_key_file_and_a_named_site() {
        let mut c = Config::default();
        c.paths.db = PathBuf::from("postgres://qc@db.example/qc");
        let problems = c.validate();
        assert!(
            problems.iter().any(|p| p.contains("key_file")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("[record] site")),
            "{problems:?}"
        );
        c.paths.key_file = Some(PathBuf::from("/etc/plateqc/site.key"));
        c.record.site = Some("clinic-north".into());
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        c.record.site = Some(" ".into());
        assert_eq!(c.validate().len(), 1);
        // A local SQLite file may go on using the host name.
        let local = Config::default();
        assert!(local.validate().is_empty(), "{:?}", local.validate());
    }

    #[test]
    fn the_calling_ae_title_is_the_nodes_own_unless_set() {
        let mut c = Config::default();
        c.dicom.ae_title = "CLINIC_QC".into();
        assert_eq!(c.calling_ae_title(), "CLINIC_QC");
        c.forward.calling_ae_title = Some("TO_PACS".into());
        assert_eq!(c.calling_ae_title(), "TO_PACS");
        c.forward.calling_ae_title = Some("A_NAME_LONGER_THAN_16".into());
        assert_eq!(c.validate().len(), 1, "{:?}", c.validate());
    }

    #[test]
    fn a_metrics_address_must_be_host_and_port() {
        let mut c = Config::default();
        for bad in ["9898", "127.0.0.1:abc", "localhost"] {
            c.watch.metrics_listen = bad.into();
            assert_eq!(c.validate().len(), 1, "{bad}: {:?}", c.validate());
        }
        for good in ["", "127.0.0.1:9898", "[::1]:0"] {
            c.watch.metrics_listen = good.into();
            assert!(c.validate().is_empty(), "{good}: {:?}", c.validate());
        }
    }
}
