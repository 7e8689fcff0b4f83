//! Job configuration: `pipelines/*.toml` and command-line flags → one validated
//! [`RunPlan`]. Flags win over the file; the file wins over the model's metadata;
//! the metadata wins over built-in defaults.
//!
//! Relative paths in a file are taken relative to the file's folder, so a pipeline
//! runs the same from any working directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::DEFAULT_MAX_PIXELS;
use crate::error::{Error, Hint, Result, Setting};
pub use crate::preprocess::PreprocessOverrides;
use crate::preprocess::{PreprocessSpec, Tta};
use crate::runtime::Device;
use crate::sink::SinkOptions;
use crate::source::{Selection, Shard, DEFAULT_EXTENSIONS};
use crate::store::RetryPolicy;

/// A pipeline file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub input: Option<InputConfig>,
    pub model: Option<ModelConfig>,
    pub preprocess: Option<PreprocessOverrides>,
    pub output: Option<OutputConfig>,
}

/// Declares a pipeline file's section once: the struct (every field optional, unknown
/// keys refused) and [`merged`](InputConfig::merged), which layers one section over
/// another field by field — so a new setting is one line here, not one more arm in a
/// hand-written merge.
macro_rules! config_section {
    ($(#[$meta:meta])* pub struct $name:ident { $( $(#[$doc:meta])* $field:ident : $ty:ty ),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$doc])* pub $field: Option<$ty>, )+
        }

        impl $name {
            /// `self` with every field that `over` sets replaced by `over`'s.
            pub fn merged(self, over: $name) -> $name {
                $name { $( $field: over.$field.or(self.$field), )+ }
            }
        }
    };
}

config_section! {
/// `[input]`: what to label.
pub struct InputConfig {
    /// Folder or URL (`s3://`, `gs://`, `az://`, `abfss://`, `http(s)://`, `file://`), or a
    /// manifest: a `.parquet`, `.csv`, `.tsv` or `.jsonl` file with a `uri` column.
    url: String,
    /// File extensions to read (default: jpg jpeg png webp gif bmp tif tiff).
    extensions: Vec<String>,
    /// Globs over keys relative to `url`; only matching objects are read.
    include: Vec<String>,
    /// Globs over keys relative to `url`; matching objects are skipped.
    exclude: Vec<String>,
    /// Stop after this many objects.
    limit: u64,
    /// Refuse images with more pixels than this (decompression-bomb guard).
    max_pixels: u64,
    /// Refuse objects larger than this many bytes without fetching them.
    max_bytes: u64,
    /// Accept an input under which nothing is selected (exit 0) instead of failing
    /// with a message naming what was listed and which filters removed it.
    allow_empty: bool,
}
}

config_section! {
/// `[model]`: what labels them, and where.
pub struct ModelConfig {
    /// Path to an ONNX model (e.g. made by `labelflow model init` or `labelflow train`).
    path: String,
    /// `cpu`, `cuda` or `cuda:N`.
    device: Device,
    /// Run on CPU when CUDA cannot be used, instead of failing.
    allow_cpu_fallback: bool,
    /// Images per inference call (default 32; a model with a fixed batch size uses its own).
    batch_size: usize,
    /// How many best classes to keep per image (default 5).
    top_k: usize,
    /// Test-time augmentation: `none` (default), `flip` (the centre crop and its mirror,
    /// twice the inference work) or `10crop` (four corners, centre and their mirrors;
    /// softmax averaged — ten times the inference work).
    tta: Tta,
}
}

config_section! {
/// `[output]`: where predictions go.
pub struct OutputConfig {
    /// Folder or URL of the predictions dataset.
    url: String,
    /// Run id (folder `run_id=<id>/`); re-running with the same id resumes it.
    run_id: String,
    rows_per_part: usize,
    row_group_rows: usize,
    /// Longest time (s) rows wait before their part is published (default 60): the
    /// most labelling a killed worker can lose.
    flush_seconds: u64,
    zstd_level: i32,
    /// Start a new run even when an unfinished run of the same job exists (by
    /// default that run is continued).
    new_run: bool,
    /// Label every selected object, also those an earlier run of the same model,
    /// preprocessing, tta, top-k and embeddings already labelled unchanged (by default
    /// they are skipped).
    relabel_all: bool,
    /// Also write each image's feature vector (`embedding`, the penultimate layer,
    /// L2-normalised, half floats) and its binary code (`code`).
    embeddings: bool,
    /// With `embeddings`: the model tensor to store (default: the input of the last
    /// fully connected layer — AlexNet's fc7).
    embedding_output: String,
    /// With `embeddings`: bits of the `code` column, a multiple of 8 (default 256).
    code_bits: usize,
}
}

/// Runtime knobs (command line only): concurrency and queue sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Tuning {
    /// Objects fetched and decoded concurrently (bounds bytes in flight).
    pub fetch_concurrency: usize,
    /// A manifest's requests in flight to one host, bucket or container at once.
    pub per_host_concurrency: usize,
    /// Threads decoding and preprocessing at once.
    pub decode_threads: usize,
    /// Inference sessions (one thread each).
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session (0: its default, one per core).
    pub intra_threads: usize,
    /// Batches waiting for inference.
    pub batch_queue: usize,
    /// Retries of one failed store request (object_store's backoff between them).
    pub retries: usize,
    /// Longest time spent retrying one store request, seconds.
    pub retry_timeout_seconds: u64,
    /// Longest one store request may take before it is abandoned and retried, seconds.
    pub request_timeout_seconds: u64,
    /// Store failures in a row (each after its retries; a missing object does not
    /// count) after which the store is declared down and the run stops (exit 2).
    pub max_store_failures: u32,
    /// After SIGTERM/SIGINT, how long in-flight batches may still be labelled before
    /// the open part is published and the run exits, seconds.
    pub stop_grace_seconds: u64,
    /// The shard's lease is taken over this long after its holder's last heartbeat
    /// (the holder beats every quarter of it), seconds.
    pub lease_ttl_seconds: u64,
    /// When another live worker holds the shard's lease: wait for it to stop (or for
    /// its lease to expire) instead of exiting with code 4.
    pub wait_for_lease: bool,
    /// The model's arithmetic: fp32, tf32 (CUDA tensor cores) or fp16 (a half copy).
    pub precision: crate::runtime::Precision,
    /// Bind each session's input and outputs to buffers allocated once (pinned host
    /// memory on CUDA) and reused for every batch; `auto`: on CUDA.
    pub io_binding: crate::runtime::Toggle,
    /// Where JPEGs are decoded: `cpu`, `gpu` (nvJPEG; the `nvjpeg` build) or `auto`
    /// (the GPU when there is one and the build has it, the CPU otherwise).
    pub decode: crate::decode::DecodeOn,
}

impl Default for Tuning {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            fetch_concurrency: 32,
            per_host_concurrency: 8,
            decode_threads: cores,
            sessions: 1,
            intra_threads: 0,
            batch_queue: 2,
            retries: 10,
            retry_timeout_seconds: 180,
            request_timeout_seconds: 60,
            max_store_failures: 10,
            stop_grace_seconds: 15,
            lease_ttl_seconds: crate::lease::DEFAULT_TTL.as_secs(),
            wait_for_lease: false,
            precision: crate::runtime::Precision::default(),
            io_binding: crate::runtime::Toggle::default(),
            decode: crate::decode::DecodeOn::default(),
        }
    }
}

impl Tuning {
    /// The store requests' retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.retries,
            timeout: std::time::Duration::from_secs(self.retry_timeout_seconds),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_seconds),
        }
    }
}

/// The default length of the `code` column in bits.
pub const DEFAULT_CODE_BITS: usize = 256;

/// `--embeddings`: which tensor becomes the `embedding` column, and the `code`'s size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddingPlan {
    /// The model tensor (default: the input of the last fully connected layer).
    pub output: Option<String>,
    /// Bits of the binary code (a multiple of 8, 8–4096).
    pub code_bits: usize,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub input: String,
    pub output: String,
    pub model: PathBuf,
    pub selection: Selection,
    pub max_pixels: u64,
    pub max_bytes: u64,
    pub preprocess: PreprocessOverrides,
    pub device: Device,
    pub allow_cpu_fallback: bool,
    pub batch_size: usize,
    pub top_k: usize,
    pub tta: Tta,
    pub run_id: Option<String>,
    /// Start a fresh run even when an unfinished one of the same job exists.
    pub new_run: bool,
    /// Label objects an earlier run of the same labels already has unchanged.
    pub relabel_all: bool,
    /// How the shard's lease is taken.
    pub lease: crate::lease::LeaseOptions,
    /// An input under which nothing is selected is not an error.
    pub allow_empty: bool,
    pub sink: SinkOptions,
    /// `--embeddings`: what else each row holds.
    pub embeddings: Option<EmbeddingPlan>,
    pub tuning: Tuning,
    /// Retries and timeouts of every store request.
    pub retry: RetryPolicy,
    /// Store failures in a row that stop the run.
    pub max_store_failures: u32,
    /// How long a stop request lets in-flight batches finish.
    pub stop_grace: std::time::Duration,
    pub ort_lib: Option<PathBuf>,
}

impl RunPlan {
    /// What loading the model needs of this plan.
    pub fn model_options(&self) -> crate::infer::ModelOptions {
        crate::infer::ModelOptions {
            path: self.model.clone(),
            ort_lib: self.ort_lib.clone(),
            device: self.device,
            allow_cpu_fallback: self.allow_cpu_fallback,
            batch_size: self.batch_size,
            tta: self.tta,
            preprocess: self.preprocess.clone(),
            embedding_output: self.embeddings.as_ref().map(|e| e.output.clone()),
            sessions: self.tuning.sessions,
            intra_threads: self.tuning.intra_threads,
            batch_queue: self.tuning.batch_queue,
            precision: self.tuning.precision,
            io_binding: self.tuning.io_binding,
        }
    }

    /// A plan built in code, validated exactly as `labelflow run` validates a pipeline
    /// file and flags:
    ///
    /// ```no_run
    /// # fn main() -> labelflow::Result<()> {
    /// let plan = labelflow::config::RunPlan::builder("photos/", "preds/", "alexnet.onnx")
    ///     .top_k(3)
    ///     .batch_size(16)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(
        input: impl Into<String>,
        output: impl Into<String>,
        model: impl AsRef<Path>,
    ) -> RunPlanBuilder {
        RunPlanBuilder {
            job: JobConfig {
                input: Some(InputConfig {
                    url: Some(input.into()),
                    ..Default::default()
                }),
                model: Some(ModelConfig {
                    path: Some(model.as_ref().display().to_string()),
                    ..Default::default()
                }),
                preprocess: None,
                output: Some(OutputConfig {
                    url: Some(output.into()),
                    ..Default::default()
                }),
            },
            tuning: Tuning::default(),
            shard: Shard::default(),
            ort_lib: None,
        }
    }
}

/// Builds a [`RunPlan`] in code; see [`RunPlan::builder`]. Every setter mirrors a flag
/// of `labelflow run`; what is not set takes the same default.
#[derive(Debug, Clone)]
pub struct RunPlanBuilder {
    job: JobConfig,
    tuning: Tuning,
    shard: Shard,
    ort_lib: Option<PathBuf>,
}

impl RunPlanBuilder {
    fn input(&mut self) -> &mut InputConfig {
        self.job.input.get_or_insert_with(Default::default)
    }

    fn model(&mut self) -> &mut ModelConfig {
        self.job.model.get_or_insert_with(Default::default)
    }

    fn output(&mut self) -> &mut OutputConfig {
        self.job.output.get_or_insert_with(Default::default)
    }

    /// `--batch-size`.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.model().batch_size = Some(n);
        self
    }

    /// `--top-k`.
    pub fn top_k(mut self, k: usize) -> Self {
        self.model().top_k = Some(k);
        self
    }

    /// `--tta`.
    pub fn tta(mut self, tta: Tta) -> Self {
        self.model().tta = Some(tta);
        self
    }

    /// `--device`.
    pub fn device(mut self, device: Device) -> Self {
        self.model().device = Some(device);
        self
    }

    /// `--limit`.
    pub fn limit(mut self, n: u64) -> Self {
        self.input().limit = Some(n);
        self
    }

    /// `--include` (repeatable).
    pub fn include(mut self, glob: impl Into<String>) -> Self {
        self.input()
            .include
            .get_or_insert_with(Vec::new)
            .push(glob.into());
        self
    }

    /// `--run-id`.
    pub fn run_id(mut self, id: impl Into<String>) -> Self {
        self.output().run_id = Some(id.into());
        self
    }

    /// `--new-run`.
    pub fn new_run(mut self) -> Self {
        self.output().new_run = Some(true);
        self
    }

    /// `--relabel-all`.
    pub fn relabel_all(mut self) -> Self {
        self.output().relabel_all = Some(true);
        self
    }

    /// `--embeddings` (the default feature tensor and code size).
    pub fn embeddings(mut self) -> Self {
        self.output().embeddings = Some(true);
        self
    }

    /// `--rows-per-part`.
    pub fn rows_per_part(mut self, rows: usize) -> Self {
        self.output().rows_per_part = Some(rows);
        self
    }

    /// The `[preprocess]` table and its flags.
    pub fn preprocess(mut self, overrides: PreprocessOverrides) -> Self {
        self.job.preprocess = Some(overrides);
        self
    }

    /// Threads, queues, retries and timeouts.
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// `--shard INDEX/COUNT`.
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// `--ort-lib`.
    pub fn ort_lib(mut self, path: impl Into<PathBuf>) -> Self {
        self.ort_lib = Some(path.into());
        self
    }

    /// Validates and returns the plan; errors name the setting to fix.
    pub fn build(self) -> Result<RunPlan> {
        JobConfig::default().plan(self.job, self.tuning, self.shard, self.ort_lib)
    }
}

/// Default object-size cap (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

impl JobConfig {
    /// Read and parse a pipeline file; unknown keys are errors naming the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: JobConfig = toml::from_str(&text).map_err(|e| {
            Error::Config(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        cfg.resolve_relative(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |s: &mut Option<String>| {
            if let Some(v) = s.as_mut() {
                if !v.contains("://") && Path::new(v.as_str()).is_relative() {
                    *v = base.join(v.as_str()).display().to_string();
                }
            }
        };
        if let Some(i) = self.input.as_mut() {
            fix(&mut i.url);
        }
        if let Some(m) = self.model.as_mut() {
            fix(&mut m.path);
        }
        if let Some(o) = self.output.as_mut() {
            fix(&mut o.url);
        }
    }

    /// Layer command-line values (`flags`) over this file and validate the result.
    pub fn plan(
        self,
        flags: JobConfig,
        tuning: Tuning,
        shard: Shard,
        ort_lib: Option<PathBuf>,
    ) -> Result<RunPlan> {
        let i = self
            .input
            .unwrap_or_default()
            .merged(flags.input.unwrap_or_default());
        let m = self
            .model
            .unwrap_or_default()
            .merged(flags.model.unwrap_or_default());
        let o = self
            .output
            .unwrap_or_default()
            .merged(flags.output.unwrap_or_default());
        let p = self
            .preprocess
            .unwrap_or_default()
            .merged(flags.preprocess.unwrap_or_default());

        let missing = |what: &str, setting: Setting, extra: &str| {
            Error::Config(format!("no {what} is set")).with_hint(
                Hint::new("set ")
                    .setting(setting)
                    .then(format!(" (or its key in the pipeline file){extra}")),
            )
        };
        let input = i.url.ok_or_else(|| missing("input", Setting::Input, ""))?;
        let output = o
            .url
            .ok_or_else(|| missing("output", Setting::Output, ""))?;
        let model = m.path.ok_or_else(|| {
            missing(
                "model",
                Setting::Model,
                "; `labelflow model init --out alexnet.onnx` makes one",
            )
        })?;
        let batch_size = m.batch_size.unwrap_or(32);
        if batch_size == 0 || batch_size > 4096 {
            return Err(Error::Config(format!(
                "batch size must be 1–4096, got {batch_size}"
            )));
        }
        let top_k = m.top_k.unwrap_or(5);
        if top_k == 0 {
            return Err(Error::Config("top_k must be at least 1".into()));
        }
        let max_pixels = i.max_pixels.unwrap_or(DEFAULT_MAX_PIXELS);
        if max_pixels == 0 {
            return Err(Error::Config("input.max_pixels must be at least 1".into()));
        }
        if let Some(id) = &o.run_id {
            crate::sink::validate_run_id(id)?;
        }
        let d = SinkOptions::default();
        let sink = SinkOptions {
            rows_per_part: o.rows_per_part.unwrap_or(d.rows_per_part),
            row_group_rows: o.row_group_rows.unwrap_or(d.row_group_rows),
            flush_seconds: o.flush_seconds.unwrap_or(d.flush_seconds),
            zstd_level: o.zstd_level.unwrap_or(d.zstd_level),
        };
        sink.validate()?;
        let embeddings = match (o.embeddings, o.embedding_output, o.code_bits) {
            (Some(true), output, bits) => {
                let code_bits = bits.unwrap_or(DEFAULT_CODE_BITS);
                if code_bits == 0 || code_bits % 8 != 0 || code_bits > 4096 {
                    return Err(Error::Config(format!(
                        "the code length must be a multiple of 8 from 8 to 4096 bits, got {code_bits}"
                    ))
                    .with_hint(Hint::new("set ").setting(Setting::CodeBits).then(" to 8–4096, a multiple of 8")));
                }
                Some(EmbeddingPlan { output, code_bits })
            }
            (_, Some(_), _) | (_, _, Some(_)) => {
                return Err(Error::Config(
                    "an embedding output or code length is set, but embeddings are not written"
                        .into(),
                )
                .with_hint(
                    Hint::new("turn on ")
                        .setting(Setting::Embeddings)
                        .then(", or drop ")
                        .setting(Setting::EmbeddingOutput)
                        .then(" and ")
                        .setting(Setting::CodeBits),
                ))
            }
            _ => None,
        };
        if tuning.fetch_concurrency == 0
            || tuning.per_host_concurrency == 0
            || tuning.decode_threads == 0
            || tuning.sessions == 0
            || tuning.batch_queue == 0
        {
            return Err(Error::Config(
                "--fetch-concurrency, --per-host-concurrency, --decode-threads, --sessions and --batch-queue must be at least 1".into(),
            ));
        }
        if tuning.max_store_failures == 0
            || tuning.request_timeout_seconds == 0
            || tuning.lease_ttl_seconds == 0
        {
            return Err(Error::Config(
                "--max-store-failures, --request-timeout and --lease-ttl must be at least 1".into(),
            ));
        }
        let selection = Selection {
            extensions: i
                .extensions
                .unwrap_or_else(|| DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect()),
            include: i.include.unwrap_or_default(),
            exclude: i.exclude.unwrap_or_default(),
            limit: i.limit,
            shard,
        };
        crate::source::Filter::new(&selection)?;
        // Check what can be checked without the model.
        p.apply(PreprocessSpec::default()).validate()?;
        Ok(RunPlan {
            input,
            output,
            model: PathBuf::from(model),
            selection,
            max_pixels,
            max_bytes: i.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            preprocess: p,
            device: m.device.unwrap_or_default(),
            allow_cpu_fallback: m.allow_cpu_fallback.unwrap_or(false),
            batch_size,
            top_k,
            tta: m.tta.unwrap_or_default(),
            run_id: o.run_id,
            new_run: o.new_run.unwrap_or(false),
            relabel_all: o.relabel_all.unwrap_or(false),
            lease: crate::lease::LeaseOptions {
                ttl: std::time::Duration::from_secs(tuning.lease_ttl_seconds),
                wait: tuning.wait_for_lease,
            },
            allow_empty: i.allow_empty.unwrap_or(false),
            sink,
            embeddings,
            retry: tuning.retry_policy(),
            max_store_failures: tuning.max_store_failures,
            stop_grace: std::time::Duration::from_secs(tuning.stop_grace_seconds),
            tuning,
            ort_lib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("job.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "[input]\nurl = \"x\"\nbatchsize = 3\n");
        let err = JobConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("batchsize"), "{err}");
        assert!(err.contains("job.toml"), "{err}");
    }

    #[test]
    fn flags_win_and_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "[input]\nurl = \"photos\"\n[model]\npath = \"m.onnx\"\nbatch_size = 8\n[output]\nurl = \"s3://b/out/\"\n[preprocess]\ncrop = 112\n",
        );
        let cfg = JobConfig::load(&p).unwrap();
        let flags = JobConfig {
            model: Some(ModelConfig {
                batch_size: Some(16),
                ..Default::default()
            }),
            ..Default::default()
        };
        let plan = cfg
            .plan(flags, Tuning::default(), Shard::default(), None)
            .unwrap();
        assert_eq!(plan.batch_size, 16);
        assert_eq!(plan.input, dir.path().join("photos").display().to_string());
        assert_eq!(plan.output, "s3://b/out/");
        assert_eq!(plan.model, dir.path().join("m.onnx"));
        let spec = plan.preprocess.apply(PreprocessSpec::default());
        assert_eq!((spec.resize, spec.crop), (128, 112));
    }

    #[test]
    fn missing_pieces_name_the_flag() {
        let err = JobConfig::default()
            .plan(
                JobConfig::default(),
                Tuning::default(),
                Shard::default(),
                None,
            )
            .unwrap_err();
        assert_eq!(
            err.hint().unwrap().settings().collect::<Vec<_>>(),
            [Setting::Input],
            "{err}"
        );
        assert!(err.to_string().contains("input.url"), "{err}");
    }

    #[test]
    fn shipped_pipelines_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                JobConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 2);
    }
}
