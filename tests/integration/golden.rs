//! Logits from labelflow's inference equal Python onnxruntime's on the same model and
//! input (golden files in tests/data/reference, made by golden_logits.py), and a model
//! that takes RGB bytes and normalises them in its graph gives the float path's logits.

use labelflow::batch::Values;
use labelflow::decode::{decode_and_prepare_into, DecodeLimits};
use labelflow::infer::ModelBytes;
use labelflow::preprocess::{PreprocessSpec, Preprocessor, Tta};

use super::common::{data, float_input_copy, model_scores, read_f32, run_cli, scratch, stderr};

/// `labelflow model init --out <scratch>/<name> <args>`.
fn model_init(name: &str, args: &str) -> std::path::PathBuf {
    let path = scratch("golden").join(name);
    let mut argv = vec!["model", "init", "--out", path.to_str().unwrap()];
    argv.extend(args.split_whitespace());
    let o = run_cli(&argv);
    assert!(o.status.success(), "model init {args}: {}", stderr(&o));
    path
}

#[tokio::test]
async fn logits_match_python_onnxruntime() {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("reference/golden.json")).unwrap())
            .unwrap();
    let args = golden["model_args"].as_str().unwrap();
    let model_path = model_init("golden.onnx", args);
    let model = ModelBytes::read(&model_path).unwrap();
    assert_eq!(
        model.sha256(),
        golden["model_sha256"].as_str().unwrap(),
        "`labelflow model init {args}` no longer writes the model the golden logits were made with; \
         regenerate them (tests/data/README.md) if the change is intended",
    );
    let n = golden["batch"].as_u64().unwrap() as usize;
    let input = read_f32(&data("reference/golden_input.f32"));
    let want = read_f32(&data("reference/golden_logits.f32"));
    assert_eq!(input.len(), n * 3 * 224 * 224);
    let got = model_scores(&model_path, input, n).await;
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for (a, b) in got.iter().zip(&want) {
        worst = worst.max((a - b).abs() / b.abs().max(1.0));
    }
    eprintln!("max relative difference to Python onnxruntime: {worst:e}");
    assert!(worst <= 1e-5, "logits differ from onnxruntime's by {worst}");
}

/// The fixture photos through the full-size AlexNet that `labelflow model init` writes
/// (uint8 input, normalised in the graph) and through the same network with a float
/// input fed by the CPU's normalisation: the logits agree to 1e-4.
#[tokio::test]
async fn a_uint8_model_gives_the_float_paths_logits() {
    let bytes_model = model_init("alexnet-uint8.onnx", "--seed 3");
    let float_model = float_input_copy(&bytes_model);
    let (floats, n) = photo_batch(labelflow::batch::Element::F32);
    let (bytes, _) = photo_batch(labelflow::batch::Element::U8);
    assert_eq!(bytes.byte_len() * 4, floats.byte_len());
    let from_bytes = model_scores(&bytes_model, bytes, n).await;
    let from_floats = model_scores(&float_model, floats, n).await;
    assert_eq!(from_bytes.len(), n * 1000);
    let worst = from_bytes
        .iter()
        .zip(&from_floats)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = from_floats.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "uint8 vs float32 input, {n} photos × 1000 logits: max |difference| {worst:e} (largest |logit| {scale:.3})"
    );
    assert!(worst <= 1e-4, "the uint8 path's logits differ by {worst:e}");
}

/// The first 8 fixture photos (sorted by path) preprocessed for a 224-pixel model as
/// `element` values, one after another, and how many there are.
fn photo_batch(element: labelflow::batch::Element) -> (Values, usize) {
    let mut photos = walk(&data("photos"));
    photos.sort();
    photos.truncate(8);
    assert!(photos.len() >= 4, "fixture photos are missing");
    let spec = PreprocessSpec::imagenet(224);
    let mut pre = Preprocessor::new(spec.clone()).unwrap();
    let mut all = Values::with_capacity(element, photos.len() * spec.tensor_len());
    for path in &photos {
        let mut one = Values::zeros(element, spec.tensor_len());
        decode_and_prepare_into(
            &std::fs::read(path).unwrap(),
            DecodeLimits::default(),
            &mut pre,
            Tta::None,
            &mut one,
            &mut Default::default(),
        )
        .unwrap();
        assert!(all.extend_from(&one));
    }
    (all, photos.len())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("jpg" | "jpeg" | "png")
        ) {
            out.push(p);
        }
    }
    out
}

/// `--precision fp16`'s half copy of the full-size AlexNet, on ONNX Runtime's CPU: the
/// logits stay within float16's rounding (weights to 11 significant bits) of the float
/// model's, and the top-1 class is the same wherever the float model's margin is
/// larger than that rounding.
#[tokio::test]
async fn a_half_precision_copy_keeps_the_logits_within_float16_rounding() {
    let model = model_init("alexnet-half-source.onnx", "--seed 5");
    let half = model.with_extension("fp16.onnx");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&half, labelflow::onnx::alexnet::half_copy(&bytes).unwrap()).unwrap();

    let (input, n) = photo_batch(labelflow::batch::Element::U8);
    let full = model_scores(&model, input.clone(), n).await;
    let halved = model_scores(&half, input, n).await;
    let scale = full.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = full
        .iter()
        .zip(&halved)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "fp16 vs fp32, {n} photos × 1000 logits: max |difference| {worst:e} ({:.2e} of the largest |logit| {scale:.3})",
        worst / scale
    );
    assert!(worst <= 2e-2 * scale, "fp16 logits differ by {worst}");
    for (i, (a, b)) in full.chunks(1000).zip(halved.chunks(1000)).enumerate() {
        let top = |v: &[f32]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&x, &y| v[y].total_cmp(&v[x]));
            idx
        };
        let (ta, tb) = (top(a), top(b));
        if a[ta[0]] - a[ta[1]] > 2.0 * worst {
            assert_eq!(ta[0], tb[0], "photo {i}: top-1 changed");
        }
    }
}
