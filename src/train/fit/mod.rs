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

mod checkpoint;
mod job;
mod sgd;
mod train_loop;

pub use job::{train, NoTrainProgress, TrainProgress, TrainReport};
pub use train_loop::evaluate;

use crate::Error;

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Train(format!("libtorch: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tch::{Kind, Tensor};

    use super::sgd::Sgd;

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
            lr_scale: Vec::new(),
        };
        for _ in 0..2 {
            sgd.zero_grad();
            (&p * 2.0).sum(Kind::Float).backward();
            sgd.step(0.1).unwrap();
        }
        let v = p.double_value(&[0]);
        assert!((v - (0.75 - 0.4625)).abs() < 1e-6, "{v}");
    }

    #[test]
    fn a_parameter_scale_slows_only_that_parameter() {
        // Two parameters with the same gradient (1) and plain SGD at lr 0.1; the
        // first moves at a tenth of the rate.
        let a = Tensor::from_slice(&[0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0f32]).set_requires_grad(true);
        let mut sgd = Sgd {
            params: vec![
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            buffers: BTreeMap::new(),
            momentum: 0.0,
            weight_decay: 0.0,
            lr_scale: vec![0.1, 1.0],
        };
        sgd.zero_grad();
        (&a + &b).sum(Kind::Float).backward();
        sgd.step(0.1).unwrap();
        assert!((a.double_value(&[0]) + 0.01).abs() < 1e-7);
        assert!((b.double_value(&[0]) + 0.1).abs() < 1e-7);
    }
}
