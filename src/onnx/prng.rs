//! A small deterministic random source for weight initialisation.
//!
//! SplitMix64 for uniform bits and Marsaglia's polar method for normals. The only
//! floating-point operations are `+ - * /` and `sqrt`, which IEEE 754 rounds exactly on
//! every platform, plus [`ln`] below, written with those operations only — so a seed gives
//! bit-identical weights on every machine (std's `ln` comes from the platform's libm,
//! whose last bit may differ).

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state advanced by a Weyl constant and
/// scrambled by a fixed mix.
pub(crate) struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function; also used to derive seeds from seeds.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over bytes: a stable hash of a tensor name (not for anything adversarial).
pub(crate) use crate::stable::fnv1a64;

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in the open interval (-1, 1), on a grid of 2^-51 offset by half a step
    /// (so never exactly 0 or ±1); every operation here is exact.
    fn next_signed_unit(&mut self) -> f64 {
        // 52 random bits → k in [0, 2^52); (k + 0.5) · 2^-51 - 1 lies in (-1, 1).
        let k = (self.next_u64() >> 12) as f64;
        (k + 0.5) * (1.0 / 2_251_799_813_685_248.0) - 1.0
    }

    /// Fills `out` with independent standard-normal samples times `std`.
    pub(crate) fn fill_normal(&mut self, out: &mut [f32], std: f64) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] = (a * std) as f32;
            pair[1] = (b * std) as f32;
        }
        if let [last] = chunks.into_remainder() {
            let (a, _) = self.normal_pair();
            *last = (a * std) as f32;
        }
    }

    /// Two independent standard normals (Marsaglia's polar method).
    fn normal_pair(&mut self) -> (f64, f64) {
        loop {
            let u = self.next_signed_unit();
            let v = self.next_signed_unit();
            let s = u * u + v * v;
            if s < 1.0 && s > 0.0 {
                let factor = (-2.0 * ln(s) / s).sqrt();
                return (u * factor, v * factor);
            }
        }
    }
}

/// One slice to fill with normals from its own stream.
pub(crate) struct NormalJob<'a> {
    /// Seed of the stream (derive it with [`mix64`] from whatever identifies the slice).
    pub seed: u64,
    /// Where the samples go.
    pub out: &'a mut [f32],
    /// Standard deviation of the samples.
    pub std: f64,
}

/// Runs `jobs` on up to `available_parallelism` threads. Each job's values depend only on
/// its own seed, so the result does not depend on the number of threads.
pub(crate) fn fill_normal_parallel(jobs: Vec<NormalJob<'_>>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len())
        .max(1);
    let mut groups: Vec<Vec<NormalJob<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        groups[i % threads].push(job);
    }
    std::thread::scope(|scope| {
        for group in groups {
            scope.spawn(move || {
                for job in group {
                    SplitMix64::new(job.seed).fill_normal(job.out, job.std);
                }
            });
        }
    });
}

/// Natural logarithm of a positive, finite, normal `x`, using only exactly-rounded
/// operations (so the result is the same on every IEEE 754 machine). Accurate to a few
/// ulp, which is far more than weight initialisation needs.
pub(crate) fn ln(x: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // Mantissa m in [1, 2).
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    // m in (0.707, 1.415]: ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // Σ s^(2k+1) / (2k+1) for k = 0..=10; s^22 < 2e-17, below f64 resolution.
    let mut poly = 1.0 / 21.0;
    for k in (0..10).rev() {
        poly = poly * s2 + 1.0 / (2 * k + 1) as f64;
    }
    2.0 * s * poly + exponent as f64 * LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std_closely() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..100_000 {
            let x = (rng.next_signed_unit() + 1.0) * 0.5;
            let ours = ln(x);
            let std = x.ln();
            assert!(
                (ours - std).abs() <= 4.0 * f64::EPSILON * std.abs().max(1.0),
                "ln({x}) = {ours}, std says {std}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut rng = SplitMix64::new(42);
        let mut v = vec![0f32; 200_001];
        rng.fill_normal(&mut v, 1.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn parallel_fill_equals_one_stream_per_job() {
        let mut parallel = vec![0f32; 10_000];
        let jobs = parallel
            .chunks_mut(1000)
            .enumerate()
            .map(|(i, out)| NormalJob {
                seed: mix64(i as u64),
                out,
                std: 0.5,
            })
            .collect();
        fill_normal_parallel(jobs);
        let mut serial = vec![0f32; 10_000];
        for (i, out) in serial.chunks_mut(1000).enumerate() {
            SplitMix64::new(mix64(i as u64)).fill_normal(out, 0.5);
        }
        assert_eq!(parallel, serial);
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (the published reference sequence).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }
}
