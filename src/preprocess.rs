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
parse_enum!(Tta, "test-time augmentation", "none" => Tta::None, "10crop" => Tta::TenCrop);

/// Test-time augmentation: which views of an image the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Tta {
    /// The centre crop only.
    #[default]
    #[serde(rename = "none")]
    None,
    /// The 2012 paper's evaluation: the four corner crops and the centre crop of the
    /// resized image, and the horizontal reflection of each; the model's softmax
    /// outputs of the ten are averaged.
    #[serde(rename = "10crop")]
    TenCrop,
}

impl Tta {
    /// Input tensors per image.
    pub fn views(self) -> usize {
        match self {
            Tta::None => 1,
            Tta::TenCrop => 10,
        }
    }
}

impl std::fmt::Display for Tta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tta::None => "none",
            Tta::TenCrop => "10crop",
        })
    }
}

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

/// Resample packed RGB8 pixels from `from` to `to` (width, height) with the
/// antialiased bilinear filter every resize in the project uses (PIL's `BILINEAR`).
pub fn resize_rgb(
    resizer: &mut Resizer,
    rgb: &[u8],
    from: (u32, u32),
    to: (u32, u32),
) -> std::result::Result<Vec<u8>, String> {
    let src = ImageRef::new(from.0, from.1, rgb, PixelType::U8x3)
        .map_err(|e| format!("resize source: {e}"))?;
    let mut dst = Image::new(to.0, to.1, PixelType::U8x3);
    resizer
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| format!("resize: {e}"))?;
    Ok(dst.into_vec())
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
        self.run_views_into(rgb, width, height, Tta::None, out)
    }

    /// Like [`Preprocessor::run_into`] for every view `tta` asks for, one tensor
    /// after another in `out` (length `tta.views()` × [`PreprocessSpec::tensor_len`]).
    /// Ten-crop order: centre, top-left, top-right, bottom-left, bottom-right, then
    /// the same five mirrored.
    pub fn run_views_into(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        tta: Tta,
        out: &mut [f32],
    ) -> Result<()> {
        let len = self.spec.tensor_len();
        if out.len() != len * tta.views() {
            return Err(Error::Inference(format!(
                "preprocess buffer holds {} values, expected {}",
                out.len(),
                len * tta.views()
            )));
        }
        let (rw, rh) = self.spec.resized_size(width, height);
        let resized;
        let (pixels, pw, ph): (&[u8], u32, u32) = if (rw, rh) == (width, height) {
            (rgb, width, height)
        } else {
            resized = resize_rgb(&mut self.resizer, rgb, (width, height), (rw, rh))
                .map_err(Error::Inference)?;
            (&resized, rw, rh)
        };
        let crop = self.spec.crop;
        let top = round_half_even(f64::from(ph - crop.min(ph)) / 2.0).max(0) as u32;
        let left = round_half_even(f64::from(pw - crop.min(pw)) / 2.0).max(0) as u32;
        let (right, bottom) = (pw - crop.min(pw), ph - crop.min(ph));
        let origins = [
            (left, top),
            (0, 0),
            (right, 0),
            (0, bottom),
            (right, bottom),
        ];
        let views: &[(u32, u32)] = match tta {
            Tta::None => &origins[..1],
            Tta::TenCrop => &origins,
        };
        let mut chunks = out.chunks_exact_mut(len);
        for flip in [false, true] {
            if flip && tta == Tta::None {
                break;
            }
            for &(x0, y0) in views {
                let dst = chunks.next().ok_or_else(|| {
                    Error::Inference("preprocess buffer too small for the views".into())
                })?;
                self.write_crop(pixels, pw, x0, y0, flip, dst);
            }
        }
        Ok(())
    }

    /// Normalise the `crop`×`crop` window at (`x0`, `y0`) of `pixels` (RGB8 rows of
    /// `pw` pixels) into `out`, mirrored left-right when `flip`.
    fn write_crop(&self, pixels: &[u8], pw: u32, x0: u32, y0: u32, flip: bool, out: &mut [f32]) {
        let order: [usize; 3] = match self.spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let c = self.spec.crop as usize;
        let plane = c * c;
        let stride = pw as usize * 3;
        let src_x = |x: usize| if flip { c - 1 - x } else { x };
        for y in 0..c {
            let row = &pixels[(y0 as usize + y) * stride + x0 as usize * 3..][..c * 3];
            match self.spec.layout {
                Layout::Nchw => {
                    for (oc, &sc) in order.iter().enumerate() {
                        let dst = &mut out[oc * plane + y * c..][..c];
                        let lut = &self.lut[sc];
                        if flip {
                            for (x, d) in dst.iter_mut().enumerate() {
                                *d = lut[row[src_x(x) * 3 + sc] as usize];
                            }
                        } else {
                            for (x, d) in dst.iter_mut().enumerate() {
                                *d = lut[row[x * 3 + sc] as usize];
                            }
                        }
                    }
                }
                Layout::Nhwc => {
                    let dst = &mut out[y * c * 3..][..c * 3];
                    for x in 0..c {
                        let sx = src_x(x);
                        for (oc, &sc) in order.iter().enumerate() {
                            dst[x * 3 + oc] = self.lut[sc][row[sx * 3 + sc] as usize];
                        }
                    }
                }
            }
        }
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
    fn ten_crop_takes_corners_centre_and_mirrors() {
        // A 6×4 image whose red channel is x + 10·y; crop 2, no resize.
        let spec = PreprocessSpec {
            resize: 4,
            crop: 2,
            mean: [0.0; 3],
            std: [1.0; 3],
            pixel_range: PixelRange::Byte,
            ..PreprocessSpec::default()
        };
        let mut p = Preprocessor::new(spec).unwrap();
        let (w, h) = (6u32, 4u32);
        let rgb: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x + 10 * y) as u8, 0, 0]))
            .collect();
        let mut out = vec![0f32; 10 * 12];
        p.run_views_into(&rgb, w, h, Tta::TenCrop, &mut out)
            .unwrap();
        let red = |v: usize| out[v * 12..v * 12 + 4].to_vec();
        assert_eq!(red(0), [12.0, 13.0, 22.0, 23.0]); // centre (left 2, top 1)
        assert_eq!(red(1), [0.0, 1.0, 10.0, 11.0]); // top-left
        assert_eq!(red(2), [4.0, 5.0, 14.0, 15.0]); // top-right
        assert_eq!(red(3), [20.0, 21.0, 30.0, 31.0]); // bottom-left
        assert_eq!(red(4), [24.0, 25.0, 34.0, 35.0]); // bottom-right
        assert_eq!(red(5), [13.0, 12.0, 23.0, 22.0]); // centre, mirrored
        assert_eq!(red(9), [25.0, 24.0, 35.0, 34.0]);
        // The first view is exactly the plain centre crop.
        assert_eq!(p.run(&rgb, w, h).unwrap(), out[..12].to_vec());
        assert_eq!("10crop".parse::<Tta>().unwrap(), Tta::TenCrop);
        assert!("5crop".parse::<Tta>().unwrap_err().contains("10crop"));
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
