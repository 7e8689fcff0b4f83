//! Criterion benches of the CPU stages: decode, preprocess, softmax + top-k.
//! The end-to-end comparison with inference is `labelflow bench`.

// Criterion's closures return nothing: a fixture that fails to load or decode is a
// broken bench and stops it with a message saying which step.
#![allow(clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use labelflow::decode::{decode, DecodeLimits};
use labelflow::infer::{top_k, OutputKind};
use labelflow::preprocess::{PreprocessSpec, Preprocessor, Tta};

fn photos() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    ["astronaut.jpg", "animals/chelsea.jpg", "coffee.png"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(dir.join(f)).expect("fixture photo"),
            )
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in photos() {
        g.bench_with_input(BenchmarkId::new("decode", &name), &bytes, |b, bytes| {
            b.iter(|| decode(bytes, DecodeLimits::default()).expect("decodes"))
        });
        let img = decode(&bytes, DecodeLimits::default()).expect("decodes");
        let mut pre = Preprocessor::new(PreprocessSpec::default()).expect("spec");
        let mut out = vec![0f32; PreprocessSpec::default().tensor_len()];
        g.bench_with_input(BenchmarkId::new("preprocess", &name), &img, |b, img| {
            b.iter(|| {
                pre.run_into(&img.pixels, img.width, img.height, &mut out)
                    .expect("runs")
            })
        });
        let mut views = vec![0f32; Tta::TenCrop.views() * PreprocessSpec::default().tensor_len()];
        g.bench_with_input(
            BenchmarkId::new("preprocess 10crop", &name),
            &img,
            |b, img| {
                b.iter(|| {
                    pre.run_views_into(&img.pixels, img.width, img.height, Tta::TenCrop, &mut views)
                        .expect("runs")
                })
            },
        );
    }
    // A 2×65000 strip: resized whole it would be 256×8 320 000 pixels.
    let (w, h) = (2u32, 65_000u32);
    let strip: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    let mut pre = Preprocessor::new(PreprocessSpec::default()).expect("spec");
    let mut out = vec![0f32; PreprocessSpec::default().tensor_len()];
    g.bench_function("preprocess 2x65000 strip", |b| {
        b.iter(|| pre.run_into(&strip, w, h, &mut out).expect("runs"))
    });
    let logits: Vec<f32> = (0..1000)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect();
    g.bench_function("softmax+top5 (1000 classes)", |b| {
        b.iter(|| {
            let mut row = logits.clone();
            top_k(&mut row, OutputKind::Logits, 5)
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
