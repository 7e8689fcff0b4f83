//! AlexNet in libtorch, parameter for parameter the network the crate's ONNX writer
//! emits: the same [`AlexNetSpec`], the same `state_dict` names (`features.0.weight`,
//! …, `classifier.6.bias`), weights moved in and out as [`AlexNetWeights`].
//!
//! The forward pass follows `torchvision.models.alexnet`: convolutions with ReLU and
//! 3×3/2 max pools, adaptive average pool to 6×6, dropout 0.5 before the first two
//! fully connected layers. The paper layout adds local response normalisation after
//! the first two convolutions and groups convolutions 2, 4 and 5 in two.
//!
//! A fresh model can train with batch normalisation after every convolution
//! ([`AlexNet::add_batch_norm`]); its parameters are named `bn.<conv index>.*` and
//! [`AlexNet::weights`] folds them into the convolutions, so what is exported (and
//! what the batch job, `--from` and the parity tests see) is a plain AlexNet.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::error::TrainError;
use crate::onnx::alexnet::{FeatureLayer, LRN_BETA, LRN_BIAS, LRN_PAPER_ALPHA, LRN_SIZE};
use crate::onnx::{AlexNetSpec, AlexNetWeights, F32Tensor};

/// Dropout probability of the classifier (the paper's 0.5).
pub const DROPOUT: f64 = 0.5;

/// Batch normalisation's ε and running-average momentum (PyTorch's defaults).
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// Name of a batch-normalisation tensor after convolution `features.<index>`.
fn bn_name(index: usize, what: &str) -> String {
    format!("bn.{index}.{what}")
}

/// The last layer, the one head-only fine-tuning replaces.
pub const HEAD: &str = "classifier.6";

/// Standard deviation of the last layer's initial weights: the paper's N(0, 0.01).
///
/// The other layers keep the He initialisation of [`AlexNetSpec::random_weights`]
/// (each is followed by a ReLU). The last one is not, and He-sized weights there start
/// training with logits in the tens: the first updates are then large enough to leave
/// every ReLU of the classifier dead, and the loss sits at ln(classes) for good.
pub const HEAD_INIT_STD: f32 = 0.01;

/// Initial weights for training `spec`: He normal everywhere but the last layer, which
/// is drawn from N(0, [`HEAD_INIT_STD`]²); zero biases. Seeded by `spec.seed`.
pub fn initial_weights(spec: &AlexNetSpec) -> Result<AlexNetWeights, TrainError> {
    let mut w = spec
        .random_weights()
        .map_err(|e| TrainError::Options(crate::error::report(&e)))?;
    let name = format!("{HEAD}.weight");
    let head = w
        .get_mut(&name)
        .ok_or_else(|| TrainError::Model(format!("no `{name}` in fresh weights")))?;
    // random_weights draws N(0, 2/fan_in); rescale the same draw to the head's σ.
    let fan_in = head.shape().get(1).copied().unwrap_or(1).max(1);
    let scale = HEAD_INIT_STD / (2.0 / fan_in as f32).sqrt();
    for v in head.data_mut() {
        *v *= scale;
    }
    Ok(w)
}

/// An AlexNet whose parameters live on a libtorch device.
pub struct AlexNet {
    pub spec: AlexNetSpec,
    device: tch::Device,
    layers: Vec<FeatureLayer>,
    /// Parameters by `state_dict` name, with `bn.*` when batch normalisation is on.
    params: BTreeMap<String, Tensor>,
    batch_norm: bool,
    /// Dropout probability before the first two fully connected layers.
    pub dropout: f64,
}

impl AlexNet {
    /// A model with `weights` (checked against `spec`) on `device`. Every parameter
    /// requires gradients; see [`AlexNet::freeze_all_but`].
    pub fn new(
        spec: AlexNetSpec,
        weights: &AlexNetWeights,
        device: tch::Device,
    ) -> Result<Self, TrainError> {
        weights
            .check(&spec)
            .map_err(|e| TrainError::Model(crate::error::report(&e)))?;
        let mut params = BTreeMap::new();
        for (name, t) in weights.iter() {
            let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            let p = Tensor::f_from_slice(t.data())?
                .f_reshape(shape.as_slice())?
                .f_to_device(device)?
                .f_set_requires_grad(true)?;
            params.insert(name.to_owned(), p);
        }
        Ok(AlexNet {
            layers: spec.variant.feature_layers(),
            spec,
            device,
            params,
            batch_norm: false,
            dropout: DROPOUT,
        })
    }

    /// Adds batch normalisation after every convolution: γ = 1, β = 0, running mean
    /// 0 and variance 1 (the running statistics take no gradient).
    pub fn add_batch_norm(&mut self) -> Result<(), TrainError> {
        for layer in &self.layers {
            if let FeatureLayer::Conv { index, .. } = *layer {
                let c = self.param(&format!("features.{index}.weight"))?.size()[0];
                let opts = (Kind::Float, self.device);
                for (what, value, grad) in [
                    ("weight", 1.0, true),
                    ("bias", 0.0, true),
                    ("running_mean", 0.0, false),
                    ("running_var", 1.0, false),
                ] {
                    let t = Tensor::f_full([c], value, opts)?.f_set_requires_grad(grad)?;
                    self.params.insert(bn_name(index, what), t);
                }
            }
        }
        self.batch_norm = true;
        Ok(())
    }

    pub fn has_batch_norm(&self) -> bool {
        self.batch_norm
    }

    pub fn device(&self) -> tch::Device {
        self.device
    }

    fn param(&self, name: &str) -> Result<&Tensor, TrainError> {
        self.params
            .get(name)
            .ok_or_else(|| TrainError::Model(format!("parameter `{name}` is missing")))
    }

    /// Parameters by name (sorted), shared with the model (updates are seen).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    }

    /// Parameters that take part in training (requires_grad), sorted by name.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.parameters()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect()
    }

    /// Stops gradients for every parameter whose name does not start with `prefix.`.
    pub fn freeze_all_but(&mut self, prefix: &str) -> Result<(), TrainError> {
        let keep = format!("{prefix}.");
        for (name, t) in self.params.iter_mut() {
            if !name.starts_with(&keep) {
                *t = t.f_set_requires_grad(false)?;
            }
        }
        Ok(())
    }

    /// Replaces the last layer with fresh weights for `num_classes` classes
    /// ([`initial_weights`]: N(0, 0.01²), zero bias).
    pub fn replace_head(&mut self, num_classes: usize, seed: u64) -> Result<(), TrainError> {
        let spec = AlexNetSpec {
            num_classes,
            seed,
            ..self.spec.clone()
        };
        let fresh = initial_weights(&spec)?;
        for suffix in ["weight", "bias"] {
            let name = format!("{HEAD}.{suffix}");
            let t = fresh
                .get(&name)
                .ok_or_else(|| TrainError::Model(format!("no `{name}` in fresh weights")))?;
            let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            let p = Tensor::f_from_slice(t.data())?
                .f_reshape(shape.as_slice())?
                .f_to_device(self.device)?
                .f_set_requires_grad(true)?;
            self.params.insert(name, p);
        }
        self.spec = spec;
        Ok(())
    }

    /// The image features the last layer sees: everything up to and including the
    /// ReLU after `classifier.4` (`[N, hidden]`).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor, TrainError> {
        let mut x = x.shallow_clone();
        for layer in &self.layers {
            x = match *layer {
                FeatureLayer::Conv {
                    index,
                    stride,
                    pad,
                    groups,
                } => {
                    let (stride, pad) = (stride as i64, pad as i64);
                    let y = x.f_conv2d(
                        self.param(&format!("features.{index}.weight"))?,
                        Some(self.param(&format!("features.{index}.bias"))?),
                        [stride, stride],
                        [pad, pad],
                        [1, 1],
                        groups as i64,
                    )?;
                    if self.batch_norm {
                        y.f_batch_norm(
                            Some(self.param(&bn_name(index, "weight"))?),
                            Some(self.param(&bn_name(index, "bias"))?),
                            Some(self.param(&bn_name(index, "running_mean"))?),
                            Some(self.param(&bn_name(index, "running_var"))?),
                            train,
                            BN_MOMENTUM,
                            BN_EPS,
                            true,
                        )?
                    } else {
                        y
                    }
                }
                FeatureLayer::Relu => x.f_relu()?,
                FeatureLayer::Lrn => local_response_norm(&x)?,
                FeatureLayer::MaxPool => x.f_max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)?,
            };
        }
        let x = x.f_adaptive_avg_pool2d([6, 6])?.f_flatten(1, -1)?;
        let x = x.f_dropout(self.dropout, train)?;
        let x = x
            .f_linear(
                self.param("classifier.1.weight")?,
                Some(self.param("classifier.1.bias")?),
            )?
            .f_relu()?
            .f_dropout(self.dropout, train)?;
        Ok(x.f_linear(
            self.param("classifier.4.weight")?,
            Some(self.param("classifier.4.bias")?),
        )?
        .f_relu()?)
    }

    /// The last layer on features from [`AlexNet::features`].
    pub fn head(&self, features: &Tensor) -> Result<Tensor, TrainError> {
        Ok(features.f_linear(
            self.param(&format!("{HEAD}.weight"))?,
            Some(self.param(&format!("{HEAD}.bias"))?),
        )?)
    }

    /// Logits `[N, classes]` for images `[N, 3, S, S]`; `train` turns dropout on.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TrainError> {
        self.head(&self.features(x, train)?)
    }

    /// The current weights as the crate's ONNX weight type (copied to the CPU), with
    /// batch normalisation folded into the convolutions: W' = W·s and
    /// b' = (b − μ)·s + β per output channel, s = γ / √(σ² + ε) — the same function in
    /// evaluation mode.
    pub fn weights(&self) -> Result<AlexNetWeights, TrainError> {
        let mut out = BTreeMap::new();
        for (name, t) in &self.params {
            if !name.starts_with("bn.") {
                out.insert(name.clone(), to_f32_tensor(t)?);
            }
        }
        if self.batch_norm {
            tch::no_grad(|| -> Result<(), TrainError> {
                for layer in &self.layers {
                    let FeatureLayer::Conv { index, .. } = *layer else {
                        continue;
                    };
                    let scale = self.param(&bn_name(index, "weight"))?.f_div(
                        &self
                            .param(&bn_name(index, "running_var"))?
                            .f_add_scalar(BN_EPS)?
                            .f_sqrt()?,
                    )?;
                    let w = self.param(&format!("features.{index}.weight"))?;
                    let b = self.param(&format!("features.{index}.bias"))?;
                    let w = w.f_mul(&scale.f_reshape([-1, 1, 1, 1])?)?;
                    let b = b
                        .f_sub(self.param(&bn_name(index, "running_mean"))?)?
                        .f_mul(&scale)?
                        .f_add(self.param(&bn_name(index, "bias"))?)?;
                    out.insert(format!("features.{index}.weight"), to_f32_tensor(&w)?);
                    out.insert(format!("features.{index}.bias"), to_f32_tensor(&b)?);
                }
                Ok(())
            })?;
        }
        Ok(AlexNetWeights::new(out))
    }

    /// Overwrites parameters from `(name, tensor)` pairs (a checkpoint); every
    /// parameter must be present with its shape.
    pub fn load(&mut self, saved: &BTreeMap<String, Tensor>) -> Result<(), TrainError> {
        tch::no_grad(|| -> Result<(), TrainError> {
            for (name, p) in self.params.iter_mut() {
                let src = saved
                    .get(name)
                    .ok_or_else(|| TrainError::Model(format!("parameter `{name}` is missing")))?;
                if src.size() != p.size() {
                    return Err(TrainError::Model(format!(
                        "parameter `{name}` has shape {:?}, expected {:?}",
                        src.size(),
                        p.size()
                    )));
                }
                p.f_copy_(&src.f_to_device(self.device)?)?;
            }
            Ok(())
        })
    }
}

/// A libtorch tensor as an [`F32Tensor`] (CPU copy).
pub fn to_f32_tensor(t: &Tensor) -> Result<F32Tensor, TrainError> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let flat = t
        .f_detach()?
        .f_to_device(tch::Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    let data = Vec::<f32>::try_from(&flat)?;
    F32Tensor::new(shape, data).map_err(|e| TrainError::Model(crate::error::report(&e)))
}

/// The paper's local response normalisation over n = 5 channels (α = 1e-4, β = 0.75,
/// k = 2): b = a / (k + α · Σ a²)^β, with α on the *sum* of squares as in the paper —
/// what the exported ONNX `LRN` (alpha = n·α, which ONNX divides by n) computes.
/// (PyTorch's `nn.LocalResponseNorm(5, 1e-4, …)` divides α by n; it would be
/// `LocalResponseNorm(5, 5e-4, 0.75, 2)`.)
fn local_response_norm(x: &Tensor) -> Result<Tensor, TrainError> {
    const SIZE: i64 = LRN_SIZE;
    // The window average times n is the sum.
    const ALPHA: f64 = LRN_PAPER_ALPHA * LRN_SIZE as f64;
    const BETA: f64 = LRN_BETA as f64;
    const K: f64 = LRN_BIAS as f64;
    // Average of squares over a window of channels, zero-padded (as PyTorch does).
    let sq = x.f_mul(x)?.f_unsqueeze(1)?; // [N, 1, C, H, W]
    let padded = sq.f_constant_pad_nd([0, 0, 0, 0, SIZE / 2, (SIZE - 1) / 2])?;
    let avg = padded
        .f_avg_pool3d([SIZE, 1, 1], [1, 1, 1], [0, 0, 0], false, true, None::<i64>)?
        .f_squeeze_dim(1)?;
    let div = avg
        .f_mul_scalar(ALPHA)?
        .f_add_scalar(K)?
        .f_pow_tensor_scalar(BETA)?;
    Ok(x.f_div(&div)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::Variant;

    /// Evaluation-mode logits of a model trained with batch normalisation equal those
    /// of a plain AlexNet built from its folded weights (what is exported).
    #[test]
    fn folded_batch_norm_is_the_same_function_in_evaluation_mode() {
        tch::manual_seed(7);
        let spec = AlexNetSpec {
            variant: Variant::Torchvision,
            num_classes: 5,
            width: 0.125,
            input_size: 63,
            seed: 3,
            input: crate::batch::Element::U8,
        };
        let mut m = AlexNet::new(
            spec.clone(),
            &initial_weights(&spec).unwrap(),
            tch::Device::Cpu,
        )
        .unwrap();
        m.add_batch_norm().unwrap();
        // Non-trivial γ, β and running statistics: perturb γ and β, then a few
        // training-mode passes move the running mean and variance.
        tch::no_grad(|| {
            for (name, p) in m.params.iter_mut() {
                if name.starts_with("bn.") && (name.ends_with(".weight") || name.ends_with(".bias"))
                {
                    let noise = p.rand_like() - 0.5;
                    let _ = p.g_add_(&noise);
                }
            }
        });
        for _ in 0..3 {
            let x = Tensor::randn([4, 3, 63, 63], (Kind::Float, tch::Device::Cpu));
            let _ = m.forward(&x, true).unwrap();
        }
        let x = Tensor::randn([3, 3, 63, 63], (Kind::Float, tch::Device::Cpu));
        let with_bn = tch::no_grad(|| m.forward(&x, false)).unwrap();
        let folded = m.weights().unwrap();
        assert!(folded.iter().all(|(n, _)| !n.starts_with("bn.")));
        let plain = AlexNet::new(spec, &folded, tch::Device::Cpu).unwrap();
        let without = tch::no_grad(|| plain.forward(&x, false)).unwrap();
        let diff = (&with_bn - &without).abs().max().double_value(&[]);
        let scale = with_bn.abs().max().double_value(&[]);
        assert!(scale > 0.0);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "max |Δ| {diff} (largest |logit| {scale})"
        );
    }
}
