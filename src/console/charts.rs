//! The statistics page's charts as inline SVG, drawn on the server: no chart library to
//! bundle and nothing for the browser to fetch.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::store::DayCount;

/// Colours of the categories, in order of first appearance.
const PALETTE: [&str; 8] = [
    "#2f6fb3", "#e07b24", "#3a9d5d", "#c23b3b", "#7d5bb5", "#8c6d31", "#d45fa0", "#5f7f8f",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars, one per step of the funnel, with their counts.
pub fn funnel(steps: &[(&str, u64)]) -> String {
    let max = steps.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1) as f64;
    let (width, row) = (520.0, 34.0);
    let mut svg = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {}" role="img">"#,
        row * steps.len() as f64 + 8.0
    );
    for (i, (name, count)) in steps.iter().enumerate() {
        let y = 4.0 + i as f64 * row;
        let bar = (width - 200.0) * (*count as f64) / max;
        let _ = write!(
            svg,
            r#"<text x="0" y="{ty}" class="label">{name}</text><rect x="110" y="{y}" width="{bar:.1}" height="{h}" fill="{fill}"/><text x="{tx:.1}" y="{ty}" class="value">{count}</text>"#,
            ty = y + row * 0.6,
            h = row - 10.0,
            fill = PALETTE[i % PALETTE.len()],
            tx = 116.0 + bar,
            name = escape(name),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Cases filed per local day, stacked by category, with a legend.
pub fn days(counts: &[DayCount]) -> String {
    let mut by_day: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    let mut categories: Vec<(&str, &str)> = Vec::new();
    for c in counts {
        by_day
            .entry(c.day.as_str())
            .or_default()
            .push((c.category_code.as_str(), c.filed));
        if !categories.iter().any(|(code, _)| *code == c.category_code) {
            categories.push((&c.category_code, &c.category_name));
        }
    }
    let (width, height, left, bottom) = (640.0, 220.0, 36.0, 24.0);
    let mut svg = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {}" role="img">"#,
        height + 24.0 * categories.len().div_ceil(3) as f64
    );
    if by_day.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{left}" y="40" class="label">–</text></svg>"#
        );
        return svg;
    }
    let max = by_day
        .values()
        .map(|v| v.iter().map(|(_, n)| n).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let slot = (width - left) / by_day.len() as f64;
    let plot = height - bottom - 8.0;
    let colour = |code: &str| {
        let i = categories.iter().position(|(c, _)| *c == code).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    let _ = write!(
        svg,
        r##"<text x="0" y="14" class="value">{}</text><line x1="{left}" y1="{base}" x2="{width}" y2="{base}" stroke="#999"/>"##,
        max as u64,
        base = plot + 8.0,
    );
    let label_every = (by_day.len() / 10).max(1);
    for (i, (day, parts)) in by_day.iter().enumerate() {
        // Bars no wider than 48 px, centred in their day's slot.
        let bar = (slot * 0.7).min(48.0);
        let x = left + i as f64 * slot + (slot - bar) / 2.0;
        let mut top = plot + 8.0;
        for (code, n) in parts {
            let h = plot * (*n as f64) / max;
            top -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"><title>{day} {code}: {n}</title></rect>"#,
                w = bar,
                fill = colour(code),
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{y}" class="axis">{}</text>"#,
                &day[5..],
                y = height - 6.0,
            );
        }
    }
    for (i, (code, name)) in categories.iter().enumerate() {
        let (x, y) = (
            left + (i % 3) as f64 * 200.0,
            height + 16.0 + (i / 3) as f64 * 24.0,
        );
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{ry}" width="12" height="12" fill="{fill}"/><text x="{tx}" y="{y}" class="label">{code} {name}</text>"#,
            ry = y - 11.0,
            tx = x + 16.0,
            fill = colour(code),
            name = escape(name),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_names_and_scale_to_the_largest_count() {
        let svg = funnel(&[("<found>", 10), ("filed", 5)]);
        assert!(svg.contains("&lt;found&gt;") && !svg.contains("<found>"));
        assert!(svg.contains(r#"width="320.0""#), "{svg}");
        assert!(svg.contains(r#"width="160.0""#), "{svg}");
        let day = |d: &str, code: &str, filed| DayCount {
            day: d.into(),
            category_code: code.into(),
            category_name: "机动车乱停放".into(),
            found: filed,
            filed,
            closed: 0,
        };
        let svg = days(&[
            day("2026-12-01", "0505", 2),
            day("2026-12-01", "0102", 1),
            day("2026-12-02", "0505", 3),
        ]);
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("12-02") && svg.contains("机动车乱停放"));
    }
}
