//! `plateqc report --html OUT`: one self-contained static page. No server, no external URL:
//! CSS and script inline, charts as inline SVG, thumbnails and montages as `data:` URIs. Every
//! text from the database is escaped; the page reads no patient data (the views it queries
//! hold none).

use super::{fetch_all_text, Filter, Group, Levels, Report, ReportError};
use crate::record::Pool;
use base64::Engine as _;
use std::fmt::Write as _;
use std::path::Path;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// One recent image on the page.
struct Recent {
    plate_row: i64,
    day: String,
    site: Option<String>,
    station: Option<String>,
    plate: Option<String>,
    verdict: String,
    model_verdict: String,
    score: Option<f64>,
    artifact_types: Option<String>,
    reason_code: Option<String>,
    override_by: Option<String>,
    override_reason: Option<String>,
    montage_path: Option<String>,
    /// Why the verdict waits for a person, while no one has decided yet.
    waiting: Option<String>,
}

type RecentRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn recent(pool: &Pool, filter: &Filter, limit: usize) -> Result<Vec<Recent>, ReportError> {
    let (clause, binds) = filter.clause_in(1, "i");
    let sql = format!(
        "SELECT i.plate_row, i.day, i.site, i.station_name, i.plate_identifier, i.verdict,
                i.model_verdict, i.unusable_score, v.artifact_types, i.reason_code, i.override_by,
                i.override_reason, i.montage_path,
                CASE WHEN v.needs_review = 1 AND i.overridden = 0 THEN v.review_reason END
         FROM qc_images i JOIN plate_verdicts v ON v.plate_row = i.plate_row
         {clause}
         ORDER BY CASE WHEN v.needs_review = 1 AND i.overridden = 0 THEN 0 ELSE 1 END,
                  i.day DESC, i.plate_row DESC LIMIT {limit}"
    );
    let rows = fetch_all_text!(pool, RecentRow, &sql, &binds);
    Ok(rows
        .into_iter()
        .map(|r| Recent {
            plate_row: r.0,
            day: r.1,
            site: r.2,
            station: r.3,
            plate: r.4,
            verdict: r.5,
            model_verdict: r.6,
            score: r.7,
            artifact_types: r.8,
            reason_code: r.9,
            override_by: r.10,
            override_reason: r.11,
            montage_path: r.12,
            waiting: r.13,
        })
        .collect())
}

/// The rejection note of each listed plate and where it went: `plate_row -> text`.
async fn notes_of(
    pool: &Pool,
    rows: &[Recent],
) -> Result<std::collections::HashMap<i64, String>, ReportError> {
    let mut out: std::collections::HashMap<i64, String> = Default::default();
    if rows.is_empty() {
        return Ok(out);
    }
    // Integers only in the list (formatted here, never taken from text).
    let ids: Vec<String> = rows.iter().map(|r| r.plate_row.to_string()).collect();
    let sql = format!(
        "SELECT n.plate_row, n.sop_instance_uid, o.destination, o.state, o.last_error
           FROM rejection_notes n
           LEFT JOIN outbox o ON o.plate_row = n.plate_row AND o.kind = 'kos'
                             AND o.sop_instance_uid = n.sop_instance_uid
          WHERE n.kind = 'kos' AND n.plate_row IN ({})
          ORDER BY n.plate_row, o.destination",
        ids.join(", ")
    );
    type NoteRow = (i64, String, Option<String>, Option<String>, Option<String>);
    for (row, uid, dest, state, error) in fetch_all_text!(pool, NoteRow, &sql, &[]) {
        let entry = out
            .entry(row)
            .or_insert_with(|| format!("note {uid} written"));
        match (dest, state) {
            (Some(d), Some(st)) if st == "sent" => {
                let _ = write!(entry, "; sent to {d}");
            }
            (Some(d), Some(st)) => {
                let _ = write!(
                    entry,
                    "; {st} for {d}{}",
                    error.map(|e| format!(" ({e})")).unwrap_or_default()
                );
            }
            _ => {}
        }
    }
    Ok(out)
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Widest montage embedded; wider ones are scaled down.
const MONTAGE_MAX_WIDTH: u32 = 1600;

/// A small PNG thumbnail of the montage and the montage itself as JPEG (a lossless montage of
/// a large plate is megabytes; the page embeds one per row), when the file is still there. A
/// montage written as JPEG (as explain does now) and not too wide is embedded as it is; a PNG
/// of an older record is encoded.
fn montage_images(path: Option<&str>) -> Option<(String, String)> {
    let bytes = std::fs::read(path?).ok()?;
    let format = image::guess_format(&bytes).ok()?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return None;
    }
    let img = image::load_from_memory_with_format(&bytes, format).ok()?;
    let thumb = img.thumbnail(240, 64);
    let mut png = Vec::new();
    thumb
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    if format == image::ImageFormat::Jpeg && img.width() <= MONTAGE_MAX_WIDTH {
        return Some((data_uri("image/png", &png), data_uri("image/jpeg", &bytes)));
    }
    let full = if img.width() > MONTAGE_MAX_WIDTH {
        img.resize(
            MONTAGE_MAX_WIDTH,
            u32::MAX,
            image::imageops::FilterType::Triangle,
        )
    } else {
        img
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&full.to_rgb8())
        .ok()?;
    Some((data_uri("image/png", &png), data_uri("image/jpeg", &jpeg)))
}

/// A line chart of reject rate per period (x: period, y: percent), each point with its 95 %
/// Wilson interval, and the site's target and investigation levels (AAPM Report 151) as
/// horizontal lines.
fn rate_chart(title: &str, groups: &[Group], levels: &Levels) -> String {
    let (w, h, left, bottom, top) = (720.0, 260.0, 48.0, 56.0, 24.0);
    let mut s = format!(
        "<svg class=\"chart\" id=\"chart-time\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let plot_h = h - bottom - top;
    let max = groups
        .iter()
        .map(|g| g.ci_high_pct)
        .chain([levels.investigate_above_pct, levels.target_pct])
        .fold(10.0_f64, f64::max)
        .min(100.0);
    for tick in 0..=4 {
        let v = max * tick as f64 / 4.0;
        let y = top + plot_h - plot_h * v / max;
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{v:.0}%</text>",
            w - 8.0,
            left - 4.0,
            y + 4.0
        );
    }
    for (class, label, v) in [
        ("level target", "target", levels.target_pct),
        (
            "level investigate",
            "investigate",
            levels.investigate_above_pct,
        ),
        (
            "level investigate",
            "investigate",
            levels.investigate_below_pct,
        ),
    ] {
        let y = top + plot_h - plot_h * v.clamp(0.0, max) / max;
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"{class}\"><title>{label} {v:.1}%</title></line><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{label} {v:.0}%</text>",
            w - 8.0,
            w - 10.0,
            y - 3.0
        );
    }
    let n = groups.len().max(1);
    let step = (w - left - 16.0) / n as f64;
    let mut points = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let x = left + step * (i as f64 + 0.5);
        let y = top + plot_h - plot_h * g.reject_pct / max;
        points.push(format!("{x:.1},{y:.1}"));
        let (lo, hi) = (
            top + plot_h - plot_h * g.ci_low_pct.min(max) / max,
            top + plot_h - plot_h * g.ci_high_pct.min(max) / max,
        );
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{lo:.1}\" y2=\"{hi:.1}\" class=\"ci\"><title>95% interval {:.1}-{:.1}%</title></line>",
            g.ci_low_pct, g.ci_high_pct
        );
        let _ = write!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" class=\"point\"><title>{}: {} of {} rejected ({:.1}%)</title></circle>",
            esc(&g.key),
            g.rejected,
            g.images,
            g.reject_pct
        );
        let every = n.div_ceil(12);
        if i % every == 0 {
            let _ = write!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\" transform=\"rotate(-40 {x:.1} {:.1})\">{}</text>",
                h - bottom + 16.0,
                h - bottom + 16.0,
                esc(&g.key)
            );
        }
    }
    if points.len() > 1 {
        let _ = write!(
            s,
            "<polyline points=\"{}\" class=\"line\"/>",
            points.join(" ")
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars: reject rate of each physical plate (most rejected first).
fn plate_chart(groups: &[Group]) -> String {
    let shown: Vec<&Group> = groups
        .iter()
        .filter(|g| g.key != "(none)")
        .take(20)
        .collect();
    let row_h = 18.0;
    let (w, left) = (720.0, 190.0);
    let h = 28.0 + row_h * shown.len().max(1) as f64;
    let mut s = format!(
        "<svg class=\"chart\" id=\"chart-plates\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Reject rate per plate\">"
    );
    if shown.is_empty() {
        s.push_str("<text x=\"10\" y=\"20\" class=\"axis\">no plate identifiers recorded</text>");
    }
    for (i, g) in shown.iter().enumerate() {
        let y = 8.0 + row_h * i as f64;
        let bar = (w - left - 90.0) * g.reject_pct / 100.0;
        let _ = write!(
            s,
            "<g class=\"bar\"><title>{}: {} of {} rejected</title><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\">{:.0}% ({}/{})</text></g>",
            esc(&g.key),
            g.rejected,
            g.images,
            left - 6.0,
            y + row_h * 0.7,
            esc(&g.key),
            row_h - 4.0,
            left + bar + 6.0,
            y + row_h * 0.7,
            g.reject_pct,
            g.rejected,
            g.images
        );
    }
    s.push_str("</svg>");
    s
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 40px;color:#1d2430;background:#f7f8fa}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:17px;margin:26px 0 8px}
.summary{display:flex;gap:14px;flex-wrap:wrap}.card{background:#fff;border:1px solid #d9dde4;border-radius:6px;padding:8px 14px}
.card b{display:block;font-size:20px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
figure{margin:0;background:#fff;border:1px solid #d9dde4;border-radius:6px;padding:8px}
figcaption{font-weight:600;margin-bottom:4px}
.chart{width:100%;height:auto}.grid{stroke:#e3e6eb}.axis{font-size:11px;fill:#4a5363}
.line{fill:none;stroke:#c0392b;stroke-width:2}.ci{stroke:#c0392b;stroke-opacity:.45;stroke-width:2}.level{stroke-dasharray:6 4;stroke-width:1.5}.target{stroke:#2e7d32}.investigate{stroke:#b26a00}.point{fill:#c0392b}.bar rect{fill:#d35400}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border-bottom:1px solid #e3e6eb;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#eef0f4;position:sticky;top:0}
tr.plate{cursor:pointer}tr.plate:hover,tr.plate:focus{background:#fff4e0;outline:none}
.verdict-unusable{color:#b03a2e;font-weight:600}.verdict-usable{color:#1e8449;font-weight:600}
.thumb{height:48px;display:block}.muted{color:#7a8291}
tr.waiting{background:#fff6d5}
dialog{max-width:96vw;max-height:94vh;border:0;border-radius:8px;padding:12px}
dialog img{max-width:92vw;max-height:80vh;display:block}dialog::backdrop{background:rgba(0,0,0,.6)}
";

const SCRIPT: &str = "
(function(){
  var montages = JSON.parse(document.getElementById('montages').textContent);
  var dialog = document.getElementById('viewer');
  var img = document.getElementById('viewer-img');
  var caption = document.getElementById('viewer-caption');
  function open(tr){
    var row = tr.getAttribute('data-row');
    var src = montages[row];
    caption.textContent = tr.getAttribute('data-caption');
    if (src) { img.src = src; img.hidden = false; } else { img.removeAttribute('src'); img.hidden = true; caption.textContent += ' (montage not available)'; }
    dialog.setAttribute('data-row', row);
    if (!dialog.open) { dialog.showModal(); }
    history.replaceState(null, '', '#plate-' + row);
  }
  document.querySelectorAll('tr.plate').forEach(function(tr){
    tr.addEventListener('click', function(){ open(tr); });
    tr.addEventListener('keydown', function(e){ if (e.key === 'Enter') { open(tr); } });
  });
  document.getElementById('viewer-close').addEventListener('click', function(){
    dialog.close(); history.replaceState(null, '', '#');
  });
  var m = /^#plate-(\\d+)$/.exec(location.hash);
  if (m) {
    var tr = document.querySelector('tr.plate[data-row=\"' + m[1] + '\"]');
    if (tr) { tr.click(); }
  }
})();
";

/// Writes the review page for the filtered images (the `limit` most recent in the table).
pub async fn write_page(
    pool: &Pool,
    report: &Report,
    limit: usize,
    out: &Path,
) -> Result<usize, ReportError> {
    let rows = recent(pool, &report.filter, limit).await?;
    let notes = notes_of(pool, &rows).await?;
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let t = &report.totals;
    let mut s = String::with_capacity(1 << 20);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>plateqc review</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        s,
        "<h1>Plate QC review</h1><p class=\"muted\">Generated {generated}{}. Verdicts count reviewer overrides.</p>",
        esc(&super::describe_filter(&report.filter))
    );
    let _ = write!(
        s,
        "<div class=\"summary\"><div class=\"card\" id=\"total-images\"><b>{}</b>images judged</div><div class=\"card\" id=\"total-rejected\"><b>{} ({:.1}%)</b>rejected</div><div class=\"card\"><b>{}</b>reviewed by a person</div><div class=\"card\"><b>{}</b>verdicts overturned</div><div class=\"card\"><b>{}</b>files not judged</div><div class=\"card\"><b>{}</b>plates to replace</div>{}</div>",
        t.images,
        t.rejected,
        t.reject_pct,
        t.overridden,
        t.overturned,
        report.errors,
        report.plates_to_replace.len(),
        if report.without_overlays > 0 {
            format!(
                "<div class=\"card\" id=\"without-overlays\"><b>{}</b>judged without overlays</div>",
                report.without_overlays
            )
        } else {
            String::new()
        }
    );
    let (period, series) = if report.by_week.len() >= 2 {
        ("ISO week", &report.by_week)
    } else {
        ("day", &report.by_day)
    };
    let _ = write!(
        s,
        "<h2>Reject rate</h2><div class=\"charts\"><figure><figcaption>Reject rate per {period}</figcaption>{}</figure><figure><figcaption>Reject rate per plate (most rejected first)</figcaption>{}</figure></div>",
        rate_chart(&format!("Reject rate per {period}"), series, &report.levels),
        plate_chart(&report.by_plate)
    );
    s.push_str("<h2>Plates to replace</h2>");
    if report.plates_to_replace.is_empty() {
        let _ = write!(
            s,
            "<p id=\"worn\">None: no plate shows a wear artifact on {} of its last {} scans.</p>",
            report.wear_rule.hits, report.wear_rule.window
        );
    } else {
        s.push_str("<table id=\"worn\"><thead><tr><th>Plate</th><th>Artifact</th><th>Scans with it</th><th>Last seen</th></tr></thead><tbody>");
        for w in &report.plates_to_replace {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{} of last {}</td><td>{}</td></tr>",
                esc(&w.plate_identifier),
                esc(&w.artifact_type),
                w.hits,
                w.recent_scans,
                esc(&w.last_hit_day)
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("<h2>Why plates are rejected</h2><table id=\"reasons\"><thead><tr><th>Artifact</th><th>CID 7011</th><th>Rejected images</th></tr></thead><tbody>");
    for r in &report.reasons {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            esc(&r.artifact_type),
            esc(&r.reason_code),
            esc(super::reason_meaning(&r.reason_code)),
            r.rejected
        );
    }
    if report.rejected_without_type > 0 {
        let _ = write!(
            s,
            "<tr><td class=\"muted\">no type above the reporting threshold</td><td>see reason codes</td><td>{}</td></tr>",
            report.rejected_without_type
        );
    }
    for c in &report.reason_codes {
        let _ = write!(
            s,
            "<tr class=\"code\"><td class=\"muted\">primary code</td><td>{} {}</td><td>{}</td></tr>",
            esc(&c.reason_code),
            esc(&c.meaning),
            c.rejected
        );
    }
    s.push_str("</tbody></table><h2>By station</h2><table id=\"stations\"><thead><tr><th>Station</th><th>Images</th><th>Rejected</th><th>Rate</th></tr></thead><tbody>");
    for g in &report.by_station {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td></tr>",
            esc(&g.key),
            g.images,
            g.rejected,
            g.reject_pct
        );
    }
    let waiting = rows.iter().filter(|r| r.waiting.is_some()).count();
    let _ = write!(
        s,
        "</tbody></table><h2>Recent plates</h2><p class=\"muted\">The {} most recent images; click a row for its layer montage.</p>",
        rows.len()
    );
    if waiting > 0 {
        let _ = write!(
            s,
            "<p id=\"waiting\"><strong>{waiting} plate{} wait{} for a person's review</strong> (listed first): the model is not sure enough of its verdict, so nothing has been sent for {}. Decide with <code>plateqc override SOP_UID --verdict usable|unusable --by NAME --reason TEXT</code> (the same verdict confirms it).</p>",
            if waiting == 1 { "" } else { "s" },
            if waiting == 1 { "s" } else { "" },
            if waiting == 1 { "it" } else { "them" },
        );
    }
    s.push_str("<table id=\"plates\"><thead><tr><th>Montage</th><th>Day</th><th>Site / station</th><th>Plate</th><th>Verdict</th><th>Score</th><th>Reasons</th><th>Rejection note</th><th>Review</th></tr></thead><tbody>");
    let mut montages = serde_json::Map::new();
    for r in &rows {
        let images = montage_images(r.montage_path.as_deref());
        let thumb = match &images {
            Some((thumb, full)) => {
                montages.insert(r.plate_row.to_string(), full.clone().into());
                format!("<img class=\"thumb\" alt=\"montage thumbnail\" src=\"{thumb}\">")
            }
            None => "<span class=\"muted\">no montage</span>".to_string(),
        };
        let reasons = match (&r.artifact_types, &r.reason_code) {
            (Some(a), Some(c)) => format!("{a} (CID 7011 {c})"),
            (Some(a), None) => a.clone(),
            (None, Some(c)) => format!("CID 7011 {c}"),
            (None, None) => String::new(),
        };
        let review = match &r.override_by {
            Some(by) => format!(
                "{} by {by}: {} (model: {})",
                r.verdict,
                r.override_reason.as_deref().unwrap_or(""),
                r.model_verdict
            ),
            None => match &r.waiting {
                Some(why) => format!("waits for review: {}", why.replace('_', " ")),
                None => String::new(),
            },
        };
        let place = format!(
            "{} / {}",
            r.site.as_deref().unwrap_or("-"),
            r.station.as_deref().unwrap_or("-")
        );
        let plate = r.plate.as_deref().unwrap_or("-");
        let caption = format!("{} {} {place} plate {plate}: {}", r.day, r.verdict, reasons);
        let _ = write!(
            s,
            "<tr class=\"plate{}\" tabindex=\"0\" data-row=\"{}\" data-verdict=\"{}\" data-caption=\"{}\"><td>{thumb}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"verdict-{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.waiting.is_some() { " waiting" } else { "" },
            r.plate_row,
            esc(&r.verdict),
            esc(&caption),
            esc(&r.day),
            esc(&place),
            esc(plate),
            esc(&r.verdict),
            esc(&r.verdict),
            r.score.map(|x| format!("{x:.3}")).unwrap_or_default(),
            esc(&reasons),
            esc(notes.get(&r.plate_row).map_or("", String::as_str)),
            esc(&review)
        );
    }
    s.push_str("</tbody></table>");
    // Base64 and digits only, so the JSON cannot close the script element.
    let json = serde_json::Value::Object(montages).to_string();
    let _ = write!(
        s,
        "<dialog id=\"viewer\"><p><button id=\"viewer-close\" type=\"button\">Close</button> <span id=\"viewer-caption\"></span></p><img id=\"viewer-img\" alt=\"layer montage\"></dialog><script type=\"application/json\" id=\"montages\">{}</script><script>{SCRIPT}</script></body></html>",
        json.replace("</", "<\\/")
    );
    crate::fsutil::write_private(out, s.as_bytes()).map_err(|source| ReportError::Io {
        path: out.into(),
        source,
    })?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn charts_escape_keys_and_handle_empty_input() {
        let g = Group {
            key: "<b>".into(),
            images: 4,
            rejected: 1,
            model_rejected: 1,
            overridden: 0,
            overturned: 0,
            reject_pct: 25.0,
            ci_low_pct: 4.6,
            ci_high_pct: 69.9,
            level: crate::report::Level::TooFew,
        };
        let svg = rate_chart("t", &[g.clone(), g.clone()], &Levels::default());
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("<polyline"));
        assert_eq!(svg.matches("class=\"level target\"").count(), 1);
        assert_eq!(svg.matches("class=\"level investigate\"").count(), 2);
        assert_eq!(
            svg.matches("class=\"ci\"").count(),
            2,
            "an interval per point"
        );
        assert!(plate_chart(&[]).contains("no plate identifiers"));
        assert!(plate_chart(&[g]).contains("25% (1/4)"));
    }
}
