//! The report as text: a table for a person at a terminal, and one CSV table for a
//! spreadsheet.

use super::{reason_meaning, Filter, Group, Level, Report};
use std::fmt::Write as _;

/// The report as text for a person at a terminal.
pub fn to_table(r: &Report) -> String {
    let mut s = String::new();
    let t = &r.totals;
    let _ = writeln!(s, "Reject analysis{}", describe_filter(&r.filter));
    let _ = writeln!(
        s,
        "  images {}   rejected {} ({:.1}%, 95% CI {:.1}-{:.1}%)   model alone rejected {}   reviewed {}   overturned {}   not judged (errors) {}",
        t.images, t.rejected, t.reject_pct, t.ci_low_pct, t.ci_high_pct, t.model_rejected, t.overridden, t.overturned, r.errors
    );
    let l = &r.levels;
    let _ = writeln!(
        s,
        "  levels (AAPM Report 151): target {:.1}%, investigate above {:.1}% or below {:.1}%, rates over fewer than {} images not judged; overall: {}",
        l.target_pct,
        l.investigate_above_pct,
        l.investigate_below_pct,
        l.min_images,
        level_words(t.level)
    );
    if r.without_overlays > 0 {
        let _ = writeln!(
            s,
            "  judged without overlays {} (could not be written; see plates.overlay_error)",
            r.without_overlays
        );
    }
    let _ = writeln!(s, "\nWhy (artifact types on rejected images)");
    if r.reasons.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for x in &r.reasons {
        let _ = writeln!(
            s,
            "  {:<18} {:>6}  CID 7011 {} {}",
            x.artifact_type,
            x.rejected,
            x.reason_code,
            reason_meaning(&x.reason_code)
        );
    }
    if r.rejected_without_type > 0 {
        let _ = writeln!(
            s,
            "  {:<18} {:>6}  (no type at or above the reporting threshold)",
            "-", r.rejected_without_type
        );
    }
    let _ = writeln!(s, "\nPrimary reason code of rejected images");
    for x in &r.reason_codes {
        let _ = writeln!(s, "  {:<8} {:>6}  {}", x.reason_code, x.rejected, x.meaning);
    }
    let _ = writeln!(
        s,
        "\nPlates to replace (a wear artifact on >= {} of the last {} scans)",
        r.wear_rule.hits, r.wear_rule.window
    );
    if r.plates_to_replace.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for w in &r.plates_to_replace {
        let _ = writeln!(
            s,
            "  {:<24} {:<12} {} of last {} scans, last on {}",
            printable(&w.plate_identifier),
            w.artifact_type,
            w.hits,
            w.recent_scans,
            w.last_hit_day
        );
    }
    let _ = writeln!(s, "\nTrend (last 8 ISO weeks)");
    for w in r.trend.iter().skip(r.trend.len().saturating_sub(8)) {
        let _ = writeln!(
            s,
            "  {:<10} {:>5} images {:>6.1}% (95% CI {:>5.1}-{:>5.1}%)  {}",
            w.iso_week,
            w.images,
            w.reject_pct,
            w.ci_low_pct,
            w.ci_high_pct,
            match w.change_pct {
                Some(c) if c > 0.0 => format!("up {c:.1} points"),
                Some(c) if c < 0.0 => format!("down {:.1} points", -c),
                Some(_) => "unchanged".into(),
                None => String::new(),
            }
        );
    }
    for (title, groups, limit) in [
        ("Station", &r.by_station, 20),
        ("Site", &r.by_site, 20),
        ("Operator", &r.by_operator, 20),
        ("Device", &r.by_device, 20),
        ("Plate (most rejected first)", &r.by_plate, 15),
        ("ISO week", &r.by_week, 60),
        ("Day", &r.by_day, 31),
    ] {
        let _ = writeln!(
            s,
            "\n{title:<28} {:>7} {:>8} {:>7} {:>13} {:>8} {:>10}  level",
            "images", "rejected", "rate", "95% CI", "reviewed", "overturned"
        );
        let skip = if title == "Day" || title == "ISO week" {
            groups.len().saturating_sub(limit)
        } else {
            0
        };
        for g in groups.iter().skip(skip).take(limit) {
            let _ = writeln!(
                s,
                "  {:<26} {:>7} {:>8} {:>6.1}% {:>13} {:>8} {:>10}  {}",
                printable(&g.key),
                g.images,
                g.rejected,
                g.reject_pct,
                format!("{:.1}-{:.1}%", g.ci_low_pct, g.ci_high_pct),
                g.overridden,
                g.overturned,
                level_words(g.level)
            );
        }
        if groups.len() > limit {
            let _ = writeln!(
                s,
                "  ... {} more (--format csv or json lists all)",
                groups.len() - limit
            );
        }
    }
    s
}

fn level_words(l: Level) -> &'static str {
    match l {
        Level::TooFew => "too few images to judge",
        Level::Within => "within levels",
        Level::InvestigateHigh => "INVESTIGATE: above the upper level",
        Level::InvestigateLow => "INVESTIGATE: below the lower level",
    }
}

pub(super) fn describe_filter(f: &Filter) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("since", &f.since),
        ("until", &f.until),
        ("site", &f.site),
        ("station", &f.station),
        ("operator", &f.operator),
        ("device", &f.device),
        ("plate", &f.plate),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {}", printable(v)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Text that came from outside (DICOM headers, file names) as it may be shown on a terminal or
/// in a file: control characters (escape sequences, carriage returns, bells) dropped.
pub fn printable(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// One CSV field: printable, neutralised when a spreadsheet would read it as a formula (a
/// leading `=`, `+`, `-` or `@` gets a `'`), quoted when it needs to be.
pub fn csv_field(v: &str) -> String {
    let mut v = printable(v);
    if v.starts_with(['=', '+', '-', '@']) {
        v.insert(0, '\'');
    }
    if v.contains([',', '"']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// The report as one CSV table: `section,key,detail,images,rejected,reject_pct,overridden,
/// overturned` (see docs/reports.md for what each section puts in which column).
pub fn to_csv(r: &Report) -> String {
    let mut s = String::from(
        "section,key,detail,images,rejected,reject_pct,overridden,overturned,ci_low_pct,ci_high_pct,level\n",
    );
    let mut group = |section: &str, g: &Group| {
        let _ = writeln!(
            s,
            "{section},{},,{},{},{:.1},{},{},{:.1},{:.1},{}",
            csv_field(&g.key),
            g.images,
            g.rejected,
            g.reject_pct,
            g.overridden,
            g.overturned,
            g.ci_low_pct,
            g.ci_high_pct,
            g.level.as_str()
        );
    };
    group("total", &r.totals);
    for (section, gs) in [
        ("day", &r.by_day),
        ("week", &r.by_week),
        ("site", &r.by_site),
        ("station", &r.by_station),
        ("operator", &r.by_operator),
        ("device", &r.by_device),
        ("plate", &r.by_plate),
    ] {
        for g in gs {
            group(section, g);
        }
    }
    for w in &r.trend {
        let _ = writeln!(
            s,
            "trend,{},{},{},,{:.1},,,{:.1},{:.1},",
            csv_field(&w.iso_week),
            w.change_pct.map(|c| format!("{c:.1}")).unwrap_or_default(),
            w.images,
            w.reject_pct,
            w.ci_low_pct,
            w.ci_high_pct
        );
    }
    let _ = writeln!(s, "errors,,,{},,,,,,,", r.errors);
    let _ = writeln!(s, "without_overlays,,,{},,,,,,,", r.without_overlays);
    for x in &r.reasons {
        let _ = writeln!(
            s,
            "reason,{},{},,{},,,,,,",
            csv_field(&x.artifact_type),
            csv_field(&x.reason_code),
            x.rejected
        );
    }
    let _ = writeln!(
        s,
        "reason,(below threshold),,,{},,,,,,",
        r.rejected_without_type
    );
    for x in &r.reason_codes {
        let _ = writeln!(
            s,
            "reason_code,{},{},,{},,,,,,",
            csv_field(&x.reason_code),
            csv_field(&x.meaning),
            x.rejected
        );
    }
    for w in &r.plates_to_replace {
        let _ = writeln!(
            s,
            "replace_plate,{},{},{},{},,,,,,",
            csv_field(&w.plate_identifier),
            csv_field(&w.artifact_type),
            w.recent_scans,
            w.hits
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13, item 7: DICOM strings reach spreadsheets and terminals.
    #[test]
    fn csv_cells_cannot_be_formulas_and_escape_codes_are_dropped() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\t=1"), "'=1");
        assert_eq!(csv_field("\r=1"), "'=1");
        assert_eq!(csv_field("ROOM 1"), "ROOM 1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(
            printable("ST\u{1b}[2J\u{1b}]0;pwned\u{7}ATION"),
            "ST[2J]0;pwnedATION"
        );
    }
}
