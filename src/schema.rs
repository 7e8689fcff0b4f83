//! The predictions schema: one row per object. These names are a public contract
//! (README, `sql/`, downstream readers); change them only with a version note.
//!
//! The run id is not a column inside the files: parts live under a Hive-style
//! `run_id=<id>/` folder, and readers (DataFusion, DuckDB, pyarrow, polars) expose it
//! as a column from the path.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub const URI: &str = "uri";
pub const KEY: &str = "key";
pub const ETAG: &str = "etag";
pub const VERSION: &str = "version";
pub const SIZE_BYTES: &str = "size_bytes";
pub const LAST_MODIFIED: &str = "last_modified";
pub const WIDTH: &str = "width";
pub const HEIGHT: &str = "height";
pub const LABEL: &str = "label";
pub const LABEL_INDEX: &str = "label_index";
pub const SCORE: &str = "score";
pub const TOP_K: &str = "top_k";
pub const MODEL: &str = "model";
pub const MODEL_SHA256: &str = "model_sha256";
pub const LABELLED_AT: &str = "labelled_at";
pub const ERROR: &str = "error";
/// With `--embeddings`: the L2-normalised feature vector (`FixedSizeList<Float16, D>`).
pub const EMBEDDING: &str = "embedding";
/// With `--embeddings`: the binary code of the embedding (`FixedSizeBinary(bits/8)`).
pub const CODE: &str = "code";
/// The partition column taken from the `run_id=<id>/` folder.
pub const RUN_ID: &str = "run_id";

/// Fields of one `top_k` entry.
pub fn top_k_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("index", DataType::Int32, false),
        Field::new("score", DataType::Float32, false),
    ])
}

/// The `top_k` list element field.
pub fn top_k_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(top_k_fields()), false))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The sizes of the optional embedding columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingColumns {
    /// Elements of `embedding`.
    pub dim: usize,
    /// Bytes of `code`.
    pub code_bytes: usize,
}

impl EmbeddingColumns {
    /// The two fields, nullable (failed images have none).
    pub fn fields(&self) -> [Field; 2] {
        [
            Field::new(
                EMBEDDING,
                DataType::FixedSizeList(embedding_item(), self.dim as i32),
                true,
            ),
            Field::new(
                CODE,
                DataType::FixedSizeBinary(self.code_bytes as i32),
                true,
            ),
        ]
    }

    /// The sizes of a schema's embedding columns, when it has both.
    pub fn of(schema: &Schema) -> Option<Self> {
        let dim = match schema.field_with_name(EMBEDDING).ok()?.data_type() {
            DataType::FixedSizeList(_, n) => usize::try_from(*n).ok()?,
            _ => return None,
        };
        let code_bytes = match schema.field_with_name(CODE).ok()?.data_type() {
            DataType::FixedSizeBinary(n) => usize::try_from(*n).ok()?,
            _ => return None,
        };
        Some(Self { dim, code_bytes })
    }
}

/// The element field of the `embedding` list: a half float.
pub fn embedding_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float16, false))
}

/// [`predictions`] with the embedding columns last, when a run writes them.
pub fn predictions_with(embedding: Option<EmbeddingColumns>) -> SchemaRef {
    let base = predictions();
    match embedding {
        None => base,
        Some(e) => {
            let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.extend(e.fields());
            Arc::new(Schema::new(fields))
        }
    }
}

/// The schema of every Parquet part file written by `labelflow run` without
/// `--embeddings`; with it, [`predictions_with`].
pub fn predictions() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(URI, DataType::Utf8, false),
        Field::new(KEY, DataType::Utf8, false),
        Field::new(ETAG, DataType::Utf8, true),
        Field::new(VERSION, DataType::Utf8, true),
        Field::new(SIZE_BYTES, DataType::Int64, false),
        Field::new(LAST_MODIFIED, timestamp(), true),
        Field::new(WIDTH, DataType::Int32, true),
        Field::new(HEIGHT, DataType::Int32, true),
        Field::new(LABEL, DataType::Utf8, true),
        Field::new(LABEL_INDEX, DataType::Int32, true),
        Field::new(SCORE, DataType::Float32, true),
        Field::new(TOP_K, DataType::List(top_k_item()), true),
        Field::new(MODEL, DataType::Utf8, false),
        Field::new(MODEL_SHA256, DataType::Utf8, false),
        Field::new(LABELLED_AT, timestamp(), false),
        Field::new(ERROR, DataType::Utf8, true),
    ]))
}

/// The files of a training job's output folder, which `labelflow report` reads back.
pub mod training_files {
    /// The exported model.
    pub const MODEL_FILE: &str = "model.onnx";
    /// The model card beside the model.
    pub const CARD_FILE: &str = "card.json";
    /// The per-epoch metrics.
    pub const METRICS_FILE: &str = "metrics.parquet";
}
