//! A whole run: list → fetch → decode/preprocess (CPU pool) → batch → infer → sink.
//!
//! Two tasks joined by a bounded channel: the producer drives the listing and keeps at
//! most `fetch_concurrency` objects in flight (fetched and decoded on a pool limited to
//! `decode_threads`), packing fixed-shape batches; the consumer runs inference and
//! writes rows. Every stage is bounded, so memory does not grow with the bucket.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::batch::{Batch, BatchShape, Batcher};
use crate::config::RunPlan;
use crate::cpu_pool::CpuPool;
use crate::decode::{self, DecodeError, DecodeLimits};
use crate::error::{Error, Result};
use crate::infer::{self, InferenceHandle};
use crate::infer::{load_model, LoadedModel};
use crate::lease::{Lease, LeaseWatch};
use crate::manifest;
use crate::preprocess::{PreprocessSpec, Preprocessor, Tta};
use crate::redact::redact;
use crate::rerun::Unchanged;
use crate::runs::{self, RunStatus};
use crate::schema;
use crate::sink::{self, CommittedKeys, ModelStamp, PartWriter, Row};
use crate::source::{self, Filter, ListingCounters, ObjectRef, Shard};
use crate::stages::{Stage, StageClock, StageLoad, StageTimes, Timed, Workers};
use crate::store::{Access, Location};

/// Live counters of a run; read them for progress.
#[derive(Debug, Default)]
pub struct Stats {
    pub listing: Arc<ListingCounters>,
    /// Objects skipped because this run already has them (resume).
    pub skipped: AtomicU64,
    /// Objects skipped because an earlier run of the same labels has them unchanged.
    pub unchanged: AtomicU64,
    /// Objects labelled successfully.
    pub labelled: AtomicU64,
    /// Objects written as error rows.
    pub failed: AtomicU64,
    /// Busy time per stage.
    pub stages: StageClock,
    /// How many workers each stage has.
    pub workers: Workers,
}

/// Progress reporting; the default methods do nothing.
pub trait Progress: Send + Sync {
    /// Called once the model is loaded and the listing starts.
    fn started(&self, _run_id: &str, _stats: Arc<Stats>) {}
    /// A line a person watching the run should read (resuming, stopping).
    fn note(&self, _message: &str) {}
    /// Called when the run ends (successfully or not).
    fn finished(&self) {}
}

/// Progress that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A request to stop a run early (SIGTERM, Ctrl-C, a caller's deadline). The run
/// stops listing, labels what is already decoded for at most the plan's stop grace,
/// publishes the open part and returns a summary with status `interrupted`.
#[derive(Clone, Default)]
pub struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Default)]
struct StopInner {
    requested: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the run to stop; safe to call from any thread, any number of times.
    pub fn request(&self) {
        self.inner.requested.store(true, Relaxed);
        self.inner.notify.notify_waiters();
    }

    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Relaxed)
    }

    /// Resolves once a stop was requested.
    pub async fn requested(&self) {
        let notified = self.inner.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_requested() {
            return;
        }
        notified.await;
    }
}

/// Exit code of a run stopped by a signal after committing its progress.
pub const EXIT_INTERRUPTED: u8 = 3;

/// Exit code of a worker that wrote nothing (or stopped writing) because another live
/// worker holds its shard's lease: retry later, it is not a failure of the job.
pub const EXIT_LEASE_HELD: u8 = 4;

/// What a run did (also its record under `_runs/`, see [`crate::runs`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub status: RunStatus,
    /// Whether this invocation continued an earlier, unfinished run.
    pub resumed: bool,
    /// Digest of what decides the rows (input, filters, model, preprocessing, tta, top-k).
    pub fingerprint: String,
    /// Digest of what decides one object's row (model, preprocessing, tta, top-k,
    /// embeddings): a later run with the same one skips the objects this run labelled,
    /// while they stay unchanged.
    pub labels_fingerprint: String,
    pub shard: String,
    pub started_at: String,
    pub input: String,
    pub output: String,
    pub model: String,
    pub model_sha256: String,
    pub device: String,
    pub listed: u64,
    pub selected: u64,
    /// Already written by this run (a continued run).
    pub skipped: u64,
    /// Labelled unchanged by an earlier run of the same labels (not labelled again).
    pub skipped_unchanged: u64,
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
    /// Whether objects labelled unchanged by earlier runs were labelled again.
    pub relabel_all: bool,
    /// The epoch of the shard's lease this run held (1 for its first writer).
    pub lease_epoch: u64,
    /// Peak resident memory of the process so far (Linux), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Busy seconds per stage, summed over each stage's workers.
    pub stages: StageTimes,
    /// Each stage's busy share of its capacity, highest (the bound) first.
    pub load: Vec<StageLoad>,
}

impl RunSummary {
    /// Process exit code: 0 all labelled, 1 some rows carry errors, 3 interrupted
    /// (progress committed; rerun the same command to continue).
    pub fn exit_code(&self) -> u8 {
        match self.status {
            RunStatus::Interrupted | RunStatus::Running => EXIT_INTERRUPTED,
            RunStatus::Failed => 2,
            RunStatus::Finished => u8::from(self.failed > 0),
        }
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One object after fetch + decode + preprocess.
enum Prepared {
    /// A manifest's object whose fetched version an earlier run of the same labels
    /// already labelled: no row.
    Unchanged,
    Ready {
        object: ObjectRef,
        width: u32,
        height: u32,
        tensor: Vec<f32>,
        /// When its fetch was sent.
        fetched_from: Instant,
    },
    Failed {
        object: ObjectRef,
        error: String,
        /// Set when the fetch failed for a reason that is the store's, not the
        /// object's (see [`crate::store::is_object_error`]).
        store_fault: Option<object_store::Error>,
        /// When its fetch was sent; `None` when it was never fetched (too large by
        /// its listed size, or a manifest row that names nothing fetchable).
        fetched_from: Option<Instant>,
    },
}

impl Prepared {
    /// A failure that is the object's own, not the store's: it becomes an error row.
    fn object_error(object: ObjectRef, error: String, fetched_from: Option<Instant>) -> Self {
        Prepared::Failed {
            object,
            error,
            store_fault: None,
            fetched_from,
        }
    }
}

/// What the producer hands the consumer.
enum Work {
    /// Images with their object and decoded size.
    Batch(Batch<(ObjectRef, u32, u32)>),
    Failed(Box<Row>),
}

/// Label everything `plan` selects. Fatal problems are `Err`; per-image problems are
/// rows with an `error` and counted in the summary.
pub async fn run(plan: &RunPlan, progress: Arc<dyn Progress>) -> Result<RunSummary> {
    run_until(plan, progress, Stop::new()).await
}

/// Like [`run`], stopping early (status `interrupted`) when `stop` is requested.
pub async fn run_until(
    plan: &RunPlan,
    progress: Arc<dyn Progress>,
    stop: Stop,
) -> Result<RunSummary> {
    let input = Location::parse(&plan.input, Access::Read, plan.retry)?;
    let model = load_model(plan)?;
    let output = Location::parse(&plan.output, Access::Write, plan.retry)?;
    sink::probe_writable(&output).await?;
    run_with_stop(plan, &input, &output, model, progress, stop).await
}

/// Like [`run`], over locations and a model the caller already opened.
pub async fn run_with(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    model: LoadedModel,
    progress: Arc<dyn Progress>,
) -> Result<RunSummary> {
    run_with_stop(plan, input, output, model, progress, Stop::new()).await
}

/// Digest of everything that decides a run's rows; runs with the same fingerprint
/// (and shard) are the same job, and an unfinished one is continued. `--limit` is not
/// part of it: it decides how many rows, not what they hold.
fn job_fingerprint(plan: &RunPlan, input: &Location, model: &LoadedModel) -> String {
    let job = serde_json::json!({
        "input": input.to_string(),
        "extensions": plan.selection.extensions,
        "include": plan.selection.include,
        "exclude": plan.selection.exclude,
        "max_pixels": plan.max_pixels,
        "max_bytes": plan.max_bytes,
        "model_sha256": model.info.sha256,
        "preprocess": model.spec,
        "tta": plan.tta,
        "top_k": plan.top_k,
    });
    // Only when asked for, so the fingerprints of runs without embeddings stay as
    // they were (an unfinished run from before still resumes).
    let mut job = job;
    if let (Some(e), Some(map)) = (&plan.embeddings, job.as_object_mut()) {
        map.insert("embeddings".into(), serde_json::json!(e));
    }
    let digest = crate::stable::uri_digest(&job.to_string());
    format!("{digest:032x}")
}

/// Digest of what decides one object's row: two runs with the same one write the same
/// row for the same bytes, so a rerun may skip objects whose row is already there (see
/// [`crate::rerun`]).
fn labels_fingerprint(plan: &RunPlan, model: &LoadedModel) -> String {
    let labels = serde_json::json!({
        "model_sha256": model.info.sha256,
        "preprocess": model.spec,
        "tta": plan.tta,
        "top_k": plan.top_k,
        "embeddings": plan.embeddings,
    });
    format!("{:032x}", crate::stable::uri_digest(&labels.to_string()))
}

/// Which run this invocation writes to, and whether it continues an earlier one.
async fn resolve_run(
    plan: &RunPlan,
    output: &Location,
    fingerprint: &str,
    progress: &dyn Progress,
) -> Result<(String, bool)> {
    let shard = plan.selection.shard;
    if let Some(id) = &plan.run_id {
        return match runs::read_record(output, id, shard).await? {
            Some(r) if r.status == RunStatus::Finished => Err(Error::Config(format!(
                "run {id} already finished (shard {shard}); a finished run is never appended to: pass another --run-id, or --new-run"
            ))),
            Some(r) if r.fingerprint.as_deref().is_some_and(|f| f != fingerprint) => {
                Err(Error::Config(format!(
                    "run {id} was started with a different input, filters, model or preprocessing; continuing it would mix two jobs in one run: pass another --run-id, or --new-run"
                )))
            }
            Some(_) => Ok((id.clone(), true)),
            None => Ok((id.clone(), false)),
        };
    }
    if !plan.new_run {
        if let Some(r) = runs::find_unfinished(output, fingerprint, shard).await? {
            progress.note(&format!(
                "continuing unfinished run {} (status {}; started {}); pass --new-run to start over",
                r.run_id,
                r.status,
                r.started_at.as_deref().unwrap_or("at an unknown time")
            ));
            return Ok((r.run_id, true));
        }
    }
    Ok((sink::new_run_id(), false))
}

/// Like [`run_with`], stopping early when `stop` is requested.
pub async fn run_with_stop(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    model: LoadedModel,
    progress: Arc<dyn Progress>,
    stop: Stop,
) -> Result<RunSummary> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let shard = plan.selection.shard;
    let fingerprint = job_fingerprint(plan, input, &model);
    let labels = labels_fingerprint(plan, &model);
    // One writer per shard of a job: the lease is taken before the run is chosen, so
    // two workers started at the same moment cannot both start (or continue) a run.
    let note = |m: &str| progress.note(m);
    let lease = match Lease::acquire(output, &fingerprint, shard, plan.lease, &note).await {
        Ok(l) => l,
        Err(e) => {
            model.pool.shutdown();
            return Err(e);
        }
    };
    let (run_id, resumed) = match resolve_run(plan, output, &fingerprint, progress.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            model.pool.shutdown();
            lease.release().await;
            return Err(e);
        }
    };
    let stale = sink::remove_stale_staging(output, &run_id);
    if stale > 0 {
        tracing::info!(run_id = %run_id, files = stale, "removed unfinished part files of an earlier attempt");
    }
    let done = if resumed {
        match CommittedKeys::load(output, &run_id, shard).await {
            Ok(d) => d,
            Err(e) => {
                model.pool.shutdown();
                lease.release().await;
                return Err(e);
            }
        }
    } else {
        CommittedKeys::default()
    };
    if !done.is_empty() {
        progress.note(&format!(
            "run {run_id}: {} objects already written are skipped",
            done.len()
        ));
    }
    let unchanged = if plan.relabel_all {
        Unchanged::default()
    } else {
        // A listed object belongs to this shard by its key, a manifest's by its uri.
        let by_uri = manifest::is_manifest(input);
        let owns = move |key: &str, uri: &str| shard.owns(if by_uri { uri } else { key });
        match Unchanged::load(output, &labels, &run_id, &owns).await {
            Ok(u) => u,
            Err(e) => {
                model.pool.shutdown();
                lease.release().await;
                return Err(e);
            }
        }
    };
    if !unchanged.is_empty() {
        tracing::info!(
            objects = unchanged.len(),
            bytes = unchanged.heap_bytes(),
            "objects labelled unchanged by earlier runs of the same labels are skipped"
        );
    }
    let stats = Arc::new(Stats {
        workers: Workers {
            fetches: plan.tuning.fetch_concurrency,
            decode_threads: plan.tuning.decode_threads,
            sessions: plan.tuning.sessions,
        },
        ..Stats::default()
    });
    let summary = RunSummary {
        run_id: run_id.clone(),
        status: RunStatus::Running,
        resumed,
        fingerprint,
        labels_fingerprint: labels,
        shard: shard.to_string(),
        started_at,
        input: input.to_string(),
        output: output.to_string(),
        model: model.info.name.clone(),
        model_sha256: model.info.sha256.clone(),
        device: model.device.to_string(),
        listed: 0,
        selected: 0,
        skipped: 0,
        skipped_unchanged: 0,
        labelled: 0,
        failed: 0,
        rows_written: 0,
        parts: Vec::new(),
        seconds: 0.0,
        images_per_second: 0.0,
        preprocess: model.spec.clone(),
        batch_size: model.pool.batch_size(),
        tta: plan.tta,
        relabel_all: plan.relabel_all,
        lease_epoch: lease.epoch(),
        peak_rss_bytes: None,
        stages: StageTimes::default(),
        load: Vec::new(),
    };
    if let Err(e) = write_record(output, &summary).await {
        model.pool.shutdown();
        lease.release().await;
        return Err(e);
    }
    progress.started(&run_id, stats.clone());
    let watch = lease.watch();
    let outcome = drive(Drive {
        plan,
        input,
        output,
        model: &model,
        run_id: &run_id,
        done,
        unchanged: Arc::new(unchanged),
        lease: watch.clone(),
        stats: stats.clone(),
        stop: stop.clone(),
    })
    .await;
    progress.finished();
    model.pool.shutdown();
    if watch.is_lost() {
        // The run and its record are the new holder's now: write nothing more.
        drop(lease);
        return Err(watch.lost_error());
    }
    let ended = Ended {
        summary,
        outcome,
        resumed,
        started,
    };
    let summary = finish_run(plan, input, output, ended, &stats, stop).await;
    lease.release().await;
    summary
}

/// How a run's stages ended, for [`finish_run`].
struct Ended {
    summary: RunSummary,
    outcome: Outcome,
    resumed: bool,
    started: Instant,
}

/// The run's summary and record once its stages ended (the shard's lease still held).
async fn finish_run(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    ended: Ended,
    stats: &Stats,
    stop: Stop,
) -> Result<RunSummary> {
    let Ended {
        mut summary,
        outcome,
        resumed,
        started,
    } = ended;
    let (run_id, shard) = (summary.run_id.clone(), plan.selection.shard);

    let listing = &stats.listing;
    summary.listed = listing.listed.load(Relaxed);
    summary.selected = listing.selected.load(Relaxed);
    summary.skipped = stats.skipped.load(Relaxed);
    summary.skipped_unchanged = stats.unchanged.load(Relaxed);
    summary.labelled = stats.labelled.load(Relaxed);
    summary.failed = stats.failed.load(Relaxed);
    summary.rows_written = outcome.rows_written;
    summary.parts = outcome.parts;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.images_per_second =
        (summary.labelled + summary.failed) as f64 / summary.seconds.max(1e-9);
    summary.peak_rss_bytes = peak_rss_bytes();
    summary.stages = stats.stages.snapshot();
    summary.load = summary.stages.load(summary.seconds, &stats.workers);

    if let Some(error) = outcome.error {
        if summary.rows_written == 0 && !resumed {
            // Nothing to continue: leave no run behind.
            runs::remove_record(output, &run_id, shard).await;
        } else {
            summary.status = RunStatus::Failed;
            if let Err(e) = write_record(output, &summary).await {
                tracing::warn!(error = %e, "could not record the failed run");
            }
        }
        return Err(error);
    }
    if stop.is_requested() {
        summary.status = RunStatus::Interrupted;
        write_record(output, &summary).await?;
        return Ok(summary);
    }
    let complete = listing.complete.load(Relaxed);
    if complete && summary.selected == 0 && !plan.allow_empty {
        if !resumed {
            runs::remove_record(output, &run_id, shard).await;
        }
        let filter = Filter::new(&plan.selection)?;
        return Err(Error::Input(
            if summary.listed == 0 && manifest::is_manifest(input) {
                format!(
                "nothing to label: the manifest {input} has no rows; pass --allow-empty to accept an empty list"
            )
            } else if summary.listed == 0 {
                format!(
                "nothing to label: no objects under {input}; check the path or prefix (and the credentials for a bucket), or pass --allow-empty"
            )
            } else {
                format!(
                "nothing to label: {} objects listed under {input}, all removed by the filters: {}; pass --allow-empty to accept an empty selection",
                summary.listed,
                listing.removed_description(&filter)
            )
            },
        ));
    }
    summary.status = RunStatus::Finished;
    write_record(output, &summary).await?;
    Ok(summary)
}

async fn write_record(output: &Location, summary: &RunSummary) -> Result<String> {
    let value = serde_json::to_value(summary).map_err(|e| Error::Encode(e.to_string()))?;
    let shard: Shard = summary.shard.parse().map_err(Error::Config)?;
    runs::write_record(output, &summary.run_id, shard, &value).await
}

/// Everything one run's stages share.
struct Drive<'a> {
    plan: &'a RunPlan,
    input: &'a Location,
    output: &'a Location,
    model: &'a LoadedModel,
    run_id: &'a str,
    done: CommittedKeys,
    /// Objects earlier runs of the same labels have unchanged.
    unchanged: Arc<Unchanged>,
    /// The shard's lease: checked before each part is published.
    lease: LeaseWatch,
    stats: Arc<Stats>,
    stop: Stop,
}

/// How the stages ended: what was published, and the first fatal error if any.
/// Rows produced before a fatal error in the listing or fetching are still
/// published, so a rerun continues after them.
struct Outcome {
    rows_written: u64,
    parts: Vec<String>,
    error: Option<Error>,
}

/// Failed fetches held back while the store may be down: written as error rows
/// once a fetch sent after the latest failure gets an answer (the failures were the
/// objects'), dropped when the store is declared unavailable (a rerun retries them).
/// Fetches run concurrently and finish out of order: an answer to a request sent
/// before the failure proves nothing about the store now.
struct StoreHealth {
    held: Vec<Row>,
    /// When the latest held failure was seen.
    last_fault: Option<Instant>,
    max_failures: u32,
}

impl StoreHealth {
    /// Note a fetch failure that was the store's; `Err` once there are too many in a
    /// row, or at once for refused credentials.
    fn failed(&mut self, input: &Location, row: Row, fault: object_store::Error) -> Result<()> {
        // A manifest's object names its own store.
        let origin = row.object.origin.clone();
        let input = match &origin {
            source::Origin::Store(host) => host.location().unwrap_or(input),
            _ => input,
        };
        if crate::store::is_credentials_error(&fault) {
            return Err(crate::store::store_error(input, fault));
        }
        self.held.push(row);
        self.last_fault = Some(Instant::now());
        let failures = self.held.len() as u32;
        if failures >= self.max_failures {
            return Err(match crate::store::store_error(input, fault) {
                e @ Error::Credentials { .. } => e,
                Error::Store { location, source } => Error::StoreUnavailable {
                    location,
                    failures,
                    source,
                },
                other => other,
            });
        }
        Ok(())
    }

    /// The store answered a fetch sent at `sent`: if that was after the latest held
    /// failure, the held failures were the objects' own.
    fn answered(&mut self, sent: Instant) -> Vec<Row> {
        if self.last_fault.is_some_and(|fault| sent < fault) {
            return Vec::new();
        }
        self.release()
    }

    /// The held failures, as error rows.
    fn release(&mut self) -> Vec<Row> {
        self.last_fault = None;
        std::mem::take(&mut self.held)
    }
}

async fn drive(d: Drive<'_>) -> Outcome {
    let Drive {
        plan,
        input,
        output,
        model,
        run_id,
        done,
        unchanged,
        lease,
        stats,
        stop,
    } = d;
    let filter = match Filter::new(&plan.selection) {
        Ok(f) => f,
        Err(e) => {
            return Outcome {
                rows_written: 0,
                parts: Vec::new(),
                error: Some(e),
            }
        }
    };
    // The session batch counts inputs; an image is `views` of them.
    let shape = BatchShape {
        batch_size: model.pool.batch_size(),
        views: plan.tta.views(),
        input_len: model.spec.tensor_len(),
    };
    let (tx, rx) = mpsc::channel::<Work>(plan.tuning.batch_queue.max(1));

    // Producer: list, fetch, decode, batch. Its error (listing failed, store down)
    // ends the run, but only after the consumer has published what it was given.
    let producer = {
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
        let per_host = plan.tuning.per_host_concurrency;
        let retry = plan.retry;
        let decode_pool = match CpuPool::new("labelflow-decode", plan.tuning.decode_threads) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                return Outcome {
                    rows_written: 0,
                    parts: Vec::new(),
                    error: Some(e),
                }
            }
        };
        let stop = stop.clone();
        let mut health = StoreHealth {
            held: Vec::new(),
            last_fault: None,
            max_failures: plan.max_store_failures.max(1),
        };
        async move {
            let objects = if manifest::is_manifest(&input) {
                let hosts = Arc::new(manifest::Hosts::new(input.clone(), retry, per_host));
                manifest::list(&input, hosts, filter, limit, stats.listing.clone())
            } else {
                source::list(&input, filter, limit, stats.listing.clone())
            };
            let listing = Timed::new(objects, stats.stages.counter(Stage::Listing));
            let skipped = stats.clone();
            let listed_unchanged = unchanged.clone();
            let prepared = listing
                .try_filter(move |o| {
                    let keep = if done.contains(&o.uri) {
                        skipped.skipped.fetch_add(1, Relaxed);
                        false
                    } else if matches!(o.origin, source::Origin::Input)
                        && listed_unchanged.contains(o)
                    {
                        // A listed object's version is known from the listing; a
                        // manifest's only once fetched (see PrepareJob).
                        skipped.unchanged.fetch_add(1, Relaxed);
                        false
                    } else {
                        true
                    };
                    futures::future::ready(keep)
                })
                .map_ok(|object| {
                    let input = input.clone();
                    let job = PrepareJob {
                        stats: stats.clone(),
                        unchanged: unchanged.clone(),
                        spec: spec.clone(),
                        tta,
                        limits,
                        max_bytes,
                        pool: decode_pool.clone(),
                    };
                    async move { job.run(&input, object).await }
                })
                .try_buffer_unordered(concurrency);
            futures::pin_mut!(prepared);
            let mut batcher = Batcher::new(shape);
            loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.requested() => break,
                    next = prepared.try_next() => next?,
                };
                let Some(p) = next else { break };
                let mut full = None;
                let ready = match p {
                    Prepared::Unchanged => None,
                    Prepared::Failed {
                        object,
                        error,
                        store_fault,
                        fetched_from,
                    } => {
                        let row = Row {
                            object,
                            width: None,
                            height: None,
                            top: Vec::new(),
                            error: Some(error),
                            labelled_at: chrono::Utc::now(),
                            embedding: None,
                        };
                        match store_fault {
                            Some(fault) => {
                                health.failed(&input, row, fault)?;
                                None
                            }
                            None => Some((vec![row], fetched_from)),
                        }
                    }
                    Prepared::Ready {
                        object,
                        width,
                        height,
                        tensor,
                        fetched_from,
                    } => {
                        full = batcher
                            .push(&tensor, (object, width, height))
                            .map_err(|e| Error::Task(e.to_string()))?;
                        Some((Vec::new(), Some(fetched_from)))
                    }
                };
                // Anything but a store fault shows the store answered that request.
                if let Some((mut rows, fetched_from)) = ready {
                    if let Some(sent) = fetched_from {
                        rows.extend(health.answered(sent));
                    }
                    for row in rows {
                        if tx.send(Work::Failed(Box::new(row))).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                if let Some(batch) = full {
                    let waiting = Instant::now();
                    let sent = tx.send(Work::Batch(batch)).await;
                    stats.stages.add(Stage::WaitingForModel, waiting.elapsed());
                    if sent.is_err() {
                        return Ok(());
                    }
                }
            }
            // The listing ended or a stop was asked for: label what is decoded, padded
            // so the session always sees one shape.
            if let Some(batch) = batcher.finish() {
                let _ = tx.send(Work::Batch(batch)).await;
            }
            // Failures still held when the listing ends: the store never recovered
            // for them, but they were fewer than the limit; they are the objects'.
            for row in health.release() {
                if tx.send(Work::Failed(Box::new(row))).await.is_err() {
                    break;
                }
            }
            Ok::<(), Error>(())
        }
    };

    // Consumer: infer and write.
    let handle: InferenceHandle = model
        .pool
        .handle()
        .timed(stats.stages.counter(Stage::Inference));
    let classes = Arc::new(model.info.classes.clone());
    let embedder = match (&model.info.embedding, &plan.embeddings) {
        (Some(output), Some(e)) => Some(Arc::new(infer::Embedder::new(output.dim, e.code_bits))),
        _ => None,
    };
    let stamp = ModelStamp {
        name: model.info.name.clone(),
        sha256: model.info.sha256.clone(),
        classes: classes.clone(),
        embedding: embedder.as_ref().map(|e| schema::EmbeddingColumns {
            dim: e.dim(),
            code_bytes: e.code_bytes(),
        }),
    };
    let writer = match PartWriter::new(
        output.clone(),
        run_id,
        plan.selection.shard,
        plan.sink.clone(),
        stamp,
    ) {
        Ok(w) => w.with_lease(Some(lease.clone())),
        Err(e) => {
            return Outcome {
                rows_written: 0,
                parts: Vec::new(),
                error: Some(e),
            }
        }
    };
    let scoring = Scoring {
        output_kind: model.info.output_kind,
        n_classes: model.info.num_classes(),
        views: shape.views,
        top_k: plan.top_k,
        embedder,
    };
    let consumer = consume(Consumer {
        rx,
        handle,
        writer,
        scoring,
        sessions: plan.tuning.sessions,
        stats: stats.clone(),
        stop,
        grace: plan.stop_grace,
        lease,
    });

    // Both halves run on this task: the producer's error does not cancel the
    // consumer, which publishes what it was given before the run reports the error.
    let (produced, consumed) = tokio::join!(
        async {
            let r = producer.await;
            // Dropping the sender (inside the producer) ends the consumer's input.
            r
        },
        consumer
    );
    match consumed {
        Ok((rows_written, parts)) => Outcome {
            rows_written,
            parts,
            error: produced.err(),
        },
        Err((e, rows_written, parts)) => Outcome {
            rows_written,
            parts,
            error: Some(e),
        },
    }
}

/// How raw model outputs become a row's classes (and embedding).
#[derive(Clone)]
struct Scoring {
    output_kind: infer::OutputKind,
    n_classes: usize,
    views: usize,
    top_k: usize,
    embedder: Option<Arc<infer::Embedder>>,
}

struct Consumer {
    rx: mpsc::Receiver<Work>,
    handle: InferenceHandle,
    writer: PartWriter,
    scoring: Scoring,
    sessions: usize,
    stats: Arc<Stats>,
    stop: Stop,
    grace: Duration,
    lease: LeaseWatch,
}

/// Infer, score and write until the producer is done; after a stop request, for at
/// most `grace` more. Publishes the open part either way. On error, returns it with
/// what had been published before.
async fn consume(
    c: Consumer,
) -> std::result::Result<(u64, Vec<String>), (Error, u64, Vec<String>)> {
    let Consumer {
        rx,
        handle,
        mut writer,
        scoring,
        sessions,
        stats,
        stop,
        grace,
        lease,
    } = c;
    let (embedder, views) = (scoring.embedder.clone(), scoring.views);
    let results = tokio_stream_from(rx)
        .map(|work| {
            let handle = handle.clone();
            let embedder = embedder.clone();
            async move {
                match work {
                    Work::Failed(row) => Ok::<_, Error>(Ok(vec![*row])),
                    Work::Batch(Batch { input, items }) => {
                        let mut outputs = handle.run(input).await?;
                        // Normalising and coding the features costs a projection per
                        // image (a million multiply-adds at 4 096-d and 256 bits): on a
                        // blocking thread, so the writer's task keeps pace with a GPU.
                        let embedded = match (embedder, outputs.embedding.take()) {
                            (Some(e), Some(raw)) => {
                                let n = items.len();
                                let rows = tokio::task::spawn_blocking(move || {
                                    embed_rows(&e, &raw, n, views)
                                })
                                .await
                                .map_err(|e| Error::Task(format!("embedding a batch: {e}")))??;
                                Some(rows)
                            }
                            _ => None,
                        };
                        Ok(Err((items, outputs, embedded)))
                    }
                }
            }
        })
        .buffered(sessions.max(1));
    futures::pin_mut!(results);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let result: Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = async { if let Some(d) = deadline.as_mut() { d.await } }, if deadline.is_some() => {
                    tracing::warn!(grace_seconds = grace.as_secs_f64(), "stop grace period over; batches still in flight are dropped and will be redone by the next run");
                    break;
                }
                _ = stop.requested(), if deadline.is_none() => {
                    deadline = Some(Box::pin(tokio::time::sleep(grace)));
                }
                // Another worker took the shard over: stop at once, publishing nothing.
                _ = lease.lost() => return Err(lease.lost_error()),
                _ = tick.tick() => {
                    let t = Instant::now();
                    writer.tick().await?;
                    stats.stages.add(Stage::Writing, t.elapsed());
                }
                next = results.next() => {
                    let Some(done) = next else { break };
                    let done = done?;
                    let t = Instant::now();
                    match done {
                        Ok(rows) => {
                            for row in rows {
                                stats.failed.fetch_add(1, Relaxed);
                                writer.push(&row).await?;
                            }
                        }
                        Err((items, outputs, embedded)) => {
                            write_scored(&mut writer, &stats, &scoring, items, outputs, embedded)
                                .await?;
                        }
                    }
                    stats.stages.add(Stage::Writing, t.elapsed());
                }
            }
        }
        Ok(())
    }
    .await;
    let published = (writer.rows_written, writer.parts.clone());
    if lease.is_lost() {
        return Err((lease.lost_error(), published.0, published.1));
    }
    match result {
        Ok(()) => {
            let t = Instant::now();
            let finished = writer.finish().await;
            stats.stages.add(Stage::Writing, t.elapsed());
            finished.map_err(|e| (e, published.0, published.1))
        }
        Err(e) => Err((e, published.0, published.1)),
    }
}

async fn write_scored(
    writer: &mut PartWriter,
    stats: &Stats,
    scoring: &Scoring,
    items: Vec<(ObjectRef, u32, u32)>,
    outputs: infer::Outputs,
    embedded: Option<Vec<infer::Embedded>>,
) -> Result<()> {
    let now = chrono::Utc::now();
    let mut scores = outputs.scores;
    let per_image = scoring.n_classes * scoring.views;
    let mut embedded = embedded.map(Vec::into_iter);
    if scores.len() < items.len() * per_image {
        return Err(Error::Inference(format!(
            "the model returned {} values for {} images of {} classes",
            scores.len(),
            items.len(),
            scoring.n_classes
        )));
    }
    for (i, (object, width, height)) in items.into_iter().enumerate() {
        let row_scores = &mut scores[i * per_image..(i + 1) * per_image];
        let top = if scoring.views == 1 {
            infer::top_k(row_scores, scoring.output_kind, scoring.top_k)
        } else {
            let mut mean = infer::average_views(row_scores, scoring.n_classes, scoring.output_kind);
            infer::top_k(&mut mean, infer::OutputKind::Probabilities, scoring.top_k)
        };
        let row = Row {
            object,
            width: Some(width),
            height: Some(height),
            top,
            error: None,
            labelled_at: now,
            embedding: embedded.as_mut().and_then(Iterator::next),
        };
        writer.push(&row).await?;
        stats.labelled.fetch_add(1, Relaxed);
    }
    tracing::debug!(
        labelled = stats.labelled.load(Relaxed),
        failed = stats.failed.load(Relaxed),
        published = writer.rows_written,
        pending = writer.pending_rows(),
        "batch written"
    );
    Ok(())
}

/// The stored embeddings of `images` images from their raw `views × dim` features each.
fn embed_rows(
    embedder: &infer::Embedder,
    raw: &[f32],
    images: usize,
    views: usize,
) -> Result<Vec<infer::Embedded>> {
    let per = embedder.dim() * views;
    if raw.len() < images * per {
        return Err(Error::Inference(format!(
            "the embedding output returned {} values for {images} images of {} features",
            raw.len(),
            embedder.dim()
        )));
    }
    Ok(raw
        .chunks(per.max(1))
        .take(images)
        .map(|one| embedder.embed(one))
        .collect())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

thread_local! {
    /// Each decode thread keeps one preprocessor (its resize buffers and lookup
    /// tables) from image to image.
    static PREPROCESSOR: std::cell::RefCell<Option<Preprocessor>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's preprocessor for `spec`, made on first use.
fn with_preprocessor<R>(
    spec: &PreprocessSpec,
    f: impl FnOnce(&mut Preprocessor) -> R,
) -> std::result::Result<R, String> {
    PREPROCESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|p| p.spec() != spec) {
            *slot = Some(Preprocessor::new(spec.clone()).map_err(|e| e.to_string())?);
        }
        match slot.as_mut() {
            Some(pre) => Ok(f(pre)),
            None => Err("no preprocessor".to_string()),
        }
    })
}

/// Fetch, decode and preprocess one object (the CPU part on the decode pool).
struct PrepareJob {
    stats: Arc<Stats>,
    unchanged: Arc<Unchanged>,
    spec: PreprocessSpec,
    tta: Tta,
    limits: DecodeLimits,
    max_bytes: u64,
    pool: Arc<CpuPool>,
}

impl PrepareJob {
    /// The error row of an object over `--max-bytes` (its size from the listing, or
    /// from the response when a manifest's object was fetched).
    fn too_large(&self, object: ObjectRef, fetched_from: Option<Instant>) -> Prepared {
        let error = DecodeError::TooLarge {
            size: object.size,
            limit: self.max_bytes,
        }
        .to_string();
        Prepared::object_error(object, error, fetched_from)
    }

    async fn run(self, input: &Location, mut object: ObjectRef) -> Result<Prepared> {
        if let source::Origin::Invalid(why) = &object.origin {
            let error = format!("cannot fetch this manifest row: {why}");
            return Ok(Prepared::object_error(object, error, None));
        }
        if object.size > self.max_bytes {
            return Ok(self.too_large(object, None));
        }
        let fetched_from = Instant::now();
        let fetched = source::fetch(input, &object, self.max_bytes).await;
        self.stats.stages.add(Stage::Fetch, fetched_from.elapsed());
        let bytes = match fetched {
            Ok((bytes, meta)) => {
                object.update_from(&meta);
                if !matches!(object.origin, source::Origin::Input)
                    && self.unchanged.contains(&object)
                {
                    self.stats.unchanged.fetch_add(1, Relaxed);
                    return Ok(Prepared::Unchanged);
                }
                bytes
            }
            Err(source::FetchError::TooLarge { size }) => {
                object.size = size;
                return Ok(self.too_large(object, Some(fetched_from)));
            }
            Err(source::FetchError::Store(e)) => {
                let error = redact(&DecodeError::Fetch(e.to_string()).to_string()).into_owned();
                // A web host's failure is that URL's; a bucket's may be the store's.
                let web = matches!(&object.origin, source::Origin::Store(h) if h.web);
                let store_fault = (!web && !crate::store::is_object_error(&e)).then_some(e);
                return Ok(Prepared::Failed {
                    object,
                    error,
                    store_fault,
                    fetched_from: Some(fetched_from),
                });
            }
        };
        let PrepareJob {
            stats,
            spec,
            tta,
            limits,
            pool,
            ..
        } = self;
        let decoded = pool
            .run(
                move || -> std::result::Result<(u32, u32, Vec<f32>), String> {
                    let mut tensor = vec![0f32; spec.tensor_len() * tta.views()];
                    let mut times = decode::PrepareTimes::default();
                    let prepared = with_preprocessor(&spec, |pre| {
                        decode::decode_and_prepare_timed(
                            &bytes,
                            limits,
                            pre,
                            tta,
                            &mut tensor,
                            &mut times,
                        )
                        .map_err(|e| e.to_string())
                    });
                    stats.stages.add(Stage::Decode, times.decode);
                    stats.stages.add(Stage::Preprocess, times.preprocess);
                    let (w, h) = prepared??;
                    Ok((w, h, tensor))
                },
            )
            .await?;
        Ok(match decoded {
            Ok((width, height, tensor)) => Prepared::Ready {
                object,
                width,
                height,
                tensor,
                fetched_from,
            },
            Err(error) => Prepared::object_error(object, error, Some(fetched_from)),
        })
    }
}
