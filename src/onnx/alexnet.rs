//! AlexNet as an ONNX graph: the layout, seeded initial weights, and recognising an
//! AlexNet in a model read back.
//!
//! Two layouts ([`Variant`]):
//!
//! - **Torchvision** (default): `torchvision.models.alexnet` exactly — five convolutions
//!   64-192-384-256-256, three max pools, adaptive average pool to 6×6, and three fully
//!   connected layers 4096-4096-N.
//! - **Paper**: Krizhevsky, Sutskever & Hinton (2012) — 96-256-384-384-256 with local
//!   response normalisation after the first two convolutions and the two-GPU split kept
//!   as `group = 2` on convolutions 2, 4 and 5.
//!
//! Initializer names are the PyTorch `state_dict` names of an `nn.Sequential` built the
//! same way (`features.0.weight`, …, `classifier.6.bias`), so weights move to and from
//! PyTorch by name. Linear layers are `Gemm` with `transB = 1` and weights `[out, in]`,
//! as PyTorch stores them.
//!
//! Dropout (`classifier.0` and `classifier.3`) does nothing at inference and is not
//! emitted; its indices stay reserved so the names keep matching PyTorch.
//!
//! The adaptive average pool to 6×6 is emitted as PyTorch computes it: nothing when the
//! last feature map is already 6×6 (every 224-pixel model), an `AveragePool` with
//! kernel = stride = f/6 when the side f is a multiple of 6, and otherwise two `MatMul`s
//! by the constant bin-averaging matrices `avgpool.rows` `[6, f]` and `avgpool.cols`
//! `[f, 6]` (out = R · X · C). PyTorch's bins are rectangles with uniform weights, so
//! the product is the same average; when f divides 6 (f = 1, 2, 3 — e.g. a 64-pixel
//! input gives f = 1) each bin holds one pixel and the result is an exact copy.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use onnx_protobuf::ModelProto;

use super::metadata::{self, Preprocess};
use super::prng::{fill_normal_parallel, fnv1a64, mix64, NormalJob};
use super::reader::OnnxModel;
use super::writer::{
    attr_float, attr_int, attr_ints, model_proto, write_model_file, Dim, F32Tensor, GraphBuilder,
};
use super::OnnxError;

/// Name of the model's only input: `[batch, 3, S, S]` float32.
pub const INPUT_NAME: &str = "input";
/// Name of the model's only output: `[batch, N]` float32 logits.
pub const OUTPUT_NAME: &str = "logits";
/// Values per independently seeded random stream in [`AlexNetSpec::random_weights`].
const WEIGHT_CHUNK: usize = 1 << 20;
/// Side of the feature map the adaptive average pool produces.
const POOLED: usize = 6;

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

    fn layout_name(self) -> &'static str {
        match self {
            Variant::Torchvision => "torchvision layout",
            Variant::Paper => "paper layout",
        }
    }

    /// The feature extractor, with full-width channel counts, in `nn.Sequential` order.
    fn features(self) -> &'static [Op] {
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
enum Op {
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
enum AvgPool {
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
}

impl Default for AlexNetSpec {
    /// torchvision's AlexNet: 1000 classes, full width, 224 pixels, seed 0.
    fn default() -> Self {
        AlexNetSpec {
            variant: Variant::Torchvision,
            num_classes: 1000,
            width: 1.0,
            input_size: 224,
            seed: 0,
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

    fn avgpool(&self) -> Result<AvgPool, OnnxError> {
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

    /// Fresh weights: He (Kaiming) normal with fan-in and gain √2 for every weight,
    /// zeros for every bias.
    ///
    /// Every block of 2^20 values of a tensor draws from its own SplitMix64 stream,
    /// seeded by `seed`, the tensor's name and the block's index, so the same seed gives
    /// bit-identical weights on every machine whatever its thread count, and tensors
    /// whose shape does not change (e.g. the convolutions when only `num_classes`
    /// changes) get the same values. Blocks are filled on all CPUs (std threads, about
    /// a second of CPU time for the full 61M-parameter model): from async code call it
    /// in `spawn_blocking`.
    pub fn random_weights(&self) -> Result<AlexNetWeights, OnnxError> {
        self.validate()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in self.parameter_shapes()? {
            tensors.insert(name, F32Tensor::zeros(shape));
        }
        let mut jobs = Vec::new();
        for (name, tensor) in tensors.iter_mut() {
            if !name.ends_with(".weight") {
                continue;
            }
            let fan_in: usize = tensor.shape()[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt();
            let stream = mix64(self.seed) ^ fnv1a64(name.as_bytes());
            for (chunk, out) in tensor.data_mut().chunks_mut(WEIGHT_CHUNK).enumerate() {
                jobs.push(NormalJob {
                    seed: mix64(stream.wrapping_add(chunk as u64)),
                    out,
                    std,
                });
            }
        }
        fill_normal_parallel(jobs);
        Ok(AlexNetWeights { tensors })
    }

    /// The `metadata_props` this spec's model carries, in the order written.
    pub fn metadata(&self, class_names: &[String]) -> Vec<(String, String)> {
        let crop = u32::try_from(self.input_size).unwrap_or(u32::MAX);
        vec![
            (
                metadata::CLASSES.to_owned(),
                metadata::classes_to_json(class_names),
            ),
            (
                metadata::PREPROCESS.to_owned(),
                Preprocess::imagenet(crop).to_json(),
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
        ]
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

/// AlexNet's learnable tensors by `state_dict` name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlexNetWeights {
    tensors: BTreeMap<String, F32Tensor>,
}

impl AlexNetWeights {
    /// Weights from tensors named as in [`AlexNetSpec::parameter_shapes`] (e.g. from a
    /// trainer). Use [`AlexNetWeights::check`] to compare them with a spec.
    pub fn new(tensors: BTreeMap<String, F32Tensor>) -> Self {
        AlexNetWeights { tensors }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&F32Tensor> {
        self.tensors.get(name)
    }

    /// The tensor called `name`, for in-place updates.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut F32Tensor> {
        self.tensors.get_mut(name)
    }

    /// Adds or replaces a tensor, returning the one it replaced.
    pub fn insert(&mut self, name: impl Into<String>, tensor: F32Tensor) -> Option<F32Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// All tensors by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &F32Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The tensors by name.
    pub fn into_inner(self) -> BTreeMap<String, F32Tensor> {
        self.tensors
    }

    /// Checks that every tensor `spec` needs is here with the right shape, and nothing
    /// else is; the error names the first offending tensor.
    pub fn check(&self, spec: &AlexNetSpec) -> Result<(), OnnxError> {
        let expected = spec.parameter_shapes()?;
        for (name, shape) in &expected {
            match self.tensors.get(name) {
                None => {
                    return Err(OnnxError::Weights(format!(
                        "`{name}` is missing (expected shape {shape:?})"
                    )))
                }
                Some(t) if t.shape() != shape.as_slice() => {
                    return Err(OnnxError::Weights(format!(
                        "`{name}` has shape {:?}, expected {shape:?} for {} width {}",
                        t.shape(),
                        spec.variant.architecture(),
                        spec.width
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = self
            .tensors
            .keys()
            .find(|k| !expected.iter().any(|(name, _)| name == *k))
        {
            return Err(OnnxError::Weights(format!(
                "`{extra}` is not a parameter of {}",
                spec.variant.architecture()
            )));
        }
        Ok(())
    }

    /// Moves the tensors `spec` needs out of `model` (see [`detect`] for finding `spec`).
    pub fn from_model(spec: &AlexNetSpec, model: &mut OnnxModel) -> Result<Self, OnnxError> {
        check_initializers(spec, model)?;
        let mut tensors = BTreeMap::new();
        for (name, _) in spec.parameter_shapes()? {
            if let Some(t) = model.initializers.remove(&name) {
                tensors.insert(name, t);
            }
        }
        Ok(AlexNetWeights { tensors })
    }
}

/// Builds the ONNX model for `spec` with `weights` and `class_names` (one per class).
///
/// Input `input` `[batch, 3, S, S]`, output `logits` `[batch, N]`, metadata as in
/// [`AlexNetSpec::metadata`]. The model holds its own copy of the weights.
pub fn build_model(
    spec: &AlexNetSpec,
    weights: &AlexNetWeights,
    class_names: &[String],
) -> Result<ModelProto, OnnxError> {
    spec.validate()?;
    weights.check(spec)?;
    if class_names.len() != spec.num_classes {
        return Err(OnnxError::Spec(format!(
            "{} class names given for {} classes",
            class_names.len(),
            spec.num_classes
        )));
    }
    let s = spec.input_size as i64;
    let mut g = GraphBuilder::new(spec.variant.architecture());
    g.input_f32(
        INPUT_NAME,
        &[Dim::batch(), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
    );
    g.output_f32(
        OUTPUT_NAME,
        &[Dim::batch(), Dim::Fixed(spec.num_classes as i64)],
    );
    for (name, _) in spec.parameter_shapes()? {
        if let Some(t) = weights.get(&name) {
            g.initializer(&name, t);
        }
    }

    let mut x = INPUT_NAME.to_owned();
    for (index, &op) in spec.variant.features().iter().enumerate() {
        let node = format!("features.{index}");
        let out = format!("{node}.out");
        match op {
            Op::Conv {
                kernel,
                stride,
                pad,
                group,
                ..
            } => {
                let (k, st, p) = (kernel as i64, stride as i64, pad as i64);
                let w = format!("{node}.weight");
                let b = format!("{node}.bias");
                g.node(
                    "Conv",
                    &node,
                    &[&x, &w, &b],
                    &[&out],
                    vec![
                        attr_ints("kernel_shape", &[k, k]),
                        attr_ints("strides", &[st, st]),
                        attr_ints("pads", &[p, p, p, p]),
                        attr_int("group", group as i64),
                    ],
                );
            }
            Op::Relu => {
                g.node("Relu", &node, &[&x], &[&out], vec![]);
            }
            Op::Lrn => {
                // The paper divides by (k + α Σ a²)^β; ONNX (like PyTorch) by
                // (bias + alpha/size · Σ a²)^beta, so alpha = α · n = 5e-4.
                let alpha = (LRN_PAPER_ALPHA * LRN_SIZE as f64) as f32;
                g.node(
                    "LRN",
                    &node,
                    &[&x],
                    &[&out],
                    vec![
                        attr_int("size", LRN_SIZE),
                        attr_float("alpha", alpha),
                        attr_float("beta", LRN_BETA),
                        attr_float("bias", LRN_BIAS),
                    ],
                );
            }
            Op::MaxPool => {
                g.node(
                    "MaxPool",
                    &node,
                    &[&x],
                    &[&out],
                    vec![
                        attr_ints("kernel_shape", &[3, 3]),
                        attr_ints("strides", &[2, 2]),
                    ],
                );
            }
        }
        x = out;
    }

    match spec.avgpool()? {
        AvgPool::Identity => {}
        AvgPool::Uniform(k) => {
            let k = k as i64;
            g.node(
                "AveragePool",
                "avgpool",
                &[&x],
                &["avgpool.out"],
                vec![
                    attr_ints("kernel_shape", &[k, k]),
                    attr_ints("strides", &[k, k]),
                ],
            );
            x = "avgpool.out".to_owned();
        }
        AvgPool::MatMul(f) => {
            let rows = adaptive_pool_matrix(f, POOLED);
            let cols = transpose(&rows, POOLED, f);
            g.initializer("avgpool.rows", &F32Tensor::new(vec![POOLED, f], rows)?);
            g.initializer("avgpool.cols", &F32Tensor::new(vec![f, POOLED], cols)?);
            g.node(
                "MatMul",
                "avgpool.0",
                &["avgpool.rows", &x],
                &["avgpool.0.out"],
                vec![],
            );
            g.node(
                "MatMul",
                "avgpool.1",
                &["avgpool.0.out", "avgpool.cols"],
                &["avgpool.out"],
                vec![],
            );
            x = "avgpool.out".to_owned();
        }
    }
    g.node(
        "Flatten",
        "flatten",
        &[&x],
        &["flatten.out"],
        vec![attr_int("axis", 1)],
    );
    x = "flatten.out".to_owned();

    // classifier.0 and classifier.3 are Dropout: nothing at inference.
    for (index, relu) in [(1, true), (4, true), (6, false)] {
        let node = format!("classifier.{index}");
        let out = if relu {
            format!("{node}.out")
        } else {
            OUTPUT_NAME.to_owned()
        };
        let (w, b) = (format!("{node}.weight"), format!("{node}.bias"));
        g.node(
            "Gemm",
            &node,
            &[&x, &w, &b],
            &[&out],
            vec![attr_int("transB", 1)],
        );
        x = out;
        if relu {
            let relu_node = format!("classifier.{}", index + 1);
            let relu_out = format!("{relu_node}.out");
            g.node("Relu", &relu_node, &[&x], &[&relu_out], vec![]);
            x = relu_out;
        }
    }
    g.doc(&format!(
        "{} ({}), width {}, {}×{} input, {} classes; written by labelflow",
        spec.variant.architecture(),
        spec.variant.layout_name(),
        spec.width,
        spec.input_size,
        spec.input_size,
        spec.num_classes
    ));
    Ok(model_proto(g.build(), &spec.metadata(class_names)))
}

/// Builds the model (see [`build_model`]) and writes it to `path` atomically; returns the
/// file's lowercase hex sha256.
pub fn write_alexnet(
    path: &Path,
    spec: &AlexNetSpec,
    weights: &AlexNetWeights,
    class_names: &[String],
) -> Result<String, OnnxError> {
    let model = build_model(spec, weights, class_names)?;
    write_model_file(&model, path)
}

/// PyTorch's adaptive average pool from `input` to `output` cells along one axis, as a
/// row-major `[output, input]` matrix: row i averages cells floor(i·in/out) up to
/// ceil((i+1)·in/out).
fn adaptive_pool_matrix(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let start = i * input / output;
        let end = ((i + 1) * input).div_ceil(output);
        let weight = 1.0 / (end - start) as f32;
        for j in start..end {
            m[i * input + j] = weight;
        }
    }
    m
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// An AlexNet read back from a file: its spec, class names and weights.
#[derive(Debug, Clone)]
pub struct AlexNetModel {
    /// Layout, width, classes and input size found in the file (seed from metadata, or 0).
    pub spec: AlexNetSpec,
    /// Class names from metadata, or `class_0`… when the file has none.
    pub class_names: Vec<String>,
    /// The learnable tensors.
    pub weights: AlexNetWeights,
}

/// Reads the AlexNet at `path`: detects its layout (see [`detect`]) and takes its weights.
pub fn read_alexnet(path: &Path) -> Result<AlexNetModel, OnnxError> {
    let mut model = OnnxModel::read(path)?;
    let spec = detect(&model)?;
    let class_names = match model.class_names()? {
        Some(names) if names.len() == spec.num_classes => names,
        Some(names) => {
            return Err(OnnxError::Metadata {
                key: metadata::CLASSES.to_owned(),
                reason: format!(
                    "{} class names for a model with {} outputs",
                    names.len(),
                    spec.num_classes
                ),
            })
        }
        None => default_class_names(spec.num_classes),
    };
    let weights = AlexNetWeights::from_model(&spec, &mut model)?;
    Ok(AlexNetModel {
        spec,
        class_names,
        weights,
    })
}

/// Recognises an AlexNet from its initializers' names and shapes and returns its spec.
///
/// The layout comes from which convolution names exist (`features.3.weight`:
/// torchvision, `features.4.weight`: paper), `num_classes` from `classifier.6.weight`,
/// the width from `labelflow.width` or else from the first convolution's channels, the
/// input size from the `input` shape, `labelflow.input_size` or else 224. Every
/// parameter must then be present with exactly the shape that spec implies; the error
/// names the first missing or odd initializer.
pub fn detect(model: &OnnxModel) -> Result<AlexNetSpec, OnnxError> {
    let shape_of = |name: &str| model.initializer(name).map(|t| t.shape().to_vec());
    let missing = |name: &str, hint: &str| {
        OnnxError::NotAlexNet(format!("missing initializer `{name}` ({hint})"))
    };

    let conv1 = shape_of("features.0.weight")
        .ok_or_else(|| missing("features.0.weight", "the first convolution"))?;
    if conv1.len() != 4 || conv1[1] != 3 || conv1[2] != 11 || conv1[3] != 11 {
        return Err(OnnxError::NotAlexNet(format!(
            "initializer `features.0.weight` has shape {conv1:?}, expected [C, 3, 11, 11]"
        )));
    }
    let variant = if model.initializer("features.3.weight").is_some() {
        Variant::Torchvision
    } else if model.initializer("features.4.weight").is_some() {
        Variant::Paper
    } else {
        return Err(OnnxError::NotAlexNet(
            "found neither `features.3.weight` (torchvision layout) nor `features.4.weight` (paper layout)"
                .to_owned(),
        ));
    };
    let fc3 = shape_of("classifier.6.weight")
        .ok_or_else(|| missing("classifier.6.weight", "the last fully connected layer"))?;
    let num_classes = match fc3.as_slice() {
        [n, _] => *n,
        other => {
            return Err(OnnxError::NotAlexNet(format!(
                "initializer `classifier.6.weight` has shape {other:?}, expected [classes, hidden]"
            )))
        }
    };

    let meta_u64 = |key: &str| -> Result<Option<u64>, OnnxError> {
        model
            .metadata
            .get(key)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|e| OnnxError::Metadata {
                    key: key.to_owned(),
                    reason: format!("{v:?} is not a whole number: {e}"),
                })
            })
            .transpose()
    };
    let input_from_graph = model
        .inputs
        .iter()
        .find(|i| i.name == INPUT_NAME)
        .or(model.inputs.first())
        .and_then(|i| match i.dims.as_slice() {
            [_, Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)] if h == w => usize::try_from(*h).ok(),
            _ => None,
        });
    let input_size = match input_from_graph {
        Some(s) => s,
        None => meta_u64(metadata::INPUT_SIZE)?.map_or(224, |s| s as usize),
    };
    let seed = meta_u64(metadata::SEED)?.unwrap_or(0);

    let base = match variant.features().first() {
        Some(Op::Conv { out, .. }) => *out,
        _ => 64,
    };
    let estimated = conv1[0] as f32 / base as f32;
    let mut candidates = Vec::new();
    if let Some(w) = model.metadata.get(metadata::WIDTH) {
        if let Ok(w) = w.trim().parse::<f32>() {
            candidates.push(w);
        }
    }
    candidates.push(estimated);

    let mut first_error = None;
    for width in candidates {
        let spec = AlexNetSpec {
            variant,
            num_classes,
            width,
            input_size,
            seed,
        };
        match check_initializers(&spec, model) {
            Ok(()) => {
                spec.validate()?;
                return Ok(spec);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| OnnxError::NotAlexNet("no width fits".to_owned())))
}

/// Every parameter of `spec` is an initializer of `model` with the right shape.
fn check_initializers(spec: &AlexNetSpec, model: &OnnxModel) -> Result<(), OnnxError> {
    for (name, shape) in spec.parameter_shapes()? {
        match model.initializer(&name) {
            None => {
                return Err(OnnxError::NotAlexNet(format!(
                    "missing initializer `{name}` (expected shape {shape:?} for {} width {})",
                    spec.variant.architecture(),
                    spec.width
                )))
            }
            Some(t) if t.shape() != shape.as_slice() => {
                return Err(OnnxError::NotAlexNet(format!(
                    "initializer `{name}` has shape {:?}, expected {shape:?} for {} width {}",
                    t.shape(),
                    spec.variant.architecture(),
                    spec.width
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
