//! Hostile images end to end: extreme aspect ratios, the pixel cap's edge, headers
//! claiming huge sizes, truncations, byte flips and noise behind a valid magic number.
//! The job must finish (exit 0 or 1), write one row per file, label what is a real
//! picture, and stay within a memory bound while doing it.

use std::collections::BTreeMap;
use std::path::Path;

use super::common::*;

/// `--max-pixels` for the run: above every fixture photo (512×512), below 1000×1001.
const MAX_PIXELS: u64 = 1_000_000;

/// Peak resident memory allowed for a run over these files. Before preprocessing cut
/// views in source coordinates, the 2×65000 PNG alone took 7.2 GB (it was resized
/// whole to 256×8 320 000).
const PEAK_RSS_LIMIT: u64 = 1536 << 20;

/// What a file's row must say.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A label and no error; the row carries these dimensions.
    Labelled(u32, u32),
    /// An error whose text contains this.
    Error(&'static str),
    /// A label or an error, as long as there is a row.
    Either,
}

/// The project's seeded generator, so a failure reproduces.
type Rng = labelflow::stable::SplitMix64;

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

fn pattern_png(width: u32, height: u32) -> Vec<u8> {
    use image::ImageEncoder;
    let rgb: Vec<u8> = (0..height)
        .flat_map(|y| {
            (0..width).flat_map(move |x| {
                [
                    (x * 7 + y * 13) as u8,
                    (x * 3) as u8 ^ (y as u8),
                    (y * 5) as u8,
                ]
            })
        })
        .collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&rgb, width, height, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn tiny_jpeg() -> Vec<u8> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut out)
        .write_image(&[200, 40, 90], 1, 1, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// CRC-32 (ISO-HDLC), as PNG chunks use.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small valid PNG whose IHDR (with a correct CRC) claims `width`×`height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = pattern_png(4, 4);
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// `jpeg` with its start-of-frame rewritten to claim `width`×`height`.
fn jpeg_claiming(mut jpeg: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
    let mut i = 2;
    while i + 9 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            jpeg[i + 5..i + 7].copy_from_slice(&height.to_be_bytes());
            jpeg[i + 7..i + 9].copy_from_slice(&width.to_be_bytes());
            return jpeg;
        }
        i += 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
    }
    panic!("no start-of-frame marker found");
}

/// Extreme aspect ratios and 1×1: real pictures, all of which must be labelled.
fn write_aspect_files(dir: &Path, files: &mut BTreeMap<String, Expect>) {
    for (w, h) in [
        (1u32, 20_000u32),
        (20_000, 1),
        (2, 65_000),
        (65_000, 2),
        (1, 1),
    ] {
        let key = format!("aspect/{w}x{h}.png");
        write(dir, &key, &pattern_png(w, h));
        files.insert(key, Expect::Labelled(w, h));
    }
    write(dir, "aspect/1x1.jpg", &tiny_jpeg());
    files.insert("aspect/1x1.jpg".into(), Expect::Labelled(1, 1));
}

fn write(dir: &Path, key: &str, bytes: &[u8]) {
    let path = dir.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Every hostile file, keyed by its path relative to `dir`, with what its row must say.
fn write_hostile_files(dir: &Path) -> BTreeMap<String, Expect> {
    let mut files = BTreeMap::new();
    write_aspect_files(dir, &mut files);

    // The pixel cap's edge.
    write(dir, "cap/at_1000x1000.png", &pattern_png(1000, 1000));
    files.insert("cap/at_1000x1000.png".into(), Expect::Labelled(1000, 1000));
    write(dir, "cap/over_1000x1001.png", &pattern_png(1000, 1001));
    files.insert("cap/over_1000x1001.png".into(), Expect::Error("max_pixels"));

    // Headers claiming sizes far above the cap, with almost no data behind them.
    write(
        dir,
        "headers/60000x60000.png",
        &png_claiming(60_000, 60_000),
    );
    files.insert(
        "headers/60000x60000.png".into(),
        Expect::Error("max_pixels"),
    );
    let photo = std::fs::read(data("photos/astronaut.jpg")).unwrap();
    write(
        dir,
        "headers/65000x65000.jpg",
        &jpeg_claiming(photo.clone(), 65_000, 65_000),
    );
    files.insert(
        "headers/65000x65000.jpg".into(),
        Expect::Error("max_pixels"),
    );

    // Truncation at every sixteenth.
    for name in ["astronaut.jpg", "rocket.jpg", "coffee.png"] {
        let bytes = std::fs::read(data("photos").join(name)).unwrap();
        let (stem, ext) = name.split_once('.').unwrap();
        for k in 1..16 {
            let key = format!("truncated/{stem}_{k:02}of16.{ext}");
            write(dir, &key, &bytes[..bytes.len() * k / 16]);
            files.insert(key, Expect::Either);
        }
    }

    // Random byte flips.
    let mut rng = Rng::new(0x5EED_F11B);
    for v in 0..30 {
        let mut bytes = photo.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 + rng.below(255) as u8;
        }
        let key = format!("flipped/astronaut_{v:02}.jpg");
        write(dir, &key, &bytes);
        files.insert(key, Expect::Either);
    }

    // Noise behind each format's magic number.
    let magics: [(&str, &[u8]); 4] = [
        ("jpg", &[0xFF, 0xD8, 0xFF, 0xE0]),
        ("png", b"\x89PNG\r\n\x1a\n"),
        ("gif", b"GIF89a"),
        ("webp", b"RIFF\x00\x10\x00\x00WEBPVP8 "),
    ];
    for (ext, magic) in magics {
        for v in 0..3 {
            let mut bytes = magic.to_vec();
            let n = 512 + rng.below(4096);
            bytes.extend(random_bytes(&mut rng, n));
            let key = format!("noise/{ext}_{v}.{ext}");
            write(dir, &key, &bytes);
            files.insert(key, Expect::Either);
        }
    }
    files
}

/// Run the job over `input` and return its rows by key, checking on the way the exit
/// code (1 exactly when some row is an error row), the summary's counts against the
/// rows, one row per file and the memory bound.
fn run_job(input: &Path, out: &Path, extra: &[&str]) -> BTreeMap<String, Pred> {
    let mut cmd = RunCmd::new(input, out)
        .json()
        .args(["--max-pixels", &MAX_PIXELS.to_string()])
        .args(extra)
        .command();
    let (o, peak) = run_measuring_peak_rss(&mut cmd);
    eprintln!(
        "labelflow run {extra:?} over {}: peak RSS {:.1} MiB",
        input.display(),
        peak as f64 / f64::from(1 << 20)
    );
    assert!(
        peak > 0 && peak < PEAK_RSS_LIMIT,
        "peak RSS {peak} bytes, limit {PEAK_RSS_LIMIT}"
    );
    let rows = preds(&read_parts(out));
    let n = rows.len();
    let by_key: BTreeMap<String, Pred> = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
    assert_eq!(by_key.len(), n, "one row per key");
    let errors = by_key.values().filter(|r| r.error.is_some()).count() as u64;
    assert_eq!(
        o.status.code(),
        Some(i32::from(errors > 0)),
        "{errors} error rows: the exit code is 1 exactly when there are some: {}",
        stderr(&o)
    );
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "--json prints the summary ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    assert_eq!(
        summary["failed"], errors,
        "the summary counts the error rows"
    );
    assert_eq!(
        summary["labelled"],
        n as u64 - errors,
        "and the labelled ones"
    );
    by_key
}

fn check(files: &BTreeMap<String, Expect>, rows: &BTreeMap<String, Pred>) {
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>(),
        "one row per input file"
    );
    for (key, expect) in files {
        let row = &rows[key];
        match *expect {
            Expect::Labelled(w, h) => {
                assert!(
                    row.error.is_none() && row.label.is_some(),
                    "{key}: expected a label, got error {:?}",
                    row.error
                );
                assert_eq!(
                    (row.width, row.height),
                    (Some(w as i32), Some(h as i32)),
                    "{key}"
                );
            }
            Expect::Error(text) => {
                let err = row.error.as_deref().unwrap_or_else(|| {
                    panic!("{key}: expected an error naming {text}, got a label")
                });
                assert!(err.contains(text), "{key}: {err}");
                assert!(row.label.is_none(), "{key}");
            }
            Expect::Either => assert!(
                row.label.is_some() != row.error.is_some(),
                "{key}: a row has a label or an error: {row:?}"
            ),
        }
    }
}

#[test]
fn hostile_images_cost_a_row_each_within_bounded_memory() {
    let input = scratch("hostile-in");
    let files = write_hostile_files(&input);
    let rows = run_job(&input, &scratch("hostile-out"), &[]);
    check(&files, &rows);
    // Every file expected to fail did, and at most the ones that may fail more.
    let errors = rows.values().filter(|r| r.error.is_some()).count();
    let must = files
        .values()
        .filter(|e| matches!(e, Expect::Error(_)))
        .count();
    let may = files
        .values()
        .filter(|e| matches!(e, Expect::Either))
        .count();
    assert!(
        (must..=must + may).contains(&errors),
        "{errors} error rows of {} files: {must} must fail, {may} may",
        files.len()
    );
    assert!(must > 0, "the set has files that must fail");
}

#[test]
fn ten_crop_labels_extreme_aspect_ratios_within_bounded_memory() {
    let input = scratch("hostile-aspect-in");
    let mut files = BTreeMap::new();
    write_aspect_files(&input, &mut files);
    let rows = run_job(&input, &scratch("hostile-aspect-out"), &["--tta", "10crop"]);
    check(&files, &rows);
}
