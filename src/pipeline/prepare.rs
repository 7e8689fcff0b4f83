//! The prepare seam: one object's bytes → its model input. [`CpuPrepare`] decodes and
//! preprocesses on the CPU pool; with the `nvjpeg` feature, `GpuPrepare` decodes the
//! baseline JPEGs on the GPU and hands every other file to the CPU pool. [`for_run`]
//! picks one from `--decode` and the device.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::batch::{Element, Values};
use crate::cpu_pool::CpuPool;
use crate::decode::{self, DecodeLimits, DecodeOn};
use crate::error::Result;
use crate::nvjpeg::Chosen;
use crate::preprocess::{PreprocessSpec, Preprocessor, Tta};
use crate::runtime::Device;
use crate::stages::Stage;

use super::progress::Stats;

/// One image's model input.
pub(super) struct Input {
    /// Decoded size after EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// `views × spec.tensor_len()` values, in host memory.
    pub tensor: Values,
}

/// Turns fetched bytes into model input. `Ok(Err(why))` is the image's own failure
/// (an error row); `Err` is the run's (the pool is gone).
pub(super) trait Prepare: Send + Sync {
    /// What every [`Input::tensor`] holds, so batches are made of the same.
    fn element(&self) -> Element;

    fn prepare(
        &self,
        bytes: Bytes,
    ) -> BoxFuture<'static, Result<std::result::Result<Input, String>>>;
}

/// What preparing one image needs, shared by the decoders.
#[derive(Clone)]
struct Job {
    spec: PreprocessSpec,
    /// What the model takes: normalised floats, or RGB bytes it normalises itself.
    element: Element,
    tta: Tta,
    limits: DecodeLimits,
    stats: Arc<Stats>,
}

impl Job {
    /// Decode on this (CPU pool) thread and preprocess.
    fn on_cpu(&self, bytes: &[u8]) -> std::result::Result<Input, String> {
        let mut tensor = self.tensor();
        let mut times = decode::PrepareTimes::default();
        let prepared = with_preprocessor(&self.spec, |pre| {
            decode::decode_and_prepare_into(
                bytes,
                self.limits,
                pre,
                self.tta,
                &mut tensor,
                &mut times,
            )
            .map_err(|e| e.to_string())
        });
        self.stats.stages.add(Stage::Decode, times.decode);
        self.stats.stages.add(Stage::Preprocess, times.preprocess);
        let (width, height) = prepared??;
        Ok(Input {
            width,
            height,
            tensor,
        })
    }

    fn tensor(&self) -> Values {
        Values::zeros(self.element, self.spec.tensor_len() * self.tta.views())
    }
}

/// Decode and preprocess on a fixed pool of CPU threads, each keeping its own
/// buffers from image to image.
pub(super) struct CpuPrepare {
    pool: Arc<CpuPool>,
    job: Job,
}

impl CpuPrepare {
    pub fn new(
        spec: PreprocessSpec,
        element: Element,
        tta: Tta,
        limits: DecodeLimits,
        threads: usize,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        Ok(Self {
            pool: Arc::new(CpuPool::new("labelflow-decode", threads)?),
            job: Job {
                spec,
                element,
                tta,
                limits,
                stats,
            },
        })
    }
}

impl Prepare for CpuPrepare {
    fn element(&self) -> Element {
        self.job.element
    }

    fn prepare(
        &self,
        bytes: Bytes,
    ) -> BoxFuture<'static, Result<std::result::Result<Input, String>>> {
        let (pool, job) = (self.pool.clone(), self.job.clone());
        Box::pin(async move { pool.run(move || job.on_cpu(&bytes)).await })
    }
}

/// What picks a run's prepare stage.
pub(super) struct PrepareOptions {
    pub spec: PreprocessSpec,
    pub element: Element,
    pub tta: Tta,
    pub limits: DecodeLimits,
    pub threads: usize,
    pub stats: Arc<Stats>,
    pub decode: DecodeOn,
    /// Where the model runs (the GPU decoder uses the same device).
    pub device: Device,
}

/// The prepare stage for a run: the GPU decoder's when `decode` asks for it and the
/// build, library and device allow it (`gpu` unavailable is an error naming why;
/// `auto` then decodes on the CPU and says why), else the CPU pool's.
pub(super) fn for_run(o: PrepareOptions) -> Result<Arc<dyn Prepare>> {
    let cpu = CpuPrepare::new(o.spec, o.element, o.tta, o.limits, o.threads, o.stats)?;
    match crate::nvjpeg::choose(o.decode, o.device, crate::nvjpeg::open)? {
        Chosen::Cpu { passed_over } => {
            if let Some(why) = passed_over {
                tracing::info!(%why, "decoding JPEGs on the CPU");
            }
            Ok(Arc::new(cpu))
        }
        #[cfg(feature = "nvjpeg")]
        Chosen::Gpu(nv) => {
            tracing::info!(version = %nv.version(), "decoding baseline JPEGs on the GPU with nvJPEG");
            Ok(Arc::new(gpu::GpuPrepare::new(cpu, nv)))
        }
        #[cfg(not(feature = "nvjpeg"))]
        Chosen::Gpu(never) => match never {},
    }
}

#[cfg(feature = "nvjpeg")]
mod gpu {
    //! nvJPEG for the files [`crate::nvjpeg::route`] sends to the GPU, the CPU pool's
    //! decoder for the rest and for any file nvJPEG refuses.

    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::Instant;

    use bytes::Bytes;
    use futures::future::BoxFuture;

    use crate::batch::{Element, Values};
    use crate::error::Result;
    use crate::nvjpeg::ffi::NvJpeg;
    use crate::nvjpeg::route::{route, Route};
    use crate::pipeline::prepare::{with_preprocessor, CpuPrepare, Input, Job, Prepare};
    use crate::stages::Stage;

    /// Files per decoder, reported when the run ends.
    #[derive(Default)]
    struct Counts {
        gpu: AtomicU64,
        routed_to_cpu: AtomicU64,
        refused_by_gpu: AtomicU64,
    }

    pub(super) struct GpuPrepare {
        cpu: CpuPrepare,
        nv: Arc<NvJpeg>,
        counts: Arc<Counts>,
    }

    impl GpuPrepare {
        pub fn new(cpu: CpuPrepare, nv: NvJpeg) -> Self {
            Self {
                cpu,
                nv: Arc::new(nv),
                counts: Arc::default(),
            }
        }
    }

    impl Drop for GpuPrepare {
        fn drop(&mut self) {
            tracing::info!(
                gpu = self.counts.gpu.load(Relaxed),
                routed_to_cpu = self.counts.routed_to_cpu.load(Relaxed),
                refused_by_gpu = self.counts.refused_by_gpu.load(Relaxed),
                "JPEG decoders used"
            );
        }
    }

    /// Decode on the GPU, copy the pixels back, preprocess on this thread; a file
    /// nvJPEG refuses is decoded on the CPU instead.
    fn on_gpu(
        job: &Job,
        nv: &NvJpeg,
        counts: &Counts,
        bytes: &[u8],
    ) -> std::result::Result<Input, String> {
        thread_local! {
            static PIXELS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        PIXELS.with(|cell| {
            let mut rgb = cell.borrow_mut();
            let started = Instant::now();
            let decoded = nv.decode_rgb(bytes, &mut rgb);
            job.stats.stages.add(Stage::Decode, started.elapsed());
            let (width, height) = match decoded {
                Ok(size) => size,
                Err(why) => {
                    counts.refused_by_gpu.fetch_add(1, Relaxed);
                    tracing::debug!(%why, "nvJPEG refused a file; decoding it on the CPU");
                    return job.on_cpu(bytes);
                }
            };
            counts.gpu.fetch_add(1, Relaxed);
            let started = Instant::now();
            let mut tensor = job.tensor();
            let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_preprocessor(&job.spec, |pre| match &mut tensor {
                    Values::F32(out) => pre.prepare(&rgb, width, height, job.tta, out),
                    Values::U8(out) => pre.prepare(&rgb, width, height, job.tta, out),
                })
            }))
            .map_err(|_| "preprocessing panicked".to_string())?;
            job.stats.stages.add(Stage::Preprocess, started.elapsed());
            prepared?.map_err(|e| format!("preprocessing: {e}"))?;
            Ok(Input {
                width,
                height,
                tensor,
            })
        })
    }

    impl Prepare for GpuPrepare {
        fn element(&self) -> Element {
            self.cpu.job.element
        }

        fn prepare(
            &self,
            bytes: Bytes,
        ) -> BoxFuture<'static, Result<std::result::Result<Input, String>>> {
            if let Route::Cpu(_) = route(&bytes, self.cpu.job.limits.max_pixels) {
                self.counts.routed_to_cpu.fetch_add(1, Relaxed);
                return self.cpu.prepare(bytes);
            }
            let (pool, job, nv, counts) = (
                self.cpu.pool.clone(),
                self.cpu.job.clone(),
                self.nv.clone(),
                self.counts.clone(),
            );
            Box::pin(async move { pool.run(move || on_gpu(&job, &nv, &counts, &bytes)).await })
        }
    }
}

thread_local! {
    /// Each decode thread keeps one preprocessor (its resize buffers and lookup
    /// tables) from image to image.
    static PREPROCESSOR: std::cell::RefCell<Option<Preprocessor>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's preprocessor for `spec`, made on first use.
fn with_preprocessor<R>(
    spec: &PreprocessSpec,
    f: impl FnOnce(&mut Preprocessor) -> R,
) -> std::result::Result<R, String> {
    PREPROCESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|p| p.spec() != spec) {
            *slot = Some(Preprocessor::new(spec.clone()).map_err(|e| e.to_string())?);
        }
        match slot.as_mut() {
            Some(pre) => Ok(f(pre)),
            None => Err("no preprocessor".to_string()),
        }
    })
}
