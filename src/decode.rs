//! Bytes → oriented RGB8 pixels. Pure and synchronous; run it on the CPU pool.
//!
//! Every failure is a [`DecodeError`] that becomes the `error` column of the object's
//! row: a bad file never stops a job. Decoder panics are caught for the same reason.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// Default pixel cap: images declaring more pixels than this are refused before any
/// pixel memory is allocated (about 100 megapixels, above any camera's output).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

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
    #[error("decoder crashed on this file: {0}")]
    Panicked(String),
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
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, limits))) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(DecodeError::Panicked(msg))
        }
    }
}

fn decode_inner(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, DecodeError> {
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
    let corrupt = |e: image::ImageError| DecodeError::Corrupt {
        format: format_name.clone(),
        reason: e.to_string(),
    };
    let mut reader = reader;
    let mut image_limits = Limits::default();
    // Pixel memory for the largest accepted image at 16 bits × 4 channels, plus slack.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(image_limits);
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
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
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

    #[test]
    fn truncated_png_is_an_error_not_a_panic() {
        let bytes = png(64, 64, image::ColorType::Rgb8);
        let err = decode(&bytes[..bytes.len() / 2], DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{err}");
    }
}
