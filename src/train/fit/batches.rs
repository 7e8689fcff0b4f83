//! Input batches: augmentation spread over the cores, one batch prepared ahead of the
//! one the model is working on.
//!
//! Every image of an epoch draws its crop, flip and lighting from its own generator,
//! derived from the epoch's seed and the image's position in the epoch's order, so
//! the numbers do not depend on how many threads share the work.

use std::sync::mpsc;

use crate::train::augment::{AugmentConfig, Augmenter, ColourPca, Rng};
use crate::train::data::Sample;
use crate::Result;

/// Images below this many per thread are not worth a thread of their own.
const MIN_PER_THREAD: usize = 4;

/// One [`Augmenter`] per worker thread.
pub(super) struct BatchMaker {
    augs: Vec<Augmenter>,
}

impl BatchMaker {
    pub(super) fn new(
        input_size: usize,
        config: AugmentConfig,
        pca: Option<ColourPca>,
        threads: usize,
    ) -> Result<Self> {
        let augs = (0..threads.max(1))
            .map(|_| Augmenter::new(input_size, config, pca))
            .collect::<Result<_>>()?;
        Ok(BatchMaker { augs })
    }

    /// Values per image.
    pub(super) fn image_len(&self) -> usize {
        self.augs[0].image_len()
    }

    /// Runs `f(augmenter, k, out_k)` for every image k of a batch, the images split in
    /// contiguous runs over the worker threads.
    fn spread<F>(&mut self, n: usize, out: &mut [f32], f: F) -> Result<()>
    where
        F: Fn(&mut Augmenter, usize, &mut [f32]) -> Result<()> + Sync,
    {
        let len = self.image_len();
        debug_assert_eq!(out.len(), n * len);
        let threads = self.augs.len().min(n.div_ceil(MIN_PER_THREAD)).max(1);
        if threads == 1 {
            for (k, dst) in out.chunks_exact_mut(len).enumerate() {
                f(&mut self.augs[0], k, dst)?;
            }
            return Ok(());
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .augs
                .iter_mut()
                .zip(out.chunks_mut(per * len))
                .enumerate()
                .map(|(t, (aug, part))| {
                    let f = &f;
                    s.spawn(move || -> Result<()> {
                        for (j, dst) in part.chunks_exact_mut(len).enumerate() {
                            f(aug, t * per + j, dst)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            Ok(())
        })
    }

    /// Random training views of `samples[order[k]]` for the k of `range` into `out`;
    /// image k draws from `Rng::derive(epoch_seed, k)`.
    pub(super) fn train_batch(
        &mut self,
        samples: &[Sample],
        order: &[usize],
        range: std::ops::Range<usize>,
        epoch_seed: u64,
        out: &mut [f32],
    ) -> Result<()> {
        let start = range.start;
        let idx = &order[range];
        self.spread(idx.len(), out, |aug, k, dst| {
            let mut rng = Rng::derive(epoch_seed, (start + k) as u64);
            aug.train_into(&samples[idx[k]].image, &mut rng, dst)
        })
    }

    /// The batch job's view of each of `samples` into `out`.
    pub(super) fn eval_batch(&mut self, samples: &[Sample], out: &mut [f32]) -> Result<()> {
        self.spread(samples.len(), out, |aug, k, dst| {
            aug.eval_into(&samples[k].image, dst)
        })
    }
}

/// The batches of one epoch, made on a thread of their own while the caller trains on
/// the previous one. `consume(batch index, images, values)` is called in order; an
/// error from either side ends the epoch with it.
pub(super) fn run_epoch<C>(
    maker: &mut BatchMaker,
    samples: &[Sample],
    order: &[usize],
    batch_size: usize,
    epoch_seed: u64,
    mut consume: C,
) -> Result<()>
where
    C: FnMut(usize, &[usize], &[f32]) -> Result<()>,
{
    let len = maker.image_len();
    let batches: Vec<std::ops::Range<usize>> = (0..order.len())
        .step_by(batch_size.max(1))
        .map(|s| s..(s + batch_size).min(order.len()))
        .collect();
    // Two buffers in flight: one being filled, one being trained on.
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Vec<f32>>>(1);
    let (free_tx, free_rx) = mpsc::channel::<Vec<f32>>();
    for _ in 0..2 {
        let _ = free_tx.send(Vec::new());
    }
    std::thread::scope(|s| {
        let producer = s.spawn({
            let batches = &batches;
            move || {
                for r in batches.iter() {
                    let Ok(mut buf) = free_rx.recv() else {
                        return;
                    };
                    buf.resize(r.len() * len, 0.0);
                    let made = maker
                        .train_batch(samples, order, r.clone(), epoch_seed, &mut buf)
                        .map(|()| buf);
                    let failed = made.is_err();
                    if full_tx.send(made).is_err() || failed {
                        return;
                    }
                }
            }
        });
        let mut result = Ok(());
        for (b, r) in batches.iter().enumerate() {
            let buf = match full_rx.recv() {
                Ok(Ok(buf)) => buf,
                Ok(Err(e)) => {
                    result = Err(e);
                    break;
                }
                Err(_) => break,
            };
            if let Err(e) = consume(b, &order[r.clone()], &buf) {
                result = Err(e);
                break;
            }
            let _ = free_tx.send(buf);
        }
        // Let a producer blocked on either channel finish.
        drop(full_rx);
        drop(free_tx);
        producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        result
    })
}
