//! Reject analysis read back from the QC history: the summary behind `plateqc report` (table,
//! CSV, JSON), the review page (`--html`, see [`html`]), and the reviewer's side: overrides,
//! the history of one instance and the labelled set for retraining (see [`review`]).
//!
//! The queries read the views of migration 0004 (`qc_images`, `qc_findings`,
//! `plate_scan_history`, ...) with `$n` placeholders, so the same text runs on SQLite and
//! PostgreSQL, except where a million-plate history needs PostgreSQL's own means: one
//! `GROUPING SETS` pass for all groupings (`tallies`, the findings) and the wear check from an
//! index ([`worn_plates`]). The integration tests hold the two backends' reports to the byte.

pub mod calibrate;
pub mod gauges;
pub mod html;
pub mod images;
pub mod review;
pub mod text;

use text::describe_filter;
pub use text::{csv_field, printable, to_csv, to_table};

use crate::record::{Pool, RecordError};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("database query failed: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

/// Which images a report covers. Dates are days (`YYYY-MM-DD`, inclusive) of acquisition, or
/// of processing for an image without an acquisition date.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Filter {
    pub since: Option<String>,
    pub until: Option<String>,
    pub site: Option<String>,
    pub station: Option<String>,
    pub operator: Option<String>,
    pub device: Option<String>,
    pub plate: Option<String>,
}

impl Filter {
    /// Checks the dates, so a typo is an error and not an empty report.
    pub fn validate(&self) -> Result<(), ReportError> {
        for (name, d) in [("--since", &self.since), ("--until", &self.until)] {
            if let Some(d) = d {
                if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
                    return Err(ReportError::Invalid(format!(
                        "{name} {d}: expected a date like 2026-11-26"
                    )));
                }
            }
        }
        Ok(())
    }

    /// `WHERE ...` over the columns every reject-analysis view has (`day`, `site`,
    /// `station_name`, `operator`, `device_serial`, `plate_identifier`), qualified with
    /// `alias.` when given, with the values to bind in order starting at `$first`.
    fn clause_in(&self, first: usize, alias: &str) -> (String, Vec<String>) {
        let q = if alias.is_empty() {
            String::new()
        } else {
            format!("{alias}.")
        };
        let mut parts = Vec::new();
        let mut binds = Vec::new();
        let mut add = |cond: &str, v: &Option<String>| {
            if let Some(v) = v {
                binds.push(v.clone());
                let n = first + binds.len() - 1;
                parts.push(format!("{q}{}", cond.replace('#', &format!("${n}"))));
            }
        };
        add("day >= #", &self.since);
        add("day <= #", &self.until);
        add("site = #", &self.site);
        add("station_name = #", &self.station);
        add("operator = #", &self.operator);
        add("device_serial = #", &self.device);
        add("plate_identifier = #", &self.plate);
        let clause = if parts.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", parts.join(" AND "))
        };
        (clause, binds)
    }

    fn clause(&self) -> (String, Vec<String>) {
        self.clause_in(1, "")
    }

    /// Only the filters that describe a physical plate's life (plate, site); wear is judged on
    /// the plate's latest scans, whatever the dates or station.
    fn for_wear(&self) -> Filter {
        Filter {
            site: self.site.clone(),
            plate: self.plate.clone(),
            ..Filter::default()
        }
    }
}

/// When a plate counts as worn: a wear artifact on at least `hits` of its last `window` scans.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WearRule {
    pub hits: i64,
    pub window: i64,
}

impl Default for WearRule {
    fn default() -> Self {
        WearRule {
            hits: 9,
            window: 20,
        }
    }
}

/// The reject-rate levels of AAPM Report 151: a target and investigation levels above *and
/// below* it (a rate far below target suggests rejects go unrecorded). The defaults are the
/// figures commonly quoted for general radiography; a dental site sets its own.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Levels {
    pub target_pct: f64,
    pub investigate_above_pct: f64,
    pub investigate_below_pct: f64,
    /// Fewer images than this and a rate is not held against the levels: over a handful of
    /// images it swings between 0 and 100 %.
    pub min_images: i64,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            target_pct: 8.0,
            investigate_above_pct: 10.0,
            investigate_below_pct: 5.0,
            min_images: 30,
        }
    }
}

impl Levels {
    pub fn validate(&self) -> Result<(), ReportError> {
        let ok = (0.0..=100.0).contains(&self.investigate_below_pct)
            && self.investigate_below_pct <= self.target_pct
            && self.target_pct <= self.investigate_above_pct
            && self.investigate_above_pct <= 100.0
            && self.min_images >= 1;
        if ok {
            Ok(())
        } else {
            Err(ReportError::Invalid(format!(
                "reject-rate levels: need 0 <= below ({}) <= target ({}) <= above ({}) <= 100 \
                 and at least 1 image ({})",
                self.investigate_below_pct,
                self.target_pct,
                self.investigate_above_pct,
                self.min_images
            )))
        }
    }

    /// Where a group's rate stands against the levels.
    pub fn judge(&self, images: i64, reject_pct: f64) -> Level {
        if images < self.min_images {
            Level::TooFew
        } else if reject_pct > self.investigate_above_pct {
            Level::InvestigateHigh
        } else if reject_pct < self.investigate_below_pct {
            Level::InvestigateLow
        } else {
            Level::Within
        }
    }
}

/// A group's reject rate against the [`Levels`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Fewer images than `min_images`: read the counts, not the rate.
    TooFew,
    Within,
    /// Above the upper investigation level.
    InvestigateHigh,
    /// Below the lower investigation level.
    InvestigateLow,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::TooFew => "too_few",
            Level::Within => "within",
            Level::InvestigateHigh => "investigate_high",
            Level::InvestigateLow => "investigate_low",
        }
    }
}

/// The 95 % Wilson score interval of `k` rejects in `n` images, in percent (one decimal):
/// honest at small counts and near 0 or 100 %, where the normal approximation is not.
pub fn wilson_pct(k: i64, n: i64) -> (f64, f64) {
    if n <= 0 {
        return (0.0, 100.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.959_963_984_540_054_f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let r = |x: f64| (1000.0 * x.clamp(0.0, 1.0)).round() / 10.0;
    (r(centre - half), r(centre + half))
}

/// Counts for one group of images.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub key: String,
    pub images: i64,
    pub rejected: i64,
    pub model_rejected: i64,
    pub overridden: i64,
    pub overturned: i64,
    pub reject_pct: f64,
    /// 95 % Wilson interval of the reject rate.
    pub ci_low_pct: f64,
    pub ci_high_pct: f64,
    /// The rate against the report's [`Levels`].
    pub level: Level,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reason {
    pub artifact_type: String,
    pub reason_code: String,
    pub rejected: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReasonCode {
    pub reason_code: String,
    pub meaning: String,
    pub rejected: i64,
}

/// A physical plate to replace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WornPlate {
    pub plate_identifier: String,
    pub artifact_type: String,
    pub hits: i64,
    pub recent_scans: i64,
    pub last_hit_day: String,
}

/// One ISO week's reject rate next to the week before it in the data.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WeekTrend {
    pub iso_week: String,
    pub images: i64,
    pub reject_pct: f64,
    pub ci_low_pct: f64,
    pub ci_high_pct: f64,
    /// Percentage points up (+) or down (-) from the previous week with images.
    pub change_pct: Option<f64>,
}

fn trend(weeks: &[Group]) -> Vec<WeekTrend> {
    let mut prev: Option<f64> = None;
    weeks
        .iter()
        .map(|g| {
            let t = WeekTrend {
                iso_week: g.key.clone(),
                images: g.images,
                reject_pct: g.reject_pct,
                ci_low_pct: g.ci_low_pct,
                ci_high_pct: g.ci_high_pct,
                change_pct: prev.map(|p| ((g.reject_pct - p) * 10.0).round() / 10.0),
            };
            prev = Some(g.reject_pct);
            t
        })
        .collect()
}

/// The answer to: how many rejected, why, where, and which plates to replace.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub filter: Filter,
    pub totals: Group,
    /// Files that could not be judged (not DICOM, broken, refused); not part of the rates.
    pub errors: i64,
    /// Judged plates whose overlays could not be written (`plates.overlay_error`): their
    /// verdicts count, but a reader has no heat map to look at.
    pub without_overlays: i64,
    pub by_day: Vec<Group>,
    pub by_week: Vec<Group>,
    /// `by_week` with the change from the week before: is it getting better or worse?
    pub trend: Vec<WeekTrend>,
    pub by_site: Vec<Group>,
    pub by_station: Vec<Group>,
    pub by_operator: Vec<Group>,
    pub by_device: Vec<Group>,
    pub by_plate: Vec<Group>,
    pub reasons: Vec<Reason>,
    /// Rejected images with no artifact type at or above the model's reporting threshold (the
    /// reason code then names the likeliest type).
    pub rejected_without_type: i64,
    pub reason_codes: Vec<ReasonCode>,
    pub wear_rule: WearRule,
    pub plates_to_replace: Vec<WornPlate>,
    /// The levels every group's `level` was judged against.
    pub levels: Levels,
}

impl Report {
    /// Judges every group's rate against `levels` (the site's, instead of the defaults).
    pub fn apply_levels(&mut self, levels: Levels) -> Result<(), ReportError> {
        levels.validate()?;
        self.levels = levels;
        let groups = std::iter::once(&mut self.totals)
            .chain(self.by_day.iter_mut())
            .chain(self.by_week.iter_mut())
            .chain(self.by_site.iter_mut())
            .chain(self.by_station.iter_mut())
            .chain(self.by_operator.iter_mut())
            .chain(self.by_device.iter_mut())
            .chain(self.by_plate.iter_mut());
        for g in groups {
            g.level = levels.judge(g.images, g.reject_pct);
        }
        Ok(())
    }
}

/// CID 7011 meanings of the codes plateqc's models use.
pub fn reason_meaning(code: &str) -> &'static str {
    crate::cid7011::meaning(code).unwrap_or("")
}

fn pct(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (1000.0 * part as f64 / whole as f64).round() / 10.0
    }
}

type GroupRow = (String, i64, i64, i64, i64, i64);

fn to_group(r: GroupRow) -> Group {
    let (ci_low_pct, ci_high_pct) = wilson_pct(r.2, r.1);
    Group {
        ci_low_pct,
        ci_high_pct,
        level: Levels::default().judge(r.1, pct(r.2, r.1)),
        reject_pct: pct(r.2, r.1),
        key: r.0,
        images: r.1,
        rejected: r.2,
        model_rejected: r.3,
        overridden: r.4,
        overturned: r.5,
    }
}

/// Runs a query whose `$n` values are all text, over either backend.
macro_rules! fetch_all_text {
    ($pool:expr, $row:ty, $sql:expr, $binds:expr) => {{
        let sql: &str = $sql;
        let binds: &[String] = $binds;
        let rows: Vec<$row> = $crate::on_pool!($pool, p => {
            let mut q = sqlx::query_as::<_, $row>(sql);
            for b in binds {
                q = q.bind(b);
            }
            q.fetch_all(p).await?
        });
        rows
    }};
}
pub(crate) use fetch_all_text;

const COUNTS: &str = "count(*),
       count(CASE WHEN verdict = 'unusable' THEN 1 END),
       count(CASE WHEN model_verdict = 'unusable' THEN 1 END),
       count(CASE WHEN overridden = 1 THEN 1 END),
       count(CASE WHEN verdict <> model_verdict THEN 1 END)";

/// The columns of `qc_images` a report counts by, in the order [`tallies`] returns them.
/// `reason_code` is NULL unless the image is rejected, so its `rejected` count is the
/// rejected images per code.
const DIMENSIONS: [&str; 7] = [
    "day",
    "site",
    "station_name",
    "operator",
    "device_serial",
    "plate_identifier",
    "reason_code",
];

/// `SELECT (grouping number, value, counts) FROM from GROUP BY GROUPING SETS` over each of
/// [`DIMENSIONS`] (PostgreSQL): the grouping number is the column's index there.
fn grouping_sets_sql(counts: &str, from: &str) -> String {
    let which: String = DIMENSIONS
        .iter()
        .enumerate()
        .map(|(i, c)| format!(" WHEN GROUPING({c}) = 0 THEN {i}"))
        .collect();
    let key: String = DIMENSIONS
        .iter()
        .map(|c| format!(" WHEN GROUPING({c}) = 0 THEN {c}"))
        .collect();
    let sets = DIMENSIONS
        .iter()
        .map(|c| format!("({c})"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT CASE{which} END, coalesce(CASE{key} END, '(none)'), {counts}
           FROM {from} GROUP BY GROUPING SETS ({sets})"
    )
}

/// A row of [`grouping_sets_sql`]: grouping number, value, the five counts of [`COUNTS`].
type SetRow = (i32, String, i64, i64, i64, i64, i64);

/// Puts each row into its grouping's list.
fn into_slots(
    rows: impl IntoIterator<Item = SetRow>,
) -> Result<[Vec<GroupRow>; DIMENSIONS.len()], ReportError> {
    let mut out: [Vec<GroupRow>; DIMENSIONS.len()] = Default::default();
    for r in rows {
        let slot = usize::try_from(r.0)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| ReportError::Invalid(format!("grouping set {}", r.0)))?;
        slot.push((r.1, r.2, r.3, r.4, r.5, r.6));
    }
    Ok(out)
}

/// Counts per value of each of [`DIMENSIONS`] (NULL shown as `(none)`), in that order, over
/// the images the filter selects.
///
/// On PostgreSQL a report over all sites or one site (no other filter) adds up the running
/// tallies of migration 0014 ([`tallies_kept`]); any other filter counts the images. The
/// count is one pass over them (`GROUPING SETS`, hashed): at a million images one pass costs
/// about what each of seven separate `GROUP BY`s did. SQLite has no grouping sets and runs one
/// `GROUP BY` per column. Weeks and totals are sums of days ([`sum_by`], [`iso_week`]), so
/// they need no pass of their own.
async fn tallies(
    pool: &Pool,
    filter: &Filter,
) -> Result<[Vec<GroupRow>; DIMENSIONS.len()], ReportError> {
    let (clause, binds) = filter.clause();
    match pool {
        Pool::Postgres(_) if kept_tallies_cover(filter) => tallies_kept(pool, filter).await,
        Pool::Postgres(_) => {
            let sql = grouping_sets_sql(COUNTS, &format!("qc_images {clause}"));
            into_slots(fetch_all_text!(pool, SetRow, &sql, &binds))
        }
        Pool::Sqlite(_) => {
            let mut out: [Vec<GroupRow>; DIMENSIONS.len()] = Default::default();
            for (slot, column) in out.iter_mut().zip(DIMENSIONS) {
                let sql = format!(
                    "SELECT coalesce({column}, '(none)'), {COUNTS}
                     FROM qc_images {clause} GROUP BY {column}"
                );
                *slot = fetch_all_text!(pool, GroupRow, &sql, &binds);
            }
            Ok(out)
        }
    }
}

/// Each overridden image's latest override (the one `qc_images` applies): its
/// `sop_instance_uid` and the `verdict` it gives, as a parenthesised subquery.
const LATEST_OVERRIDES: &str = "(SELECT DISTINCT ON (sop_instance_uid) sop_instance_uid, verdict
   FROM overrides ORDER BY sop_instance_uid, id DESC)";

/// Whether migration 0014's tallies (kept per site) can answer the filter: no filter but a
/// site's name (an empty name is a site the tallies cannot tell from "none").
fn kept_tallies_cover(filter: &Filter) -> bool {
    let Filter {
        since,
        until,
        site,
        station,
        operator,
        device,
        plate,
    } = filter;
    [since, until, station, operator, device, plate]
        .iter()
        .all(|f| f.is_none())
        && site.as_deref() != Some("")
}

/// [`tallies`] from `report_tallies` (migration 0014): the images and model rejects its
/// triggers keep per site and grouping value, corrected for the images a reviewer overrode
/// (each counted again as judged, minus as the model judged it; a few thousand images in a
/// million-image history). At a million images about 0.05 s where counting them takes 1.1 s.
async fn tallies_kept(
    pool: &Pool,
    filter: &Filter,
) -> Result<[Vec<GroupRow>; DIMENSIONS.len()], ReportError> {
    let (site, and_site, binds) = match &filter.site {
        Some(s) => ("WHERE site = $1", "AND p.site = $1", vec![s.clone()]),
        None => ("", "", vec![]),
    };
    let kept = format!(
        "SELECT dim::int4, value, sum(images)::int8, sum(model_rejected)::int8,
                sum(model_rejected)::int8, 0::int8, 0::int8
           FROM report_tallies {site} GROUP BY dim, value"
    );
    // The overridden images as qc_images shows them (+1) and as the tallies counted them
    // (-1, the model's verdict and reason code, not overridden).
    let overridden = format!(
        "(WITH latest AS {LATEST_OVERRIDES},
              x AS (SELECT p.report_day AS day, p.site, p.station_name, p.operator,
                           p.device_serial, p.plate_identifier, p.reason_code,
                           p.verdict AS model, l.verdict AS judged
                      FROM latest l JOIN plates p ON p.sop_instance_uid = l.sop_instance_uid
                     WHERE p.verdict <> 'error' AND p.superseded = 0 {and_site})
         SELECT day, site, station_name, operator, device_serial, plate_identifier,
                CASE WHEN judged = 'unusable' THEN reason_code END AS reason_code, 1 AS n,
                CASE WHEN judged = 'unusable' THEN 1 ELSE 0 END AS rejected,
                CASE WHEN model = 'unusable' THEN 1 ELSE 0 END AS model_rejected,
                1 AS overridden, CASE WHEN judged <> model THEN 1 ELSE 0 END AS overturned
           FROM x
         UNION ALL
         SELECT day, site, station_name, operator, device_serial, plate_identifier,
                CASE WHEN model = 'unusable' THEN reason_code END, -1,
                CASE WHEN model = 'unusable' THEN -1 ELSE 0 END,
                CASE WHEN model = 'unusable' THEN -1 ELSE 0 END, 0, 0
           FROM x) d"
    );
    let corrections = grouping_sets_sql(
        "sum(n)::int8, sum(rejected)::int8, sum(model_rejected)::int8, sum(overridden)::int8,
         sum(overturned)::int8",
        &overridden,
    );
    let kept = fetch_all_text!(pool, SetRow, &kept, &binds);
    let corrections = fetch_all_text!(pool, SetRow, &corrections, &binds);
    let mut sums: std::collections::BTreeMap<(i32, String), SetRow> = Default::default();
    for r in kept.into_iter().chain(corrections) {
        let s = sums
            .entry((r.0, r.1.clone()))
            .or_insert((r.0, r.1, 0, 0, 0, 0, 0));
        s.2 += r.2;
        s.3 += r.3;
        s.4 += r.4;
        s.5 += r.5;
        s.6 += r.6;
    }
    if let Some(bad) = sums.values().find(|r| r.2 < 0 || r.3 < 0 || r.4 < 0) {
        return Err(ReportError::Invalid(format!(
            "report_tallies disagree with the images ({} {}: {} images); \
             recount them: psql -c 'SELECT report_tallies_recount()'",
            bad.0, bad.1, bad.2
        )));
    }
    // Values whose images all went (superseded, deleted) keep a row of zeros.
    into_slots(sums.into_values().filter(|r| r.2 > 0))
}

/// Adds up groups of rows under new keys (a day's counts into its week's).
fn sum_by(rows: &[GroupRow], key: impl Fn(&str) -> String) -> Vec<GroupRow> {
    let mut sums: std::collections::BTreeMap<String, GroupRow> = Default::default();
    for r in rows {
        let k = key(&r.0);
        let s = sums.entry(k.clone()).or_insert((k, 0, 0, 0, 0, 0));
        s.1 += r.1;
        s.2 += r.2;
        s.3 += r.3;
        s.4 += r.4;
        s.5 += r.5;
    }
    sums.into_values().collect()
}

/// The ISO 8601 week (`2026-W48`) of a day (`2026-11-26`), as the `qc_images_weekly` view
/// writes it; `(none)` for anything that is not a date.
fn iso_week(day: &str) -> String {
    use chrono::Datelike;
    match chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") {
        Ok(d) => {
            let w = d.iso_week();
            format!("{:04}-W{:02}", w.year(), w.week())
        }
        Err(_) => "(none)".to_string(),
    }
}

/// Groups in the report's order: by key (days, weeks) or most rejected first.
fn ordered(mut rows: Vec<GroupRow>, by_key: bool) -> Vec<Group> {
    if by_key {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
    } else {
        rows.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
    }
    rows.into_iter().map(to_group).collect()
}

/// Files not judged (`verdict = 'error'`) and judged plates without overlays, under the
/// report's filter `clause` (which names the columns of the grouped views: day, site, station,
/// operator, device, plate), from the few rows migration 0013's `plates_unjudged` indexes.
fn unjudged_and_bare(clause: &str) -> String {
    format!(
        "SELECT count(CASE WHEN verdict = 'error' THEN 1 END),
                count(CASE WHEN verdict <> 'error' AND overlay_error IS NOT NULL THEN 1 END)
           FROM (SELECT substr(processed_at, 1, 10) AS day, site, station_name, operator,
                        device_serial, plate_identifier, verdict, overlay_error
                   FROM plates WHERE verdict = 'error' OR overlay_error IS NOT NULL) e {clause}"
    )
}

/// The rows (`r.id`) of the rejected images over all sites or one (`$1`), from the plates
/// themselves (PostgreSQL): those the model rejected and nobody overrode, from migration
/// 0014's `plates_rejected` index, and those whose latest override rejects them. Unlike
/// `qc_images`, this reads neither the accepted images nor the overrides of every image, so it
/// costs about the rejects and overrides there are, not the whole history.
fn rejected_rows(one_site: bool) -> String {
    let site = if one_site { "AND p.site = $1" } else { "" };
    format!(
        "(SELECT p.id FROM plates p
           WHERE p.verdict = 'unusable' AND p.superseded = 0 {site}
             AND NOT EXISTS (SELECT 1 FROM overrides o
                              WHERE o.sop_instance_uid = p.sop_instance_uid)
          UNION ALL
          SELECT p.id
            FROM {LATEST_OVERRIDES} l
            JOIN plates p ON p.sop_instance_uid = l.sop_instance_uid
           WHERE l.verdict = 'unusable' AND p.verdict <> 'error' AND p.superseded = 0 {site}) r"
    )
}

/// The findings half of a report: files not judged, plates without overlays, rejects per
/// artifact type and per reason, and how to know the rejects with no type.
struct Findings {
    errors: i64,
    without_overlays: i64,
    reasons: Vec<(String, String, i64)>,
    untyped: Untyped,
}

/// Rejected images without an artifact type: counted (SQLite), or the number of rejected
/// images *with* one, to take from all rejected images once those are counted (PostgreSQL,
/// in the same pass as the reasons).
enum Untyped {
    Counted(i64),
    Typed(i64),
}

async fn findings(pool: &Pool, filter: &Filter) -> Result<Findings, ReportError> {
    let (clause, binds) = filter.clause();
    let counts: Vec<(i64, i64)> =
        fetch_all_text!(pool, (i64, i64), &unjudged_and_bare(&clause), &binds);
    let (errors, without_overlays) = counts.first().copied().unwrap_or((0, 0));
    let and = if clause.is_empty() {
        "WHERE".to_string()
    } else {
        format!("{clause} AND")
    };
    let (reasons, untyped) = match pool {
        // An unusable image's findings all count (`counts` is 0 only when a reviewer made the
        // image usable), so its plate_row appears here exactly when it has a type.
        Pool::Postgres(_) => {
            let findings = if kept_tallies_cover(filter) {
                format!(
                    "{} JOIN plate_artifacts a ON a.plate_row = r.id",
                    rejected_rows(filter.site.is_some())
                )
            } else {
                format!("qc_findings {and} verdict = 'unusable' AND counts = 1")
            };
            let sql = format!(
                "SELECT GROUPING(artifact_type), artifact_type, reason_code, count(*),
                        count(DISTINCT plate_row)
                   FROM {findings}
                  GROUP BY GROUPING SETS ((artifact_type, reason_code), ())
                  ORDER BY 1, 4 DESC, 2"
            );
            type Row = (i32, Option<String>, Option<String>, i64, i64);
            let mut reasons = Vec::new();
            let mut typed = 0;
            for r in fetch_all_text!(pool, Row, &sql, &binds) {
                match r {
                    (0, Some(t), Some(c), n, _) => reasons.push((t, c, n)),
                    (_, _, _, _, images) => typed = images,
                }
            }
            (reasons, Untyped::Typed(typed))
        }
        Pool::Sqlite(_) => {
            let untyped: Vec<(i64,)> = fetch_all_text!(
                pool,
                (i64,),
                &format!(
                    "SELECT count(*) FROM qc_images i {and} verdict = 'unusable'
                     AND NOT EXISTS (SELECT 1 FROM plate_artifacts a
                                      WHERE a.plate_row = i.plate_row)"
                ),
                &binds
            );
            let reasons_sql = format!(
                "SELECT artifact_type, reason_code, count(*) FROM qc_findings
                 {and} verdict = 'unusable' AND counts = 1
                 GROUP BY artifact_type, reason_code ORDER BY 3 DESC, 1"
            );
            let reasons = fetch_all_text!(pool, (String, String, i64), &reasons_sql, &binds);
            (
                reasons,
                Untyped::Counted(untyped.first().map(|x| x.0).unwrap_or(0)),
            )
        }
    };
    Ok(Findings {
        errors,
        without_overlays,
        reasons,
        untyped,
    })
}

/// Builds the summary for the images the filter selects.
pub async fn build(pool: &Pool, filter: &Filter, wear: WearRule) -> Result<Report, ReportError> {
    filter.validate()?;
    if wear.hits < 1 || wear.window < wear.hits {
        return Err(ReportError::Invalid(format!(
            "wear rule {} of {}: need 1 <= hits <= window",
            wear.hits, wear.window
        )));
    }
    // Three independent reads: on PostgreSQL they run side by side on the pool's two
    // connections (the counting pass is the long one); SQLite's one connection takes them
    // in turn.
    let wear_filter = filter.for_wear();
    let (tallied, found, plates_to_replace) = tokio::try_join!(
        tallies(pool, filter),
        findings(pool, filter),
        worn_plates(pool, &wear_filter, wear)
    )?;
    // In the order of DIMENSIONS.
    let [days, sites, stations, operators, devices, plates, codes] = tallied;
    let totals = sum_by(&days, |_| "all".to_string())
        .into_iter()
        .next()
        .unwrap_or(("all".to_string(), 0, 0, 0, 0, 0));
    let by_week = ordered(sum_by(&days, iso_week), true);
    let mut reason_codes: Vec<(String, i64)> = codes
        .into_iter()
        .filter(|r| r.2 > 0)
        .map(|r| {
            let code = if r.0 == "(none)" { "none".into() } else { r.0 };
            (code, r.2)
        })
        .collect();
    reason_codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Report {
        filter: filter.clone(),
        trend: trend(&by_week),
        totals: to_group(totals.clone()),
        errors: found.errors,
        without_overlays: found.without_overlays,
        by_day: ordered(days, true),
        by_week,
        by_site: ordered(sites, false),
        by_station: ordered(stations, false),
        by_operator: ordered(operators, false),
        by_device: ordered(devices, false),
        by_plate: ordered(plates, false),
        reasons: found
            .reasons
            .into_iter()
            .map(|(artifact_type, reason_code, rejected)| Reason {
                artifact_type,
                reason_code,
                rejected,
            })
            .collect(),
        rejected_without_type: match found.untyped {
            Untyped::Counted(n) => n,
            Untyped::Typed(n) => totals.2 - n,
        },
        reason_codes: reason_codes
            .into_iter()
            .map(|(reason_code, rejected)| ReasonCode {
                meaning: reason_meaning(&reason_code).to_string(),
                reason_code,
                rejected,
            })
            .collect(),
        wear_rule: wear,
        plates_to_replace,
        levels: Levels::default(),
    })
}

/// Plates with a wear artifact on at least `hits` of their last `window` scans.
pub async fn worn_plates(
    pool: &Pool,
    filter: &Filter,
    wear: WearRule,
) -> Result<Vec<WornPlate>, ReportError> {
    let (clause, mut binds) = filter.clause_in(3, "h");
    let and = clause.replacen("WHERE", "AND", 1);
    let sql = match pool {
        // Each plate's last `window` scans straight from an index (migration 0013's
        // plates_recent), plate by plate (the plates found by skipping through that index),
        // instead of ranking every scan in the history: at a million images 0.1 s against
        // 1.4 s. The same rule as the SQLite query below, written against the tables because
        // qc_images' join to the latest overrides cannot be pushed into a per-plate lookup:
        // judged images (not errors, not superseded) in `plate_scan_history`'s order, and a
        // finding counts unless the latest override made the image usable
        // (`qc_findings.counts`).
        Pool::Postgres(_) => format!(
            "WITH RECURSIVE seen(plate) AS (
                 (SELECT plate_identifier FROM plates
                   WHERE plate_identifier IS NOT NULL AND verdict <> 'error' AND superseded = 0
                   ORDER BY plate_identifier LIMIT 1)
                 UNION ALL
                 SELECT (SELECT p.plate_identifier FROM plates p
                          WHERE p.plate_identifier > s.plate AND p.verdict <> 'error'
                            AND p.superseded = 0
                          ORDER BY p.plate_identifier LIMIT 1)
                   FROM seen s WHERE s.plate IS NOT NULL),
             recent AS (
                 SELECT r.*, count(*) OVER (PARTITION BY r.plate_identifier) AS scans
                   FROM seen s CROSS JOIN LATERAL (
                        SELECT p.id AS plate_row, p.plate_identifier, p.site, p.station_name,
                               p.operator, p.device_serial, p.report_day AS day,
                               p.sop_instance_uid
                          FROM plates p
                         WHERE p.plate_identifier = s.plate AND p.verdict <> 'error'
                           AND p.superseded = 0
                         ORDER BY p.report_day DESC, p.acquisition_datetime DESC, p.id DESC
                         LIMIT CAST($1 AS INTEGER)) r
                  WHERE s.plate IS NOT NULL)
             SELECT h.plate_identifier, a.artifact_type, count(*), max(h.scans), max(h.day)
               FROM recent h JOIN plate_artifacts a ON a.plate_row = h.plate_row
              WHERE coalesce((SELECT o.verdict FROM overrides o
                               WHERE o.sop_instance_uid = h.sop_instance_uid
                               ORDER BY o.id DESC LIMIT 1), '') <> 'usable'
                AND a.artifact_type IN (SELECT artifact_type FROM wear_artifact_types) {and}
              GROUP BY h.plate_identifier, a.artifact_type
             HAVING count(*) >= CAST($2 AS INTEGER)
              ORDER BY 3 DESC, 1, 2"
        ),
        Pool::Sqlite(_) => format!(
            "SELECT h.plate_identifier, f.artifact_type, count(*),
                (SELECT count(*) FROM plate_scan_history s
                  WHERE s.plate_identifier = h.plate_identifier AND s.scan_rank <= CAST($1 AS INTEGER)),
                max(h.day)
         FROM plate_scan_history h
         JOIN qc_findings f ON f.plate_row = h.plate_row
         WHERE h.scan_rank <= CAST($1 AS INTEGER) AND f.counts = 1
           AND f.artifact_type IN (SELECT artifact_type FROM wear_artifact_types) {and}
         GROUP BY h.plate_identifier, f.artifact_type
         HAVING count(*) >= CAST($2 AS INTEGER)
         ORDER BY 3 DESC, 1, 2"
        ),
    };
    let mut all = vec![wear.window.to_string(), wear.hits.to_string()];
    all.append(&mut binds);
    let rows = fetch_all_text!(pool, (String, String, i64, i64, String), &sql, &all);
    Ok(rows
        .into_iter()
        .map(
            |(plate_identifier, artifact_type, hits, recent_scans, last_hit_day)| WornPlate {
                plate_identifier,
                artifact_type,
                hits,
                recent_scans,
                last_hit_day,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_numbers_placeholders_in_order() {
        let f = Filter {
            since: Some("2026-01-01".into()),
            station: Some("OP1".into()),
            plate: Some("P'1".into()),
            ..Filter::default()
        };
        let (clause, binds) = f.clause_in(3, "");
        assert_eq!(
            clause,
            "WHERE day >= $3 AND station_name = $4 AND plate_identifier = $5"
        );
        assert_eq!(
            f.clause_in(1, "i").0,
            "WHERE i.day >= $1 AND i.station_name = $2 AND i.plate_identifier = $3"
        );
        assert_eq!(binds, vec!["2026-01-01", "OP1", "P'1"]);
        assert_eq!(Filter::default().clause().0, "");
    }

    #[test]
    fn kept_tallies_answer_reports_over_everything_or_one_named_site_only() {
        let site = |s: &str| Filter {
            site: Some(s.into()),
            ..Filter::default()
        };
        assert!(kept_tallies_cover(&Filter::default()));
        assert!(kept_tallies_cover(&site("north")));
        assert!(
            !kept_tallies_cover(&site("")),
            "'' is kept together with no site"
        );
        let dated = Filter {
            since: Some("2026-01-01".into()),
            ..site("north")
        };
        assert!(!kept_tallies_cover(&dated));
        let by_plate = Filter {
            plate: Some("PLATE-7".into()),
            ..Filter::default()
        };
        assert!(!kept_tallies_cover(&by_plate));
    }

    #[test]
    fn bad_dates_are_refused() {
        let f = Filter {
            until: Some("26/11/2026".into()),
            ..Filter::default()
        };
        assert!(matches!(f.validate(), Err(ReportError::Invalid(_))));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("a"), "a");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }

    #[test]
    fn trend_is_the_change_from_the_week_before() {
        let g = |key: &str, pct: f64| Group {
            key: key.into(),
            images: 10,
            rejected: 0,
            model_rejected: 0,
            overridden: 0,
            overturned: 0,
            reject_pct: pct,
            ci_low_pct: 0.0,
            ci_high_pct: 100.0,
            level: Level::TooFew,
        };
        let t = trend(&[
            g("2026-W01", 10.0),
            g("2026-W02", 30.0),
            g("2026-W05", 12.5),
        ]);
        let changes: Vec<Option<f64>> = t.iter().map(|w| w.change_pct).collect();
        assert_eq!(changes, vec![None, Some(20.0), Some(-17.5)]);
    }

    #[test]
    fn wilson_intervals_are_wide_for_few_images_and_narrow_for_many() {
        // 1 reject in 3 images: anything from a few percent to most of them.
        assert_eq!(wilson_pct(1, 3), (6.1, 79.2));
        // 0 of 3 is not "0 %": the interval still reaches 56 %.
        assert_eq!(wilson_pct(0, 3), (0.0, 56.1));
        // 80 of 1000: 8 % within about +-1.7 points.
        assert_eq!(wilson_pct(80, 1000), (6.5, 9.8));
        assert_eq!(wilson_pct(0, 0), (0.0, 100.0));
    }

    #[test]
    fn rates_are_held_against_both_levels_only_over_enough_images() {
        let l = Levels::default();
        assert_eq!(l.judge(29, 50.0), Level::TooFew);
        assert_eq!(l.judge(100, 10.5), Level::InvestigateHigh);
        assert_eq!(l.judge(100, 10.0), Level::Within);
        assert_eq!(l.judge(100, 4.9), Level::InvestigateLow);
        let site = Levels {
            target_pct: 4.0,
            investigate_above_pct: 6.0,
            investigate_below_pct: 1.0,
            min_images: 10,
        };
        assert_eq!(site.judge(10, 4.9), Level::Within);
        assert!(site.validate().is_ok());
        let upside_down = Levels {
            investigate_below_pct: 12.0,
            ..Levels::default()
        };
        assert!(upside_down.validate().is_err());
    }

    #[test]
    fn weeks_are_iso_weeks_summed_from_days() {
        // A Sunday ends ISO week 9; the Monday after starts week 10; 2027-01-01 is a Friday
        // in week 53 of 2026.
        assert_eq!(iso_week("2026-03-01"), "2026-W09");
        assert_eq!(iso_week("2026-03-02"), "2026-W10");
        assert_eq!(iso_week("2027-01-01"), "2026-W53");
        assert_eq!(iso_week("(none)"), "(none)");
        let day = |k: &str, n: i64, r: i64| (k.to_string(), n, r, r, 0, 0);
        let weeks = sum_by(
            &[
                day("2026-03-02", 4, 1),
                day("2026-03-01", 3, 3),
                day("2026-03-08", 2, 0),
            ],
            iso_week,
        );
        assert_eq!(
            weeks,
            vec![
                ("2026-W09".to_string(), 3, 3, 3, 0, 0),
                ("2026-W10".to_string(), 6, 1, 1, 0, 0)
            ]
        );
    }

    #[test]
    fn groups_are_ordered_by_key_or_by_rejects() {
        let row = |k: &str, n: i64, r: i64| (k.to_string(), n, r, r, 0, 0);
        let rows = vec![
            row("b", 5, 1),
            row("a", 9, 1),
            row("c", 2, 2),
            row("d", 9, 1),
        ];
        let keys = |g: Vec<Group>| g.into_iter().map(|g| g.key).collect::<Vec<_>>();
        assert_eq!(keys(ordered(rows.clone(), true)), ["a", "b", "c", "d"]);
        // Most rejected first, then most images, then by key.
        assert_eq!(keys(ordered(rows, false)), ["c", "a", "d", "b"]);
    }

    #[test]
    fn percentages_round_to_one_decimal() {
        assert_eq!(pct(1, 3), 33.3);
        assert_eq!(pct(0, 0), 0.0);
        assert_eq!(pct(2, 2), 100.0);
    }
}
