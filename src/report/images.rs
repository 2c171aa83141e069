//! The per-image reject-analysis export (`report --images FILE.csv`): one row per judged image
//! with the data elements AAPM Report 305 asks a vendor-neutral reject analysis to keep, as far
//! as plateqc has them: identity, when, where, which device and plate, who, the verdict and
//! the coded reason, whether a person decided, and whether the image was repeated.

use super::{fetch_all_text, reason_meaning, text::csv_field, Filter, ReportError};
use crate::record::Pool;
use chrono::{NaiveDateTime, TimeZone, Utc};
use std::collections::HashMap;
use std::fmt::Write as _;

/// A rejected image counts as repeated when the same patient was imaged again at the same site
/// within this long after it (a retake).
pub const REPEAT_WITHIN_MINUTES: i64 = 30;

/// One judged image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRow {
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    /// Acquisition date-time as in the header (DICOM DT), else empty.
    pub acquisition_datetime: String,
    pub processed_at: String,
    pub site: String,
    pub station: String,
    pub device_serial: String,
    pub plate_identifier: String,
    pub operator: String,
    pub model_verdict: String,
    pub verdict: String,
    pub reason_code: String,
    pub overridden: bool,
    pub override_by: String,
    pub unusable_score: Option<f64>,
    /// The threshold that judged it: the model's own, or the site's calibrated one.
    pub threshold: Option<f64>,
    pub model_version: String,
    /// `yes` / `no` for a rejected image, empty when not rejected or unknown (no patient
    /// identity or time to compare).
    pub repeated: String,
    /// View and body part, and the exposure indicator, where the plate carries them.
    pub body_part: String,
    pub view_position: String,
    pub anatomic_region: String,
    pub exposure_index: Option<f64>,
    pub deviation_index: Option<f64>,
}

/// A row as the query returns it (more columns than sqlx's tuples take).
#[derive(sqlx::FromRow)]
struct Row {
    sop_instance_uid: Option<String>,
    study_instance_uid: Option<String>,
    series_instance_uid: Option<String>,
    modality: Option<String>,
    acquisition_datetime: Option<String>,
    processed_at: String,
    site: Option<String>,
    station_name: Option<String>,
    device_serial: Option<String>,
    plate_identifier: Option<String>,
    operator: Option<String>,
    model_verdict: String,
    verdict: String,
    reason_code: Option<String>,
    overridden: i64,
    override_by: Option<String>,
    unusable_score: Option<f64>,
    threshold: Option<f64>,
    model_version: Option<String>,
    patient_id_hash: Option<String>,
    body_part: Option<String>,
    view_position: Option<String>,
    anatomic_region: Option<String>,
    exposure_index: Option<f64>,
    deviation_index: Option<f64>,
}

/// When an image was taken: the acquisition date-time, else the processing time.
fn taken_at(acquisition: &str, processed: &str) -> Option<i64> {
    let digits: String = acquisition.chars().take(14).collect();
    if digits.len() == 14 {
        if let Ok(t) = NaiveDateTime::parse_from_str(&digits, "%Y%m%d%H%M%S") {
            return Some(Utc.from_utc_datetime(&t).timestamp());
        }
    }
    chrono::DateTime::parse_from_rfc3339(processed)
        .ok()
        .map(|t| t.timestamp())
}

/// Every judged image the filter selects, oldest first, with `repeated` worked out.
pub async fn image_rows(pool: &Pool, filter: &Filter) -> Result<Vec<ImageRow>, ReportError> {
    filter.validate()?;
    let (clause, binds) = filter.clause_in(1, "i");
    let sql = format!(
        "SELECT i.sop_instance_uid, p.study_instance_uid, p.series_instance_uid, p.modality,
                i.acquisition_datetime, i.processed_at, i.site, i.station_name, i.device_serial,
                i.plate_identifier, i.operator, i.model_verdict, i.verdict, i.reason_code,
                CAST(i.overridden AS BIGINT) AS overridden, i.override_by, i.unusable_score,
                p.threshold, i.model_version, p.patient_id_hash, i.body_part, i.view_position,
                i.anatomic_region, i.exposure_index, i.deviation_index
           FROM qc_images i JOIN plates p ON p.id = i.plate_row
           {clause}
          ORDER BY i.day, i.plate_row"
    );
    let rows = fetch_all_text!(pool, Row, &sql, &binds);
    let s = |v: Option<String>| v.unwrap_or_default();
    let mut out = Vec::with_capacity(rows.len());
    // (site, patient hash) -> times of that patient's images there
    let mut visits: HashMap<(String, String), Vec<i64>> = HashMap::new();
    let mut keys = Vec::with_capacity(rows.len());
    for r in rows {
        let when = taken_at(
            r.acquisition_datetime.as_deref().unwrap_or(""),
            &r.processed_at,
        );
        let site = s(r.site);
        let key = match (r.patient_id_hash, when) {
            (Some(h), Some(t)) if !h.is_empty() => {
                let k = (site.clone(), h);
                visits.entry(k.clone()).or_default().push(t);
                Some((k, t))
            }
            _ => None,
        };
        keys.push(key);
        out.push(ImageRow {
            sop_instance_uid: s(r.sop_instance_uid),
            study_instance_uid: s(r.study_instance_uid),
            series_instance_uid: s(r.series_instance_uid),
            modality: s(r.modality),
            acquisition_datetime: s(r.acquisition_datetime),
            processed_at: r.processed_at,
            site,
            station: s(r.station_name),
            device_serial: s(r.device_serial),
            plate_identifier: s(r.plate_identifier),
            operator: s(r.operator),
            model_verdict: r.model_verdict,
            verdict: r.verdict,
            reason_code: s(r.reason_code),
            overridden: r.overridden != 0,
            override_by: s(r.override_by),
            unusable_score: r.unusable_score,
            threshold: r.threshold,
            model_version: s(r.model_version),
            repeated: String::new(),
            body_part: s(r.body_part),
            view_position: s(r.view_position),
            anatomic_region: s(r.anatomic_region),
            exposure_index: r.exposure_index,
            deviation_index: r.deviation_index,
        });
    }
    for (row, key) in out.iter_mut().zip(keys) {
        if row.verdict != "unusable" {
            continue;
        }
        if let Some((k, t)) = key {
            let later = visits[&k]
                .iter()
                .any(|&u| u > t && u - t <= REPEAT_WITHIN_MINUTES * 60);
            row.repeated = if later { "yes" } else { "no" }.into();
        }
    }
    Ok(out)
}

/// The rows as CSV (header first). Values from headers are neutralised for spreadsheets.
pub fn to_images_csv(rows: &[ImageRow]) -> String {
    let mut s = String::from(
        "sop_instance_uid,study_instance_uid,series_instance_uid,modality,acquisition_datetime,\
         processed_at,site,station,device_serial,plate_identifier,operator,model_verdict,verdict,\
         reason_code,reason_meaning,overridden,override_by,unusable_score,threshold,model_version,repeated,\
         body_part,view_position,anatomic_region,exposure_index,deviation_index\n",
    );
    for r in rows {
        let cells = [
            csv_field(&r.sop_instance_uid),
            csv_field(&r.study_instance_uid),
            csv_field(&r.series_instance_uid),
            csv_field(&r.modality),
            csv_field(&r.acquisition_datetime),
            csv_field(&r.processed_at),
            csv_field(&r.site),
            csv_field(&r.station),
            csv_field(&r.device_serial),
            csv_field(&r.plate_identifier),
            csv_field(&r.operator),
            r.model_verdict.clone(),
            r.verdict.clone(),
            csv_field(&r.reason_code),
            csv_field(reason_meaning(&r.reason_code)),
            if r.overridden { "yes" } else { "no" }.into(),
            csv_field(&r.override_by),
            r.unusable_score
                .map(|x| format!("{x:.4}"))
                .unwrap_or_default(),
            r.threshold.map(|x| format!("{x:.6}")).unwrap_or_default(),
            csv_field(&r.model_version),
            r.repeated.clone(),
            csv_field(&r.body_part),
            csv_field(&r.view_position),
            csv_field(&r.anatomic_region),
            r.exposure_index.map(|x| format!("{x}")).unwrap_or_default(),
            r.deviation_index
                .map(|x| format!("{x}"))
                .unwrap_or_default(),
        ];
        let _ = writeln!(s, "{}", cells.join(","));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquisition_time_wins_over_processing_time() {
        let a = taken_at("20260212101500", "2026-12-01T08:00:00.000Z").unwrap();
        let b = taken_at("20260212104000.123", "").unwrap();
        assert_eq!(b - a, 25 * 60);
        let c = taken_at("", "2026-12-01T08:00:00.000Z").unwrap();
        assert!(c > b);
        assert_eq!(taken_at("2026", "not a time"), None);
    }
}
