//! The loop: epochs of SGD, evaluation, the learning-rate schedule, head-only features.

use std::collections::BTreeMap;
use std::time::Instant;

use tch::{Kind, Tensor};

use super::checkpoint::{load_checkpoint, save_checkpoint, RunState};
use super::job::TrainProgress;
use super::sgd::Sgd;
use crate::onnx::{AlexNetSpec, AlexNetWeights};
use crate::train::augment::{Augmenter, ColourPca, Rng};
use crate::train::data::{self, Sample};
use crate::train::export::{CHECKPOINT_DIR, METRICS_FILE};
use crate::train::metrics::{self, EpochMetrics, Tally};
use crate::train::model::{AlexNet, HEAD};
use crate::train::{torch_device, TrainConfig, TrainError};
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
            let w = crate::train::model::initial_weights(&spec)?;
            AlexNet::new(spec, &w, device)?
        }
    };
    let mut aug = Augmenter::new(
        model.spec.input_size,
        config.augment,
        (config.augment.lighting > 0.0 && !config.head_only)
            .then(|| ColourPca::from_samples(train)),
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
    let mut sgd = Sgd {
        params,
        buffers: BTreeMap::new(),
        momentum: config.momentum,
        weight_decay: config.weight_decay,
        lr_scale,
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
