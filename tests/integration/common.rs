//! Shared helpers: paths, the binary, small models, reading a predictions dataset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int32Type};

/// What labelflow's inference gives for `n` input tensors `x` (NCHW floats, or NHWC
/// RGB bytes for a uint8 model, at the model's input size) with the model at `path`:
/// the scores as the batch job gets them (logits, or whatever the model outputs), one
/// session on the CPU.
pub async fn model_scores(
    path: &Path,
    x: impl Into<labelflow::batch::Values>,
    n: usize,
) -> Vec<f32> {
    use labelflow::batch::BatchInput;
    use labelflow::infer::{
        self, Described, InferencePool, ModelBytes, PoolOptions, SessionOptions,
    };
    use labelflow::preprocess::PreprocessSpec;

    labelflow::runtime::init(Some(&ort_lib())).unwrap();
    let model = ModelBytes::read(path).unwrap();
    let opts = SessionOptions::default();
    let session = infer::build_session(&model, &opts).unwrap();
    let info = infer::describe(&model, &session).unwrap();
    let spec = PreprocessSpec::imagenet(info.input_size.unwrap_or(224) as u32);
    let pool = InferencePool::start(
        &model,
        Described {
            session,
            device: labelflow::runtime::Device::Cpu,
            info,
        },
        &spec,
        &PoolOptions {
            session: opts,
            sessions: 1,
            batch_size: n,
            queue_capacity: 1,
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let out = pool
        .handle()
        .run(BatchInput {
            data: x.into(),
            real: n,
        })
        .await
        .unwrap();
    pool.shutdown();
    out.scores
}

/// The same network as the model at `path` with a float32 input (the normalised NCHW
/// tensor), written beside it by `labelflow model import --input-type float32`.
pub fn float_input_copy(path: &Path) -> PathBuf {
    let out = path.with_extension("float32.onnx");
    let o = labelflow()
        .args(["model", "import"])
        .arg(path)
        .args(["--input-type", "float32", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "import as float32: {}", stderr(&o));
    out
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn data(rel: &str) -> PathBuf {
    root().join("tests/data").join(rel)
}

/// A folder that lives as long as the test process, removed when it exits.
///
/// A `static` is never dropped, so the folder is removed by an exit handler: without
/// it every test process (nextest runs one per test) would leave its models, datasets
/// and checkpoints behind in the temporary folder.
pub fn scratch(name: &str) -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        SCRATCH_BASE.set(dir.clone()).unwrap();
        // SAFETY: registers a plain `extern "C" fn` with no arguments; it runs once, at
        // normal process exit (a test failure exits through `process::exit` too).
        unsafe { libc::atexit(remove_scratch) };
        dir
    });
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

static SCRATCH_BASE: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH_BASE.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The ONNX Runtime library the tests load: $ORT_DYLIB_PATH or the project-local one.
pub fn ort_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let local = root().join("third_party/onnxruntime/lib/libonnxruntime.so.1.31.1");
    assert!(
        local.exists(),
        "ONNX Runtime is needed for these tests: run scripts/setup-ort.sh (scripts/test.sh does it)"
    );
    local
}

pub fn labelflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labelflow"));
    c.env("ORT_DYLIB_PATH", ort_lib()).arg("--no-progress");
    c
}

/// `labelflow run --input INPUT --output OUTPUT --model MODEL [ARGS...]`, the small
/// test model unless [`RunCmd::model`] names another; the tests' one way to spell a run.
pub struct RunCmd {
    cmd: Command,
    model: Option<std::ffi::OsString>,
    args: Vec<std::ffi::OsString>,
}

impl RunCmd {
    pub fn new(input: impl AsRef<std::ffi::OsStr>, output: impl AsRef<std::ffi::OsStr>) -> Self {
        let mut cmd = labelflow();
        cmd.arg("run")
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(output);
        Self {
            cmd,
            model: None,
            args: Vec::new(),
        }
    }

    pub fn model(mut self, model: impl AsRef<std::ffi::OsStr>) -> Self {
        self.model = Some(model.as_ref().to_owned());
        self
    }

    /// `--batch-size N`.
    pub fn batch(self, n: usize) -> Self {
        self.args(["--batch-size", &n.to_string()])
    }

    /// `--json`: the summary on stdout, for [`RunCmd::summary`].
    pub fn json(self) -> Self {
        self.arg("--json")
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// The command as it would run (to spawn it, or measure it).
    pub fn command(mut self) -> Command {
        let model = self
            .model
            .take()
            .unwrap_or_else(|| small_model().into_os_string());
        self.cmd.arg("--model").arg(model).args(&self.args);
        self.cmd
    }

    pub fn output(self) -> Output {
        self.command().output().unwrap()
    }

    /// Run it and insist on exit 0.
    pub fn ok(self) -> Output {
        let o = self.output();
        assert_eq!(o.status.code(), Some(0), "run failed: {}", stderr(&o));
        o
    }

    /// Run it with `--json`: the exit code and the summary.
    pub fn summary(self) -> (i32, serde_json::Value) {
        let o = self.json().output();
        let code = o.status.code().unwrap_or(-1);
        let summary = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "exit {code}, no JSON summary on stdout ({e}): {}",
                stderr(&o)
            )
        });
        (code, summary)
    }
}

pub fn run_cli(args: &[&str]) -> Output {
    labelflow().args(args).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A narrow AlexNet (width 0.25, 224 px, 10 classes) made by `labelflow model init`,
/// shared by the tests of one process.
pub fn small_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = scratch("models").join("small.onnx");
            let o = run_cli(&[
                "model",
                "init",
                "--out",
                path.to_str().unwrap(),
                "--classes",
                "10",
                "--width",
                "0.25",
                "--seed",
                "7",
            ]);
            assert!(o.status.success(), "model init failed: {}", stderr(&o));
            path
        })
        .clone()
}

/// Python with onnx/onnxruntime, when the test environment provides one.
pub fn python() -> Option<String> {
    std::env::var("LABELFLOW_PYTHON").ok().or_else(|| {
        let venv = root().join(".venv/bin/python");
        venv.exists().then(|| venv.display().to_string())
    })
}

/// Copy the fixture photos and odd files into one input folder.
pub fn mixed_input(name: &str) -> PathBuf {
    let dir = scratch(name);
    copy_tree(&data("photos"), &dir.join("photos"));
    copy_tree(&data("odd"), &dir.join("odd"));
    dir
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every row of every `.parquet` part under `dir`; none when `dir` was never created
/// (a run that wrote nothing). Every caller asserts on what it gets back.
pub fn read_parts(dir: &Path) -> Vec<RecordBatch> {
    let files = if dir.exists() {
        files_under(dir)
    } else {
        Vec::new()
    };
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .flat_map(|p| {
            let f = std::fs::File::open(p).unwrap();
            parquet_batches(&p.display().to_string(), f)
        })
        .collect()
}

/// The record batches of one Parquet file (a local file or an object's bytes); one
/// that is not a complete Parquet file fails the test, naming `name`.
pub fn parquet_batches<R>(name: &str, file: R) -> Vec<RecordBatch>
where
    R: parquet::file::reader::ChunkReader + 'static,
{
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .and_then(|reader| reader.collect::<Result<Vec<_>, _>>().map_err(Into::into))
        .unwrap_or_else(|e| panic!("{name} is not a readable Parquet file: {e}"))
}

/// Every object under `prefix` in `store` whose key ends with `suffix`, with its bytes.
pub async fn store_objects(
    store: &dyn object_store::ObjectStore,
    prefix: &str,
    suffix: &str,
) -> Vec<(String, bytes::Bytes)> {
    use object_store::ObjectStoreExt;
    let prefix = object_store::path::Path::from(prefix);
    let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(Some(&prefix)))
        .await
        .unwrap();
    let mut out = Vec::new();
    for meta in listed
        .iter()
        .filter(|m| m.location.as_ref().ends_with(suffix))
    {
        let got = store.get(&meta.location).await.unwrap();
        out.push((meta.location.to_string(), got.bytes().await.unwrap()));
    }
    out
}

/// Every `.parquet` object under `prefix` in `store`, read back, with its path.
pub async fn store_parts(
    store: &dyn object_store::ObjectStore,
    prefix: &str,
) -> Vec<(String, Vec<RecordBatch>)> {
    store_objects(store, prefix, ".parquet")
        .await
        .into_iter()
        .map(|(name, bytes)| {
            let batches = parquet_batches(&name, bytes);
            (name, batches)
        })
        .collect()
}

/// One row, as the tests look at it.
#[derive(Debug, Clone)]
pub struct Pred {
    pub uri: String,
    pub key: String,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub label: Option<String>,
    pub score: Option<f32>,
    pub top_k: Vec<(String, i32, f32)>,
    pub error: Option<String>,
}

pub fn preds(batches: &[RecordBatch]) -> Vec<Pred> {
    let mut out = Vec::new();
    for b in batches {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (uri, key, label, error) = (s("uri"), s("key"), s("label"), s("error"));
        let width = b
            .column_by_name("width")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let height = b
            .column_by_name("height")
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone();
        let score = b
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float32Type>()
            .clone();
        let top = b.column_by_name("top_k").unwrap().as_list::<i32>().clone();
        for i in 0..b.num_rows() {
            let opt =
                |a: &arrow::array::StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            let mut top_k = Vec::new();
            if !top.is_null(i) {
                let entries = top.value(i);
                let st = entries.as_struct();
                let l = st.column(0).as_string::<i32>();
                let x = st.column(1).as_primitive::<Int32Type>();
                let sc = st.column(2).as_primitive::<Float32Type>();
                for j in 0..st.len() {
                    top_k.push((l.value(j).to_string(), x.value(j), sc.value(j)));
                }
            }
            out.push(Pred {
                uri: uri.value(i).to_string(),
                key: key.value(i).to_string(),
                width: (!width.is_null(i)).then(|| width.value(i)),
                height: (!height.is_null(i)).then(|| height.value(i)),
                label: opt(&label),
                score: (!score.is_null(i)).then(|| score.value(i)),
                top_k,
                error: opt(&error),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Expected decode outcome of each odd file: (file, expect ok?, width, height).
pub fn odd_expectations() -> Vec<(String, bool, Option<i32>, Option<i32>)> {
    let text = std::fs::read_to_string(data("reference/odd_expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let expect = e["labelflow"].as_str().or(e["expect"].as_str()).unwrap();
            assert!(expect == "ok" || expect == "error", "{e}");
            (
                e["file"].as_str().unwrap().to_string(),
                expect == "ok",
                e["width"].as_i64().map(|w| w as i32),
                e["height"].as_i64().map(|h| h as i32),
            )
        })
        .collect()
}

/// Read a raw little-endian f32 file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Create a bucket on an S3 server that accepts unsigned requests (moto).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {reply}"
    );
}

/// Whether the tests run under CI (`CI` is `true` or `1`), where a missing tool is a
/// failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        v == "1" || v.eq_ignore_ascii_case("true")
    })
}

/// `found`, when the tool a test needs is there. When it is missing the test fails
/// with a message naming the tool and how to get it — always under CI (see
/// [`in_ci`]), and elsewhere too unless the developer asked for skips with
/// `LABELFLOW_SKIP_MISSING_TOOLS=1` (then it says it skipped and returns `None`).
#[track_caller]
pub fn require<T>(tool: &str, found: Option<T>, how_to_get_it: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    let skips_asked = std::env::var("LABELFLOW_SKIP_MISSING_TOOLS").is_ok_and(|v| v.trim() == "1");
    if in_ci() || !skips_asked {
        panic!(
            "{tool} is needed by this test and is missing: {how_to_get_it} \
             (outside CI, LABELFLOW_SKIP_MISSING_TOOLS=1 skips such tests instead)"
        );
    }
    eprintln!("skipped: {tool} is missing ({how_to_get_it}); LABELFLOW_SKIP_MISSING_TOOLS=1 asked for skips");
    None
}

/// The Python of [`python`] (an empty `LABELFLOW_PYTHON` counts as none), through
/// [`require`]; `packages` names what the test imports, for the message.
#[track_caller]
pub fn require_python(packages: &str) -> Option<String> {
    require(
        &format!("Python with {packages} (LABELFLOW_PYTHON or .venv)"),
        python().filter(|p| !p.trim().is_empty()),
        "scripts/test.sh creates .venv from scripts/requirements-test.txt and sets LABELFLOW_PYTHON",
    )
}

/// The S3 server's endpoint from `LABELFLOW_TEST_S3_ENDPOINT` (empty counts as unset),
/// through [`require`].
#[track_caller]
pub fn require_s3_endpoint() -> Option<String> {
    require(
        "an S3 server (LABELFLOW_TEST_S3_ENDPOINT)",
        std::env::var("LABELFLOW_TEST_S3_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty()),
        "scripts/test.sh starts the S3 server (moto) and sets LABELFLOW_TEST_S3_ENDPOINT",
    )
}

/// Run `cmd` to completion with its stdout and stderr collected (on threads, so a
/// chatty child never blocks on a full pipe), calling `tick` with the child every
/// `every` until it exits.
pub fn run_polling(
    cmd: &mut Command,
    every: std::time::Duration,
    mut tick: impl FnMut(&mut std::process::Child),
) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).unwrap();
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        tick(&mut child);
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(every);
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Run `cmd` to completion, collecting its output, and measure its peak resident set
/// size in bytes: `VmHWM` from `/proc/<pid>/status`, polled every 10 ms until it exits
/// (growth in the last 10 ms before exit can be missed).
pub fn run_measuring_peak_rss(cmd: &mut Command) -> (Output, u64) {
    let mut peak_kib = 0u64;
    let output = run_polling(cmd, std::time::Duration::from_millis(10), |child| {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            if let Some(kib) = hwm {
                peak_kib = peak_kib.max(kib);
            }
        }
    });
    (output, peak_kib * 1024)
}
