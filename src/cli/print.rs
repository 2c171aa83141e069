//! What the command line prints: progress while scanning, the scan summary, and `inspect`'s
//! description of one file.

use crate::decode::{DecodeError, PlateHeader};
use crate::outcome::{FailureKind, Stage, Verdict};
use crate::pipeline::{Outcome, Progress};
use crate::record::DbLocation;
use crate::report::printable;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

/// A bar with rate and ETA on a terminal, log lines otherwise.
pub(super) fn progress(total: usize) -> Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} plates  {per_sec}  ETA {eta}",
            )
            .expect("static template"),
        );
        Arc::new(Bar(bar))
    } else {
        Arc::new(Lines {
            total,
            seen: 0.into(),
            started: std::time::Instant::now(),
        })
    }
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn done(&self, o: &Outcome) {
        self.0.inc(1);
        if o.record.verdict == Verdict::Error {
            self.0.println(format!(
                "error: {}: {}",
                printable(&o.record.source_path),
                printable(o.record.error.as_deref().unwrap_or(""))
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

pub(super) fn summary(
    outcomes: &[Outcome],
    total: usize,
    elapsed: std::time::Duration,
    db: &Path,
    out: &Path,
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
    let mut review: std::collections::BTreeMap<&str, usize> = Default::default();
    for o in outcomes {
        if let Some(why) = o.record.review {
            *review.entry(why.as_str()).or_default() += 1;
        }
    }
    if !review.is_empty() {
        // Counted within usable / unusable above: the verdict is recorded either way.
        println!(
            "  needs review{:>6}   (of the above; a person decides)",
            review.values().sum::<usize>()
        );
        for (why, n) in &review {
            println!("    {why:<18}{n:>4}");
        }
    }
    if outcomes.len() < total {
        println!(
            "  not reached {:>6}   (interrupted)",
            total - outcomes.len()
        );
    }
    println!();
    let location = DbLocation::parse(db);
    println!("  database    {}", location.display());
    println!("  overlays    {}", out.join("overlays").display());
    let query = "\"SELECT verdict, count(*) FROM plate_verdicts GROUP BY verdict\"";
    match &location {
        DbLocation::Sqlite(_) => {
            println!("  query       sqlite3 {} {query}", location.display())
        }
        DbLocation::Postgres(_) => {
            println!("  query       psql '{}' -c {query}", location.display())
        }
    }
    println!(
        "  report      plateqc report --db {}",
        DbLocation::parse(db).display()
    );
}

/// `inspect`: the header of the file, or why it cannot be read.
pub(super) fn header(file: &Path, h: Result<PlateHeader, DecodeError>) {
    match h {
        Ok(h) => {
            println!("file              {}", file.display());
            println!("SOP instance      {}", printable(&h.sop_instance_uid));
            println!("SOP class         {}", printable(&h.sop_class_uid));
            println!("modality          {}", printable(&h.modality));
            println!("transfer syntax   {}", printable(&h.transfer_syntax));
            println!(
                "image             {} x {}, {} of {} bits{}, {}",
                h.columns,
                h.rows,
                h.bits_stored,
                h.bits_allocated,
                if h.pixel_signed { " signed" } else { "" },
                printable(&h.photometric)
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
                printable(h.acquisition_datetime.as_deref().unwrap_or("-"))
            );
            println!(
                "station           {}",
                printable(h.station_name.as_deref().unwrap_or("-"))
            );
            println!(
                "device / plate    {} / {}",
                printable(h.device_serial.as_deref().unwrap_or("-")),
                printable(h.plate_id.as_deref().unwrap_or("-"))
            );
        }
        Err(e) => println!("header            unreadable: {e}"),
    }
}

/// `inspect`: the verdict, its reasons and the overlays; `recorded_in` names the history
/// it went into (`inspect --record`), else nothing was recorded.
pub(super) fn outcome(o: &Outcome, recorded_in: Option<&str>) {
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
    if let Some(why) = r.review {
        println!("needs review      {why} (nothing is sent for it until a person decides)");
    }
    if let Some(d) = r.feature_distance {
        println!("feature distance  {d:.3}");
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
            "error             [{}] {}",
            r.error_stage.map_or("", Stage::as_str),
            printable(e)
        );
    }
    match recorded_in {
        Some(db) => println!("recorded          yes, in {db}"),
        None => println!(
            "recorded          no (inspect leaves the QC history alone; --record or scan records)"
        ),
    }
}

/// `calibrate`: the chosen threshold, what it rests on, and the model's own for comparison.
pub(super) fn calibration(site: &str, r: &crate::report::calibrate::CalibrationReport) {
    let op = |name: &str, o: &crate::report::calibrate::Operating| {
        println!(
            "{name:<18} threshold {:.6}  false rejects {:.1}%  recall {:.1}% (95% CI {:.1}-{:.1}%)",
            o.threshold,
            100.0 * o.false_reject,
            100.0 * o.recall,
            100.0 * o.recall_ci_low,
            100.0 * o.recall_ci_high
        );
    };
    println!(
        "site {site}, model {}: {} reviewed usable and {} reviewed unusable plates",
        r.model_version, r.reviewed_usable, r.reviewed_unusable
    );
    op("site threshold", &r.chosen);
    if let Some(m) = &r.model {
        op("model's own", m);
    }
    match &r.recorded {
        Some(c) => println!(
            "recorded as calibration {} by {} at {}; watch and scan use it from their next start (SIGHUP for a running watch)",
            c.id, c.calibrated_by, c.created_at
        ),
        None => println!("dry run: nothing recorded"),
    }
}

/// `calibrate --list`.
pub(super) fn calibrations(site: &str, all: &[crate::record::calibrations::Calibration]) {
    if all.is_empty() {
        println!("site {site} has no calibration; models use their own thresholds");
    }
    for c in all {
        println!(
            "{:>4}  {}  model {:<10} threshold {:.6} (model's {})  target false rejects {:.1}%  on {} usable / {} unusable  recall {:.1}% ({:.1}-{:.1}%)  by {}",
            c.id,
            c.created_at,
            c.model_version,
            c.threshold,
            c.model_threshold.map_or("-".into(), |t| format!("{t:.6}")),
            100.0 * c.target_false_reject,
            c.reviewed_usable,
            c.reviewed_unusable,
            100.0 * c.recall,
            100.0 * c.recall_ci_low,
            100.0 * c.recall_ci_high,
            c.calibrated_by
        );
    }
}
