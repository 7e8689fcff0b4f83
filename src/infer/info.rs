//! What the batch job knows of a model file before and after a session reads it: its
//! bytes and digest, its inputs, outputs and classes, and whether a preprocessing fits it.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

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

    /// The same model with its feature tensor (`named`, or the input of the last
    /// fully connected layer) as an extra output; the file's sha256 is kept.
    pub fn with_embedding_output(&self, named: Option<&str>) -> Result<(Self, EmbeddingOutput)> {
        let (bytes, output) =
            add_embedding_output(&self.bytes, named).map_err(|e| Error::Model {
                path: self.location.clone(),
                reason: e.to_string(),
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
    if info.layout != spec.layout {
        return Err(Error::Config(format!(
            "model {} expects {:?} input but the layout is set to {:?}",
            model.location, info.layout, spec.layout
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_come_from_the_file_or_its_version_folder() {
        assert_eq!(display_name(Path::new("out/alexnet.onnx")), "alexnet");
        assert_eq!(display_name(Path::new("models/v2/model.onnx")), "v2");
        assert_eq!(display_name(Path::new("model.onnx")), "model");
    }
}
