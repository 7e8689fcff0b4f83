//! The page: one HTML document with its style inline, charts as inline SVG and pictures
//! as `data:` URIs. Its Content-Security-Policy forbids loading anything, so a browser
//! shows exactly what the file holds. Every string from the data (labels, URIs, errors,
//! run ids, card fields) goes through [`escape`].

use std::collections::BTreeMap;
use std::fmt::Write;

use super::contents::Report;
use super::dataset::{DatasetStats, SCORE_BINS};
pub use super::markup::escape;
use super::svg::{self, count, Bar, Series};
use super::thumbnails::Thumbnail;
use super::training::Training;

/// The end of a long URI (the file name is the informative part).
fn tail(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        text.to_string()
    } else {
        let mut s = String::from("…");
        s.extend(text.chars().skip(n - (max - 1)));
        s
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_string()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

fn score(s: Option<f64>) -> String {
    match s {
        Some(s) if s.is_finite() => format!("{s:.3}"),
        _ => "–".to_string(),
    }
}

const STYLE: &str = r#"
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6475; --line: #d9dde5; --card: #f5f7fa; --accent: #0072b2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: #fff; }
header, main, footer { max-width: 1120px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid var(--line); }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
.meta, .note-text { color: var(--muted); }
.meta code, td code { word-break: break-all; }
nav { margin: 8px 0 12px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin: 16px 0; }
.card { background: var(--card); border-radius: 6px; padding: 10px 12px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .name { color: var(--muted); font-size: 13px; }
svg.chart { max-width: 100%; height: auto; display: block; margin: 8px 0; }
svg .label, svg .note, svg .tick, svg .legend, svg .axis-label, svg .empty { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: var(--ink); }
svg .tick, svg .note { fill: var(--muted); }
svg .small { font-size: 9px; }
svg .axis { stroke: #7a8294; stroke-width: 1; }
svg .grid { stroke: #eceef2; stroke-width: 1; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--card); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; margin: 12px 0; }
figure.thumb { margin: 0; padding: 8px; background: var(--card); border-radius: 6px; }
figure.thumb img { display: block; max-width: 128px; max-height: 128px; margin: 0 auto; }
.placeholder { width: 128px; height: 128px; margin: 0 auto; padding: 8px; border: 2px dashed #c3c9d4; color: var(--muted); font-size: 11px; overflow: hidden; overflow-wrap: anywhere; }
figcaption { font-size: 12px; margin-top: 6px; overflow-wrap: anywhere; }
figcaption .uri { display: block; color: var(--muted); }
dl.card-facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; }
dl.card-facts dt { color: var(--muted); }
dl.card-facts dd { margin: 0; overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 12px; margin: 32px auto 24px; border-top: 1px solid var(--line); padding-top: 8px; }
"#;

/// The whole page.
pub fn render(report: &Report) -> String {
    let s = &report.stats;
    let mut page = String::with_capacity(64 * 1024);
    let title = format!("labelflow report: {}", report.source);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(&title)
    );
    let _ = write!(
        page,
        "<header><h1>labelflow report</h1><p class=\"meta\">Predictions at <code>{}</code>, \
         generated {}.</p><nav>",
        escape(&report.source),
        escape(&report.generated_at)
    );
    let mut sections = vec![
        ("summary", "Summary"),
        ("classes", "Classes"),
        ("confidence", "Confidence"),
        ("runs", "Runs"),
        ("lowest", "Lowest confidence"),
        ("failed", "Failed images"),
        ("errors", "Errors"),
    ];
    if report.training.is_some() {
        sections.push(("training", "Training"));
    }
    for (id, name) in &sections {
        let _ = write!(page, "<a href=\"#{id}\">{name}</a>");
    }
    page.push_str("</nav></header>\n<main>\n");
    summary(&mut page, s);
    classes(&mut page, s);
    confidence(&mut page, s);
    runs(&mut page, s);
    thumbs(
        &mut page,
        "lowest",
        "Lowest-confidence images",
        &report.lowest,
        "No labelled images.",
    );
    thumbs(
        &mut page,
        "failed",
        "Failed images",
        &report.failed,
        "No image failed.",
    );
    errors(&mut page, report);
    if let Some(t) = &report.training {
        training(&mut page, t);
    }
    let _ = write!(
        page,
        "</main>\n<footer>Made by <code>labelflow report</code>. Counts, classes, \
         confidence, thumbnails and errors are over <code>latest</code> (the newest row per \
         image); the runs table is over every run's rows.</footer>\n</body></html>\n"
    );
    page
}

fn section(page: &mut String, id: &str, title: &str) {
    let _ = write!(page, "<section id=\"{id}\"><h2>{}</h2>", escape(title));
}

fn summary(page: &mut String, s: &DatasetStats) {
    section(page, "summary", "Summary");
    let t = &s.totals;
    let labelled = t.images.saturating_sub(t.errors);
    let cards = [
        ("images", count(t.images)),
        ("labelled", count(labelled)),
        (
            "failed",
            format!("{} ({})", count(t.errors), percent(t.errors, t.images)),
        ),
        ("mean score", score(t.mean_score)),
        ("classes seen", count(t.classes)),
        ("runs", count(s.runs_total)),
    ];
    page.push_str("<div class=\"cards\">");
    for (name, value) in cards {
        let _ = write!(
            page,
            "<div class=\"card\"><div class=\"value\">{}</div><div class=\"name\">{}</div></div>",
            escape(&value),
            escape(name)
        );
    }
    page.push_str("</div>");
    if t.images == 0 {
        page.push_str("<p class=\"note-text\">The dataset has no rows.</p>");
    }
    page.push_str("</section>\n");
}

fn classes(page: &mut String, s: &DatasetStats) {
    section(page, "classes", "Classes");
    let labelled = s.totals.images.saturating_sub(s.totals.errors);
    let mut rows: Vec<Bar> = s
        .classes
        .iter()
        .map(|(label, n)| Bar {
            label: label.clone(),
            value: *n as f64,
            note: format!("{} ({})", count(*n), percent(*n, labelled)),
        })
        .collect();
    let shown: u64 = s.classes.iter().map(|c| c.1).sum();
    let hidden_classes = s.totals.classes.saturating_sub(s.classes.len() as u64);
    if hidden_classes > 0 {
        let rest = labelled.saturating_sub(shown);
        rows.push(Bar {
            label: format!("{} other classes", count(hidden_classes)),
            value: 0.0,
            note: format!("{} ({})", count(rest), percent(rest, labelled)),
        });
    }
    let _ = write!(
        page,
        "<p class=\"note-text\">Images per predicted label (top-1), most frequent first.</p>{}",
        svg::bars("images per label", &rows)
    );
    page.push_str("</section>\n");
}

fn confidence(page: &mut String, s: &DatasetStats) {
    section(page, "confidence", "Confidence");
    let _ = write!(
        page,
        "<p class=\"note-text\">Top-1 score of each labelled image, in {SCORE_BINS} bins from 0 to 1.</p>{}",
        svg::histogram("score distribution", &s.score_bins, 0.0, 1.0, "top-1 score")
    );
    page.push_str("</section>\n");
}

/// Labels drawn per run: the most frequent over the runs shown.
const RUN_LABELS: usize = 12;

fn runs(page: &mut String, s: &DatasetStats) {
    section(page, "runs", "Runs");
    if s.runs.is_empty() {
        page.push_str("<p class=\"note-text\">No runs.</p></section>\n");
        return;
    }
    if s.runs_total > s.runs.len() as u64 {
        let _ = write!(
            page,
            "<p class=\"note-text\">The newest {} of {} runs.</p>",
            s.runs.len(),
            count(s.runs_total)
        );
    }
    page.push_str("<div class=\"table-wrap\"><table class=\"runs\"><thead><tr><th></th>");
    for r in &s.runs {
        let _ = write!(page, "<th class=\"num\">{}</th>", escape(&r.run_id));
    }
    page.push_str("</tr></thead><tbody>");
    let mut row = |name: &str, cell: &dyn Fn(&super::dataset::RunStats) -> String| {
        let _ = write!(page, "<tr><th>{}</th>", escape(name));
        for r in &s.runs {
            let _ = write!(page, "<td class=\"num\">{}</td>", escape(&cell(r)));
        }
        page.push_str("</tr>");
    };
    row("rows", &|r| count(r.rows));
    row("errors", &|r| {
        format!("{} ({})", count(r.errors), percent(r.errors, r.rows))
    });
    row("mean score", &|r| score(r.mean_score));
    row("labels seen", &|r| count(r.labels.len() as u64));
    row("first labelled", &|r| {
        r.first_labelled.clone().unwrap_or_default()
    });
    row("last labelled", &|r| {
        r.last_labelled.clone().unwrap_or_default()
    });
    page.push_str("</tbody></table></div>");

    // The most frequent labels over the runs shown, as each run's share of its rows.
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &s.runs {
        for (label, n) in &r.labels {
            *totals.entry(label.as_str()).or_default() += n;
        }
    }
    let mut top: Vec<(&str, u64)> = totals.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(RUN_LABELS);
    let groups: Vec<String> = top.iter().map(|(l, _)| l.to_string()).collect();
    let series: Vec<Series> = s
        .runs
        .iter()
        .map(|r| {
            let labelled: u64 = r.labels.values().sum();
            Series {
                name: r.run_id.clone(),
                values: groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let n = r.labels.get(g).copied().unwrap_or(0);
                        let share = if labelled == 0 {
                            0.0
                        } else {
                            n as f64 / labelled as f64
                        };
                        (i as f64, share)
                    })
                    .collect(),
            }
        })
        .collect();
    let _ = write!(
        page,
        "<h3>Label distribution per run</h3><p class=\"note-text\">Share of each run's labelled \
         rows, for the {} most frequent labels.</p>{}",
        groups.len(),
        svg::grouped_bars("label share per run", &groups, &series)
    );
    page.push_str("</section>\n");
}

fn thumbs(page: &mut String, id: &str, title: &str, items: &[Thumbnail], none: &str) {
    section(page, id, title);
    if items.is_empty() {
        let _ = writeln!(
            page,
            "<p class=\"note-text\">{}</p></section>",
            escape(none)
        );
        return;
    }
    page.push_str("<div class=\"thumbs\">");
    for t in items {
        page.push_str("<figure class=\"thumb\">");
        match &t.image {
            Ok(data) if data.starts_with("data:image/") => {
                let _ = write!(
                    page,
                    "<img src=\"{}\" alt=\"{}\">",
                    escape(data),
                    escape(&t.uri)
                );
            }
            Ok(_) => page.push_str(
                "<div class=\"placeholder\" role=\"img\">no picture: not an inline image</div>",
            ),
            // A failed image's caption is already the reason it failed.
            Err(reason) if *reason == t.caption => {
                page.push_str("<div class=\"placeholder\" role=\"img\">no picture</div>")
            }
            Err(reason) => {
                let _ = write!(
                    page,
                    "<div class=\"placeholder\" role=\"img\" title=\"{r}\">no picture: {r}</div>",
                    r = escape(reason)
                );
            }
        }
        let _ = write!(
            page,
            "<figcaption>{}<span class=\"uri\" title=\"{}\">{}</span></figcaption></figure>",
            escape(&t.caption),
            escape(&t.uri),
            escape(&tail(&t.uri, 48)),
        );
    }
    page.push_str("</div></section>\n");
}

fn errors(page: &mut String, report: &Report) {
    let s = &report.stats;
    section(page, "errors", "Errors");
    if s.errors.is_empty() {
        page.push_str("<p class=\"note-text\">No image failed.</p></section>\n");
        return;
    }
    let total = s.totals.errors;
    let _ = write!(
        page,
        "<p class=\"note-text\">{} of {} failed images, by URI. All of them: \
         <code>labelflow query --data {} \"SELECT uri, error FROM latest WHERE error IS NOT NULL\"</code></p>",
        count(s.errors.len() as u64),
        count(total),
        escape(&report.source),
    );
    page.push_str(
        "<div class=\"table-wrap\"><table class=\"errors\"><thead><tr><th>uri</th><th>error</th></tr></thead><tbody>",
    );
    for (uri, error) in &s.errors {
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td>{}</td></tr>",
            escape(uri),
            escape(error)
        );
    }
    page.push_str("</tbody></table></div></section>\n");
}

fn training(page: &mut String, t: &Training) {
    section(page, "training", "Training");
    let _ = write!(
        page,
        "<p class=\"meta\">From <code>{}</code>.</p>",
        escape(&t.dir)
    );
    if !t.card.is_empty() {
        page.push_str("<h3>Model card</h3><dl class=\"card-facts\">");
        for (name, value) in &t.card {
            let _ = write!(page, "<dt>{}</dt><dd>{}</dd>", escape(name), escape(value));
        }
        page.push_str("</dl>");
    }
    if let Some(problem) = &t.card_problem {
        let _ = write!(page, "<p class=\"note-text\">{}</p>", escape(problem));
    }
    let curve = |name: &str, f: fn(&super::training::Epoch) -> Option<f64>, scale: f64| Series {
        name: name.to_string(),
        values: t
            .epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch, v * scale)))
            .collect(),
    };
    let keep = |series: Vec<Series>| -> Vec<Series> {
        series
            .into_iter()
            .filter(|s| !s.values.is_empty())
            .collect()
    };
    let loss = keep(vec![
        curve("train loss", |e| e.train_loss, 1.0),
        curve("validation loss", |e| e.val_loss, 1.0),
    ]);
    let accuracy = keep(vec![
        curve("train top-1", |e| e.train_top1, 100.0),
        curve("validation top-1", |e| e.val_top1, 100.0),
        curve("train top-5", |e| e.train_top5, 100.0),
        curve("validation top-5", |e| e.val_top5, 100.0),
    ]);
    let _ = write!(
        page,
        "<h3>Loss per epoch</h3>{}<h3>Accuracy per epoch</h3>{}",
        svg::lines("loss per epoch", &loss, "epoch", "loss"),
        svg::lines("accuracy per epoch", &accuracy, "epoch", "accuracy (%)"),
    );
    page.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::super::dataset::{RunStats, Totals};
    use super::super::training::Epoch;
    use super::*;

    #[test]
    fn escape_covers_markup_quotes_and_controls() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{0}b\tc"), "a\u{fffd}b\tc");
        assert_eq!(escape("ünïcødé 猫"), "ünïcødé 猫");
    }

    fn report(stats: DatasetStats) -> Report {
        Report {
            source: "s3://bucket/<preds>".into(),
            generated_at: "2024-01-01 00:00:00 UTC".into(),
            stats,
            lowest: Vec::new(),
            failed: Vec::new(),
            training: None,
        }
    }

    /// The page loads nothing and runs nothing, whatever the data says.
    fn assert_self_contained(page: &str) {
        for bad in [
            "<script",
            "src=\"http",
            "href=\"http",
            "src=\"//",
            "@import",
            "url(",
        ] {
            assert!(!page.contains(bad), "page contains {bad}");
        }
    }

    #[test]
    fn an_empty_dataset_renders_every_section_with_a_note() {
        let page = render(&report(DatasetStats {
            score_bins: vec![0; SCORE_BINS],
            ..DatasetStats::default()
        }));
        for id in [
            "summary",
            "classes",
            "confidence",
            "runs",
            "lowest",
            "failed",
            "errors",
        ] {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        assert!(!page.contains("id=\"training\""));
        assert!(page.contains("The dataset has no rows."));
        assert!(page.contains("no scores") && page.contains("no rows"));
        assert!(page.contains("s3://bucket/&lt;preds&gt;"));
        assert_self_contained(&page);
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    }

    #[test]
    fn data_from_the_bucket_is_escaped_everywhere() {
        let evil = "<img src=x onerror=alert(1)>";
        let mut labels = BTreeMap::new();
        labels.insert(evil.to_string(), 3);
        let stats = DatasetStats {
            totals: Totals {
                images: 4,
                errors: 1,
                mean_score: Some(0.5),
                classes: 1,
            },
            classes: vec![(evil.to_string(), 3)],
            score_bins: vec![1; SCORE_BINS],
            lowest: Vec::new(),
            errors: vec![(format!("s3://b/{evil}"), evil.to_string())],
            runs: vec![RunStats {
                run_id: evil.to_string(),
                rows: 4,
                errors: 1,
                mean_score: Some(0.5),
                first_labelled: Some(evil.to_string()),
                last_labelled: None,
                labels,
            }],
            runs_total: 1,
        };
        let mut r = report(stats);
        r.lowest = vec![Thumbnail {
            uri: format!("s3://b/{evil}"),
            caption: evil.to_string(),
            image: Ok("data:image/jpeg;base64,AAAA".into()),
        }];
        r.failed = vec![Thumbnail {
            uri: "s3://b/\"quoted\".jpg".into(),
            caption: evil.to_string(),
            image: Err(evil.to_string()),
        }];
        r.training = Some(Training {
            dir: evil.to_string(),
            epochs: vec![Epoch {
                epoch: 1.0,
                train_loss: Some(1.0),
                ..Epoch::default()
            }],
            card: vec![("model".into(), evil.to_string())],
            card_problem: None,
        });
        let page = render(&r);
        assert!(!page.contains(evil), "unescaped data in the page");
        assert!(!page.contains("\"quoted\""));
        assert_self_contained(&page);
        // One real picture: the thumbnail's data URI.
        assert_eq!(page.matches("<img ").count(), 1);
        assert!(page.contains("<img src=\"data:image/jpeg;base64,AAAA\""));
        assert!(page.contains("class=\"placeholder\""));
        assert!(page.contains("<section id=\"training\">") && page.contains("<polyline"));
        assert!(page.contains("1 of 1 failed images"));
    }

    #[test]
    fn classes_beyond_the_limit_are_summed() {
        let stats = DatasetStats {
            totals: Totals {
                images: 10,
                errors: 0,
                mean_score: Some(0.5),
                classes: 5,
            },
            classes: vec![("a".into(), 4), ("b".into(), 3)],
            score_bins: vec![0; SCORE_BINS],
            ..DatasetStats::default()
        };
        let page = render(&report(stats));
        assert!(page.contains("3 other classes"), "{page}");
        assert!(page.contains("3 (30.0%)"));
    }

    #[test]
    fn long_uris_keep_their_end() {
        assert_eq!(tail("abcdef", 10), "abcdef");
        assert_eq!(tail("s3://bucket/very/long/name.jpg", 9), "…name.jpg");
    }
}
