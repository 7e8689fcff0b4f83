//! Labelled images from any object-store URL: a folder-per-class tree
//! (`<root>/<class>/<image>`) or a manifest (CSV, JSON lines or Parquet with `uri` and
//! `label`),
//! a stable train/validation split, and loading through the batch job's decoder.
//!
//! Class indices follow the sorted class names (as torchvision's `ImageFolder`), so the
//! same data always gives the same label order. An image that cannot be fetched or
//! decoded is counted and skipped, never fatal; a dataset with no usable image or a
//! single class is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fast_image_resize::Resizer;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::decode::{decode, DecodeLimits, RgbImage};
use crate::error::TrainError;
use crate::preprocess::resize_rgb;
use crate::source::{self, Filter, ListingCounters, Selection};
use crate::store::{Access, Location, RetryPolicy};
use crate::Result;

/// One labelled image, not yet fetched.
#[derive(Debug, Clone)]
pub struct Item {
    /// Full URI, for messages and the card.
    pub uri: String,
    /// Key used for the train/validation split (relative to the data root, or the
    /// manifest's `uri` as written).
    pub key: String,
    /// Class name as found in the folder name or the manifest.
    pub label: String,
    loc: Arc<Location>,
    path: ObjectPath,
}

/// The labelled images found at one URL.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The URL given.
    pub source: String,
    pub items: Vec<Item>,
}

impl Listing {
    /// The sorted, distinct class names.
    pub fn class_names(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.items.iter().map(|i| i.label.as_str()).collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

/// Whether `url` names a manifest rather than a folder.
pub fn is_manifest(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let lower = lower.split(['?', '#']).next().unwrap_or_default();
    lower.ends_with(".csv")
        || lower.ends_with(".jsonl")
        || lower.ends_with(".ndjson")
        || lower.ends_with(".parquet")
}

/// Lists the labelled images at `url` (folder-per-class or manifest).
pub async fn list(url: &str) -> Result<Listing> {
    if is_manifest(url) {
        return list_manifest(url).await;
    }
    let loc = Arc::new(Location::parse(url, Access::Read, RetryPolicy::default())?);
    let filter = Filter::new(&Selection::default())?;
    let counters = Arc::new(ListingCounters::default());
    let objects: Vec<_> = source::list(&loc, filter, None, counters)
        .try_collect()
        .await?;
    let mut items = Vec::new();
    let mut unlabelled = 0usize;
    for obj in objects {
        // The class is the first folder below the root; files directly in the root
        // carry no label.
        match obj.key.split_once('/') {
            Some((class, rest)) if !class.is_empty() && !rest.is_empty() => items.push(Item {
                uri: obj.uri.clone(),
                key: obj.key.clone(),
                label: class.to_owned(),
                loc: loc.clone(),
                path: obj.path,
            }),
            _ => unlabelled += 1,
        }
    }
    if unlabelled > 0 {
        tracing::warn!(
            unlabelled,
            root = url,
            "images directly under the data root have no class folder and are ignored"
        );
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Listing {
        source: url.to_owned(),
        items,
    })
}

async fn list_manifest(url: &str) -> Result<Listing> {
    let unreadable =
        |reason: String| TrainError::Data(format!("cannot read manifest {url}: {reason}"));
    let loc = Location::parse(url, Access::Read, RetryPolicy::default())?;
    let bytes = match loc.store.get(&loc.prefix).await {
        Ok(got) => got.bytes().await.map_err(|e| unreadable(e.to_string()))?,
        Err(e) => return Err(unreadable(e.to_string()).into()),
    };
    let lower = url.to_ascii_lowercase();
    let rows = if lower.contains(".parquet") {
        parse_parquet(bytes)
    } else {
        let text =
            std::str::from_utf8(&bytes).map_err(|e| unreadable(format!("not UTF-8 text ({e})")))?;
        if lower.contains(".jsonl") || lower.contains(".ndjson") {
            parse_jsonl(text)
        } else {
            parse_csv(text)
        }
    }
    .map_err(unreadable)?;

    // Relative URIs resolve against the manifest's folder in the same store.
    let manifest_dir = {
        let p = loc.prefix.as_ref();
        p.rsplit_once('/')
            .map(|(d, _)| d.to_owned())
            .unwrap_or_default()
    };
    let base = Arc::new(Location::from_store(
        loc.store.clone(),
        loc.root.clone(),
        &manifest_dir,
    ));
    let mut by_dir: HashMap<String, Arc<Location>> = HashMap::new();
    let mut items = Vec::with_capacity(rows.len());
    for (line, uri, label) in rows {
        let (item_loc, path, full) = if uri.contains("://") || uri.starts_with('/') {
            let (dir, name) = uri
                .rsplit_once('/')
                .ok_or_else(|| unreadable(format!("line {line}: {uri:?} names no file")))?;
            let dir_key = if dir.is_empty() { "/" } else { dir };
            let l = match by_dir.get(dir_key) {
                Some(l) => l.clone(),
                None => {
                    let l = Arc::new(
                        Location::parse(dir_key, Access::Read, RetryPolicy::default())
                            .map_err(|e| unreadable(format!("line {line}: {e}")))?,
                    );
                    by_dir.insert(dir_key.to_owned(), l.clone());
                    l
                }
            };
            let path = l.child(name);
            let full = l.uri(&path);
            (l, path, full)
        } else {
            let path = base.child(&uri);
            (base.clone(), path.clone(), base.uri(&path))
        };
        items.push(Item {
            uri: full,
            key: uri,
            label,
            loc: item_loc,
            path,
        });
    }
    Ok(Listing {
        source: url.to_owned(),
        items,
    })
}

/// `(line number, uri, label)` rows of a CSV manifest with a header naming `uri` and
/// `label` (other columns ignored; rows with an empty label skipped).
pub fn parse_csv(text: &str) -> std::result::Result<Vec<(usize, String, String)>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err("the file is empty; expected a header line `uri,label`".into());
    };
    let header = split_csv_line(header.trim_start_matches('\u{feff}'))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("the header {header:?} has no `{name}` column; expected `uri,label`")
            })
    };
    let (ui, li) = (col("uri")?, col("label")?);
    let mut rows = Vec::new();
    for (n, line) in lines {
        let fields = split_csv_line(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let get = |i: usize| {
            fields
                .get(i)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let (uri, label) = (get(ui), get(li));
        if uri.is_empty() {
            return Err(format!("line {}: empty uri", n + 1));
        }
        if !label.is_empty() {
            rows.push((n + 1, uri, label));
        }
    }
    Ok(rows)
}

fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// `(line number, uri, label)` rows of a JSON-lines manifest (`{"uri": …, "label": …}`
/// per line; a null or missing label skips the row).
pub fn parse_jsonl(text: &str) -> std::result::Result<Vec<(usize, String, String)>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let uri = v
            .get("uri")
            .and_then(|u| u.as_str())
            .ok_or_else(|| format!("line {}: no string field `uri`", n + 1))?;
        match v.get("label") {
            Some(serde_json::Value::String(l)) if !l.trim().is_empty() => {
                rows.push((n + 1, uri.to_owned(), l.trim().to_owned()))
            }
            Some(serde_json::Value::Number(l)) => rows.push((n + 1, uri.to_owned(), l.to_string())),
            _ => {}
        }
    }
    if rows.is_empty() {
        return Err("no labelled rows (`uri` and `label` per line)".into());
    }
    Ok(rows)
}

/// `(row number, uri, label)` rows of a Parquet manifest with columns `uri` and
/// `label` (any type that casts to text, e.g. strings or integers; other columns
/// ignored; rows with a null or empty label skipped). The `relabel_candidates` query's
/// output, labels filled in, is such a file.
pub fn parse_parquet(
    bytes: bytes::Bytes,
) -> std::result::Result<Vec<(usize, String, String)>, String> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| format!("not a Parquet file ({e})"))?;
    let schema = builder.schema().clone();
    let col = |name: &str| {
        schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                format!("the columns {names:?} have no `{name}`; expected `uri` and `label`")
            })
    };
    let (ui, li) = (col("uri")?, col("label")?);
    let reader = builder.build().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let text = |i: usize| {
            arrow::compute::cast(batch.column(i), &DataType::Utf8).map_err(|e| {
                format!(
                    "column `{}` cannot be read as text ({e})",
                    schema.field(i).name()
                )
            })
        };
        let (uris, labels) = (text(ui)?, text(li)?);
        let (uris, labels) = (uris.as_string::<i32>(), labels.as_string::<i32>());
        for i in 0..batch.num_rows() {
            row += 1;
            if uris.is_null(i) || uris.value(i).trim().is_empty() {
                return Err(format!("row {row}: empty uri"));
            }
            if labels.is_null(i) || labels.value(i).trim().is_empty() {
                continue;
            }
            rows.push((
                row,
                uris.value(i).trim().to_owned(),
                labels.value(i).trim().to_owned(),
            ));
        }
    }
    Ok(rows)
}

/// 64-bit FNV-1a ([`crate::stable::fnv1a64`]): a hash that never changes between
/// runs, machines or versions.
fn stable_hash(key: &str) -> u64 {
    crate::stable::fnv1a64(key.as_bytes())
}

/// Whether the image with split key `key` is held out for validation when
/// `percent` per cent are.
pub fn is_validation(key: &str, percent: u32) -> bool {
    stable_hash(key) % 100 < u64::from(percent)
}

/// Checks a training listing can train a classifier and returns its class names.
pub fn check_classes(listing: &Listing) -> Result<Vec<String>> {
    if listing.items.is_empty() {
        return Err(TrainError::Data(format!(
            "no labelled images found at {}: expected <root>/<class>/<image> (jpg, png, webp, …) or a uri,label manifest (.csv, .jsonl, .parquet)",
            listing.source
        ))
        .into());
    }
    let classes = listing.class_names();
    if classes.len() < 2 {
        return Err(TrainError::Data(format!(
            "only one class ({:?}, {} images) found at {}: a classifier needs at least two classes",
            classes.first().cloned().unwrap_or_default(),
            listing.items.len(),
            listing.source
        ))
        .into());
    }
    Ok(classes)
}

/// A decoded, labelled image held in memory for the run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub label: usize,
    /// Upright RGB8; images whose shorter side exceeds the training resize are stored
    /// already reduced to it (the batch job's resize, so evaluation is unchanged).
    pub image: RgbImage,
}

/// What loading a set of items gave.
#[derive(Debug, Default)]
pub struct Loaded {
    pub samples: Vec<Sample>,
    /// `(uri, reason)` of every image that could not be fetched or decoded.
    pub skipped: Vec<(String, String)>,
}

/// Fetches and decodes `items` (`concurrency` at a time, in order), labelling them by
/// index in `classes`. Items whose label is not in `classes` are an error (naming the
/// label); unreadable images are skipped.
pub async fn load(
    items: &[Item],
    classes: &[String],
    resize: u32,
    concurrency: usize,
    loaded_counter: Option<Arc<AtomicU64>>,
) -> Result<Loaded> {
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut labelled = Vec::with_capacity(items.len());
    for it in items {
        let Some(&label) = index.get(it.label.as_str()) else {
            return Err(TrainError::Data(format!(
                "{} is labelled {:?}, which is not one of the training classes {classes:?}",
                it.uri, it.label
            ))
            .into());
        };
        labelled.push((it, label));
    }
    let results: Vec<(String, std::result::Result<Sample, String>)> =
        futures::stream::iter(labelled)
            .map(|(it, label)| {
                let counter = loaded_counter.clone();
                async move {
                    let got = match it.loc.store.get(&it.path).await {
                        Ok(r) => r.bytes().await.map_err(|e| format!("fetch failed: {e}")),
                        Err(e) => Err(format!("fetch failed: {e}")),
                    };
                    let out = match got {
                        Ok(bytes) => tokio::task::spawn_blocking(move || {
                            decode(&bytes, DecodeLimits::default())
                                .map_err(|e| e.to_string())
                                .and_then(|img| shrink(img, resize))
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("decode task failed: {e}")))
                        .map(|image| Sample { label, image }),
                        Err(e) => Err(e),
                    };
                    if let Some(c) = counter {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    (it.uri.clone(), out)
                }
            })
            .buffered(concurrency)
            .collect()
            .await;
    let mut loaded = Loaded::default();
    for (uri, r) in results {
        match r {
            Ok(s) => loaded.samples.push(s),
            Err(reason) => {
                tracing::warn!(uri = %uri, reason = %reason, "skipping an image that cannot be read");
                loaded.skipped.push((uri, reason));
            }
        }
    }
    Ok(loaded)
}

/// Reduces `img` so its shorter side is `resize` when it is longer, with the same
/// resampling as the batch job's preprocessing (so resizing again is a no-op there).
fn shrink(img: RgbImage, resize: u32) -> std::result::Result<RgbImage, String> {
    let short = img.width.min(img.height);
    if short <= resize {
        return Ok(img);
    }
    let spec = crate::preprocess::PreprocessSpec {
        resize,
        crop: resize,
        ..Default::default()
    };
    let (w, h) = spec.resized_size(img.width, img.height);
    let pixels = resize_rgb(
        &mut Resizer::new(),
        &img.pixels,
        (img.width, img.height),
        (w, h),
    )?;
    Ok(RgbImage {
        width: w,
        height: h,
        pixels,
    })
}

/// Images per class, by class name (for the card).
pub fn counts_per_class(samples: &[Sample], classes: &[String]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = classes.iter().map(|c| (c.clone(), 0)).collect();
    for s in samples {
        if let Some(c) = classes.get(s.label) {
            *counts.entry(c.clone()).or_default() += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_manifest_reads_uri_and_label_in_any_order() {
        let rows =
            parse_csv("label,uri,extra\ncat,\"a,1.jpg\",x\n,b.jpg,y\ndog,c.jpg,z\n").unwrap();
        assert_eq!(
            rows,
            vec![
                (2, "a,1.jpg".to_owned(), "cat".to_owned()),
                (4, "c.jpg".to_owned(), "dog".to_owned())
            ]
        );
        let err = parse_csv("path,class\na.jpg,cat\n").unwrap_err();
        assert!(err.contains("`uri`"), "{err}");
        assert!(parse_csv("").unwrap_err().contains("empty"));
    }

    #[test]
    fn jsonl_manifest_skips_unlabelled_rows() {
        let rows = parse_jsonl(
            "{\"uri\":\"a.png\",\"label\":\"x\"}\n{\"uri\":\"b.png\",\"label\":null}\n",
        )
        .unwrap();
        assert_eq!(rows, vec![(1, "a.png".to_owned(), "x".to_owned())]);
        assert!(parse_jsonl("{\"label\":\"x\"}")
            .unwrap_err()
            .contains("uri"));
    }

    fn parquet_bytes(batch: arrow::record_batch::RecordBatch) -> bytes::Bytes {
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        bytes::Bytes::from(buf)
    }

    #[test]
    fn parquet_manifest_reads_uri_and_label_columns() {
        use arrow::array::{ArrayRef, Float32Array, Int64Array, StringArray};
        use arrow::record_batch::RecordBatch;
        // The relabel_candidates layout, with labels filled in for two of three rows.
        let batch = RecordBatch::try_from_iter([
            (
                "uri",
                std::sync::Arc::new(StringArray::from(vec!["s3://b/a.jpg", "b.jpg", "c.jpg"]))
                    as ArrayRef,
            ),
            (
                "label",
                std::sync::Arc::new(StringArray::from(vec![Some("cat"), Some(""), Some("dog")])),
            ),
            (
                "predicted_label",
                std::sync::Arc::new(StringArray::from(vec![None, Some("x"), None::<&str>])),
            ),
            (
                "score",
                std::sync::Arc::new(Float32Array::from(vec![0.1, 0.2, 0.3])),
            ),
        ])
        .unwrap();
        assert_eq!(
            parse_parquet(parquet_bytes(batch)).unwrap(),
            vec![
                (1, "s3://b/a.jpg".to_owned(), "cat".to_owned()),
                (3, "c.jpg".to_owned(), "dog".to_owned())
            ]
        );
        // Integer labels are read as their decimal text.
        let ints = RecordBatch::try_from_iter([
            (
                "URI",
                std::sync::Arc::new(StringArray::from(vec!["a.png"])) as ArrayRef,
            ),
            ("label", std::sync::Arc::new(Int64Array::from(vec![7]))),
        ])
        .unwrap();
        assert_eq!(
            parse_parquet(parquet_bytes(ints)).unwrap(),
            vec![(1, "a.png".to_owned(), "7".to_owned())]
        );
        let wrong = RecordBatch::try_from_iter([(
            "path",
            std::sync::Arc::new(StringArray::from(vec!["a.png"])) as ArrayRef,
        )])
        .unwrap();
        let err = parse_parquet(parquet_bytes(wrong)).unwrap_err();
        assert!(err.contains("`uri`") && err.contains("path"), "{err}");
        let err = parse_parquet(bytes::Bytes::from_static(b"uri,label\n")).unwrap_err();
        assert!(err.contains("not a Parquet file"), "{err}");
    }

    #[test]
    fn split_is_stable_and_near_the_requested_share() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("class/{i:05}.png")).collect();
        let val = keys.iter().filter(|k| is_validation(k, 10)).count();
        assert!((800..1200).contains(&val), "{val}");
        // Pinned: a change would move images between the training and validation sets.
        assert_eq!(stable_hash("trouser/00001.png"), 0x2901_7a43_e73e_b98a);
        assert!(!is_validation("trouser/00001.png", 62));
        assert!(is_validation("trouser/00001.png", 63));
        assert!(is_manifest("s3://b/labels.CSV") && !is_manifest("s3://b/labels/"));
        assert!(is_manifest("s3://b/relabel.parquet"));
    }
}
