//! The command line: clap's definitions here, one module per command beside them.
//! Everything that reads flags, prints, draws progress or watches signals lives under
//! `cli/`; the library never does.

pub mod bench;
pub mod doctor;
pub mod model;
pub mod progress;
pub mod query;
pub mod report;
pub mod run;
pub mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use labelflow::config::{
    InputConfig, JobConfig, ModelConfig, OutputConfig, PreprocessOverrides, Tuning,
};
use labelflow::preprocess::{ChannelOrder, Layout, PixelRange, Tta};
use labelflow::runtime::Device;
use labelflow::source::Shard;

#[derive(Debug, Parser)]
#[command(
    name = "labelflow",
    version,
    about = "Label every image in a bucket with an ONNX model, write Parquet, query it with SQL",
    after_help = "Exit codes: 0 success; 1 finished, but some images could not be labelled (see the error column); 2 fatal error (nothing half-written is visible; rows already published are kept and a rerun continues after them); 3 stopped by SIGTERM/SIGINT after publishing its progress (rerun the same command to continue)."
)]
pub struct Cli {
    /// ONNX Runtime library to load (default: $ORT_DYLIB_PATH, then third_party/onnxruntime/lib, then a Python onnxruntime package).
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// More log output (-v info, -vv debug); LABELFLOW_LOG takes tracing filter syntax.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Label every image under an input URL and write predictions as Parquet.
    Run(RunArgs),
    /// Check a pipeline file (and flags) without running it.
    Validate(RunArgs),
    /// Ask SQL questions of a predictions dataset.
    Query(query::QueryArgs),
    /// Write one self-contained HTML page about a predictions dataset (and a training run).
    Report(report::ReportArgs),
    /// Make or inspect ONNX models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Show which ONNX Runtime is found, its version and execution providers, and GPUs seen.
    Doctor,
    /// Measure decode+preprocess, inference-only and end-to-end throughput and peak memory.
    Bench(BenchArgs),
    /// Train AlexNet on labelled images (or only its last layer) and export ONNX.
    #[cfg(feature = "train")]
    Train(train::TrainArgs),
    /// Train AlexNet on labelled images (not in this build: see `labelflow train`).
    #[cfg(not(feature = "train"))]
    Train(train::TrainUnavailable),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (pipelines/*.toml); flags override its values.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub job: JobFlags,
    #[command(flatten)]
    pub tuning: TuningFlags,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A run that finished with some error rows exits 0 instead of 1 (the rows still
    /// carry their error). For schedulers that retry every non-zero exit: such a run is
    /// done, and its failures are in the `errors` query.
    #[arg(long)]
    pub allow_error_rows: bool,
}

/// Flags mirroring the pipeline file.
#[derive(Debug, Args, Clone, Default)]
pub struct JobFlags {
    /// Folder or URL to label (s3://, gs://, az://, abfss://, http(s)://, file://, or a
    /// path), or a manifest: a .parquet, .csv, .tsv or .jsonl file whose `uri` column
    /// lists the objects (any store, any host), e.g. the output of
    /// `labelflow query --name relabel_candidates --out todo.parquet`.
    #[arg(long, short = 'i', value_name = "URL")]
    pub input: Option<String>,
    /// Where predictions go (folder or URL).
    #[arg(long, short = 'o', value_name = "URL")]
    pub output: Option<String>,
    /// ONNX model file.
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: Option<String>,
    /// cpu, cuda, cuda:N, or cuda:N,M,… (one session per GPU at least).
    #[arg(long)]
    pub device: Option<Device>,
    /// Run on CPU when the CUDA provider cannot be used instead of failing.
    #[arg(long)]
    pub allow_cpu_fallback: bool,
    /// Images per inference call (default 32).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Classes kept per image (default 5).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Test-time augmentation: none; flip (the centre crop and its mirror, averaged:
    /// twice the work, and embeddings that a mirrored copy shares); or 10crop (corners,
    /// centre and their mirrors, softmax averaged; ten times the inference work).
    #[arg(long, value_name = "none|flip|10crop")]
    pub tta: Option<Tta>,
    /// Stop after this many images.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only keys matching this glob (repeatable), relative to the input.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip keys matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Extensions to read, comma-separated (default: jpg,jpeg,png,webp,gif,bmp,tif,tiff).
    #[arg(long, value_delimiter = ',')]
    pub extensions: Vec<String>,
    /// Refuse images with more pixels than this (default 100000000).
    #[arg(long)]
    pub max_pixels: Option<u64>,
    /// Refuse objects larger than this many bytes (default 268435456).
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// Shorter side after resizing (default from the model, else 256).
    #[arg(long)]
    pub resize: Option<u32>,
    /// Centre crop size (default from the model, else 224).
    #[arg(long)]
    pub crop: Option<u32>,
    /// Per-channel mean, RGB, comma-separated (e.g. 0.485,0.456,0.406).
    #[arg(long, value_parser = parse_triple)]
    pub mean: Option<Triple>,
    /// Per-channel std, RGB, comma-separated (e.g. 0.229,0.224,0.225).
    #[arg(long, value_parser = parse_triple)]
    pub std: Option<Triple>,
    /// rgb or bgr.
    #[arg(long)]
    pub channel_order: Option<ChannelOrder>,
    /// nchw or nhwc.
    #[arg(long)]
    pub layout: Option<Layout>,
    /// unit (0–1) or byte (0–255) before normalising.
    #[arg(long)]
    pub pixel_range: Option<PixelRange>,
    /// Run id. By default a run continues the newest unfinished run of the same job
    /// (same input, filters, model, preprocessing and shard) in the output, or starts a
    /// new one; an explicit id continues that run (objects already written are skipped)
    /// unless it finished.
    #[arg(long, conflicts_with = "new_run")]
    pub run_id: Option<String>,
    /// Start a new run even when an unfinished run of the same job exists.
    #[arg(long)]
    pub new_run: bool,
    /// Label every selected object. By default a new run skips objects that an earlier
    /// run with the same model, preprocessing, tta, top-k and embeddings labelled
    /// unchanged (same uri and ETag, or size and modification time) and retries error rows.
    #[arg(long)]
    pub relabel_all: bool,
    /// Also write each image's feature vector (column `embedding`: the penultimate
    /// layer, AlexNet's fc7, L2-normalised, half floats; 8 KB a row for 4 096-d) and a
    /// binary code of it (column `code`), for `similar` and `near_duplicates`.
    #[arg(long)]
    pub embeddings: bool,
    /// With --embeddings: the model tensor to store instead of the input of the last
    /// fully connected layer.
    #[arg(long, value_name = "TENSOR", requires = "embeddings")]
    pub embedding_output: Option<String>,
    /// With --embeddings: bits of the `code` column, a multiple of 8 (default 256).
    #[arg(long, value_name = "BITS", requires = "embeddings")]
    pub code_bits: Option<usize>,
    /// An input under which no object is selected is not an error (exit 0).
    #[arg(long)]
    pub allow_empty: bool,
    /// Longest time (seconds) rows wait before their Parquet part is published: the
    /// most labelling a killed worker can lose (default 60; the first parts of a run
    /// publish after 5, 10, 20, 40 s).
    #[arg(long)]
    pub flush_seconds: Option<u64>,
    /// Rows per Parquet part file.
    #[arg(long)]
    pub rows_per_part: Option<usize>,
    /// Rows per Parquet row group.
    #[arg(long)]
    pub row_group_rows: Option<usize>,
    /// This worker's shard, INDEX/COUNT (e.g. 2/8).
    #[arg(long, conflicts_with = "shards")]
    pub shard: Option<Shard>,
    /// Number of shards; the index comes from JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or AWS_BATCH_JOB_ARRAY_INDEX.
    #[arg(long)]
    pub shards: Option<u32>,
}

/// A comma-separated triple of floats.
#[derive(Debug, Clone, Copy)]
pub struct Triple(pub [f32; 3]);

fn parse_triple(s: &str) -> Result<Triple, String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f32>()
                .map_err(|_| format!("{p:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [a, b, c] => Ok(Triple([*a, *b, *c])),
        _ => Err(format!(
            "expected three comma-separated numbers, got {}",
            v.len()
        )),
    }
}

/// Concurrency knobs.
#[derive(Debug, Args, Clone)]
pub struct TuningFlags {
    /// Objects fetched/decoded concurrently.
    #[arg(long, default_value_t = Tuning::default().fetch_concurrency)]
    pub fetch_concurrency: usize,
    /// With a manifest (--input list.parquet/.csv/.jsonl): requests in flight to one
    /// host, bucket or container at once.
    #[arg(long, default_value_t = Tuning::default().per_host_concurrency)]
    pub per_host_concurrency: usize,
    /// Decode/preprocess threads (default: one per core).
    #[arg(long, default_value_t = Tuning::default().decode_threads)]
    pub decode_threads: usize,
    /// Inference sessions, one thread each.
    #[arg(long, default_value_t = Tuning::default().sessions)]
    pub sessions: usize,
    /// ONNX Runtime threads per session (0: one per core).
    #[arg(long, default_value_t = Tuning::default().intra_threads)]
    pub intra_threads: usize,
    /// Batches queued for inference.
    #[arg(long, default_value_t = Tuning::default().batch_queue)]
    pub batch_queue: usize,
    /// Retries of a failed store request.
    #[arg(long, default_value_t = Tuning::default().retries)]
    pub retries: usize,
    /// Longest time spent retrying one store request, seconds.
    #[arg(long, value_name = "SECS", default_value_t = Tuning::default().retry_timeout_seconds)]
    pub retry_timeout: u64,
    /// Longest one store request may take before it is retried, seconds.
    #[arg(long, value_name = "SECS", default_value_t = Tuning::default().request_timeout_seconds)]
    pub request_timeout: u64,
    /// Store failures in a row (after retries; a missing object does not count) that
    /// stop the run with exit code 2; rows already published are kept.
    #[arg(long, default_value_t = Tuning::default().max_store_failures)]
    pub max_store_failures: u32,
    /// On SIGTERM or SIGINT: seconds in-flight batches may still be labelled before the
    /// open part is published and the run exits with code 3. A second signal exits at
    /// once. Keep it below the scheduler's grace (Kubernetes: 30 s).
    #[arg(long, value_name = "SECS", default_value_t = Tuning::default().stop_grace_seconds)]
    pub stop_grace: u64,
    /// One worker writes a shard at a time: another worker's lease on it is taken over
    /// this many seconds after its last heartbeat (a killed or stuck worker).
    #[arg(long, value_name = "SECS", default_value_t = Tuning::default().lease_ttl_seconds)]
    pub lease_ttl: u64,
    /// When another live worker is writing this shard: wait until it stops (or its
    /// lease expires), then continue its run, instead of exiting with code 4.
    #[arg(long)]
    pub wait: bool,
    /// The model's arithmetic: fp32; tf32 (TensorFloat-32 tensor cores on CUDA, the
    /// same as fp32 on CPU); or fp16 (a half-precision copy made at load, for CUDA).
    #[arg(long, value_name = "fp32|tf32|fp16", default_value = "fp32")]
    pub precision: labelflow::runtime::Precision,
    /// Bind each session's input and outputs to buffers allocated once and reused
    /// (pinned host memory on CUDA): auto (on CUDA), on or off.
    #[arg(long, value_name = "auto|on|off", default_value = "auto")]
    pub io_binding: labelflow::runtime::Toggle,
    /// Where JPEGs are decoded: cpu; gpu (nvJPEG, in a build with the `nvjpeg` feature,
    /// on a CUDA device; files it cannot take are decoded on the CPU); or auto (the GPU
    /// when the build, the library and the device allow it).
    #[arg(long, value_name = "cpu|gpu|auto", default_value = "cpu")]
    pub decode: labelflow::decode::DecodeOn,
}

impl TuningFlags {
    pub fn tuning(&self) -> Tuning {
        Tuning {
            fetch_concurrency: self.fetch_concurrency,
            per_host_concurrency: self.per_host_concurrency,
            decode_threads: self.decode_threads,
            sessions: self.sessions,
            intra_threads: self.intra_threads,
            batch_queue: self.batch_queue,
            retries: self.retries,
            retry_timeout_seconds: self.retry_timeout,
            request_timeout_seconds: self.request_timeout,
            max_store_failures: self.max_store_failures,
            stop_grace_seconds: self.stop_grace,
            lease_ttl_seconds: self.lease_ttl,
            wait_for_lease: self.wait,
            precision: self.precision,
            io_binding: self.io_binding,
            decode: self.decode,
        }
    }
}

impl JobFlags {
    /// The flags as a (partial) job config layered over the file.
    pub fn as_config(&self) -> JobConfig {
        let vec_opt = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        JobConfig {
            input: Some(InputConfig {
                url: self.input.clone(),
                extensions: vec_opt(&self.extensions),
                include: vec_opt(&self.include),
                exclude: vec_opt(&self.exclude),
                limit: self.limit,
                max_pixels: self.max_pixels,
                max_bytes: self.max_bytes,
                allow_empty: self.allow_empty.then_some(true),
            }),
            model: Some(ModelConfig {
                path: self.model.clone(),
                device: self.device,
                allow_cpu_fallback: self.allow_cpu_fallback.then_some(true),
                batch_size: self.batch_size,
                top_k: self.top_k,
                tta: self.tta,
            }),
            preprocess: Some(PreprocessOverrides {
                resize: self.resize,
                crop: self.crop,
                mean: self.mean.map(|t| t.0),
                std: self.std.map(|t| t.0),
                channel_order: self.channel_order,
                layout: self.layout,
                pixel_range: self.pixel_range,
            }),
            output: Some(OutputConfig {
                url: self.output.clone(),
                run_id: self.run_id.clone(),
                rows_per_part: self.rows_per_part,
                row_group_rows: self.row_group_rows,
                flush_seconds: self.flush_seconds,
                zstd_level: None,
                new_run: self.new_run.then_some(true),
                relabel_all: self.relabel_all.then_some(true),
                embeddings: self.embeddings.then_some(true),
                embedding_output: self.embedding_output.clone(),
                code_bits: self.code_bits,
            }),
        }
    }

    /// The shard this worker takes.
    pub fn shard(&self) -> Result<Shard, String> {
        if let Some(s) = self.shard {
            return Ok(s);
        }
        match self.shards {
            None => Ok(Shard::default()),
            Some(count) => {
                let index = ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX", "LABELFLOW_SHARD_INDEX"]
                    .iter()
                    .find_map(|k| std::env::var(k).ok())
                    .ok_or_else(|| {
                        "--shards needs the shard index in JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX or LABELFLOW_SHARD_INDEX (or pass --shard INDEX/COUNT)".to_string()
                    })?;
                let index: u32 = index.trim().parse().map_err(|_| {
                    format!("shard index {index:?} from the environment is not a number")
                })?;
                Shard::new(index, count)
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Write an AlexNet ONNX model with seeded random weights (the project's own writer).
    Init(ModelInitArgs),
    /// Turn an AlexNet from PyTorch or torchvision into the model the batch job runs:
    /// a .safetensors file (a state_dict, or this project's checkpoints), a .pth/.pt
    /// state_dict (torch.save, either layout) or an ONNX export of torchvision's AlexNet.
    Import(ModelImportArgs),
    /// Print a model's inputs, outputs, classes and preprocessing.
    Inspect {
        /// The ONNX file.
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ModelImportArgs {
    /// The file to import (.safetensors, .pth/.pt/.bin, .onnx).
    pub source: PathBuf,
    /// Where to write the model.
    #[arg(long, short = 'o', default_value = "alexnet.onnx")]
    pub out: PathBuf,
    /// File with one class name per line (default: ImageNet's 1 000 names for a
    /// 1 000-class model, else class_0…).
    #[arg(long, value_name = "FILE")]
    pub class_names: Option<PathBuf>,
    /// The input side the network was trained at (default 224, or the ONNX file's).
    #[arg(long, value_name = "PIXELS")]
    pub input_size: Option<usize>,
    /// The written model's image input: uint8 (RGB bytes, normalised in the graph) or
    /// float32 (the normalised tensor).
    #[arg(long, value_name = "uint8|float32", default_value = "uint8")]
    pub input_type: labelflow::batch::Element,
}

#[derive(Debug, Args)]
pub struct ModelInitArgs {
    /// Where to write the model.
    #[arg(long, short = 'o', default_value = "alexnet.onnx")]
    pub out: PathBuf,
    /// Number of classes (ignored when --class-names is given).
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    /// File with one class name per line.
    #[arg(long, value_name = "FILE")]
    pub class_names: Option<PathBuf>,
    /// torchvision (default) or paper (2012 layout with LRN and grouped convolutions).
    #[arg(long, default_value = "torchvision")]
    pub variant: labelflow::onnx::Variant,
    /// Channel multiplier (1.0 = published sizes).
    #[arg(long, default_value_t = 1.0)]
    pub width: f32,
    /// Input side in pixels.
    #[arg(long, default_value_t = 224)]
    pub input_size: usize,
    /// Seed of the He-initialised weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The model's image input: uint8 (RGB bytes [N,S,S,3], cast and normalised by the
    /// graph's first nodes: a quarter of the bytes per batch) or float32 (the
    /// normalised [N,3,S,S] tensor).
    #[arg(long, value_name = "uint8|float32", default_value = "uint8")]
    pub input_type: labelflow::batch::Element,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folder of images to cycle through.
    #[arg(long, short = 'i', default_value = "tests/data/photos")]
    pub input: String,
    /// ONNX model (default: a full-size AlexNet made in a temporary folder).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Images per inference call.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Dataset sizes for the end-to-end runs (comma-separated); each is a folder of that many images linked from the input (0: no end-to-end run).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub images: Vec<usize>,
    /// Images for the decode and inference-only measurements.
    #[arg(long, default_value_t = 320)]
    pub stage_images: usize,
    /// Where the model runs: cpu, cuda, cuda:N or cuda:N,M,… (a CUDA device that fails is an error).
    #[arg(long, default_value = "cpu")]
    pub device: labelflow::runtime::Device,
    /// Also run the Python baseline (PIL + multiprocessing + onnxruntime, benches/baseline.py) on the same images and print labelflow ÷ Python.
    #[arg(long)]
    pub baseline: bool,
    /// Python for --baseline, with pillow, numpy, onnxruntime and pyarrow (default: $LABELFLOW_PYTHON, ./.venv/bin/python, python3).
    #[arg(long, value_name = "PATH", requires = "baseline")]
    pub python: Option<PathBuf>,
    /// Also run the peers — Daft (download → decode_image → resize → a class UDF with an
    /// onnxruntime session) and Ray Data (read_images → map_batches with a callable
    /// class) — end to end on the same images and model (benches/peers.py), and print
    /// labelflow ÷ each. Installed by scripts/setup-peers.sh.
    #[arg(long, conflicts_with = "listing")]
    pub peers: bool,
    /// Python for --peers, with daft, ray[data] and onnxruntime (default:
    /// $LABELFLOW_PEERS_PYTHON, ./third_party/peers-venv/bin/python, else as --python).
    #[arg(long, value_name = "PATH", requires = "peers")]
    pub peers_python: Option<PathBuf>,
    /// Measure only listing --input (a folder or any store URL, e.g. s3://bucket/prefix/):
    /// keys per second and resident memory while the keys stream.
    #[arg(long, conflicts_with = "baseline")]
    pub listing: bool,
    /// With --listing: sample resident memory every this many keys.
    #[arg(
        long,
        value_name = "KEYS",
        default_value_t = 50_000,
        requires = "listing"
    )]
    pub sample_every: u64,
    #[command(flatten)]
    pub tuning: TuningFlags,
}

/// How the command line names a setting an error's hint asks to change: its flag.
pub fn flag(setting: labelflow::error::Setting) -> String {
    use labelflow::error::Setting as S;
    match setting {
        S::Input => "--input",
        S::Extensions => "--extensions",
        S::Include => "--include",
        S::Exclude => "--exclude",
        S::AllowEmpty => "--allow-empty",
        S::Model => "--model",
        S::Crop => "--crop",
        S::Mean => "--mean",
        S::Std => "--std",
        S::ChannelOrder => "--channel-order",
        S::PixelRange => "--pixel-range",
        S::Layout => "--layout",
        S::Tta => "--tta",
        S::AllowCpuFallback => "--allow-cpu-fallback",
        S::Device => "--device",
        S::Precision => "--precision",
        S::Decode => "--decode",
        S::Output => "--output",
        S::RunId => "--run-id",
        S::NewRun => "--new-run",
        S::Embeddings => "--embeddings",
        S::EmbeddingOutput => "--embedding-output",
        S::CodeBits => "--code-bits",
        // A setting newer than this table: its pipeline key.
        other => return other.key().to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::Cli;

    /// The long flags of `labelflow run`, and the global ones, as clap parses them.
    fn run_flags() -> (BTreeSet<String>, BTreeSet<String>) {
        let longs = |c: &clap::Command| -> BTreeSet<String> {
            c.get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "help" && *l != "version")
                .map(|l| format!("--{l}"))
                .collect()
        };
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("a run subcommand");
        (longs(run), longs(&cli))
    }

    /// Every setting a hint can name is a flag `labelflow run` takes.
    #[test]
    fn every_hinted_setting_is_a_run_flag() {
        let (flags, _) = run_flags();
        for &setting in labelflow::error::Setting::ALL {
            let f = super::flag(setting);
            assert!(
                flags.contains(&f),
                "{setting:?} is shown as {f}, which `labelflow run` does not take"
            );
        }
    }

    /// `docs/run.md` is the manual of `labelflow run`: its flag table names every flag
    /// clap takes, and no flag clap does not (global ones, like `--ort-lib`, may be
    /// named too).
    #[test]
    fn the_run_manual_names_every_flag_and_only_those() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/run.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let mut named = BTreeSet::new();
        // The flag table: its rows start with `|`.
        let table: String = doc
            .lines()
            .filter(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        for word in table.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if let Some(rest) = word.strip_prefix("--") {
                if rest.starts_with(|c: char| c.is_ascii_lowercase()) {
                    named.insert(format!("--{}", rest.trim_end_matches('-')));
                }
            }
        }
        let (flags, global) = run_flags();
        let missing: Vec<_> = flags.difference(&named).collect();
        let unknown: Vec<_> = named
            .iter()
            .filter(|f| !flags.contains(*f) && !global.contains(*f))
            .collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "docs/run.md does not name {missing:?}; it names {unknown:?}, which `labelflow run` does not take"
        );
    }
}
