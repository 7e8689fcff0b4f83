//! Per-epoch metrics: loss and top-1/top-5 accuracy on the training and validation
//! sets, throughput, learning rate — kept in memory, in checkpoints (JSON) and written
//! as `metrics.parquet` beside the model so `labelflow query` can read them.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::TrainError;
use crate::{Error, Result};

/// Running sums over the batches of one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub images: u64,
    pub loss_sum: f64,
    pub top1: u64,
    pub top5: u64,
}

impl Tally {
    /// Adds a batch: `logits` `[N, C]`, `targets` `[N]` (int64), `loss` its mean loss.
    pub fn add(&mut self, logits: &Tensor, targets: &Tensor, loss: f64) -> Result<(), TrainError> {
        let n = targets.size().first().copied().unwrap_or(0);
        let classes = logits.size().get(1).copied().unwrap_or(1);
        let k = classes.min(5);
        let (_, top) = logits.f_topk(k, 1, true, true)?;
        let hits = top.f_eq_tensor(&targets.f_unsqueeze(1)?)?;
        let top1 = hits
            .f_narrow(1, 0, 1)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?;
        let top5 = hits.f_sum(Kind::Int64)?.f_int64_value(&[])?;
        self.images += n as u64;
        self.loss_sum += loss * n as f64;
        self.top1 += top1 as u64;
        self.top5 += top5 as u64;
        Ok(())
    }

    pub fn loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    pub fn top1(&self) -> f64 {
        self.top1 as f64 / self.images.max(1) as f64
    }

    pub fn top5(&self) -> f64 {
        self.top5 as f64 / self.images.max(1) as f64
    }
}

/// One row of `metrics.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Learning rate used during the epoch.
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub train_top5: f64,
    pub val_loss: f64,
    pub val_top1: f64,
    pub val_top5: f64,
    pub train_images: u64,
    pub val_images: u64,
    /// Training images per second (forward + backward + update, augmentation included).
    pub images_per_sec: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

impl EpochMetrics {
    pub fn new(
        epoch: u32,
        lr: f64,
        train: &Tally,
        val: &Tally,
        train_secs: f64,
        secs: f64,
    ) -> Self {
        EpochMetrics {
            epoch,
            lr,
            train_loss: train.loss(),
            train_top1: train.top1(),
            train_top5: train.top5(),
            val_loss: val.loss(),
            val_top1: val.top1(),
            val_top5: val.top5(),
            train_images: train.images,
            val_images: val.images,
            images_per_sec: train.images as f64 / train_secs.max(1e-9),
            seconds: secs,
        }
    }
}

/// Writes `rows` to `path` as Parquet (zstd), replacing it atomically.
pub fn write_parquet(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let f64s = |name: &str| Field::new(name, DataType::Float64, false);
    let schema = Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::UInt32, false),
        f64s("lr"),
        f64s("train_loss"),
        f64s("train_top1"),
        f64s("train_top5"),
        f64s("val_loss"),
        f64s("val_top1"),
        f64s("val_top5"),
        Field::new("train_images", DataType::UInt64, false),
        Field::new("val_images", DataType::UInt64, false),
        f64s("images_per_sec"),
        f64s("seconds"),
    ]));
    let col = |f: fn(&EpochMetrics) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.epoch))),
        col(|r| r.lr),
        col(|r| r.train_loss),
        col(|r| r.train_top1),
        col(|r| r.train_top5),
        col(|r| r.val_loss),
        col(|r| r.val_top1),
        col(|r| r.val_top5),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.train_images),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.val_images),
        )),
        col(|r| r.images_per_sec),
        col(|r| r.seconds),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_top1_and_top5() {
        // Six classes; image 0's target is the best logit, image 1's the 6th best.
        let logits = Tensor::from_slice(&[
            9f32, 1., 2., 3., 4., 5., //
            6., 5., 4., 3., 2., 1.,
        ])
        .reshape([2, 6]);
        let targets = Tensor::from_slice(&[0i64, 5]);
        let mut t = Tally::default();
        t.add(&logits, &targets, 0.5).unwrap();
        assert_eq!((t.images, t.top1, t.top5), (2, 1, 1));
        assert!((t.loss() - 0.5).abs() < 1e-12);
    }
}
