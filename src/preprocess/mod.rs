//! Oriented RGB8 pixels → the model's input tensor: resize the shorter side
//! (antialiased bilinear, as PIL's `resize(…, BILINEAR)` does), centre crop, scale,
//! normalise by mean/std, and lay out as NCHW or NHWC in RGB or BGR order.
//!
//! This mirrors torchvision's eval transform (`Resize(256)`, `CenterCrop(224)`,
//! `ToTensor()`, `Normalize(mean, std)`); `tests/data/reference` holds tensors made by
//! that transform for a parity test. The crop is taken in source coordinates before
//! resampling, so only `crop`×`crop` pixels are ever produced per view, whatever the
//! image's aspect ratio (a 2×65000 strip resized whole would be 256×8 320 000).

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
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

keyword_enum!(ChannelOrder, "channel order", "rgb" => ChannelOrder::Rgb, "bgr" => ChannelOrder::Bgr);
keyword_enum!(Layout, "layout", "nchw" => Layout::Nchw, "nhwc" => Layout::Nhwc);
keyword_enum!(PixelRange, "pixel range", "unit" => PixelRange::Unit, "byte" => PixelRange::Byte);
keyword_enum!(Tta, "test-time augmentation", "none" => Tta::None, "flip" => Tta::Flip, "10crop" => Tta::TenCrop);

/// Test-time augmentation: which views of an image the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Tta {
    /// The centre crop only.
    #[default]
    #[serde(rename = "none")]
    None,
    /// The centre crop and its horizontal reflection, softmax outputs (and embeddings)
    /// averaged: twice the inference work, and embeddings that do not change when a
    /// photo is mirrored.
    #[serde(rename = "flip")]
    Flip,
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
            Tta::Flip => 2,
            Tta::TenCrop => 10,
        }
    }
}

/// Largest accepted `crop`: preprocessing buffers are `crop`² pixels per view.
pub const MAX_CROP: u32 = 8192;

/// Defines [`PreprocessSpec`] and [`PreprocessOverrides`] from one field list, so the
/// two can never disagree about which settings exist.
macro_rules! preprocess_settings {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $default:expr ),+ $(,)?) => {
        /// Everything preprocessing needs to know; defaults are ImageNet's.
        ///
        /// Its JSON form is the contract stored in a model's `labelflow.preprocess`
        /// metadata ([`crate::onnx::metadata::PREPROCESS`]): fields in this order, a field
        /// left out takes its default, an unknown field is refused.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct PreprocessSpec {
            $( $(#[$doc])* pub $field: $ty, )+
        }

        impl Default for PreprocessSpec {
            fn default() -> Self {
                Self { $( $field: $default, )+ }
            }
        }

        /// Settings that replace those of a [`PreprocessSpec`] (the pipeline file's
        /// `[preprocess]` table and the `run` flags): the same fields, each optional.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct PreprocessOverrides {
            $( $(#[$doc])* #[serde(default, skip_serializing_if = "Option::is_none")] pub $field: Option<$ty>, )+
        }

        impl PreprocessOverrides {
            /// Layer `over` on top of `self` (fields set in `over` win).
            pub fn merged(self, over: PreprocessOverrides) -> Self {
                Self { $( $field: over.$field.or(self.$field), )+ }
            }

            /// Every field set here replaces the base's.
            fn replace(&self, base: PreprocessSpec) -> PreprocessSpec {
                PreprocessSpec { $( $field: self.$field.unwrap_or(base.$field), )+ }
            }
        }
    };
}

preprocess_settings! {
    /// Length the shorter image side is resized to.
    resize: u32 = IMAGENET_RESIZE,
    /// Side of the square centre crop taken after resizing (the model's input size).
    crop: u32 = IMAGENET_CROP,
    /// Per-channel mean, in RGB order, in the units of `pixel_range` (0–1 for `unit`,
    /// 0–255 for `byte`, e.g. Caffe's `[123.68, 116.78, 103.94]`).
    mean: [f32; 3] = IMAGENET_MEAN,
    /// Per-channel standard deviation, in RGB order, in the same units.
    std: [f32; 3] = IMAGENET_STD,
    /// `rgb` or `bgr`.
    channel_order: ChannelOrder = ChannelOrder::Rgb,
    /// `nchw` or `nhwc`.
    layout: Layout = Layout::Nchw,
    /// `unit` (pixels in 0–1 before normalising) or `byte` (0–255).
    pixel_range: PixelRange = PixelRange::Unit,
}

/// torchvision's ImageNet evaluation transform: `Resize(256)`, `CenterCrop(224)`.
const IMAGENET_RESIZE: u32 = 256;
const IMAGENET_CROP: u32 = 224;
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl PreprocessOverrides {
    /// Apply to a base spec. When only the crop is overridden, the resize keeps the
    /// base's resize/crop ratio (256/224 for ImageNet models).
    pub fn apply(&self, base: PreprocessSpec) -> PreprocessSpec {
        let mut spec = self.replace(base.clone());
        if self.resize.is_none() && self.crop.is_some() {
            spec.resize = scaled_resize(spec.crop, base.resize, base.crop);
        }
        spec
    }
}

/// The resize that keeps `resize_ref / crop_ref` for a crop of `crop` pixels (never
/// below the crop).
fn scaled_resize(crop: u32, resize_ref: u32, crop_ref: u32) -> u32 {
    if crop_ref == 0 {
        return resize_ref.max(crop);
    }
    let r = (f64::from(crop) * f64::from(resize_ref) / f64::from(crop_ref)).round();
    // At most MAX_CROP · u32::MAX, far inside f64's exact range; saturate above u32.
    (r.min(f64::from(u32::MAX)) as u32).max(crop)
}

impl PreprocessSpec {
    /// torchvision's ImageNet evaluation transform for a `crop`-pixel input: resize the
    /// shorter side to `round(crop · 256 / 224)`, centre crop, ImageNet mean and std on
    /// 0–1 RGB, NCHW. The one place the 256/224 rule lives.
    pub fn imagenet(crop: u32) -> Self {
        PreprocessSpec {
            resize: scaled_resize(crop, IMAGENET_RESIZE, IMAGENET_CROP),
            crop,
            ..PreprocessSpec::default()
        }
    }

    /// The JSON text stored under [`crate::onnx::metadata::PREPROCESS`].
    pub fn to_json(&self) -> String {
        // Serialising a struct of numbers and unit enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON text stored under [`crate::onnx::metadata::PREPROCESS`]; fields
    /// left out take ImageNet's values, unknown fields are refused.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks the values make sense; the message names the field to fix.
    pub fn validate(&self) -> Result<()> {
        if self.crop == 0 {
            return Err(Error::Config("preprocess.crop must be at least 1".into()));
        }
        if self.crop > MAX_CROP {
            return Err(Error::Config(format!(
                "preprocess.crop ({}) must be at most {MAX_CROP}",
                self.crop
            )));
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
    /// computes it (`int(long * size / short)`). The longer side of a thin strip can
    /// exceed `u32::MAX` (1×20000 at 256 is 256×5 120 000; the product itself is never
    /// allocated), hence u64.
    pub fn resized_extent(&self, width: u32, height: u32) -> (u64, u64) {
        let r = u64::from(self.resize);
        let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
        // At most (2³² − 1)² / 1, which fits in a u64.
        if w <= h {
            (r, ((h * r) / w).max(1))
        } else {
            (((w * r) / h).max(1), r)
        }
    }

    /// [`PreprocessSpec::resized_extent`] for callers that materialise the resized
    /// image, saturating at `u32::MAX`: only use it where that size is acceptable,
    /// e.g. when shrinking (shorter side above `resize`).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (w, h) = self.resized_extent(width, height);
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        (clamp(w), clamp(h))
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

/// Half of `slack`, rounded half to even: Python's `round(slack / 2)`, which
/// torchvision's centre-crop offsets use.
fn half_round_even(slack: u64) -> u64 {
    let half = slack / 2;
    if slack % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Why an image could not be preprocessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    #[error("image has a zero dimension ({width}x{height})")]
    ZeroSized { width: u32, height: u32 },
    #[error(
        "pixel buffer holds {got} bytes, expected {expected} for a {width}x{height} RGB8 image"
    )]
    PixelBuffer {
        width: u32,
        height: u32,
        got: usize,
        expected: u64,
    },
    #[error(
        "output buffer holds {got} values, expected {expected} ({views} view(s) of {per_view})"
    )]
    OutputBuffer {
        got: usize,
        expected: usize,
        views: usize,
        per_view: usize,
    },
    #[error("resize failed: {0}")]
    Resize(String),
}

/// Where a crop lies along one axis of the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Start,
    Centre,
    End,
}

/// One axis of one view: the source interval that maps onto the part of the crop the
/// resized image covers, and where that part lies in the crop (the rest is the zero
/// padding torchvision's `CenterCrop` adds when the image is smaller than the crop).
#[derive(Debug, Clone, Copy, PartialEq)]
struct AxisWindow {
    /// First source pixel (fractional) of the window.
    src_start: f64,
    /// Source pixels (fractional) the window spans.
    src_len: f64,
    /// Crop pixels before the covered part.
    pad: u32,
    /// Crop pixels the image covers.
    covered: u32,
}

impl AxisWindow {
    /// `src`: source length; `resized`: length after torchvision's resize; `crop`:
    /// crop length. All arithmetic is in u64/f64: `resized` can exceed `u32::MAX`.
    fn new(src: u32, resized: u64, crop: u32, anchor: Anchor) -> Self {
        let src_f = f64::from(src);
        if resized < u64::from(crop) {
            // Only the centre is defined here (torchvision's five-crop refuses); every
            // anchor pads like `CenterCrop`: (crop - size) / 2 before, the rest after.
            let covered = u32::try_from(resized).unwrap_or(crop);
            return Self {
                src_start: 0.0,
                src_len: src_f,
                pad: (crop - covered) / 2,
                covered,
            };
        }
        let slack = resized - u64::from(crop);
        let offset = match anchor {
            Anchor::Start => 0,
            Anchor::Centre => half_round_even(slack),
            Anchor::End => slack,
        };
        // Source pixels per resized pixel, as the resampler computes it for the whole
        // image (source length / destination length).
        let scale = src_f / resized as f64;
        let src_len = (f64::from(crop) * scale).min(src_f);
        let src_start = (offset as f64 * scale).clamp(0.0, src_f - src_len);
        Self {
            src_start,
            src_len,
            pad: 0,
            covered: crop,
        }
    }
}

/// What a preprocessed view is written as: normalised `f32`, or the view's own RGB
/// bytes (`u8`, NHWC) for a model whose graph casts and normalises them.
pub trait ViewElement: Copy + Default + Send + 'static {
    #[doc(hidden)]
    fn write_view(pre: &Preprocessor, flip: bool, out: &mut [Self]);
}

impl ViewElement for f32 {
    fn write_view(pre: &Preprocessor, flip: bool, out: &mut [f32]) {
        pre.write_view(flip, out);
    }
}

impl ViewElement for u8 {
    fn write_view(pre: &Preprocessor, flip: bool, out: &mut [u8]) {
        pre.copy_view(flip, out);
    }
}

/// Reusable preprocessing state: the resizer's scratch buffers and one `crop`×`crop`
/// RGB8 buffer. Make one per decode thread; nothing else is allocated per image.
pub struct Preprocessor {
    spec: PreprocessSpec,
    resizer: Resizer,
    /// Per channel (RGB), value of each byte after scaling and normalisation.
    lut: [[f32; 256]; 3],
    /// The current view, `crop`×`crop` packed RGB8.
    view: Vec<u8>,
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
        let view = vec![0u8; 3 * spec.crop as usize * spec.crop as usize];
        Ok(Self {
            spec,
            resizer: Resizer::new(),
            lut,
            view,
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
        self.prepare(rgb, width, height, tta, out)
            .map_err(|e| Error::Inference(format!("preprocessing: {e}")))
    }

    /// [`Preprocessor::run_views_into`] with a typed error.
    ///
    /// Each view is cut from the source before resizing: the source window that maps
    /// onto the view's crop of the torchvision-resized image is resampled straight
    /// into a `crop`×`crop` buffer, so memory stays bounded by `crop`² whatever the
    /// aspect ratio. The resampler computes each output pixel from the same source
    /// taps and weights as a full resize (taps outside the window but inside the image
    /// included), so the result is "resize, then crop" — identical on the fixture
    /// photos; on noise images, at most one grey level off for a small share of values,
    /// because the resampler picks its fixed-point precision from the largest weight it
    /// computes per axis, and a window that misses both borders of an axis lacks their
    /// renormalised weights.
    ///
    /// `out` is `f32` (normalised, in the spec's layout and channel order) or `u8`
    /// (the view's RGB bytes, NHWC, for models that normalise in their graph).
    pub fn prepare<T: ViewElement>(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        tta: Tta,
        out: &mut [T],
    ) -> std::result::Result<(), PreprocessError> {
        let per_view = self.spec.tensor_len();
        if out.len() != per_view * tta.views() {
            return Err(PreprocessError::OutputBuffer {
                got: out.len(),
                expected: per_view * tta.views(),
                views: tta.views(),
                per_view,
            });
        }
        if width == 0 || height == 0 {
            return Err(PreprocessError::ZeroSized { width, height });
        }
        let expected = u64::from(width) * u64::from(height) * 3;
        if rgb.len() as u64 != expected {
            return Err(PreprocessError::PixelBuffer {
                width,
                height,
                got: rgb.len(),
                expected,
            });
        }
        let src = ImageRef::new(width, height, rgb, PixelType::U8x3)
            .map_err(|e| PreprocessError::Resize(format!("source image: {e}")))?;
        let (rw, rh) = self.spec.resized_extent(width, height);
        let crop = self.spec.crop;
        let anchors: &[(Anchor, Anchor)] = match tta {
            Tta::None | Tta::Flip => &[(Anchor::Centre, Anchor::Centre)],
            Tta::TenCrop => &[
                (Anchor::Centre, Anchor::Centre),
                (Anchor::Start, Anchor::Start),
                (Anchor::End, Anchor::Start),
                (Anchor::Start, Anchor::End),
                (Anchor::End, Anchor::End),
            ],
        };
        // `out` holds the plain views, then (flip, ten-crop) the mirrored ones.
        let (plain, mirrored) = out.split_at_mut(per_view * anchors.len());
        let mut mirrored = mirrored.chunks_exact_mut(per_view);
        for (&(ax, ay), dst) in anchors.iter().zip(plain.chunks_exact_mut(per_view)) {
            let x = AxisWindow::new(width, rw, crop, ax);
            let y = AxisWindow::new(height, rh, crop, ay);
            self.resample_view(&src, x, y)?;
            T::write_view(self, false, dst);
            if let Some(dst) = mirrored.next() {
                T::write_view(self, true, dst);
            }
        }
        Ok(())
    }

    /// Resample the source window of `x`×`y` into the view buffer.
    fn resample_view(
        &mut self,
        src: &ImageRef<'_>,
        x: AxisWindow,
        y: AxisWindow,
    ) -> std::result::Result<(), PreprocessError> {
        let crop = self.spec.crop;
        let padded = x.covered < crop || y.covered < crop;
        if padded {
            self.view.fill(0);
        }
        let mut view = Image::from_slice_u8(crop, crop, &mut self.view, PixelType::U8x3)
            .map_err(|e| PreprocessError::Resize(format!("view buffer: {e}")))?;
        let mut dst = CroppedImageMut::new(&mut view, x.pad, y.pad, x.covered, y.covered)
            .map_err(|e| PreprocessError::Resize(format!("view window: {e}")))?;
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(x.src_start, y.src_start, x.src_len, y.src_len);
        self.resizer
            .resize(src, &mut dst, &options)
            .map_err(|e| PreprocessError::Resize(e.to_string()))
    }

    /// Copy the view buffer's RGB bytes into `out` (NHWC), mirrored left-right when
    /// `flip`.
    fn copy_view(&self, flip: bool, out: &mut [u8]) {
        if !flip {
            out.copy_from_slice(&self.view);
            return;
        }
        let c = self.spec.crop as usize;
        for (dst, row) in out
            .chunks_exact_mut(c * 3)
            .zip(self.view.chunks_exact(c * 3))
        {
            for (d, p) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3).rev()) {
                d.copy_from_slice(p);
            }
        }
    }

    /// Normalise the view buffer into `out`, mirrored left-right when `flip`.
    fn write_view(&self, flip: bool, out: &mut [f32]) {
        let order: [usize; 3] = match self.spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let c = self.spec.crop as usize;
        let rows = self.view.chunks_exact(c * 3);
        match self.spec.layout {
            Layout::Nchw => {
                for (plane, &sc) in out.chunks_exact_mut(c * c).zip(&order) {
                    let lut = &self.lut[sc];
                    for (dst, row) in plane.chunks_exact_mut(c).zip(rows.clone()) {
                        let px = row.chunks_exact(3);
                        if flip {
                            for (d, p) in dst.iter_mut().zip(px.rev()) {
                                *d = lut[usize::from(p[sc])];
                            }
                        } else {
                            for (d, p) in dst.iter_mut().zip(px) {
                                *d = lut[usize::from(p[sc])];
                            }
                        }
                    }
                }
            }
            Layout::Nhwc => {
                let put = |d: &mut [f32], p: &[u8]| {
                    for (v, &sc) in d.iter_mut().zip(&order) {
                        *v = self.lut[sc][usize::from(p[sc])];
                    }
                };
                for (dst, row) in out.chunks_exact_mut(c * 3).zip(rows) {
                    let px = row.chunks_exact(3);
                    if flip {
                        dst.chunks_exact_mut(3)
                            .zip(px.rev())
                            .for_each(|(d, p)| put(d, p));
                    } else {
                        dst.chunks_exact_mut(3).zip(px).for_each(|(d, p)| put(d, p));
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
mod tests;
