//! Command line: `scan`, `inspect`, `watch`, `check-config`, and the QC history's readers
//! `report`, `history`, `override`, `export-labels`. Errors become one clear line and an exit
//! code; no backtraces for operators.

mod args;
mod outbox;
mod print;

pub use args::{Cli, Command, Common, DbArg, FilterArgs, Format};

use crate::config::Config;
use crate::outcome::Verdict;
use crate::pipeline::{self, Engine};
use anyhow::{Context, Result};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub fn main() -> ExitCode {
    prepare_process();
    let cli = Cli::parse();
    if let Command::DecodeWorker {
        memory_bytes,
        cpu_secs,
    } = cli.command
    {
        // A decode worker: no runtime, no logging set-up, only its loop (see decode::worker).
        let limits = crate::decode::worker::WorkerLimits {
            memory_bytes,
            cpu_secs,
            timeout: std::time::Duration::MAX,
        };
        return match crate::decode::worker::serve(limits) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("plateqc decode worker: {e}");
                ExitCode::from(2)
            }
        };
    }
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
    if let Some(key) = &common.key_file {
        config.paths.key_file = Some(key.clone());
    }
    if let Some(site) = &common.site {
        config.record.site = Some(site.clone());
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
        Command::Inspect {
            file,
            record,
            common,
        } => {
            let config = resolve_config(cli.config.as_ref(), common)?;
            inspect(config, file.clone(), *record).await
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
            images,
            limit,
            wear_hits,
            wear_window,
            target_pct,
            investigate_above_pct,
            investigate_below_pct,
            min_images,
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
            let mut report = crate::report::build(rec.pool(), &filter, wear).await?;
            let site = base_config(cli.config.as_ref())?.report;
            report.apply_levels(crate::report::Levels {
                target_pct: target_pct.unwrap_or(site.target_pct),
                investigate_above_pct: investigate_above_pct.unwrap_or(site.investigate_above_pct),
                investigate_below_pct: investigate_below_pct.unwrap_or(site.investigate_below_pct),
                min_images: min_images.unwrap_or(site.min_images),
            })?;
            match format {
                Format::Table => print!("{}", crate::report::to_table(&report)),
                Format::Csv => print!("{}", crate::report::to_csv(&report)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            if let Some(out) = html {
                let n = crate::report::html::write_page(rec.pool(), &report, *limit, out).await?;
                eprintln!("review page ({n} recent images): {}", out.display());
            }
            if let Some(out) = images {
                let rows = crate::report::images::image_rows(rec.pool(), &filter).await?;
                crate::fsutil::write_private(
                    out,
                    crate::report::images::to_images_csv(&rows).as_bytes(),
                )
                .with_context(|| format!("writing {}", out.display()))?;
                eprintln!(
                    "per-image export ({} images): {}",
                    rows.len(),
                    out.display()
                );
            }
            rec.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::History { target, db, format } => {
            let config = base_config(cli.config.as_ref())?;
            let key = crate::report::review::HistoryKey::from_arg(target, &config.decode)?;
            let rec = open_history(cli.config.as_ref(), db).await?;
            let h = crate::report::review::history(rec.pool(), &key).await?;
            rec.close().await;
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
            rec.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::ReviewImport { file, db } => {
            let rec = open_history(cli.config.as_ref(), db).await?;
            let r = crate::report::review::import_reviews(rec.pool(), file, &rec.site).await;
            rec.close().await;
            let r = r?;
            println!(
                "{} reviews recorded ({} confirm the model, {} overturn it); {} already recorded",
                r.recorded,
                r.confirmed,
                r.recorded - r.confirmed,
                r.already
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate {
            target_false_reject,
            model_version,
            by,
            min_usable,
            min_unusable,
            dry_run,
            list,
            format,
            db,
        } => {
            let rec = open_history(cli.config.as_ref(), db).await?;
            let site = rec.site.clone();
            if *list {
                let all = crate::record::calibrations::all(rec.pool(), &site).await;
                rec.close().await;
                let all = all?;
                match format {
                    Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                    _ => print::calibrations(&site, &all),
                }
                return Ok(ExitCode::SUCCESS);
            }
            // The configured model's own threshold, to compare with, when it is that version.
            let config = base_config(cli.config.as_ref())?;
            let own = crate::infer::Model::load(
                &config.paths.model,
                config.paths.ort_library.as_deref(),
                &config.infer,
            )
            .ok()
            .map(|m| m.contract);
            let version = model_version
                .clone()
                .or(crate::record::calibrations::latest_model_version(rec.pool(), &site).await?);
            let req = crate::report::calibrate::CalibrateRequest {
                target_false_reject: *target_false_reject,
                model_threshold: own
                    .filter(|c| Some(&c.model_version) == version.as_ref())
                    .map(|c| f64::from(c.threshold)),
                model_version: version,
                by: by.clone(),
                min_usable: *min_usable,
                min_unusable: *min_unusable,
                dry_run: *dry_run,
            };
            let r = crate::report::calibrate::calibrate(rec.pool(), &site, &req).await;
            rec.close().await;
            let r = r?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                _ => print::calibration(&site, &r),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportLabels { out, db } => {
            let rec = open_history(cli.config.as_ref(), db).await?;
            let s = crate::report::review::export_labels(rec.pool(), out).await?;
            rec.close().await;
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
        Command::DecodeWorker { .. } => anyhow::bail!("the decode worker runs without a runtime"),
        Command::Outbox { action } => {
            let db = match action {
                args::OutboxAction::List { db, .. }
                | args::OutboxAction::Retry { db, .. }
                | args::OutboxAction::Drop { db, .. } => db,
            };
            let rec = open_history(cli.config.as_ref(), db).await?;
            let code = outbox::run(&rec, action).await;
            rec.close().await;
            code
        }
        Command::CheckConfig { common, probe } => {
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
            if *probe && !outbox::probe(&config).await {
                return Ok(ExitCode::from(1));
            }
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
    let progress = print::progress(files.len());
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
    // Closed, not dropped: a PostgreSQL server logs no lost client.
    engine.recorder.clone().close().await;
    let elapsed = started.elapsed();
    print::summary(&outcomes, files.len(), elapsed, &db, &out);
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

/// The daemon: `watch::serve` owns its life; it ends on SIGINT or SIGTERM.
async fn watch(config: Config) -> Result<ExitCode> {
    let r = config.report;
    let levels = crate::report::Levels {
        target_pct: r.target_pct,
        investigate_above_pct: r.investigate_above_pct,
        investigate_below_pct: r.investigate_below_pct,
        min_images: r.min_images,
    };
    let with_gauges = |engine: &Arc<Engine>, cancel: CancellationToken| {
        crate::report::gauges::spawn(
            engine.recorder.pool().clone(),
            engine.metrics.clone(),
            engine.recorder.site.clone(),
            r.recent_days,
            levels,
            cancel,
        );
    };
    crate::watch::serve(config, CancellationToken::new(), with_gauges).await?;
    Ok(ExitCode::SUCCESS)
}

/// `inspect`: judges one file as `scan` would, against a scratch QC history removed
/// afterwards, so looking at a file never changes the reject statistics (issue 16); with
/// `record`, against the configured history, where it is then recorded.
async fn inspect(mut config: Config, file: PathBuf, record: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    print::header(&file, crate::decode::decode_header(&bytes, &config.decode));
    let scratch = tempfile::Builder::new()
        .prefix("plateqc-inspect-")
        .tempdir()
        .context("creating a scratch history for inspect")?;
    let shown_db = crate::record::DbLocation::parse(&config.paths.db).display();
    if !record {
        config.paths.db = scratch.path().join("inspect.sqlite");
        config.paths.key_file = Some(scratch.path().join("inspect.key"));
    }
    let engine = Arc::new(Engine::start(config).await?);
    let recorder = engine.recorder.clone();
    let outcomes =
        pipeline::run(engine, vec![file], Arc::new(()), CancellationToken::new()).await?;
    recorder.close().await;
    let Some(o) = outcomes.first() else {
        anyhow::bail!("no result");
    };
    print::outcome(o, record.then_some(shown_db.as_str()));
    let r = &o.record;

    Ok(if r.verdict == Verdict::Error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Process-wide settings made at the very start of `main`, while the process has one thread
/// (the environment must not change once others may read it).
///
/// * Transparent huge pages off for this process and the decode workers it starts (the flag
///   is inherited). With huge pages every fresh allocator page costs a 2 MiB zeroing fault and
///   counts 2 MiB towards the resident set: with mimalloc (which asked for them) on 120 plates
///   that was about a third of plateqc's system time and 80-120 MB of its peak RSS (issue 15).
///   The system allocator does not ask for them, but a host with THP `always` gives them anyway.
/// * One glibc malloc arena instead of up to eight per core (unless `MALLOC_ARENA_MAX` is set):
///   every tokio, blocking and ONNX Runtime thread otherwise gets its own arena, each keeping
///   freed plate buffers. On 120 plates, 2 cores: parent peak RSS 165-185 MB -> 120 MB, same
///   time (2.05-2.25 s either way); plateqc allocates few, large buffers, so one lock is cheap.
/// * ONNX Runtime's telemetry off (`ORT_DISABLE_TELEMETRY`, unless the operator set it): the
///   Microsoft build otherwise writes a device id under `~/.cache/Microsoft` and tries to send
///   usage events over HTTPS from a clinic's server. `with_telemetry(false)` on the environment
///   comes too late for the device id.
pub fn prepare_process() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    // It fails only on kernels older than 3.15, where there is nothing to turn off.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
}
