//! The prepare seam: one object's bytes → its model input. [`CpuPrepare`] decodes and
//! preprocesses on the CPU pool; another implementation (a GPU decoder) is one more
//! type here, chosen in [`super::produce`].

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::batch::{Element, Values};
use crate::cpu_pool::CpuPool;
use crate::decode::{self, DecodeLimits};
use crate::error::Result;
use crate::preprocess::{PreprocessSpec, Preprocessor, Tta};
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

/// Decode and preprocess on a fixed pool of CPU threads, each keeping its own
/// buffers from image to image.
pub(super) struct CpuPrepare {
    pool: Arc<CpuPool>,
    spec: PreprocessSpec,
    /// What the model takes: normalised floats, or RGB bytes it normalises itself.
    element: Element,
    tta: Tta,
    limits: DecodeLimits,
    stats: Arc<Stats>,
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
            spec,
            element,
            tta,
            limits,
            stats,
        })
    }
}

impl Prepare for CpuPrepare {
    fn element(&self) -> Element {
        self.element
    }

    fn prepare(
        &self,
        bytes: Bytes,
    ) -> BoxFuture<'static, Result<std::result::Result<Input, String>>> {
        let (pool, spec, element, tta, limits, stats) = (
            self.pool.clone(),
            self.spec.clone(),
            self.element,
            self.tta,
            self.limits,
            self.stats.clone(),
        );
        Box::pin(async move {
            pool.run(move || -> std::result::Result<Input, String> {
                let mut tensor = Values::zeros(element, spec.tensor_len() * tta.views());
                let mut times = decode::PrepareTimes::default();
                let prepared = with_preprocessor(&spec, |pre| {
                    decode::decode_and_prepare_into(
                        &bytes,
                        limits,
                        pre,
                        tta,
                        &mut tensor,
                        &mut times,
                    )
                    .map_err(|e| e.to_string())
                });
                stats.stages.add(Stage::Decode, times.decode);
                stats.stages.add(Stage::Preprocess, times.preprocess);
                let (width, height) = prepared??;
                Ok(Input {
                    width,
                    height,
                    tensor,
                })
            })
            .await
        })
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
