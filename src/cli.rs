//! Command line: `scan`, `inspect`, `watch`, `check-config`, and the QC history's readers
//! `report`, `history`, `override`, `export-labels`. Errors become one clear line and an exit
//! code; no backtraces for operators.

use crate::config::Config;
use crate::outcome::{FailureKind, Stage, Verdict};
use crate::pipeline::{self, Engine, Outcome, Progress};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    /// SQLite QC history database.
    #[arg(long)]
    pub db: Option<PathBuf>,
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
    /// Show one file's header, verdict, reasons and where its overlays went.
    Inspect {
        file: PathBuf,
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
        /// Most recent images listed on the review page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// A plate is worn when a wear artifact is on at least this many ...
        #[arg(long, default_value_t = 9)]
        wear_hits: i64,
        /// ... of its last this many scans.
        #[arg(long, default_value_t = 20)]
        wear_window: i64,
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
    /// Write the overridden plates as a labelled set for retraining: OUT/images/*.dcm and
    /// OUT/labels.csv (see docs/reports.md).
    ExportLabels {
        out: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Large stacks for blocking workers: a parser is the last line of defence against
        // a file built to recurse deeply.
        .thread_stack_size(16 * 1024 * 1024)
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("plateqc: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plateqc: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLATEQC_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,ort=warn,sqlx=warn,jpeg2k=warn,openjp2=warn,dicom_transfer_syntax_registry=warn",
        )
    });
    // Colour codes only for a person at a terminal, never into log files or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

/// Loads the config file (if any) and applies flags on top.
pub fn resolve_config(path: Option<&PathBuf>, common: &Common) -> Result<Config> {
    let mut config = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(db) = &common.db {
        config.paths.db = db.clone();
    }
    if let Some(out) = &common.out {
        config.paths.out = out.clone();
    }
    if let Some(model) = &common.model {
        config.paths.model = model.clone();
    }
    if let Some(m) = &common.modalities {
        config.decode.modalities = if m.trim().eq_ignore_ascii_case("any") {
            Vec::new()
        } else {
            m.split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
    }
    if let Some(m) = &common.cam_method {
        config.explain.method = crate::explain::CamMethod::parse(m).ok_or_else(|| {
            anyhow::anyhow!("--cam-method {m}: expected gradcam, gradcampp or layercam")
        })?;
    }
    if let Some(c) = &common.colormap {
        config.explain.colormap =
            crate::explain::colormap::Colormap::parse(c).ok_or_else(|| {
                anyhow::anyhow!("--colormap {c}: expected turbo, inferno, viridis or jet")
            })?;
    }
    let problems = config.validate();
    if !problems.is_empty() {
        anyhow::bail!("invalid settings:\n  - {}", problems.join("\n  - "));
    }
    Ok(config)
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Scan {
            paths,
            common,
            no_fail_on_error,
        } => {
            let mut config = resolve_config(cli.config.as_ref(), common)?;
            if *no_fail_on_error {
                config.scan.fail_on_error = false;
            }
            scan(config, paths.clone()).await
        }
        Command::Inspect { file, common } => {
            let config = resolve_config(cli.config.as_ref(), common)?;
            inspect(config, file.clone()).await
        }
        Command::Watch {
            inboxes,
            dicom_listen,
            ae_title,
            common,
        } => {
            let mut config = resolve_config(cli.config.as_ref(), common)?;
            if let Some(l) = dicom_listen {
                config.dicom.listen = l.clone();
            }
            if let Some(t) = ae_title {
                config.dicom.ae_title = t.clone();
            }
            if !inboxes.is_empty() || dicom_listen.is_some() || ae_title.is_some() {
                if !inboxes.is_empty() {
                    config.watch.inboxes = inboxes.clone();
                }
                let problems = config.validate();
                if !problems.is_empty() {
                    anyhow::bail!("invalid settings:\n  - {}", problems.join("\n  - "));
                }
            }
            watch(config).await
        }
        Command::Report {
            db,
            filter,
            format,
            html,
            limit,
            wear_hits,
            wear_window,
        } => {
            let rec = open_history(cli.config.as_ref(), db).await?;
            let filter = crate::report::Filter {
                since: filter.since.clone(),
                until: filter.until.clone(),
                site: filter.site.clone(),
                station: filter.station.clone(),
                operator: filter.operator.clone(),
                device: filter.device.clone(),
                plate: filter.plate.clone(),
            };
            let wear = crate::report::WearRule {
                hits: *wear_hits,
                window: *wear_window,
            };
            let report = crate::report::build(rec.pool(), &filter, wear).await?;
            match format {
                Format::Table => print!("{}", crate::report::to_table(&report)),
                Format::Csv => print!("{}", crate::report::to_csv(&report)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            if let Some(out) = html {
                let n = crate::report::html::write_page(rec.pool(), &report, *limit, out).await?;
                eprintln!("review page ({n} recent images): {}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { target, db, format } => {
            let config = base_config(cli.config.as_ref())?;
            let key = crate::report::review::HistoryKey::from_arg(target, &config.decode)?;
            let rec = open_history(cli.config.as_ref(), db).await?;
            let h = crate::report::review::history(rec.pool(), &key).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&h)?),
                _ => print!("{}", crate::report::review::history_table(&h)),
            }
            Ok(if h.judgements.is_empty() && h.overrides.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Override {
            sop_instance_uid,
            verdict,
            by,
            reason,
            db,
        } => {
            let rec = open_history(cli.config.as_ref(), db).await?;
            let req = crate::report::review::OverrideRequest {
                sop_instance_uid: sop_instance_uid.clone(),
                verdict: verdict.clone(),
                reviewer: by.clone(),
                reason: reason.clone(),
                site: rec.site.clone(),
            };
            let r = crate::report::review::add_override(rec.pool(), &req).await?;
            println!(
                "override {} recorded: {} is now {} (was {}, model said {}; plate row {})",
                r.id, sop_instance_uid, r.verdict, r.previous_verdict, r.model_verdict, r.plate_row
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportLabels { out, db } => {
            let rec = open_history(cli.config.as_ref(), db).await?;
            let s = crate::report::review::export_labels(rec.pool(), out).await?;
            println!(
                "{} labelled plates written; labels in {}",
                s.written,
                s.labels.display()
            );
            if !s.missing.is_empty() {
                eprintln!(
                    "{} overridden plates were not found with their judged content: {}",
                    s.missing.len(),
                    s.missing.join(", ")
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { common } => {
            let config = resolve_config(cli.config.as_ref(), common)?;
            let opts = config.infer.clone();
            let model = crate::infer::Model::load(
                &config.paths.model,
                config.paths.ort_library.as_deref(),
                &opts,
            )?;
            // The effective settings get pasted into tickets: never print a database password.
            let mut shown = config.clone();
            shown.paths.db =
                crate::record::redact_password(&config.paths.db.to_string_lossy()).into();
            println!(
                "{}",
                toml::to_string_pretty(&shown).context("printing the configuration")?
            );
            println!("# model contract read from {}", model.path.display());
            println!("{}", serde_json::to_string_pretty(&model.contract)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The config file alone (no flags), for the history readers.
fn base_config(path: Option<&PathBuf>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// Opens an existing QC history for reading and reviewing; a missing SQLite file is an error
/// here, not a new empty database.
async fn open_history(config: Option<&PathBuf>, db: &DbArg) -> Result<crate::record::Recorder> {
    let config = base_config(config)?;
    let path = db.db.clone().unwrap_or_else(|| config.paths.db.clone());
    let location = crate::record::DbLocation::parse(&path);
    if let crate::record::DbLocation::Sqlite(file) = &location {
        if !file.is_file() {
            anyhow::bail!(
                "no QC history at {} (give --db FILE or a postgres:// URL)",
                file.display()
            );
        }
    }
    crate::record::Recorder::open_as(&path, &config.site())
        .await
        .with_context(|| format!("opening {}", location.display()))
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn done(&self, o: &Outcome) {
        self.0.inc(1);
        if o.record.verdict == Verdict::Error {
            self.0.println(format!(
                "error: {}: {}",
                o.record.source_path,
                o.record.error.as_deref().unwrap_or("")
            ));
        }
    }
}

/// Without a terminal: a log line every 5% so a service log shows the run moving.
struct Lines {
    total: usize,
    seen: std::sync::atomic::AtomicUsize,
    started: std::time::Instant,
}

impl Progress for Lines {
    fn done(&self, _: &Outcome) {
        let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let step = (self.total / 20).max(1);
        if n % step == 0 || n == self.total {
            let rate = n as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(
                done = n,
                total = self.total,
                rate = format!("{rate:.1}/s"),
                "scan progress"
            );
        }
    }
}

async fn scan(config: Config, paths: Vec<PathBuf>) -> Result<ExitCode> {
    for p in &paths {
        if !p.exists() {
            anyhow::bail!("{} does not exist", p.display());
        }
    }
    let files = crate::ingest::collect_files(&paths);
    let fail_on_error = config.scan.fail_on_error;
    let db = config.paths.db.clone();
    let out = config.paths.out.clone();
    let engine = Arc::new(Engine::start(config).await?);
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} plates  {per_sec}  ETA {eta}",
            )
            .expect("static template"),
        );
        Arc::new(Bar(bar))
    } else {
        Arc::new(Lines {
            total: files.len(),
            seen: 0.into(),
            started: std::time::Instant::now(),
        })
    };
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: finishing the plates in flight, taking no new ones");
            c2.cancel();
        }
    });
    let started = std::time::Instant::now();
    let outcomes = pipeline::run(engine.clone(), files.clone(), progress, cancel).await?;
    let elapsed = started.elapsed();
    print_summary(&outcomes, files.len(), elapsed, &db, &out);
    let failed = outcomes
        .iter()
        .filter(|o| o.record.verdict == Verdict::Error)
        .count();
    Ok(if failed > 0 && fail_on_error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(
    outcomes: &[Outcome],
    total: usize,
    elapsed: std::time::Duration,
    db: &std::path::Path,
    out: &std::path::Path,
) {
    let count = |v: Verdict| outcomes.iter().filter(|o| o.record.verdict == v).count();
    let (usable, unusable, errors) = (
        count(Verdict::Usable),
        count(Verdict::Unusable),
        count(Verdict::Error),
    );
    let secs = elapsed.as_secs_f64();
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for o in outcomes
        .iter()
        .filter(|o| o.record.verdict == Verdict::Unusable)
    {
        for f in &o.record.findings {
            *reasons.entry(f.artifact_type.clone()).or_default() += 1;
        }
    }
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for o in outcomes
        .iter()
        .filter(|o| o.record.verdict == Verdict::Error)
    {
        *kinds
            .entry(o.record.error_kind.map_or("", FailureKind::as_str))
            .or_default() += 1;
    }
    println!();
    println!(
        "  plates      {:>6}   ({:.1} s, {:.1} plates/s)",
        outcomes.len(),
        secs,
        outcomes.len() as f64 / secs.max(1e-9)
    );
    println!("  usable      {usable:>6}");
    println!("  unusable    {unusable:>6}");
    for (name, n) in &reasons {
        println!("    {name:<18}{n:>4}");
    }
    println!("  error       {errors:>6}");
    for (kind, n) in &kinds {
        println!("    {kind:<18}{n:>4}");
    }
    if outcomes.len() < total {
        println!(
            "  not reached {:>6}   (interrupted)",
            total - outcomes.len()
        );
    }
    println!();
    let location = crate::record::DbLocation::parse(db);
    println!("  database    {}", location.display());
    println!("  overlays    {}", out.join("overlays").display());
    let query = "\"SELECT verdict, count(*) FROM plate_verdicts GROUP BY verdict\"";
    match &location {
        crate::record::DbLocation::Sqlite(_) => {
            println!("  query       sqlite3 {} {query}", location.display())
        }
        crate::record::DbLocation::Postgres(_) => {
            println!("  query       psql '{}' -c {query}", location.display())
        }
    }
    println!(
        "  report      plateqc report --db {}",
        crate::record::DbLocation::parse(db).display()
    );
}

async fn watch(config: Config) -> Result<ExitCode> {
    let mut route = config.route.clone();
    route.root = config.route_root();
    let watch_opts = config.watch.clone();
    let engine = Arc::new(Engine::start(config).await?);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    // Handlers are installed before "watching" is logged, so a signal sent as soon as the
    // daemon says it is up is never met by the default action (which would kill it).
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: no new plates; finishing the ones in flight");
        c2.cancel();
    });
    // SIGHUP: load the model file again; a broken file keeps the running model.
    let (e2, c3) = (engine.clone(), cancel.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = c3.cancelled() => break,
                got = hup.recv() => if got.is_none() { break },
            }
            match e2.reload_model().await {
                Ok(m) => {
                    tracing::info!(model = %m.contract.model_version, sha256 = %m.contract.sha256, "model reloaded")
                }
                Err(err) => {
                    tracing::error!(error = %err, "model reload failed; keeping the running model")
                }
            }
        }
    });
    tracing::info!(
        inboxes = ?watch_opts.inboxes,
        routed = %route.root.display(),
        model = %engine.model().contract.model_version,
        "watching"
    );
    let grace = Duration::from_secs(watch_opts.shutdown_grace_secs);
    let deadline = {
        let c = cancel.clone();
        async move {
            c.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    let stats = tokio::select! {
        r = crate::watch::run(engine, watch_opts, route, cancel) => r?,
        _ = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "plates still in flight at the shutdown deadline; they will be taken up again at the next start");
            return Ok(ExitCode::SUCCESS);
        }
    };
    tracing::info!(
        judged = stats.judged,
        resumed = stats.resumed,
        duplicates = stats.duplicates,
        quarantined_crashers = stats.poisoned,
        peak_plates_in_memory = stats.peak_plates_in_memory,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

async fn inspect(config: Config, file: PathBuf) -> Result<ExitCode> {
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    match crate::decode::decode_header(&bytes, &config.decode) {
        Ok(h) => {
            println!("file              {}", file.display());
            println!("SOP instance      {}", h.sop_instance_uid);
            println!("SOP class         {}", h.sop_class_uid);
            println!("modality          {}", h.modality);
            println!("transfer syntax   {}", h.transfer_syntax);
            println!(
                "image             {} x {}, {} of {} bits{}, {}",
                h.columns,
                h.rows,
                h.bits_stored,
                h.bits_allocated,
                if h.pixel_signed { " signed" } else { "" },
                h.photometric
            );
            println!(
                "rescale           slope {} intercept {}",
                h.rescale_slope, h.rescale_intercept
            );
            if let Some((c, w)) = h.window {
                println!("window            centre {c} width {w}");
            }
            println!(
                "acquired          {}",
                h.acquisition_datetime.as_deref().unwrap_or("-")
            );
            println!(
                "station           {}",
                h.station_name.as_deref().unwrap_or("-")
            );
            println!(
                "device / plate    {} / {}",
                h.device_serial.as_deref().unwrap_or("-"),
                h.plate_id.as_deref().unwrap_or("-")
            );
        }
        Err(e) => println!("header            unreadable: {e}"),
    }
    let engine = Arc::new(Engine::start(config).await?);
    let outcomes =
        pipeline::run(engine, vec![file], Arc::new(()), CancellationToken::new()).await?;
    let Some(o) = outcomes.first() else {
        anyhow::bail!("no result");
    };
    let r = &o.record;
    println!("verdict           {}", r.verdict);
    if let Some(s) = r.unusable_score {
        println!(
            "unusable score    {:.4} (threshold {:.4})",
            s,
            r.threshold.unwrap_or(f64::NAN)
        );
    }
    if let Some(code) = &r.reason_code {
        println!("reason code       {code} (CID 7011)");
    }
    for f in &r.findings {
        println!(
            "  finding         {:<16} {:.3}  code {}",
            f.artifact_type, f.score, f.reason_code
        );
    }
    for (layer, path) in &r.overlays {
        println!("overlay {layer:<9} {path}");
    }
    if let Some(m) = &r.montage_path {
        println!("montage           {m}");
    }
    if let Some(e) = &r.error {
        println!(
            "error             [{}] {e}",
            r.error_stage.map_or("", Stage::as_str)
        );
    }
    println!("recorded as row   {}", o.row_id);
    Ok(if r.verdict == Verdict::Error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
