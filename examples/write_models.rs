//! Writes the reference AlexNet models that `tests/data/check_onnx.py` checks against
//! onnx's checker and onnxruntime: full size in both layouts, a small one, and two whose
//! last feature map exercises the average-pool stages (7×7 → two `MatMul`s, 12×12 →
//! `AveragePool`).
//!
//! ```sh
//! cargo run --release --example write_models -- out/models     # about 250 MB
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use labelflow::onnx::alexnet::{default_class_names, AlexNetSpec, Variant};

/// Width 0.25, 64-pixel input, ten classes: the size the tests use.
fn small(variant: Variant) -> AlexNetSpec {
    AlexNetSpec {
        variant,
        num_classes: 10,
        width: 0.25,
        input_size: 64,
        seed: 1,
        input: Default::default(),
    }
}

/// The smallest input (from 63 px) whose last feature map is `side`×`side`.
fn with_feature(variant: Variant, side: usize) -> anyhow::Result<AlexNetSpec> {
    for input_size in 63..1200 {
        let spec = AlexNetSpec {
            input_size,
            ..small(variant)
        };
        if spec.feature_size()? == side {
            return Ok(spec);
        }
    }
    anyhow::bail!("no input size from 63 to 1199 gives a {side}x{side} feature map")
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "out/models".into()),
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let specs = [
        ("alexnet-1000.onnx", AlexNetSpec::default()),
        ("alexnet-w025-64.onnx", small(Variant::Torchvision)),
        (
            "alexnet-paper-1000.onnx",
            AlexNetSpec {
                variant: Variant::Paper,
                ..AlexNetSpec::default()
            },
        ),
        (
            "alexnet-w025-f7.onnx",
            with_feature(Variant::Torchvision, 7)?,
        ),
        (
            "alexnet-paper-w025-f12.onnx",
            with_feature(Variant::Paper, 12)?,
        ),
    ];
    for (file, spec) in specs {
        let t = Instant::now();
        let classes = default_class_names(spec.num_classes);
        let sha = labelflow::onnx::init_alexnet(&dir.join(file), &spec, &classes)?;
        println!(
            "{file}: input {}, {} parameters, {:.2?}, sha256 {sha}",
            spec.input_size,
            spec.parameter_count()?,
            t.elapsed()
        );
    }
    Ok(())
}
