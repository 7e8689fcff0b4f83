//! What a run reports while it runs, and how it is asked to stop.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::error::Hint;
use crate::source::ListingCounters;
use crate::stages::{StageClock, Workers};

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
    /// A note with what the person can change ([`Hint`]): `message; hint` with the
    /// settings as the pipeline file's keys, unless the implementation names them its
    /// own way (the command line shows flags).
    fn hinted_note(&self, message: &str, hint: &Hint) {
        self.note(&format!("{message}; {hint}"));
    }
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
