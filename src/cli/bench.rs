//! `labelflow bench`: one run measuring each stage and the whole pipeline on the same
//! images and model, so the figures compare as ratios on one machine.
//!
//! - decode+preprocess: images/s of [`labelflow::decode`] + [`labelflow::preprocess`] on
//!   `decode_threads` threads, bytes already in memory;
//! - inference-only: images/s of the session(s) on preprocessed batches;
//! - end-to-end: images/s of [`labelflow::pipeline::Run`] over a folder of N images
//!   (hard links to the input files), writing Parquet to a temporary folder;
//! - peak RSS of each end-to-end run (the kernel's high-water mark, reset before each);
//! - with a baseline, the same measurements of `benches/baseline.py` — the PIL +
//!   multiprocessing + Python onnxruntime pipeline a user would write — on the same
//!   images, model, batch size and thread count, and the ratios labelflow ÷ Python.

use std::path::PathBuf;

use std::time::Instant;

use futures::StreamExt;

use labelflow::batch::{BatchInput, Element, Values};
use labelflow::config::Tuning;
use labelflow::decode::{self, DecodeLimits};
use labelflow::pipeline;
use labelflow::preprocess::{Preprocessor, Tta};
use labelflow::store::{Access, Location, RetryPolicy};
use labelflow::{Error, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub input: String,
    pub model: Option<PathBuf>,
    pub batch_size: usize,
    pub images: Vec<usize>,
    pub stage_images: usize,
    pub tuning: Tuning,
    pub ort_lib: Option<PathBuf>,
    /// Where the sessions run.
    pub device: labelflow::runtime::Device,
    /// Run the Python baseline with this interpreter.
    pub baseline: Option<PathBuf>,
    /// Run the peers (Daft, Ray Data) with this interpreter.
    pub peers: Option<PathBuf>,
}

/// The peers' pipelines, embedded like the baseline.
pub const PEERS_SCRIPT: &str = include_str!("../../benches/peers.py");

/// The interpreter `--peers` uses unless told: `LABELFLOW_PEERS_PYTHON`, the venv that
/// scripts/setup-peers.sh makes, then the baseline's.
pub fn default_peers_python() -> PathBuf {
    python_from(
        "LABELFLOW_PEERS_PYTHON",
        "third_party/peers-venv/bin/python",
    )
    .unwrap_or_else(default_python)
}

/// `$var`, else `venv` when it exists.
fn python_from(var: &str, venv: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(venv)).filter(|p| p.exists()))
}

/// The Python baseline, embedded so that an installed binary can run it anywhere.
pub const BASELINE_SCRIPT: &str = include_str!("../../benches/baseline.py");

/// The interpreter `--baseline` uses unless told: `LABELFLOW_PYTHON`, the project's
/// `.venv`, then `python3` on the PATH.
pub fn default_python() -> PathBuf {
    python_from("LABELFLOW_PYTHON", ".venv/bin/python").unwrap_or_else(|| PathBuf::from("python3"))
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub stage: String,
    pub images: usize,
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
    /// For an end-to-end run: the stage that bounded it (see [`labelflow::stages`]).
    pub bound: Option<String>,
}

impl Measurement {
    pub fn rate(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// The bench's results.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub model: String,
    /// The device the sessions ran on.
    pub device: String,
    pub batch_size: usize,
    pub threads: String,
    pub rows: Vec<Measurement>,
    /// `(what, labelflow ÷ python)`, when the baseline ran.
    pub ratios: Vec<(String, f64)>,
    /// The baseline's versions and settings, when it ran.
    pub baseline: Option<String>,
    /// `(peer, its settings, labelflow end to end ÷ the peer's)`, when the peers ran.
    pub peer_ratios: Vec<(String, String, f64)>,
}

impl BenchReport {
    /// A plain-text table; ratios are relative to inference-only.
    pub fn table(&self) -> String {
        let infer = self
            .rows
            .iter()
            .find(|r| r.stage == "inference-only")
            .map(Measurement::rate)
            .unwrap_or(f64::NAN);
        let mut s = format!(
            "model {} on {} · batch {} · {}\n{:<32} {:>8} {:>9} {:>10} {:>12} {:>14}\n",
            self.model,
            self.device,
            self.batch_size,
            self.threads,
            "stage",
            "images",
            "seconds",
            "img/s",
            "÷ inference",
            "peak RSS MiB"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:<32} {:>8} {:>9.2} {:>10.1} {:>12.2} {:>14}\n",
                r.stage,
                r.images,
                r.seconds,
                r.rate(),
                r.rate() / infer,
                r.peak_rss_mib
                    .map_or("-".to_string(), |m| format!("{m:.0}"))
            ));
        }
        for r in &self.rows {
            if let Some(bound) = &r.bound {
                s.push_str(&format!("  {} was bound by {bound}\n", r.stage));
            }
        }
        if let Some(b) = &self.baseline {
            s.push_str(&format!("\npython baseline: {b}\nlabelflow ÷ python:\n"));
        }
        for (what, ratio) in &self.ratios {
            s.push_str(&format!("  {what:<58} {ratio:>6.2}\n"));
        }
        if !self.peer_ratios.is_empty() {
            s.push_str("\nlabelflow end to end (model load included, as in the peers' times) ÷ peer end to end (same images, same model):\n");
        }
        for (peer, settings, ratio) in &self.peer_ratios {
            s.push_str(&format!("  {peer:<14} {ratio:>6.2}   ({settings})\n"));
        }
        s
    }

    fn rate_of(&self, stage: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.stage == stage)
            .map(Measurement::rate)
    }
}

/// Reset the kernel's peak-RSS mark for this process (Linux; ignored elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// Resident set size now, in MiB (Linux `VmRSS`).
pub fn rss_mib() -> Option<f64> {
    proc_status_mib("VmRSS:")
}

/// A `kB` line of `/proc/self/status`, in MiB.
fn proc_status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn read_images(dir: &str) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| Error::io(format!("reading {}", d.display()), e))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if decode::decode(&bytes, DecodeLimits::default()).is_ok() {
                    out.push((p, bytes));
                }
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::Input(format!("no decodable images in {dir}")));
    }
    Ok(out)
}

fn plan_for(
    opts: &BenchOptions,
    model: &std::path::Path,
    input: &str,
    output: &str,
) -> Result<labelflow::config::RunPlan> {
    let mut plan = labelflow::config::RunPlan::builder(input, output, model)
        .batch_size(opts.batch_size)
        .device(opts.device)
        .tuning(opts.tuning.clone());
    if let Some(lib) = &opts.ort_lib {
        plan = plan.ort_lib(lib);
    }
    plan.build()
}

/// Run every measurement.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport> {
    labelflow::runtime::init(opts.ort_lib.as_deref())?;
    let scratch = tempfile_dir()?;
    let model = match &opts.model {
        Some(m) => m.clone(),
        None => {
            use labelflow::onnx::alexnet::{self, AlexNetSpec};
            let spec = AlexNetSpec::default();
            let path = scratch.join("alexnet.onnx");
            let weights = spec
                .random_weights()
                .map_err(|e| labelflow::onnx::model_error(&path, e))?;
            alexnet::write_alexnet(
                &path,
                &spec,
                &weights,
                &alexnet::default_class_names(spec.num_classes),
            )
            .map_err(|e| labelflow::onnx::model_error(&path, e))?;
            path
        }
    };
    let files = read_images(&opts.input)?;
    let mut rows = Vec::new();

    // Model and preprocessing as a run would resolve them.
    let probe_plan = plan_for(
        opts,
        &model,
        &opts.input,
        &scratch.join("probe").display().to_string(),
    )?;
    let loaded = labelflow::infer::load_model(&probe_plan.model_options())?;
    let spec = loaded.spec.clone();
    let device = loaded.device;
    let element = loaded.info.element;

    // 1. decode + preprocess on the decode pool's thread count (and per core, for the
    // baseline's single-process rows).
    let n = opts.stage_images.max(1);
    let threads = opts.tuning.decode_threads.max(1);
    if opts.baseline.is_some() && threads > 1 {
        rows.push(measure_decode(&files, &spec, element, n, 1));
    }
    rows.push(measure_decode(&files, &spec, element, n, threads));

    // 2. inference only, on real preprocessed tensors.
    let batch = loaded.pool.batch_size();
    let mut pre = Preprocessor::new(spec.clone())?;
    let len = spec.tensor_len();
    let mut data = Values::with_capacity(element, batch * len);
    let mut one = Values::zeros(element, len);
    for i in 0..batch {
        let (_, bytes) = &files[i % files.len()];
        decode::decode_and_prepare_into(
            bytes,
            DecodeLimits::default(),
            &mut pre,
            Tta::None,
            &mut one,
            &mut Default::default(),
        )
        .map_err(|e| Error::Input(e.to_string()))?;
        data.extend_from(&one);
    }

    let handle = loaded.pool.handle();
    // One warm-up call, not timed.
    handle
        .run(BatchInput {
            data: data.clone(),
            real: batch,
        })
        .await?;
    let calls = n.div_ceil(batch);
    let t = Instant::now();
    let mut results = futures::stream::iter(0..calls)
        .map(|_| {
            let h = handle.clone();
            let d = data.clone();
            async move {
                h.run(BatchInput {
                    data: d,
                    real: batch,
                })
                .await
            }
        })
        .buffered(opts.tuning.sessions.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    rows.push(Measurement {
        stage: "inference-only".into(),
        images: calls * batch,
        seconds: t.elapsed().as_secs_f64(),
        peak_rss_mib: None,
        bound: None,
    });
    drop(results);
    // The pool's threads stop once every queue handle is gone.
    drop(handle);
    loaded.pool.shutdown();

    // 3. end to end over N images, once per requested size.
    for &count in opts.images.iter().filter(|&&c| c > 0) {
        let dir = scratch.join(format!("input-{count}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        for i in 0..count {
            let (src, _) = &files[i % files.len()];
            let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("jpg");
            let dst = dir.join(format!("img{i:07}.{ext}"));
            if !dst.exists() && std::fs::hard_link(src, &dst).is_err() {
                std::fs::copy(src, &dst)
                    .map_err(|e| Error::io(format!("copying {}", src.display()), e))?;
            }
        }
        let out = scratch.join(format!("output-{count}"));
        let plan = plan_for(
            opts,
            &model,
            &dir.display().to_string(),
            &out.display().to_string(),
        )?;
        let input = Location::parse(&plan.input, Access::Read, RetryPolicy::default())?;
        let output = Location::parse(&plan.output, Access::Write, RetryPolicy::default())?;
        let load_started = Instant::now();
        let loaded = labelflow::infer::load_model(&plan.model_options())?;
        let load_seconds = load_started.elapsed().as_secs_f64();
        reset_peak_rss();
        let summary = pipeline::Run::new(&plan)
            .opened(input, output, loaded)
            .execute()
            .await?;
        rows.push(Measurement {
            stage: format!("end-to-end ({count} images)"),
            images: (summary.labelled + summary.failed) as usize,
            seconds: summary.seconds,
            peak_rss_mib: peak_rss_mib(),
            bound: summary.load.first().map(|l| l.to_string()),
        });
        if opts.peers.is_some() {
            // The peers' times include making their sessions; so does this row.
            rows.push(Measurement {
                stage: format!("end-to-end ({count} images) + model load"),
                images: (summary.labelled + summary.failed) as usize,
                seconds: summary.seconds + load_seconds,
                peak_rss_mib: None,
                bound: None,
            });
        }
    }
    let mut baseline = None;
    if let Some(python) = &opts.baseline {
        let count = opts.images.last().copied().unwrap_or(0);
        let b = run_baseline(python, opts, &model, &scratch, count, n, batch)?;
        baseline = Some(b.settings);
        rows.extend(b.rows);
    }
    let mut peers = Vec::new();
    if let Some(python) = &opts.peers {
        let count = opts.images.last().copied().unwrap_or(0);
        let dir = scratch.join(format!("input-{count}"));
        let p = run_peers(python, opts, &model, &dir, &scratch, count, batch)?;
        peers = p.ratios_against;
        rows.extend(p.rows);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let mut report = BenchReport {
        model: model.display().to_string(),
        device: device.to_string(),
        batch_size: batch,
        threads: format!(
            "{} decode threads, {} session(s) × {} intra-op threads, {} cores",
            opts.tuning.decode_threads,
            opts.tuning.sessions,
            intra_threads_text(opts.tuning.intra_threads),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
        rows,
        ratios: Vec::new(),
        baseline,
        peer_ratios: Vec::new(),
    };
    if opts.baseline.is_some() {
        report.ratios = baseline_ratios(&report, opts);
    }
    report.peer_ratios = peer_ratios(&report, opts, &peers);
    Ok(report)
}

/// Decode + preprocess `n` images (cycling through `files`) on `threads` threads, as a
/// run's decode threads do (DCT-scaled decoding of large JPEGs included); a file that
/// fails costs its attempt only.
fn measure_decode(
    files: &[(PathBuf, Vec<u8>)],
    spec: &labelflow::preprocess::PreprocessSpec,
    element: Element,
    n: usize,
    threads: usize,
) -> Measurement {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| -> Result<()> {
                let mut pre = Preprocessor::new(spec.clone())?;
                let mut out = Values::zeros(element, spec.tensor_len());
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let (_, bytes) = &files[i % files.len()];
                    let _ = decode::decode_and_prepare_into(
                        bytes,
                        DecodeLimits::default(),
                        &mut pre,
                        Tta::None,
                        &mut out,
                        &mut Default::default(),
                    );
                }
            });
        }
    });
    Measurement {
        stage: format!("decode+preprocess ({threads} thr)"),
        images: n,
        seconds: t.elapsed().as_secs_f64(),
        peak_rss_mib: None,
        bound: None,
    }
}

/// The last line of a script's stdout that is a JSON object: its report.
fn last_json_line(out: &std::process::Output) -> Option<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
}

/// The last 8 lines a script wrote to stderr.
fn stderr_tail(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// What the baseline measured.
struct BaselineRun {
    rows: Vec<Measurement>,
    settings: String,
}

/// Run `benches/baseline.py` (embedded) with `python` on the same images and model.
fn run_baseline(
    python: &std::path::Path,
    opts: &BenchOptions,
    model: &std::path::Path,
    scratch: &std::path::Path,
    images: usize,
    stage_images: usize,
    batch: usize,
) -> Result<BaselineRun> {
    let script = scratch.join("baseline.py");
    std::fs::write(&script, BASELINE_SCRIPT)
        .map_err(|e| Error::io(format!("writing {}", script.display()), e))?;
    let procs = opts.tuning.decode_threads.max(1);
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .args(["--input", &opts.input])
        .args(["--images", &images.to_string()])
        .args(["--stage-images", &stage_images.to_string()])
        .args(["--batch-size", &batch.to_string()])
        .args(["--procs", &procs.to_string()])
        .args(["--intra-threads", &opts.tuning.intra_threads.to_string()])
        .arg("--output")
        .arg(scratch.join("baseline-output"))
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| {
            Error::Input(format!(
                "cannot start the Python baseline with {}: {e}; pass --python PATH (an interpreter with pillow, numpy, onnxruntime and pyarrow: pip install -r scripts/requirements-test.txt)",
                python.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Input(format!(
            "the Python baseline ({}) failed ({}):\n{}",
            python.display(),
            out.status,
            stderr_tail(&out)
        )));
    }
    let report = last_json_line(&out).ok_or_else(|| {
        Error::Input(format!(
            "the Python baseline printed no report; its output:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_tail(&out)
        ))
    })?;
    let row = |key: &str, stage: String| -> Result<Measurement> {
        let r = &report[key];
        match (r["images"].as_u64(), r["seconds"].as_f64()) {
            (Some(images), Some(seconds)) => Ok(Measurement {
                stage,
                images: images as usize,
                seconds,
                peak_rss_mib: r["peak_rss_mib"].as_f64(),
                bound: None,
            }),
            _ => Err(Error::Input(format!(
                "the Python baseline's report has no {key}: {report}"
            ))),
        }
    };
    let rows = vec![
        row("decode_full", "python decode full (1 proc)".into())?,
        row("decode_draft", "python decode draft (1 proc)".into())?,
        row("inference_only", "python inference-only".into())?,
        row("end_to_end", format!("python end-to-end ({images} images)"))?,
    ];
    let settings = format!(
        "Pillow {} (resize BILINEAR, exif_transpose), onnxruntime {}, {} worker processes, intra-op threads {}",
        report["pillow"].as_str().unwrap_or("?"),
        report["onnxruntime"].as_str().unwrap_or("?"),
        procs,
        intra_threads_text(opts.tuning.intra_threads)
    );
    Ok(BaselineRun { rows, settings })
}

/// What the peers measured.
struct PeersRun {
    rows: Vec<Measurement>,
    /// `(peer, settings)` for each peer that ran.
    ratios_against: Vec<(String, String)>,
}

/// Run `benches/peers.py` (embedded) with `python` on the end-to-end folder `dir`.
fn run_peers(
    python: &std::path::Path,
    opts: &BenchOptions,
    model: &std::path::Path,
    dir: &std::path::Path,
    scratch: &std::path::Path,
    images: usize,
    batch: usize,
) -> Result<PeersRun> {
    let script = scratch.join("peers.py");
    std::fs::write(&script, PEERS_SCRIPT)
        .map_err(|e| Error::io(format!("writing {}", script.display()), e))?;
    let threads = opts.tuning.decode_threads.max(1);
    let device = if opts.device == labelflow::runtime::Device::Cpu {
        "cpu"
    } else {
        "cuda"
    };
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(dir)
        .args(["--batch-size", &batch.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--intra-threads", &opts.tuning.intra_threads.to_string()])
        .args(["--device", device])
        .arg("--output")
        .arg(scratch.join("peers-output"))
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| {
            Error::Input(format!(
                "cannot start the peers with {}: {e}; run scripts/setup-peers.sh (daft, ray[data], onnxruntime) or pass --peers-python PATH",
                python.display()
            ))
        })?;
    let report = last_json_line(&out).ok_or_else(|| {
        Error::Input(format!(
            "the peers ({}) printed no report ({}); run scripts/setup-peers.sh to install them:\n{}",
            python.display(),
            out.status,
            stderr_tail(&out)
        ))
    })?;
    let mut run = PeersRun {
        rows: Vec::new(),
        ratios_against: Vec::new(),
    };
    let mut errors = Vec::new();
    for (key, name) in [("daft", "Daft"), ("ray", "Ray Data")] {
        let r = &report[key];
        if let Some(e) = r["error"].as_str() {
            errors.push(e.to_string());
            continue;
        }
        let (Some(n), Some(seconds)) = (r["images"].as_u64(), r["seconds"].as_f64()) else {
            errors.push(format!("{name}: no result in {r}"));
            continue;
        };
        let label = format!("{name} {}", r["version"].as_str().unwrap_or("?"));
        run.rows.push(Measurement {
            stage: format!("{label} end-to-end ({images} images)"),
            images: n as usize,
            seconds,
            peak_rss_mib: None,
            bound: None,
        });
        run.ratios_against.push((
            label,
            r["settings"].as_str().unwrap_or_default().to_string(),
        ));
    }
    if run.rows.is_empty() {
        return Err(Error::Input(format!(
            "no peer ran: {}; run scripts/setup-peers.sh",
            errors.join("; ")
        )));
    }
    for e in errors {
        eprintln!("bench: {e}");
    }
    Ok(run)
}

/// labelflow's end to end ÷ each peer's, on the same folder.
fn peer_ratios(
    report: &BenchReport,
    opts: &BenchOptions,
    peers: &[(String, String)],
) -> Vec<(String, String, f64)> {
    let count = opts.images.last().copied().unwrap_or(0);
    let Some(ours) = report.rate_of(&format!("end-to-end ({count} images) + model load")) else {
        return Vec::new();
    };
    peers
        .iter()
        .filter_map(|(label, settings)| {
            let theirs = report.rate_of(&format!("{label} end-to-end ({count} images)"))?;
            Some((label.clone(), settings.clone(), ours / theirs))
        })
        .collect()
}

/// ONNX Runtime's intra-op thread setting as the tables print it (0 = its default).
fn intra_threads_text(n: usize) -> String {
    match n {
        0 => "default".to_string(),
        n => n.to_string(),
    }
}

/// labelflow ÷ Python for the rows measured on both sides.
fn baseline_ratios(report: &BenchReport, opts: &BenchOptions) -> Vec<(String, f64)> {
    let count = opts.images.last().copied().unwrap_or(0);
    let threads = opts.tuning.decode_threads.max(1);
    // (what, labelflow's row, Python's row, how many Python processes the rate is
    // scaled to: per-core rows compare one thread with one process).
    let mut pairs = vec![
        (
            "decode+preprocess per core ÷ Pillow full decode".to_string(),
            "decode+preprocess (1 thr)".to_string(),
            "python decode full (1 proc)".to_string(),
            1.0,
        ),
        (
            "decode+preprocess per core ÷ Pillow with draft()".to_string(),
            "decode+preprocess (1 thr)".to_string(),
            "python decode draft (1 proc)".to_string(),
            1.0,
        ),
    ];
    if threads > 1 {
        pairs.push((
            format!("decode+preprocess ({threads} thr) ÷ Pillow with draft() × {threads}"),
            format!("decode+preprocess ({threads} thr)"),
            "python decode draft (1 proc)".to_string(),
            threads as f64,
        ));
    }
    pairs.extend([
        (
            "inference-only ÷ python inference-only".to_string(),
            "inference-only".to_string(),
            "python inference-only".to_string(),
            1.0,
        ),
        (
            format!("end-to-end ({count} images) ÷ python end-to-end"),
            format!("end-to-end ({count} images)"),
            format!("python end-to-end ({count} images)"),
            1.0,
        ),
    ]);
    pairs
        .into_iter()
        .filter_map(|(what, ours, theirs, scale)| {
            Some((
                what,
                report.rate_of(&ours)? / (report.rate_of(&theirs)? * scale),
            ))
        })
        .collect()
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("labelflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// What listing a store measured: how fast keys stream and whether memory stays
/// flat while they do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListingReport {
    pub input: String,
    pub keys: u64,
    pub seconds: f64,
    /// Resident memory (MiB) before the listing, and after each tenth of it
    /// (sampled every `sample_every` keys).
    pub rss_mib: Vec<(u64, f64)>,
    pub peak_rss_mib: Option<f64>,
}

impl ListingReport {
    pub fn keys_per_second(&self) -> f64 {
        self.keys as f64 / self.seconds.max(1e-9)
    }

    /// Growth of resident memory from the first sample after the start to the last,
    /// per million keys listed (flat listing: near zero).
    pub fn growth_mib_per_million(&self) -> Option<f64> {
        let (k0, r0) = *self.rss_mib.get(1)?;
        let (k1, r1) = *self.rss_mib.last()?;
        (k1 > k0).then(|| (r1 - r0) / ((k1 - k0) as f64 / 1e6))
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "listing {}\n  keys            {}\n  seconds         {:.2}\n  keys/s          {:.0}\n  peak RSS        {}\n",
            self.input,
            self.keys,
            self.seconds,
            self.keys_per_second(),
            self.peak_rss_mib
                .map(|m| format!("{m:.1} MiB"))
                .unwrap_or_else(|| "unknown".into()),
        );
        if let Some(g) = self.growth_mib_per_million() {
            out.push_str(&format!("  RSS growth      {g:+.1} MiB per million keys\n"));
        }
        out.push_str("  RSS while listing (keys listed → MiB):");
        for (k, r) in &self.rss_mib {
            out.push_str(&format!(" {k}→{r:.1}"));
        }
        out.push('\n');
        out
    }
}

/// List every key under `input` the way a run does (streamed, page by page, every
/// extension), counting keys and sampling resident memory every `sample_every` keys.
pub async fn listing(
    input: &str,
    retry: labelflow::store::RetryPolicy,
    sample_every: u64,
) -> Result<ListingReport> {
    use futures::TryStreamExt;
    let location = labelflow::store::Location::parse(input, labelflow::store::Access::Read, retry)?;
    let filter = labelflow::source::Filter::new(&labelflow::source::Selection {
        extensions: Vec::new(),
        ..Default::default()
    })?;
    reset_peak_rss();
    let counters = std::sync::Arc::new(labelflow::source::ListingCounters::default());
    let mut samples = vec![(0, rss_mib().unwrap_or(0.0))];
    let started = Instant::now();
    let mut keys = 0u64;
    let mut stream = labelflow::source::list(&location, filter, None, counters);
    while let Some(_object) = stream.try_next().await? {
        keys += 1;
        if keys % sample_every.max(1) == 0 {
            samples.push((keys, rss_mib().unwrap_or(0.0)));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if samples.last().is_some_and(|(k, _)| *k != keys) {
        samples.push((keys, rss_mib().unwrap_or(0.0)));
    }
    Ok(ListingReport {
        input: location.to_string(),
        keys,
        seconds,
        rss_mib: samples,
        peak_rss_mib: peak_rss_mib(),
    })
}
