//! The layout of a predictions dataset, which the writer, the run records, reruns and
//! queries share: `run_id=<RUN_ID>/` folders, `part-s<I>of<N>-…` part names, the
//! committed keys of a run, and the embedding columns its parts carry.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::error::{Error, Result};
use crate::schema;
use crate::source::Shard;
use crate::store::Location;

/// Where a run's parts go.
pub fn run_dir(output: &Location, run_id: &str) -> Path {
    output.child(&format!("{}={run_id}", schema::RUN_ID))
}

/// Checks a run id is safe as a folder name.
pub fn validate_run_id(run_id: &str) -> Result<()> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !run_id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "run id {run_id:?} must be 1–128 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A new run id: UTC time to the millisecond (run ids sort by start time: `latest` and
/// reruns take the newest run's row) plus a random suffix.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32);
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        nanos & 0xff_ffff
    )
}

/// The objects a run has already written, as 128-bit URI digests
/// ([`crate::stable::uri_digest`]) in a sorted vector: 16 bytes a key (160 MB for ten
/// million), whatever the URIs' length.
#[derive(Debug, Default, Clone)]
pub struct CommittedKeys {
    digests: Vec<u128>,
}

impl CommittedKeys {
    /// Whether `uri` was already written.
    pub fn contains(&self, uri: &str) -> bool {
        self.digests
            .binary_search(&crate::stable::uri_digest(uri))
            .is_ok()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Bytes held by the set.
    pub fn heap_bytes(&self) -> usize {
        self.digests.capacity() * std::mem::size_of::<u128>()
    }

    /// Read the `uri` column of this shard's committed parts of `run_id`, streaming
    /// each part with the async Parquet reader (one row group at a time).
    pub async fn load(output: &Location, run_id: &str, shard: Shard) -> Result<Self> {
        let dir = run_dir(output, run_id);
        let prefix = part_prefix(shard);
        let parts: Vec<object_store::ObjectMeta> = output
            .store
            .list(Some(&dir))
            .try_filter(|m| {
                let name = m.location.filename().unwrap_or_default();
                futures::future::ready(name.starts_with(&prefix) && name.ends_with(".parquet"))
            })
            .try_collect()
            .await
            .map_err(|e| crate::store::store_error(output, e))?;
        let mut digests = Vec::new();
        for meta in parts {
            let reader = PartReader {
                store: output.store.clone(),
                path: meta.location.clone(),
                size: meta.size,
            };
            let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), [schema::URI]);
            let mut batches = builder.with_projection(mask).build()?;
            while let Some(batch) = batches.try_next().await? {
                let col = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .ok_or_else(|| {
                        Error::Encode(format!("{}: uri column is not a string", meta.location))
                    })?;
                digests.extend(col.iter().flatten().map(crate::stable::uri_digest));
            }
        }
        digests.sort_unstable();
        digests.dedup();
        digests.shrink_to_fit();
        Ok(Self { digests })
    }
}

/// The sizes of the embedding columns of the newest run (of `runs_newest_first`)
/// that wrote them: one listing page and one footer read per run looked at.
pub async fn embedding_columns(
    output: &Location,
    runs_newest_first: &[String],
) -> Result<Option<schema::EmbeddingColumns>> {
    for run_id in runs_newest_first {
        let dir = run_dir(output, run_id);
        let first = output
            .store
            .list(Some(&dir))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
            .boxed()
            .try_next()
            .await
            .map_err(|e| crate::store::store_error(output, e))?;
        let Some(meta) = first else { continue };
        let reader = PartReader {
            store: output.store.clone(),
            path: meta.location.clone(),
            size: meta.size,
        };
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        if let Some(columns) = schema::EmbeddingColumns::of(builder.schema()) {
            return Ok(Some(columns));
        }
    }
    Ok(None)
}

/// Ranged reads of one committed part, for the async Parquet reader: only the footer
/// and the projected columns' pages are fetched.
pub(crate) struct PartReader {
    store: Arc<dyn object_store::ObjectStore>,
    path: Path,
    size: u64,
}

impl PartReader {
    pub(crate) fn new(output: &Location, meta: &object_store::ObjectMeta) -> Self {
        Self {
            store: output.store.clone(),
            path: meta.location.clone(),
            size: meta.size,
        }
    }
}

fn parquet_store_error(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for PartReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_store_error)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_store_error)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

/// The file-name prefix of a shard's parts (`part-s<I>of<N>-`).
pub fn part_prefix(shard: Shard) -> String {
    format!("part-s{}of{}-", shard.index, shard.count)
}
