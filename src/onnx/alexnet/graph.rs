//! The ONNX graph for a spec and weights: [`build_model`] and [`write_alexnet`].

use std::path::Path;

use onnx_protobuf::ModelProto;

use super::detect::detect;
use super::spec::{
    AlexNetSpec, AvgPool, Op, INPUT_NAME, LRN_BETA, LRN_BIAS, LRN_PAPER_ALPHA, LRN_SIZE,
    OUTPUT_NAME, POOLED,
};
use super::weights::AlexNetWeights;
use crate::batch::Element;
use crate::error::OnnxError;
use crate::onnx::metadata;
use crate::onnx::reader::OnnxModel;
use crate::onnx::writer::{
    attr_float, attr_int, attr_ints, model_proto, write_model_file, Dim, F32Tensor, GraphBuilder,
};
use crate::preprocess::{PixelRange, PreprocessSpec};
use onnx_protobuf::Message;

/// Builds the ONNX model for `spec` with `weights` and `class_names` (one per class).
///
/// Input `input` `[batch, S, S, 3]` uint8 (or `[batch, 3, S, S]` float32 with
/// [`Element::F32`]), output `logits` `[batch, N]`, metadata as in
/// [`AlexNetSpec::metadata`]. The model holds its own copy of the weights.
pub fn build_model(
    spec: &AlexNetSpec,
    weights: &AlexNetWeights,
    class_names: &[String],
) -> Result<ModelProto, OnnxError> {
    build(spec, weights, class_names, false)
}

/// [`build_model`] in half precision: the weights rounded to float16 and the network
/// computed in float16 after the input is normalised (in float32) and cast; the logits
/// are cast back to float32, so the model's inputs and outputs are the float model's.
/// Metadata [`metadata::PRECISION`] says `fp16`.
pub fn build_half_model(
    spec: &AlexNetSpec,
    weights: &AlexNetWeights,
    class_names: &[String],
) -> Result<ModelProto, OnnxError> {
    build(spec, weights, class_names, true)
}

/// [`build_half_model`] from the bytes of a float AlexNet this project made, trained or
/// imported, serialised: what `--precision fp16` runs.
pub fn half_copy(bytes: &[u8]) -> Result<Vec<u8>, OnnxError> {
    let mut model = OnnxModel::read_from(&mut &bytes[..])?;
    let spec = detect(&model)?;
    let class_names = model
        .class_names()?
        .unwrap_or_else(|| super::spec::default_class_names(spec.num_classes));
    let weights = AlexNetWeights::from_model(&spec, &mut model)?;
    let proto = build_half_model(&spec, &weights, &class_names)?;
    proto
        .write_to_bytes()
        .map_err(|source| OnnxError::Protobuf {
            context: "writing the half-precision model".into(),
            source,
        })
}

fn build(
    spec: &AlexNetSpec,
    weights: &AlexNetWeights,
    class_names: &[String],
    half: bool,
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
    // With a uint8 input: the factor folded into the first convolution's weights.
    let mut fold = None;
    let mut x = match spec.input {
        Element::F32 => {
            g.input_f32(
                INPUT_NAME,
                &[Dim::batch(), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
            );
            INPUT_NAME.to_owned()
        }
        Element::U8 => {
            g.input_u8(
                INPUT_NAME,
                &[Dim::batch(), Dim::Fixed(s), Dim::Fixed(s), Dim::Fixed(3)],
            );
            let (x, factor) =
                normalise_in_graph(&mut g, &PreprocessSpec::imagenet(spec.input_size as u32))?;
            fold = Some(factor);
            x
        }
    };
    g.output_f32(
        OUTPUT_NAME,
        &[Dim::batch(), Dim::Fixed(spec.num_classes as i64)],
    );
    // Every constant of the network in the network's precision.
    let constant = |g: &mut GraphBuilder, name: &str, t: &F32Tensor| {
        if half {
            g.initializer_f16(name, t);
        } else {
            g.initializer(name, t);
        }
    };
    for (name, _) in spec.parameter_shapes()? {
        if let Some(t) = weights.get(&name) {
            constant(&mut g, &name, t);
        }
    }
    if half {
        // ONNX TensorProto.DataType FLOAT16.
        g.node(
            "Cast",
            "input.half",
            &[&x],
            &["input.half.out"],
            vec![attr_int("to", 10)],
        );
        x = "input.half.out".to_owned();
    }

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
                let mut w = format!("{node}.weight");
                if let (0, Some(factor)) = (index, fold) {
                    // The network's own weights stay as they are (a model read back
                    // has them); the convolution runs on a scaled copy, a constant
                    // that ONNX Runtime folds when it loads the model.
                    let f = F32Tensor::new(vec![1, 3, 1, 1], factor.map(|v| v as f32).to_vec())?;
                    constant(&mut g, "input.factor", &f);
                    let folded = format!("input.{w}");
                    g.node(
                        "Mul",
                        "input.fold",
                        &[&w, "input.factor"],
                        &[&folded],
                        vec![],
                    );
                    w = folded;
                }
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
            let (rows, cols) = (
                F32Tensor::new(vec![POOLED, f], rows)?,
                F32Tensor::new(vec![f, POOLED], cols)?,
            );
            constant(&mut g, "avgpool.rows", &rows);
            constant(&mut g, "avgpool.cols", &cols);
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
        let out = match (relu, half) {
            (true, _) => format!("{node}.out"),
            (false, false) => OUTPUT_NAME.to_owned(),
            (false, true) => "logits.half".to_owned(),
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
    if half {
        g.node(
            "Cast",
            "logits.float",
            &[&x],
            &[OUTPUT_NAME],
            vec![attr_int("to", 1)],
        );
    }
    g.doc(&format!(
        "{} ({}), width {}, {}×{} input, {} classes{}; written by labelflow",
        spec.variant.architecture(),
        spec.variant.layout_name(),
        spec.width,
        spec.input_size,
        spec.input_size,
        spec.num_classes,
        if half { ", float16" } else { "" }
    ));
    let mut metadata = spec.metadata(class_names);
    if half {
        metadata.push((metadata::PRECISION.to_owned(), "fp16".to_owned()));
    }
    Ok(model_proto(g.build(), &metadata))
}

/// The first nodes of a model with a uint8 input: Transpose to NCHW (on the bytes, a
/// quarter of the float traffic) → Cast → Sub(the mean in pixel units). The division by
/// the standard deviation (and the 1/255 of 0–1 pixels) is folded into the first
/// convolution's weights (a Mul of the weights by `s/σ` per input channel, which ONNX
/// Runtime computes once at load): `W · ((x·s − m)/σ) = (W·s/σ) · (x − m/s)`, exact in
/// real arithmetic, and the convolution's zero padding still stands for the mean. Returns the centred tensor's name and the per-channel factor `s/σ`.
fn normalise_in_graph(
    g: &mut GraphBuilder,
    pre: &PreprocessSpec,
) -> Result<(String, [f64; 3]), OnnxError> {
    let scale = match pre.pixel_range {
        PixelRange::Unit => 1.0 / 255.0,
        PixelRange::Byte => 1.0,
    };
    g.node(
        "Transpose",
        "input.nchw",
        &[INPUT_NAME],
        &["input.nchw.out"],
        vec![attr_ints("perm", &[0, 3, 1, 2])],
    );
    // ONNX TensorProto.DataType FLOAT.
    g.node(
        "Cast",
        "input.cast",
        &["input.nchw.out"],
        &["input.float"],
        vec![attr_int("to", 1)],
    );
    let mean: Vec<f32> = pre
        .mean
        .iter()
        .map(|&m| (f64::from(m) / scale) as f32)
        .collect();
    g.initializer("input.mean", &F32Tensor::new(vec![1, 3, 1, 1], mean)?);
    g.node(
        "Sub",
        "input.sub",
        &["input.float", "input.mean"],
        &["input.centred"],
        vec![],
    );
    let factor = [0, 1, 2].map(|c| scale / f64::from(pre.std[c]));
    Ok(("input.centred".to_owned(), factor))
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
pub(super) fn adaptive_pool_matrix(input: usize, output: usize) -> Vec<f32> {
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
