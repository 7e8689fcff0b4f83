//! A `labelflow train` output folder as the page shows it: the per-epoch curves of
//! `metrics.parquet` and the basics of `card.json`. Read with the Parquet reader and
//! serde alone, so builds without the training feature report on it too.

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};

pub use crate::schema::training_files::{CARD_FILE, METRICS_FILE};

/// One epoch's figures; a column missing from the file is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Epoch {
    pub epoch: f64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub train_top1: Option<f64>,
    pub val_top1: Option<f64>,
    pub train_top5: Option<f64>,
    pub val_top5: Option<f64>,
    pub lr: Option<f64>,
}

/// What the page shows of a training folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Training {
    pub dir: String,
    pub epochs: Vec<Epoch>,
    /// `(name, value)` lines from `card.json`, in a fixed order; empty without a card.
    pub card: Vec<(String, String)>,
    /// Why `card.json` could not be read, when it exists but is not usable.
    pub card_problem: Option<String>,
}

/// Read `dir`'s `metrics.parquet` (required) and `card.json` (optional).
pub fn read(dir: &Path) -> Result<Training> {
    if !dir.is_dir() {
        return Err(Error::Input(format!(
            "--model-dir {}: not a folder; pass the output folder of `labelflow train` \
             (the one holding model.onnx, card.json and {METRICS_FILE})",
            dir.display()
        )));
    }
    let metrics = dir.join(METRICS_FILE);
    if !metrics.is_file() {
        return Err(Error::Input(format!(
            "--model-dir {}: {METRICS_FILE} is missing; `labelflow train --out {}` writes it \
             after the first epoch",
            dir.display(),
            dir.display()
        )));
    }
    let epochs = read_metrics(&metrics)?;
    let (card, card_problem) = match std::fs::read_to_string(dir.join(CARD_FILE)) {
        Ok(text) => match card_lines(&text) {
            Ok(lines) => (lines, None),
            Err(reason) => (Vec::new(), Some(format!("{CARD_FILE}: {reason}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => (Vec::new(), Some(format!("{CARD_FILE}: {e}"))),
    };
    Ok(Training {
        dir: dir.display().to_string(),
        epochs,
        card,
        card_problem,
    })
}

/// The rows of a `metrics.parquet`, by epoch.
pub fn read_metrics(path: &Path) -> Result<Vec<Epoch>> {
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let file = std::fs::File::open(path).map_err(io)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut epochs = Vec::new();
    for batch in reader {
        let batch = batch?;
        let epoch = column(&batch, "epoch").ok_or_else(|| {
            Error::Input(format!(
                "{}: no `epoch` column; is this a {METRICS_FILE} written by `labelflow train`?",
                path.display()
            ))
        })??;
        let get = |name: &str| column(&batch, name).transpose();
        let (train_loss, val_loss) = (get("train_loss")?, get("val_loss")?);
        let (train_top1, val_top1) = (get("train_top1")?, get("val_top1")?);
        let (train_top5, val_top5) = (get("train_top5")?, get("val_top5")?);
        let lr = get("lr")?;
        let at = |c: &Option<Vec<Option<f64>>>, i: usize| {
            c.as_ref().and_then(|v| v.get(i).copied().flatten())
        };
        for (i, e) in epoch.iter().enumerate() {
            let Some(e) = e else { continue };
            epochs.push(Epoch {
                epoch: *e,
                train_loss: at(&train_loss, i),
                val_loss: at(&val_loss, i),
                train_top1: at(&train_top1, i),
                val_top1: at(&val_top1, i),
                train_top5: at(&train_top5, i),
                val_top5: at(&val_top5, i),
                lr: at(&lr, i),
            });
        }
    }
    epochs.sort_by(|a, b| a.epoch.total_cmp(&b.epoch));
    Ok(epochs)
}

/// The column `name` as floats, when the batch has it.
fn column(batch: &RecordBatch, name: &str) -> Option<Result<Vec<Option<f64>>>> {
    let col = batch.column_by_name(name)?;
    Some(
        arrow::compute::cast(col, &DataType::Float64)
            .map_err(Error::from)
            .map(|c| {
                let a = c.as_primitive::<Float64Type>();
                (0..a.len())
                    .map(|i| (!a.is_null(i)).then(|| a.value(i)))
                    .collect()
            }),
    )
}

/// The card's basics as `(name, value)` lines. Fields the card lacks are left out, so
/// cards of older and newer versions both read.
pub fn card_lines(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let card: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !card.is_object() {
        return Err("not a JSON object".to_string());
    }
    let plain = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let percent = |v: &serde_json::Value| v.as_f64().map(|x| format!("{:.2}%", x * 100.0));
    let mut lines = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            lines.push((name.to_string(), v));
        }
    };
    add("model", card.get("model").and_then(plain));
    add("sha256", card.get("sha256").and_then(plain));
    add(
        "architecture",
        card.get("architecture").and_then(plain).map(|a| {
            match card.get("width").and_then(serde_json::Value::as_f64) {
                Some(w) if (w - 1.0).abs() > f64::EPSILON => format!("{a} (width {w})"),
                _ => a,
            }
        }),
    );
    add("mode", card.get("mode").and_then(plain));
    add("started from", card.get("from").and_then(plain));
    add("training data", card.get("data").and_then(plain));
    add("validation", card.get("validation").and_then(plain));
    if let Some(classes) = card.get("classes").and_then(serde_json::Value::as_array) {
        let names: Vec<String> = classes.iter().filter_map(plain).collect();
        let shown = names
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = names.len().saturating_sub(10);
        add(
            "classes",
            Some(if more > 0 {
                format!("{} ({shown}, … {more} more)", names.len())
            } else {
                format!("{} ({shown})", names.len())
            }),
        );
    }
    add("epochs", card.get("epochs").and_then(plain));
    add("batch size", card.get("batch_size").and_then(plain));
    add("optimizer", card.get("optimizer").and_then(plain));
    add("device", card.get("device").and_then(plain));
    add(
        "training time",
        card.get("train_seconds")
            .and_then(serde_json::Value::as_f64)
            .map(|s| format!("{s:.0} s")),
    );
    add("skipped images", card.get("skipped_images").and_then(plain));
    let last = card.get("final_metrics");
    add(
        "final validation top-1",
        last.and_then(|m| m.get("val_top1")).and_then(percent),
    );
    add(
        "final validation top-5",
        last.and_then(|m| m.get("val_top5")).and_then(percent),
    );
    add("test top-1", card.get("test_top1").and_then(percent));
    add("test top-5", card.get("test_top5").and_then(percent));
    add("test images", card.get("test_images").and_then(plain));
    add(
        "labelflow version",
        card.get("labelflow_version").and_then(plain),
    );
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, UInt32Array};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn write_metrics(path: &Path, epochs: &[u32], loss: &[f64]) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("epoch", DataType::UInt32, false),
            Field::new("train_loss", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt32Array::from(epochs.to_vec())),
                Arc::new(Float64Array::from(loss.to_vec())),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn missing_folder_or_metrics_name_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(
            e.contains("--model-dir") && e.contains("not a folder"),
            "{e}"
        );
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("metrics.parquet is missing"), "{e}");
    }

    #[test]
    fn reads_the_columns_it_has_sorted_by_epoch() {
        let dir = tempfile::tempdir().unwrap();
        write_metrics(&dir.path().join(METRICS_FILE), &[2, 1], &[0.5, 0.9]);
        let t = read(dir.path()).unwrap();
        assert_eq!(t.epochs.len(), 2);
        assert_eq!(
            (t.epochs[0].epoch, t.epochs[0].train_loss),
            (1.0, Some(0.9))
        );
        assert_eq!(t.epochs[1].val_loss, None);
        assert!(t.card.is_empty() && t.card_problem.is_none());

        std::fs::write(dir.path().join(CARD_FILE), "{not json").unwrap();
        let t = read(dir.path()).unwrap();
        assert!(t.card_problem.is_some_and(|p| p.starts_with("card.json")));
    }

    #[test]
    fn card_basics_skip_what_the_card_lacks() {
        let lines = card_lines(
            r#"{"model":"m.onnx","architecture":"alexnet","width":0.25,"classes":["a","b"],
                "epochs":3,"final_metrics":{"val_top1":0.5},"test_top1":null}"#,
        )
        .unwrap();
        let get = |k: &str| lines.iter().find(|l| l.0 == k).map(|l| l.1.as_str());
        assert_eq!(get("architecture"), Some("alexnet (width 0.25)"));
        assert_eq!(get("classes"), Some("2 (a, b)"));
        assert_eq!(get("epochs"), Some("3"));
        assert_eq!(get("final validation top-1"), Some("50.00%"));
        assert_eq!(get("test top-1"), None);
        assert!(card_lines("[1]").is_err());
    }

    /// The file names and columns are the training job's: read what it writes.
    #[cfg(feature = "train")]
    #[test]
    fn reads_what_the_training_job_writes() {
        use crate::train::export::{CARD_FILE as TRAIN_CARD, METRICS_FILE as TRAIN_METRICS};
        use crate::train::metrics::{write_parquet, EpochMetrics, Tally};
        assert_eq!((METRICS_FILE, CARD_FILE), (TRAIN_METRICS, TRAIN_CARD));
        let dir = tempfile::tempdir().unwrap();
        let tally = |images, loss_sum, top1, top5| Tally {
            images,
            loss_sum,
            top1,
            top5,
        };
        let rows = vec![
            EpochMetrics::new(
                1,
                0.01,
                &tally(10, 20.0, 3, 8),
                &tally(5, 12.0, 1, 4),
                1.0,
                2.0,
            ),
            EpochMetrics::new(
                2,
                0.01,
                &tally(10, 10.0, 6, 9),
                &tally(5, 8.0, 2, 5),
                1.0,
                2.0,
            ),
        ];
        write_parquet(&dir.path().join(TRAIN_METRICS), &rows).unwrap();
        let t = read(dir.path()).unwrap();
        assert_eq!(t.epochs.len(), 2);
        let e = &t.epochs[1];
        assert_eq!(e.epoch, 2.0);
        assert_eq!(e.train_loss, Some(1.0));
        assert_eq!(e.val_loss, Some(1.6));
        assert_eq!(e.train_top1, Some(0.6));
        assert_eq!(e.val_top5, Some(1.0));
        assert_eq!(e.lr, Some(0.01));
    }
}
