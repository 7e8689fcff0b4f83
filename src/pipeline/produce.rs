//! The producer: list → fetch → prepare → batch. At most `fetch_concurrency` objects
//! are in flight; failures become error rows, unless they are the store's (see
//! [`StoreHealth`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use tokio::sync::mpsc;

use crate::batch::{Batch, BatchShape, Batcher};
use crate::decode::DecodeError;
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::manifest;
use crate::redact::redact;
use crate::rerun::Unchanged;
use crate::sink::{CommittedKeys, Row};
use crate::source::{self, Filter, ObjectRef, Origin, Selection};
use crate::stages::{Stage, Timed};
use crate::store::{Location, RetryPolicy};

use super::health::StoreHealth;
use super::prepare::{Input, Prepare};
use super::progress::{Stats, Stop};

/// What the producer hands the consumer.
pub(super) enum Work {
    /// Images with their object and decoded size.
    Batch(Batch<(ObjectRef, u32, u32)>),
    Failed(Box<Row>),
}

/// What the producer needs.
pub(super) struct ProduceOptions<'a> {
    pub input: Location,
    pub selection: &'a Selection,
    /// Larger objects become error rows without being fetched.
    pub max_bytes: u64,
    pub fetch_concurrency: usize,
    /// With a manifest: requests in flight to one host.
    pub per_host_concurrency: usize,
    pub retry: RetryPolicy,
    pub max_store_failures: u32,
    pub shape: BatchShape,
    pub prepare: Arc<dyn Prepare>,
    /// Objects this run already wrote.
    pub done: CommittedKeys,
    /// Objects an earlier run of the same labels has unchanged.
    pub unchanged: Arc<Unchanged>,
    pub stats: Arc<Stats>,
    pub stop: Stop,
    pub tx: mpsc::Sender<Work>,
}

/// One object after fetch and prepare.
enum Prepared {
    /// A manifest's object whose fetched version an earlier run of the same labels
    /// already labelled: no row.
    Unchanged,
    Ready {
        object: ObjectRef,
        input: Input,
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

/// List, fetch, prepare and batch until the listing ends or a stop is requested;
/// the last batch is padded so the session always sees one shape. Returns when the
/// consumer has everything (or has gone); `Err` ends the run (listing failed, store
/// down), after the consumer has published what it was given.
pub(super) async fn produce(o: ProduceOptions<'_>) -> Result<()> {
    let filter = Filter::new(o.selection)?;
    let ProduceOptions {
        input,
        selection,
        max_bytes,
        fetch_concurrency,
        per_host_concurrency,
        retry,
        max_store_failures,
        shape,
        prepare,
        done,
        unchanged,
        stats,
        stop,
        tx,
    } = o;
    let objects = if manifest::is_manifest(&input) {
        let hosts = Arc::new(Hosts::new(input.clone(), retry, per_host_concurrency));
        manifest::list(
            &input,
            hosts,
            filter,
            selection.limit,
            stats.listing.clone(),
        )
    } else {
        source::list(&input, filter, selection.limit, stats.listing.clone())
    };
    let listing = Timed::new(objects, stats.stages.counter(Stage::Listing));
    let skipped = stats.clone();
    let listed_unchanged = unchanged.clone();
    let prepared = listing
        .try_filter(move |o| {
            let keep = if done.contains(&o.uri) {
                skipped.skipped.fetch_add(1, Relaxed);
                false
            } else if matches!(o.origin, Origin::Input) && listed_unchanged.contains(o) {
                // A listed object's version is known from the listing; a manifest's
                // only once fetched (see Fetch::run).
                skipped.unchanged.fetch_add(1, Relaxed);
                false
            } else {
                true
            };
            futures::future::ready(keep)
        })
        .map_ok(|object| {
            let fetch = Fetch {
                stats: stats.clone(),
                unchanged: unchanged.clone(),
                max_bytes,
                prepare: prepare.clone(),
            };
            let input = input.clone();
            async move { fetch.run(&input, object).await }
        })
        .try_buffer_unordered(fetch_concurrency);
    futures::pin_mut!(prepared);
    let mut health = StoreHealth::new(max_store_failures);
    let mut batcher = Batcher::new(shape, prepare.element());
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.requested() => break,
            next = prepared.try_next() => next?,
        };
        let Some(p) = next else { break };
        let mut full = None;
        let answered = match p {
            Prepared::Unchanged => None,
            Prepared::Failed {
                object,
                error,
                store_fault: Some(fault),
                ..
            } => {
                health.failed(&input, Row::failed(object, error), fault)?;
                None
            }
            Prepared::Failed {
                object,
                error,
                store_fault: None,
                fetched_from,
            } => Some((vec![Row::failed(object, error)], fetched_from)),
            Prepared::Ready {
                object,
                input,
                fetched_from,
            } => {
                full = batcher
                    .push(&input.tensor, (object, input.width, input.height))
                    .map_err(|e| Error::Task(e.to_string()))?;
                Some((Vec::new(), Some(fetched_from)))
            }
        };
        // Anything but a store fault shows the store answered that request.
        if let Some((mut rows, fetched_from)) = answered {
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
    // The listing ended or a stop was asked for: label what is prepared, padded so
    // the session always sees one shape.
    if let Some(batch) = batcher.finish() {
        let _ = tx.send(Work::Batch(batch)).await;
    }
    // Failures still held when the listing ends: the store never recovered for them,
    // but they were fewer than the limit; they are the objects'.
    for row in health.release() {
        if tx.send(Work::Failed(Box::new(row))).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Fetch one object and prepare it.
struct Fetch {
    stats: Arc<Stats>,
    unchanged: Arc<Unchanged>,
    max_bytes: u64,
    prepare: Arc<dyn Prepare>,
}

impl Fetch {
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
        if let Origin::Invalid(why) = &object.origin {
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
                if !matches!(object.origin, Origin::Input) && self.unchanged.contains(&object) {
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
                let web = matches!(&object.origin, Origin::Store(h) if h.web);
                let store_fault = (!web && !crate::store::is_object_error(&e)).then_some(e);
                return Ok(Prepared::Failed {
                    object,
                    error,
                    store_fault,
                    fetched_from: Some(fetched_from),
                });
            }
        };
        Ok(match self.prepare.prepare(bytes).await? {
            Ok(input) => Prepared::Ready {
                object,
                input,
                fetched_from,
            },
            Err(error) => Prepared::object_error(object, error, Some(fetched_from)),
        })
    }
}
