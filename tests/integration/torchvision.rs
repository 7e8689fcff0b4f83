//! Parity with torchvision itself: torchvision's AlexNet (its own random initialisation,
//! seeded; offline) saved by `torch.save` in both layouts and exported by
//! `torch.onnx.export`, imported with `labelflow model import`, gives the same model from
//! every file, torchvision's logits on the same tensors, and torchvision's top-1 on the
//! fixture photos through its full evaluation transform (PIL resize, centre crop,
//! normalise). The torchvision side is tests/data/torchvision_parity.py, run with the
//! Python of scripts/setup-torchvision.sh (LABELFLOW_TORCHVISION_PYTHON).

use std::path::Path;

use super::common::*;

/// Largest |a − b| / max(|b|, 1e-2) over the logits: relative for logits of ordinary
/// size, and absolute to within 1e-2 × the tolerance near zero.
const LOGIT_TOLERANCE: f32 = 1e-4;
/// Relative tolerance of the top-1 probability per photo (a pixel or two of JPEG
/// decoding differs between libjpeg-turbo in Pillow and labelflow's decoder).
const SCORE_TOLERANCE: f32 = 2e-3;

fn torchvision_python() -> Option<String> {
    require(
        "Python with torch and torchvision (LABELFLOW_TORCHVISION_PYTHON)",
        std::env::var("LABELFLOW_TORCHVISION_PYTHON")
            .ok()
            .filter(|p| !p.trim().is_empty()),
        "scripts/setup-torchvision.sh installs them and prints the variable; scripts/test.sh sets it",
    )
}

fn import(source: &Path, out: &Path) {
    let o = labelflow()
        .args(["model", "import"])
        .arg(source)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "import {}: {}",
        source.display(),
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torchvision_alexnet_imports_with_torchvisions_logits_and_labels() {
    let Some(py) = torchvision_python() else {
        return;
    };
    let dir = scratch("torchvision-parity");
    let reference = dir.join("torchvision");
    let o = std::process::Command::new(&py)
        .arg(data("torchvision_parity.py"))
        .arg(&reference)
        .arg(data("photos"))
        // labelflow's own libtorch (the training build's) must not shadow torch's.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(o.status.success(), "torchvision_parity.py: {}", stderr(&o));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.join("photos.json")).unwrap())
            .unwrap();
    eprintln!(
        "torch {} / torchvision {}",
        meta["torch"].as_str().unwrap(),
        meta["torchvision"].as_str().unwrap()
    );

    // Every file torchvision wrote imports, and to one and the same model.
    let zip = dir.join("from-pth.onnx");
    import(&reference.join("alexnet.pth"), &zip);
    for (source, out) in [
        ("alexnet-legacy.pth", "from-legacy-pth.onnx"),
        ("alexnet.onnx", "from-torch-onnx.onnx"),
    ] {
        let out = dir.join(out);
        import(&reference.join(source), &out);
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&zip).unwrap(),
            "{source} imports to a different model than alexnet.pth"
        );
    }

    // The same tensors give torchvision's logits.
    let n = meta["batch"].as_u64().unwrap() as usize;
    let classes = meta["classes"].as_u64().unwrap() as usize;
    let want = read_f32(&reference.join("logits.f32"));
    assert_eq!(want.len(), n * classes);
    // The imported model takes RGB bytes; torchvision's tensors go to the same network
    // with a float input.
    let got = model_scores(
        &float_input_copy(&zip),
        read_f32(&reference.join("inputs.f32")),
        n,
    )
    .await;
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for (a, b) in got.iter().zip(&want) {
        worst = worst.max((a - b).abs() / b.abs().max(1e-2));
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "logits: largest |torchvision| {scale:.4}, largest difference {worst:.2e} (relative)"
    );
    assert!(
        worst <= LOGIT_TOLERANCE,
        "labelflow's logits differ from torchvision's by {worst:e} (relative), more than {LOGIT_TOLERANCE:e}"
    );

    // The fixture photos: torchvision's evaluation transform and labelflow's run agree on
    // the label and its score.
    let preds_dir = dir.join("preds");
    RunCmd::new(data("photos"), &preds_dir).model(&zip).ok();
    let names: Vec<&str> = include_str!("../../src/onnx/imagenet_classes.txt")
        .lines()
        .collect();
    let photos = meta["photos"].as_object().unwrap();
    let rows = preds(&read_parts(&preds_dir));
    assert_eq!(rows.len(), photos.len());
    let mut worst_score = 0f32;
    for row in &rows {
        let tv = photos
            .get(row.key.as_str())
            .unwrap_or_else(|| panic!("{} was labelled but not by torchvision", row.key));
        let top1 = tv["top1"].as_u64().unwrap() as usize;
        let score = tv["score"].as_f64().unwrap() as f32;
        assert_eq!(
            row.label.as_deref(),
            Some(names[top1]),
            "{}: labelflow's label is not torchvision's top-1 (index {top1}, margin {})",
            row.key,
            tv["margin"]
        );
        assert_eq!(row.top_k[0].1 as usize, top1, "{}", row.key);
        let top5: Vec<usize> = tv["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let ours: Vec<usize> = row.top_k.iter().map(|t| t.1 as usize).collect();
        assert!(
            ours.len() >= 5 && ours[..5] == top5[..],
            "{}: labelflow's top 5 {ours:?} are not torchvision's {top5:?}",
            row.key
        );
        let got = row.score.unwrap();
        worst_score = worst_score.max((got - score).abs() / score);
    }
    eprintln!(
        "photos: {} of {} with torchvision's top 5 in its order; top-1 score differs by at most {worst_score:.2e} (relative)",
        rows.len(),
        photos.len()
    );
    assert!(
        worst_score <= SCORE_TOLERANCE,
        "a top-1 score differs from torchvision's by {worst_score:e} (relative)"
    );
}
