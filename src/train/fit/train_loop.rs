//! The loop: epochs of the recipe's optimiser, evaluation, the learning-rate schedule,
//! head-only features.

use std::collections::BTreeMap;
use std::time::Instant;

use tch::{Kind, Tensor};

use super::batches::{run_epoch, BatchMaker};
use super::checkpoint::{load_checkpoint, save_checkpoint, RunState};
use super::optim::{Optimizer, Rule, EMA};
use super::progress::TrainProgress;
use crate::error::TrainError;
use crate::onnx::{AlexNetSpec, AlexNetWeights};
use crate::train::augment::{ColourPca, Rng};
use crate::train::config::{torch_device, Optimiser, Recipe, TrainConfig};
use crate::train::data::{self, Sample};
use crate::train::export::{CHECKPOINT_DIR, METRICS_FILE};
use crate::train::metrics::{self, EpochMetrics, Tally};
use crate::train::model::{AlexNet, HEAD};
use crate::Result;

pub(super) struct Fitted {
    pub(super) spec: AlexNetSpec,
    pub(super) weights: AlexNetWeights,
    pub(super) metrics: Vec<EpochMetrics>,
    pub(super) test: Option<Tally>,
    pub(super) resumed_after: Option<u32>,
    pub(super) train_counts: BTreeMap<String, usize>,
    pub(super) val_counts: BTreeMap<String, usize>,
}

pub(super) fn fit(
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
    if device.is_cuda() {
        // Fixed input shapes: let cuDNN time its convolution algorithms once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
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
                input: crate::batch::Element::U8,
            };
            let w = crate::train::model::initial_weights(&spec)?;
            let mut m = AlexNet::new(spec, &w, device)?;
            if config.batch_norm {
                m.add_batch_norm()?;
            }
            m
        }
    };
    model.dropout = config.dropout;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut maker = BatchMaker::new(
        model.spec.input_size,
        config.augment,
        (config.augment.lighting > 0.0 && !config.head_only)
            .then(|| ColourPca::from_samples(train)),
        workers,
    )?;
    let params = model.trainable();
    // Fine-tuning with --lr-backbone: every pretrained layer at that rate (as a
    // fraction of --lr, so the schedule scales both), the new head at --lr.
    let lr_scale = match config.lr_backbone {
        Some(backbone) => params
            .iter()
            .map(|(name, _)| {
                if name.starts_with(HEAD) {
                    1.0
                } else {
                    backbone / config.lr
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let rule = match config.optimiser {
        Optimiser::Sgd => Rule::Sgd {
            momentum: config.momentum,
        },
        Optimiser::AdamW => Rule::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    };
    let mut opt = Optimizer::new(params, rule, config.weight_decay);
    opt.lr_scale = lr_scale;

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
        recipe: config.recipe.name().to_owned(),
        optimiser: config.optimiser.name().to_owned(),
        ema: config.ema,
        batch_norm: model.has_batch_norm(),
        steps: 0,
    };
    let mut resumed_after = None;
    if config.resume {
        let loaded = load_checkpoint(&ckpt_dir, &mut model, &mut opt, &state)?;
        resumed_after = Some(loaded.epoch);
        state = loaded;
        tracing::info!(epoch = state.epoch, "resuming from the last checkpoint");
    }

    // Head-only: the frozen features, once.
    let cached = if config.head_only {
        progress.phase("features");
        Some((
            features_of(&model, &mut maker, train)?,
            features_of(&model, &mut maker, val)?,
        ))
    } else {
        None
    };
    let train_labels: Vec<i64> = train.iter().map(|s| s.label as i64).collect();
    let val_labels = Tensor::f_from_slice(&val.iter().map(|s| s.label as i64).collect::<Vec<_>>())?;

    let epochs = u32::try_from(config.epochs).unwrap_or(u32::MAX);
    let batches = train.len().div_ceil(config.batch_size) as u64;
    let schedule = Schedule {
        recipe: config.recipe,
        warmup_steps: (config.warmup_epochs * batches as f64).ceil(),
        total_steps: (u64::from(epochs) * batches) as f64,
    };
    // The weights the moving average follows (shared with the model): every one that
    // changes, batch normalisation's statistics included; with the head alone trained,
    // only the head, so the frozen layers are exported exactly as they came.
    let all_params = if config.head_only {
        model.trainable()
    } else {
        model.parameters()
    };
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
        let epoch_seed = rng.next_u64();
        let mut tally = Tally::default();
        let mut last_lr = state.lr;
        let mut step = |b: usize, chunk: &[usize], images: Option<&[f32]>| -> Result<()> {
            let global = (u64::from(epoch - 1) * batches + b as u64) as f64;
            let lr = schedule.lr(state.lr, global);
            last_lr = lr;
            let targets =
                Tensor::f_from_slice(&chunk.iter().map(|&i| train_labels[i]).collect::<Vec<_>>())?
                    .f_to_device(device)?;
            let logits = match (&cached, images) {
                (Some((feats, _)), _) => {
                    let idx =
                        Tensor::f_from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>())?
                            .f_to_device(device)?;
                    model.head(&feats.f_index_select(0, &idx)?)?
                }
                (None, Some(buf)) => {
                    let s = model.spec.input_size as i64;
                    let x = Tensor::f_from_slice(buf)?
                        .f_reshape([chunk.len() as i64, 3, s, s])?
                        .f_to_device(device)?;
                    model.forward(&x, true)?
                }
                (None, None) => {
                    unreachable!("images are made for every batch without cached features")
                }
            };
            let loss = smoothed_cross_entropy(&logits, &targets, config.label_smoothing)?;
            opt.zero_grad();
            loss.f_backward()?;
            opt.step(lr)?;
            if config.ema > 0.0 {
                update_ema(&mut opt.state, &all_params, config.ema, opt.steps)?;
            }
            let loss_v = loss.f_double_value(&[])?;
            if !loss_v.is_finite() {
                return Err(TrainError::Options(format!(
                    "the training loss became {loss_v} in epoch {epoch}; lower --lr (now {lr}) or raise --warmup-epochs"
                ))
                .into());
            }
            tally.add(&logits.f_detach()?, &targets, loss_v)?;
            progress.batch(loss_v);
            Ok(())
        };
        if cached.is_some() {
            for (b, chunk) in order.chunks(config.batch_size).enumerate() {
                step(b, chunk, None)?;
            }
        } else {
            run_epoch(
                &mut maker,
                train,
                &order,
                config.batch_size,
                epoch_seed,
                |b, chunk, images| step(b, chunk, Some(images)),
            )?;
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let live = swap_in_ema(&mut model, &opt.state)?;
        let val_tally = match &cached {
            Some((_, vfeats)) => evaluate_features(&model, vfeats, &val_labels, config.batch_size),
            None => evaluate_with(&model, &mut maker, val, config.batch_size),
        };
        if let Some(live) = live {
            model.load(&live)?;
        }
        let val_tally = val_tally?;
        let m = EpochMetrics::new(
            epoch,
            last_lr,
            &tally,
            &val_tally,
            train_secs,
            t0.elapsed().as_secs_f64(),
        );
        if config.recipe == Recipe::Paper {
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
        } else {
            state.best_val_loss = state.best_val_loss.min(m.val_loss);
        }
        progress.epoch_end(&m);
        state.metrics.push(m);
        state.epoch = epoch;
        state.steps = opt.steps;
        metrics::write_parquet(&config.out.join(METRICS_FILE), &state.metrics)?;
        save_checkpoint(&ckpt_dir, &model, &opt, &state, config.keep_epochs)?;
        run_now += 1;
    }

    // From here on the model is the moving average, when there is one.
    swap_in_ema(&mut model, &opt.state)?;
    let test_tally = match test {
        Some(t) if !t.is_empty() => Some(evaluate_with(&model, &mut maker, t, config.batch_size)?),
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

/// Moves each weight's moving average (kept in the optimiser's state, so checkpoints
/// carry it) towards the weight after optimiser step `step` (from 1).
fn update_ema(
    state: &mut std::collections::BTreeMap<String, Tensor>,
    params: &[(String, Tensor)],
    decay: f64,
    step: u64,
) -> Result<(), TrainError> {
    // Early averages would be dominated by the random start: ramp the decay up.
    let t = step as f64;
    let d = decay.min((1.0 + t) / (10.0 + t));
    tch::no_grad(|| {
        for (name, p) in params {
            if !p.is_floating_point() {
                continue;
            }
            let key = format!("{EMA}{name}");
            match state.get_mut(&key) {
                Some(avg) => {
                    let _ = avg.f_mul_scalar_(d)?;
                    let _ = avg.f_add_(&p.f_mul_scalar(1.0 - d)?)?;
                }
                None => {
                    state.insert(key, deep_copy(p)?);
                }
            }
        }
        Ok(())
    })
}

/// A copy of `t` with storage of its own, outside autograd.
fn deep_copy(t: &Tensor) -> Result<Tensor, TrainError> {
    let mut copy = t.f_zeros_like()?;
    tch::no_grad(|| copy.f_copy_(t))?;
    Ok(copy)
}

/// Loads the moving averages into the model; returns copies of the weights they
/// replaced (to load back), or `None` when there are no averages.
fn swap_in_ema(
    model: &mut AlexNet,
    state: &std::collections::BTreeMap<String, Tensor>,
) -> Result<Option<std::collections::BTreeMap<String, Tensor>>, TrainError> {
    if !state.keys().any(|k| k.starts_with(EMA)) {
        return Ok(None);
    }
    let mut live = std::collections::BTreeMap::new();
    let mut averaged = std::collections::BTreeMap::new();
    for (name, p) in model.parameters() {
        let copy = deep_copy(&p)?;
        let avg = match state.get(&format!("{EMA}{name}")) {
            Some(a) => a.shallow_clone(),
            None => copy.shallow_clone(),
        };
        averaged.insert(name.clone(), avg);
        live.insert(name, copy);
    }
    model.load(&averaged)?;
    Ok(Some(live))
}

/// The learning rate of each optimiser step.
struct Schedule {
    recipe: Recipe,
    warmup_steps: f64,
    total_steps: f64,
}

impl Schedule {
    /// Step `step` (from 0, over the whole run): a linear warm-up to `base` over
    /// `warmup_steps`, then `base` (the paper's plateau rule lowers `base` between
    /// epochs) or a cosine decay to zero at the last step (modern).
    fn lr(&self, base: f64, step: f64) -> f64 {
        if step < self.warmup_steps {
            return base * (step + 1.0) / self.warmup_steps;
        }
        match self.recipe {
            Recipe::Paper => base,
            Recipe::Modern => {
                let span = (self.total_steps - self.warmup_steps).max(1.0);
                let t = ((step - self.warmup_steps) / span).clamp(0.0, 1.0);
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Evaluation-mode logits of `samples` with the batch job's transform, the images
/// prepared on every core.
pub fn evaluate(model: &AlexNet, samples: &[Sample], batch: usize) -> Result<Tally> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut maker = BatchMaker::new(
        model.spec.input_size,
        crate::train::augment::AugmentConfig::default(),
        None,
        workers,
    )?;
    evaluate_with(model, &mut maker, samples, batch)
}

fn evaluate_with(
    model: &AlexNet,
    maker: &mut BatchMaker,
    samples: &[Sample],
    batch: usize,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut buf = Vec::new();
    for chunk in samples.chunks(batch) {
        let x = eval_batch(model, maker, chunk, &mut buf)?;
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
    maker: &mut BatchMaker,
    chunk: &[Sample],
    buf: &mut Vec<f32>,
) -> Result<Tensor> {
    let len = maker.image_len();
    let s = model.spec.input_size as i64;
    buf.resize(chunk.len() * len, 0.0);
    maker.eval_batch(chunk, buf)?;
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
    smoothed_cross_entropy(logits, targets, 0.0)
}

/// Cross-entropy against targets smoothed by `eps` (PyTorch's `label_smoothing`):
/// (1 − ε)·NLL + ε·mean over classes of −log p.
fn smoothed_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    eps: f64,
) -> Result<Tensor, TrainError> {
    let logp = logits.f_log_softmax(-1, Kind::Float)?;
    let nll = logp.f_nll_loss(targets, None::<Tensor>, tch::Reduction::Mean, -100)?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let uniform = logp
        .f_mean_dim(-1, false, Kind::Float)?
        .f_mean(Kind::Float)?
        .f_neg()?;
    Ok(nll
        .f_mul_scalar(1.0 - eps)?
        .f_add(&uniform.f_mul_scalar(eps)?)?)
}

fn features_of(model: &AlexNet, maker: &mut BatchMaker, samples: &[Sample]) -> Result<Tensor> {
    let mut parts = Vec::new();
    let mut buf = Vec::new();
    for chunk in samples.chunks(256) {
        let x = eval_batch(model, maker, chunk, &mut buf)?;
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
