//! URL lists as input: a Parquet, CSV/TSV or JSON-lines file with a `uri` (or `url`)
//! column, one object per row. Rows may name objects in different buckets, stores and
//! web hosts; each store is built once and each host gets its own bound on requests in
//! flight. The file is read as a stream (one record batch at a time), so a manifest
//! of millions of rows is never held whole. Other columns are ignored: join back on
//! `uri` in SQL (`labelflow query --table manifest=FILE`).

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;

use crate::error::{Error, Result};
pub use crate::hosts::{Host, Hosts, MAX_OPEN_HOSTS};
use crate::source::{Filter, ListingCounters, ObjectRef, Origin, Verdict};
use crate::store::Location;

/// The file formats read as manifests, by extension of the input's last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    Tsv,
    JsonLines,
}

impl Format {
    /// The manifest format of an input path or URL, from its extension; `None` for
    /// a folder or prefix (or an image: those are labelled, not read as a list).
    pub fn of(path: &str) -> Option<Self> {
        let name = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "parquet" => Self::Parquet,
            "csv" => Self::Csv,
            "tsv" => Self::Tsv,
            "jsonl" | "ndjson" | "json" => Self::JsonLines,
            _ => return None,
        })
    }

    /// The extension DataFusion is told to read.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Tsv => "tsv",
            Self::JsonLines => "jsonl",
        }
    }
}

/// Whether `input` (a parsed `--input`) is a manifest rather than a prefix to list.
pub fn is_manifest(input: &Location) -> bool {
    Format::of(input.prefix.as_ref()).is_some()
}

/// Stream the selected rows of the manifest at `manifest` as objects to label, in
/// the file's order. A row whose URI cannot be fetched (not a URL, a store that
/// cannot be built) is still yielded, with [`Origin::Invalid`], so it
/// becomes an error row.
pub fn list<'a>(
    manifest: &'a Location,
    hosts: Arc<Hosts>,
    filter: Filter,
    limit: Option<u64>,
    counters: Arc<ListingCounters>,
) -> BoxStream<'a, Result<ObjectRef>> {
    use std::sync::atomic::Ordering::Relaxed;
    let uris = stream::once(open(manifest))
        .try_flatten()
        .map_ok(|batch| stream::iter(uri_values(&batch).into_iter().map(Ok)))
        .try_flatten();
    let c = counters.clone();
    let selected = uris.try_filter_map(move |uri: Option<String>| {
        let picked = match uri.as_deref().map(str::trim) {
            None | Some("") => {
                c.listed.fetch_add(1, Relaxed);
                c.no_uri.fetch_add(1, Relaxed);
                None
            }
            Some(uri) => {
                let verdict = filter.manifest_verdict(uri);
                c.count(verdict);
                (verdict == Verdict::Selected).then(|| object(&hosts, uri))
            }
        };
        async move { Ok(picked) }
    });
    crate::source::finish_listing(selected.boxed(), limit, counters)
}

fn object(hosts: &Hosts, uri: &str) -> ObjectRef {
    let (path, origin) = match hosts.resolve(uri) {
        Ok((host, path)) => (path, Origin::Store(host)),
        Err(why) => (Path::default(), Origin::Invalid(why.into())),
    };
    ObjectRef {
        path,
        key: uri.to_string(),
        uri: uri.to_string(),
        size: 0,
        etag: None,
        version: None,
        last_modified: chrono::DateTime::UNIX_EPOCH,
        origin,
    }
}

/// The manifest's URI column as a stream of record batches (one column).
async fn open(manifest: &Location) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    let format = Format::of(manifest.prefix.as_ref()).ok_or_else(|| {
        Error::Input(format!(
            "{manifest} is not a manifest: name a .parquet, .csv, .tsv or .jsonl file"
        ))
    })?;
    // One partition: the rows come in the file's order, one batch at a time.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    crate::query::register_file(&ctx, "manifest", manifest, format.extension())
        .await
        .map_err(|e| Error::Input(format!("cannot read the manifest {manifest}: {e}")))?;
    let df = ctx
        .table("manifest")
        .await
        .map_err(|e| Error::Input(format!("the manifest {manifest}: {e}")))?;
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let column = ["uri", "url"]
        .iter()
        .find_map(|want| names.iter().find(|n| n.eq_ignore_ascii_case(want)))
        .ok_or_else(|| {
            Error::Input(format!(
                "the manifest {manifest} has no `uri` column (nor `url`); its columns are: {}; \
                 name the column of object URLs `uri`",
                names.join(", ")
            ))
        })?
        .clone();
    let df = df
        .select(vec![datafusion::prelude::ident(column)])
        .map_err(|e| Error::Input(format!("the manifest {manifest}: {e}")))?;
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| Error::Input(format!("cannot read the manifest {manifest}: {e}")))?;
    let what = manifest.to_string();
    Ok(stream
        .map(move |batch| {
            let batch =
                batch.map_err(|e| Error::Input(format!("reading the manifest {what}: {e}")))?;
            let strings = arrow::compute::cast(batch.column(0), &DataType::Utf8)
                .map_err(|e| Error::Input(format!("the manifest {what}: the uri column: {e}")))?;
            RecordBatch::try_from_iter([("uri", strings)])
                .map_err(|e| Error::Input(format!("the manifest {what}: {e}")))
        })
        .boxed())
}

/// The batch's URIs (`None` for a null).
fn uri_values(batch: &RecordBatch) -> Vec<Option<String>> {
    let Some(column) = batch.column(0).as_string_opt::<i32>() else {
        return Vec::new();
    };
    (0..column.len())
        .map(|i| (!column.is_null(i)).then(|| column.value(i).to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(
            Format::of("s3://b/lists/todo.parquet"),
            Some(Format::Parquet)
        );
        assert_eq!(Format::of("todo.CSV"), Some(Format::Csv));
        assert_eq!(Format::of("a/b.ndjson"), Some(Format::JsonLines));
        assert_eq!(Format::of("s3://b/photos/"), None);
        assert_eq!(Format::of("photos/cat.jpg"), None);
    }
}
