//! Charts as inline SVG: horizontal bars (class counts), a histogram (scores), grouped
//! bars (one series per run) and lines (training curves). Every string that reaches the
//! markup goes through [`escape`]; every number through [`num`], so a NaN never becomes
//! an attribute.

use std::fmt::Write;

use super::markup::escape;

/// Chart width in SVG units (the page scales it down on narrow screens).
const WIDTH: f64 = 720.0;
/// Longest label drawn beside a bar; longer ones are cut, the full text in a tooltip.
const LABEL_CHARS: usize = 30;

/// Series colours, colour-blind friendly (Okabe–Ito), used in turn.
pub const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];

/// The colour of series `i`.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A number for an attribute: one decimal, and 0 for anything not finite.
pub fn num(x: f64) -> String {
    if x.is_finite() {
        let s = format!("{x:.1}");
        match s.strip_suffix(".0") {
            Some(whole) if whole != "-0" => whole.to_string(),
            Some(_) => "0".to_string(),
            None => s,
        }
    } else {
        "0".to_string()
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// A count with thousands separators: 12345 → "12 345".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn open(height: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        w = num(WIDTH),
        h = num(height),
        t = escape(title),
    )
}

/// An SVG saying there is nothing to draw.
pub fn empty(title: &str, message: &str) -> String {
    let mut s = open(40.0, title);
    let _ = write!(
        s,
        r#"<text class="empty" x="8" y="25">{}</text></svg>"#,
        escape(message)
    );
    s
}

/// One bar of [`bars`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// Text after the bar (e.g. the count and its share).
    pub note: String,
}

/// Horizontal bars, one row each, longest bar the largest value.
pub fn bars(title: &str, rows: &[Bar]) -> String {
    if rows.is_empty() {
        return empty(title, "no rows");
    }
    let row_h = 20.0;
    let (left, right) = (210.0, 120.0);
    let span = WIDTH - left - right;
    let max = rows
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let mut s = open(row_h * rows.len() as f64 + 8.0, title);
    for (i, b) in rows.iter().enumerate() {
        let y = 4.0 + row_h * i as f64;
        let w = if max > 0.0 && b.value.is_finite() {
            (b.value / max * span).max(1.0)
        } else {
            0.0
        };
        let _ = write!(
            s,
            r#"<g><title>{full}: {note}</title><text class="label" x="{lx}" y="{ty}" text-anchor="end">{short}</text><rect class="bar" x="{left}" y="{ry}" width="{w}" height="{h}" fill="{c}"/><text class="note" x="{nx}" y="{ty}">{note}</text></g>"#,
            full = escape(&b.label),
            note = escape(&b.note),
            short = escape(&shorten(&b.label, LABEL_CHARS)),
            lx = num(left - 6.0),
            ty = num(y + 14.0),
            left = num(left),
            ry = num(y + 3.0),
            w = num(w),
            h = num(row_h - 6.0),
            c = colour(0),
            nx = num(left + w + 6.0),
        );
    }
    s.push_str("</svg>");
    s
}

/// A histogram of `counts` over equal bins spanning `lo..hi`, with the bin edges at
/// the quarters labelled.
pub fn histogram(title: &str, counts: &[u64], lo: f64, hi: f64, x_label: &str) -> String {
    let total: u64 = counts.iter().sum();
    if counts.is_empty() || total == 0 {
        return empty(title, "no scores");
    }
    let (left, right, top, bottom) = (50.0, 16.0, 12.0, 44.0);
    let plot_h = 180.0;
    let span = WIDTH - left - right;
    let bin_w = span / counts.len() as f64;
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut s = open(top + plot_h + bottom, title);
    let base = top + plot_h;
    // Axes and the y scale (0 and the tallest bin).
    let _ = write!(
        s,
        r#"<line class="axis" x1="{left}" y1="{base}" x2="{right_x}" y2="{base}"/><line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{base}"/><text class="tick" x="{tx}" y="{base}" text-anchor="end">0</text><text class="tick" x="{tx}" y="{ty}" text-anchor="end">{max}</text>"#,
        left = num(left),
        base = num(base),
        right_x = num(WIDTH - right),
        top = num(top),
        tx = num(left - 6.0),
        ty = num(top + 10.0),
        max = count(max as u64),
    );
    let width = hi - lo;
    for (i, &n) in counts.iter().enumerate() {
        let h = n as f64 / max * plot_h;
        let x = left + bin_w * i as f64;
        let from = lo + width * i as f64 / counts.len() as f64;
        let to = lo + width * (i + 1) as f64 / counts.len() as f64;
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x}" y="{y}" width="{w}" height="{h}" fill="{c}"><title>{from:.2}–{to:.2}: {n}</title></rect>"#,
            x = num(x + 1.0),
            y = num(base - h),
            w = num((bin_w - 2.0).max(1.0)),
            h = num(h),
            c = colour(0),
            n = count(n),
        );
    }
    for q in 0..=4 {
        let f = f64::from(q) / 4.0;
        let _ = write!(
            s,
            r#"<text class="tick" x="{x}" y="{y}" text-anchor="middle">{v}</text>"#,
            x = num(left + span * f),
            y = num(base + 16.0),
            v = format_value(lo + width * f),
        );
    }
    let _ = write!(
        s,
        r#"<text class="axis-label" x="{x}" y="{y}" text-anchor="middle">{t}</text></svg>"#,
        x = num(left + span / 2.0),
        y = num(base + 36.0),
        t = escape(x_label),
    );
    s
}

/// A tick value: few digits, no trailing zeros.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One series of [`grouped_bars`] or [`lines`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// Grouped bars: one value per group. Lines: `(x, y)` points, x ascending.
    pub values: Vec<(f64, f64)>,
}

fn legend(s: &mut String, series: &[Series], y: f64) {
    let mut x = 8.0;
    for (i, se) in series.iter().enumerate() {
        let name = shorten(&se.name, LABEL_CHARS);
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{ry}" width="12" height="12" fill="{c}"/><text class="legend" x="{tx}" y="{ty}">{n}</text>"#,
            x = num(x),
            ry = num(y),
            c = colour(i),
            tx = num(x + 16.0),
            ty = num(y + 11.0),
            n = escape(&name),
        );
        x += 36.0 + 7.5 * name.chars().count() as f64;
    }
}

/// Horizontal bars grouped by label: one bar per series in each group, the value a
/// share in 0..=1 (of that series' rows), drawn as a percentage.
pub fn grouped_bars(title: &str, groups: &[String], series: &[Series]) -> String {
    if groups.is_empty() || series.is_empty() {
        return empty(title, "no labelled rows");
    }
    let bar_h = 10.0;
    let group_h = bar_h * series.len() as f64 + 8.0;
    let (left, right, legend_h) = (210.0, 70.0, 24.0);
    let span = WIDTH - left - right;
    let max = series
        .iter()
        .flat_map(|se| se.values.iter().map(|v| v.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let mut s = open(legend_h + group_h * groups.len() as f64 + 4.0, title);
    legend(&mut s, series, 4.0);
    for (g, label) in groups.iter().enumerate() {
        let y0 = legend_h + group_h * g as f64;
        let _ = write!(
            s,
            r#"<text class="label" x="{x}" y="{y}" text-anchor="end"><title>{full}</title>{short}</text>"#,
            x = num(left - 6.0),
            y = num(y0 + group_h / 2.0 + 2.0),
            full = escape(label),
            short = escape(&shorten(label, LABEL_CHARS)),
        );
        for (i, se) in series.iter().enumerate() {
            let v = se.values.get(g).map(|p| p.1).unwrap_or(0.0);
            let v = if v.is_finite() { v } else { 0.0 };
            let w = if max > 0.0 { v / max * span } else { 0.0 };
            let y = y0 + 4.0 + bar_h * i as f64;
            let _ = write!(
                s,
                r#"<rect class="bar" x="{left}" y="{y}" width="{w}" height="{h}" fill="{c}"><title>{run}: {label} {pct:.1}%</title></rect><text class="note small" x="{nx}" y="{ny}">{pct:.1}%</text>"#,
                left = num(left),
                y = num(y),
                w = num(w),
                h = num(bar_h - 1.0),
                c = colour(i),
                run = escape(&se.name),
                label = escape(label),
                pct = v * 100.0,
                nx = num(left + w + 4.0),
                ny = num(y + bar_h - 1.5),
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Line chart of `series` (each a polyline with a dot per point), x and y axes scaled
/// to the data (y from 0 when every value is positive).
pub fn lines(title: &str, series: &[Series], x_label: &str, y_label: &str) -> String {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if points.is_empty() {
        return empty(title, "no values");
    }
    let (mut x_lo, mut x_hi) = min_max(points.iter().map(|p| p.0));
    let (mut y_lo, mut y_hi) = min_max(points.iter().map(|p| p.1));
    if y_lo > 0.0 {
        y_lo = 0.0;
    }
    if y_hi <= y_lo {
        y_hi = y_lo + 1.0;
    }
    if x_hi <= x_lo {
        x_lo -= 0.5;
        x_hi += 0.5;
    }
    let (left, right, top, bottom) = (56.0, 16.0, 30.0, 44.0);
    let plot_h = 200.0;
    let span = WIDTH - left - right;
    let sx = |x: f64| left + (x - x_lo) / (x_hi - x_lo) * span;
    let sy = |y: f64| top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h;
    let mut s = open(top + plot_h + bottom, title);
    legend(&mut s, series, 4.0);
    let base = top + plot_h;
    let _ = write!(
        s,
        r#"<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/><line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>"#,
        l = num(left),
        b = num(base),
        r = num(WIDTH - right),
        t = num(top),
    );
    for q in 0..=4 {
        let v = y_lo + (y_hi - y_lo) * f64::from(q) / 4.0;
        let _ = write!(
            s,
            r#"<line class="grid" x1="{l}" y1="{y}" x2="{r}" y2="{y}"/><text class="tick" x="{tx}" y="{ty}" text-anchor="end">{v}</text>"#,
            l = num(left),
            r = num(WIDTH - right),
            y = num(sy(v)),
            tx = num(left - 6.0),
            ty = num(sy(v) + 4.0),
            v = format_value(v),
        );
    }
    // x ticks: at most ~10, on whole numbers when the x values are (epochs).
    let step = ((x_hi - x_lo) / 10.0).ceil().max(1.0);
    let mut x = x_lo.ceil();
    while x <= x_hi + 1e-9 {
        let _ = write!(
            s,
            r#"<text class="tick" x="{px}" y="{py}" text-anchor="middle">{v}</text>"#,
            px = num(sx(x)),
            py = num(base + 16.0),
            v = format_value(x),
        );
        x += step;
    }
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = se
            .values
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{},{}", num(sx(x)), num(sy(y))))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="line" fill="none" stroke="{c}" stroke-width="2" points="{p}"><title>{n}</title></polyline>"#,
            c = colour(i),
            p = path.join(" "),
            n = escape(&se.name),
        );
        for &(x, y) in &pts {
            let _ = write!(
                s,
                r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{c}"><title>{n}: {xv} → {yv:.4}</title></circle>"#,
                cx = num(sx(x)),
                cy = num(sy(y)),
                c = colour(i),
                n = escape(&se.name),
                xv = format_value(x),
                yv = y,
            );
        }
    }
    let _ = write!(
        s,
        r#"<text class="axis-label" x="{x}" y="{y}" text-anchor="middle">{xl}</text><text class="axis-label" x="14" y="{my}" text-anchor="middle" transform="rotate(-90 14 {my})">{yl}</text></svg>"#,
        x = num(left + span / 2.0),
        y = num(base + 36.0),
        xl = escape(x_label),
        my = num(top + plot_h / 2.0),
        yl = escape(y_label),
    );
    s
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrences(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn numbers_in_attributes_are_finite_and_short() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(2.26), "2.3");
        assert_eq!(num(-0.01), "0");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(f64::INFINITY), "0");
        assert_eq!(count(1234567), "1\u{202f}234\u{202f}567");
        assert_eq!(count(999), "999");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(250.0), "250");
    }

    #[test]
    fn bar_labels_are_escaped_and_cut() {
        let rows = vec![
            Bar {
                label: "<script>alert(1)</script>".into(),
                value: 3.0,
                note: "3 & more".into(),
            },
            Bar {
                label: "x".repeat(100),
                value: 1.0,
                note: "1".into(),
            },
        ];
        let svg = bars("classes \"top\"", &rows);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("3 &amp; more"));
        assert!(svg.contains("classes &quot;top&quot;"));
        assert!(svg.contains(&format!("{}…", "x".repeat(LABEL_CHARS - 1))));
        assert_eq!(occurrences(&svg, "<rect"), 2);
        // The largest value spans the whole bar area, the other a third of it.
        assert!(svg.contains(r#"width="390""#), "{svg}");
        assert!(svg.contains(r#"width="130""#), "{svg}");
    }

    #[test]
    fn histogram_draws_one_bar_per_bin_scaled_to_the_tallest() {
        let svg = histogram("scores", &[0, 5, 10, 0], 0.0, 1.0, "score");
        assert_eq!(occurrences(&svg, "<rect"), 4);
        // Plot height 180: the tallest bin fills it, the half bin half of it.
        assert!(svg.contains(r#"height="180""#), "{svg}");
        assert!(svg.contains(r#"height="90""#), "{svg}");
        assert!(svg.contains("0.25–0.50: 5"), "{svg}");
        assert!(svg.contains(">0.5<") && svg.contains(">1<"), "{svg}");
    }

    #[test]
    fn empty_inputs_draw_a_message_not_a_chart() {
        for svg in [
            bars("t", &[]),
            histogram("t", &[0, 0], 0.0, 1.0, "x"),
            histogram("t", &[], 0.0, 1.0, "x"),
            grouped_bars("t", &[], &[]),
            lines("t", &[], "x", "y"),
            lines(
                "t",
                &[Series {
                    name: "nan".into(),
                    values: vec![(1.0, f64::NAN)],
                }],
                "x",
                "y",
            ),
        ] {
            assert!(svg.contains(r#"class="empty""#), "{svg}");
            assert!(
                !svg.contains("<rect") && !svg.contains("<polyline"),
                "{svg}"
            );
            assert!(svg.ends_with("</svg>"));
        }
    }

    #[test]
    fn lines_skip_values_that_are_not_finite() {
        let series = vec![
            Series {
                name: "train <loss>".into(),
                values: vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)],
            },
            Series {
                name: "val".into(),
                values: vec![(1.0, 2.5)],
            },
        ];
        let svg = lines("loss", &series, "epoch", "loss");
        assert_eq!(occurrences(&svg, "<polyline"), 2);
        assert_eq!(occurrences(&svg, "<circle"), 3);
        assert!(svg.contains("train &lt;loss&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn grouped_bars_have_one_bar_per_series_and_group() {
        let groups = vec!["cat".to_string(), "dog".to_string()];
        let series = vec![
            Series {
                name: "run-a".into(),
                values: vec![(0.0, 0.75), (1.0, 0.25)],
            },
            Series {
                name: "run-b".into(),
                values: vec![(0.0, 0.5)],
            },
        ];
        let svg = grouped_bars("labels per run", &groups, &series);
        // Two legend swatches plus four bars.
        assert_eq!(occurrences(&svg, "<rect"), 6);
        assert!(svg.contains("75.0%") && svg.contains("0.0%"), "{svg}");
    }
}
