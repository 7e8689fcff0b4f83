//! The companion training job: labelled images in object storage → a trained AlexNet
//! → the ONNX file the batch job runs.
//!
//! The stages, one module each:
//!
//! - [`data`]: list a folder-per-class tree or read a `uri,label` manifest from any
//!   object-store URL, split train/validation by a stable hash, fetch and decode with
//!   the batch job's decoder (bad images are counted and skipped).
//! - [`augment`]: the batch job's resize and normalisation, then the paper's random
//!   crops, horizontal flips and PCA colour lighting for training, centre crop for
//!   evaluation — the same numbers the batch job feeds the exported model.
//! - [`model`]: AlexNet in libtorch with torchvision's parameter names, initialised
//!   from (and exported to) the crate's ONNX weights.
//! - [`fit`]: the loop — the [`Recipe`] (AdamW with a cosine schedule, label smoothing
//!   and batch normalisation by default, with its [`SmallSet`] numbers for a new model
//!   on fewer than 20 000 images; the paper's SGD with plateau steps as
//!   `--recipe paper`), checkpoints every epoch, `--resume`, head-only fine-tuning.
//! - [`metrics`]: per-epoch loss and top-1/top-5, written as Parquet.
//! - [`export`]: `model.onnx` through the crate's ONNX writer, `card.json` beside it.

pub mod augment;
pub mod config;
pub mod data;
pub mod export;
pub mod fit;
pub mod metrics;
pub mod model;

pub use config::{torch_device, Optimiser, Recipe, RecipeDefaults, SmallSet, TrainConfig};
pub use fit::{train, NoTrainProgress, TrainProgress, TrainReport};

pub use crate::error::TrainError;

impl From<TrainError> for crate::Error {
    fn from(e: TrainError) -> Self {
        crate::Error::Training(e)
    }
}
