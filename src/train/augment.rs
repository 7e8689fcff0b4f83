//! Training-time and evaluation-time image transforms.
//!
//! Both start with the batch job's own [`Preprocessor`] (resize the shorter side,
//! scale, normalise), so a model never sees numbers at training time that the batch
//! job would compute differently:
//!
//! - **evaluation**: exactly the batch job's transform — resize to `resize`, centre
//!   crop `input_size` (the `labelflow.preprocess` metadata of the exported model);
//! - **training** (the 2012 paper's augmentation, scaled to the input size): resize to
//!   `resize`, centre `resize`×`resize` square, then a random `input_size` crop, a
//!   horizontal flip with probability ½, and PCA colour lighting — add
//!   Σᵢ αᵢ λᵢ vᵢ to every pixel, with (λᵢ, vᵢ) the eigenpairs of the training set's RGB
//!   covariance and αᵢ ~ N(0, σ²) drawn once per image.

use crate::decode::RgbImage;
use crate::preprocess::{PreprocessSpec, Preprocessor};
use crate::Result;

use super::data::Sample;

/// Which augmentations run at training time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentConfig {
    /// Random crops (otherwise the centre crop).
    pub random_crop: bool,
    /// Random horizontal flips.
    pub flip: bool,
    /// σ of the PCA lighting noise (the paper: 0.1); 0 turns it off.
    pub lighting: f32,
    /// Probability of random erasing (Zhong et al., 2017): one rectangle of 2–40 % of
    /// the crop, aspect ratio 0.3–3.3, set to the mean colour (0 after normalisation).
    /// 0 turns it off.
    pub erase: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            random_crop: true,
            flip: true,
            lighting: 0.1,
            erase: 0.0,
        }
    }
}

impl AugmentConfig {
    /// The augmentations in words, for the model card: `random crops, flips,
    /// lighting 0.1` or `none (centre crops)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.random_crop {
            parts.push("random crops".to_owned());
        }
        if self.flip {
            parts.push("flips".to_owned());
        }
        if self.lighting > 0.0 {
            parts.push(format!("lighting {}", self.lighting));
        }
        if self.erase > 0.0 {
            parts.push(format!("random erasing {}", self.erase));
        }
        match (parts.is_empty(), self.random_crop) {
            (true, _) => "none (centre crops)".to_owned(),
            (false, true) => parts.join(", "),
            (false, false) => format!("centre crops, {}", parts.join(", ")),
        }
    }
}

/// The seeded generator of shuffles, crops, flips and lighting: the same seed gives
/// the same augmentation on every machine.
pub use crate::stable::SplitMix64 as Rng;

/// Eigenvalues and unit eigenvectors of the RGB covariance (pixels in 0–1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourPca {
    pub eigenvalues: [f64; 3],
    /// `eigenvectors[i]` belongs to `eigenvalues[i]`.
    pub eigenvectors: [[f64; 3]; 3],
}

impl ColourPca {
    /// From the pixels of `samples` (at most about 2²⁰ pixels, evenly spread).
    pub fn from_samples(samples: &[Sample]) -> Self {
        let total: usize = samples.iter().map(|s| s.image.pixels.len() / 3).sum();
        let step = (total / (1 << 20)).max(1);
        let (mut n, mut sum, mut sq) = (0f64, [0f64; 3], [[0f64; 3]; 3]);
        let mut i = 0usize;
        for s in samples {
            for px in s.image.pixels.chunks_exact(3) {
                if i % step == 0 {
                    let v = [px[0], px[1], px[2]].map(|b| f64::from(b) / 255.0);
                    for a in 0..3 {
                        sum[a] += v[a];
                        for b in 0..3 {
                            sq[a][b] += v[a] * v[b];
                        }
                    }
                    n += 1.0;
                }
                i += 1;
            }
        }
        let mut cov = [[0f64; 3]; 3];
        if n > 1.0 {
            for a in 0..3 {
                for b in 0..3 {
                    cov[a][b] = (sq[a][b] - sum[a] * sum[b] / n) / (n - 1.0);
                }
            }
        }
        Self::of_covariance(cov)
    }

    /// Eigen-decomposition of a symmetric 3×3 matrix (cyclic Jacobi rotations).
    pub fn of_covariance(mut a: [[f64; 3]; 3]) -> Self {
        let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        for _ in 0..50 {
            let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
            if off < 1e-30 {
                break;
            }
            for (p, q) in [(0, 1), (0, 2), (1, 2)] {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                // Rows p and q (p < q for every pair above).
                let (low, high) = a.split_at_mut(q);
                for (apk, aqk) in low[p].iter_mut().zip(high[0].iter_mut()) {
                    let (x, y) = (*apk, *aqk);
                    *apk = c * x - s * y;
                    *aqk = s * x + c * y;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
        ColourPca {
            eigenvalues: [a[0][0].max(0.0), a[1][1].max(0.0), a[2][2].max(0.0)],
            eigenvectors: [0, 1, 2].map(|i| [v[0][i], v[1][i], v[2][i]]),
        }
    }

    /// The RGB offset (0–1 units) for noise `alpha`.
    pub fn offset(&self, alpha: [f64; 3]) -> [f64; 3] {
        let mut d = [0f64; 3];
        for (i, a) in alpha.iter().enumerate() {
            for (c, dc) in d.iter_mut().enumerate() {
                *dc += a * self.eigenvalues[i] * self.eigenvectors[i][c];
            }
        }
        d
    }
}

/// Turns decoded images into model input, for training and for evaluation.
pub struct Augmenter {
    config: AugmentConfig,
    input: usize,
    resize: usize,
    std: [f32; 3],
    train_pre: Preprocessor,
    eval_pre: Preprocessor,
    scratch: Vec<f32>,
    pca: Option<ColourPca>,
}

/// The batch job's preprocessing for a model with `input_size` pixels (what the
/// exported model's metadata says).
pub fn eval_spec(input_size: usize) -> PreprocessSpec {
    PreprocessSpec::imagenet(u32::try_from(input_size).unwrap_or(u32::MAX))
}

impl Augmenter {
    /// `pca` is needed only when lighting is on.
    pub fn new(input_size: usize, config: AugmentConfig, pca: Option<ColourPca>) -> Result<Self> {
        let eval = eval_spec(input_size);
        let train = PreprocessSpec {
            crop: eval.resize,
            ..eval.clone()
        };
        let resize = eval.resize as usize;
        Ok(Augmenter {
            config,
            input: input_size,
            resize,
            std: eval.std,
            train_pre: Preprocessor::new(train)?,
            eval_pre: Preprocessor::new(eval)?,
            scratch: vec![0f32; 3 * resize * resize],
            pca: if config.lighting > 0.0 { pca } else { None },
        })
    }

    /// Values per image (`3 × input × input`).
    pub fn image_len(&self) -> usize {
        3 * self.input * self.input
    }

    /// The resize side (shorter side before cropping).
    pub fn resize(&self) -> usize {
        self.resize
    }

    /// The batch job's transform of `img` into `out`.
    pub fn eval_into(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        self.eval_pre
            .run_into(&img.pixels, img.width, img.height, out)
    }

    /// A random training view of `img` into `out`.
    pub fn train_into(&mut self, img: &RgbImage, rng: &mut Rng, out: &mut [f32]) -> Result<()> {
        self.train_pre
            .run_into(&img.pixels, img.width, img.height, &mut self.scratch)?;
        let (r, s) = (self.resize, self.input);
        let span = r - s;
        let (ox, oy) = if self.config.random_crop {
            (rng.below(span + 1), rng.below(span + 1))
        } else {
            (span / 2, span / 2)
        };
        let flip = self.config.flip && rng.next_u64() & 1 == 1;
        let shift = match &self.pca {
            Some(pca) => {
                let sigma = f64::from(self.config.lighting);
                let alpha = [
                    rng.normal() * sigma,
                    rng.normal() * sigma,
                    rng.normal() * sigma,
                ];
                let d = pca.offset(alpha);
                [0, 1, 2].map(|c| (d[c] / f64::from(self.std[c])) as f32)
            }
            None => [0.0; 3],
        };
        let erase = if self.config.erase > 0.0 && rng.unit() < f64::from(self.config.erase) {
            erase_rect(s, rng)
        } else {
            None
        };
        for c in 0..3 {
            for y in 0..s {
                let src = &self.scratch[c * r * r + (oy + y) * r + ox..][..s];
                let dst = &mut out[c * s * s + y * s..][..s];
                if flip {
                    for (d, v) in dst.iter_mut().zip(src.iter().rev()) {
                        *d = v + shift[c];
                    }
                } else {
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d = v + shift[c];
                    }
                }
            }
        }
        if let Some((x0, y0, w, h)) = erase {
            for c in 0..3 {
                for y in y0..y0 + h {
                    out[c * s * s + y * s + x0..][..w].fill(0.0);
                }
            }
        }
        Ok(())
    }
}

/// A random-erasing rectangle `(x, y, w, h)` inside an `s`×`s` crop: area 2–40 % of
/// the crop, aspect ratio log-uniform in 0.3–3.3; `None` when ten draws do not fit.
fn erase_rect(s: usize, rng: &mut Rng) -> Option<(usize, usize, usize, usize)> {
    let area = (s * s) as f64;
    for _ in 0..10 {
        let target = area * (0.02 + 0.38 * rng.unit());
        let ratio = ((0.3f64).ln() + rng.unit() * ((1.0 / 0.3f64).ln() - (0.3f64).ln())).exp();
        let h = (target * ratio).sqrt().round() as usize;
        let w = (target / ratio).sqrt().round() as usize;
        if w >= 1 && h >= 1 && w < s && h < s {
            return Some((rng.below(s - w + 1), rng.below(s - h + 1), w, h));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_a_known_eigensystem() {
        let pca = ColourPca::of_covariance([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]);
        let mut ev = pca.eigenvalues;
        ev.sort_by(f64::total_cmp);
        for (got, want) in ev.iter().zip([1.0, 3.0, 5.0]) {
            assert!((got - want).abs() < 1e-9, "{ev:?}");
        }
        for (i, v) in pca.eigenvectors.iter().enumerate() {
            let norm: f64 = v.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-9);
            // A v = λ v
            let a = [[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]];
            for r in 0..3 {
                let av: f64 = (0..3).map(|k| a[r][k] * v[k]).sum();
                assert!((av - pca.eigenvalues[i] * v[r]).abs() < 1e-9);
            }
        }
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        let pixels = (0..w * h)
            .flat_map(|i| [(i % w * 7) as u8, (i / w * 5) as u8, 128])
            .collect();
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }

    #[test]
    fn centre_view_without_augmentation_is_the_batch_jobs_centre_crop_when_sizes_agree() {
        // With random crops, flips and lighting off, the training view is the centre
        // input×input of the resize×resize square: the batch job's crop.
        let cfg = AugmentConfig {
            random_crop: false,
            flip: false,
            lighting: 0.0,
            erase: 0.0,
        };
        let mut a = Augmenter::new(64, cfg, None).unwrap();
        let img = gradient(28, 28);
        let (mut t, mut e) = (vec![0f32; a.image_len()], vec![0f32; a.image_len()]);
        a.train_into(&img, &mut Rng::new(1), &mut t).unwrap();
        a.eval_into(&img, &mut e).unwrap();
        let max = t
            .iter()
            .zip(&e)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // (73 - 64) / 2 rounds differently (4 vs 4.5 → 4): identical here.
        assert!(max < 1e-6, "{max}");
    }

    #[test]
    fn flips_mirror_rows_and_crops_stay_inside() {
        let cfg = AugmentConfig {
            random_crop: true,
            flip: true,
            lighting: 0.0,
            erase: 0.0,
        };
        let mut a = Augmenter::new(64, cfg, None).unwrap();
        let img = gradient(40, 30);
        let mut rng = Rng::new(7);
        let mut out = vec![0f32; a.image_len()];
        // Every output is exactly one input×input window of the resized square, as it
        // is or mirrored left-right; over 20 draws both occur, at several offsets.
        let (r, s) = (a.resize, a.input);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            a.train_into(&img, &mut rng, &mut out).unwrap();
            let window = |ox: usize, oy: usize, flip: bool| {
                (0..3).all(|c| {
                    (0..s).all(|y| {
                        (0..s).all(|x| {
                            let sx = if flip { s - 1 - x } else { x };
                            out[c * s * s + y * s + x]
                                == a.scratch[c * r * r + (oy + y) * r + ox + sx]
                        })
                    })
                })
            };
            let found = (0..=r - s)
                .flat_map(|oy| (0..=r - s).flat_map(move |ox| [(ox, oy, false), (ox, oy, true)]))
                .find(|&(ox, oy, flip)| window(ox, oy, flip));
            let found = found.expect("the output is no window of the resized image");
            seen.insert(found);
        }
        assert!(
            seen.iter().any(|w| w.2) && seen.iter().any(|w| !w.2),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .map(|w| (w.0, w.1))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1,
            "{seen:?}"
        );
        let mut r = Rng::new(3);
        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }

    #[test]
    fn erasing_blanks_one_rectangle_of_the_expected_size() {
        let cfg = AugmentConfig {
            random_crop: false,
            flip: false,
            lighting: 0.0,
            erase: 1.0,
        };
        let mut a = Augmenter::new(64, cfg, None).unwrap();
        let mut plain = Augmenter::new(64, AugmentConfig { erase: 0.0, ..cfg }, None).unwrap();
        // A bright image: no pixel is 0 after normalisation except erased ones.
        let img = RgbImage {
            width: 32,
            height: 32,
            pixels: vec![250; 32 * 32 * 3],
        };
        let (s, n) = (64usize, 64 * 64);
        let mut reference = vec![0f32; a.image_len()];
        plain
            .train_into(&img, &mut Rng::new(1), &mut reference)
            .unwrap();
        assert!(reference.iter().all(|&v| v != 0.0));
        for seed in 0..20 {
            let mut out = vec![0f32; a.image_len()];
            a.train_into(&img, &mut Rng::new(seed), &mut out).unwrap();
            let zero: Vec<usize> = (0..n).filter(|&i| out[i] == 0.0).collect();
            let area = zero.len() as f64 / n as f64;
            assert!((0.015..=0.41).contains(&area), "seed {seed}: erased {area}");
            // One axis-aligned rectangle, the same in every channel.
            let (xs, ys): (Vec<usize>, Vec<usize>) = zero.iter().map(|&i| (i % s, i / s)).unzip();
            let w = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
            let h = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
            assert_eq!(w * h, zero.len(), "seed {seed}: not a rectangle");
            for c in 1..3 {
                assert!(zero.iter().all(|&i| out[c * n + i] == 0.0));
            }
            // Everything else is untouched.
            for i in (0..n).filter(|i| out[*i] != 0.0) {
                assert_eq!(out[i], reference[i]);
            }
        }
    }
}
