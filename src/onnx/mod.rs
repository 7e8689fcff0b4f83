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

use std::path::{Path, PathBuf};

pub use alexnet::{AlexNetModel, AlexNetSpec, AlexNetWeights, Variant};
pub use reader::{OnnxModel, ValueShape};
pub use writer::{Dim, F32Tensor, GraphBuilder};

/// Everything that can go wrong while building, writing or reading an ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The AlexNet options cannot describe a working network (size, width, classes).
    #[error("invalid model options: {0}")]
    Spec(String),

    /// A weight tensor is missing or has the wrong shape or length.
    #[error("weights: {0}")]
    Weights(String),

    /// The model read back is not an AlexNet of a shape this project knows.
    #[error("not an AlexNet model: {0}")]
    NotAlexNet(String),

    /// An initializer cannot be read as f32 (type, length, external data).
    #[error("initializer `{name}`: {reason}")]
    Tensor {
        /// The initializer's name in the graph.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A metadata property is present but cannot be understood.
    #[error("metadata `{key}`: {reason}")]
    Metadata {
        /// The `metadata_props` key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },

    /// The file could not be created, written, renamed or opened.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The feature tensor for `--embeddings` cannot be found or sized.
    #[error("embedding output: {0}")]
    Embedding(String),

    /// Protobuf encoding or decoding failed (a corrupt or non-ONNX file when reading).
    #[error("{context}: {source}")]
    Protobuf {
        /// What was being done, including the file when there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: protobuf::Error,
    },
}

impl OnnxError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        OnnxError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<OnnxError> for crate::Error {
    fn from(err: OnnxError) -> Self {
        let path = match &err {
            OnnxError::Io { path, .. } => path.display().to_string(),
            _ => String::from("(onnx)"),
        };
        crate::Error::Model {
            path,
            reason: err.to_string(),
        }
    }
}

/// Maps an [`OnnxError`] into [`crate::Error::Model`] naming the model file `path`.
pub fn model_error(path: &Path, err: OnnxError) -> crate::Error {
    let reason = match err {
        // The path is already in the message's prefix; keep only the cause.
        OnnxError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
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
