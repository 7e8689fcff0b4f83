//! Feature vectors → what a row stores for `--embeddings`: the vector L2-normalised
//! as half floats, and a binary code of it.
//!
//! The code's bit j is the sign of `r_j · x`, where the `r_j` are fixed Gaussian
//! vectors (seeded by [`CODE_SEED`] and the vector's length, so every run of models
//! with the same feature length makes comparable codes). Each `r_j` has its mean
//! removed, which is the same as hashing `x` minus its own mean: the features after a
//! ReLU are all non-negative, so without it every pair of images would share the bits
//! of that common direction. Two vectors at angle θ (after that centring) differ in
//! about θ/π of their bits, so `hamming(code, code)` is a cheap stand-in for the
//! angle, used to prune candidate pairs before the exact `cosine_similarity`.

use half::f16;

use crate::stable::SplitMix64;

/// Seed of the projection behind the `code` column. Part of the output contract: a
/// different seed makes codes of new runs incomparable with older ones.
pub const CODE_SEED: u64 = 0x6c61_6265_6c66_6c6f;

/// One image's stored features.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// L2-normalised (all zeros stays all zeros), as half floats.
    pub vector: Vec<f16>,
    /// `bits / 8` bytes, bit j of the code in byte j / 8, most significant bit first.
    pub code: Vec<u8>,
}

/// Turns raw feature vectors into [`Embedded`] rows.
#[derive(Debug, Clone)]
pub struct Embedder {
    dim: usize,
    bits: usize,
    /// `bits × dim`, row-major.
    projection: Vec<f32>,
}

impl Embedder {
    /// For vectors of length `dim` and codes of `bits` bits (a multiple of 8).
    pub fn new(dim: usize, bits: usize) -> Self {
        let mut rng = SplitMix64::derive(CODE_SEED, dim as u64);
        let mut projection = vec![0f32; bits * dim];
        for row in projection.chunks_mut(dim.max(1)) {
            rng.fill_normal(row, 1.0);
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / dim.max(1) as f64;
            for v in row.iter_mut() {
                *v -= mean as f32;
            }
        }
        Embedder {
            dim,
            bits,
            projection,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes of one code.
    pub fn code_bytes(&self) -> usize {
        self.bits / 8
    }

    /// The stored embeddings of `images` images from one batch's raw features,
    /// `views × dim` values an image. Errs when the model returned fewer.
    pub fn embed_images(
        &self,
        raw: &[f32],
        images: usize,
        views: usize,
    ) -> crate::Result<Vec<Embedded>> {
        let per = self.dim() * views;
        if raw.len() < images * per {
            return Err(crate::Error::Inference(format!(
                "the embedding output returned {} values for {images} images of {} features",
                raw.len(),
                self.dim()
            )));
        }
        Ok(raw
            .chunks(per.max(1))
            .take(images)
            .map(|one| self.embed(one))
            .collect())
    }

    /// One image's row values from its `views × dim` raw features (with test-time
    /// augmentation, the views' vectors are averaged first).
    pub fn embed(&self, views: &[f32]) -> Embedded {
        let dim = self.dim;
        let n = (views.len() / dim.max(1)).max(1);
        let mut x: Vec<f32> = vec![0.0; dim];
        for view in views.chunks(dim.max(1)) {
            for (acc, v) in x.iter_mut().zip(view) {
                *acc += v / n as f32;
            }
        }
        let norm = x
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 && norm.is_finite() {
            for v in x.iter_mut() {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
        let mut code = vec![0u8; self.code_bytes()];
        for (j, r) in self.projection.chunks(dim.max(1)).enumerate() {
            let dot: f32 = r.iter().zip(&x).map(|(a, b)| a * b).sum();
            if dot > 0.0 {
                code[j / 8] |= 0x80 >> (j % 8);
            }
        }
        Embedded {
            vector: x.iter().map(|&v| f16::from_f32(v)).collect(),
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f16], b: &[f16]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x.to_f32() * y.to_f32()))
            .sum();
        dot
    }

    fn hamming(a: &[u8], b: &[u8]) -> u32 {
        a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_codes_have_the_asked_size() {
        let e = Embedder::new(64, 128);
        let raw: Vec<f32> = (0..64).map(|i| (i % 7) as f32).collect();
        let out = e.embed(&raw);
        assert_eq!(out.vector.len(), 64);
        assert_eq!(out.code.len(), 16);
        let len: f64 = cosine(&out.vector, &out.vector);
        assert!((len - 1.0).abs() < 2e-3, "{len}");
        // Scale does not change the row.
        let scaled: Vec<f32> = raw.iter().map(|v| v * 37.0).collect();
        assert_eq!(e.embed(&scaled), out);
        // A zero vector stays zero and does not divide by zero.
        let zero = e.embed(&[0.0; 64]);
        assert!(zero.vector.iter().all(|v| v.to_f32() == 0.0));
    }

    #[test]
    fn the_projection_is_seeded_by_the_length_alone() {
        let raw: Vec<f32> = (0..32).map(|i| ((i * 13) % 5) as f32).collect();
        assert_eq!(
            Embedder::new(32, 64).embed(&raw),
            Embedder::new(32, 64).embed(&raw)
        );
    }

    #[test]
    fn views_are_averaged() {
        let e = Embedder::new(4, 8);
        let two = e.embed(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        let mean = e.embed(&[0.5, 0.5, 0.0, 0.0]);
        assert_eq!(two, mean);
    }

    #[test]
    fn hamming_distance_follows_the_angle_for_non_negative_features() {
        // Non-negative vectors, as after a ReLU: near copies differ in few bits,
        // unrelated ones in about half (the centring keeps them apart).
        let dim = 512;
        let e = Embedder::new(dim, 256);
        let mut rng = SplitMix64::new(7);
        let mut unrelated = Vec::new();
        let mut near = Vec::new();
        for _ in 0..20 {
            let a: Vec<f32> = (0..dim)
                .map(|_| rng.unit().max(0.0) as f32 * (rng.below(3) as f32))
                .collect();
            let b: Vec<f32> = (0..dim)
                .map(|_| rng.unit() as f32 * (rng.below(3) as f32))
                .collect();
            let a_near: Vec<f32> = a
                .iter()
                .map(|v| v * (1.0 + 0.05 * rng.unit() as f32))
                .collect();
            let (ea, eb, en) = (e.embed(&a), e.embed(&b), e.embed(&a_near));
            unrelated.push(hamming(&ea.code, &eb.code));
            near.push(hamming(&ea.code, &en.code));
        }
        let max_near = near.iter().max().copied().unwrap_or(0);
        let min_unrelated = unrelated.iter().min().copied().unwrap_or(0);
        assert!(max_near < 40, "near copies differ in {near:?} bits");
        assert!(
            min_unrelated > 70,
            "unrelated vectors differ in {unrelated:?} bits"
        );
    }
}
