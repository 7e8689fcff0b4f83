//! What a run did: its summary, built once when the run starts and completed when its
//! stages end, and its record under `_runs/`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::config::RunPlan;
use crate::error::{Error, Hint, Result, Setting};
use crate::infer::LoadedModel;
use crate::manifest;
use crate::preprocess::{PreprocessSpec, Tta};
use crate::runs::{self, RunStatus};
use crate::source::{Filter, Shard};
use crate::stages::{StageLoad, StageTimes};
use crate::store::Location;

use super::consume::Published;
use super::progress::{Stats, Stop, EXIT_INTERRUPTED};
use super::resume::{Job, Resumed};

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
    #[serde(serialize_with = "as_text")]
    pub shard: Shard,
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

/// A shard as its record writes it (`0/1`).
fn as_text<S: serde::Serializer>(shard: &Shard, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(shard)
}

impl RunSummary {
    /// Process exit code: 0 all labelled, 1 some rows carry errors, 3 interrupted
    /// (progress committed; the same run continues).
    pub fn exit_code(&self) -> u8 {
        match self.status {
            RunStatus::Interrupted | RunStatus::Running => EXIT_INTERRUPTED,
            RunStatus::Failed => 2,
            RunStatus::Finished => u8::from(self.failed > 0),
        }
    }

    /// The summary of a run that starts now (status `running`, nothing counted yet).
    pub(super) fn start(
        plan: &RunPlan,
        input: &Location,
        output: &Location,
        model: &LoadedModel,
        job: &Job,
        resumed: &Resumed,
        lease_epoch: u64,
    ) -> Self {
        RunSummary {
            run_id: resumed.run_id.clone(),
            status: RunStatus::Running,
            resumed: resumed.continued,
            fingerprint: job.fingerprint.clone(),
            labels_fingerprint: job.labels.clone(),
            shard: job.shard,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
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
            lease_epoch,
            peak_rss_bytes: None,
            stages: StageTimes::default(),
            load: Vec::new(),
        }
    }

    /// Take the counters, what was published and the time spent.
    fn count(&mut self, stats: &Stats, published: &mut Published, started: Instant) {
        let listing = &stats.listing;
        self.listed = listing.listed.load(Relaxed);
        self.selected = listing.selected.load(Relaxed);
        self.skipped = stats.skipped.load(Relaxed);
        self.skipped_unchanged = stats.unchanged.load(Relaxed);
        self.labelled = stats.labelled.load(Relaxed);
        self.failed = stats.failed.load(Relaxed);
        self.rows_written = published.rows_written;
        self.parts = std::mem::take(&mut published.parts);
        self.seconds = started.elapsed().as_secs_f64();
        self.images_per_second = (self.labelled + self.failed) as f64 / self.seconds.max(1e-9);
        self.peak_rss_bytes = peak_rss_bytes();
        self.stages = stats.stages.snapshot();
        self.load = self.stages.load(self.seconds, &stats.workers);
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How a run's stages ended, for [`finish`].
pub(super) struct Ended {
    pub summary: RunSummary,
    pub published: Published,
    /// Whether the run continued an earlier one.
    pub resumed: bool,
    pub started: Instant,
}

/// The run's summary and record once its stages ended (the shard's lease still held).
pub(super) async fn finish(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    ended: Ended,
    stats: &Stats,
    stop: &Stop,
) -> Result<RunSummary> {
    let Ended {
        mut summary,
        mut published,
        resumed,
        started,
    } = ended;
    summary.count(stats, &mut published, started);
    let (run_id, shard) = (summary.run_id.clone(), summary.shard);

    if let Some(error) = published.error {
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
    let listing = &stats.listing;
    let complete = listing.complete.load(Relaxed);
    if complete && summary.selected == 0 && !plan.allow_empty {
        if !resumed {
            runs::remove_record(output, &run_id, shard).await;
        }
        let filter = Filter::new(&plan.selection)?;
        let allow = |text: &str| Hint::new("pass ").setting(Setting::AllowEmpty).then(text);
        let (reason, hint) = if summary.listed == 0 && manifest::is_manifest(input) {
            (
                format!("nothing to label: the manifest {input} has no rows"),
                allow(" to accept an empty list"),
            )
        } else if summary.listed == 0 {
            (
                format!("nothing to label: no objects under {input}"),
                Hint::new("check the path or prefix (and the credentials for a bucket), or pass ")
                    .setting(Setting::AllowEmpty),
            )
        } else {
            (
                format!(
                    "nothing to label: {} objects listed under {input}, all removed by the filters",
                    summary.listed,
                ),
                Hint::new("removed ")
                    .append(listing.removed_description(&filter))
                    .then("; ")
                    .append(allow(" to accept an empty selection")),
            )
        };
        return Err(Error::Input(reason).with_hint(hint));
    }
    summary.status = RunStatus::Finished;
    write_record(output, &summary).await?;
    Ok(summary)
}

/// Write the run's record (`_runs/<RUN_ID>/s<I>of<N>.json`).
pub(super) async fn write_record(output: &Location, summary: &RunSummary) -> Result<String> {
    let value = serde_json::to_value(summary).map_err(|e| Error::Encode(e.to_string()))?;
    runs::write_record(output, &summary.run_id, summary.shard, &value).await
}
