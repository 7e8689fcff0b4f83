//! Query results into one Parquet file at a path or bucket URL, streamed: no more than
//! one record batch is held, and the file appears only when complete.

use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::store::{Access, Location, RetryPolicy};

fn query_err(e: datafusion::error::DataFusionError) -> Error {
    Error::Query(e.to_string())
}

/// Stream a result into one Parquet file at `out` (a path or a bucket URL); returns
/// the number of rows and the file's URL. The file appears only when complete.
pub async fn write_parquet(
    mut stream: SendableRecordBatchStream,
    out: &str,
) -> Result<(u64, String)> {
    let (dir, name) = split_out(out)?;
    let folder = Location::parse(&dir, Access::Write, RetryPolicy::default())?;
    let path = folder.child(&name);
    let url = folder.uri(&path);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let object = BufWriter::new(folder.store.clone(), path);
    let mut writer = AsyncArrowWriter::try_new(object, stream.schema(), Some(props))?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(query_err)?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await.map_err(|e| Error::Output {
            location: url.clone(),
            reason: e.to_string(),
        })?;
    }
    writer.close().await.map_err(|e| Error::Output {
        location: url.clone(),
        reason: e.to_string(),
    })?;
    Ok((rows, url))
}

/// Split an output URL or path into its folder and file name.
fn split_out(out: &str) -> Result<(String, String)> {
    let invalid = |reason: &str| Error::InvalidLocation {
        location: out.to_string(),
        reason: reason.to_string(),
    };
    if out.ends_with('/') {
        return Err(invalid(
            "--out names a file, e.g. s3://bucket/reports/x.parquet, not a folder",
        ));
    }
    if out.contains("://") {
        let (dir, name) = out
            .rsplit_once('/')
            .ok_or_else(|| invalid("no file name"))?;
        if dir.ends_with(':') || dir.ends_with(":/") {
            return Err(invalid("no file name after the bucket"));
        }
        Ok((dir.to_string(), name.to_string()))
    } else {
        let p = std::path::Path::new(out);
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid("no file name"))?;
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_string_lossy().into_owned(),
            _ => ".".to_string(),
        };
        Ok((dir, name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_urls_split_into_folder_and_file() {
        assert_eq!(
            split_out("s3://b/reports/x.parquet").unwrap(),
            ("s3://b/reports".into(), "x.parquet".into())
        );
        assert_eq!(
            split_out("x.parquet").unwrap(),
            (".".into(), "x.parquet".into())
        );
        assert!(split_out("s3://b/reports/").is_err());
    }
}
