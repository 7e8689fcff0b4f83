//! The trained model as the batch job's input: `model.onnx` written by the crate's
//! ONNX writer (class names, preprocessing and layout in `metadata_props`), and a
//! `card.json` beside it describing how it was made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::EpochMetrics;
use crate::onnx::alexnet::write_alexnet;
use crate::onnx::{model_error, AlexNetSpec, AlexNetWeights};
use crate::preprocess::PreprocessSpec;
use crate::{Error, Result};

/// File names inside the output folder.
pub use crate::schema::training_files::{CARD_FILE, METRICS_FILE, MODEL_FILE};
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// What `card.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub model: String,
    pub sha256: String,
    pub architecture: String,
    pub width: f32,
    pub input_size: usize,
    pub classes: Vec<String>,
    pub preprocess: PreprocessSpec,
    /// `"scratch"`, `"fine-tune"` or `"head-only"`.
    pub mode: String,
    /// The model started from, when fine-tuning.
    pub from: Option<String>,
    pub data: String,
    pub validation: String,
    pub train_images_per_class: BTreeMap<String, usize>,
    pub val_images_per_class: BTreeMap<String, usize>,
    /// Images that could not be fetched or decoded and were skipped.
    pub skipped_images: usize,
    pub epochs: u32,
    pub batch_size: usize,
    pub optimizer: String,
    /// Training-time augmentation (`random crops, flips, lighting 0.1`).
    #[serde(default)]
    pub augmentation: String,
    /// The small-set numbers the modern recipe used in place of its own, when the
    /// training set was small (`5400 training images, fewer than 20000: batch 64, …`).
    #[serde(default)]
    pub small_set: Option<String>,
    pub seed: u64,
    pub device: String,
    pub train_seconds: f64,
    pub final_metrics: Option<EpochMetrics>,
    /// Top-1 on the `--test` set, when one was given.
    pub test_top1: Option<f64>,
    pub test_top5: Option<f64>,
    pub test_images: Option<u64>,
    pub labelflow_version: String,
}

/// Writes `out/model.onnx` and returns its path and sha256.
pub fn write_model(
    out: &Path,
    spec: &AlexNetSpec,
    weights: &AlexNetWeights,
    classes: &[String],
) -> Result<(PathBuf, String)> {
    let path = out.join(MODEL_FILE);
    let sha = write_alexnet(&path, spec, weights, classes).map_err(|e| model_error(&path, e))?;
    Ok((path, sha))
}

/// Writes `out/card.json` (atomically).
pub fn write_card(out: &Path, card: &ModelCard) -> Result<()> {
    let path = out.join(CARD_FILE);
    let text = serde_json::to_string_pretty(card)
        .map_err(|e| Error::Train(format!("encoding {}: {e}", path.display())))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n")
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
}
