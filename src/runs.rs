//! Run records: which runs a predictions dataset holds, how far each got, and which
//! one a new `labelflow run` continues.
//!
//! Every worker keeps one record per run, `<output>/_runs/<RUN_ID>/s<I>of<N>.json`,
//! written when it starts (`running`) and rewritten when it stops (`finished`,
//! `interrupted` or `failed`, with the run's summary). A worker killed outright
//! leaves `running`. The record holds the job's fingerprint — a digest of everything
//! that decides the rows (input and filters, model, preprocessing, test-time
//! augmentation, top-k) — so that rerunning the same command finds the newest
//! unfinished run of the same job and shard and continues it instead of starting over.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Hint, Result, Setting};
use crate::source::Shard;
use crate::store::{store_error, Location};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started and not (yet) stopped; also what a killed worker leaves.
    Running,
    /// Stopped by a signal after committing what it had.
    Interrupted,
    /// Stopped by a fatal error after committing what it had.
    Failed,
    /// Every selected object has a row.
    Finished,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
            RunStatus::Finished => "finished",
        })
    }
}

/// The fields of a run record that decide what happens next (the record holds more:
/// the whole summary once the run stops).
#[derive(Debug, Clone, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub status: RunStatus,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    /// What decides a row's content given the object (model, preprocessing, tta,
    /// top-k, embeddings); a new run with the same one skips unchanged objects (see
    /// [`crate::rerun`]). Absent from records written before the check existed.
    #[serde(default)]
    pub labels_fingerprint: Option<String>,
}

/// `_runs/<run_id>/s<I>of<N>.json` below the output.
pub fn record_path(output: &Location, run_id: &str, shard: Shard) -> Path {
    output.child(&format!(
        "_runs/{run_id}/s{}of{}.json",
        shard.index, shard.count
    ))
}

/// Write (or replace) a run's record; returns its URI.
pub async fn write_record(
    output: &Location,
    run_id: &str,
    shard: Shard,
    record: &serde_json::Value,
) -> Result<String> {
    let path = record_path(output, run_id, shard);
    let body = serde_json::to_vec_pretty(record).map_err(|e| Error::Encode(e.to_string()))?;
    output
        .store
        .put(&path, body.into())
        .await
        .map_err(|e| store_error(output, e))?;
    Ok(output.uri(&path))
}

/// Remove a run's record (a run that turned out to have nothing to do).
pub async fn remove_record(output: &Location, run_id: &str, shard: Shard) {
    let _ = output
        .store
        .delete(&record_path(output, run_id, shard))
        .await;
}

/// A run's record for `shard`, if it has one (a run written before records existed,
/// or by another shard only, has none). A record that cannot be parsed is an error
/// naming the file: guessing could append to a finished run.
pub async fn read_record(
    output: &Location,
    run_id: &str,
    shard: Shard,
) -> Result<Option<RunRecord>> {
    let path = record_path(output, run_id, shard);
    let bytes = match output.store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(|e| store_error(output, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(output, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::Output {
            location: output.uri(&path),
            reason: format!("unreadable run record ({e})"),
        }
        .with_hint(Hint::new("delete it or pass ").setting(Setting::NewRun))
    })
}

/// The newest run of the same job (`fingerprint`) and `shard` that did not finish.
pub async fn find_unfinished(
    output: &Location,
    fingerprint: &str,
    shard: Shard,
) -> Result<Option<RunRecord>> {
    let runs_dir = output.child("_runs");
    let listing = match output.store.list_with_delimiter(Some(&runs_dir)).await {
        Ok(l) => l,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_error(output, e)),
    };
    let mut best: Option<RunRecord> = None;
    for dir in listing.common_prefixes {
        let Some(run_id) = dir.filename() else {
            continue;
        };
        if crate::dataset::validate_run_id(run_id).is_err() {
            continue;
        }
        let Some(record) = read_record(output, run_id, shard).await? else {
            continue;
        };
        if record.status == RunStatus::Finished
            || record.fingerprint.as_deref() != Some(fingerprint)
        {
            continue;
        }
        let newer = best.as_ref().is_none_or(|b| {
            (record.started_at.as_deref(), record.run_id.as_str())
                > (b.started_at.as_deref(), b.run_id.as_str())
        });
        if newer {
            best = Some(record);
        }
    }
    Ok(best)
}

/// Every run id under the output's `_runs/` (for tools and tests).
pub async fn run_ids(output: &Location) -> Result<Vec<String>> {
    let runs_dir = output.child("_runs");
    let listing: Vec<_> = output
        .store
        .list(Some(&runs_dir))
        .try_collect()
        .await
        .map_err(|e| store_error(output, e))?;
    let mut ids: Vec<String> = listing
        .iter()
        .filter_map(|m| {
            let rel = output.relative(&m.location).strip_prefix("_runs/")?;
            let (id, _) = rel.split_once('/')?;
            Some(id.to_string())
        })
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: &str, fp: &str, at: &str) -> serde_json::Value {
        serde_json::json!({"run_id": id, "status": status, "fingerprint": fp, "started_at": at, "other": 1})
    }

    #[tokio::test]
    async fn the_newest_unfinished_run_of_the_same_job_is_found() {
        let out = Location::memory();
        let s = Shard::default();
        write_record(
            &out,
            "a",
            s,
            &record("a", "interrupted", "f1", "2026-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
        write_record(
            &out,
            "b",
            s,
            &record("b", "running", "f1", "2026-01-02T00:00:00Z"),
        )
        .await
        .unwrap();
        write_record(
            &out,
            "c",
            s,
            &record("c", "finished", "f1", "2026-01-03T00:00:00Z"),
        )
        .await
        .unwrap();
        write_record(
            &out,
            "d",
            s,
            &record("d", "running", "f2", "2026-01-04T00:00:00Z"),
        )
        .await
        .unwrap();
        let found = find_unfinished(&out, "f1", s).await.unwrap().unwrap();
        assert_eq!(found.run_id, "b");
        assert!(find_unfinished(&out, "f3", s).await.unwrap().is_none());
        // Another shard's records are not this shard's.
        let other = Shard::new(1, 2).unwrap();
        assert!(find_unfinished(&out, "f1", other).await.unwrap().is_none());
        assert_eq!(run_ids(&out).await.unwrap(), ["a", "b", "c", "d"]);
        let c = read_record(&out, "c", s).await.unwrap().unwrap();
        assert_eq!(c.status, RunStatus::Finished);
        assert!(read_record(&out, "zz", s).await.unwrap().is_none());
    }
}
