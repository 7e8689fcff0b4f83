//! ONNX Runtime sessions for a model on the requested device, with a permitted CPU
//! fallback when CUDA cannot be used.

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use super::info::ModelBytes;
use crate::error::{Error, Hint, Result, Setting};
use crate::runtime::{self, Device, Precision};

/// How sessions are built.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// Run on CPU when the CUDA provider cannot be registered (otherwise that is an error).
    pub allow_cpu_fallback: bool,
    /// ONNX Runtime intra-op threads per session (0: ONNX Runtime's default).
    pub intra_threads: usize,
    /// TensorFloat-32 on CUDA with [`Precision::Tf32`]; float16 models are made
    /// before the session ([`super::ModelBytes::half_precision`]).
    pub precision: Precision,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            allow_cpu_fallback: false,
            intra_threads: 0,
            precision: Precision::Fp32,
        }
    }
}

fn ort_err(model: &str, e: impl std::fmt::Display) -> Error {
    Error::Model {
        path: model.to_string(),
        reason: e.to_string(),
    }
}

/// Build one session for `model` on the requested device.
pub fn build_session(model: &ModelBytes, opts: &SessionOptions) -> Result<Session> {
    build_session_on(model, opts).map(|(session, _)| session)
}

/// Build one session and say which device it really runs on: with
/// `allow_cpu_fallback`, a CUDA device that cannot be used gives a CPU session and a
/// warning; without it, an error naming what to fix.
pub fn build_session_on(model: &ModelBytes, opts: &SessionOptions) -> Result<(Session, Device)> {
    match (opts.device, session_for(model, opts, opts.device)) {
        (Device::Cuda(id), Err(e))
            if opts.allow_cpu_fallback && matches!(e.kind(), Error::Runtime(_)) =>
        {
            let reason = e.kind().to_string();
            tracing::warn!(device = id, %reason, "CUDA cannot be used; running on CPU, as the CPU fallback allows");
            Ok((session_for(model, opts, Device::Cpu)?, Device::Cpu))
        }
        (device, result) => result.map(|s| (s, device)),
    }
}

pub(super) fn session_for(
    model: &ModelBytes,
    opts: &SessionOptions,
    device: Device,
) -> Result<Session> {
    let env = runtime::environment()?;
    let err = |e: &dyn std::fmt::Display| ort_err(&model.location, e);
    let mut builder = Session::builder(env)
        .map_err(|e| err(&e))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| err(&e))?;
    if opts.intra_threads > 0 {
        builder = builder
            .with_intra_threads(opts.intra_threads)
            .map_err(|e| err(&e))?;
    }
    // A set of GPUs is expanded into one session per GPU by the pool; a single session
    // asked for a set runs on its first GPU.
    let device = device.each().first().copied().unwrap_or(device);
    if let Device::Cuda(id) = device {
        // cuDNN benchmarks every convolution algorithm once per session (the shapes
        // are fixed, so once is enough) and keeps the fastest.
        let ep = ort::ep::CUDA::default()
            .with_device_id(id)
            .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Exhaustive)
            // ONNX Runtime leaves TF32 off unless asked.
            .with_tf32(opts.precision == Precision::Tf32)
            .build()
            .error_on_failure();
        builder = builder.with_execution_providers([ep]).map_err(|e| {
            Error::Runtime(format!(
                "cannot use CUDA device {id}: {}",
                e.to_string().trim_end_matches('.')
            ))
            .with_hint(
                Hint::new("check `labelflow doctor` (needs the onnxruntime-gpu library, CUDA 13 and cuDNN 9 on the loader path), or pass ")
                    .setting(Setting::AllowCpuFallback)
                    .then(" to run on CPU"),
            )
        })?;
    }
    builder
        .commit_from_memory(&model.bytes)
        .map_err(|e| Error::Model {
            path: model.location.clone(),
            reason: format!("ONNX Runtime cannot load it: {e}"),
        })
}
