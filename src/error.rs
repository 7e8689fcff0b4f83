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

    /// The store refused the credentials, or none could be found: every further
    /// request would fail the same way, so the job stops.
    #[error("{location}: {hint}")]
    Credentials {
        location: String,
        /// What to do about it (which variables to set).
        hint: String,
        #[source]
        source: object_store::Error,
    },

    /// The store failed this many requests in a row (after each one's retries): it is
    /// down or unreachable, not one bad object. Committed parts are kept.
    #[error("the store at {location} failed {failures} requests in a row (each after its retries); it looks unreachable or down. Parts already written are kept: rerun the same command to continue")]
    StoreUnavailable {
        location: String,
        failures: u32,
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

    /// ONNX Runtime failed a call (the context says which).
    #[error("ONNX Runtime: {context}")]
    Ort {
        context: String,
        #[source]
        source: ort::Error,
    },

    /// The output could not be written.
    #[error("cannot write output {location}: {reason}")]
    Output { location: String, reason: String },

    /// Encoding results (JSON summaries, unexpected column types) failed.
    #[error("encoding results: {0}")]
    Encode(String),

    /// Arrow failed to build or convert a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Reading or writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

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

    /// Another worker holds this shard's lease and is alive: this one writes nothing.
    #[error("shard {shard} of this job is being written by {holder}; its last heartbeat was {age_seconds:.1} s ago (it is taken over {ttl_seconds:.0} s after the last one)")]
    LeaseHeld {
        shard: String,
        holder: String,
        age_seconds: f64,
        ttl_seconds: f64,
    },

    /// Another worker took this shard over (this one was paused or cut off past the
    /// lease's TTL); nothing more was published.
    #[error("lost the lease of shard {shard} to {taken_by}, which continues the run; stopped without publishing the open part")]
    LeaseLost { shard: String, taken_by: String },

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

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
