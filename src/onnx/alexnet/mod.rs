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

mod detect;
mod graph;
mod spec;
mod weights;

pub use detect::{detect, read_alexnet, AlexNetModel};
pub use graph::{build_half_model, build_model, half_copy, write_alexnet};
pub use spec::{
    default_class_names, min_input_size, AlexNetSpec, FeatureLayer, TraceStep, Variant, INPUT_NAME,
    LRN_BETA, LRN_BIAS, LRN_PAPER_ALPHA, LRN_SIZE, OUTPUT_NAME,
};
pub use weights::AlexNetWeights;

#[cfg(test)]
mod tests;
