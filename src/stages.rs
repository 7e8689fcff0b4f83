//! Where a run's time goes: the busy time of each stage, summed over the threads or
//! tasks doing it, and which stage bounds the run.
//!
//! Busy time is wall time spent doing the stage's work (or, for the listing and the
//! fetches, waiting for the store to answer). Stages run side by side, so the figures
//! add up to more than the run's wall time; divided by the wall time and the number of
//! workers a stage has, they say how close to its capacity it ran. The stage nearest
//! its capacity is the one that bounds the run.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The stages of a run, in data-flow order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the store's listing pages.
    Listing,
    /// Waiting for object bodies (summed over the concurrent fetches).
    Fetch,
    /// Decoding image bytes to pixels (summed over the decode threads).
    Decode,
    /// Resize, crop, normalise (summed over the decode threads).
    Preprocess,
    /// Decoded batches waiting for room in the model's queue.
    WaitingForModel,
    /// Inside ONNX Runtime (summed over the sessions).
    Inference,
    /// Scoring rows and writing Parquet parts.
    Writing,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Listing,
        Stage::Fetch,
        Stage::Decode,
        Stage::Preprocess,
        Stage::WaitingForModel,
        Stage::Inference,
        Stage::Writing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Listing => "listing",
            Stage::Fetch => "fetch",
            Stage::Decode => "decode",
            Stage::Preprocess => "preprocess",
            Stage::WaitingForModel => "waiting for the model",
            Stage::Inference => "inference",
            Stage::Writing => "writing",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live busy-time counters (nanoseconds), shared by the tasks and threads of a run.
#[derive(Debug, Default)]
pub struct StageClock {
    ns: [Arc<AtomicU64>; 7],
}

impl StageClock {
    pub fn add(&self, stage: Stage, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.ns[stage.index()].fetch_add(ns, Relaxed);
    }

    /// The counter of one stage, for code that only adds to it (the inference
    /// threads).
    pub fn counter(&self, stage: Stage) -> Arc<AtomicU64> {
        Arc::clone(&self.ns[stage.index()])
    }

    pub fn seconds(&self, stage: Stage) -> f64 {
        self.ns[stage.index()].load(Relaxed) as f64 / 1e9
    }

    pub fn snapshot(&self) -> StageTimes {
        StageTimes {
            listing: self.seconds(Stage::Listing),
            fetch: self.seconds(Stage::Fetch),
            decode: self.seconds(Stage::Decode),
            preprocess: self.seconds(Stage::Preprocess),
            waiting_for_model: self.seconds(Stage::WaitingForModel),
            inference: self.seconds(Stage::Inference),
            writing: self.seconds(Stage::Writing),
        }
    }
}

/// Busy seconds per stage, as the run summary records them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageTimes {
    pub listing: f64,
    pub fetch: f64,
    pub decode: f64,
    pub preprocess: f64,
    pub waiting_for_model: f64,
    pub inference: f64,
    pub writing: f64,
}

impl StageTimes {
    pub fn get(&self, stage: Stage) -> f64 {
        match stage {
            Stage::Listing => self.listing,
            Stage::Fetch => self.fetch,
            Stage::Decode => self.decode,
            Stage::Preprocess => self.preprocess,
            Stage::WaitingForModel => self.waiting_for_model,
            Stage::Inference => self.inference,
            Stage::Writing => self.writing,
        }
    }

    /// `listing 0.1 s · fetch 2.3 s · …`, every stage.
    pub fn line(&self) -> String {
        Stage::ALL
            .iter()
            .map(|&s| format!("{} {:.2} s", s.name(), self.get(s)))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// How busy each group of workers was over `wall` seconds, highest first: the
    /// first entry is the stage that bounds the run. Decode and preprocess share the
    /// decode threads, so they count as one.
    pub fn load(&self, wall: f64, workers: &Workers) -> Vec<StageLoad> {
        let wall = wall.max(1e-9);
        let share = |busy: f64, n: usize| busy / (wall * n.max(1) as f64);
        let mut v = vec![
            StageLoad {
                name: "listing",
                workers: 1,
                busy: share(self.listing, 1),
            },
            StageLoad {
                name: "fetch",
                workers: workers.fetches,
                busy: share(self.fetch, workers.fetches),
            },
            StageLoad {
                name: "decode+preprocess",
                workers: workers.decode_threads,
                busy: share(self.decode + self.preprocess, workers.decode_threads),
            },
            StageLoad {
                name: "inference",
                workers: workers.sessions,
                busy: share(self.inference, workers.sessions),
            },
            StageLoad {
                name: "writing",
                workers: 1,
                busy: share(self.writing, 1),
            },
        ];
        v.sort_by(|a, b| b.busy.total_cmp(&a.busy));
        v
    }
}

/// How many workers each stage has (its capacity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Workers {
    pub fetches: usize,
    pub decode_threads: usize,
    pub sessions: usize,
}

/// One stage's share of its capacity over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageLoad {
    pub name: &'static str,
    pub workers: usize,
    /// Busy time ÷ (wall time × workers), 0–1 (a little over 1 from rounding).
    pub busy: f64,
}

impl std::fmt::Display for StageLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:.0}% busy on {} worker{})",
            self.name,
            self.busy * 100.0,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )
    }
}

/// Adds to a [`StageClock`] counter the time from each moment the stream is first
/// asked for an item to the moment it yields one: the time its consumer waited on it.
pub struct Timed<S> {
    inner: S,
    counter: Arc<AtomicU64>,
    waiting_since: Option<Instant>,
}

impl<S> Timed<S> {
    pub fn new(inner: S, counter: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            counter,
            waiting_since: None,
        }
    }
}

impl<S: futures::Stream + Unpin> futures::Stream for Timed<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if polled.is_ready() {
            self.waiting_since = None;
            let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.counter.fetch_add(ns, Relaxed);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn the_stage_nearest_its_capacity_bounds_the_run() {
        let t = StageTimes {
            listing: 0.1,
            fetch: 4.0,
            decode: 15.0,
            preprocess: 3.0,
            waiting_for_model: 0.0,
            inference: 6.0,
            writing: 0.2,
        };
        let w = Workers {
            fetches: 32,
            decode_threads: 2,
            sessions: 1,
        };
        let load = t.load(10.0, &w);
        assert_eq!(load[0].name, "decode+preprocess");
        assert!((load[0].busy - 0.9).abs() < 1e-9);
        assert_eq!(load[1].name, "inference");
        assert!((load[1].busy - 0.6).abs() < 1e-9);
        assert_eq!(
            load[0].to_string(),
            "decode+preprocess (90% busy on 2 workers)"
        );
        assert!(t
            .line()
            .starts_with("listing 0.10 s · fetch 4.00 s · decode 15.00 s"));
    }

    #[test]
    fn a_clock_sums_and_snapshots_each_stage() {
        let c = StageClock::default();
        c.add(Stage::Decode, Duration::from_millis(1500));
        c.add(Stage::Decode, Duration::from_millis(500));
        c.counter(Stage::Inference).fetch_add(250_000_000, Relaxed);
        let s = c.snapshot();
        assert_eq!(s.decode, 2.0);
        assert_eq!(s.inference, 0.25);
        assert_eq!(s.fetch, 0.0);
    }

    #[tokio::test]
    async fn a_timed_stream_counts_the_time_its_items_were_awaited() {
        let counter = Arc::new(AtomicU64::new(0));
        let slow = futures::stream::iter(0..3)
            .then(|i| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                i
            })
            .boxed();
        let items: Vec<_> = Timed::new(slow, counter.clone()).collect().await;
        assert_eq!(items, vec![0, 1, 2]);
        // Three items each awaited for at least 20 ms.
        assert!(counter.load(Relaxed) >= 60_000_000);
    }
}
