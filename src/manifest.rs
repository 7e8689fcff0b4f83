//! URL lists as input: a Parquet, CSV/TSV or JSON-lines file with a `uri` (or `url`)
//! column, one object per row. Rows may name objects in different buckets, stores and
//! web hosts; each store is built once and each host gets its own bound on requests in
//! flight. The file is read as a stream (one record batch at a time), so a manifest
//! of millions of rows is never held whole. Other columns are ignored: join back on
//! `uri` in SQL (`labelflow query --table manifest=FILE`).

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;

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

/// The manifest's URI column as a stream of record batches (one `uri` column of
/// text), read with the format's own reader: Parquet by ranged reads of that column
/// only, CSV/TSV and JSON lines decoded as the bytes arrive.
async fn open(manifest: &Location) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    let format = Format::of(manifest.prefix.as_ref()).ok_or_else(|| {
        Error::Input(format!(
            "{manifest} is not a manifest: name a .parquet, .csv, .tsv or .jsonl file"
        ))
    })?;
    let what = manifest.to_string();
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::Input(format!("cannot read the manifest {manifest}: {e}"))
    };
    let batches = match format {
        Format::Parquet => {
            // Ranged reads need the size: the footer is read first.
            let meta = manifest
                .store
                .head(&manifest.prefix)
                .await
                .map_err(|e| unreadable(&e))?;
            let reader = crate::dataset::PartReader::new(manifest, &meta);
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| unreadable(&e))?;
            let names = field_names(builder.schema());
            let column = uri_column(&what, &names)?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), [column]);
            builder
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| unreadable(&e))?
                .map_err(|e| e.to_string())
                .boxed()
        }
        Format::Csv | Format::Tsv => {
            let delimiter = if format == Format::Tsv { b'\t' } else { b',' };
            let mut bytes = body(manifest).await.map_err(|e| unreadable(&e))?;
            // The header: the first line, however many chunks it spans.
            let head = read_head(&mut bytes, |head| head.contains(&b'\n'))
                .await
                .map_err(|e| unreadable(&e))?;
            let (inferred, _) = arrow::csv::reader::Format::default()
                .with_header(true)
                .with_delimiter(delimiter)
                .infer_schema(std::io::Cursor::new(&head), Some(0))
                .map_err(|e| unreadable(&e))?;
            let names = field_names(&inferred);
            let column = uri_column(&what, &names)?;
            // Every column as text: only the URIs are kept, and nothing is guessed.
            let text = Schema::new(
                names
                    .iter()
                    .map(|n| Field::new(*n, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            );
            let decoder = arrow::csv::ReaderBuilder::new(Arc::new(text))
                .with_header(true)
                .with_delimiter(delimiter)
                .with_batch_size(BATCH_ROWS)
                .with_projection(vec![column])
                .build_decoder();
            let chunks = stream::iter([Ok(bytes::Bytes::from(head))]).chain(bytes);
            decoded(chunks, CsvLike(decoder)).boxed()
        }
        Format::JsonLines => {
            let mut bytes = body(manifest).await.map_err(|e| unreadable(&e))?;
            // The field names of the first lines (up to 1 MiB of them).
            let head = read_head(&mut bytes, |head| head.len() >= 1 << 20)
                .await
                .map_err(|e| unreadable(&e))?;
            let complete = match head.iter().rposition(|&b| b == b'\n') {
                Some(end) if head.len() >= 1 << 20 => &head[..end],
                _ => &head[..],
            };
            let (inferred, _) =
                arrow::json::reader::infer_json_schema(std::io::Cursor::new(complete), None)
                    .map_err(|e| unreadable(&e))?;
            let names = field_names(&inferred);
            let column = uri_column(&what, &names)?;
            let name = names[column].to_string();
            let decoder = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(vec![Field::new(
                name,
                DataType::Utf8,
                true,
            )])))
            .with_batch_size(BATCH_ROWS)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| unreadable(&e))?;
            let chunks = stream::iter([Ok(bytes::Bytes::from(head))]).chain(bytes);
            decoded(chunks, JsonLike(decoder)).boxed()
        }
    };
    Ok(batches
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

/// Rows per record batch read from a manifest.
const BATCH_ROWS: usize = 8192;

/// The index of the column of object URLs: `uri`, else `url`, in any case.
fn uri_column(manifest: &str, names: &[&str]) -> Result<usize> {
    ["uri", "url"]
        .iter()
        .find_map(|want| names.iter().position(|n| n.eq_ignore_ascii_case(want)))
        .ok_or_else(|| {
            Error::Input(format!(
                "the manifest {manifest} has no `uri` column (nor `url`); its columns are: {}; \
                 name the column of object URLs `uri`",
                names.join(", ")
            ))
        })
}

/// The names of a schema's top-level fields.
fn field_names(schema: &Schema) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

/// The first chunks of `bytes`, until `enough` says so or the bytes end; the rest of
/// the stream is left in `bytes`.
async fn read_head(
    bytes: &mut BoxStream<'static, object_store::Result<bytes::Bytes>>,
    enough: impl Fn(&[u8]) -> bool,
) -> object_store::Result<Vec<u8>> {
    let mut head = Vec::new();
    while !enough(&head) {
        match bytes.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => break,
        }
    }
    Ok(head)
}

/// The manifest file's bytes as they arrive (one GET).
async fn body(
    manifest: &Location,
) -> object_store::Result<BoxStream<'static, object_store::Result<bytes::Bytes>>> {
    Ok(manifest.store.get(&manifest.prefix).await?.into_stream())
}

/// A push decoder of text rows (arrow's CSV and JSON decoders have the same shape).
trait RowDecoder: Send + 'static {
    /// Take bytes; how many were used (fewer once a batch is full).
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, String>;
    /// The rows decoded so far, as a batch.
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, String>;
}

struct CsvLike(arrow::csv::reader::Decoder);
impl RowDecoder for CsvLike {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, String> {
        self.0.decode(buf).map_err(|e| e.to_string())
    }
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, String> {
        self.0.flush().map_err(|e| e.to_string())
    }
}

struct JsonLike(arrow::json::reader::Decoder);
impl RowDecoder for JsonLike {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, String> {
        self.0.decode(buf).map_err(|e| e.to_string())
    }
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, String> {
        self.0.flush().map_err(|e| e.to_string())
    }
}

/// Feed `chunks` through `decoder`, yielding a batch each time one fills and the rest
/// at the end of the bytes.
fn decoded<S, D>(
    chunks: S,
    decoder: D,
) -> impl futures::Stream<Item = std::result::Result<RecordBatch, String>> + Send + 'static
where
    S: futures::Stream<Item = object_store::Result<bytes::Bytes>> + Send + Unpin + 'static,
    D: RowDecoder,
{
    struct State<S, D> {
        chunks: S,
        decoder: D,
        buffered: bytes::Bytes,
        ended: bool,
    }
    let state = State {
        chunks,
        decoder,
        buffered: bytes::Bytes::new(),
        ended: false,
    };
    stream::try_unfold(state, |mut st| async move {
        loop {
            if st.ended {
                return Ok(None);
            }
            if st.buffered.is_empty() {
                match st.chunks.next().await {
                    Some(chunk) => {
                        st.buffered = chunk.map_err(|e| e.to_string())?;
                        continue;
                    }
                    None => {
                        // The end of the bytes: the last row, if it had no newline.
                        st.decoder.decode(&[])?;
                        st.ended = true;
                        return Ok(st.decoder.flush()?.map(|b| (b, st)));
                    }
                }
            }
            let used = st.decoder.decode(&st.buffered)?;
            let _ = st.buffered.split_to(used);
            if !st.buffered.is_empty() {
                // The batch is full: hand it on, then go on with the rest.
                match st.decoder.flush()? {
                    Some(batch) => return Ok(Some((batch, st))),
                    None if used == 0 => return Err("the reader took no bytes".to_string()),
                    None => {}
                }
            }
        }
    })
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
    use crate::store::{Access, RetryPolicy};

    /// The URIs `open` reads from a manifest file named `name` holding `bytes`.
    async fn uris(name: &str, bytes: &[u8]) -> Result<Vec<Option<String>>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let location =
            Location::parse(path.to_str().unwrap(), Access::Read, RetryPolicy::default())?;
        let batches: Vec<RecordBatch> = open(&location).await?.try_collect().await?;
        Ok(batches.iter().flat_map(uri_values).collect())
    }

    fn some(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[tokio::test]
    async fn csv_and_tsv_keep_quoted_text_and_ignore_other_columns() {
        let csv = b"label,URI\n3,\"s3://b/a,b.jpg\"\ncat,https://h/x.jpg?sig=1#frag\n,\n\"x\",s3://b/100%25.jpg";
        assert_eq!(
            uris("list.csv", csv).await.unwrap(),
            [
                Some("s3://b/a,b.jpg".to_string()),
                Some("https://h/x.jpg?sig=1#frag".to_string()),
                None,
                Some("s3://b/100%25.jpg".to_string()),
            ]
        );
        let tsv = b"url\tnote\ns3://b/1.jpg\ta, b\ns3://b/2.jpg\t\n";
        assert_eq!(
            uris("list.tsv", tsv).await.unwrap(),
            some(&["s3://b/1.jpg", "s3://b/2.jpg"])
        );
    }

    #[tokio::test]
    async fn json_lines_read_the_uri_field_whatever_else_a_line_holds() {
        let jsonl = b"{\"uri\": \"s3://b/1.jpg\", \"n\": 1}\n{\"n\": 2}\n{\"uri\": \"s3://b/2.jpg\", \"tags\": [\"a\"]}";
        assert_eq!(
            uris("list.jsonl", jsonl).await.unwrap(),
            [
                Some("s3://b/1.jpg".to_string()),
                None,
                Some("s3://b/2.jpg".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn parquet_reads_only_the_uri_column_in_batches() {
        let n = BATCH_ROWS + 5;
        let keys: Vec<String> = (0..n).map(|i| format!("s3://b/{i}.jpg")).collect();
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(arrow::array::Int64Array::from_iter_values(0..n as i64))
                    as arrow::array::ArrayRef,
            ),
            (
                "Uri",
                Arc::new(arrow::array::StringArray::from(keys.clone())),
            ),
        ])
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let got = uris("list.parquet", &bytes).await.unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(got[n - 1].as_deref(), Some(keys[n - 1].as_str()));
    }

    #[tokio::test]
    async fn a_manifest_without_a_uri_column_names_its_columns() {
        let err = uris("list.csv", b"path,label\na.jpg,cat\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no `uri` column") && err.contains("path, label"),
            "{err}"
        );
        let err = uris("empty.csv", b"").await.unwrap_err().to_string();
        assert!(err.contains("no `uri` column"), "{err}");
    }

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
