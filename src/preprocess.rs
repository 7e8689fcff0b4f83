//! Oriented RGB8 pixels → the model's input tensor: resize the shorter side
//! (antialiased bilinear, as PIL's `resize(…, BILINEAR)` does), centre crop, scale,
//! normalise by mean/std, and lay out as NCHW or NHWC in RGB or BGR order.
//!
//! This mirrors torchvision's eval transform (`Resize(256)`, `CenterCrop(224)`,
//! `ToTensor()`, `Normalize(mean, std)`); `tests/data/reference` holds tensors made by
//! that transform for a parity test.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Channel order of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

/// Memory layout of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// Value range of pixels before normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PixelRange {
    /// 0–1 (torchvision's `ToTensor`).
    #[default]
    Unit,
    /// 0–255 (Caffe-style models).
    Byte,
}

macro_rules! parse_enum {
    ($t:ty, $what:literal, $($s:literal => $v:expr),+) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($s => Ok($v),)+
                    other => Err(format!(concat!("unknown ", $what, " {:?}; expected one of: {}"), other, [$($s),+].join(", "))),
                }
            }
        }
    };
}
parse_enum!(ChannelOrder, "channel order", "rgb" => ChannelOrder::Rgb, "bgr" => ChannelOrder::Bgr);
parse_enum!(Layout, "layout", "nchw" => Layout::Nchw, "nhwc" => Layout::Nhwc);
parse_enum!(PixelRange, "pixel range", "unit" => PixelRange::Unit, "byte" => PixelRange::Byte);

/// Everything preprocessing needs to know. Defaults are ImageNet's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// Length the shorter image side is resized to.
    pub resize: u32,
    /// Side of the square centre crop taken after resizing (the model's input size).
    pub crop: u32,
    /// Per-channel mean, in RGB order, in the units of `pixel_range` (0–1 for `unit`,
    /// 0–255 for `byte`, e.g. Caffe's `[123.68, 116.78, 103.94]`).
    pub mean: [f32; 3],
    /// Per-channel standard deviation, in RGB order, in the same units.
    pub std: [f32; 3],
    pub channel_order: ChannelOrder,
    pub layout: Layout,
    pub pixel_range: PixelRange,
}

impl Default for PreprocessSpec {
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            layout: Layout::Nchw,
            pixel_range: PixelRange::Unit,
        }
    }
}

impl PreprocessSpec {
    /// Checks the values make sense; the message names the field to fix.
    pub fn validate(&self) -> Result<()> {
        if self.crop == 0 {
            return Err(Error::Config("preprocess.crop must be at least 1".into()));
        }
        if self.resize < self.crop {
            return Err(Error::Config(format!(
                "preprocess.resize ({}) must be at least preprocess.crop ({})",
                self.resize, self.crop
            )));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::Config(format!(
                "preprocess.std must be three positive numbers, got {:?}",
                self.std
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::Config(format!(
                "preprocess.mean must be three finite numbers, got {:?}",
                self.mean
            )));
        }
        Ok(())
    }

    /// Number of f32 values in one preprocessed image.
    pub fn tensor_len(&self) -> usize {
        3 * self.crop as usize * self.crop as usize
    }

    /// Size of the image after resizing its shorter side to `resize`, as torchvision
    /// computes it (`int(long * size / short)`).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let r = u64::from(self.resize);
        let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
        if w <= h {
            (self.resize, ((h * r) / w).max(1) as u32)
        } else {
            (((w * r) / h).max(1) as u32, self.resize)
        }
    }
}

/// Python's `round()` (half to even), which torchvision's centre-crop offsets use.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        let t = x.trunc();
        if (t as i64) % 2 == 0 {
            t as i64
        } else {
            r as i64
        }
    } else {
        r as i64
    }
}

/// Reusable preprocessing state (the resizer keeps scratch buffers between images).
pub struct Preprocessor {
    spec: PreprocessSpec,
    resizer: Resizer,
    /// Per channel (RGB), value of each byte after scaling and normalisation.
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    pub fn new(spec: PreprocessSpec) -> Result<Self> {
        spec.validate()?;
        let scale = match spec.pixel_range {
            PixelRange::Unit => 1.0 / 255.0,
            PixelRange::Byte => 1.0,
        };
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                // Same operation order as ToTensor + Normalize: (v/255 - mean) / std.
                *out = ((v as f32) * scale - spec.mean[c]) / spec.std[c];
            }
        }
        Ok(Self {
            spec,
            resizer: Resizer::new(),
            lut,
        })
    }

    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    /// Resize + crop `rgb` (packed RGB8, `width`×`height`) and write the normalised
    /// tensor into `out` (length [`PreprocessSpec::tensor_len`]).
    pub fn run_into(&mut self, rgb: &[u8], width: u32, height: u32, out: &mut [f32]) -> Result<()> {
        let crop = self.spec.crop;
        if out.len() != self.spec.tensor_len() {
            return Err(Error::Inference(format!(
                "preprocess buffer holds {} values, expected {}",
                out.len(),
                self.spec.tensor_len()
            )));
        }
        let (rw, rh) = self.spec.resized_size(width, height);
        let resized;
        let (pixels, pw, ph): (&[u8], u32, u32) = if (rw, rh) == (width, height) {
            (rgb, width, height)
        } else {
            let src = ImageRef::new(width, height, rgb, PixelType::U8x3)
                .map_err(|e| Error::Inference(format!("resize source: {e}")))?;
            let mut dst = Image::new(rw, rh, PixelType::U8x3);
            self.resizer
                .resize(
                    &src,
                    &mut dst,
                    &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
                )
                .map_err(|e| Error::Inference(format!("resize: {e}")))?;
            resized = dst.into_vec();
            (&resized, rw, rh)
        };
        let top = round_half_even(f64::from(ph - crop.min(ph)) / 2.0).max(0) as u32;
        let left = round_half_even(f64::from(pw - crop.min(pw)) / 2.0).max(0) as u32;
        let order: [usize; 3] = match self.spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let c = crop as usize;
        let plane = c * c;
        let stride = pw as usize * 3;
        for y in 0..c {
            let row = &pixels[(top as usize + y) * stride + left as usize * 3..][..c * 3];
            match self.spec.layout {
                Layout::Nchw => {
                    for (oc, &sc) in order.iter().enumerate() {
                        let dst = &mut out[oc * plane + y * c..][..c];
                        let lut = &self.lut[sc];
                        for (x, d) in dst.iter_mut().enumerate() {
                            *d = lut[row[x * 3 + sc] as usize];
                        }
                    }
                }
                Layout::Nhwc => {
                    let dst = &mut out[y * c * 3..][..c * 3];
                    for x in 0..c {
                        for (oc, &sc) in order.iter().enumerate() {
                            dst[x * 3 + oc] = self.lut[sc][row[x * 3 + sc] as usize];
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Like [`Preprocessor::run_into`], returning a new vector.
    pub fn run(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.spec.tensor_len()];
        self.run_into(rgb, width, height, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_size_matches_torchvision() {
        let s = PreprocessSpec::default();
        assert_eq!(s.resized_size(512, 512), (256, 256));
        assert_eq!(s.resized_size(640, 480), (341, 256));
        assert_eq!(s.resized_size(480, 640), (256, 341));
        assert_eq!(s.resized_size(300, 451), (256, 384));
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!(round_half_even(16.5), 16);
        assert_eq!(round_half_even(17.5), 18);
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(2.4), 2);
        assert_eq!(round_half_even(58.5), 58);
    }

    #[test]
    fn uniform_image_normalises_to_known_values() {
        let mut p = Preprocessor::new(PreprocessSpec::default()).unwrap();
        let (w, h) = (300u32, 260u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [255u8, 0, 128]).collect();
        let t = p.run(&rgb, w, h).unwrap();
        assert_eq!(t.len(), 3 * 224 * 224);
        let plane = 224 * 224;
        assert!((t[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((t[plane] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
        assert!((t[2 * plane + 17] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-5);
    }

    #[test]
    fn bgr_nhwc_byte_range_layout() {
        let spec = PreprocessSpec {
            resize: 4,
            crop: 4,
            mean: [0.0; 3],
            std: [1.0; 3],
            channel_order: ChannelOrder::Bgr,
            layout: Layout::Nhwc,
            pixel_range: PixelRange::Byte,
        };
        let mut p = Preprocessor::new(spec).unwrap();
        let rgb: Vec<u8> = (0..16).flat_map(|i| [i as u8, 100, 200]).collect();
        let t = p.run(&rgb, 4, 4).unwrap();
        assert_eq!(&t[..6], &[200.0, 100.0, 0.0, 200.0, 100.0, 1.0]);
    }

    #[test]
    fn crop_larger_than_resize_is_refused() {
        let spec = PreprocessSpec {
            resize: 200,
            ..PreprocessSpec::default()
        };
        let err = Preprocessor::new(spec).err().unwrap().to_string();
        assert!(err.contains("resize"), "{err}");
    }
}
