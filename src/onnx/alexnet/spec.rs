//! The layouts and their arithmetic: [`Variant`], the layers, [`AlexNetSpec`], the constants.

use std::str::FromStr;

use crate::batch::Element;
use crate::error::OnnxError;
use crate::onnx::metadata;
use crate::preprocess::PreprocessSpec;

/// Name of the model's only input: `[batch, S, S, 3]` uint8, or `[batch, 3, S, S]`
/// float32 (see [`AlexNetSpec::input`]).
pub const INPUT_NAME: &str = "input";
/// Name of the model's only output: `[batch, N]` float32 logits.
pub const OUTPUT_NAME: &str = "logits";
/// Side of the feature map the adaptive average pool produces.
pub(super) const POOLED: usize = 6;

/// The paper's local response normalisation: b = a / (k + α Σ a²)^β over `n` channels.
pub const LRN_SIZE: i64 = 5;
pub const LRN_PAPER_ALPHA: f64 = 1e-4;
pub const LRN_BETA: f32 = 0.75;
pub const LRN_BIAS: f32 = 2.0;

/// Which AlexNet layout to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// `torchvision.models.alexnet` (the "one weird trick" single-GPU layout).
    #[default]
    Torchvision,
    /// The 2012 paper's layout with LRN and grouped convolutions.
    Paper,
}

impl Variant {
    /// The value of [`metadata::ARCHITECTURE`]: `"alexnet"` or `"alexnet-paper"`.
    pub fn architecture(self) -> &'static str {
        match self {
            Variant::Torchvision => "alexnet",
            Variant::Paper => "alexnet-paper",
        }
    }

    pub(super) fn layout_name(self) -> &'static str {
        match self {
            Variant::Torchvision => "torchvision layout",
            Variant::Paper => "paper layout",
        }
    }

    /// The feature extractor, with full-width channel counts, in `nn.Sequential` order.
    pub(super) fn features(self) -> &'static [Op] {
        use Op::*;
        const TORCHVISION: &[Op] = &[
            conv(64, 11, 4, 2, 1),
            Relu,
            MaxPool,
            conv(192, 5, 1, 2, 1),
            Relu,
            MaxPool,
            conv(384, 3, 1, 1, 1),
            Relu,
            conv(256, 3, 1, 1, 1),
            Relu,
            conv(256, 3, 1, 1, 1),
            Relu,
            MaxPool,
        ];
        const PAPER: &[Op] = &[
            conv(96, 11, 4, 2, 1),
            Relu,
            Lrn,
            MaxPool,
            conv(256, 5, 1, 2, 2),
            Relu,
            Lrn,
            MaxPool,
            conv(384, 3, 1, 1, 1),
            Relu,
            conv(384, 3, 1, 1, 2),
            Relu,
            conv(256, 3, 1, 1, 2),
            Relu,
            MaxPool,
        ];
        match self {
            Variant::Torchvision => TORCHVISION,
            Variant::Paper => PAPER,
        }
    }

    /// The feature extractor as a trainer runs it: each layer with its index in
    /// `features` (the `state_dict` name of a convolution is `features.{index}`).
    pub fn feature_layers(self) -> Vec<FeatureLayer> {
        self.features()
            .iter()
            .enumerate()
            .map(|(index, op)| match *op {
                Op::Conv {
                    stride, pad, group, ..
                } => FeatureLayer::Conv {
                    index,
                    stride,
                    pad,
                    groups: group,
                },
                Op::Relu => FeatureLayer::Relu,
                Op::Lrn => FeatureLayer::Lrn,
                Op::MaxPool => FeatureLayer::MaxPool,
            })
            .collect()
    }

    /// Channel counts are rounded to a multiple of this, so grouped convolutions split
    /// evenly.
    fn channel_multiple(self) -> usize {
        match self {
            Variant::Torchvision => 1,
            Variant::Paper => 2,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.architecture())
    }
}

impl FromStr for Variant {
    type Err = OnnxError;

    /// Accepts the architecture names (`alexnet`, `alexnet-paper`) and the short forms
    /// `torchvision` and `paper`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alexnet" | "torchvision" => Ok(Variant::Torchvision),
            "alexnet-paper" | "paper" => Ok(Variant::Paper),
            other => Err(OnnxError::Spec(format!(
                "unknown AlexNet variant {other:?}; expected \"alexnet\" (torchvision) or \"alexnet-paper\""
            ))),
        }
    }
}

/// One feature-extractor layer, for code that runs the network itself (training):
/// convolutions carry their module index, stride, padding and group count; pooling is
/// always 3×3 with stride 2; LRN uses the `LRN_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureLayer {
    Conv {
        index: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    },
    Relu,
    Lrn,
    MaxPool,
}

/// One layer of the feature extractor.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Conv {
        out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        group: usize,
    },
    Relu,
    /// Local response normalisation with the paper's constants.
    Lrn,
    /// Max pool 3×3, stride 2, no padding (both variants).
    MaxPool,
}

const fn conv(out: usize, kernel: usize, stride: usize, pad: usize, group: usize) -> Op {
    Op::Conv {
        out,
        kernel,
        stride,
        pad,
        group,
    }
}

impl Op {
    fn describe(self) -> String {
        match self {
            Op::Conv {
                kernel,
                stride,
                pad,
                ..
            } => format!("Conv {kernel}×{kernel}, stride {stride}, padding {pad}"),
            Op::Relu => "ReLU".to_owned(),
            Op::Lrn => "LRN".to_owned(),
            Op::MaxPool => "MaxPool 3×3, stride 2".to_owned(),
        }
    }

    /// Output side for input side `s`; `None` when the input is smaller than the window.
    fn out_size(self, s: usize) -> Option<usize> {
        match self {
            Op::Conv {
                kernel,
                stride,
                pad,
                ..
            } => (s + 2 * pad)
                .checked_sub(kernel)
                .map(|span| span / stride + 1),
            Op::Relu | Op::Lrn => Some(s),
            Op::MaxPool => s.checked_sub(3).map(|span| span / 2 + 1),
        }
    }

    /// Smallest input side the op accepts.
    fn min_input(self) -> usize {
        match self {
            Op::Conv { kernel, pad, .. } => kernel.saturating_sub(2 * pad).max(1),
            Op::Relu | Op::Lrn => 1,
            Op::MaxPool => 3,
        }
    }
}

/// One step of [`AlexNetSpec::trace`]: a feature layer and the map it produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// Module path, e.g. `features.0`.
    pub layer: String,
    /// What the layer does, e.g. `MaxPool 3×3, stride 2`.
    pub op: String,
    /// Channels of the output.
    pub channels: usize,
    /// Side of the (square) output.
    pub size: usize,
}

/// How the adaptive average pool to 6×6 is expressed for a final feature side f.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AvgPool {
    /// f = 6: nothing to do.
    Identity,
    /// f = 6k: `AveragePool` with kernel = stride = k.
    Uniform(usize),
    /// Any other f: `R · X · C` with the bin-averaging matrices.
    MatMul(usize),
}

/// Everything that decides an AlexNet's graph and initial weights.
#[derive(Debug, Clone, PartialEq)]
pub struct AlexNetSpec {
    /// Layout to build.
    pub variant: Variant,
    /// Number of output classes (N in `logits` `[batch, N]`).
    pub num_classes: usize,
    /// Multiplier for every convolution's channel count and the two hidden fully
    /// connected widths (1.0 = the published sizes). Counts are rounded to the nearest
    /// integer (to the nearest even number, at least 2, for the paper layout, whose
    /// grouped convolutions split channels in two), and are at least 1.
    pub width: f32,
    /// Side of the square input in pixels.
    pub input_size: usize,
    /// Seed of the initial weights.
    pub seed: u64,
    /// The image input: `U8` (RGB bytes `[N, S, S, 3]`, cast and normalised by the
    /// graph's first nodes) or `F32` (the normalised `[N, 3, S, S]` tensor).
    pub input: Element,
}

impl Default for AlexNetSpec {
    /// torchvision's AlexNet: 1000 classes, full width, 224 pixels, seed 0, a uint8 input.
    fn default() -> Self {
        AlexNetSpec {
            variant: Variant::Torchvision,
            num_classes: 1000,
            width: 1.0,
            input_size: 224,
            seed: 0,
            input: Element::U8,
        }
    }
}

impl AlexNetSpec {
    /// Checks the options and that the input survives every layer.
    pub fn validate(&self) -> Result<(), OnnxError> {
        self.trace().map(|_| ())
    }

    /// Channel count for a full-width count `base`.
    fn scaled(&self, base: usize) -> usize {
        let m = self.variant.channel_multiple();
        let c = (base as f64 * f64::from(self.width) / m as f64).round() as usize * m;
        c.max(m)
    }

    /// Output channels of the five convolutions, in order.
    pub fn conv_channels(&self) -> Vec<usize> {
        self.variant
            .features()
            .iter()
            .filter_map(|op| match op {
                Op::Conv { out, .. } => Some(self.scaled(*out)),
                _ => None,
            })
            .collect()
    }

    /// Width of the two hidden fully connected layers (4096 at full width).
    pub fn hidden_width(&self) -> usize {
        ((4096.0 * f64::from(self.width)).round() as usize).max(1)
    }

    fn check_options(&self) -> Result<(), OnnxError> {
        if !(self.width.is_finite() && self.width > 0.0 && self.width <= 4.0) {
            return Err(OnnxError::Spec(format!(
                "width {} must be greater than 0 and at most 4",
                self.width
            )));
        }
        if self.num_classes == 0 {
            return Err(OnnxError::Spec("num_classes must be at least 1".to_owned()));
        }
        if self.input_size == 0 || self.input_size > 8192 {
            return Err(OnnxError::Spec(format!(
                "input size {} must be between 1 and 8192 pixels",
                self.input_size
            )));
        }
        Ok(())
    }

    /// The feature extractor layer by layer, with each output's channels and side.
    ///
    /// Fails, naming the input size and the layer, when the input is too small to
    /// survive the convolutions and pools (the smallest working input is 63 pixels for
    /// both variants; 32 is refused).
    pub fn trace(&self) -> Result<Vec<TraceStep>, OnnxError> {
        self.check_options()?;
        let mut steps = Vec::new();
        let mut size = self.input_size;
        let mut channels = 3;
        for (index, &op) in self.variant.features().iter().enumerate() {
            let Some(out) = op.out_size(size) else {
                let after = steps
                    .last()
                    .map(|s: &TraceStep| format!("after {} ({}) ", s.layer, s.op))
                    .unwrap_or_default();
                return Err(OnnxError::Spec(format!(
                    "input size {} is too small for {} ({}): the feature map {after}is {size}×{size}, \
                     but features.{index} ({}) needs at least {m}×{m}; the smallest input size that works is {}",
                    self.input_size,
                    self.variant.architecture(),
                    self.variant.layout_name(),
                    op.describe(),
                    min_input_size(self.variant),
                    m = op.min_input(),
                )));
            };
            size = out;
            if let Op::Conv { out, .. } = op {
                channels = self.scaled(out);
            }
            steps.push(TraceStep {
                layer: format!("features.{index}"),
                op: op.describe(),
                channels,
                size,
            });
        }
        Ok(steps)
    }

    /// Side of the last feature map, the input of the adaptive average pool.
    pub fn feature_size(&self) -> Result<usize, OnnxError> {
        let trace = self.trace()?;
        Ok(trace.last().map(|s| s.size).unwrap_or(self.input_size))
    }

    pub(super) fn avgpool(&self) -> Result<AvgPool, OnnxError> {
        let f = self.feature_size()?;
        Ok(if f == POOLED {
            AvgPool::Identity
        } else if f % POOLED == 0 {
            AvgPool::Uniform(f / POOLED)
        } else {
            AvgPool::MatMul(f)
        })
    }

    /// Every learnable tensor's `state_dict` name and shape, in layer order.
    pub fn parameter_shapes(&self) -> Result<Vec<(String, Vec<usize>)>, OnnxError> {
        self.check_options()?;
        let mut shapes = Vec::new();
        let mut in_c = 3;
        for (index, &op) in self.variant.features().iter().enumerate() {
            if let Op::Conv {
                out, kernel, group, ..
            } = op
            {
                let out_c = self.scaled(out);
                shapes.push((
                    format!("features.{index}.weight"),
                    vec![out_c, in_c / group, kernel, kernel],
                ));
                shapes.push((format!("features.{index}.bias"), vec![out_c]));
                in_c = out_c;
            }
        }
        let hidden = self.hidden_width();
        let fcs = [
            (1, in_c * POOLED * POOLED, hidden),
            (4, hidden, hidden),
            (6, hidden, self.num_classes),
        ];
        for (index, fan_in, out) in fcs {
            shapes.push((format!("classifier.{index}.weight"), vec![out, fan_in]));
            shapes.push((format!("classifier.{index}.bias"), vec![out]));
        }
        Ok(shapes)
    }

    /// Number of learnable values (61,100,840 for the default spec).
    pub fn parameter_count(&self) -> Result<usize, OnnxError> {
        Ok(self
            .parameter_shapes()?
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum())
    }

    /// The `metadata_props` this spec's model carries, in the order written.
    pub fn metadata(&self, class_names: &[String]) -> Vec<(String, String)> {
        let crop = u32::try_from(self.input_size).unwrap_or(u32::MAX);
        let mut props = vec![
            (
                metadata::CLASSES.to_owned(),
                metadata::classes_to_json(class_names),
            ),
            (
                metadata::PREPROCESS.to_owned(),
                metadata::preprocess_to_json(&PreprocessSpec::imagenet(crop)),
            ),
            (
                metadata::OUTPUT.to_owned(),
                metadata::OUTPUT_LOGITS.to_owned(),
            ),
            (
                metadata::ARCHITECTURE.to_owned(),
                self.variant.architecture().to_owned(),
            ),
            (metadata::WIDTH.to_owned(), self.width.to_string()),
            (metadata::INPUT_SIZE.to_owned(), self.input_size.to_string()),
            (metadata::SEED.to_owned(), self.seed.to_string()),
        ];
        if self.input == Element::U8 {
            props.push((metadata::INPUT.to_owned(), metadata::INPUT_UINT8.to_owned()));
        }
        props
    }
}

/// The smallest square input `variant` accepts (63 pixels for both layouts).
pub fn min_input_size(variant: Variant) -> usize {
    let ops = variant.features();
    (1..=1024)
        .find(|&s| {
            ops.iter()
                .try_fold(s, |size, op| op.out_size(size))
                .is_some()
        })
        .unwrap_or(1024)
}

/// `class_0`, `class_1`, … `class_{n-1}`.
pub fn default_class_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class_{i}")).collect()
}
