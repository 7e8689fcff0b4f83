//! The crate's error type. Module-level detail is mapped into these variants, each of
//! which names the thing a user has to fix (a path, a URL, a flag, a key).
//!
//! A variant with a cause keeps it as its [`source`](std::error::Error::source) (the
//! object store's, DataFusion's, ONNX's, the training job's error, typed) and does not
//! repeat it in its own text: [`Error::report`] prints the whole chain in one line.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a job. Per-image problems are not errors of this type: they
/// become rows with an `error` column (see [`crate::decode::DecodeError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A URL or path given by the user could not be understood.
    #[error("invalid location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// The object store rejected an operation.
    #[error("object store error at {location}")]
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
    #[error("cannot read configuration file {path}")]
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
    #[error("arrow")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Reading or writing Parquet failed.
    #[error("parquet")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// A SQL query is not valid here (the message says why).
    #[error("{0}")]
    Query(String),

    /// DataFusion failed to parse, plan or run a query.
    #[error("the query failed")]
    DataFusion(#[source] Box<datafusion::error::DataFusionError>),

    /// An ONNX file could not be read, written or understood.
    #[error("model {path}")]
    Onnx {
        path: String,
        #[source]
        source: OnnxError,
    },

    /// Local I/O failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The training job could not run (bad data, model or options); the message names
    /// what to fix.
    #[error("training: {0}")]
    Train(String),

    /// The training job failed (its error says what to fix).
    #[cfg(feature = "train")]
    #[error("training")]
    Training(#[source] TrainError),

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

    /// An error and what the caller can change to get past it ([`Error::hint`]).
    #[error(transparent)]
    Hinted(Box<Hinted>),
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

impl Error {
    /// The error and its causes in one line, `: ` between them, each said once (a
    /// cause whose text the line already holds is left out: some foreign errors, the
    /// object store's among them, repeat their own source in their text). Settings a
    /// hint names are shown as the pipeline file's keys.
    pub fn report(&self) -> String {
        report(self)
    }

    /// This error with `hint` (what to change to get past it) attached.
    pub fn with_hint(self, hint: Hint) -> Self {
        Error::Hinted(Box::new(Hinted { error: self, hint }))
    }

    /// What the caller can change to get past this error, when it is known.
    pub fn hint(&self) -> Option<&Hint> {
        match self {
            Error::Hinted(h) => Some(&h.hint),
            _ => None,
        }
    }

    /// The error itself, without its hint: what to match on.
    pub fn kind(&self) -> &Error {
        match self {
            Error::Hinted(h) => h.error.kind(),
            e => e,
        }
    }
}

/// A setting of the batch job that an error's [`Hint`] names. It is carried as data so
/// that each caller reads it under the name it set it by: the command line shows the
/// flag (`--new-run`), a pipeline file or [`crate::config::RunPlan`] user the key
/// (`output.new_run`, whose last part is also the builder's setter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Setting {
    Input,
    Extensions,
    Include,
    Exclude,
    AllowEmpty,
    Model,
    Crop,
    Mean,
    Std,
    ChannelOrder,
    PixelRange,
    Layout,
    Tta,
    AllowCpuFallback,
    Device,
    Precision,
    Decode,
    Output,
    RunId,
    NewRun,
    Embeddings,
    EmbeddingOutput,
    CodeBits,
}

impl Setting {
    /// Every setting, in the pipeline file's order.
    pub const ALL: &'static [Setting] = &[
        Setting::Input,
        Setting::Extensions,
        Setting::Include,
        Setting::Exclude,
        Setting::AllowEmpty,
        Setting::Model,
        Setting::Crop,
        Setting::Mean,
        Setting::Std,
        Setting::ChannelOrder,
        Setting::PixelRange,
        Setting::Layout,
        Setting::Tta,
        Setting::AllowCpuFallback,
        Setting::Device,
        Setting::Precision,
        Setting::Decode,
        Setting::Output,
        Setting::RunId,
        Setting::NewRun,
        Setting::Embeddings,
        Setting::EmbeddingOutput,
        Setting::CodeBits,
    ];

    /// The pipeline file's key, `section.name`; the command line's tuning knobs (which
    /// no pipeline file sets) are `tuning.<field>` of [`crate::config::Tuning`].
    pub fn key(self) -> &'static str {
        match self {
            Setting::Input => "input.url",
            Setting::Extensions => "input.extensions",
            Setting::Include => "input.include",
            Setting::Exclude => "input.exclude",
            Setting::AllowEmpty => "input.allow_empty",
            Setting::Model => "model.path",
            Setting::Crop => "preprocess.crop",
            Setting::Mean => "preprocess.mean",
            Setting::Std => "preprocess.std",
            Setting::ChannelOrder => "preprocess.channel_order",
            Setting::PixelRange => "preprocess.pixel_range",
            Setting::Layout => "preprocess.layout",
            Setting::Tta => "model.tta",
            Setting::AllowCpuFallback => "model.allow_cpu_fallback",
            Setting::Device => "model.device",
            Setting::Precision => "tuning.precision",
            Setting::Decode => "tuning.decode",
            Setting::Output => "output.url",
            Setting::RunId => "output.run_id",
            Setting::NewRun => "output.new_run",
            Setting::Embeddings => "output.embeddings",
            Setting::EmbeddingOutput => "output.embedding_output",
            Setting::CodeBits => "output.code_bits",
        }
    }
}

/// What to change to get past an error: a short sentence with the [`Setting`]s it
/// names kept apart from its text, so each caller renders them by its own names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hint {
    parts: Vec<HintPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HintPart {
    Text(String),
    Setting(Setting),
}

impl Hint {
    /// A hint starting with `text`; [`Hint::setting`] and [`Hint::then`] go on.
    pub fn new(text: impl Into<String>) -> Self {
        Self::default().then(text)
    }

    /// The hint, then more text.
    pub fn then(mut self, text: impl Into<String>) -> Self {
        self.parts.push(HintPart::Text(text.into()));
        self
    }

    /// The hint, then a setting's name.
    pub fn setting(mut self, setting: Setting) -> Self {
        self.parts.push(HintPart::Setting(setting));
        self
    }

    /// The hint, then all of `other`.
    pub fn append(mut self, other: Hint) -> Self {
        self.parts.extend(other.parts);
        self
    }

    /// The settings the hint names, in order.
    pub fn settings(&self) -> impl Iterator<Item = Setting> + '_ {
        self.parts.iter().filter_map(|p| match p {
            HintPart::Setting(s) => Some(*s),
            HintPart::Text(_) => None,
        })
    }

    /// The sentence, each setting as `name` gives it.
    pub fn render(&self, name: &dyn Fn(Setting) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                HintPart::Text(t) => out.push_str(t),
                HintPart::Setting(s) => out.push_str(&name(*s)),
            }
        }
        out
    }
}

impl std::fmt::Display for Hint {
    /// Settings as the pipeline file's keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(&|s| s.key().to_string()))
    }
}

/// An [`Error`] with its [`Hint`]: shown as `error; hint`, its causes the error's own.
#[derive(Debug)]
pub struct Hinted {
    pub error: Error,
    pub hint: Hint,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.error, self.hint)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

/// [`Error::report`] for any error.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    report_with(error, &|s| s.key().to_string())
}

/// [`report`] with each setting a hint names as `name` gives it (the command line
/// passes its flags).
pub fn report_with(
    error: &(dyn std::error::Error + 'static),
    name: &dyn Fn(Setting) -> String,
) -> String {
    let mut line = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let hinted = match e.downcast_ref::<Error>() {
            Some(Error::Hinted(h)) => Some(&**h),
            _ => e.downcast_ref::<Hinted>(),
        };
        let text = match hinted {
            Some(h) => format!("{}; {}", h.error, h.hint.render(name)),
            None => e.to_string(),
        };
        let text = text.trim();
        if !text.is_empty() && !line.contains(text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(text);
        }
        // A hinted error's causes are its inner error's: skip the inner error itself,
        // whose text is already on the line.
        next = match hinted {
            Some(h) => std::error::Error::source(&h.error),
            None => e.source(),
        };
    }
    line
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}

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
    #[error("{}", path.display())]
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
    #[error("{context}")]
    Protobuf {
        /// What was being done, including the file when there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: protobuf::Error,
    },
}

impl OnnxError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        OnnxError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why the training job stopped.
#[cfg(feature = "train")]
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The labelled data cannot be used (empty, one class, unreadable manifest…).
    #[error("{0}")]
    Data(String),
    /// The options do not describe a run that can work.
    #[error("{0}")]
    Options(String),
    /// The model to start from cannot be used.
    #[error("{0}")]
    Model(String),
    /// A checkpoint could not be written or read back.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },
    /// libtorch reported an error.
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Error {
        Error::Config("run r1 already finished".into()).with_hint(
            Hint::new("pass another ")
                .setting(Setting::RunId)
                .then(", or ")
                .setting(Setting::NewRun),
        )
    }

    #[test]
    fn a_hint_names_settings_by_the_callers_names() {
        let e = refused();
        assert_eq!(
            e.to_string(),
            "configuration error: run r1 already finished; pass another output.run_id, or output.new_run"
        );
        assert_eq!(e.report(), e.to_string());
        let flags = |s: Setting| match s {
            Setting::RunId => "--run-id".to_string(),
            Setting::NewRun => "--new-run".to_string(),
            other => other.key().to_string(),
        };
        assert_eq!(
            report_with(&e, &flags),
            "configuration error: run r1 already finished; pass another --run-id, or --new-run"
        );
        assert!(matches!(e.kind(), Error::Config(_)));
        assert_eq!(
            e.hint().unwrap().settings().collect::<Vec<_>>(),
            [Setting::RunId, Setting::NewRun]
        );
    }

    #[test]
    fn a_hinted_error_keeps_its_causes_and_says_each_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::io("reading card.json", io)
            .with_hint(Hint::new("pass ").setting(Setting::Model));
        assert_eq!(
            e.report(),
            "reading card.json; pass model.path: no such file"
        );
        let text = e.to_string();
        assert!(!text.contains("no such file"), "{text}");
        assert_eq!(
            std::error::Error::source(&e).map(|s| s.to_string()),
            Some("no such file".to_string())
        );
    }

    #[test]
    fn every_setting_has_a_section_key() {
        for s in Setting::ALL {
            let (section, name) = s.key().split_once('.').unwrap();
            assert!(
                ["input", "model", "preprocess", "output", "tuning"].contains(&section)
                    && !name.is_empty(),
                "{s:?}"
            );
        }
    }
}
