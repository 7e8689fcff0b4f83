//! How a run feeds the model: RGB bytes to a model that normalises in its graph,
//! IoBinding, and the choice of JPEG decoder — as a user's `labelflow run` sees them.

use std::path::Path;

use super::common::*;

/// The rows of a run over the fixture photos, by key.
fn rows_of(out: &Path) -> Vec<Pred> {
    let mut rows = preds(&read_parts(out));
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    assert!(rows.len() >= 9, "{} rows", rows.len());
    rows
}

fn assert_same_predictions(a: &[Pred], b: &[Pred], what: &str) {
    assert_close_predictions(a, b, 0.0, what);
}

/// The same rows, scores within `tolerance`.
fn assert_close_predictions(a: &[Pred], b: &[Pred], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: row counts");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.key, y.key, "{what}");
        assert_eq!(x.error, y.error, "{what}: {}", x.key);
        assert_eq!(x.label, y.label, "{what}: {}", x.key);
        let classes = |p: &Pred| p.top_k.iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(classes(x), classes(y), "{what}: {}", x.key);
        for (s, t) in x.top_k.iter().zip(&y.top_k) {
            assert!(
                (s.2 - t.2).abs() <= tolerance,
                "{what}: {}: {} vs {}",
                x.key,
                s.2,
                t.2
            );
        }
    }
}

/// The uint8 model the tests use and its float-input copy label every photo alike:
/// the same classes in the same order, scores within float rounding (the graph centres
/// the pixels and folds 1/std into the first convolution, the CPU path normalises).
#[test]
fn a_uint8_model_and_its_float_copy_write_the_same_rows() {
    let (bytes_out, float_out) = (scratch("feed-u8"), scratch("feed-f32"));
    RunCmd::new(data("photos"), &bytes_out).ok();
    RunCmd::new(data("photos"), &float_out)
        .model(float_input_copy(&small_model()))
        .ok();
    assert_close_predictions(
        &rows_of(&bytes_out),
        &rows_of(&float_out),
        1e-5,
        "uint8 vs float32",
    );
}

/// IoBinding (buffers allocated once, each batch copied in) changes nothing a run
/// writes; tta flip exercises a batch of views.
#[test]
fn io_binding_writes_the_same_rows() {
    for tta in ["none", "flip"] {
        let (plain, bound) = (
            scratch(&format!("feed-plain-{tta}")),
            scratch(&format!("feed-bound-{tta}")),
        );
        RunCmd::new(data("photos"), &plain)
            .args(["--io-binding", "off", "--tta", tta])
            .ok();
        RunCmd::new(data("photos"), &bound)
            .args(["--io-binding", "on", "--tta", tta])
            .ok();
        assert_same_predictions(&rows_of(&plain), &rows_of(&bound), tta);
    }
}

/// `--decode gpu` where there is no GPU decoder (no CUDA device here, or a build
/// without the feature) stops before labelling, saying why and what to pass; `auto`
/// decodes on the CPU and labels as usual.
#[test]
fn gpu_decoding_that_cannot_run_says_why_and_auto_falls_back() {
    let out = scratch("feed-gpu");
    let o = RunCmd::new(data("photos"), &out)
        .args(["--decode", "gpu"])
        .output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("GPU JPEG decoder"), "{err}");
    assert!(
        err.contains("--device cuda") || err.contains("--features nvjpeg"),
        "{err}"
    );
    assert!(err.contains("--decode cpu"), "{err}");
    assert!(read_parts(&out).is_empty(), "no part may be written");

    let auto = scratch("feed-auto");
    RunCmd::new(data("photos"), &auto)
        .args(["--decode", "auto"])
        .ok();
    let cpu = scratch("feed-cpu");
    RunCmd::new(data("photos"), &cpu).ok();
    assert_same_predictions(&rows_of(&auto), &rows_of(&cpu), "auto on a CPU host");
}

/// Half precision and embeddings do not go together; the error names the flags.
#[test]
fn fp16_with_embeddings_is_refused_by_flag() {
    let o = RunCmd::new(data("photos"), scratch("feed-fp16-emb"))
        .args(["--precision", "fp16", "--embeddings"])
        .output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--precision fp32") && err.contains("--embeddings"),
        "{err}"
    );
}

/// `--precision fp16` on CPU labels with a half-precision copy of the model: the
/// scores stay within half precision's rounding of the float run's.
#[test]
fn fp16_scores_stay_within_half_precision_of_fp32() {
    let (full, half) = (scratch("feed-fp32"), scratch("feed-fp16"));
    RunCmd::new(data("photos"), &full).ok();
    RunCmd::new(data("photos"), &half)
        .args(["--precision", "fp16"])
        .ok();
    let (a, b) = (rows_of(&full), rows_of(&half));
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.key, y.key);
        let scores = |p: &Pred| -> std::collections::BTreeMap<i32, f32> {
            p.top_k.iter().map(|(_, i, s)| (*i, *s)).collect()
        };
        let (sx, sy) = (scores(x), scores(y));
        for (class, s) in &sx {
            if let Some(t) = sy.get(class) {
                worst = worst.max((s - t).abs());
            }
        }
    }
    eprintln!(
        "fp16 vs fp32: largest score difference {worst:e} over {} photos",
        a.len()
    );
    assert!(worst <= 5e-3, "fp16 scores differ by {worst}");
}

/// `labelflow bench --peers`: Daft and Ray Data label the bench's own end-to-end folder
/// with the same model, every image, and the table gives labelflow ÷ each.
#[test]
fn bench_runs_the_peers_on_the_same_images_and_model() {
    let Some(python) = require(
        "Daft and Ray Data (LABELFLOW_PEERS_PYTHON)",
        std::env::var("LABELFLOW_PEERS_PYTHON")
            .ok()
            .filter(|p| !p.trim().is_empty()),
        "scripts/setup-peers.sh installs them and prints the variable; scripts/test.sh sets it",
    ) else {
        return;
    };
    let o = labelflow()
        .args([
            "bench",
            "--no-progress",
            "--peers",
            "--peers-python",
            &python,
        ])
        .args(["--images", "24", "--stage-images", "8", "--batch-size", "8"])
        .arg("--model")
        .arg(small_model())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{table}{}", stderr(&o));
    for peer in ["Daft 0.7.26", "Ray Data 2.60.0"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{peer} end-to-end (24 images)")))
            .unwrap_or_else(|| panic!("no {peer} row in:\n{table}"));
        let after = &row[row.find("images)").unwrap() + "images)".len()..];
        let images: usize = after.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(images, 24, "{row}");
        assert!(
            table
                .lines()
                .any(|l| l.trim_start().starts_with(peer) && !l.contains("end-to-end")),
            "no ratio for {peer}:\n{table}"
        );
    }
    assert!(table.contains("+ model load"), "{table}");
}
