//! The crate's error type. Module-level detail is mapped into these variants, each of
//! which names the thing a user has to fix (a path, a URL, a flag, a key).

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a job. Per-image problems are not errors of this type: they
/// become rows with an `error` column (see [`crate::decode::DecodeError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL or path given by the user could not be understood.
    #[error("invalid location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// The object store rejected an operation.
    #[error("object store error at {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },

    /// The input location exists but holds no objects (after filters), or does not exist.
    #[error("{0}")]
    Input(String),

    /// The configuration file or flags are not valid.
    #[error("configuration error: {0}")]
    Config(String),

    /// A configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// ONNX Runtime could not be found or loaded.
    #[error("{0}")]
    Runtime(String),

    /// The model file is missing, unreadable or of an unsupported shape.
    #[error("model {path}: {reason}")]
    Model { path: String, reason: String },

    /// An inference call failed.
    #[error("inference failed: {0}")]
    Inference(String),

    /// The output could not be written.
    #[error("cannot write output {location}: {reason}")]
    Output { location: String, reason: String },

    /// Arrow or Parquet encoding failed.
    #[error("encoding results: {0}")]
    Encode(String),

    /// A SQL query failed to parse, plan or run.
    #[error("{0}")]
    Query(String),

    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The training job could not run (bad data, model or options); the message names
    /// what to fix.
    #[error("training: {0}")]
    Train(String),

    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn store(location: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            location: location.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Encode(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Encode(e.to_string())
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
