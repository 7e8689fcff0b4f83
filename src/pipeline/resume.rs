//! Which run an invocation writes to, and what it may skip: the job's fingerprints,
//! the run continued or started, the objects that run already wrote, and those an
//! earlier run of the same labels has unchanged.

use crate::config::RunPlan;
use crate::error::{Error, Hint, Result, Setting};
use crate::infer::LoadedModel;
use crate::manifest;
use crate::rerun::Unchanged;
use crate::runs::{self, RunStatus};
use crate::sink::{self, CommittedKeys};
use crate::source::Shard;
use crate::store::Location;

use super::progress::Progress;

/// What identifies this invocation's job.
pub(super) struct Job {
    /// Digest of everything that decides the run's rows; runs with the same one (and
    /// shard) are the same job, and an unfinished one is continued.
    pub fingerprint: String,
    /// Digest of what decides one object's row (see [`crate::rerun`]).
    pub labels: String,
    pub shard: Shard,
}

impl Job {
    pub fn of(plan: &RunPlan, input: &Location, model: &LoadedModel) -> Self {
        Self {
            fingerprint: job_fingerprint(plan, input, model),
            labels: labels_fingerprint(plan, model),
            shard: plan.selection.shard,
        }
    }
}

/// The run chosen, and what it skips.
pub(super) struct Resumed {
    pub run_id: String,
    /// Whether this invocation continues an earlier, unfinished run.
    pub continued: bool,
    /// Objects this run already wrote.
    pub done: CommittedKeys,
    /// Objects an earlier run of the same labels has unchanged.
    pub unchanged: Unchanged,
}

/// Digest of everything that decides a run's rows. `--limit` is not part of it: it
/// decides how many rows, not what they hold.
fn job_fingerprint(plan: &RunPlan, input: &Location, model: &LoadedModel) -> String {
    let mut job = serde_json::json!({
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
    if let (Some(e), Some(map)) = (&plan.embeddings, job.as_object_mut()) {
        map.insert("embeddings".into(), serde_json::json!(e));
    }
    format!("{:032x}", crate::stable::uri_digest(&job.to_string()))
}

/// Digest of what decides one object's row: two runs with the same one write the same
/// row for the same bytes, so a rerun may skip objects whose row is already there.
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

/// Choose the run (the shard's lease held), clean what an earlier attempt left, and
/// load what it may skip.
pub(super) async fn resolve(
    plan: &RunPlan,
    input: &Location,
    output: &Location,
    job: &Job,
    progress: &dyn Progress,
) -> Result<Resumed> {
    let shard = job.shard;
    let (run_id, continued) = choose_run(plan, output, &job.fingerprint, progress).await?;
    let stale = sink::remove_stale_staging(output, &run_id);
    if stale > 0 {
        tracing::info!(run_id = %run_id, files = stale, "removed unfinished part files of an earlier attempt");
    }
    let done = if continued {
        CommittedKeys::load(output, &run_id, shard).await?
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
        Unchanged::load(output, &job.labels, &run_id, &owns).await?
    };
    if !unchanged.is_empty() {
        tracing::info!(
            objects = unchanged.len(),
            bytes = unchanged.heap_bytes(),
            "objects labelled unchanged by earlier runs of the same labels are skipped"
        );
    }
    Ok(Resumed {
        run_id,
        continued,
        done,
        unchanged,
    })
}

/// Which run this invocation writes to, and whether it continues an earlier one.
async fn choose_run(
    plan: &RunPlan,
    output: &Location,
    fingerprint: &str,
    progress: &dyn Progress,
) -> Result<(String, bool)> {
    let shard = plan.selection.shard;
    if let Some(id) = &plan.run_id {
        return match runs::read_record(output, id, shard).await? {
            Some(r) if r.status == RunStatus::Finished => Err(Error::Config(format!(
                "run {id} already finished (shard {shard}); a finished run is never appended to"
            ))
            .with_hint(another_run())),
            Some(r) if r.fingerprint.as_deref().is_some_and(|f| f != fingerprint) => {
                Err(Error::Config(format!(
                    "run {id} was started with a different input, filters, model or preprocessing; continuing it would mix two jobs in one run"
                ))
                .with_hint(another_run()))
            }
            Some(_) => Ok((id.clone(), true)),
            None => Ok((id.clone(), false)),
        };
    }
    if !plan.new_run {
        if let Some(r) = runs::find_unfinished(output, fingerprint, shard).await? {
            progress.hinted_note(
                &format!(
                    "continuing unfinished run {} (status {}; started {})",
                    r.run_id,
                    r.status,
                    r.started_at.as_deref().unwrap_or("at an unknown time")
                ),
                &Hint::new("pass ")
                    .setting(Setting::NewRun)
                    .then(" to start over"),
            );
            return Ok((r.run_id, true));
        }
    }
    Ok((sink::new_run_id(), false))
}

/// Pass another run id, or start a new run.
fn another_run() -> Hint {
    Hint::new("pass another ")
        .setting(Setting::RunId)
        .then(", or ")
        .setting(Setting::NewRun)
}
