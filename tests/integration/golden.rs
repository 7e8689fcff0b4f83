//! Logits from labelflow's inference equal Python onnxruntime's on the same model and
//! input (golden files in tests/data/reference, made by golden_logits.py).

use labelflow::infer::ModelBytes;

use super::common::{data, model_scores, read_f32, small_model};

#[tokio::test]
async fn logits_match_python_onnxruntime() {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("reference/golden.json")).unwrap())
            .unwrap();
    let model_path = small_model();
    let model = ModelBytes::read(&model_path).unwrap();
    assert_eq!(
        model.sha256(),
        golden["model_sha256"].as_str().unwrap(),
        "`labelflow model init {}` no longer writes the model the golden logits were made with; \
         regenerate them (tests/data/README.md) if the change is intended",
        golden["model_args"].as_str().unwrap()
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
