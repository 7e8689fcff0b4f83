//! Writing and reading the ONNX models this project makes.
//!
//! - [`writer`]: generic helpers that turn nodes, named f32 weights and inputs/outputs
//!   into a `ModelProto` (opset 17, IR 8) and stream it to a file while hashing it.
//! - [`alexnet`]: the AlexNet graph (torchvision layout or the 2012 paper's), seeded
//!   He-initialised weights, and detection of an AlexNet in a model read back.
//! - [`reader`]: a model file back into metadata, input/output shapes and f32
//!   initializers by name.
//! - [`metadata`]: the `metadata_props` keys and value formats the inference code
//!   reads — a contract, defined only there.
//!
//! Errors are [`OnnxError`]; at the crate boundary they become
//! [`crate::Error::Model`] through `From`.

pub mod alexnet;
pub mod embedding;
pub mod import;
pub mod metadata;
mod prng;
pub mod reader;
pub mod torch_file;
pub mod writer;

use std::path::Path;

pub use alexnet::{AlexNetModel, AlexNetSpec, AlexNetWeights, Variant};
pub use reader::{OnnxModel, ValueShape};
pub use writer::{Dim, F32Tensor, GraphBuilder};

pub use crate::error::OnnxError;

impl From<OnnxError> for crate::Error {
    fn from(err: OnnxError) -> Self {
        let path = match &err {
            OnnxError::Io { path, .. } => path.display().to_string(),
            _ => String::from("(onnx)"),
        };
        crate::Error::Onnx { path, source: err }
    }
}

/// Maps an [`OnnxError`] into [`crate::Error::Model`] naming the model file `path`.
pub fn model_error(path: &Path, err: OnnxError) -> crate::Error {
    let reason = match err {
        // The path is already in the message's prefix; keep only the cause.
        OnnxError::Io { source, .. } => crate::error::report(&source),
        other => crate::error::report(&other),
    };
    crate::Error::Model {
        path: path.display().to_string(),
        reason,
    }
}

/// Writes a new AlexNet with seeded random weights to `out` (`labelflow model init`):
/// checks the options, draws the weights, creates the folder, writes the file with
/// `classes` and the ImageNet preprocessing in its metadata. Returns the file's sha256.
pub fn init_alexnet(out: &Path, spec: &AlexNetSpec, classes: &[String]) -> crate::Result<String> {
    let to_err = |e| model_error(out, e);
    spec.validate().map_err(to_err)?;
    let weights = spec.random_weights().map_err(to_err)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::Error::io(format!("creating {}", dir.display()), e))?;
    }
    alexnet::write_alexnet(out, spec, &weights, classes).map_err(to_err)
}

/// Class names from a text file, one per line (blank lines and surrounding spaces
/// ignored); an empty file is an error naming it.
pub fn read_class_names(path: &Path) -> crate::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::Error::io(format!("reading class names from {}", path.display()), e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(crate::Error::Config(format!(
            "{} holds no class names (one per line expected)",
            path.display()
        )));
    }
    Ok(names)
}
