//! `labelflow model import`: an AlexNet from where users have one — a safetensors file
//! (this project's checkpoints, or a PyTorch `state_dict` saved as safetensors), a
//! PyTorch `.pth`/`.pt` file (read by [`super::torch_file`], no PyTorch needed), or an ONNX file
//! exported from torchvision — written as the ONNX model the batch job runs, with class
//! names and preprocessing in its metadata.
//!
//! Tensors are matched by their PyTorch `state_dict` names (`features.0.weight` …
//! `classifier.6.bias`), after dropping a wrapper prefix (`module.`, `model.`,
//! `_orig_mod.`); what else the file holds (optimiser state, buffers) is ignored. The
//! layout, width and classes are read from the shapes ([`super::alexnet::detect`]); a
//! file that is not AlexNet-shaped is refused with the first tensor that does not fit.

use std::collections::BTreeMap;
use std::path::Path;

use super::alexnet::{self, AlexNetSpec, AlexNetWeights};
use super::metadata;
use super::reader::OnnxModel;
use super::torch_file::FloatKind;
use super::writer::F32Tensor;
use crate::batch::Element;
use crate::error::OnnxError;

/// ImageNet's 1 000 class names in torchvision's order and spelling (the labels of
/// torchvision's pretrained AlexNet), one per line.
pub const IMAGENET_CLASSES: &str = include_str!("imagenet_classes.txt");

/// The class names of ImageNet-1k, in output order.
pub fn imagenet_class_names() -> Vec<String> {
    IMAGENET_CLASSES.lines().map(str::to_string).collect()
}

/// What kind of file an import reads, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Onnx,
    Safetensors,
    /// `torch.save` pickles: `.pth`, `.pt`, `.bin`.
    Torch,
}

impl Format {
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "onnx" => Self::Onnx,
            "safetensors" => Self::Safetensors,
            "pth" | "pt" | "bin" => Self::Torch,
            _ => return None,
        })
    }
}

/// Named tensors read from a file, before they are matched to an AlexNet.
pub type NamedTensors = BTreeMap<String, F32Tensor>;

/// What to make of the file besides its weights.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Class names (output order); default: ImageNet's for a 1 000-class model, else
    /// `class_0`….
    pub class_names: Option<Vec<String>>,
    /// The input side the model was trained at (default 224; an ONNX file's own input
    /// shape wins).
    pub input_size: Option<usize>,
    /// The written model's input: uint8 RGB normalised in the graph (the default), or
    /// the float32 tensor.
    pub input: Option<Element>,
}

/// An AlexNet read from a file, ready to write.
#[derive(Debug, Clone)]
pub struct Imported {
    pub format: Format,
    pub spec: AlexNetSpec,
    pub class_names: Vec<String>,
    pub weights: AlexNetWeights,
    /// Tensors in the file that are not part of the network (ignored).
    pub ignored: Vec<String>,
}

/// Read the AlexNet in `path` (see the module docs for the formats).
pub fn read(path: &Path, options: &ImportOptions) -> Result<Imported, OnnxError> {
    let format = Format::of(path).ok_or_else(|| {
        OnnxError::NotAlexNet(format!(
            "{}: unknown kind of file; import reads .onnx, .safetensors, and .pth/.pt/.bin (PyTorch)",
            path.display()
        ))
    })?;
    let mut model = match format {
        Format::Onnx => OnnxModel::read(path)?,
        Format::Safetensors => model_of(read_safetensors(path)?),
        Format::Torch => {
            let bytes = std::fs::read(path).map_err(|e| OnnxError::io(path, e))?;
            model_of(
                super::torch_file::read(&bytes).map_err(|reason| OnnxError::Tensor {
                    name: path.display().to_string(),
                    reason: format!("not a readable torch.save file: {reason}"),
                })?,
            )
        }
    };
    normalise_names(&mut model.initializers);
    if let Some(size) = options.input_size {
        model.inputs.clear();
        model
            .metadata
            .insert(metadata::INPUT_SIZE.to_owned(), size.to_string());
    }
    // What the file says about itself (this project's models) counts only for ONNX.
    let own_names = match format {
        Format::Onnx => model.class_names()?,
        _ => None,
    };
    let mut spec = alexnet::detect(&model)?;
    spec.input = options.input.unwrap_or(Element::U8);
    let class_names = match (&options.class_names, own_names) {
        (Some(names), _) => names.clone(),
        (None, Some(names)) => names,
        (None, None) if spec.num_classes == 1000 => imagenet_class_names(),
        (None, None) => alexnet::default_class_names(spec.num_classes),
    };
    if class_names.len() != spec.num_classes {
        return Err(OnnxError::NotAlexNet(format!(
            "{} class names for a model with {} outputs (`classifier.6.weight`)",
            class_names.len(),
            spec.num_classes
        )));
    }
    let weights = AlexNetWeights::from_model(&spec, &mut model)?;
    let ignored = model.initializers.into_keys().collect();
    Ok(Imported {
        format,
        spec,
        class_names,
        weights,
        ignored,
    })
}

/// Write an imported model as the ONNX file the batch job runs; returns its sha256.
pub fn write(imported: &Imported, out: &Path) -> Result<String, OnnxError> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| OnnxError::io(dir, e))?;
    }
    alexnet::write_alexnet(
        out,
        &imported.spec,
        &imported.weights,
        &imported.class_names,
    )
}

/// An [`OnnxModel`] holding only `tensors` as initializers, for [`alexnet::detect`].
fn model_of(tensors: NamedTensors) -> OnnxModel {
    OnnxModel {
        metadata: BTreeMap::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        initializers: tensors,
        other_initializers: Vec::new(),
        producer_name: String::new(),
        ir_version: 0,
        opset: None,
    }
}

/// Drop the prefixes wrappers add to `state_dict` names (`module.` from
/// DataParallel, `_orig_mod.` from `torch.compile`, `model.` from training wrappers).
fn normalise_names(tensors: &mut NamedTensors) {
    const PREFIXES: [&str; 3] = ["module.", "_orig_mod.", "model."];
    let names: Vec<String> = tensors.keys().cloned().collect();
    for name in names {
        let mut short = name.as_str();
        while let Some(rest) = PREFIXES.iter().find_map(|p| short.strip_prefix(p)) {
            short = rest;
        }
        if short != name && !tensors.contains_key(short) {
            if let Some(t) = tensors.remove(&name) {
                tensors.insert(short.to_string(), t);
            }
        }
    }
}

/// Read every floating-point tensor of a safetensors file (F32, F16, BF16, F64; other
/// element types are skipped) as f32.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors, OnnxError> {
    let bytes = std::fs::read(path).map_err(|e| OnnxError::io(path, e))?;
    parse_safetensors(&bytes).map_err(|reason| OnnxError::Tensor {
        name: path.display().to_string(),
        reason: format!("not a readable safetensors file: {reason}"),
    })
}

/// Every floating-point tensor of a safetensors file, read by the `safetensors` crate.
fn parse_safetensors(bytes: &[u8]) -> Result<NamedTensors, String> {
    use safetensors::Dtype;
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
    let mut out = NamedTensors::new();
    for (name, view) in file.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => FloatKind::F32,
            Dtype::F16 => FloatKind::F16,
            Dtype::BF16 => FloatKind::Bf16,
            Dtype::F64 => FloatKind::F64,
            _ => continue,
        };
        let tensor = F32Tensor::new(view.shape().to_vec(), kind.decode(view.data()))
            .map_err(|e| format!("{name}: {e}"))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

/// Write `tensors` as a safetensors file (F32), e.g. to hand weights to PyTorch.
pub fn write_safetensors(path: &Path, tensors: &NamedTensors) -> Result<(), OnnxError> {
    let bytes: Vec<(&String, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, raw)
        })
        .collect();
    let views = bytes
        .iter()
        .zip(tensors.values())
        .map(|((name, raw), t)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape().to_vec(), raw)
                .map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OnnxError::Tensor {
            name: path.display().to_string(),
            reason: format!("{e:?}"),
        })?;
    safetensors::serialize_to_file(views, &None, path).map_err(|e| OnnxError::Tensor {
        name: path.display().to_string(),
        reason: format!("cannot write: {e:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        let f16 = |h: u16| FloatKind::F16.decode(&h.to_le_bytes())[0];
        assert_eq!(f16(0x3c00), 1.0);
        assert_eq!(f16(0xc000), -2.0);
        assert_eq!(f16(0x3555), 0.333_251_95);
        assert_eq!(f16(0x0001), 5.960_464_5e-8);
        assert!(f16(0x7c00).is_infinite());
        let bf16 = |h: u16| FloatKind::Bf16.decode(&h.to_le_bytes())[0];
        assert_eq!(bf16(0x3f80), 1.0);
        assert_eq!(bf16(0xc000), -2.0);
    }

    #[test]
    fn imagenet_names_are_a_thousand() {
        let names = imagenet_class_names();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(names[999], "toilet tissue");
    }

    #[test]
    fn safetensors_round_trip_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let spec = AlexNetSpec {
            width: 0.25,
            num_classes: 7,
            input_size: 96,
            ..Default::default()
        };
        let weights = spec.random_weights().unwrap();
        let mut named: NamedTensors = weights
            .iter()
            .map(|(n, t)| (format!("module.{n}"), t.clone()))
            .collect();
        named.insert(
            "momentum/features.0.weight".into(),
            F32Tensor::zeros(vec![2]),
        );
        let path = dir.path().join("w.safetensors");
        write_safetensors(&path, &named).unwrap();
        let imported = read(
            &path,
            &ImportOptions {
                input_size: Some(96),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(imported.spec.num_classes, 7);
        assert_eq!(imported.spec.input_size, 96);
        assert!((imported.spec.width - 0.25).abs() < 1e-6);
        assert_eq!(imported.class_names[6], "class_6");
        assert_eq!(
            imported.ignored,
            vec!["momentum/features.0.weight".to_string()]
        );
        for (name, t) in weights.iter() {
            assert_eq!(imported.weights.get(name), Some(t), "{name}");
        }
    }

    #[test]
    fn a_model_that_is_not_alexnet_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let mut named = NamedTensors::new();
        named.insert(
            "features.0.weight".into(),
            F32Tensor::zeros(vec![64, 3, 7, 7]),
        );
        let path = dir.path().join("resnet.safetensors");
        write_safetensors(&path, &named).unwrap();
        let err = read(&path, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("features.0.weight"), "{err}");
        let pth = dir.path().join("x.pth");
        std::fs::write(&pth, b"not a pickle").unwrap();
        let err = read(&pth, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("torch.save"), "{err}");
    }
}
