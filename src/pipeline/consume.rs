//! The consumer: infer → score → write, on its own task. Runs until the producer is
//! done (after a stop request, for at most the stop grace), then publishes the open
//! part.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::infer::{self, Embedded, Embedder, InferenceHandle, LoadedModel, Outputs};
use crate::lease::LeaseWatch;
use crate::schema;
use crate::sink::{ModelStamp, PartWriter, Row, SinkOptions};
use crate::source::{ObjectRef, Shard};
use crate::stages::Stage;
use crate::store::Location;

use super::produce::Work;
use super::progress::{Stats, Stop};

/// What the stages published, and the first fatal error if any. Rows produced before
/// a fatal error in the listing or fetching are still published, so a rerun continues
/// after them.
pub(super) struct Published {
    pub rows_written: u64,
    pub parts: Vec<String>,
    pub error: Option<Error>,
}

impl Published {
    /// Nothing published, because of `error`.
    pub fn failed(error: Error) -> Self {
        Self {
            rows_written: 0,
            parts: Vec::new(),
            error: Some(error),
        }
    }
}

/// What the consumer needs.
pub(super) struct ConsumeOptions<'a> {
    pub rx: mpsc::Receiver<Work>,
    pub model: &'a LoadedModel,
    pub output: Location,
    pub run_id: &'a str,
    pub shard: Shard,
    pub sink: SinkOptions,
    /// With embeddings: the code's bits.
    pub embeddings: Option<usize>,
    pub top_k: usize,
    /// Inputs per image (test-time augmentation).
    pub views: usize,
    /// Batches in inference at once.
    pub sessions: usize,
    pub grace: Duration,
    pub lease: LeaseWatch,
    pub stats: Arc<Stats>,
    pub stop: Stop,
}

/// How raw model outputs become a row's classes (and embedding).
struct Scoring {
    output_kind: infer::OutputKind,
    n_classes: usize,
    views: usize,
    top_k: usize,
    embedder: Option<Arc<Embedder>>,
}

/// One unit of work done, in the order it was sent.
enum Done {
    /// An object that could not be labelled.
    Failed(Row),
    /// A batch through the model.
    Inferred {
        items: Vec<(ObjectRef, u32, u32)>,
        outputs: Outputs,
        embedded: Option<Vec<Embedded>>,
    },
}

/// The consumer, owning everything it needs, ready for its own task.
pub(super) struct Consumer {
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

impl Consumer {
    pub fn new(o: ConsumeOptions<'_>) -> Result<Self> {
        let model = o.model;
        let handle = model
            .pool
            .handle()
            .timed(o.stats.stages.counter(Stage::Inference));
        let embedder = match (&model.info.embedding, o.embeddings) {
            (Some(output), Some(bits)) => Some(Arc::new(Embedder::new(output.dim, bits))),
            _ => None,
        };
        let stamp = ModelStamp {
            name: model.info.name.clone(),
            sha256: model.info.sha256.clone(),
            classes: Arc::new(model.info.classes.clone()),
            embedding: embedder.as_ref().map(|e| schema::EmbeddingColumns {
                dim: e.dim(),
                code_bytes: e.code_bytes(),
            }),
        };
        let writer = PartWriter::new(o.output, o.run_id, o.shard, o.sink, stamp)?
            .with_lease(Some(o.lease.clone()));
        Ok(Self {
            rx: o.rx,
            handle,
            writer,
            scoring: Scoring {
                output_kind: model.info.output_kind,
                n_classes: model.info.num_classes(),
                views: o.views,
                top_k: o.top_k,
                embedder,
            },
            sessions: o.sessions,
            stats: o.stats,
            stop: o.stop,
            grace: o.grace,
            lease: o.lease,
        })
    }

    /// Infer, score and write until the producer is done; after a stop request, for
    /// at most `grace` more. Publishes the open part either way; on error, returns it
    /// with what had been published before.
    pub async fn run(self) -> Published {
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
        } = self;
        let (embedder, views) = (scoring.embedder.clone(), scoring.views);
        let results = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|work| (work, rx))
        })
        .map(|work| infer_one(work, handle.clone(), embedder.clone(), views))
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
                        let t = Instant::now();
                        write(&mut writer, &stats, &scoring, done?).await?;
                        stats.stages.add(Stage::Writing, t.elapsed());
                    }
                }
            }
            Ok(())
        }
        .await;
        let mut published = Published {
            rows_written: writer.rows_written,
            parts: writer.parts.clone(),
            error: None,
        };
        if lease.is_lost() {
            published.error = Some(lease.lost_error());
            return published;
        }
        match result {
            Ok(()) => {
                let t = Instant::now();
                let finished = writer.finish().await;
                stats.stages.add(Stage::Writing, t.elapsed());
                match finished {
                    Ok((rows_written, parts)) => {
                        published.rows_written = rows_written;
                        published.parts = parts;
                    }
                    Err(e) => published.error = Some(e),
                }
            }
            Err(e) => published.error = Some(e),
        }
        published
    }
}

/// Run one unit of work through the model (a failed object passes through).
async fn infer_one(
    work: Work,
    handle: InferenceHandle,
    embedder: Option<Arc<Embedder>>,
    views: usize,
) -> Result<Done> {
    let Batch { input, items } = match work {
        Work::Failed(row) => return Ok(Done::Failed(*row)),
        Work::Batch(batch) => batch,
    };
    let mut outputs = handle.run(input).await?;
    // Normalising and coding the features costs a projection per image (a million
    // multiply-adds at 4 096-d and 256 bits): on a blocking thread, so the writer's
    // task keeps pace with a GPU.
    let embedded = match (embedder, outputs.embedding.take()) {
        (Some(e), Some(raw)) => {
            let n = items.len();
            let rows = tokio::task::spawn_blocking(move || e.embed_images(&raw, n, views))
                .await
                .map_err(|e| Error::Task(format!("embedding a batch: {e}")))??;
            Some(rows)
        }
        _ => None,
    };
    Ok(Done::Inferred {
        items,
        outputs,
        embedded,
    })
}

/// Write one unit of work's rows.
async fn write(
    writer: &mut PartWriter,
    stats: &Stats,
    scoring: &Scoring,
    done: Done,
) -> Result<()> {
    let (items, outputs, embedded) = match done {
        Done::Failed(row) => {
            stats.failed.fetch_add(1, Relaxed);
            return writer.push(&row).await;
        }
        Done::Inferred {
            items,
            outputs,
            embedded,
        } => (items, outputs, embedded),
    };
    let now = chrono::Utc::now();
    let mut scores = outputs.scores;
    let tops = infer::classify(
        &mut scores,
        items.len(),
        scoring.n_classes,
        scoring.views,
        scoring.output_kind,
        scoring.top_k,
    )?;
    let mut embedded = embedded.map(Vec::into_iter);
    for ((object, width, height), top) in items.into_iter().zip(tops) {
        let embedding = embedded.as_mut().and_then(Iterator::next);
        writer
            .push(&Row::labelled(object, (width, height), top, embedding, now))
            .await?;
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
