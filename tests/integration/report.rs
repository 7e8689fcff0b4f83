//! `labelflow report` end to end: two real runs over the fixture photos and odd files
//! (so there are error rows), a training folder, the page written by the binary, then
//! loaded in headless Chromium: no console message, a screenshot that is not blank, and
//! the charts and thumbnails in the browser's DOM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};

use super::common::*;

/// The browser: `$LABELFLOW_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LABELFLOW_CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Run `cmd`, killing it after `limit`; stdout and stderr are collected.
fn run_with_limit(cmd: &mut Command, limit: Duration) -> Output {
    let started = Instant::now();
    let shown = format!("{cmd:?}");
    run_polling(cmd, Duration::from_millis(50), |child| {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("{shown} took longer than {limit:?}");
        }
    })
}

/// Headless Chromium over `page` with `args` added; its console messages land on
/// stderr as `…:CONSOLE…` lines.
fn browse(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> Output {
    let o = run_with_limit(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(120),
    );
    assert!(
        o.status.success(),
        "chromium failed on {}: {}",
        page.display(),
        stderr(&o)
    );
    o
}

/// What the page said on the browser's console (errors, refused loads, CSP reports).
fn console_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect()
}

/// The part of `html` from `<section id="{id}">` to its `</section>`.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = html[start..].find("</section>").unwrap() + start;
    &html[start..end]
}

/// Every value of a `src=` or `href=` attribute in `html`.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=", "href="] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let value = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or(""),
                _ => rest.split([' ', '>']).next().unwrap_or(""),
            };
            out.push(value.to_string());
        }
    }
    out
}

/// A training folder as `labelflow train` leaves it: metrics.parquet and card.json.
fn training_folder(dir: &Path) {
    let epochs = 6u32;
    let curve = |start: f64, end: f64| -> Arc<Float64Array> {
        Arc::new(Float64Array::from_iter_values((0..epochs).map(|e| {
            start + (end - start) * f64::from(e) / f64::from(epochs - 1)
        })))
    };
    let f64s = |name: &str| Field::new(name, DataType::Float64, false);
    let schema = Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::UInt32, false),
        f64s("lr"),
        f64s("train_loss"),
        f64s("train_top1"),
        f64s("train_top5"),
        f64s("val_loss"),
        f64s("val_top1"),
        f64s("val_top5"),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(UInt32Array::from_iter_values(1..=epochs)),
            curve(0.01, 0.001),
            curve(2.3, 0.4),
            curve(0.1, 0.9),
            curve(0.5, 1.0),
            curve(2.3, 0.7),
            curve(0.1, 0.8),
            curve(0.5, 0.97),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let file = std::fs::File::create(dir.join("metrics.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    std::fs::write(
        dir.join("card.json"),
        r#"{"model":"model.onnx","architecture":"alexnet","width":0.25,"mode":"scratch",
            "classes":["cat","dog","<b>owl</b>"],"epochs":6,"optimizer":"sgd",
            "final_metrics":{"val_top1":0.8}}"#,
    )
    .unwrap();
}

/// The one number `sql` gives over the dataset at `data` (`labelflow query`).
fn query_count(data: &Path, sql: &str) -> usize {
    let o = run_cli(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "csv",
        sql,
    ]);
    assert!(o.status.success(), "query {sql}: {}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let value = text.lines().nth(1).unwrap_or_default();
    value
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("query {sql} gave {text:?}: {e}"))
}

/// Label `input` into `out` with the small model; returns the exit code.
fn label(input: &Path, out: &Path, extra: &[&str]) -> i32 {
    let o = RunCmd::new(input, out).batch(8).args(extra).output();
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "run failed: {}",
        stderr(&o)
    );
    o.status.code().unwrap()
}

#[test]
fn report_is_a_self_contained_page_that_chromium_renders() {
    let input = mixed_input("report-in");
    let preds = scratch("report-preds");
    // Run 1: photos and odd files (some fail); run 2: the photos again (unchanged, so
    // only --relabel-all labels them a second time).
    assert_eq!(label(&input, &preds, &[]), 1, "run 1 has error rows");
    assert_eq!(
        label(
            &input,
            &preds,
            &["--new-run", "--relabel-all", "--exclude", "odd/**"]
        ),
        0
    );
    // A labelled image gone from the store since: its thumbnail becomes a placeholder.
    std::fs::remove_file(input.join("photos/rocket.jpg")).unwrap();
    let model_dir = scratch("report-model");
    training_folder(&model_dir);

    let page = scratch("report-page").join("report.html");
    let o = run_cli(&[
        "report",
        "--data",
        preds.to_str().unwrap(),
        "--model-dir",
        model_dir.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
        "--lowest",
        "100",
    ]);
    assert!(o.status.success(), "report failed: {}", stderr(&o));
    assert!(stderr(&o).contains("wrote"), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained: nothing is loaded from anywhere, nothing runs.
    assert!(!html.to_ascii_lowercase().contains("<script"));
    let links = links(&html);
    assert!(!links.is_empty());
    for l in &links {
        assert!(
            l.starts_with("data:image/") || l.starts_with('#'),
            "the page links outside itself: {l:.80}"
        );
    }
    for id in [
        "summary",
        "classes",
        "confidence",
        "runs",
        "lowest",
        "failed",
        "errors",
        "training",
    ] {
        section(&html, id);
    }
    let bad = odd_expectations().iter().filter(|e| !e.1).count();
    assert!(bad > 0);
    let errors = section(&html, "errors");
    assert_eq!(errors.matches("<tr><td>").count(), bad, "{errors}");
    assert!(errors.contains(&format!("{bad} of {bad} failed images")));
    let runs = section(&html, "runs");
    let run_ids: Vec<String> = std::fs::read_dir(&preds)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("run_id=").map(str::to_string)
        })
        .collect();
    assert_eq!(run_ids.len(), 2);
    for id in &run_ids {
        assert!(runs.contains(id.as_str()), "run {id} not in the runs table");
    }
    let lowest = section(&html, "lowest");
    assert!(lowest.contains("no picture: not found in the store"));
    assert!(lowest.contains("rocket.jpg"));
    let failed = section(&html, "failed");
    assert!(failed.contains("class=\"placeholder\""), "{failed}");
    assert!(
        failed.contains("<figcaption>JPEG decode failed"),
        "{failed}"
    );
    // The card's strings are escaped.
    assert!(html.contains("&lt;b&gt;owl&lt;/b&gt;") && !html.contains("<b>owl"));

    let Some(chromium) = require(
        "Chromium (LABELFLOW_CHROMIUM, or chromium on PATH)",
        chromium(),
        "Debian: apt-get install --no-install-recommends chromium (scripts/test.sh installs it)",
    ) else {
        return;
    };
    let profile = tempfile::tempdir().unwrap();

    // The console check can fail: the report's own head, with a forbidden image, is
    // refused and reported on the console.
    let head_end = html.find("</head>").unwrap();
    let control = page.with_file_name("control.html");
    std::fs::write(
        &control,
        format!(
            "{}</head><body><img src=\"https://example.invalid/x.png\"></body></html>",
            &html[..head_end]
        ),
    )
    .unwrap();
    let o = browse(&chromium, profile.path(), &control, &["--dump-dom"]);
    assert!(
        console_lines(&o)
            .iter()
            .any(|l| l.contains("example.invalid")),
        "a refused image does not show on the console: {}",
        stderr(&o)
    );

    // The DOM as Chromium built it, with no console message on the way.
    let o = browse(&chromium, profile.path(), &page, &["--dump-dom"]);
    assert_eq!(console_lines(&o), Vec::<String>::new(), "console messages");
    let dom = String::from_utf8(o.stdout).unwrap();
    // One bar per label (at most 30), one per score bin, and in the runs chart one per
    // run for each of the (at most 12) most frequent labels.
    let labels = query_count(
        &preds,
        "SELECT count(DISTINCT label) FROM latest WHERE error IS NULL AND label IS NOT NULL",
    );
    let run_labels = query_count(
        &preds,
        "SELECT count(DISTINCT label) FROM predictions WHERE error IS NULL AND label IS NOT NULL",
    );
    assert!(labels > 0 && run_labels >= labels, "{labels} {run_labels}");
    let bars = |id: &str| section(&dom, id).matches("<rect class=\"bar\"").count();
    assert_eq!(bars("classes"), labels.min(30));
    assert_eq!(bars("confidence"), 20);
    assert_eq!(bars("runs"), run_ids.len() * run_labels.min(12));
    assert_eq!(section(&dom, "training").matches("<polyline").count(), 6);
    let pictures = section(&dom, "lowest")
        .matches("<img src=\"data:image/jpeg;base64,")
        .count();
    assert!(pictures >= 5, "{pictures} thumbnails in the DOM");

    // The screenshot: the page drew something, in many colours (charts, photos).
    let shot = page.with_file_name("report.png");
    let o = browse(
        &chromium,
        profile.path(),
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
        ],
    );
    assert_eq!(console_lines(&o), Vec::<String>::new(), "console messages");
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1280, 2000));
    let total = img.pixels().count();
    let white = img
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c >= 250))
        .count();
    let non_white = 1.0 - white as f64 / total as f64;
    assert!(
        (0.05..0.95).contains(&non_white),
        "screenshot is {:.1}% non-white",
        non_white * 100.0
    );
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 1000,
        "only {} colours in the screenshot",
        colours.len()
    );
}

#[test]
fn report_names_what_is_missing() {
    let empty = scratch("report-empty");
    let o = run_cli(&["report", "--data", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is empty"), "{}", stderr(&o));

    let preds = scratch("report-missing-preds");
    let no_metrics = scratch("report-no-metrics");
    let o = run_cli(&[
        "report",
        "--data",
        preds.to_str().unwrap(),
        "--model-dir",
        no_metrics.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("metrics.parquet is missing"),
        "{}",
        stderr(&o)
    );
}
