//! An AlexNet read back: [`read_alexnet`], and [`detect`] finding its spec from its initializers.

use std::path::Path;

use super::spec::{default_class_names, AlexNetSpec, Op, Variant, INPUT_NAME};
use super::weights::{check_initializers, AlexNetWeights};
use crate::batch::Element;
use crate::error::OnnxError;
use crate::onnx::metadata;
use crate::onnx::reader::OnnxModel;
use crate::onnx::writer::Dim;

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
    let graph_input = model
        .inputs
        .iter()
        .find(|i| i.name == INPUT_NAME)
        .or(model.inputs.first());
    // ONNX TensorProto.DataType UINT8: RGB bytes, NHWC, normalised by the graph.
    let input = match graph_input.map(|i| i.elem_type) {
        Some(2) => Element::U8,
        _ => Element::F32,
    };
    let input_from_graph = graph_input.and_then(|i| match (input, i.dims.as_slice()) {
        (Element::F32, [_, Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)])
        | (Element::U8, [_, Dim::Fixed(h), Dim::Fixed(w), Dim::Fixed(3)])
            if h == w =>
        {
            usize::try_from(*h).ok()
        }
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
            input,
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
