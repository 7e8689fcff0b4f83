//! Result rows → Arrow record batches (schema in [`crate::schema`]) → Parquet part files
//! in an object store.
//!
//! Layout of a predictions dataset:
//!
//! ```text
//! <output>/run_id=<RUN_ID>/part-<SHARD>-<ATTEMPT>-<SEQ>.parquet   data (zstd)
//! <output>/_runs/<RUN_ID>/<SHARD>.json                            summary of a finished run
//! ```
//!
//! A part becomes visible under its `.parquet` name only once complete: it is written
//! through object_store's multipart upload, which publishes the object atomically on
//! completion (S3/GCS/Azure), or, for local folders, through a staging file renamed at
//! the end. A crash leaves no partial `.parquet`. Re-running with the same `--run-id`
//! reads the URIs already present in that run's parts and skips them, so each object
//! lands exactly once per run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    make_builder, ArrayBuilder, ArrayRef, FixedSizeBinaryBuilder, FixedSizeListBuilder,
    Float16Builder, Float32Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StructBuilder, TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::infer::{Embedded, Scored};
use crate::lease::LeaseWatch;
use crate::schema;
use crate::source::{ObjectRef, Shard};
use crate::store::Location;

pub use crate::dataset::{
    embedding_columns, new_run_id, part_prefix, run_dir, validate_run_id, CommittedKeys,
};

/// How parts are cut and encoded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkOptions {
    /// Rows per Parquet part file; a part is also closed after `flush_seconds`.
    pub rows_per_part: usize,
    /// Rows per Parquet row group (and per in-memory batch before encoding).
    pub row_group_rows: usize,
    /// Longest time a part stays open, so a long run commits progress regularly: the
    /// most labelling a `kill -9` can lose. The first parts of a run commit sooner
    /// (after 5 s, then 10, 20, … up to this), so a short run is never all-or-nothing.
    pub flush_seconds: u64,
    /// zstd compression level (1–22).
    pub zstd_level: i32,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            rows_per_part: 100_000,
            row_group_rows: 16_384,
            flush_seconds: 60,
            zstd_level: 3,
        }
    }
}

impl SinkOptions {
    pub fn validate(&self) -> Result<()> {
        if self.rows_per_part == 0 || self.row_group_rows == 0 || self.flush_seconds == 0 {
            return Err(Error::Config(
                "output.rows_per_part, output.row_group_rows and output.flush_seconds must be at least 1".into(),
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(Error::Config(format!(
                "output.zstd_level must be 1–22, got {}",
                self.zstd_level
            )));
        }
        Ok(())
    }
}

/// One labelled (or failed) object.
#[derive(Debug, Clone)]
pub struct Row {
    pub object: ObjectRef,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Best classes, highest first; empty for failed objects.
    pub top: Vec<Scored>,
    pub error: Option<String>,
    pub labelled_at: chrono::DateTime<chrono::Utc>,
    /// With `--embeddings`: the image's vector and code; `None` for failed objects.
    pub embedding: Option<Embedded>,
}

impl Row {
    /// The row of an object that could not be labelled, and why.
    pub fn failed(object: ObjectRef, error: String) -> Self {
        Row {
            object,
            width: None,
            height: None,
            top: Vec::new(),
            error: Some(error),
            labelled_at: chrono::Utc::now(),
            embedding: None,
        }
    }

    /// The row of a labelled image: its decoded size, best classes and embedding.
    pub fn labelled(
        object: ObjectRef,
        (width, height): (u32, u32),
        top: Vec<Scored>,
        embedding: Option<Embedded>,
        labelled_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Row {
            object,
            width: Some(width),
            height: Some(height),
            top,
            error: None,
            labelled_at,
            embedding,
        }
    }
}

/// Identity of the model that produced the rows.
#[derive(Debug, Clone)]
pub struct ModelStamp {
    pub name: String,
    pub sha256: String,
    pub classes: Arc<Vec<String>>,
    /// With `--embeddings`: the sizes of the `embedding` and `code` columns.
    pub embedding: Option<schema::EmbeddingColumns>,
}

impl ModelStamp {
    /// The name of class `index` (`?` past the model's list).
    fn class(&self, index: usize) -> &str {
        self.classes.get(index).map(String::as_str).unwrap_or("?")
    }
}

/// Remove what a killed process left of unfinished parts in a local output folder
/// (`<part>.parquet#<n>` staging files; readers never see them, but they take space).
/// Remote stores keep no partial object: an unfinished multipart upload is invisible
/// (a bucket lifecycle rule removes it).
pub fn remove_stale_staging(output: &Location, run_id: &str) -> usize {
    if !output.is_local() {
        return 0;
    }
    let dir = std::path::PathBuf::from(format!("/{}", run_dir(output, run_id)));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().contains(".parquet#") && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// How a row fills one output column: one entry per column of
/// [`schema::predictions`], in its order. A new column is a field there and a line
/// here (a test checks the two agree).
type Put = fn(&mut dyn ArrayBuilder, &Row, &ModelStamp) -> Result<()>;

const COLUMNS: &[(&str, Put)] = &[
    (schema::URI, |b, r, _| {
        text(b)?.append_value(&r.object.uri);
        Ok(())
    }),
    (schema::KEY, |b, r, _| {
        text(b)?.append_value(&r.object.key);
        Ok(())
    }),
    (schema::ETAG, |b, r, _| {
        text(b)?.append_option(r.object.etag.as_deref());
        Ok(())
    }),
    (schema::VERSION, |b, r, _| {
        text(b)?.append_option(r.object.version.as_deref());
        Ok(())
    }),
    (schema::SIZE_BYTES, |b, r, _| {
        builder::<Int64Builder>(b)?.append_value(i64::try_from(r.object.size).unwrap_or(i64::MAX));
        Ok(())
    }),
    (schema::LAST_MODIFIED, |b, r, _| {
        builder::<TimestampMicrosecondBuilder>(b)?
            .append_value(r.object.last_modified.timestamp_micros());
        Ok(())
    }),
    (schema::WIDTH, |b, r, _| {
        builder::<Int32Builder>(b)?.append_option(r.width.map(|w| w as i32));
        Ok(())
    }),
    (schema::HEIGHT, |b, r, _| {
        builder::<Int32Builder>(b)?.append_option(r.height.map(|h| h as i32));
        Ok(())
    }),
    (schema::LABEL, |b, r, m| {
        text(b)?.append_option(r.top.first().map(|best| m.class(best.index)));
        Ok(())
    }),
    (schema::LABEL_INDEX, |b, r, _| {
        builder::<Int32Builder>(b)?.append_option(r.top.first().map(|best| best.index as i32));
        Ok(())
    }),
    (schema::SCORE, |b, r, _| {
        builder::<Float32Builder>(b)?.append_option(r.top.first().map(|best| best.score));
        Ok(())
    }),
    (schema::TOP_K, |b, r, m| {
        let list = builder::<ListBuilder<Box<dyn ArrayBuilder>>>(b)?;
        if r.top.is_empty() {
            list.append_null();
            return Ok(());
        }
        let entries = builder::<StructBuilder>(list.values().as_mut())?;
        for s in &r.top {
            field::<StringBuilder>(entries, 0)?.append_value(m.class(s.index));
            field::<Int32Builder>(entries, 1)?.append_value(s.index as i32);
            field::<Float32Builder>(entries, 2)?.append_value(s.score);
            entries.append(true);
        }
        list.append(true);
        Ok(())
    }),
    (schema::MODEL, |b, _, m| {
        text(b)?.append_value(&m.name);
        Ok(())
    }),
    (schema::MODEL_SHA256, |b, _, m| {
        text(b)?.append_value(&m.sha256);
        Ok(())
    }),
    (schema::LABELLED_AT, |b, r, _| {
        builder::<TimestampMicrosecondBuilder>(b)?.append_value(r.labelled_at.timestamp_micros());
        Ok(())
    }),
    (schema::ERROR, |b, r, _| {
        text(b)?.append_option(r.error.as_deref());
        Ok(())
    }),
];

/// The builder behind `b`, of the type its column's data type makes.
fn builder<T: ArrayBuilder>(b: &mut dyn ArrayBuilder) -> Result<&mut T> {
    b.as_any_mut().downcast_mut::<T>().ok_or_else(|| {
        Error::Encode(format!(
            "an output column's builder is not a {}",
            std::any::type_name::<T>()
        ))
    })
}

fn text(b: &mut dyn ArrayBuilder) -> Result<&mut StringBuilder> {
    builder::<StringBuilder>(b)
}

/// The rows of the part being written, column by column.
struct RowBuffer {
    /// One per entry of [`COLUMNS`], made from the schema's data types.
    columns: Vec<Box<dyn ArrayBuilder>>,
    embedding: Option<EmbeddingBuilders>,
    schema: arrow::datatypes::SchemaRef,
    len: usize,
}

struct EmbeddingBuilders {
    columns: schema::EmbeddingColumns,
    vector: FixedSizeListBuilder<Float16Builder>,
    code: FixedSizeBinaryBuilder,
}

impl EmbeddingBuilders {
    fn new(columns: schema::EmbeddingColumns) -> Self {
        Self {
            columns,
            vector: FixedSizeListBuilder::new(Float16Builder::new(), columns.dim as i32)
                .with_field(schema::embedding_item()),
            code: FixedSizeBinaryBuilder::new(columns.code_bytes as i32),
        }
    }

    fn push(&mut self, row: Option<&Embedded>) -> Result<()> {
        let dim = self.columns.dim;
        match row {
            Some(e) if e.vector.len() == dim && e.code.len() == self.columns.code_bytes => {
                self.vector.values().append_slice(&e.vector);
                self.vector.append(true);
                self.code.append_value(&e.code)?;
            }
            Some(e) => {
                return Err(Error::Encode(format!(
                    "an embedding of {} values and a code of {} bytes do not fit columns of {dim} and {}",
                    e.vector.len(),
                    e.code.len(),
                    self.columns.code_bytes
                )))
            }
            None => {
                // A null entry of a fixed-size list still holds `dim` (ignored) values.
                self.vector.values().append_nulls(dim);
                self.vector.append(false);
                self.code.append_null();
            }
        }
        Ok(())
    }
}

impl RowBuffer {
    fn new(embedding: Option<schema::EmbeddingColumns>) -> Self {
        let schema = schema::predictions_with(embedding);
        Self {
            // The base columns come first in the schema, the embedding's after them.
            columns: schema
                .fields()
                .iter()
                .take(COLUMNS.len())
                .map(|f| make_builder(f.data_type(), 1024))
                .collect(),
            embedding: embedding.map(EmbeddingBuilders::new),
            schema,
            len: 0,
        }
    }

    fn push(&mut self, row: &Row, model: &ModelStamp) -> Result<()> {
        for (builder, (_, put)) in self.columns.iter_mut().zip(COLUMNS) {
            put(builder.as_mut(), row, model)?;
        }
        if let Some(e) = self.embedding.as_mut() {
            e.push(row.embedding.as_ref())?;
        }
        self.len += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = self.columns.iter_mut().map(|b| b.finish()).collect();
        if let Some(e) = self.embedding.as_mut() {
            columns.push(Arc::new(e.vector.finish()));
            columns.push(Arc::new(e.code.finish()));
        }
        self.len = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn field<T: arrow::array::ArrayBuilder>(s: &mut StructBuilder, i: usize) -> Result<&mut T> {
    s.field_builder::<T>(i)
        .ok_or_else(|| Error::Encode(format!("top_k field {i} has an unexpected type")))
}

struct OpenPart {
    path: Path,
    writer: AsyncArrowWriter<BufWriter>,
    rows: usize,
}

/// The first part of a run commits after this long; each later one may stay open
/// twice as long as the one before, up to `flush_seconds`.
const FIRST_FLUSH: Duration = Duration::from_secs(5);

/// Writes rows into part files; parts are published atomically when closed.
pub struct PartWriter {
    output: Location,
    run_id: String,
    name_prefix: String,
    opts: SinkOptions,
    model: ModelStamp,
    buffer: RowBuffer,
    part: Option<OpenPart>,
    /// When the oldest row not yet published arrived.
    pending_since: Option<Instant>,
    seq: u32,
    /// The shard's lease, checked before each part is published.
    lease: Option<LeaseWatch>,
    /// Parts published so far (full URIs).
    pub parts: Vec<String>,
    /// Rows in published parts.
    pub rows_written: u64,
}

impl PartWriter {
    pub fn new(
        output: Location,
        run_id: &str,
        shard: Shard,
        opts: SinkOptions,
        model: ModelStamp,
    ) -> Result<Self> {
        validate_run_id(run_id)?;
        opts.validate()?;
        // The attempt stamp keeps a resumed run from overwriting the parts it resumes.
        let attempt = chrono::Utc::now()
            .format("%Y%m%dT%H%M%S%.3fZ")
            .to_string()
            .replace('.', "");
        let name_prefix = format!("{}{attempt}", part_prefix(shard));
        Ok(Self {
            output,
            run_id: run_id.to_string(),
            name_prefix,
            opts,
            buffer: RowBuffer::new(model.embedding),
            model,
            part: None,
            pending_since: None,
            seq: 0,
            lease: None,
            parts: Vec::new(),
            rows_written: 0,
        })
    }

    /// Publish a part only while `lease` is held: a worker that lost its shard to
    /// another stops before it publishes rows the other one writes too.
    pub fn with_lease(mut self, lease: Option<LeaseWatch>) -> Self {
        self.lease = lease;
        self
    }

    fn properties(&self) -> WriterProperties {
        let level = ZstdLevel::try_new(self.opts.zstd_level).unwrap_or_default();
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(self.opts.row_group_rows))
            .set_created_by(format!("labelflow {}", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Add a row; encodes a row group when the buffer is full and publishes the part
    /// when it reaches its size or age limit.
    pub async fn push(&mut self, row: &Row) -> Result<()> {
        self.buffer.push(row, &self.model)?;
        self.pending_since.get_or_insert_with(Instant::now);
        if self.buffer.len >= self.opts.row_group_rows {
            self.write_buffer().await?;
        }
        self.tick().await
    }

    /// Publish the open part if it is due (full, or open longer than its age limit).
    /// Call it now and then even when no rows arrive, so rows do not wait in memory.
    pub async fn tick(&mut self) -> Result<()> {
        let rows = self.part.as_ref().map_or(0, |p| p.rows) + self.buffer.len;
        let full = rows >= self.opts.rows_per_part;
        let old = self
            .pending_since
            .is_some_and(|t| t.elapsed() >= self.max_age());
        if rows > 0 && (full || old) {
            self.write_buffer().await?;
            self.close_part().await?;
        }
        Ok(())
    }

    /// How long the current part may stay open.
    fn max_age(&self) -> Duration {
        let limit = Duration::from_secs(self.opts.flush_seconds);
        FIRST_FLUSH
            .checked_mul(1u32 << self.parts.len().min(16))
            .unwrap_or(limit)
            .min(limit)
    }

    /// Rows accepted but not yet published.
    pub fn pending_rows(&self) -> usize {
        self.part.as_ref().map_or(0, |p| p.rows) + self.buffer.len
    }

    async fn write_buffer(&mut self) -> Result<()> {
        if self.buffer.len == 0 {
            return Ok(());
        }
        let n = self.buffer.len;
        let batch = self.buffer.finish()?;
        if self.part.is_none() {
            let name = format!("{}-{:05}.parquet", self.name_prefix, self.seq);
            self.seq += 1;
            let path = Path::from(format!("{}/{name}", run_dir(&self.output, &self.run_id)));
            let object = BufWriter::new(self.output.store.clone(), path.clone());
            let writer = AsyncArrowWriter::try_new(
                object,
                self.buffer.schema.clone(),
                Some(self.properties()),
            )?;
            self.part = Some(OpenPart {
                path,
                writer,
                rows: 0,
            });
        }
        if let Some(part) = self.part.as_mut() {
            if let Err(e) = part.writer.write(&batch).await {
                return Err(self.output_error(e));
            }
            part.rows += n;
        }
        Ok(())
    }

    fn output_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Output {
            location: self.output.to_string(),
            reason: e.to_string(),
        }
    }

    async fn close_part(&mut self) -> Result<()> {
        if let (Some(lease), true) = (&self.lease, self.part.is_some()) {
            if let Err(e) = lease.check().await {
                // The open part is dropped unpublished (a multipart upload is never
                // completed; a local staging file is removed by the next run).
                self.part = None;
                return Err(e);
            }
        }
        if let Some(part) = self.part.take() {
            let uri = self.output.uri(&part.path);
            part.writer
                .close()
                .await
                .map_err(|e| self.output_error(e))?;
            self.rows_written += part.rows as u64;
            self.parts.push(uri);
            self.pending_since = None;
        }
        Ok(())
    }

    /// Publish everything buffered. Returns the number of rows written in total.
    pub async fn finish(mut self) -> Result<(u64, Vec<String>)> {
        self.write_buffer().await?;
        self.close_part().await?;
        Ok((self.rows_written, self.parts))
    }
}

/// Check up front that the output accepts writes (and remove the probe), so a bad
/// output fails before any image is processed.
pub async fn probe_writable(output: &Location) -> Result<()> {
    let path = output.child("_runs/.write-probe");
    output
        .store
        .put(&path, bytes::Bytes::from_static(b"ok").into())
        .await
        .map_err(|e| match crate::store::store_error(output, e) {
            Error::Store { source, .. } => Error::Output {
                location: output.to_string(),
                reason: format!("the output is not writable: {source}"),
            },
            other => other,
        })?;
    let _ = output.store.delete(&path).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_table_follows_the_schema() {
        let names: Vec<String> = schema::predictions()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let table: Vec<String> = COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, table);
    }

    fn obj(i: usize) -> ObjectRef {
        ObjectRef {
            path: Path::from(format!("in/{i}.jpg")),
            key: format!("{i}.jpg"),
            uri: format!("memory:///in/{i}.jpg"),
            size: 10,
            etag: Some("e".into()),
            version: None,
            last_modified: chrono::Utc::now(),
            origin: Default::default(),
        }
    }

    #[tokio::test]
    async fn parts_are_cut_and_resume_sees_their_uris() {
        let out = Location::memory();
        let model = ModelStamp {
            name: "m".into(),
            sha256: "00".into(),
            classes: Arc::new(vec!["a".into(), "b".into()]),
            embedding: None,
        };
        let opts = SinkOptions {
            rows_per_part: 4,
            row_group_rows: 2,
            ..SinkOptions::default()
        };
        let mut w = PartWriter::new(out.clone(), "r1", Shard::default(), opts, model).unwrap();
        for i in 0..10 {
            let row = Row {
                object: obj(i),
                width: Some(3),
                height: Some(4),
                top: if i == 3 {
                    vec![]
                } else {
                    vec![
                        Scored {
                            index: 1,
                            score: 0.9,
                        },
                        Scored {
                            index: 0,
                            score: 0.1,
                        },
                    ]
                },
                error: (i == 3).then(|| "bad".to_string()),
                labelled_at: chrono::Utc::now(),
                embedding: None,
            };
            w.push(&row).await.unwrap();
        }
        let (rows, parts) = w.finish().await.unwrap();
        assert_eq!(rows, 10);
        assert_eq!(parts.len(), 3, "{parts:?}");
        let seen = CommittedKeys::load(&out, "r1", Shard::default())
            .await
            .unwrap();
        assert_eq!(seen.len(), 10);
        assert!(seen.contains("memory:///in/3.jpg"));
        assert!(!seen.contains("memory:///in/10.jpg"));
        assert_eq!(seen.heap_bytes(), 10 * 16);
        let empty = CommittedKeys::load(&out, "r2", Shard::default())
            .await
            .unwrap();
        assert!(empty.is_empty());
        // Another shard's parts are not this shard's.
        let other = CommittedKeys::load(&out, "r1", Shard::new(1, 2).unwrap())
            .await
            .unwrap();
        assert!(other.is_empty());
    }

    #[test]
    fn run_ids_are_checked() {
        assert!(validate_run_id("2026-01-01_a").is_ok());
        assert!(validate_run_id("../x").is_err());
        assert!(validate_run_id("").is_err());
        validate_run_id(&new_run_id()).unwrap();
        // Two runs started in the same second still sort by start time.
        let first = new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_run_id() > first);
    }
}
