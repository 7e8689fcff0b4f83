//! The job: [`train`] from a [`TrainConfig`] to the exported model and its card.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::progress::TrainProgress;
use super::train_loop::fit;
use crate::error::TrainError;
use crate::onnx::alexnet::read_alexnet;
use crate::onnx::AlexNetSpec;
use crate::train::augment::eval_spec;
use crate::train::config::{Optimiser, Recipe, TrainConfig};
use crate::train::data;
use crate::train::export::{self, ModelCard};
use crate::train::metrics::EpochMetrics;
use crate::{Error, Result};

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub out: PathBuf,
    pub model: PathBuf,
    pub sha256: String,
    pub card: ModelCard,
    pub metrics: Vec<EpochMetrics>,
    /// The epoch the run continued after, when resumed.
    pub resumed_after: Option<u32>,
}

/// Runs a training job described by `config`.
pub async fn train(config: &TrainConfig, progress: Arc<dyn TrainProgress>) -> Result<TrainReport> {
    config.validate()?;
    let started = Instant::now();
    std::fs::create_dir_all(&config.out).map_err(|e| {
        Error::io(
            format!("creating the output folder {}", config.out.display()),
            e,
        )
    })?;

    // The model to start from.
    let base = match &config.from {
        Some(path) => {
            let p = path.clone();
            let m = tokio::task::spawn_blocking(move || read_alexnet(&p)).await?;
            Some(m.map_err(|e| {
                TrainError::Model(format!(
                    "--from {}: {e}; --from takes an AlexNet ONNX file made by labelflow (or with torchvision's parameter names)",
                    path.display()
                ))
            })?)
        }
        None => None,
    };
    let input_size = base
        .as_ref()
        .map_or(config.input_size, |b| b.spec.input_size);
    if base.is_none() {
        AlexNetSpec {
            variant: config.variant,
            width: config.width,
            input_size,
            num_classes: 2,
            seed: config.seed,
            input: crate::batch::Element::U8,
        }
        .validate()
        .map_err(|e| TrainError::Options(crate::error::report(&e)))?;
    }
    let resize = eval_spec(input_size).resize;

    // Data.
    progress.phase("listing");
    let listing = data::list(&config.data).await?;
    let classes = data::check_classes(&listing)?;
    let (train_items, val_items, val_source) = match &config.val {
        Some(v) => {
            let vl = data::list(v).await?;
            if vl.items.is_empty() {
                return Err(
                    TrainError::Data(format!("no labelled images found at --val {v}")).into(),
                );
            }
            (listing.items.clone(), vl.items, v.clone())
        }
        None => {
            let (val, train): (Vec<_>, Vec<_>) = listing
                .items
                .iter()
                .cloned()
                .partition(|it| data::is_validation(&it.key, config.val_percent));
            if val.is_empty() || train.is_empty() {
                return Err(TrainError::Data(format!(
                    "holding out {}% of {} images for validation leaves an empty {} set; pass --val URL or change --val-percent",
                    config.val_percent,
                    listing.items.len(),
                    if val.is_empty() { "validation" } else { "training" }
                ))
                .into());
            }
            (
                train,
                val,
                format!(
                    "{}% of --data by a stable hash of each key",
                    config.val_percent
                ),
            )
        }
    };
    progress.phase("loading");
    let counter = Arc::new(AtomicU64::new(0));
    let conc = config.fetch_concurrency;
    let train_set = data::load(&train_items, &classes, resize, conc, Some(counter.clone())).await?;
    let val_set = data::load(&val_items, &classes, resize, conc, Some(counter.clone())).await?;
    if train_set.samples.is_empty() {
        return Err(TrainError::Data(format!(
            "none of the {} training images at {} could be read (first problem: {})",
            train_items.len(),
            config.data,
            train_set
                .skipped
                .first()
                .map(|(u, r)| format!("{u}: {r}"))
                .unwrap_or_default()
        ))
        .into());
    }
    let test_set = match &config.test {
        Some(t) => {
            let tl = data::list(t).await?;
            Some(data::load(&tl.items, &classes, resize, conc, Some(counter)).await?)
        }
        None => None,
    };
    let skipped = train_set.skipped.len() + val_set.skipped.len();
    tracing::info!(
        train = train_set.samples.len(),
        val = val_set.samples.len(),
        classes = classes.len(),
        skipped,
        "loaded the labelled images"
    );

    // A small set takes the recipe's small-set numbers (flags given still win).
    let (run_config, small) = config.for_train_set(train_set.samples.len());
    let small_set = small.map(|s| {
        format!(
            "{} training images, fewer than {}: {}",
            train_set.samples.len(),
            s.below,
            s.describe()
        )
    });
    if let Some(s) = &small_set {
        progress.notice(&format!(
            "small labelled set, {s} (a flag sets any of them; --small-set-below 0 keeps the recipe's own numbers)"
        ));
    }
    let config = &run_config;
    let cfg = run_config.clone();
    let classes_for_fit = classes.clone();
    let prog = progress.clone();
    let fitted = tokio::task::spawn_blocking(move || {
        fit(
            &cfg,
            base,
            &classes_for_fit,
            &train_set.samples,
            &val_set.samples,
            test_set.as_ref().map(|t| t.samples.as_slice()),
            prog.as_ref(),
        )
    })
    .await??;

    // Export.
    progress.phase("exporting");
    let (model_path, sha) =
        export::write_model(&config.out, &fitted.spec, &fitted.weights, &classes)?;
    let mode = match (&config.from, config.head_only) {
        (None, _) => "scratch",
        (Some(_), false) => "fine-tune",
        (Some(_), true) => "head-only",
    };
    let card = ModelCard {
        model: export::MODEL_FILE.to_owned(),
        sha256: sha.clone(),
        architecture: fitted.spec.variant.architecture().to_owned(),
        width: fitted.spec.width,
        input_size: fitted.spec.input_size,
        classes: classes.clone(),
        preprocess: eval_spec(input_size),
        mode: mode.to_owned(),
        from: config.from.as_ref().map(|p| p.display().to_string()),
        data: config.data.clone(),
        validation: val_source,
        train_images_per_class: fitted.train_counts.clone(),
        val_images_per_class: fitted.val_counts.clone(),
        skipped_images: skipped,
        epochs: fitted.metrics.last().map_or(0, |m| m.epoch),
        batch_size: config.batch_size,
        optimizer: {
            let rule = match config.optimiser {
                Optimiser::Sgd => format!(
                    "SGD lr {} momentum {} weight decay {}",
                    config.lr, config.momentum, config.weight_decay
                ),
                Optimiser::AdamW => format!(
                    "AdamW lr {} weight decay {} (not on biases or normalisation)",
                    config.lr, config.weight_decay
                ),
            };
            let rule = if config.ema > 0.0 {
                format!("{rule}, the exponential moving average of the weights (decay {}) evaluated and exported", config.ema)
            } else {
                rule
            };
            match config.recipe {
                Recipe::Paper => format!(
                    "recipe paper: {rule}, linear warm-up over {} epochs, lr ÷{} after {} epochs without a better validation loss",
                    config.warmup_epochs, config.lr_factor, config.lr_patience
                ),
                Recipe::Modern => format!(
                    "recipe modern: {rule}, linear warm-up over {} epochs then cosine decay to 0, label smoothing {}, batch normalisation {}",
                    config.warmup_epochs, config.label_smoothing,
                    if config.batch_norm && config.from.is_none() { "after every convolution, folded into them on export" } else { "off" }
                ),
            }
        },
        augmentation: if mode == "head-only" {
            "none (features of the frozen layers computed once, centre crops)".to_owned()
        } else {
            config.augment.describe()
        },
        small_set,
        seed: config.seed,
        device: config.device.to_string(),
        train_seconds: started.elapsed().as_secs_f64(),
        final_metrics: fitted.metrics.last().cloned(),
        test_top1: fitted.test.map(|t| t.top1()),
        test_top5: fitted.test.map(|t| t.top5()),
        test_images: fitted.test.map(|t| t.images),
        labelflow_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    export::write_card(&config.out, &card)?;
    Ok(TrainReport {
        out: config.out.clone(),
        model: model_path,
        sha256: sha,
        card,
        metrics: fitted.metrics,
        resumed_after: fitted.resumed_after,
    })
}
