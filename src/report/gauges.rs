//! The daemon's reject analysis in `/metrics`: every few minutes the report of this site's
//! recent window (the same query and levels as `plateqc report --site S --since D`), so an
//! alert rule can watch the reject rate against the site's AAPM Report 151 levels and the
//! plates due for replacement (deploy/plateqc-alerts.yml).

use super::{build, Filter, Levels, WearRule};
use crate::metrics::{Metrics, RejectGauges};
use crate::record::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the gauges are brought up to date: reject rates move over days, and the report
/// reads the history, so there is no point doing it per plate.
pub const EVERY: Duration = Duration::from_secs(300);

/// The site's recent reject analysis, as the gauges carry it.
pub async fn recent(
    pool: &Pool,
    site: &str,
    days: u32,
    levels: Levels,
) -> Result<RejectGauges, super::ReportError> {
    let since = (chrono::Utc::now() - chrono::Duration::days(i64::from(days)))
        .format("%Y-%m-%d")
        .to_string();
    let filter = Filter {
        site: Some(site.to_string()),
        since: Some(since),
        ..Filter::default()
    };
    let mut report = build(pool, &filter, WearRule::default()).await?;
    report.apply_levels(levels)?;
    Ok(RejectGauges {
        rate_pct: report.totals.reject_pct,
        images: report.totals.images,
        level: report.totals.level.as_str(),
        target_pct: levels.target_pct,
        investigate_above_pct: levels.investigate_above_pct,
        investigate_below_pct: levels.investigate_below_pct,
        plates_due: report.plates_to_replace.len() as i64,
    })
}

/// Keeps the gauges current until `cancel`: at once, then every [`EVERY`].
pub fn spawn(
    pool: Pool,
    metrics: Arc<Metrics>,
    site: String,
    days: u32,
    levels: Levels,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match recent(&pool, &site, days, levels).await {
                Ok(g) => metrics.set_reject_analysis(&g),
                Err(e) => tracing::warn!(error = %e, "the reject analysis for /metrics failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    })
}
