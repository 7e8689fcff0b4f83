//! Bytes → oriented RGB8 pixels (→ model input, with [`decode_and_prepare`]). Pure and
//! synchronous; run it on the CPU pool.
//!
//! Every failure is a [`DecodeError`] that becomes the `error` column of the object's
//! row: a bad file never stops a job. Panics in the decoder or in preprocessing are
//! caught for the same reason, and memory is bounded by the pixel cap: the decoders
//! refuse headers above it before allocating pixels.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::batch::Values;
use crate::preprocess::{PreprocessError, Preprocessor, Tta, ViewElement};

/// Whether the JPEG decoder (libjpeg-turbo, built from source with the project) runs
/// its SIMD kernels on this CPU: they are compiled in only when `nasm` was installed
/// at build time (see build.rs), and used only where the CPU has SSE2 or AVX2. Without
/// them every JPEG decodes about 1.4× slower, with the same pixels.
pub fn jpeg_simd() -> bool {
    unsafe extern "C" {
        // libjpeg-turbo's own capability check: 0 from its SIMD-less build, non-zero
        // when the SIMD inverse DCT is compiled in and the CPU supports it.
        fn jsimd_can_idct_islow() -> std::ffi::c_int;
    }
    // SAFETY: a C function with no arguments that reads CPU flags once and returns an
    // int; it has no preconditions.
    unsafe { jsimd_can_idct_islow() != 0 }
}

/// Default pixel cap: images declaring more pixels than this are refused before any
/// pixel memory is allocated (about 100 megapixels, above any camera's output).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Where JPEGs are decoded (`--decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeOn {
    /// On the CPU pool, with libjpeg-turbo's DCT-domain downscaling (the default).
    #[default]
    Cpu,
    /// On the GPU with nvJPEG (a build with the `nvjpeg` feature and a CUDA device);
    /// files the GPU path does not take are decoded on the CPU.
    Gpu,
    /// The GPU when the build, the library and the device allow it, else the CPU.
    Auto,
}

keyword_enum!(
    DecodeOn,
    "decoder",
    "cpu" => DecodeOn::Cpu,
    "gpu" | "cuda" | "nvjpeg" => DecodeOn::Gpu,
    "auto" => DecodeOn::Auto,
);

/// Limits applied to every image.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest `width × height` accepted.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Why one image could not be turned into pixels. The `Display` text is what lands in
/// the `error` column, so it says what is wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty object (0 bytes)")]
    Empty,
    #[error("not a recognised image format (first bytes: {0})")]
    UnknownFormat(String),
    #[error("image is {width}x{height} = {pixels} pixels, above the limit of {limit} (raise max_pixels to accept it)")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("image has a zero dimension ({width}x{height})")]
    ZeroSized { width: u32, height: u32 },
    #[error("{format} decode failed: {reason}")]
    Corrupt { format: String, reason: String },
    /// A panic in the decoder or in preprocessing; the text names the stage.
    #[error("crashed on this file: {0}")]
    Panicked(String),
    #[error("{format} decoder refused the image: {reason} (limits follow max_pixels = {limit}; raise it to accept larger images)")]
    OverLimit {
        format: String,
        reason: String,
        limit: u64,
    },
    #[error("preprocessing failed: {0}")]
    Preprocess(#[source] PreprocessError),
    #[error("fetch failed: {0}")]
    Fetch(String),
    #[error("object is {size} bytes, above the limit of {limit} (raise max_bytes to accept it)")]
    TooLarge { size: u64, limit: u64 },
}

/// An image as upright, packed RGB8.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes, row-major.
    pub pixels: Vec<u8>,
}

fn first_bytes(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    head.join(" ")
}

/// Whether a JPEG ends with its end-of-image marker (`FF D9`), allowing for padding or
/// trailing bytes some writers append.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decode any supported format (JPEG incl. progressive and CMYK, PNG 8/16-bit,
/// palette and alpha, WebP, GIF first frame, BMP, TIFF), apply the EXIF orientation
/// and convert to RGB8 (alpha dropped, 16-bit scaled, grey replicated).
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, limits, None)))
        .unwrap_or_else(|panic| Err(panicked("decoding", &*panic)))
}

/// [`decode`] for a picture of `min_short` pixels or so (a thumbnail): a JPEG at least
/// four times that on its shorter side is decoded at 1/2, 1/4 or 1/8 scale, its shorter
/// side still at least twice `min_short`.
pub fn decode_for_size(
    bytes: &[u8],
    limits: DecodeLimits,
    min_short: u32,
) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    catch_unwind(AssertUnwindSafe(|| {
        decode_inner(bytes, limits, Some(min_short))
    }))
    .unwrap_or_else(|panic| Err(panicked("decoding", &*panic)))
}

thread_local! {
    /// Each decode thread's pixel buffer, lent to the decoder for one image and given
    /// back once the image is preprocessed, so a run does not allocate (and fault in)
    /// a decoded image's memory for every file.
    static PIXELS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest buffer kept between images (a 24 MP RGB image); larger ones are freed.
const PIXELS_KEPT_MAX: usize = 72 << 20;

/// This thread's pixel buffer, empty, with its capacity.
fn lend_pixels() -> Vec<u8> {
    let mut v = PIXELS.with(|c| c.take());
    v.clear();
    v
}

/// Give a pixel buffer back to this thread for the next image.
fn give_back_pixels(v: Vec<u8>) {
    if v.capacity() <= PIXELS_KEPT_MAX {
        PIXELS.with(|c| c.set(v));
    }
}

/// Decode `bytes` and preprocess the image into `out` (`tta.views()` tensors of
/// [`crate::preprocess::PreprocessSpec::tensor_len`] values each), all under one
/// panic guard, so one hostile file costs its own row and nothing more. Returns the
/// decoded (oriented) width and height.
///
/// `pre` keeps its buffers between calls: keep one per decode thread. It stays
/// usable after an error, a caught panic included (its buffers are scratch only).
pub fn decode_and_prepare<T: ViewElement>(
    bytes: &[u8],
    limits: DecodeLimits,
    pre: &mut Preprocessor,
    tta: Tta,
    out: &mut [T],
) -> Result<(u32, u32), DecodeError> {
    decode_and_prepare_timed(bytes, limits, pre, tta, out, &mut PrepareTimes::default())
}

/// [`decode_and_prepare_timed`] into host [`Values`] of either element type.
pub fn decode_and_prepare_into(
    bytes: &[u8],
    limits: DecodeLimits,
    pre: &mut Preprocessor,
    tta: Tta,
    out: &mut Values,
    times: &mut PrepareTimes,
) -> Result<(u32, u32), DecodeError> {
    match out {
        Values::F32(o) => decode_and_prepare_timed(bytes, limits, pre, tta, o, times),
        Values::U8(o) => decode_and_prepare_timed(bytes, limits, pre, tta, o, times),
    }
}

/// Time spent in each half of [`decode_and_prepare`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrepareTimes {
    pub decode: Duration,
    pub preprocess: Duration,
}

/// [`decode_and_prepare`], adding the time of each half to `times`.
pub fn decode_and_prepare_timed<T: ViewElement>(
    bytes: &[u8],
    limits: DecodeLimits,
    pre: &mut Preprocessor,
    tta: Tta,
    out: &mut [T],
    times: &mut PrepareTimes,
) -> Result<(u32, u32), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut stage = "decoding";
    // The resize needs a shorter side of `resize` pixels: a JPEG at least four times
    // that is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain first.
    let target = Some(pre.spec().resize);
    let started = Instant::now();
    catch_unwind(AssertUnwindSafe(|| {
        let img = decode_inner(bytes, limits, target);
        let decoded = Instant::now();
        times.decode += decoded - started;
        let img = img?;
        stage = "preprocessing";
        let r = pre
            .prepare(&img.pixels, img.width, img.height, tta, out)
            .map_err(DecodeError::Preprocess);
        times.preprocess += decoded.elapsed();
        give_back_pixels(img.pixels);
        r?;
        Ok((img.width, img.height))
    }))
    .unwrap_or_else(|panic| Err(panicked(stage, &*panic)))
}

fn panicked(stage: &str, panic: &(dyn std::any::Any + Send)) -> DecodeError {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    DecodeError::Panicked(format!("{stage}: {msg}"))
}

/// The decoders' own limits, derived from the pixel cap: no side longer than the cap
/// (a `1×max_pixels` strip is the longest accepted), and no allocation beyond the
/// pixel memory of the largest accepted image at 16 bits × 4 channels, plus slack for
/// the decoders' working rows. Headers claiming more are refused before pixel memory
/// is allocated.
fn image_limits(limits: DecodeLimits) -> Limits {
    let side = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
    let mut l = Limits::default();
    l.max_image_width = Some(side);
    l.max_image_height = Some(side);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

/// `min_short`: when set, a JPEG whose shorter side is at least four times it may be decoded
/// at a reduced scale whose shorter side is still at least `min_short`.
fn decode_inner(
    bytes: &[u8],
    limits: DecodeLimits,
    min_short: Option<u32>,
) -> Result<RgbImage, DecodeError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt {
            format: "unknown".into(),
            reason: e.to_string(),
        })?;
    let format = match reader.format() {
        Some(f) => f,
        None => return Err(DecodeError::UnknownFormat(first_bytes(bytes))),
    };
    let format_name = format!("{format:?}").to_ascii_uppercase();
    if format == image::ImageFormat::Jpeg && !jpeg_has_end_marker(bytes) {
        // The JPEG decoder fills missing data with grey rather than failing; a label
        // computed from a half-grey picture is worse than an honest error.
        return Err(DecodeError::Corrupt {
            format: format_name,
            reason: "file is truncated (no end-of-image marker)".into(),
        });
    }
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Limits(e) => DecodeError::OverLimit {
            format: format_name.clone(),
            reason: e.to_string(),
            limit: limits.max_pixels,
        },
        e => DecodeError::Corrupt {
            format: format_name.clone(),
            reason: e.to_string(),
        },
    };
    let mut reader = reader;
    reader.limits(image_limits(limits));
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::ZeroSized { width, height });
    }
    // A broken EXIF block should not cost the image: fall back to "no rotation".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let scaled = match (format, min_short) {
        (image::ImageFormat::Jpeg, Some(min_short)) => {
            decode_jpeg_scaled(bytes, width, height, min_short)
        }
        _ => None,
    };
    let mut img = match scaled {
        Some((w, h, pixels)) => {
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, pixels).ok_or_else(|| {
                DecodeError::Corrupt {
                    format: format_name.clone(),
                    reason: "scaled decode returned a short buffer".into(),
                }
            })?)
        }
        // RGB8 output (most JPEGs) goes straight into this thread's buffer.
        None if decoder.color_type() == image::ColorType::Rgb8 => {
            let len =
                usize::try_from(decoder.total_bytes()).map_err(|_| DecodeError::TooManyPixels {
                    width,
                    height,
                    pixels,
                    limit: limits.max_pixels,
                })?;
            let mut buf = lend_pixels();
            buf.resize(len, 0);
            decoder.read_image(&mut buf).map_err(corrupt)?;
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(width, height, buf).ok_or_else(
                || DecodeError::Corrupt {
                    format: format_name.clone(),
                    reason: "decoder returned a short buffer".into(),
                },
            )?)
        }
        None => DynamicImage::from_decoder(decoder).map_err(corrupt)?,
    };
    img.apply_orientation(orientation);
    let rgb = match img {
        DynamicImage::ImageRgb8(buf) => buf,
        other => other.to_rgb8(),
    };
    let (width, height) = rgb.dimensions();
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

/// A JPEG decoded at the smallest DCT scale (1/2, 1/4 or 1/8) whose shorter side is
/// still at least twice `min_short` — what Pillow's `draft()` and libjpeg's scaling factors
/// do — as (width, height, RGB8 pixels), not yet oriented. The antialiased resize then
/// goes the rest of the way, so the result stays close to resizing the full-size image
/// (parity test in `tests/integration/decode.rs`).
///
/// `None` when scaling would not help (the image is less than four times `min_short`) or
/// libjpeg cannot give RGB for the file (CMYK, a corrupt stream): the full decoder then
/// handles it and reports any problem itself.
fn decode_jpeg_scaled(
    bytes: &[u8],
    width: u32,
    height: u32,
    min_short: u32,
) -> Option<(u32, u32, Vec<u8>)> {
    let short = u64::from(width.min(height));
    let min_short = u64::from(min_short.max(1));
    // Output side at scale n/8 is ceil(side · n / 8). The DCT scaling is a box filter;
    // keeping at least twice the target leaves the last 2× or more to the antialiased
    // resize (Pillow's `reducing_gap` idea), which keeps parity with the full decode.
    let numerator = [1u8, 2, 4]
        .into_iter()
        .find(|&n| (short * u64::from(n)).div_ceil(8) >= 2 * min_short)?;
    // libjpeg reports errors by unwinding (see Cargo.toml); any such error, or a
    // panic, means "use the full decoder".
    catch_unwind(AssertUnwindSafe(|| {
        let mut decompress = mozjpeg::Decompress::new_mem(bytes).ok()?;
        decompress.scale(numerator);
        let mut started = decompress.rgb().ok()?;
        let (w, h) = (started.width(), started.height());
        let mut pixels = lend_pixels();
        pixels.resize(w.checked_mul(h)?.checked_mul(3)?, 0);
        let filled = started.read_scanlines_into(&mut pixels[..]).ok()?.len();
        if filled != pixels.len() {
            return None;
        }
        started.finish().ok()?;
        let (w, h) = (u32::try_from(w).ok()?, u32::try_from(h).ok()?);
        (pixels.len() as u64 == u64::from(w) * u64::from(h) * 3 && u64::from(w.min(h)) >= min_short)
            .then_some((w, h, pixels))
    }))
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: image::ColorType) -> Vec<u8> {
        let mut out = Vec::new();
        let bpp = color.bytes_per_pixel() as usize;
        let data = vec![200u8; width as usize * height as usize * bpp];
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&data, width, height, color.into())
            .unwrap();
        out
    }

    use image::ImageEncoder;

    #[test]
    fn empty_and_text_files_are_named() {
        assert_eq!(
            decode(b"", DecodeLimits::default()).unwrap_err(),
            DecodeError::Empty
        );
        let err = decode(b"hello, this is not a picture", DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownFormat(_)), "{err}");
        assert!(err.to_string().contains("68 65 6c 6c"), "{err}");
    }

    #[test]
    fn grey_alpha_and_16_bit_become_rgb8() {
        for color in [
            image::ColorType::L8,
            image::ColorType::La8,
            image::ColorType::Rgba8,
            image::ColorType::Rgb16,
        ] {
            let img = decode(&png(5, 3, color), DecodeLimits::default()).unwrap();
            assert_eq!((img.width, img.height), (5, 3));
            assert_eq!(img.pixels.len(), 5 * 3 * 3, "{color:?}");
        }
    }

    #[test]
    fn pixel_cap_refuses_before_decoding() {
        let bytes = png(100, 100, image::ColorType::Rgb8);
        let err = decode(&bytes, DecodeLimits { max_pixels: 9_999 }).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooManyPixels { pixels: 10_000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("max_pixels"));
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

    /// A valid 1×1 PNG whose header is rewritten to claim `width`×`height`.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = png(1, 1, image::ColorType::Rgb8);
        // Signature (8), IHDR length (4), "IHDR" (4), width, height, …, CRC at 29.
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn huge_headers_are_refused_before_allocating() {
        let err = decode(&png_claiming(60_000, 60_000), DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooManyPixels {
                    pixels: 3_600_000_000,
                    ..
                }
            ),
            "{err}"
        );
        // A side longer than the cap is refused by the decoder's own limits.
        let err = decode(&png_claiming(1, 200), DecodeLimits { max_pixels: 100 }).unwrap_err();
        assert!(matches!(err, DecodeError::OverLimit { .. }), "{err}");
        assert!(err.to_string().contains("max_pixels"), "{err}");
    }

    fn small_preprocessor() -> Preprocessor {
        Preprocessor::new(crate::preprocess::PreprocessSpec {
            resize: 32,
            crop: 24,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn decode_and_prepare_fills_every_view() {
        let mut pre = small_preprocessor();
        let mut out = vec![f32::NAN; 10 * pre.spec().tensor_len()];
        let bytes = png(40, 3, image::ColorType::Rgba8);
        let dims = decode_and_prepare(
            &bytes,
            DecodeLimits::default(),
            &mut pre,
            Tta::TenCrop,
            &mut out,
        )
        .unwrap();
        assert_eq!(dims, (40, 3));
        assert!(out.iter().all(|v| v.is_finite()));
        let err = decode_and_prepare(
            &bytes,
            DecodeLimits::default(),
            &mut pre,
            Tta::None,
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Preprocess(_)), "{err}");
        assert!(err.to_string().contains("output buffer"), "{err}");
        let err = decode_and_prepare(b"", DecodeLimits::default(), &mut pre, Tta::None, &mut out)
            .unwrap_err();
        assert_eq!(err, DecodeError::Empty);
    }

    #[test]
    fn panics_name_the_stage() {
        let panic = std::panic::catch_unwind(|| {
            let v: Vec<u8> = Vec::new();
            v[usize::from(v.is_empty())]
        })
        .unwrap_err();
        let err = panicked("preprocessing", &*panic);
        assert!(
            err.to_string()
                .starts_with("crashed on this file: preprocessing: index out of bounds"),
            "{err}"
        );
    }

    /// Small valid files the property tests mutate: a JPEG and a PNG with detail.
    fn seeds() -> &'static [Vec<u8>] {
        static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        SEEDS.get_or_init(|| {
            let (w, h) = (24u32, 16u32);
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
                .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
                .unwrap();
            let mut png = Vec::new();
            image::codecs::png::PngEncoder::new(&mut png)
                .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
                .unwrap();
            vec![jpeg, png]
        })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip { at: usize, mask: u8 },
        Truncate { at: usize },
        Insert { at: usize, bytes: Vec<u8> },
    }

    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
            1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
            2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        ]
    }

    fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for m in mutations {
            if bytes.is_empty() {
                break;
            }
            match m {
                Mutation::Flip { at, mask } => {
                    let i = at % bytes.len();
                    bytes[i] ^= mask;
                }
                Mutation::Truncate { at } => bytes.truncate(at % bytes.len()),
                Mutation::Insert { at, bytes: extra } => {
                    let i = at % (bytes.len() + 1);
                    bytes.splice(i..i, extra.iter().copied());
                }
            }
        }
        bytes
    }

    /// Decode + preprocess either succeeds or names an error; a panic never escapes
    /// (the test would fail) and our own preprocessing never panics at all (a caught
    /// decoder panic is the decoder's bug, contained). A small pixel cap keeps headers
    /// mutated into large sizes cheap.
    fn survives(bytes: &[u8], tta: Tta) -> Result<(), String> {
        thread_local! {
            static PRE: std::cell::RefCell<Preprocessor> = std::cell::RefCell::new(small_preprocessor());
        }
        PRE.with(|pre| {
            let mut pre = pre.borrow_mut();
            let mut out = vec![0f32; tta.views() * pre.spec().tensor_len()];
            let limits = DecodeLimits {
                max_pixels: 1 << 20,
            };
            match decode_and_prepare(bytes, limits, &mut pre, tta, &mut out) {
                Err(DecodeError::Panicked(msg)) if msg.starts_with("preprocessing") => Err(msg),
                Ok(_) if out.iter().any(|v| !v.is_finite()) => Err("non-finite output".into()),
                _ => Ok(()),
            }
        })
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), ten in any::<bool>()) {
                let tta = if ten { Tta::TenCrop } else { Tta::None };
                prop_assert_eq!(survives(&bytes, tta), Ok(()));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn mutated_images_never_panic(
                seed in 0usize..2,
                mutations in proptest::collection::vec(mutation(), 1..6),
                ten in any::<bool>(),
            ) {
                let bytes = apply(seeds()[seed].clone(), &mutations);
                let tta = if ten { Tta::TenCrop } else { Tta::None };
                prop_assert_eq!(survives(&bytes, tta), Ok(()));
            }
        }
    }

    #[test]
    fn seeds_decode_unmutated() {
        for bytes in seeds() {
            assert_eq!(survives(bytes, Tta::TenCrop), Ok(()));
            assert!(decode(bytes, DecodeLimits::default()).is_ok());
        }
    }

    #[test]
    fn truncated_png_is_an_error_not_a_panic() {
        let bytes = png(64, 64, image::ColorType::Rgb8);
        let err = decode(&bytes[..bytes.len() / 2], DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{err}");
    }
}
