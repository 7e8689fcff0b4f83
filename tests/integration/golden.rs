//! Logits from labelflow's inference equal Python onnxruntime's on the same model and
//! input (golden files in tests/data/reference, made by golden_logits.py).

use labelflow::batch::BatchInput;
use labelflow::infer::{self, Described, InferencePool, ModelBytes, PoolOptions, SessionOptions};
use labelflow::preprocess::PreprocessSpec;
use labelflow::runtime;

use super::common::{data, ort_lib, read_f32, small_model};

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
    runtime::init(Some(&ort_lib())).unwrap();
    let n = golden["batch"].as_u64().unwrap() as usize;
    let input = read_f32(&data("reference/golden_input.f32"));
    let want = read_f32(&data("reference/golden_logits.f32"));
    let opts = SessionOptions::default();
    let first = infer::build_session(&model, &opts).unwrap();
    let info = infer::describe(&model, &first).unwrap();
    assert_eq!(input.len(), n * 3 * 224 * 224);
    assert_eq!(want.len(), n * info.num_classes());
    let pool = InferencePool::start(
        &model,
        Described {
            session: first,
            device: labelflow::runtime::Device::Cpu,
            info,
        },
        &PreprocessSpec::default(),
        &PoolOptions {
            session: opts,
            sessions: 1,
            batch_size: n,
            queue_capacity: 1,
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let got = pool
        .handle()
        .run(BatchInput {
            data: input,
            real: n,
        })
        .await
        .unwrap()
        .scores;
    pool.shutdown();
    let mut worst = 0f32;
    for (a, b) in got.iter().zip(&want) {
        worst = worst.max((a - b).abs() / b.abs().max(1.0));
    }
    eprintln!("max relative difference to Python onnxruntime: {worst:e}");
    assert!(worst <= 1e-5, "logits differ from onnxruntime's by {worst}");
}
