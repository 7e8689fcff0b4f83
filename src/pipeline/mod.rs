//! A whole run, in the order data flows: list → fetch → prepare (decode and
//! preprocess, on the CPU pool) → batch ([`produce`]), then infer → score → write
//! ([`consume`], its own task), joined by a bounded channel. Every stage is bounded,
//! so memory does not grow with the bucket. Around them: which run this is and what it
//! may skip ([`resume`]), the store's health while fetching ([`health`]), and the run's
//! summary and record ([`summary`]).
//!
//! [`Run`] is the one entry: a plan, with progress, a stop signal and already opened
//! locations and model as options.

mod consume;
mod health;
mod prepare;
mod produce;
mod progress;
mod resume;
mod summary;

use std::sync::Arc;
use std::time::Instant;

use crate::config::RunPlan;
use crate::error::Result;
use crate::infer::{load_model, LoadedModel};
use crate::lease::Lease;
use crate::sink;
use crate::stages::Workers;
use crate::store::{Access, Location};

pub use progress::{NoProgress, Progress, Stats, Stop, EXIT_INTERRUPTED, EXIT_LEASE_HELD};
pub use summary::{peak_rss_bytes, RunSummary};

/// A run of a plan, with its options; [`Run::execute`] labels everything the plan
/// selects. Fatal problems are `Err`; per-image problems are rows with an `error`,
/// counted in the summary.
///
/// ```no_run
/// # async fn f(plan: labelflow::config::RunPlan) -> labelflow::Result<()> {
/// use labelflow::pipeline::{Run, Stop};
/// let stop = Stop::new();
/// let summary = Run::new(&plan).stop(stop.clone()).execute().await?;
/// println!("{} labelled, exit code {}", summary.labelled, summary.exit_code());
/// # Ok(()) }
/// ```
pub struct Run<'a> {
    plan: &'a RunPlan,
    progress: Arc<dyn Progress>,
    stop: Stop,
    opened: Option<Opened>,
}

/// Locations and a model a caller already opened, for [`Run::opened`].
pub struct Opened {
    pub input: Location,
    pub output: Location,
    pub model: LoadedModel,
}

impl<'a> Run<'a> {
    pub fn new(plan: &'a RunPlan) -> Self {
        Self {
            plan,
            progress: Arc::new(NoProgress),
            stop: Stop::new(),
            opened: None,
        }
    }

    /// Report progress to `progress` (default: nothing).
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Stop early (status `interrupted`) when `stop` is requested.
    pub fn stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// Run over locations and a model the caller already opened, instead of opening
    /// the plan's.
    pub fn opened(mut self, input: Location, output: Location, model: LoadedModel) -> Self {
        self.opened = Some(Opened {
            input,
            output,
            model,
        });
        self
    }

    pub async fn execute(self) -> Result<RunSummary> {
        let Run {
            plan,
            progress,
            stop,
            opened,
        } = self;
        let Opened {
            input,
            output,
            model,
        } = match opened {
            Some(o) => o,
            None => {
                let input = Location::parse(&plan.input, Access::Read, plan.retry)?;
                let model = load_model(&plan.model_options())?;
                let output = Location::parse(&plan.output, Access::Write, plan.retry)?;
                sink::probe_writable(&output).await?;
                Opened {
                    input,
                    output,
                    model,
                }
            }
        };
        execute(plan, &input, &output, model, progress, stop).await
    }
}

/// Label everything `plan` selects: [`Run::new`]`(plan).progress(progress).execute()`.
pub async fn run(plan: &RunPlan, progress: Arc<dyn Progress>) -> Result<RunSummary> {
    Run::new(plan).progress(progress).execute().await
}

/// The run, once its locations and model are open: the shard's lease, which run this
/// is, the stages, the summary. The model's sessions stop when `model` drops.
async fn execute(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    model: LoadedModel,
    progress: Arc<dyn Progress>,
    stop: Stop,
) -> Result<RunSummary> {
    let started = Instant::now();
    let job = resume::Job::of(plan, input, &model);
    // One writer per shard of a job: the lease is taken before the run is chosen, so
    // two workers started at the same moment cannot both start (or continue) a run.
    let note = |m: &str| progress.note(m);
    let lease = Lease::acquire(output, &job.fingerprint, job.shard, plan.lease, &note).await?;
    let resumed = match resume::resolve(plan, input, output, &job, progress.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            lease.release().await;
            return Err(e);
        }
    };
    let stats = Arc::new(Stats {
        workers: Workers {
            fetches: plan.tuning.fetch_concurrency,
            decode_threads: plan.tuning.decode_threads,
            sessions: plan.tuning.sessions,
        },
        ..Stats::default()
    });
    let summary = RunSummary::start(plan, input, output, &model, &job, &resumed, lease.epoch());
    if let Err(e) = summary::write_record(output, &summary).await {
        lease.release().await;
        return Err(e);
    }
    progress.started(&summary.run_id, stats.clone());
    let watch = lease.watch();
    let published = drive(Drive {
        plan,
        input,
        output,
        model: &model,
        run_id: &summary.run_id,
        done: resumed.done,
        unchanged: Arc::new(resumed.unchanged),
        lease: watch.clone(),
        stats: stats.clone(),
        stop: stop.clone(),
    })
    .await;
    progress.finished();
    drop(model);
    if watch.is_lost() {
        // The run and its record are the new holder's now: write nothing more.
        drop(lease);
        return Err(watch.lost_error());
    }
    let ended = summary::Ended {
        summary,
        published,
        resumed: resumed.continued,
        started,
    };
    let summary = summary::finish(plan, input, output, ended, &stats, &stop).await;
    lease.release().await;
    summary
}

/// Everything one run's stages share.
struct Drive<'a> {
    plan: &'a RunPlan,
    input: &'a Location,
    output: &'a Location,
    model: &'a LoadedModel,
    run_id: &'a str,
    done: sink::CommittedKeys,
    /// Objects earlier runs of the same labels have unchanged.
    unchanged: Arc<crate::rerun::Unchanged>,
    /// The shard's lease: checked before each part is published.
    lease: crate::lease::LeaseWatch,
    stats: Arc<Stats>,
    stop: Stop,
}

/// Start the stages: the consumer on its own task (so Parquet encoding does not run
/// on the task that polls the fetches), the producer on this one. The producer's
/// error (listing failed, store down) ends the run only after the consumer has
/// published what it was given.
async fn drive(d: Drive<'_>) -> consume::Published {
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
    let shape = crate::batch::BatchShape {
        // The session batch counts inputs; an image is `views` of them.
        batch_size: model.pool.batch_size(),
        views: plan.tta.views(),
        input_len: model.spec.tensor_len(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(plan.tuning.batch_queue.max(1));
    let consumer = match consume::Consumer::new(consume::ConsumeOptions {
        rx,
        model,
        output: output.clone(),
        run_id,
        shard: plan.selection.shard,
        sink: plan.sink.clone(),
        embeddings: plan.embeddings.as_ref().map(|e| e.code_bits),
        top_k: plan.top_k,
        views: shape.views,
        sessions: plan.tuning.sessions,
        grace: plan.stop_grace,
        lease,
        stats: stats.clone(),
        stop: stop.clone(),
    }) {
        Ok(c) => tokio::spawn(c.run()),
        Err(e) => return consume::Published::failed(e),
    };
    let prepare = prepare::for_run(prepare::PrepareOptions {
        spec: model.spec.clone(),
        element: model.info.element,
        tta: plan.tta,
        limits: crate::decode::DecodeLimits {
            max_pixels: plan.max_pixels,
        },
        threads: plan.tuning.decode_threads,
        stats: stats.clone(),
        decode: plan.tuning.decode,
        device: model.device,
    });
    let produced = match prepare {
        Ok(prepare) => {
            produce::produce(produce::ProduceOptions {
                input: input.clone(),
                selection: &plan.selection,
                max_bytes: plan.max_bytes,
                fetch_concurrency: plan.tuning.fetch_concurrency,
                per_host_concurrency: plan.tuning.per_host_concurrency,
                retry: plan.retry,
                max_store_failures: plan.max_store_failures,
                shape,
                prepare,
                done,
                unchanged,
                stats,
                stop,
                tx,
            })
            .await
        }
        Err(e) => {
            drop(tx);
            Err(e)
        }
    };
    // The sender is gone with the producer: the consumer drains and publishes.
    let mut published = match consumer.await {
        Ok(p) => p,
        Err(e) => consume::Published::failed(crate::Error::Task(format!("the writer task: {e}"))),
    };
    if published.error.is_none() {
        published.error = produced.err();
    }
    published
}
