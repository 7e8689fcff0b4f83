//! The optimiser: PyTorch's SGD with momentum and weight decay.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::train::TrainError;

/// PyTorch's SGD: g ← ∇ + wd·p; b ← g (first step) or μ·b + g; p ← p − lr·b.
pub(super) struct Sgd {
    pub(super) params: Vec<(String, Tensor)>,
    pub(super) buffers: BTreeMap<String, Tensor>,
    pub(super) momentum: f64,
    pub(super) weight_decay: f64,
    /// Per-parameter factor on the learning rate, by position in `params` (missing:
    /// 1): fine-tuning moves pretrained layers more slowly than the new head.
    pub(super) lr_scale: Vec<f64>,
}

impl Sgd {
    pub(super) fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    pub(super) fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        tch::no_grad(|| {
            for (i, (name, p)) in self.params.iter_mut().enumerate() {
                let lr = lr * self.lr_scale.get(i).copied().unwrap_or(1.0);
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
