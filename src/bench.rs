//! `labelflow bench`: one run measuring each stage and the whole pipeline on the same
//! images and model, so the figures compare as ratios on one machine.
//!
//! - decode+preprocess: images/s of [`crate::decode`] + [`crate::preprocess`] on
//!   `decode_threads` threads, bytes already in memory;
//! - inference-only: images/s of the session(s) on preprocessed batches;
//! - end-to-end: images/s of [`crate::pipeline::run_with`] over a folder of N images
//!   (hard links to the input files), writing Parquet to a temporary folder;
//! - peak RSS of each end-to-end run (the kernel's high-water mark, reset before each).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::batch::BatchInput;
use crate::config::Tuning;
use crate::decode::{self, DecodeLimits};
use crate::error::{Error, Result};
use crate::pipeline::{self, NoProgress};
use crate::preprocess::{Preprocessor, Tta};
use crate::store::{Access, Location, RetryPolicy};

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
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub stage: String,
    pub images: usize,
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
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
    pub batch_size: usize,
    pub threads: String,
    pub rows: Vec<Measurement>,
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
            "model {} · batch {} · {}\n{:<26} {:>8} {:>9} {:>10} {:>12} {:>14}\n",
            self.model,
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
                "{:<26} {:>8} {:>9.2} {:>10.1} {:>12.2} {:>14}\n",
                r.stage,
                r.images,
                r.seconds,
                r.rate(),
                r.rate() / infer,
                r.peak_rss_mib
                    .map_or("-".to_string(), |m| format!("{m:.0}"))
            ));
        }
        s
    }
}

/// Reset the kernel's peak-RSS mark for this process (Linux; ignored elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
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
) -> Result<crate::config::RunPlan> {
    let mut plan = crate::config::RunPlan::builder(input, output, model)
        .batch_size(opts.batch_size)
        .tuning(opts.tuning.clone());
    if let Some(lib) = &opts.ort_lib {
        plan = plan.ort_lib(lib);
    }
    plan.build()
}

/// Run every measurement.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport> {
    crate::runtime::init(opts.ort_lib.as_deref())?;
    let scratch = tempfile_dir()?;
    let model = match &opts.model {
        Some(m) => m.clone(),
        None => {
            use crate::onnx::alexnet::{self, AlexNetSpec};
            let spec = AlexNetSpec::default();
            let path = scratch.join("alexnet.onnx");
            let weights = spec
                .random_weights()
                .map_err(|e| crate::onnx::model_error(&path, e))?;
            alexnet::write_alexnet(
                &path,
                &spec,
                &weights,
                &alexnet::default_class_names(spec.num_classes),
            )
            .map_err(|e| crate::onnx::model_error(&path, e))?;
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
    let loaded = crate::infer::load_model(&probe_plan)?;
    let spec = loaded.spec.clone();

    // 1. decode + preprocess on the decode pool's thread count.
    let n = opts.stage_images.max(1);
    let threads = opts.tuning.decode_threads.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| -> Result<()> {
                let mut pre = Preprocessor::new(spec.clone())?;
                let mut out = vec![0f32; spec.tensor_len()];
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let (_, bytes) = &files[i % files.len()];
                    // What a run's decode threads do (DCT-scaled decoding of large
                    // JPEGs included); a file that fails costs its attempt only.
                    let _ = decode::decode_and_prepare(
                        bytes,
                        DecodeLimits::default(),
                        &mut pre,
                        Tta::None,
                        &mut out,
                    );
                }
            });
        }
    });
    rows.push(Measurement {
        stage: format!("decode+preprocess ({threads} thr)"),
        images: n,
        seconds: t.elapsed().as_secs_f64(),
        peak_rss_mib: None,
    });

    // 2. inference only, on real preprocessed tensors.
    let batch = loaded.pool.batch_size();
    let mut pre = Preprocessor::new(spec.clone())?;
    let mut data = Vec::with_capacity(batch * spec.tensor_len());
    for i in 0..batch {
        let (_, bytes) = &files[i % files.len()];
        let img = decode::decode(bytes, DecodeLimits::default())
            .map_err(|e| Error::Input(e.to_string()))?;
        data.extend(pre.run(&img.pixels, img.width, img.height)?);
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
    });
    drop(results);
    // The pool's threads stop once every queue handle is gone.
    drop(handle);
    loaded.pool.shutdown();

    // 3. end to end over N images, once per requested size.
    for &count in &opts.images {
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
        let loaded = crate::infer::load_model(&plan)?;
        reset_peak_rss();
        let summary =
            pipeline::run_with(&plan, &input, &output, loaded, Arc::new(NoProgress)).await?;
        rows.push(Measurement {
            stage: format!("end-to-end ({count} images)"),
            images: (summary.labelled + summary.failed) as usize,
            seconds: summary.seconds,
            peak_rss_mib: peak_rss_mib(),
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(BenchReport {
        model: model.display().to_string(),
        batch_size: batch,
        threads: format!(
            "{} decode threads, {} session(s) × {} intra-op threads, {} cores",
            opts.tuning.decode_threads,
            opts.tuning.sessions,
            if opts.tuning.intra_threads == 0 {
                "default".to_string()
            } else {
                opts.tuning.intra_threads.to_string()
            },
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
        rows,
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("labelflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}
