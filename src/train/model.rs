//! AlexNet in libtorch, parameter for parameter the network the crate's ONNX writer
//! emits: the same [`AlexNetSpec`], the same `state_dict` names (`features.0.weight`,
//! …, `classifier.6.bias`), weights moved in and out as [`AlexNetWeights`].
//!
//! The forward pass follows `torchvision.models.alexnet`: convolutions with ReLU and
//! 3×3/2 max pools, adaptive average pool to 6×6, dropout 0.5 before the first two
//! fully connected layers. The paper layout adds local response normalisation after
//! the first two convolutions and groups convolutions 2, 4 and 5 in two.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use super::TrainError;
use crate::onnx::alexnet::{FeatureLayer, LRN_BETA, LRN_BIAS, LRN_PAPER_ALPHA, LRN_SIZE};
use crate::onnx::{AlexNetSpec, AlexNetWeights, F32Tensor};

/// Dropout probability of the classifier (the paper's 0.5).
pub const DROPOUT: f64 = 0.5;

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
        .map_err(|e| TrainError::Options(e.to_string()))?;
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
    /// Parameters by `state_dict` name.
    params: BTreeMap<String, Tensor>,
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
            .map_err(|e| TrainError::Model(e.to_string()))?;
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
        })
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
                    x.f_conv2d(
                        self.param(&format!("features.{index}.weight"))?,
                        Some(self.param(&format!("features.{index}.bias"))?),
                        [stride, stride],
                        [pad, pad],
                        [1, 1],
                        groups as i64,
                    )?
                }
                FeatureLayer::Relu => x.f_relu()?,
                FeatureLayer::Lrn => local_response_norm(&x)?,
                FeatureLayer::MaxPool => x.f_max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)?,
            };
        }
        let x = x.f_adaptive_avg_pool2d([6, 6])?.f_flatten(1, -1)?;
        let x = x.f_dropout(DROPOUT, train)?;
        let x = x
            .f_linear(
                self.param("classifier.1.weight")?,
                Some(self.param("classifier.1.bias")?),
            )?
            .f_relu()?
            .f_dropout(DROPOUT, train)?;
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

    /// The current weights as the crate's ONNX weight type (copied to the CPU).
    pub fn weights(&self) -> Result<AlexNetWeights, TrainError> {
        let mut out = BTreeMap::new();
        for (name, t) in &self.params {
            out.insert(name.clone(), to_f32_tensor(t)?);
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
    F32Tensor::new(shape, data).map_err(|e| TrainError::Model(e.to_string()))
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
