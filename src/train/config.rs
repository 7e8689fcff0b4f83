//! What a training run is asked to do: the recipe, its numbers and the checks on them.

use std::path::PathBuf;

use super::augment;
use crate::error::TrainError;
use crate::onnx::Variant;
use crate::runtime::Device;

/// How a network is optimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recipe {
    /// What a practitioner would choose today for this network: batch normalisation
    /// after every convolution of a fresh model (folded into the convolutions on
    /// export, so the exported model is a plain AlexNet), AdamW (weight decay 0.05,
    /// none on biases and normalisation), linear warm-up then a cosine decay to zero
    /// over the run, step by step, and label smoothing 0.1. A fresh model trained on a
    /// small set (fewer than 20 000 images) takes the [`SmallSet`] numbers instead:
    /// batch 64, lr 3e-3, weight decay 0.2, dropout 0.3 and centre crops.
    #[default]
    Modern,
    /// The 2012 paper's: SGD with momentum 0.9 and weight decay 5e-4, learning rate
    /// 0.01 divided by 10 when the validation loss stops improving, no normalisation
    /// layers, plain cross-entropy.
    Paper,
}

/// The update rule of the optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimiser {
    /// AdamW (β 0.9/0.999, weight decay decoupled and not on biases or normalisation).
    AdamW,
    /// SGD with momentum (weight decay added to the gradient), as in the 2012 paper.
    Sgd,
}

impl Optimiser {
    pub fn name(self) -> &'static str {
        match self {
            Optimiser::AdamW => "adamw",
            Optimiser::Sgd => "sgd",
        }
    }

    /// The learning rate and weight decay this rule starts from: those of the recipe
    /// whose rule it is (modern: AdamW, paper: SGD).
    pub fn defaults(self) -> (f64, f64) {
        let d = match self {
            Optimiser::AdamW => Recipe::Modern,
            Optimiser::Sgd => Recipe::Paper,
        }
        .defaults();
        (d.lr, d.weight_decay)
    }
}

impl std::fmt::Display for Optimiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Optimiser {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adamw" => Ok(Optimiser::AdamW),
            "sgd" => Ok(Optimiser::Sgd),
            _ => Err(format!("unknown optimiser `{s}`: use adamw or sgd")),
        }
    }
}

/// The numbers a [`Recipe`] starts from; every one can be overridden by a flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecipeDefaults {
    pub optimiser: Optimiser,
    pub lr: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub batch_norm: bool,
    pub dropout: f64,
    pub small_set: Option<SmallSet>,
}

impl Recipe {
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Modern => "modern",
            Recipe::Paper => "paper",
        }
    }

    pub fn defaults(self) -> RecipeDefaults {
        match self {
            Recipe::Modern => RecipeDefaults {
                optimiser: Optimiser::AdamW,
                lr: 2e-3,
                weight_decay: 0.05,
                label_smoothing: 0.1,
                batch_norm: true,
                dropout: 0.5,
                small_set: Some(SmallSet::default()),
            },
            Recipe::Paper => RecipeDefaults {
                optimiser: Optimiser::Sgd,
                lr: 0.01,
                weight_decay: 5e-4,
                label_smoothing: 0.0,
                batch_norm: false,
                dropout: 0.5,
                small_set: None,
            },
        }
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "modern" => Ok(Recipe::Modern),
            "paper" => Ok(Recipe::Paper),
            _ => Err(format!("unknown recipe `{s}`: use modern or paper")),
        }
    }
}

/// The numbers the modern recipe uses instead of its own when a fresh model trains on
/// a small labelled set: fewer than `below` training images (after the validation
/// split). Each field that is `None` keeps the configuration's own value, which is how
/// a flag given on the command line wins.
///
/// Measured on a 6 000-image Fashion-MNIST subset (5 400 trained on, 15 epochs, a
/// quarter-width AlexNet; docs/training.md has the table): with the recipe's own numbers
/// (batch 128, lr 2e-3, weight decay 0.05, dropout 0.5, random crops) it still
/// underfits when the run ends, 84.2 % test top-1 at 64 px and 85.4 % at 128 px; with
/// these, 87.3 % and 88.1–88.6 %. Each change adds to the others: random crops alone
/// cost about 1.7 points, the batch, rate and dropout 1.2, the weight decay 0.2–0.5.
/// On the full set (53 888 trained on) the recipe's own numbers reach 93.1 % at full
/// width and 224 px; at a quarter width and 64 px these numbers win there too (91.7 %
/// against 90.4 %), so `below` marks where they are known to help, not where they stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmallSet {
    /// Training sets with fewer images than this count as small; 0 never applies.
    pub below: usize,
    pub batch_size: Option<usize>,
    /// Peak learning rate (AdamW's: a run with SGD keeps its own).
    pub lr: Option<f64>,
    /// Weight decay (AdamW's, decoupled: a run with SGD keeps its own).
    pub weight_decay: Option<f64>,
    pub dropout: Option<f64>,
    pub random_crop: Option<bool>,
}

impl Default for SmallSet {
    fn default() -> Self {
        SmallSet {
            below: 20_000,
            batch_size: Some(64),
            lr: Some(3e-3),
            weight_decay: Some(0.2),
            dropout: Some(0.3),
            random_crop: Some(false),
        }
    }
}

impl SmallSet {
    /// What this changes, for the log and the model card (`batch 64, lr 0.003, …`);
    /// empty when every field is `None`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.batch_size {
            parts.push(format!("batch {b}"));
        }
        if let Some(lr) = self.lr {
            parts.push(format!("lr {lr}"));
        }
        if let Some(wd) = self.weight_decay {
            parts.push(format!("weight decay {wd}"));
        }
        if let Some(d) = self.dropout {
            parts.push(format!("dropout {d}"));
        }
        match self.random_crop {
            Some(false) => parts.push("centre crops".to_owned()),
            Some(true) => parts.push("random crops".to_owned()),
            None => {}
        }
        parts.join(", ")
    }

    /// `config` with these numbers in place of its own.
    pub fn apply(&self, config: &TrainConfig) -> TrainConfig {
        let mut c = config.clone();
        if let Some(b) = self.batch_size {
            c.batch_size = b;
        }
        if let Some(lr) = self.lr {
            c.lr = lr;
        }
        if let Some(wd) = self.weight_decay {
            c.weight_decay = wd;
        }
        if let Some(d) = self.dropout {
            c.dropout = d;
        }
        if let Some(r) = self.random_crop {
            c.augment.random_crop = r;
        }
        c
    }
}

/// Everything a training run needs. [`TrainConfig::default`] is the modern recipe on
/// torchvision's layout at full size.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Labelled images: a folder-per-class URL (`<root>/<class>/<image>`) or a CSV
    /// manifest (`uri,label`; a relative `uri` is taken relative to the manifest).
    pub data: String,
    /// Validation images in the same forms; when absent, `val_percent` of `data` is
    /// held out by a stable hash of each image's key.
    pub val: Option<String>,
    /// Images evaluated once with the final model (reported, never trained on).
    pub test: Option<String>,
    /// Output folder: `model.onnx`, `card.json`, `metrics.parquet`, `checkpoints/`.
    pub out: PathBuf,
    /// Start from this AlexNet ONNX file instead of fresh weights.
    pub from: Option<PathBuf>,
    /// With `from`: train only the last layer (`classifier.6`), replaced by one sized
    /// to the new classes; every other weight stays bit-identical.
    pub head_only: bool,
    /// With `from` (not `head_only`): the learning rate of the pretrained layers, while
    /// the new head learns at `lr`; the schedule scales both.
    pub lr_backbone: Option<f64>,
    /// How the network is optimised; `lr`, `weight_decay`, `label_smoothing` and
    /// `batch_norm` hold the recipe's numbers unless overridden.
    pub recipe: Recipe,
    /// The update rule (the recipe's unless overridden: modern AdamW, paper SGD); the
    /// schedule stays the recipe's.
    pub optimiser: Optimiser,
    /// Batch normalisation after every convolution of a fresh model, folded into the
    /// convolutions on export. Ignored with `from` (imported models have none).
    pub batch_norm: bool,
    /// Label smoothing ε of the training loss (the validation loss is plain
    /// cross-entropy).
    pub label_smoothing: f64,
    /// Dropout probability before the first two fully connected layers (the paper's
    /// 0.5).
    pub dropout: f64,
    /// Exponential moving average of the weights: after every step each weight's
    /// average moves towards it by 1 − decay (the decay ramps up over the first steps as
    /// min(decay, (1 + t)/(10 + t))); validation, test and the exported model use the
    /// average. 0 turns it off.
    pub ema: f64,
    /// The modern recipe's numbers for small labelled sets, used for a fresh model when
    /// the training set is smaller than `below`. `None` (and the paper recipe) keeps
    /// this configuration's numbers whatever the set's size; a program that sets
    /// `batch_size`, `lr`, `dropout` or `augment` itself and wants them kept on a small
    /// set sets the matching field of [`SmallSet`] to `None`, or this to `None`.
    pub small_set: Option<SmallSet>,
    /// Layout of a fresh model.
    pub variant: Variant,
    /// Channel multiplier of a fresh model (1.0 = published sizes).
    pub width: f32,
    /// Input side of a fresh model in pixels (at least 63).
    pub input_size: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (the paper: 0.01 for SGD; modern: 2e-3 for AdamW).
    pub lr: f64,
    /// SGD momentum (with the SGD optimiser).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Paper recipe: divide the learning rate by `lr_factor` after this many epochs
    /// without a better validation loss.
    pub lr_patience: usize,
    pub lr_factor: f64,
    /// Linear learning-rate warm-up over this many epochs (counted in steps): step k
    /// of the first `warmup_epochs × batches` uses `lr × (k + 1) / that`. Without
    /// batch normalisation, AlexNet at `lr` 0.01 from a fresh initialisation can blow
    /// up in its first steps and leave its ReLUs dead; one epoch of warm-up avoids it.
    pub warmup_epochs: f64,
    /// Per cent of `data` held out for validation when `val` is absent.
    pub val_percent: u32,
    /// Seed of the initial weights, the shuffling, augmentation and dropout.
    pub seed: u64,
    pub device: Device,
    /// libtorch intra-op threads (default: libtorch's choice).
    pub threads: Option<usize>,
    /// Continue from `out/checkpoints/last.*`.
    pub resume: bool,
    /// Copies of the weights of the newest epochs kept in `out/checkpoints/`
    /// (`epoch-NNN.safetensors`); 0 keeps none. `last.*` is always written.
    pub keep_epochs: usize,
    pub augment: augment::AugmentConfig,
    /// Concurrent fetches while loading images.
    pub fetch_concurrency: usize,
    /// Stop after this many epochs in this invocation (tests use it to simulate an
    /// interrupted run; `None` runs to `epochs`).
    pub stop_after: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let recipe = Recipe::default();
        let d = recipe.defaults();
        TrainConfig {
            recipe,
            optimiser: d.optimiser,
            batch_norm: d.batch_norm,
            label_smoothing: d.label_smoothing,
            dropout: d.dropout,
            data: String::new(),
            val: None,
            test: None,
            out: PathBuf::from("models/v1"),
            from: None,
            head_only: false,
            lr_backbone: None,
            ema: 0.0,
            small_set: d.small_set,
            variant: Variant::Torchvision,
            width: 1.0,
            input_size: 224,
            epochs: 30,
            batch_size: 128,
            lr: d.lr,
            momentum: 0.9,
            weight_decay: d.weight_decay,
            lr_patience: 2,
            lr_factor: 10.0,
            warmup_epochs: 1.0,
            val_percent: 10,
            seed: 0,
            device: Device::Cpu,
            threads: None,
            resume: false,
            keep_epochs: 3,
            augment: augment::AugmentConfig::default(),
            fetch_concurrency: 32,
            stop_after: None,
        }
    }
}

impl TrainConfig {
    /// This configuration with `recipe` and the recipe's learning rate, weight decay,
    /// label smoothing, batch normalisation and dropout.
    pub fn with_recipe(self, recipe: Recipe) -> Self {
        let d = recipe.defaults();
        TrainConfig {
            recipe,
            optimiser: d.optimiser,
            lr: d.lr,
            weight_decay: d.weight_decay,
            label_smoothing: d.label_smoothing,
            batch_norm: d.batch_norm,
            dropout: d.dropout,
            small_set: d.small_set,
            ..self
        }
    }

    /// The configuration a run uses once its training set is known: with
    /// [`TrainConfig::small_set`], a fresh model and fewer than `below` training
    /// images, the small-set numbers (returned too, to be logged and recorded).
    pub fn for_train_set(&self, train_images: usize) -> (TrainConfig, Option<SmallSet>) {
        match self.small_set {
            Some(s) if self.from.is_none() && train_images < s.below => {
                // The rate and decay are AdamW's; another rule keeps its own.
                let s = match self.optimiser {
                    Optimiser::AdamW => s,
                    Optimiser::Sgd => SmallSet {
                        lr: None,
                        weight_decay: None,
                        ..s
                    },
                };
                (s.apply(self), Some(s))
            }
            _ => (self.clone(), None),
        }
    }

    /// Checks the numbers; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Options(m));
        if !(self.ema.is_finite() && (0.0..1.0).contains(&self.ema)) {
            return bad(format!(
                "--ema {} is not a decay: use a number from 0 (off) up to but not including 1, e.g. 0.99",
                self.ema
            ));
        }
        if self.data.trim().is_empty() {
            return bad("--data is required: a folder-per-class URL or a uri,label CSV".into());
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!(
                "--momentum must be in [0, 1), got {}",
                self.momentum
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.lr_factor.is_finite() && self.lr_factor > 1.0) {
            return bad(format!(
                "--lr-factor must be greater than 1, got {}",
                self.lr_factor
            ));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return bad(format!(
                "--warmup-epochs must be ≥ 0, got {}",
                self.warmup_epochs
            ));
        }
        if self.val.is_none() && !(1..=90).contains(&self.val_percent) {
            return bad(format!(
                "--val-percent must be between 1 and 90 when no --val is given, got {}",
                self.val_percent
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.head_only && self.from.is_none() {
            return bad(
                "--head-only needs --from MODEL.onnx (the model whose features to keep)".into(),
            );
        }
        if let Some(lr) = self.lr_backbone {
            if self.from.is_none() || self.head_only {
                return bad(
                    "--lr-backbone is for full fine-tuning: it needs --from MODEL.onnx and no --head-only"
                        .into(),
                );
            }
            if !(lr.is_finite() && lr > 0.0) {
                return bad(format!("--lr-backbone must be above 0, got {lr}"));
            }
        }
        if self.fetch_concurrency == 0 {
            return bad("fetch concurrency must be at least 1".into());
        }
        Ok(())
    }
}

/// The libtorch device for `device`, checking CUDA is there when asked for.
pub fn torch_device(device: Device) -> Result<tch::Device, TrainError> {
    match device {
        Device::Cpu => Ok(tch::Device::Cpu),
        Device::Cuda(n) => {
            let count = tch::Cuda::device_count();
            if n < 0 || i64::from(n) >= count {
                return Err(TrainError::Options(format!(
                    "--device cuda:{n}: libtorch sees {count} CUDA device(s); use --device cpu, or check the driver and that libtorch_cuda.so is linked"
                )));
            }
            Ok(tch::Device::Cuda(n as usize))
        }
        Device::CudaSet(_) => Err(TrainError::Options(format!(
            "--device {device}: training runs on one GPU; pass one, e.g. --device cuda:0"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_set_takes_the_small_set_numbers_and_a_large_one_keeps_its_own() {
        let config = TrainConfig::default();
        let s = SmallSet::default();
        let (small, applied) = config.for_train_set(s.below - 1);
        assert_eq!(applied, Some(s));
        assert_eq!(
            (
                small.batch_size,
                small.lr,
                small.weight_decay,
                small.dropout
            ),
            (64, 3e-3, 0.2, 0.3)
        );
        assert!(!small.augment.random_crop && small.augment.flip);
        assert_eq!(small.augment.lighting, 0.1);
        assert_eq!(
            s.describe(),
            "batch 64, lr 0.003, weight decay 0.2, dropout 0.3, centre crops"
        );

        let (large, applied) = config.for_train_set(s.below);
        assert_eq!(applied, None);
        assert_eq!(
            (
                large.batch_size,
                large.lr,
                large.weight_decay,
                large.dropout
            ),
            (128, 2e-3, 0.05, 0.5)
        );
        assert_eq!(large.augment, augment::AugmentConfig::default());
    }

    #[test]
    fn the_small_set_rule_leaves_alone_what_it_does_not_name() {
        // A field left out (as a flag given on the command line leaves it) keeps the
        // configuration's value.
        let config = TrainConfig {
            batch_size: 16,
            small_set: Some(SmallSet {
                batch_size: None,
                random_crop: None,
                ..SmallSet::default()
            }),
            ..TrainConfig::default()
        };
        let (c, _) = config.for_train_set(300);
        assert_eq!(
            (c.batch_size, c.augment.random_crop, c.dropout),
            (16, true, 0.3)
        );
        assert_eq!(
            config.small_set.unwrap().describe(),
            "lr 0.003, weight decay 0.2, dropout 0.3"
        );
        // Fine-tuning, the paper recipe and `None` never take them.
        let from = TrainConfig {
            from: Some(PathBuf::from("m.onnx")),
            ..config.clone()
        };
        assert_eq!(from.for_train_set(300).1, None);
        let paper = TrainConfig::default().with_recipe(Recipe::Paper);
        assert_eq!(paper.for_train_set(300).1, None);
        assert_eq!(paper.batch_size, 128);
        let off = TrainConfig {
            small_set: None,
            ..config
        };
        assert_eq!(off.for_train_set(300).0.batch_size, 16);
        // SGD keeps its own rate and decay.
        let sgd = TrainConfig {
            optimiser: Optimiser::Sgd,
            lr: 0.05,
            weight_decay: 5e-4,
            ..TrainConfig::default()
        };
        let (c, applied) = sgd.for_train_set(300);
        assert_eq!((c.lr, c.weight_decay, c.batch_size), (0.05, 5e-4, 64));
        assert_eq!(
            applied.unwrap().describe(),
            "batch 64, dropout 0.3, centre crops"
        );
    }
}
