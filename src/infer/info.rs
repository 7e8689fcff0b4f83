//! What the batch job knows of a model file before and after a session reads it: its
//! bytes and digest, its inputs, outputs and classes, and whether a preprocessing fits it.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::batch::Element;
use crate::error::{Error, Hint, Result, Setting};
use crate::onnx::embedding::{add_embedding_output, EmbeddingOutput};
use crate::preprocess::{Layout, PreprocessSpec};

/// Whether the model's output is raw scores or already probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Logits,
    Probabilities,
    /// Not declared by the model: decided per row (rows that already sum to 1 with
    /// values in [0, 1] are taken as probabilities).
    Unknown,
}

/// What the job needs to know about a model, read once from the file.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Display name (file stem, or the metadata's graph name).
    pub name: String,
    pub sha256: String,
    pub input_name: String,
    pub output_name: String,
    /// The batch size the model demands, when its batch dimension is fixed.
    pub fixed_batch: Option<usize>,
    /// What the input takes: a normalised float tensor, or RGB bytes (NHWC) that the
    /// model casts and normalises in its graph.
    pub element: Element,
    /// The input's layout (always NHWC for a uint8 input).
    pub layout: Layout,
    /// Spatial input size when the model fixes it.
    pub input_size: Option<u32>,
    pub classes: Vec<String>,
    pub output_kind: OutputKind,
    /// Preprocessing declared by the model's metadata, if any.
    pub preprocess: Option<PreprocessSpec>,
    /// With `--embeddings`: the extra output read per image.
    pub embedding: Option<EmbeddingOutput>,
}

impl ModelInfo {
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

/// A model file loaded into memory.
#[derive(Clone)]
pub struct ModelBytes {
    pub name: String,
    pub location: String,
    pub bytes: Arc<Vec<u8>>,
    /// The sha256 of the file as read (kept when the bytes gain an embedding output,
    /// so rows name the file the user has).
    digest: String,
}

impl ModelBytes {
    /// Read a model from a local path.
    pub fn read(path: &Path) -> Result<Self> {
        let model_err = |reason: String| Error::Model {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            return Err(model_err("file not found".into()).with_hint(
                Hint::new("create one with `labelflow model init --out PATH` or pass ")
                    .setting(Setting::Model),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| model_err(format!("cannot read: {e}")))?;
        let name = display_name(path);
        Ok(Self {
            name,
            location: path.display().to_string(),
            digest: hex::encode(Sha256::digest(bytes.as_slice())),
            bytes: Arc::new(bytes),
        })
    }

    /// The sha256 of the model file.
    pub fn sha256(&self) -> String {
        self.digest.clone()
    }

    /// A half-precision copy of this AlexNet (weights and activations in float16, the
    /// input normalised in float32 first, logits float32); the file's sha256 is kept.
    /// A model this project cannot rebuild is refused by name.
    pub fn half_precision(&self) -> Result<Self> {
        let bytes = crate::onnx::alexnet::half_copy(&self.bytes).map_err(|e| {
            Error::Config(format!(
                "a half-precision copy is made of an AlexNet this project made, trained or imported; {} is not one ({e})",
                self.location
            ))
            .with_hint(
                Hint::new("pass ")
                    .setting(Setting::Precision)
                    .then(" fp32 or tf32 for this model"),
            )
        })?;
        Ok(Self {
            bytes: Arc::new(bytes),
            ..self.clone()
        })
    }

    /// The same model with its feature tensor (`named`, or the input of the last
    /// fully connected layer) as an extra output; the file's sha256 is kept.
    pub fn with_embedding_output(&self, named: Option<&str>) -> Result<(Self, EmbeddingOutput)> {
        let (bytes, output) = add_embedding_output(&self.bytes, named).map_err(|e| {
            Error::Model {
                path: self.location.clone(),
                reason: e.to_string(),
            }
            .with_hint(Hint::new("name the tensor with ").setting(Setting::EmbeddingOutput))
        })?;
        Ok((
            Self {
                bytes: Arc::new(bytes),
                ..self.clone()
            },
            output,
        ))
    }
}

/// The name a model is known by in the output's `model` column: the file stem, or
/// for the training job's `<version>/model.onnx` layout the version folder's name
/// (`models/v2/model.onnx` → `v2`), so runs of different versions tell apart.
fn display_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "model" {
        if let Some(dir) = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|d| d.to_str())
        {
            return dir.to_string();
        }
    }
    stem.to_string()
}

/// Checks the preprocessing output fits the model's input.
pub fn check_spec(model: &ModelBytes, info: &ModelInfo, spec: &PreprocessSpec) -> Result<()> {
    if let Some(size) = info.input_size {
        if size != spec.crop {
            return Err(Error::Config(format!(
                "model {} takes {size}x{size} images but the crop is {}",
                model.location, spec.crop
            ))
            .with_hint(
                Hint::new("pass ")
                    .setting(Setting::Crop)
                    .then(format!(" {size} (or drop the crop override)")),
            ));
        }
    }
    // A uint8 input is RGB bytes, NHWC, whatever its metadata says of the normalised
    // tensor inside the graph.
    if info.element == Element::F32 && info.layout != spec.layout {
        return Err(Error::Config(format!(
            "model {} expects {:?} input but the layout is set to {:?}",
            model.location, info.layout, spec.layout
        )));
    }
    Ok(())
}

/// For a model that normalises in its graph (a uint8 input): the settings that would
/// change the normalisation (`mean`, `std`, channel order, pixel range, layout) must be
/// the model's own, since the graph applies them, not labelflow.
pub fn check_graph_normalises(
    model: &ModelBytes,
    base: &PreprocessSpec,
    spec: &PreprocessSpec,
) -> Result<()> {
    let changed: Vec<Setting> = [
        (base.mean != spec.mean, Setting::Mean),
        (base.std != spec.std, Setting::Std),
        (
            base.channel_order != spec.channel_order,
            Setting::ChannelOrder,
        ),
        (base.pixel_range != spec.pixel_range, Setting::PixelRange),
        (base.layout != spec.layout, Setting::Layout),
    ]
    .into_iter()
    .filter_map(|(differs, s)| differs.then_some(s))
    .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = changed.iter().map(|s| s.key()).collect();
    Err(Error::Config(format!(
        "model {} takes uint8 RGB pixels and normalises them in its own graph, so {} cannot change how it is fed",
        model.location,
        keys.join(", ")
    ))
    .with_hint(
        changed
            .iter()
            .enumerate()
            .fold(Hint::new("drop "), |h, (i, &s)| {
                if i == 0 { h } else { h.then(", ") }.setting(s)
            })
            .then(" for this model, or use a model with a float32 input"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_that_normalises_refuses_normalisation_settings_by_name() {
        let model = ModelBytes {
            name: "m".into(),
            location: "models/m.onnx".into(),
            bytes: Arc::new(Vec::new()),
            digest: String::new(),
        };
        let base = PreprocessSpec::default();
        let crop_only = PreprocessSpec {
            crop: 200,
            resize: 229,
            ..base.clone()
        };
        assert!(check_graph_normalises(&model, &base, &crop_only).is_ok());
        let mean = PreprocessSpec {
            mean: [0.5; 3],
            pixel_range: crate::preprocess::PixelRange::Byte,
            ..base.clone()
        };
        let e = check_graph_normalises(&model, &base, &mean).unwrap_err();
        assert!(
            e.to_string()
                .contains("preprocess.mean, preprocess.pixel_range"),
            "{e}"
        );
        let hint = e.hint().unwrap();
        assert_eq!(
            hint.settings().collect::<Vec<_>>(),
            [Setting::Mean, Setting::PixelRange]
        );
    }

    #[test]
    fn model_names_come_from_the_file_or_its_version_folder() {
        assert_eq!(display_name(Path::new("out/alexnet.onnx")), "alexnet");
        assert_eq!(display_name(Path::new("models/v2/model.onnx")), "v2");
        assert_eq!(display_name(Path::new("model.onnx")), "model");
    }
}
