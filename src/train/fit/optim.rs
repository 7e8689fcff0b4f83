//! The optimisers, implemented here so their state can be saved in checkpoints:
//! PyTorch's SGD with momentum (the paper's recipe) and PyTorch's AdamW (the default).

use std::collections::BTreeMap;

use tch::Tensor;

use crate::error::TrainError;

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Rule {
    /// `torch.optim.SGD`: g ← ∇ + wd·p; b ← g (first step) or μ·b + g; p ← p − lr·b.
    Sgd { momentum: f64 },
    /// `torch.optim.AdamW`: p ← p·(1 − lr·wd); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    /// p ← p − lr·m̂/(√v̂ + ε) with m̂, v̂ bias-corrected. Weight decay applies to
    /// weight matrices and kernels only, never to biases or normalisation parameters
    /// (tensors of one dimension).
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

/// State names in checkpoints: `<prefix><parameter name>`.
pub(super) const MOMENTUM: &str = "momentum/";
pub(super) const EXP_AVG: &str = "exp_avg/";
pub(super) const EXP_AVG_SQ: &str = "exp_avg_sq/";
/// The moving average of a weight ([`crate::train::TrainConfig::ema`]).
pub(super) const EMA: &str = "ema/";

pub(super) struct Optimizer {
    pub(super) params: Vec<(String, Tensor)>,
    pub(super) rule: Rule,
    pub(super) weight_decay: f64,
    /// Per-parameter factor on the learning rate, by position in `params` (missing:
    /// 1): fine-tuning moves pretrained layers more slowly than the new head.
    pub(super) lr_scale: Vec<f64>,
    /// Momentum buffers or Adam moments, by `<prefix><parameter name>`.
    pub(super) state: BTreeMap<String, Tensor>,
    /// Updates made so far (Adam's bias correction counts them).
    pub(super) steps: u64,
}

impl Optimizer {
    pub(super) fn new(params: Vec<(String, Tensor)>, rule: Rule, weight_decay: f64) -> Self {
        Optimizer {
            params,
            rule,
            weight_decay,
            lr_scale: Vec::new(),
            state: BTreeMap::new(),
            steps: 0,
        }
    }

    pub(super) fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    pub(super) fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        self.steps += 1;
        let t = self.steps as f64;
        let Optimizer {
            params,
            rule,
            weight_decay,
            lr_scale,
            state,
            ..
        } = self;
        let wd = *weight_decay;
        tch::no_grad(|| {
            for (i, (name, p)) in params.iter_mut().enumerate() {
                let lr = lr * lr_scale.get(i).copied().unwrap_or(1.0);
                let g = p.f_grad()?;
                if !g.defined() {
                    continue;
                }
                match *rule {
                    Rule::Sgd { momentum } => {
                        let d = if wd != 0.0 {
                            g.f_add(&p.f_mul_scalar(wd)?)?
                        } else {
                            g.f_detach()?
                        };
                        // The buffer starts at zero, so the first step leaves b = d.
                        let step = if momentum != 0.0 {
                            let mut b = slot(state, MOMENTUM, name, p)?;
                            let _ = b.f_mul_scalar_(momentum)?;
                            let _ = b.f_add_(&d)?;
                            b
                        } else {
                            d
                        };
                        let _ = p.f_sub_(&step.f_mul_scalar(lr)?)?;
                    }
                    Rule::AdamW { beta1, beta2, eps } => {
                        if wd != 0.0 && p.dim() > 1 {
                            let _ = p.f_mul_scalar_(1.0 - lr * wd)?;
                        }
                        let mut m = slot(state, EXP_AVG, name, p)?;
                        let mut v = slot(state, EXP_AVG_SQ, name, p)?;
                        let _ = m.f_mul_scalar_(beta1)?;
                        let _ = m.f_add_(&g.f_mul_scalar(1.0 - beta1)?)?;
                        let _ = v.f_mul_scalar_(beta2)?;
                        let _ = v.f_add_(&g.f_mul(&g)?.f_mul_scalar(1.0 - beta2)?)?;
                        let bc1 = 1.0 - beta1.powf(t);
                        let bc2 = 1.0 - beta2.powf(t);
                        let denom = v.f_div_scalar(bc2)?.f_sqrt()?.f_add_scalar(eps)?;
                        let _ = p.f_sub_(&m.f_div(&denom)?.f_mul_scalar(lr / bc1)?)?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// The state tensor `prefix + name` (shared with `state`), created as zeros like
/// `like` when absent.
fn slot(
    state: &mut BTreeMap<String, Tensor>,
    prefix: &str,
    name: &str,
    like: &Tensor,
) -> Result<Tensor, TrainError> {
    let t = match state.entry(format!("{prefix}{name}")) {
        std::collections::btree_map::Entry::Occupied(e) => e.get().shallow_clone(),
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(like.f_zeros_like()?).shallow_clone()
        }
    };
    Ok(t)
}
