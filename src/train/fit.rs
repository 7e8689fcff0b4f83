//! The training loop: data in, epochs of SGD, checkpoints, the exported model out.
//!
//! Optimisation is the paper's: SGD with momentum 0.9 and weight decay 5e-4 (PyTorch's
//! `torch.optim.SGD` update, implemented here so its momentum buffers can be saved),
//! learning rate 0.01 divided by 10 when the validation loss has not improved for
//! `lr_patience` epochs (PyTorch's `ReduceLROnPlateau` rule).
//!
//! Every random choice (shuffle order, crops, flips, lighting, dropout) is drawn from
//! generators seeded by the run's seed and the epoch number, so a run resumed from the
//! checkpoint of epoch k reaches the same weights as one that never stopped (on the
//! same device and thread count).
//!
//! Head-only fine-tuning computes the frozen network's features once (evaluation
//! transform, no dropout) and trains the last layer on them: `classifier.6` reads the
//! ReLU output directly, so this is the same function as training through the frozen
//! network without augmentation, at a fraction of the cost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::augment::{Augmenter, ColourPca, Rng};
use super::data::{self, Sample};
use super::export::{self, ModelCard, CHECKPOINT_DIR, METRICS_FILE};
use super::metrics::{self, EpochMetrics, Tally};
use super::model::{AlexNet, HEAD};
use super::{torch_device, TrainConfig, TrainError};
use crate::onnx::alexnet::read_alexnet;
use crate::onnx::{AlexNetSpec, AlexNetWeights};
use crate::{Error, Result};

/// Hooks for progress display; every method has a no-op default.
pub trait TrainProgress: Send + Sync {
    /// A named phase starts (listing, loading, features…).
    fn phase(&self, _what: &str) {}
    /// An epoch of `batches` batches starts.
    fn epoch_start(&self, _epoch: u32, _epochs: u32, _batches: u64) {}
    /// A training batch finished.
    fn batch(&self, _loss: f64) {}
    /// An epoch finished.
    fn epoch_end(&self, _metrics: &EpochMetrics) {}
}

/// Progress that shows nothing.
pub struct NoTrainProgress;
impl TrainProgress for NoTrainProgress {}

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

/// Optimiser and schedule state saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    /// Epochs completed.
    epoch: u32,
    lr: f64,
    best_val_loss: f64,
    bad_epochs: usize,
    metrics: Vec<EpochMetrics>,
    classes: Vec<String>,
    architecture: String,
    width: f32,
    input_size: usize,
    head_only: bool,
    seed: u64,
}

/// PyTorch's SGD: g ← ∇ + wd·p; b ← g (first step) or μ·b + g; p ← p − lr·b.
struct Sgd {
    params: Vec<(String, Tensor)>,
    buffers: BTreeMap<String, Tensor>,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        tch::no_grad(|| {
            for (name, p) in self.params.iter_mut() {
                let g = p.f_grad()?;
                if !g.defined() {
                    continue;
                }
                let d = if self.weight_decay != 0.0 {
                    g.f_add(&p.f_mul_scalar(self.weight_decay)?)?
                } else {
                    g.f_detach()?
                };
                let step = if self.momentum != 0.0 {
                    match self.buffers.get_mut(name) {
                        Some(b) => {
                            let _ = b.f_mul_scalar_(self.momentum)?;
                            let _ = b.f_add_(&d)?;
                            b.shallow_clone()
                        }
                        None => {
                            let mut b = d.f_zeros_like()?;
                            b.f_copy_(&d)?;
                            self.buffers.insert(name.clone(), b.shallow_clone());
                            b
                        }
                    }
                } else {
                    d
                };
                let _ = p.f_sub_(&step.f_mul_scalar(lr)?)?;
            }
            Ok(())
        })
    }
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
        }
        .validate()
        .map_err(|e| TrainError::Options(e.to_string()))?;
    }
    let resize = super::augment::eval_spec(input_size).resize;

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

    let cfg = config.clone();
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
        preprocess: crate::onnx::Preprocess::imagenet(u32::try_from(input_size).unwrap_or(u32::MAX)),
        mode: mode.to_owned(),
        from: config.from.as_ref().map(|p| p.display().to_string()),
        data: config.data.clone(),
        validation: val_source,
        train_images_per_class: fitted.train_counts.clone(),
        val_images_per_class: fitted.val_counts.clone(),
        skipped_images: skipped,
        epochs: fitted.metrics.last().map_or(0, |m| m.epoch),
        batch_size: config.batch_size,
        optimizer: format!(
            "SGD lr {} momentum {} weight decay {}, linear warm-up over {} epochs, lr ÷{} after {} epochs without a better validation loss",
            config.lr, config.momentum, config.weight_decay, config.warmup_epochs, config.lr_factor, config.lr_patience
        ),
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

struct Fitted {
    spec: AlexNetSpec,
    weights: AlexNetWeights,
    metrics: Vec<EpochMetrics>,
    test: Option<Tally>,
    resumed_after: Option<u32>,
    train_counts: BTreeMap<String, usize>,
    val_counts: BTreeMap<String, usize>,
}

fn fit(
    config: &TrainConfig,
    base: Option<crate::onnx::AlexNetModel>,
    classes: &[String],
    train: &[Sample],
    val: &[Sample],
    test: Option<&[Sample]>,
    progress: &dyn TrainProgress,
) -> Result<Fitted> {
    if let Some(n) = config.threads {
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
    }
    let device = torch_device(config.device)?;
    let n_classes = classes.len();

    // The network.
    let mut model = match base {
        Some(b) => {
            let mut m = AlexNet::new(b.spec.clone(), &b.weights, device)?;
            if config.head_only || b.spec.num_classes != n_classes {
                m.replace_head(n_classes, config.seed)?;
            }
            if config.head_only {
                m.freeze_all_but(HEAD)?;
            }
            m
        }
        None => {
            let spec = AlexNetSpec {
                variant: config.variant,
                num_classes: n_classes,
                width: config.width,
                input_size: config.input_size,
                seed: config.seed,
            };
            let w = super::model::initial_weights(&spec)?;
            AlexNet::new(spec, &w, device)?
        }
    };
    let mut aug = Augmenter::new(
        model.spec.input_size,
        config.augment,
        (config.augment.lighting > 0.0 && !config.head_only)
            .then(|| ColourPca::from_samples(train)),
    )?;
    let mut sgd = Sgd {
        params: model.trainable(),
        buffers: BTreeMap::new(),
        momentum: config.momentum,
        weight_decay: config.weight_decay,
    };

    let ckpt_dir = config.out.join(CHECKPOINT_DIR);
    let mut state = RunState {
        epoch: 0,
        lr: config.lr,
        best_val_loss: f64::INFINITY,
        bad_epochs: 0,
        metrics: Vec::new(),
        classes: classes.to_vec(),
        architecture: model.spec.variant.architecture().to_owned(),
        width: model.spec.width,
        input_size: model.spec.input_size,
        head_only: config.head_only,
        seed: config.seed,
    };
    let mut resumed_after = None;
    if config.resume {
        let loaded = load_checkpoint(&ckpt_dir, &mut model, &mut sgd, &state)?;
        resumed_after = Some(loaded.epoch);
        state = loaded;
        tracing::info!(epoch = state.epoch, "resuming from the last checkpoint");
    }

    // Head-only: the frozen features, once.
    let cached = if config.head_only {
        progress.phase("features");
        Some((
            features_of(&model, &mut aug, train)?,
            features_of(&model, &mut aug, val)?,
        ))
    } else {
        None
    };
    let train_labels: Vec<i64> = train.iter().map(|s| s.label as i64).collect();
    let val_labels = Tensor::f_from_slice(&val.iter().map(|s| s.label as i64).collect::<Vec<_>>())?;

    let epochs = u32::try_from(config.epochs).unwrap_or(u32::MAX);
    let batches = train.len().div_ceil(config.batch_size) as u64;
    let mut run_now = 0usize;
    while state.epoch < epochs {
        if config.stop_after.is_some_and(|n| run_now >= n) {
            break;
        }
        let epoch = state.epoch + 1;
        progress.epoch_start(epoch, epochs, batches);
        let t0 = Instant::now();
        let mut rng = Rng::derive(config.seed, u64::from(epoch));
        tch::manual_seed((rng.next_u64() >> 1) as i64);
        let mut order: Vec<usize> = (0..train.len()).collect();
        rng.shuffle(&mut order);
        let mut tally = Tally::default();
        let mut buf = vec![0f32; 0];
        let warmup_steps = (config.warmup_epochs * batches as f64).ceil();
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let step = (u64::from(epoch - 1) * batches + b as u64) as f64;
            let lr = if step < warmup_steps {
                state.lr * (step + 1.0) / warmup_steps
            } else {
                state.lr
            };
            let targets =
                Tensor::f_from_slice(&chunk.iter().map(|&i| train_labels[i]).collect::<Vec<_>>())?
                    .f_to_device(device)?;
            let logits = match &cached {
                Some((feats, _)) => {
                    let idx =
                        Tensor::f_from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>())?
                            .f_to_device(device)?;
                    model.head(&feats.f_index_select(0, &idx)?)?
                }
                None => {
                    let len = aug.image_len();
                    buf.resize(chunk.len() * len, 0.0);
                    for (k, &i) in chunk.iter().enumerate() {
                        aug.train_into(
                            &train[i].image,
                            &mut rng,
                            &mut buf[k * len..(k + 1) * len],
                        )?;
                    }
                    let s = model.spec.input_size as i64;
                    let x = Tensor::f_from_slice(&buf)?
                        .f_reshape([chunk.len() as i64, 3, s, s])?
                        .f_to_device(device)?;
                    model.forward(&x, true)?
                }
            };
            let loss = cross_entropy(&logits, &targets)?;
            sgd.zero_grad();
            loss.f_backward()?;
            sgd.step(lr)?;
            let loss_v = loss.f_double_value(&[])?;
            if !loss_v.is_finite() {
                return Err(TrainError::Options(format!(
                    "the training loss became {loss_v} in epoch {epoch}; lower --lr (now {lr}) or raise --warmup-epochs"
                ))
                .into());
            }
            tally.add(&logits.f_detach()?, &targets, loss_v)?;
            progress.batch(loss_v);
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let val_tally = match &cached {
            Some((_, vfeats)) => evaluate_features(&model, vfeats, &val_labels, config.batch_size)?,
            None => evaluate(&model, &mut aug, val, config.batch_size)?,
        };
        let m = EpochMetrics::new(
            epoch,
            state.lr,
            &tally,
            &val_tally,
            train_secs,
            t0.elapsed().as_secs_f64(),
        );
        // ReduceLROnPlateau (mode min, relative threshold 1e-4).
        if m.val_loss < state.best_val_loss * (1.0 - 1e-4) {
            state.best_val_loss = m.val_loss;
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
            if state.bad_epochs > config.lr_patience {
                state.lr /= config.lr_factor;
                state.bad_epochs = 0;
                tracing::info!(
                    lr = state.lr,
                    epoch,
                    "validation loss stopped improving; learning rate lowered"
                );
            }
        }
        progress.epoch_end(&m);
        state.metrics.push(m);
        state.epoch = epoch;
        metrics::write_parquet(&config.out.join(METRICS_FILE), &state.metrics)?;
        save_checkpoint(&ckpt_dir, &model, &sgd, &state)?;
        run_now += 1;
    }

    let test_tally = match test {
        Some(t) if !t.is_empty() => Some(evaluate(&model, &mut aug, t, config.batch_size)?),
        _ => None,
    };
    Ok(Fitted {
        spec: model.spec.clone(),
        weights: model.weights()?,
        metrics: state.metrics,
        test: test_tally,
        resumed_after,
        train_counts: data::counts_per_class(train, classes),
        val_counts: data::counts_per_class(val, classes),
    })
}

/// Evaluation-mode logits of `samples` with the batch job's transform.
pub fn evaluate(
    model: &AlexNet,
    aug: &mut Augmenter,
    samples: &[Sample],
    batch: usize,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut buf = Vec::new();
    for chunk in samples.chunks(batch) {
        let x = eval_batch(model, aug, chunk, &mut buf)?;
        let labels: Vec<i64> = chunk.iter().map(|x| x.label as i64).collect();
        let (logits, targets, loss) = tch::no_grad(|| -> Result<_, TrainError> {
            scored(
                model.forward(&x, false)?,
                &Tensor::f_from_slice(&labels)?,
                model,
            )
        })?;
        tally.add(&logits, &targets, loss)?;
    }
    Ok(tally)
}

/// The batch job's view of each image in `chunk` as one `[n, 3, s, s]` tensor on the
/// model's device (`buf` is reused between calls).
fn eval_batch(
    model: &AlexNet,
    aug: &mut Augmenter,
    chunk: &[Sample],
    buf: &mut Vec<f32>,
) -> Result<Tensor> {
    let len = aug.image_len();
    let s = model.spec.input_size as i64;
    buf.resize(chunk.len() * len, 0.0);
    for (k, sample) in chunk.iter().enumerate() {
        aug.eval_into(&sample.image, &mut buf[k * len..(k + 1) * len])?;
    }
    Ok(Tensor::f_from_slice(buf)?
        .f_reshape([chunk.len() as i64, 3, s, s])?
        .f_to_device(model.device())?)
}

/// `(logits, targets on the model's device, mean cross-entropy)`.
fn scored(
    logits: Tensor,
    labels: &Tensor,
    model: &AlexNet,
) -> Result<(Tensor, Tensor, f64), TrainError> {
    let targets = labels.f_to_device(model.device())?;
    let loss = cross_entropy(&logits, &targets)?.f_double_value(&[])?;
    Ok((logits, targets, loss))
}

/// Mean cross-entropy of `logits` `[N, classes]` against class indices `targets`.
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor, TrainError> {
    Ok(logits.f_log_softmax(-1, Kind::Float)?.f_nll_loss(
        targets,
        None::<Tensor>,
        tch::Reduction::Mean,
        -100,
    )?)
}

fn features_of(model: &AlexNet, aug: &mut Augmenter, samples: &[Sample]) -> Result<Tensor> {
    let mut parts = Vec::new();
    let mut buf = Vec::new();
    for chunk in samples.chunks(256) {
        let x = eval_batch(model, aug, chunk, &mut buf)?;
        parts.push(tch::no_grad(|| model.features(&x, false))?);
    }
    Ok(Tensor::f_cat(&parts, 0)?)
}

fn evaluate_features(
    model: &AlexNet,
    feats: &Tensor,
    labels: &Tensor,
    batch: usize,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let n = feats.size().first().copied().unwrap_or(0);
    let mut start = 0i64;
    while start < n {
        let len = (batch as i64).min(n - start);
        let (logits, targets, loss) = tch::no_grad(|| -> Result<_, TrainError> {
            scored(
                model.head(&feats.f_narrow(0, start, len)?)?,
                &labels.f_narrow(0, start, len)?,
                model,
            )
        })?;
        tally.add(&logits, &targets, loss)?;
        start += len;
    }
    Ok(tally)
}

const CKPT_WEIGHTS: &str = "last.safetensors";
const CKPT_STATE: &str = "last.json";
const MOMENTUM_PREFIX: &str = "momentum/";

fn save_checkpoint(dir: &Path, model: &AlexNet, sgd: &Sgd, state: &RunState) -> Result<()> {
    let ck = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| ck(e.to_string()))?;
    let mut named: Vec<(String, Tensor)> = model.parameters();
    for (name, b) in &sgd.buffers {
        named.push((format!("{MOMENTUM_PREFIX}{name}"), b.shallow_clone()));
    }
    let cpu: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(n, t)| Ok((n, t.f_detach()?.f_to_device(tch::Device::Cpu)?)))
        .collect::<Result<_, TrainError>>()?;
    let tmp = dir.join(format!("{CKPT_WEIGHTS}.tmp"));
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| ck(e.to_string()))?;
    let text = serde_json::to_string_pretty(state).map_err(|e| ck(e.to_string()))?;
    let tmp_state = dir.join(format!("{CKPT_STATE}.tmp"));
    std::fs::write(&tmp_state, text).map_err(|e| ck(e.to_string()))?;
    // Weights first, then the state that names their epoch.
    std::fs::rename(&tmp, dir.join(CKPT_WEIGHTS)).map_err(|e| ck(e.to_string()))?;
    std::fs::rename(&tmp_state, dir.join(CKPT_STATE)).map_err(|e| ck(e.to_string()))?;
    // A copy per epoch, so any epoch can be exported or resumed from later.
    let keep = dir.join(format!("epoch-{:03}.safetensors", state.epoch));
    std::fs::copy(dir.join(CKPT_WEIGHTS), keep).map_err(|e| ck(e.to_string()))?;
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    model: &mut AlexNet,
    sgd: &mut Sgd,
    expect: &RunState,
) -> Result<RunState> {
    let ck = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join(CKPT_STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| {
        ck(format!(
            "--resume needs {} from an earlier run with the same --out: {e}",
            state_path.display()
        ))
    })?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|e| ck(format!("{}: {e}", state_path.display())))?;
    if state.classes != expect.classes
        || state.architecture != expect.architecture
        || state.input_size != expect.input_size
        || state.width != expect.width
        || state.head_only != expect.head_only
    {
        return Err(ck(format!(
            "the checkpoint was made for {} (width {}, input {}, classes {:?}, head-only {}); this run is {} (width {}, input {}, classes {:?}, head-only {})",
            state.architecture, state.width, state.input_size, state.classes, state.head_only,
            expect.architecture, expect.width, expect.input_size, expect.classes, expect.head_only
        ))
        .into());
    }
    let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.join(CKPT_WEIGHTS))
        .map_err(|e| ck(e.to_string()))?
        .into_iter()
        .collect();
    model.load(&saved)?;
    sgd.buffers.clear();
    for (name, _) in &sgd.params {
        if let Some(b) = saved.get(&format!("{MOMENTUM_PREFIX}{name}")) {
            sgd.buffers
                .insert(name.clone(), b.f_to_device(model.device())?);
        }
    }
    Ok(state)
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Train(format!("libtorch: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_matches_pytorchs_update_rule() {
        // p = 1, grad = 2 each step, wd 0.5, momentum 0.9, lr 0.1:
        // step 1: d = 2 + 0.5·1 = 2.5, b = 2.5, p = 1 − 0.25 = 0.75
        // step 2: d = 2 + 0.375 = 2.375, b = 0.9·2.5 + 2.375 = 4.625, p = 0.75 − 0.4625
        let p = Tensor::from_slice(&[1f32]).set_requires_grad(true);
        let mut sgd = Sgd {
            params: vec![("p".into(), p.shallow_clone())],
            buffers: BTreeMap::new(),
            momentum: 0.9,
            weight_decay: 0.5,
        };
        for _ in 0..2 {
            sgd.zero_grad();
            (&p * 2.0).sum(Kind::Float).backward();
            sgd.step(0.1).unwrap();
        }
        let v = p.double_value(&[0]);
        assert!((v - (0.75 - 0.4625)).abs() < 1e-6, "{v}");
    }
}
