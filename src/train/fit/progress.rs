//! What the training job reports while it runs.

use crate::train::metrics::EpochMetrics;

/// Hooks for progress display; every method has a no-op default.
pub trait TrainProgress: Send + Sync {
    /// A named phase starts (listing, loading, features…).
    fn phase(&self, _what: &str) {}
    /// Something the person running the job should read, e.g. which numbers the
    /// recipe chose for this data.
    fn notice(&self, _what: &str) {}
    /// An epoch of `batches` batches starts.
    fn epoch_start(&self, _epoch: u32, _epochs: u32, _batches: u64) {}
    /// A training batch finished.
    fn batch(&self, _loss: f64) {}
    /// An epoch finished.
    fn epoch_end(&self, _metrics: &EpochMetrics) {}
}

/// Progress that shows nothing.
pub struct NoTrainProgress;
impl TrainProgress for NoTrainProgress {}
