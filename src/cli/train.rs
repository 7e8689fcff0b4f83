//! `labelflow train`: flags, progress display and the call into `labelflow::train`.
//! Without the `train` cargo feature the command exists and explains how to get it.

#[cfg(not(feature = "train"))]
pub use unavailable::*;

#[cfg(feature = "train")]
pub use available::*;

#[cfg(not(feature = "train"))]
mod unavailable {
    use clap::Args;

    /// Accepts anything, so the message below is what the user sees.
    #[derive(Debug, Args)]
    pub struct TrainUnavailable {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        pub rest: Vec<String>,
    }

    pub async fn run(_args: TrainUnavailable, _progress: bool) -> anyhow::Result<u8> {
        eprintln!(
            "error: this labelflow binary was built without training support.\n\
             Build it with libtorch:\n  \
             eval \"$(scripts/setup-torch.sh | tail -n2 | sed 's/^/export /')\"\n  \
             cargo build --release --features train"
        );
        Ok(2)
    }
}

#[cfg(feature = "train")]
mod available {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use clap::Args;
    use indicatif::{ProgressBar, ProgressStyle};
    use labelflow::onnx::Variant;
    use labelflow::runtime::Device;
    use labelflow::train::augment::AugmentConfig;
    use labelflow::train::metrics::EpochMetrics;
    use labelflow::train::{self, Optimiser, Recipe, SmallSet, TrainConfig, TrainProgress};

    #[derive(Debug, Args)]
    pub struct TrainArgs {
        /// Labelled images: folder-per-class URL (<root>/<class>/<image>) or a uri,label manifest (.csv, .jsonl, .parquet).
        #[arg(long, value_name = "URL")]
        pub data: String,
        /// Validation images (same forms); default: --val-percent of --data by a stable hash.
        #[arg(long, value_name = "URL")]
        pub val: Option<String>,
        /// Test images, evaluated once with the final model and reported in card.json.
        #[arg(long, value_name = "URL")]
        pub test: Option<String>,
        /// Output folder: model.onnx, card.json, metrics.parquet, checkpoints/.
        #[arg(long, short = 'o', value_name = "DIR")]
        pub out: PathBuf,
        /// Start from this AlexNet ONNX file.
        #[arg(long, value_name = "MODEL.onnx")]
        pub from: Option<PathBuf>,
        /// With --from: train only the last layer, replaced for the new classes.
        #[arg(long, requires = "from")]
        pub head_only: bool,
        /// With --from: fine-tune every layer, the pretrained ones at this learning
        /// rate (e.g. a tenth of --lr) and the new last layer at --lr.
        #[arg(
            long,
            value_name = "LR",
            requires = "from",
            conflicts_with = "head_only"
        )]
        pub lr_backbone: Option<f64>,
        /// Continue from OUT/checkpoints/last.* (same flags as the interrupted run).
        #[arg(long)]
        pub resume: bool,
        /// Copies of the weights of the newest N epochs kept in OUT/checkpoints/
        /// (epoch-NNN.safetensors, importable with `model import`); 0 keeps none.
        #[arg(long, value_name = "N", default_value_t = 3)]
        pub keep_epochs: usize,
        /// How to optimise: modern (default: AdamW, warm-up then cosine decay, label
        /// smoothing 0.1, batch normalisation in a new model) or paper (SGD with
        /// momentum, lr ÷10 on plateaus, the 2012 recipe).
        #[arg(long, default_value = "modern")]
        pub recipe: Recipe,
        /// The update rule, replacing the recipe's (modern: adamw; paper: sgd); the
        /// recipe's schedule stays. Without --lr/--weight-decay, sgd starts from 0.01
        /// and 5e-4, adamw from 2e-3 and 0.05.
        #[arg(long, value_name = "adamw|sgd")]
        pub optimiser: Option<Optimiser>,
        /// Batch normalisation after every convolution of a new model, folded into the
        /// convolutions on export (default: on with --recipe modern, off with paper).
        #[arg(long, value_name = "true|false")]
        pub batch_norm: Option<bool>,
        /// Label smoothing of the training loss (default: 0.1 modern, 0 paper).
        #[arg(long, value_name = "EPS")]
        pub label_smoothing: Option<f64>,
        /// Dropout before the first two fully connected layers (default 0.5; 0.3 on a
        /// small set).
        #[arg(long, value_name = "P")]
        pub dropout: Option<f64>,
        /// Keep an exponential moving average of the weights with this decay per step
        /// (e.g. 0.99) and evaluate and export it; 0 turns it off (default 0).
        #[arg(long, value_name = "DECAY")]
        pub ema: Option<f64>,
        /// torchvision (default) or paper (2012 layout: LRN, grouped convolutions).
        #[arg(long, default_value = "torchvision")]
        pub variant: Variant,
        /// Channel multiplier of a new model (1.0 = published sizes).
        #[arg(long, default_value_t = 1.0)]
        pub width: f32,
        /// Input side of a new model in pixels (at least 63).
        #[arg(long, default_value_t = 224)]
        pub input_size: usize,
        #[arg(long, default_value_t = 30)]
        pub epochs: usize,
        /// Images per step (default 128; 64 on a small set, see --small-set-below).
        #[arg(long, value_name = "N")]
        pub batch_size: Option<usize>,
        /// Peak learning rate (default: the update rule's, AdamW 2e-3, SGD 0.01; AdamW
        /// 3e-3 on a small set).
        #[arg(long)]
        pub lr: Option<f64>,
        /// SGD momentum (--recipe paper, --optimiser sgd).
        #[arg(long, default_value_t = 0.9)]
        pub momentum: f64,
        /// Weight decay (default: AdamW 0.05, decoupled and not on biases, 0.2 on a
        /// small set; SGD 5e-4).
        #[arg(long)]
        pub weight_decay: Option<f64>,
        /// --recipe paper: epochs without a better validation loss before the learning
        /// rate is divided.
        #[arg(long, default_value_t = 2)]
        pub lr_patience: usize,
        /// What the learning rate is divided by.
        #[arg(long, default_value_t = 10.0)]
        pub lr_factor: f64,
        /// Epochs over which the learning rate rises linearly from near 0 to --lr
        /// (step by step); 0 starts at --lr as the paper did.
        #[arg(long, default_value_t = 1.0)]
        pub warmup_epochs: f64,
        /// Per cent of --data held out for validation when --val is absent.
        #[arg(long, default_value_t = 10)]
        pub val_percent: u32,
        /// Seed of the initial weights, shuffling, augmentation and dropout.
        #[arg(long, default_value_t = 0)]
        pub seed: u64,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        pub device: Device,
        /// libtorch threads (default: libtorch's choice).
        #[arg(long)]
        pub threads: Option<usize>,
        /// --recipe modern on a new model: a training set of fewer than N images is
        /// small, and takes batch 64, lr 3e-3 and weight decay 0.2 (AdamW), dropout 0.3
        /// and centre crops where no flag sets them; 0 turns this off.
        #[arg(long, value_name = "N", default_value_t = 20_000)]
        pub small_set_below: usize,
        /// Random crops even on a small set (the default elsewhere).
        #[arg(long, conflicts_with = "no_random_crop")]
        pub random_crop: bool,
        /// Turn off random crops (centre crop instead; the default on a small set).
        #[arg(long)]
        pub no_random_crop: bool,
        /// Turn off horizontal flips.
        #[arg(long)]
        pub no_flip: bool,
        /// σ of PCA colour lighting noise (0 turns it off).
        #[arg(long, default_value_t = 0.1)]
        pub lighting: f32,
        /// Probability of random erasing: one rectangle of 2–40 % of each training
        /// crop set to the mean colour (0 turns it off).
        #[arg(long, default_value_t = 0.0, value_name = "P")]
        pub erase: f32,
        /// Print the final card as JSON on stdout.
        #[arg(long)]
        pub json: bool,
    }

    impl TrainArgs {
        pub fn config(&self) -> TrainConfig {
            // The recipe's numbers, then whatever the flags override.
            let d = TrainConfig::default().with_recipe(self.recipe);
            let optimiser = self.optimiser.unwrap_or(d.optimiser);
            // The rule's own numbers (the recipe's, when it is the recipe's rule).
            let (lr, weight_decay) = optimiser.defaults();
            // The small-set numbers, less those a flag sets (under another rule than
            // AdamW, `for_train_set` leaves out AdamW's rate and decay).
            let small_set = d.small_set.and_then(|s| {
                (self.small_set_below > 0).then(|| SmallSet {
                    below: self.small_set_below,
                    batch_size: s.batch_size.filter(|_| self.batch_size.is_none()),
                    lr: s.lr.filter(|_| self.lr.is_none()),
                    weight_decay: s.weight_decay.filter(|_| self.weight_decay.is_none()),
                    dropout: s.dropout.filter(|_| self.dropout.is_none()),
                    random_crop: s
                        .random_crop
                        .filter(|_| !self.random_crop && !self.no_random_crop),
                })
            });
            TrainConfig {
                small_set,
                optimiser,
                batch_norm: self.batch_norm.unwrap_or(d.batch_norm),
                label_smoothing: self.label_smoothing.unwrap_or(d.label_smoothing),
                dropout: self.dropout.unwrap_or(d.dropout),
                ema: self.ema.unwrap_or(d.ema),
                data: self.data.clone(),
                val: self.val.clone(),
                test: self.test.clone(),
                out: self.out.clone(),
                from: self.from.clone(),
                head_only: self.head_only,
                lr_backbone: self.lr_backbone,
                variant: self.variant,
                width: self.width,
                input_size: self.input_size,
                epochs: self.epochs,
                batch_size: self.batch_size.unwrap_or(d.batch_size),
                lr: self.lr.unwrap_or(lr),
                momentum: self.momentum,
                weight_decay: self.weight_decay.unwrap_or(weight_decay),
                lr_patience: self.lr_patience,
                lr_factor: self.lr_factor,
                warmup_epochs: self.warmup_epochs,
                val_percent: self.val_percent,
                seed: self.seed,
                device: self.device,
                threads: self.threads,
                resume: self.resume,
                keep_epochs: self.keep_epochs,
                augment: AugmentConfig {
                    random_crop: !self.no_random_crop,
                    flip: !self.no_flip,
                    lighting: self.lighting,
                    erase: self.erase,
                },
                ..d
            }
        }
    }

    /// A bar per epoch and one line per finished epoch on stderr.
    struct Bars {
        bar: Mutex<Option<ProgressBar>>,
        show: bool,
    }

    impl TrainProgress for Bars {
        fn phase(&self, what: &str) {
            tracing::info!("{what}");
        }
        fn notice(&self, what: &str) {
            eprintln!("note: {what}");
        }
        fn epoch_start(&self, epoch: u32, epochs: u32, batches: u64) {
            if !self.show {
                return;
            }
            let bar = ProgressBar::new(batches);
            if let Ok(style) = ProgressStyle::with_template(
                "epoch {prefix} {bar:30} {pos}/{len} batches, loss {msg} ({elapsed}, eta {eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(format!("{epoch}/{epochs}"));
            if let Ok(mut b) = self.bar.lock() {
                *b = Some(bar);
            }
        }
        fn batch(&self, loss: f64) {
            if let Ok(b) = self.bar.lock() {
                if let Some(bar) = b.as_ref() {
                    bar.set_message(format!("{loss:.4}"));
                    bar.inc(1);
                }
            }
        }
        fn epoch_end(&self, m: &EpochMetrics) {
            if let Ok(mut b) = self.bar.lock() {
                if let Some(bar) = b.take() {
                    bar.finish_and_clear();
                }
            }
            eprintln!(
                "epoch {:>3}  lr {:.0e}  train loss {:.4} top-1 {:.2}%  val loss {:.4} top-1 {:.2}% top-5 {:.2}%  {:.0} img/s  {:.1} s",
                m.epoch,
                m.lr,
                m.train_loss,
                100.0 * m.train_top1,
                m.val_loss,
                100.0 * m.val_top1,
                100.0 * m.val_top5,
                m.images_per_sec,
                m.seconds
            );
        }
    }

    pub async fn run(args: TrainArgs, progress: bool) -> anyhow::Result<u8> {
        let config = args.config();
        let bars = Arc::new(Bars {
            bar: Mutex::new(None),
            show: progress,
        });
        let report = train::train(&config, bars).await?;
        let c = &report.card;
        eprintln!(
            "wrote {} ({} classes, {} epochs{}{}), sha256 {}",
            report.model.display(),
            c.classes.len(),
            c.epochs,
            match c.skipped_images {
                0 => String::new(),
                n => format!(", {n} unreadable images skipped (see the log)"),
            },
            match c.test_top1 {
                Some(t) => format!(
                    ", test top-1 {:.2}% on {} images",
                    100.0 * t,
                    c.test_images.unwrap_or(0)
                ),
                None => String::new(),
            },
            report.sha256
        );
        if args.json {
            println!("{}", serde_json::to_string_pretty(c)?);
        }
        Ok(0)
    }

    #[cfg(test)]
    mod tests {
        use clap::Parser;
        use labelflow::train::{Recipe, SmallSet};

        use crate::cli::{Cli, Command};

        fn config(args: &[&str]) -> labelflow::train::TrainConfig {
            let argv = ["labelflow", "train", "--data", "d", "--out", "o"];
            let cli = Cli::try_parse_from(argv.iter().chain(args)).unwrap();
            match cli.command {
                Command::Train(t) => t.config(),
                _ => unreachable!(),
            }
        }

        #[test]
        fn flags_given_are_kept_on_a_small_set() {
            // No flags: the whole rule, and the recipe's own numbers for large sets.
            let c = config(&[]);
            assert_eq!(c.small_set, Some(SmallSet::default()));
            assert_eq!((c.batch_size, c.lr, c.dropout), (128, 2e-3, 0.5));
            assert!(c.augment.random_crop);

            // Each flag takes its number out of the rule.
            let c = config(&["--batch-size", "16", "--random-crop"]);
            let s = c.small_set.unwrap();
            assert_eq!((s.batch_size, s.random_crop), (None, None));
            assert_eq!((s.lr, s.dropout), (Some(3e-3), Some(0.3)));
            let (used, _) = c.for_train_set(300);
            assert_eq!((used.batch_size, used.lr), (16, 3e-3));
            assert!(used.augment.random_crop);
            let s = config(&[
                "--lr",
                "1e-3",
                "--weight-decay",
                "0.1",
                "--dropout",
                "0.5",
                "--no-random-crop",
            ])
            .small_set
            .unwrap();
            assert_eq!(
                (s.lr, s.weight_decay, s.dropout, s.random_crop),
                (None, None, None, None)
            );

            // AdamW's small-set rate is not SGD's; the threshold is a flag; 0 and the
            // paper recipe turn the rule off.
            let c = config(&["--optimiser", "sgd"]);
            let (used, applied) = c.for_train_set(300);
            let s = applied.unwrap();
            assert_eq!((s.lr, s.weight_decay), (None, None));
            assert_eq!(
                (used.lr, used.weight_decay, used.batch_size),
                (0.01, 5e-4, 64)
            );
            assert_eq!(
                config(&["--small-set-below", "500"])
                    .small_set
                    .unwrap()
                    .below,
                500
            );
            assert_eq!(config(&["--small-set-below", "0"]).small_set, None);
            let c = config(&["--recipe", "paper"]);
            assert_eq!((c.recipe, c.small_set), (Recipe::Paper, None));
        }
    }
}
