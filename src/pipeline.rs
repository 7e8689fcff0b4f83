//! A whole run: list → fetch → decode/preprocess (CPU pool) → batch → infer → sink.
//!
//! Two tasks joined by a bounded channel: the producer drives the listing and keeps at
//! most `fetch_concurrency` objects in flight (fetched and decoded on a pool limited to
//! `decode_threads`), packing fixed-shape batches; the consumer runs inference and
//! writes rows. Every stage is bounded, so memory does not grow with the bucket.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::config::RunPlan;
use crate::decode::{self, DecodeError, DecodeLimits};
use crate::error::{Error, Result};
use crate::infer::{
    self, BatchInput, InferenceHandle, InferencePool, ModelBytes, ModelInfo, SessionOptions,
};
use crate::preprocess::{PreprocessSpec, Preprocessor, Tta};
use crate::sink::{self, ModelStamp, PartWriter, Row};
use crate::source::{self, Filter, ListingCounters, ObjectRef};
use crate::store::{Access, Location, RetryPolicy};

/// Live counters of a run; read them for progress.
#[derive(Debug, Default)]
pub struct Stats {
    pub listing: Arc<ListingCounters>,
    /// Objects skipped because this run already has them (resume).
    pub skipped: AtomicU64,
    /// Objects labelled successfully.
    pub labelled: AtomicU64,
    /// Objects written as error rows.
    pub failed: AtomicU64,
}

/// Progress reporting; the default methods do nothing.
pub trait Progress: Send + Sync {
    /// Called once the model is loaded and the listing starts.
    fn started(&self, _run_id: &str, _stats: Arc<Stats>) {}
    /// Called when the run ends (successfully or not).
    fn finished(&self) {}
}

/// Progress that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a finished run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub input: String,
    pub output: String,
    pub model: String,
    pub model_sha256: String,
    pub device: String,
    pub listed: u64,
    pub selected: u64,
    pub skipped: u64,
    pub labelled: u64,
    pub failed: u64,
    pub rows_written: u64,
    pub parts: Vec<String>,
    pub seconds: f64,
    pub images_per_second: f64,
    pub preprocess: PreprocessSpec,
    /// Inputs per inference call (with test-time augmentation, views, not images).
    pub batch_size: usize,
    /// Test-time augmentation used.
    pub tta: Tta,
}

impl RunSummary {
    /// Process exit code: 0 all labelled, 1 some rows carry errors.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed > 0)
    }
}

/// A loaded model ready to run, with its resolved preprocessing.
pub struct LoadedModel {
    pub bytes: ModelBytes,
    pub info: ModelInfo,
    pub spec: PreprocessSpec,
    /// The device the sessions run on (CPU after a permitted CUDA fallback).
    pub device: crate::runtime::Device,
    pub pool: InferencePool,
}

/// Load ONNX Runtime and the model, resolve preprocessing, start the sessions.
pub fn load_model(plan: &RunPlan) -> Result<LoadedModel> {
    crate::runtime::init(plan.ort_lib.as_deref())?;
    let bytes = ModelBytes::read(&plan.model)?;
    let opts = SessionOptions {
        device: plan.device,
        allow_cpu_fallback: plan.allow_cpu_fallback,
        intra_threads: plan.tuning.intra_threads,
    };
    let (first, device) = infer::build_session_on(&bytes, &opts)?;
    let info = infer::describe(&bytes, &first)?;
    let mut base = info.preprocess.clone().unwrap_or_default();
    if info.preprocess.is_none() {
        base.layout = info.layout;
        if let Some(size) = info.input_size {
            base.resize = ((f64::from(size) * 256.0 / 224.0).round() as u32).max(size);
            base.crop = size;
        }
    }
    let spec = plan.preprocess.apply(base);
    spec.validate()?;
    infer::check_spec(&bytes, &info, &spec)?;
    // With test-time augmentation a batch holds whole images' views: round it up to
    // a multiple of the views per image.
    let views = plan.tta.views();
    let batch = plan.batch_size.div_ceil(views) * views;
    let pool = InferencePool::start(
        &bytes,
        &opts,
        device,
        first,
        info.clone(),
        plan.tuning.sessions,
        batch,
        plan.tuning.batch_queue,
        &spec,
    )?;
    if pool.batch_size() < views {
        let fixed = pool.batch_size();
        pool.shutdown();
        return Err(Error::Config(format!(
            "--tta {} needs {views} inputs per image, but {} has a fixed batch size of {fixed}; use --tta none or a model with a dynamic (or larger) batch",
            plan.tta,
            plan.model.display()
        )));
    }
    Ok(LoadedModel {
        bytes,
        info,
        spec,
        device,
        pool,
    })
}

/// One object after fetch + decode + preprocess.
enum Prepared {
    Ready {
        object: ObjectRef,
        width: u32,
        height: u32,
        tensor: Vec<f32>,
    },
    Failed {
        object: ObjectRef,
        error: String,
    },
}

/// What the producer hands the consumer.
enum Work {
    Batch {
        input: BatchInput,
        items: Vec<(ObjectRef, u32, u32)>,
    },
    Failed(Row),
}

/// Label everything `plan` selects. Fatal problems are `Err`; per-image problems are
/// rows with an `error` and counted in the summary.
pub async fn run(plan: &RunPlan, progress: Arc<dyn Progress>) -> Result<RunSummary> {
    let input = Location::parse(&plan.input, Access::Read, RetryPolicy::default())?;
    let model = load_model(plan)?;
    let output = Location::parse(&plan.output, Access::Write, RetryPolicy::default())?;
    sink::probe_writable(&output).await?;
    run_with(plan, &input, &output, model, progress).await
}

/// Like [`run`], over locations and a model the caller already opened.
pub async fn run_with(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    model: LoadedModel,
    progress: Arc<dyn Progress>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let run_id = match &plan.run_id {
        Some(id) => id.clone(),
        None => sink::new_run_id(),
    };
    let done: HashSet<String> = match &plan.run_id {
        Some(id) => sink::committed_uris(output, id).await?,
        None => HashSet::new(),
    };
    if !done.is_empty() {
        tracing::info!(run_id = %run_id, already = done.len(), "resuming run; objects already written are skipped");
    }
    let stats = Arc::new(Stats::default());
    progress.started(&run_id, stats.clone());
    let result = drive(plan, input, output, &model, &run_id, done, stats.clone()).await;
    progress.finished();
    let LoadedModel {
        bytes,
        info,
        spec,
        device,
        pool,
    } = model;
    let batch_size = pool.batch_size();
    pool.shutdown();
    let (rows_written, parts) = result?;

    let listed = stats.listing.listed.load(Relaxed);
    let selected = stats.listing.selected.load(Relaxed);
    if listed == 0 {
        return Err(Error::Input(format!(
            "no objects found under {input}; check the path or URL (and credentials for a bucket)"
        )));
    }
    let seconds = started.elapsed().as_secs_f64();
    let labelled = stats.labelled.load(Relaxed);
    let failed = stats.failed.load(Relaxed);
    let summary = RunSummary {
        run_id: run_id.clone(),
        input: input.to_string(),
        output: output.to_string(),
        model: info.name.clone(),
        model_sha256: info.sha256.clone(),
        device: device.to_string(),
        listed,
        selected,
        skipped: stats.skipped.load(Relaxed),
        labelled,
        failed,
        rows_written,
        parts,
        seconds,
        images_per_second: (labelled + failed) as f64 / seconds.max(1e-9),
        preprocess: spec,
        batch_size,
        tta: plan.tta,
    };
    let _ = bytes;
    if rows_written > 0 {
        let value = serde_json::to_value(&summary).map_err(|e| Error::Encode(e.to_string()))?;
        sink::write_summary(output, &run_id, plan.selection.shard, &value).await?;
    }
    Ok(summary)
}

/// Rows written and the URIs of the published parts.
type Written = (u64, Vec<String>);

#[allow(clippy::too_many_arguments)]
async fn drive(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    model: &LoadedModel,
    run_id: &str,
    done: HashSet<String>,
    stats: Arc<Stats>,
) -> Result<Written> {
    let filter = Filter::new(&plan.selection)?;
    // The session batch counts inputs; an image is `views` of them.
    let views = plan.tta.views();
    let batch_size = model.pool.batch_size();
    let images_per_batch = (batch_size / views).max(1);
    let model_len = model.spec.tensor_len();
    let tensor_len = model_len * views;
    let (tx, rx) = mpsc::channel::<Work>(plan.tuning.batch_queue.max(1));

    let mut tasks: JoinSet<Result<Option<Written>>> = JoinSet::new();

    // Producer: list, fetch, decode, batch.
    {
        let input = input.clone();
        let stats = stats.clone();
        let spec = model.spec.clone();
        let limits = DecodeLimits {
            max_pixels: plan.max_pixels,
        };
        let max_bytes = plan.max_bytes;
        let tta = plan.tta;
        let limit = plan.selection.limit;
        let concurrency = plan.tuning.fetch_concurrency;
        let decode_pool = Arc::new(Semaphore::new(plan.tuning.decode_threads));
        tasks.spawn(async move {
            let listing = source::list(&input, filter, limit, stats.listing.clone());
            let skipped = stats.clone();
            let prepared = listing
                .try_filter(move |o| {
                    let keep = !done.contains(&o.uri);
                    if !keep {
                        skipped.skipped.fetch_add(1, Relaxed);
                    }
                    futures::future::ready(keep)
                })
                .map_ok(|object| {
                    let input = input.clone();
                    let spec = spec.clone();
                    let pool = decode_pool.clone();
                    prepare(input, object, spec, tta, limits, max_bytes, pool)
                })
                .try_buffer_unordered(concurrency);
            futures::pin_mut!(prepared);
            let mut data = Vec::with_capacity(images_per_batch * tensor_len);
            let mut items = Vec::with_capacity(images_per_batch);
            while let Some(p) = prepared.try_next().await? {
                match p {
                    Prepared::Failed { object, error } => {
                        let row = Row {
                            object,
                            width: None,
                            height: None,
                            top: Vec::new(),
                            error: Some(error),
                            labelled_at: chrono::Utc::now(),
                        };
                        if tx.send(Work::Failed(row)).await.is_err() {
                            return Ok(None);
                        }
                    }
                    Prepared::Ready {
                        object,
                        width,
                        height,
                        tensor,
                    } => {
                        data.extend_from_slice(&tensor);
                        items.push((object, width, height));
                        if items.len() == images_per_batch {
                            let real = items.len() * views;
                            let mut data = std::mem::replace(
                                &mut data,
                                Vec::with_capacity(images_per_batch * tensor_len),
                            );
                            // Pad when the batch is not a multiple of the views.
                            data.resize(batch_size * model_len, 0.0);
                            let input = BatchInput { data, real };
                            let items =
                                std::mem::replace(&mut items, Vec::with_capacity(images_per_batch));
                            if tx.send(Work::Batch { input, items }).await.is_err() {
                                return Ok(None);
                            }
                        }
                    }
                }
            }
            if !items.is_empty() {
                // Pad the last batch so the session always sees one shape.
                let real = items.len() * views;
                data.resize(batch_size * model_len, 0.0);
                let _ = tx
                    .send(Work::Batch {
                        input: BatchInput { data, real },
                        items,
                    })
                    .await;
            }
            Ok(None)
        });
    }

    // Consumer: infer and write.
    {
        let handle: InferenceHandle = model.pool.handle();
        let classes = Arc::new(model.info.classes.clone());
        let stamp = ModelStamp {
            name: model.info.name.clone(),
            sha256: model.info.sha256.clone(),
            classes: classes.clone(),
        };
        let output_views = views;
        let mut writer = PartWriter::new(
            output.clone(),
            run_id,
            plan.selection.shard,
            plan.sink.clone(),
            stamp,
        )?;
        let output_kind = model.info.output_kind;
        let n_classes = model.info.num_classes();
        let top_k = plan.top_k;
        let sessions = plan.tuning.sessions;
        let stats = stats.clone();
        tasks.spawn(async move {
            let results = tokio_stream_from(rx)
                .map(|work| {
                    let handle = handle.clone();
                    async move {
                        match work {
                            Work::Failed(row) => Ok::<_, Error>(Ok(vec![row])),
                            Work::Batch { input, items } => {
                                let scores = handle.run(input).await?;
                                Ok(Err((items, scores)))
                            }
                        }
                    }
                })
                .buffered(sessions);
            futures::pin_mut!(results);
            while let Some(done) = results.next().await {
                match done? {
                    Ok(rows) => {
                        for row in rows {
                            stats.failed.fetch_add(1, Relaxed);
                            writer.push(&row).await?;
                        }
                    }
                    Err((items, mut scores)) => {
                        let now = chrono::Utc::now();
                        let per_image = n_classes * output_views;
                        for (i, (object, width, height)) in items.into_iter().enumerate() {
                            let row_scores = &mut scores[i * per_image..(i + 1) * per_image];
                            let top = if output_views == 1 {
                                infer::top_k(row_scores, output_kind, top_k)
                            } else {
                                let mut mean =
                                    infer::average_views(row_scores, n_classes, output_kind);
                                infer::top_k(&mut mean, infer::OutputKind::Probabilities, top_k)
                            };
                            let row = Row {
                                object,
                                width: Some(width),
                                height: Some(height),
                                top,
                                error: None,
                                labelled_at: now,
                            };
                            writer.push(&row).await?;
                            stats.labelled.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            let written = writer.finish().await?;
            Ok(Some(written))
        });
    }

    let mut written = None;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(Some(w))) => written = Some(w),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(Error::Task(e.to_string()));
                }
                tasks.abort_all();
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    written.ok_or_else(|| Error::Task("the writer stopped without a result".into()))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn prepare(
    input: Location,
    object: ObjectRef,
    spec: PreprocessSpec,
    tta: Tta,
    limits: DecodeLimits,
    max_bytes: u64,
    pool: Arc<Semaphore>,
) -> Result<Prepared> {
    if object.size > max_bytes {
        let error = DecodeError::TooLarge {
            size: object.size,
            limit: max_bytes,
        }
        .to_string();
        return Ok(Prepared::Failed { object, error });
    }
    let bytes = match source::fetch(&input, &object).await {
        Ok(b) => b,
        Err(e) => {
            let error = DecodeError::Fetch(e).to_string();
            return Ok(Prepared::Failed { object, error });
        }
    };
    let _permit = pool
        .acquire_owned()
        .await
        .map_err(|_| Error::Task("decode pool closed".into()))?;
    let decoded = tokio::task::spawn_blocking(
        move || -> std::result::Result<(u32, u32, Vec<f32>), String> {
            let img = decode::decode(&bytes, limits).map_err(|e| e.to_string())?;
            let mut pre = Preprocessor::new(spec).map_err(|e| e.to_string())?;
            let mut tensor = vec![0f32; pre.spec().tensor_len() * tta.views()];
            pre.run_views_into(&img.pixels, img.width, img.height, tta, &mut tensor)
                .map_err(|e| format!("preprocess failed: {e}"))?;
            Ok((img.width, img.height, tensor))
        },
    )
    .await?;
    Ok(match decoded {
        Ok((width, height, tensor)) => Prepared::Ready {
            object,
            width,
            height,
            tensor,
        },
        Err(error) => Prepared::Failed { object, error },
    })
}
