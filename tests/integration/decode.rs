//! Decoding the odd fixtures and preprocessing parity with the reference transform.

use labelflow::decode::{decode, decode_and_prepare, DecodeLimits};
use labelflow::preprocess::{PreprocessSpec, Preprocessor, Tta};

use super::common::{data, odd_expectations, read_f32, require_python, scratch};

/// Mean and largest absolute difference of two tensors.
fn differences(got: &[f32], want: &[f32]) -> (f64, f32) {
    assert_eq!(got.len(), want.len());
    let mut sum = 0f64;
    let mut max = 0f32;
    for (a, b) in got.iter().zip(want) {
        let d = (a - b).abs();
        sum += f64::from(d);
        max = max.max(d);
    }
    (sum / got.len() as f64, max)
}

#[test]
fn odd_files_decode_or_fail_as_documented() {
    for (file, ok, w, h) in odd_expectations() {
        let bytes = std::fs::read(data("odd").join(&file)).unwrap();
        let got = decode(&bytes, DecodeLimits::default());
        match (ok, got) {
            (true, Ok(img)) => {
                assert_eq!(
                    (Some(img.width as i32), Some(img.height as i32)),
                    (w, h),
                    "{file}"
                );
                assert_eq!(
                    img.pixels.len(),
                    img.width as usize * img.height as usize * 3,
                    "{file}"
                );
            }
            (false, Err(e)) => assert!(
                matches!(
                    e,
                    labelflow::decode::DecodeError::Empty
                        | labelflow::decode::DecodeError::UnknownFormat(_)
                        | labelflow::decode::DecodeError::TooManyPixels { .. }
                        | labelflow::decode::DecodeError::OverLimit { .. }
                        | labelflow::decode::DecodeError::Corrupt { .. }
                ),
                "{file}: an error that says what is wrong with the file, not {e:?}"
            ),
            (true, Err(e)) => panic!("{file} should decode but failed: {e}"),
            (false, Ok(img)) => panic!(
                "{file} should fail but decoded to {}x{}",
                img.width, img.height
            ),
        }
    }
}

#[test]
fn bad_files_say_why() {
    let read = |f: &str| std::fs::read(data("odd").join(f)).unwrap();
    let err = |f: &str| {
        decode(&read(f), DecodeLimits::default())
            .unwrap_err()
            .to_string()
    };
    assert!(err("empty.jpg").contains("empty"), "{}", err("empty.jpg"));
    assert!(
        err("notes.jpg").contains("not a recognised image format"),
        "{}",
        err("notes.jpg")
    );
    assert!(
        err("bomb.png").contains("25000x25000"),
        "{}",
        err("bomb.png")
    );
    assert!(
        err("truncated.jpg").contains("truncated"),
        "{}",
        err("truncated.jpg")
    );
}

/// Colour conversions (CMYK, RGB-transform JPEG, grey, GIF palette) against the
/// reference decoder's output: mean absolute difference per channel value.
#[test]
fn colour_conversions_match_reference_decodes() {
    let text = std::fs::read_to_string(data("reference/odd_expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for e in v.as_array().unwrap() {
        let (Some(golden), "ok") = (e["golden"].as_str(), e["labelflow"].as_str().unwrap()) else {
            continue;
        };
        let file = e["file"].as_str().unwrap();
        let ours = decode(
            &std::fs::read(data("odd").join(file)).unwrap(),
            DecodeLimits::default(),
        )
        .unwrap();
        let want = image::open(data("reference").join(golden))
            .unwrap()
            .to_rgb8();
        assert_eq!((ours.width, ours.height), want.dimensions(), "{file}");
        let diff: f64 = ours
            .pixels
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / ours.pixels.len() as f64;
        assert!(diff < 8.0, "{file}: mean abs diff {diff:.2} vs {golden}");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} reference decodes checked");
}

#[test]
fn exif_orientation_is_applied() {
    let rotated = decode(
        &std::fs::read(data("photos/exif/rocket_orientation6.jpg")).unwrap(),
        DecodeLimits::default(),
    )
    .unwrap();
    let upright = decode(
        &std::fs::read(data("photos/rocket.jpg")).unwrap(),
        DecodeLimits::default(),
    )
    .unwrap();
    assert_eq!(
        (rotated.width, rotated.height),
        (upright.width, upright.height)
    );
    let diff: f64 = rotated
        .pixels
        .iter()
        .zip(&upright.pixels)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .sum::<f64>()
        / rotated.pixels.len() as f64;
    assert!(
        diff < 4.0,
        "orientation-corrected image differs from the upright one by {diff:.2}"
    );
}

/// Parity with torchvision's eval transform (PIL bilinear resize, centre crop,
/// normalise) on every fixture photo: the reference tensors come from
/// tests/data/reference/make_preprocess_reference.py.
#[test]
fn preprocessing_matches_the_reference_transform() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data("reference/preprocess/manifest.json")).unwrap(),
    )
    .unwrap();
    let mut pre = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let mut worst_mean: f64 = 0.0;
    let mut worst_max: f32 = 0.0;
    let files = manifest["files"].as_array().unwrap();
    assert!(files.len() >= 8);
    for f in files {
        let file = f["file"].as_str().unwrap();
        let want = read_f32(&data("reference/preprocess").join(f["tensor"].as_str().unwrap()));
        let img = decode(
            &std::fs::read(data("photos").join(file)).unwrap(),
            DecodeLimits::default(),
        )
        .unwrap();
        let got = pre.run(&img.pixels, img.width, img.height).unwrap();
        assert_eq!(got.len(), want.len(), "{file}");
        let (mean, max) = differences(&got, &want);
        eprintln!("{file}: mean abs diff {mean:.5}, max {max:.4}");
        assert!(
            mean < 0.01,
            "{file}: mean abs diff {mean} ≥ 0.01 (normalised units)"
        );
        worst_mean = worst_mean.max(mean);
        worst_max = worst_max.max(max);
    }
    eprintln!("worst mean abs diff {worst_mean:.5}, worst max abs diff {worst_max:.4}");
    // One grey level is 1/(255·0.225) ≈ 0.017 in the bluest channel: at most a few
    // levels apart anywhere (resampling rounds differently near edges).
    assert!(worst_max < 0.1, "worst max abs diff {worst_max} ≥ 0.1");
}

/// `bytes` through a run's decode path ([`decode_and_prepare`]), compared with `want`.
fn run_path_differences(bytes: &[u8], pre: &mut Preprocessor, want: &[f32]) -> (f64, f32) {
    let mut got = vec![0f32; pre.spec().tensor_len()];
    decode_and_prepare(bytes, DecodeLimits::default(), pre, Tta::None, &mut got).unwrap();
    differences(&got, want)
}

/// Large JPEGs take the DCT-scaled decode (1/2, 1/4 or 1/8, then the antialiased resize
/// the rest of the way): camera-sized versions of the fixture photos (upscaled so the
/// shorter side is 2 400 px, JPEG quality 92) against the reference transform run by
/// Pillow on the same files. Also checks the pipeline's path on the fixture photos
/// themselves (all below 1 024 px, so decoded at full size).
#[test]
fn scaled_jpeg_decoding_matches_the_reference_transform() {
    let Some(python) = require_python("numpy and pillow") else {
        return;
    };
    let dir = scratch("scaled-jpeg");
    let script = data("reference/make_preprocess_reference.py");
    let mut pre = Preprocessor::new(PreprocessSpec::default()).unwrap();
    let mut worst = (0f64, 0f32);
    for name in [
        "astronaut.jpg",
        "animals/chelsea.jpg",
        "coffee.png",
        "rocket.jpg",
    ] {
        let img = decode(
            &std::fs::read(data("photos").join(name)).unwrap(),
            DecodeLimits::default(),
        )
        .unwrap();
        let scale = 2400.0 / f64::from(img.width.min(img.height));
        let (w, h) = (
            (f64::from(img.width) * scale).round() as u32,
            (f64::from(img.height) * scale).round() as u32,
        );
        let small = image::RgbImage::from_raw(img.width, img.height, img.pixels).unwrap();
        let large = image::imageops::resize(&small, w, h, image::imageops::FilterType::Triangle);
        let file = dir.join(format!("{}.jpg", name.replace('/', "_")));
        let mut encoded = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 92)
            .encode_image(&large)
            .unwrap();
        std::fs::write(&file, &encoded).unwrap();
        let tensor = file.with_extension("f32");
        let status = std::process::Command::new(&python)
            .arg(&script)
            .arg("--one")
            .arg(&file)
            .arg(&tensor)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "reference transform failed on {}",
            file.display()
        );
        let want = read_f32(&tensor);
        let (mean, max) = run_path_differences(&encoded, &mut pre, &want);
        // The full-size decode on the same file, for comparison.
        let full = decode(&encoded, DecodeLimits::default()).unwrap();
        let (full_mean, _) = differences(
            &pre.run(&full.pixels, full.width, full.height).unwrap(),
            &want,
        );
        eprintln!(
            "{name} at {w}x{h}: scaled decode mean abs diff {mean:.5}, max {max:.4} (full decode: mean {full_mean:.5})"
        );
        assert!(
            mean < 0.01,
            "{name}: scaled decode mean abs diff {mean} ≥ 0.01"
        );
        worst = (worst.0.max(mean), worst.1.max(max));
    }
    eprintln!(
        "large JPEGs: worst mean abs diff {:.5}, worst max {:.4}",
        worst.0, worst.1
    );

    // The fixture photos through the pipeline's path, against the stored references.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data("reference/preprocess/manifest.json")).unwrap(),
    )
    .unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let want = read_f32(&data("reference/preprocess").join(f["tensor"].as_str().unwrap()));
        let bytes = std::fs::read(data("photos").join(file)).unwrap();
        let (mean, max) = run_path_differences(&bytes, &mut pre, &want);
        eprintln!("{file} (pipeline path): mean abs diff {mean:.5}, max {max:.4}");
        assert!(
            mean < 0.01,
            "{file}: pipeline path mean abs diff {mean} ≥ 0.01"
        );
    }
}
