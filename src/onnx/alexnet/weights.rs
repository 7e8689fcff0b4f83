//! The learnable tensors: [`AlexNetWeights`] and a spec's seeded He-initialised weights.

use std::collections::BTreeMap;

use super::spec::AlexNetSpec;
use crate::error::OnnxError;
use crate::onnx::prng::{fill_normal_parallel, fnv1a64, mix64, NormalJob};
use crate::onnx::reader::OnnxModel;
use crate::onnx::writer::F32Tensor;

/// Values per independently seeded random stream in [`AlexNetSpec::random_weights`].
const WEIGHT_CHUNK: usize = 1 << 20;

impl AlexNetSpec {
    /// Fresh weights: He (Kaiming) normal with fan-in and gain √2 for every weight,
    /// zeros for every bias.
    ///
    /// Every block of 2^20 values of a tensor draws from its own SplitMix64 stream,
    /// seeded by `seed`, the tensor's name and the block's index, so the same seed gives
    /// bit-identical weights on every machine whatever its thread count, and tensors
    /// whose shape does not change (e.g. the convolutions when only `num_classes`
    /// changes) get the same values. Blocks are filled on all CPUs (std threads, about
    /// a second of CPU time for the full 61M-parameter model): from async code call it
    /// in `spawn_blocking`.
    pub fn random_weights(&self) -> Result<AlexNetWeights, OnnxError> {
        self.validate()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in self.parameter_shapes()? {
            tensors.insert(name, F32Tensor::zeros(shape));
        }
        let mut jobs = Vec::new();
        for (name, tensor) in tensors.iter_mut() {
            if !name.ends_with(".weight") {
                continue;
            }
            let fan_in: usize = tensor.shape()[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt();
            let stream = mix64(self.seed) ^ fnv1a64(name.as_bytes());
            for (chunk, out) in tensor.data_mut().chunks_mut(WEIGHT_CHUNK).enumerate() {
                jobs.push(NormalJob {
                    seed: mix64(stream.wrapping_add(chunk as u64)),
                    out,
                    std,
                });
            }
        }
        fill_normal_parallel(jobs);
        Ok(AlexNetWeights { tensors })
    }
}

/// AlexNet's learnable tensors by `state_dict` name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlexNetWeights {
    tensors: BTreeMap<String, F32Tensor>,
}

impl AlexNetWeights {
    /// Weights from tensors named as in [`AlexNetSpec::parameter_shapes`] (e.g. from a
    /// trainer). Use [`AlexNetWeights::check`] to compare them with a spec.
    pub fn new(tensors: BTreeMap<String, F32Tensor>) -> Self {
        AlexNetWeights { tensors }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&F32Tensor> {
        self.tensors.get(name)
    }

    /// The tensor called `name`, for in-place updates.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut F32Tensor> {
        self.tensors.get_mut(name)
    }

    /// Adds or replaces a tensor, returning the one it replaced.
    pub fn insert(&mut self, name: impl Into<String>, tensor: F32Tensor) -> Option<F32Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// All tensors by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &F32Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The tensors by name.
    pub fn into_inner(self) -> BTreeMap<String, F32Tensor> {
        self.tensors
    }

    /// Checks that every tensor `spec` needs is here with the right shape, and nothing
    /// else is; the error names the first offending tensor.
    pub fn check(&self, spec: &AlexNetSpec) -> Result<(), OnnxError> {
        let expected = spec.parameter_shapes()?;
        for (name, shape) in &expected {
            match self.tensors.get(name) {
                None => {
                    return Err(OnnxError::Weights(format!(
                        "`{name}` is missing (expected shape {shape:?})"
                    )))
                }
                Some(t) if t.shape() != shape.as_slice() => {
                    return Err(OnnxError::Weights(format!(
                        "`{name}` has shape {:?}, expected {shape:?} for {} width {}",
                        t.shape(),
                        spec.variant.architecture(),
                        spec.width
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = self
            .tensors
            .keys()
            .find(|k| !expected.iter().any(|(name, _)| name == *k))
        {
            return Err(OnnxError::Weights(format!(
                "`{extra}` is not a parameter of {}",
                spec.variant.architecture()
            )));
        }
        Ok(())
    }

    /// Moves the tensors `spec` needs out of `model` (see [`detect`](super::detect) for
    /// finding `spec`).
    pub fn from_model(spec: &AlexNetSpec, model: &mut OnnxModel) -> Result<Self, OnnxError> {
        check_initializers(spec, model)?;
        let mut tensors = BTreeMap::new();
        for (name, _) in spec.parameter_shapes()? {
            if let Some(t) = model.initializers.remove(&name) {
                tensors.insert(name, t);
            }
        }
        Ok(AlexNetWeights { tensors })
    }
}
/// Every parameter of `spec` is an initializer of `model` with the right shape.
pub(super) fn check_initializers(spec: &AlexNetSpec, model: &OnnxModel) -> Result<(), OnnxError> {
    for (name, shape) in spec.parameter_shapes()? {
        match model.initializer(&name) {
            None => {
                return Err(OnnxError::NotAlexNet(format!(
                    "missing initializer `{name}` (expected shape {shape:?} for {} width {})",
                    spec.variant.architecture(),
                    spec.width
                )))
            }
            Some(t) if t.shape() != shape.as_slice() => {
                return Err(OnnxError::NotAlexNet(format!(
                    "initializer `{name}` has shape {:?}, expected {shape:?} for {} width {}",
                    t.shape(),
                    spec.variant.architecture(),
                    spec.width
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
