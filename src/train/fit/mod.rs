//! The training loop: data in, epochs of the recipe's optimiser, checkpoints, the
//! exported model out.
//!
//! Two recipes ([`crate::train::Recipe`]): the default, AdamW with a linear warm-up
//! and a cosine decay per step, label smoothing and batch normalisation; and the
//! paper's, SGD with momentum 0.9 and weight decay 5e-4, learning rate divided by 10
//! when the validation loss has not improved for `lr_patience` epochs (PyTorch's
//! `ReduceLROnPlateau` rule). Both optimisers follow PyTorch's update rules and are
//! implemented here so their state can be saved in checkpoints.
//!
//! Every random choice (shuffle order, crops, flips, lighting, dropout) is drawn from
//! generators seeded by the run's seed, the epoch number and each image's place in
//! the epoch, so a run resumed from the checkpoint of epoch k reaches the same weights
//! as one that never stopped (on the same device and libtorch thread count), however
//! many threads prepare the images.
//!
//! Head-only fine-tuning computes the frozen network's features once (evaluation
//! transform, no dropout) and trains the last layer on them: `classifier.6` reads the
//! ReLU output directly, so this is the same function as training through the frozen
//! network without augmentation, at a fraction of the cost.

mod batches;
mod checkpoint;
mod job;
mod optim;
mod progress;
mod train_loop;

pub use job::{train, TrainReport};
pub use progress::{NoTrainProgress, TrainProgress};
pub use train_loop::evaluate;

use crate::Error;

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Train(format!("libtorch: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    use super::optim::{Optimizer, Rule};

    #[test]
    fn sgd_matches_pytorchs_update_rule() {
        // p = 1, grad = 2 each step, wd 0.5, momentum 0.9, lr 0.1:
        // step 1: d = 2 + 0.5·1 = 2.5, b = 2.5, p = 1 − 0.25 = 0.75
        // step 2: d = 2 + 0.375 = 2.375, b = 0.9·2.5 + 2.375 = 4.625, p = 0.75 − 0.4625
        let p = Tensor::from_slice(&[1f32]).set_requires_grad(true);
        let mut sgd = Optimizer::new(
            vec![("p".into(), p.shallow_clone())],
            Rule::Sgd { momentum: 0.9 },
            0.5,
        );
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
        let mut sgd = Optimizer::new(
            vec![
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            Rule::Sgd { momentum: 0.0 },
            0.0,
        );
        sgd.lr_scale = vec![0.1, 1.0];
        sgd.zero_grad();
        (&a + &b).sum(Kind::Float).backward();
        sgd.step(0.1).unwrap();
        assert!((a.double_value(&[0]) + 0.01).abs() < 1e-7);
        assert!((b.double_value(&[0]) + 0.1).abs() < 1e-7);
    }

    #[test]
    fn adamw_matches_pytorchs_update_rule() {
        // A matrix p = [[1]] (decayed) and a bias q = [0] (not), grad 2 and 1 each
        // step, lr 0.1, wd 0.5, β = (0.9, 0.999), ε = 1e-8. AdamW's first steps move
        // each parameter by ≈ lr (m̂/√v̂ = ±1 for a constant gradient), and the matrix
        // also shrinks by lr·wd·p before each step:
        // p: 1 → 1·0.95 − 0.1 = 0.85 → 0.85·0.95 − 0.1 = 0.7075; q: 0 → −0.1 → −0.2.
        let p = Tensor::from_slice(&[1f32])
            .reshape([1, 1])
            .set_requires_grad(true);
        let q = Tensor::from_slice(&[0f32]).set_requires_grad(true);
        let mut opt = Optimizer::new(
            vec![
                ("p".into(), p.shallow_clone()),
                ("q".into(), q.shallow_clone()),
            ],
            Rule::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            0.5,
        );
        for _ in 0..2 {
            opt.zero_grad();
            ((&p * 2.0).sum(Kind::Float) + q.sum(Kind::Float)).backward();
            opt.step(0.1).unwrap();
        }
        let (pv, qv) = (p.double_value(&[0, 0]), q.double_value(&[0]));
        assert!((pv - 0.7075).abs() < 1e-5, "{pv}");
        assert!((qv + 0.2).abs() < 1e-5, "{qv}");
        assert_eq!(opt.steps, 2);
        assert_eq!(opt.state.len(), 4, "two moments per parameter");
    }
}
