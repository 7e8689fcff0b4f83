//! Seeded initial weights filled in parallel: one [`SplitMix64`] stream per slice, so
//! the values depend on the seed alone, not on the number of threads (the generator
//! and its machine-independent normals live in [`crate::stable`]).

pub(crate) use crate::stable::{fnv1a64, mix64, SplitMix64};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
