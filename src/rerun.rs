//! Reruns label only what changed: the objects a new run may skip because an earlier
//! run of the same labels already has their row, unchanged.
//!
//! Two runs write the same row for an object when they use the same model (sha256),
//! preprocessing, test-time augmentation, top-k and embeddings: the *labels
//! fingerprint* ([`crate::pipeline`] computes it; the run record keeps it). A new run
//! with that fingerprint skips an object when the newest row of its `uri` in the
//! dataset (the row `latest` shows) came from a run with the same fingerprint, is not
//! an error row, and was written for the same version of the object: the same ETag, or,
//! where the store gives none, the same size and modification time. Anything else — a
//! new or replaced object, an error row, a uri whose newest row another model wrote — is
//! labelled again.
//!
//! The set holds a 128-bit digest of each uri and a 64-bit digest of its version,
//! sorted: 24 bytes a key, whatever the URIs' length. Loading reads five narrow columns
//! of every part, one row group at a time.

use futures::TryStreamExt;
use object_store::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::{Error, Result};
use crate::runs;
use crate::schema;
use crate::source::ObjectRef;
use crate::store::{store_error, Location};

/// The version of an object as its row records it: its ETag, or its size and
/// modification time where the store gives no ETag. Never 0 (0 marks "do not skip").
pub fn version_token(etag: Option<&str>, size: i64, last_modified_micros: i64) -> u64 {
    let digest = match etag {
        Some(e) if !e.is_empty() => crate::stable::fnv1a64(format!("e:{e}").as_bytes()),
        _ => crate::stable::fnv1a64(format!("s:{size}:{last_modified_micros}").as_bytes()),
    };
    digest.max(1)
}

/// [`version_token`] of an object as listed (or fetched).
pub fn object_version(o: &ObjectRef) -> u64 {
    version_token(
        o.etag.as_deref(),
        i64::try_from(o.size).unwrap_or(i64::MAX),
        o.last_modified.timestamp_micros(),
    )
}

/// Objects a run may skip as already labelled and unchanged.
#[derive(Debug, Default, Clone)]
pub struct Unchanged {
    uris: Vec<u128>,
    versions: Vec<u64>,
}

/// Which keys the loading worker owns (its shard), by a row's `key` and `uri`.
pub type Owns<'a> = &'a (dyn Fn(&str, &str) -> bool + Sync);

impl Unchanged {
    /// Whether `o`, as listed or fetched now, was labelled in this version.
    pub fn contains(&self, o: &ObjectRef) -> bool {
        self.contains_version(&o.uri, object_version(o))
    }

    pub fn contains_version(&self, uri: &str, version: u64) -> bool {
        match self.uris.binary_search(&crate::stable::uri_digest(uri)) {
            Ok(i) => self.versions.get(i) == Some(&version),
            Err(_) => false,
        }
    }

    pub fn len(&self) -> usize {
        self.uris.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uris.is_empty()
    }

    /// Bytes held by the set.
    pub fn heap_bytes(&self) -> usize {
        self.uris.capacity() * std::mem::size_of::<u128>()
            + self.versions.capacity() * std::mem::size_of::<u64>()
    }

    /// Read the dataset at `output` (every run but `current`) for the rows of the
    /// objects `owns` selects, and keep those whose newest row has
    /// `labels_fingerprint` and no error.
    pub async fn load(
        output: &Location,
        labels_fingerprint: &str,
        current: &str,
        owns: Owns<'_>,
    ) -> Result<Self> {
        let mut runs = dataset_runs(output).await?;
        // Newest first, the order `latest` uses (run ids sort by time).
        runs.retain(|r| r != current);
        // (uri digest, rank of its run: 0 is the newest, version or 0 for "relabel").
        let mut rows: Vec<(u128, u32, u64)> = Vec::new();
        for (rank, run_id) in runs.iter().enumerate() {
            let same = run_labels_fingerprint(output, run_id).await?.as_deref()
                == Some(labels_fingerprint);
            read_run(output, run_id, rank as u32, same, owns, &mut rows).await?;
        }
        rows.sort_unstable_by_key(|&(uri, rank, _)| (uri, rank));
        rows.dedup_by_key(|r| r.0);
        let mut uris = Vec::with_capacity(rows.iter().filter(|r| r.2 != 0).count());
        let mut versions = Vec::with_capacity(uris.capacity());
        for (uri, _, version) in rows {
            if version != 0 {
                uris.push(uri);
                versions.push(version);
            }
        }
        Ok(Self { uris, versions })
    }
}

/// The `run_id=` folders of a dataset, newest first (none before its first run).
async fn dataset_runs(output: &Location) -> Result<Vec<String>> {
    match crate::query::dataset_run_ids(output).await {
        Ok(runs) => Ok(runs),
        Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(store_error(output, e)),
    }
}

/// The labels fingerprint a run recorded (any shard's record; all shards of a run run
/// the same command). `None` for a run without one (older than this check, or written
/// by hand): its rows are never skipped.
async fn run_labels_fingerprint(output: &Location, run_id: &str) -> Result<Option<String>> {
    let dir = output.child(&format!("_runs/{run_id}"));
    let records: Vec<object_store::ObjectMeta> =
        match output.store.list(Some(&dir)).try_collect().await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(output, e)),
        };
    for meta in records {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        let Some(shard) = name
            .strip_suffix(".json")
            .and_then(|s| s.strip_prefix('s'))
            .and_then(|s| s.split_once("of"))
            .and_then(|(i, n)| crate::source::Shard::new(i.parse().ok()?, n.parse().ok()?).ok())
        else {
            continue;
        };
        if let Some(record) = runs::read_record(output, run_id, shard).await? {
            return Ok(record.labels_fingerprint);
        }
    }
    Ok(None)
}

const COLUMNS: [&str; 6] = [
    schema::URI,
    schema::KEY,
    schema::ETAG,
    schema::SIZE_BYTES,
    schema::LAST_MODIFIED,
    schema::ERROR,
];

async fn read_run(
    output: &Location,
    run_id: &str,
    rank: u32,
    same_labels: bool,
    owns: Owns<'_>,
    rows: &mut Vec<(u128, u32, u64)>,
) -> Result<()> {
    let dir: Path = crate::dataset::run_dir(output, run_id);
    let parts: Vec<object_store::ObjectMeta> = output
        .store
        .list(Some(&dir))
        .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
        .try_collect()
        .await
        .map_err(|e| store_error(output, e))?;
    for meta in parts {
        let reader = crate::dataset::PartReader::new(output, &meta);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), COLUMNS);
        let mut batches = builder.with_projection(mask).build()?;
        while let Some(batch) = batches.try_next().await? {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::Encode(format!("{}: no `{name}` column", meta.location)))
            };
            let bad = |name: &str| {
                Error::Encode(format!(
                    "{}: `{name}` has an unexpected type",
                    meta.location
                ))
            };
            let uri = column(schema::URI)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(schema::URI))?;
            let key = column(schema::KEY)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(schema::KEY))?;
            let etag = column(schema::ETAG)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(schema::ETAG))?;
            let size = column(schema::SIZE_BYTES)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad(schema::SIZE_BYTES))?;
            let modified = column(schema::LAST_MODIFIED)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| bad(schema::LAST_MODIFIED))?;
            let error = column(schema::ERROR)?;
            for i in 0..batch.num_rows() {
                if uri.is_null(i) {
                    continue;
                }
                let (u, k) = (uri.value(i), key.value(i));
                if !owns(k, u) {
                    continue;
                }
                let version = if same_labels && error.is_null(i) {
                    version_token(
                        (!etag.is_null(i)).then(|| etag.value(i)),
                        size.value(i),
                        modified.value(i),
                    )
                } else {
                    0
                };
                rows.push((crate::stable::uri_digest(u), rank, version));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_etag_else_size_and_time() {
        let a = version_token(Some("\"v1\""), 10, 5);
        assert_eq!(a, version_token(Some("\"v1\""), 99, 7), "the etag decides");
        assert_ne!(a, version_token(Some("\"v2\""), 10, 5));
        let plain = version_token(None, 10, 5);
        assert_eq!(
            plain,
            version_token(Some(""), 10, 5),
            "an empty etag is none"
        );
        assert_ne!(plain, version_token(None, 11, 5));
        assert_ne!(plain, version_token(None, 10, 6));
        assert_ne!(plain, 0);
    }

    #[test]
    fn an_object_is_unchanged_only_in_the_version_its_row_has() {
        let mut keys: Vec<(u128, u64)> = ["s3://b/a.jpg", "s3://b/b.jpg"]
            .iter()
            .enumerate()
            .map(|(i, u)| {
                (
                    crate::stable::uri_digest(u),
                    version_token(None, i as i64, 0),
                )
            })
            .collect();
        keys.sort_unstable();
        let set = Unchanged {
            uris: keys.iter().map(|k| k.0).collect(),
            versions: keys.iter().map(|k| k.1).collect(),
        };
        assert!(set.contains_version("s3://b/a.jpg", version_token(None, 0, 0)));
        assert!(!set.contains_version("s3://b/a.jpg", version_token(None, 1, 0)));
        assert!(!set.contains_version("s3://b/c.jpg", version_token(None, 0, 0)));
        assert_eq!(set.heap_bytes() / set.len(), 24);
    }
}
