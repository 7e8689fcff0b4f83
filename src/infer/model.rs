//! The model as the batch job sees it: the file's bytes, what its inputs, outputs and
//! metadata say ([`describe`]), the preprocessing it needs, and [`load_model`], which
//! turns a plan into running sessions.

use std::path::PathBuf;

use ort::session::Session;
use ort::value::ValueType;

pub use super::info::{check_graph_normalises, check_spec, ModelBytes, ModelInfo, OutputKind};
use super::pool::{Described, InferencePool, PoolOptions};
use super::session::{build_session_on, SessionOptions};
use crate::batch::Element;
use crate::error::{Error, Hint, Result, Setting};
use crate::onnx::embedding::EmbeddingOutput;
use crate::onnx::metadata;
use crate::preprocess::{Layout, PreprocessOverrides, PreprocessSpec, Tta};
use crate::runtime::{Device, Precision};

/// Read the model's inputs, outputs and metadata from a built session.
pub fn describe(model: &ModelBytes, session: &Session) -> Result<ModelInfo> {
    let bad = |reason: String| Error::Model {
        path: model.location.clone(),
        reason,
    };
    let inputs = session.inputs();
    if inputs.len() != 1 {
        return Err(bad(format!(
            "expected one image input, found {} inputs ({})",
            inputs.len(),
            inputs
                .iter()
                .map(|i| i.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let input = &inputs[0];
    let (ty, shape) = match input.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape.to_vec()),
        other => {
            return Err(bad(format!(
                "input {:?} is {other}, expected a float tensor [N,3,H,W] or [N,H,W,3]",
                input.name()
            )))
        }
    };
    // A float input takes the normalised tensor; a uint8 input takes RGB bytes, NHWC,
    // and the model's own first nodes cast and normalise them.
    let element = match ty {
        ort::value::TensorElementType::Float32 => Some(Element::F32),
        ort::value::TensorElementType::Uint8 => Some(Element::U8),
        _ => None,
    };
    let Some(element) = element.filter(|_| shape.len() == 4) else {
        return Err(bad(format!(
            "input {:?} is {ty} with shape {shape:?}; expected a float32 image tensor [N,3,H,W] (NCHW) or [N,H,W,3] (NHWC), or uint8 RGB [N,H,W,3]",
            input.name()
        )));
    };
    if element == Element::U8 && shape[3] != 3 {
        return Err(bad(format!(
            "input {:?} is uint8 with shape {shape:?}; a uint8 image input must be RGB bytes [N,H,W,3] (NHWC)",
            input.name()
        )));
    }
    let layout = if element == Element::U8 {
        Layout::Nhwc
    } else if shape[1] == 3 {
        Layout::Nchw
    } else if shape[3] == 3 {
        Layout::Nhwc
    } else {
        return Err(bad(format!(
            "input {:?} has shape {shape:?}; expected 3 colour channels at axis 1 (NCHW) or axis 3 (NHWC)",
            input.name()
        )));
    };
    let (h, w) = match layout {
        Layout::Nchw => (shape[2], shape[3]),
        Layout::Nhwc => (shape[1], shape[2]),
    };
    let input_size = if h > 0 && w > 0 {
        if h != w {
            return Err(bad(format!(
                "input is {h}x{w}; only square inputs are supported (centre crop)"
            )));
        }
        Some(h as u32)
    } else {
        None
    };
    let fixed_batch = (shape[0] > 0).then_some(shape[0] as usize);

    let outputs = session.outputs();
    let output = outputs
        .first()
        .ok_or_else(|| bad("the model has no outputs".into()))?;
    let out_classes = match output.dtype() {
        ValueType::Tensor { shape, ty, .. }
            if shape.len() == 2 && *ty == ort::value::TensorElementType::Float32 =>
        {
            shape[1]
        }
        other => {
            return Err(bad(format!(
                "output {:?} is {other}; expected float32 scores [N, classes]",
                output.name()
            )))
        }
    };

    let meta = session.metadata().map_err(|e| bad(e.to_string()))?;
    let classes = match meta.custom(metadata::CLASSES) {
        Some(json) => Some(metadata::classes_from_json(&json).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let classes = match (classes, out_classes) {
        (Some(c), n) if n > 0 && c.len() != n as usize => {
            return Err(bad(format!(
                "metadata lists {} class names but the output has {n} scores",
                c.len()
            )))
        }
        (Some(c), _) => c,
        (None, n) if n > 0 => (0..n).map(|i| format!("class_{i}")).collect(),
        (None, _) => {
            return Err(bad(
                "the output's class dimension is dynamic and the model carries no class names"
                    .into(),
            ))
        }
    };
    let preprocess = match meta.custom(metadata::PREPROCESS) {
        Some(json) => Some(metadata::preprocess_from_json(&json).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let output_kind = match meta.custom(metadata::OUTPUT).as_deref() {
        Some(metadata::OUTPUT_LOGITS) => OutputKind::Logits,
        Some(metadata::OUTPUT_PROBABILITIES) | Some("probs") => OutputKind::Probabilities,
        _ => OutputKind::Unknown,
    };
    Ok(ModelInfo {
        name: model.name.clone(),
        sha256: model.sha256(),
        input_name: input.name().to_string(),
        output_name: output.name().to_string(),
        fixed_batch,
        element,
        layout,
        input_size,
        classes,
        output_kind,
        preprocess,
        embedding: None,
    })
}

/// Checks the session has the embedding output, as float32 `[N, dim]`.
fn check_embedding_output(
    model: &ModelBytes,
    session: &Session,
    e: &EmbeddingOutput,
) -> Result<()> {
    let bad = |reason: String| Error::Model {
        path: model.location.clone(),
        reason,
    };
    let out = session
        .outputs()
        .iter()
        .find(|o| o.name() == e.name)
        .ok_or_else(|| {
            bad(format!(
                "the embedding output {:?} is missing from the session",
                e.name
            ))
        })?;
    match out.dtype() {
        ValueType::Tensor { ty, shape, .. }
            if *ty == ort::value::TensorElementType::Float32
                && shape.len() == 2
                && (shape[1] < 0 || shape[1] as usize == e.dim) =>
        {
            Ok(())
        }
        other => Err(bad(format!(
            "the embedding output {:?} is {other}; expected float32 [N, {}]",
            e.name, e.dim
        ))),
    }
}

/// A loaded model ready to run, with its resolved preprocessing. The file's bytes
/// are not kept: once the sessions are built they hold the weights, and a second copy
/// would cost the model's size in memory for the whole run.
pub struct LoadedModel {
    /// Where the model was read from.
    pub location: String,
    pub info: ModelInfo,
    pub spec: PreprocessSpec,
    /// The device the sessions run on (CPU after a permitted CUDA fallback).
    pub device: crate::runtime::Device,
    pub pool: InferencePool,
}

/// What [`load_model`] needs: the model file, where it runs, and how it is fed.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub path: PathBuf,
    /// The ONNX Runtime library to load (else the usual places, see [`crate::runtime`]).
    pub ort_lib: Option<PathBuf>,
    pub device: Device,
    pub allow_cpu_fallback: bool,
    /// Inputs per inference call (rounded up to whole images' views with `tta`).
    pub batch_size: usize,
    pub tta: Tta,
    /// Preprocessing set by the caller over the model's own.
    pub preprocess: PreprocessOverrides,
    /// With embeddings: which tensor (`Some(None)`: the input of the last fully
    /// connected layer).
    pub embedding_output: Option<Option<String>>,
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session (0: its default).
    pub intra_threads: usize,
    pub batch_queue: usize,
    /// The model's arithmetic.
    pub precision: crate::runtime::Precision,
    /// Bound, reused input and output buffers per session.
    pub io_binding: crate::runtime::Toggle,
}

/// Load ONNX Runtime and the model, resolve preprocessing, start the sessions.
pub fn load_model(plan: &ModelOptions) -> Result<LoadedModel> {
    crate::runtime::init(plan.ort_lib.as_deref())?;
    let bytes = ModelBytes::read(&plan.path)?;
    let bytes =
        match plan.precision {
            Precision::Fp16 if plan.embedding_output.is_some() => return Err(Error::Config(
                "embeddings are written from a float32 model; fp16 computes them in half precision"
                    .into(),
            )
            .with_hint(
                Hint::new("pass ")
                    .setting(Setting::Precision)
                    .then(" fp32 or tf32 with ")
                    .setting(Setting::Embeddings),
            )),
            Precision::Fp16 => bytes.half_precision()?,
            _ => bytes,
        };
    let (bytes, embedding) = match &plan.embedding_output {
        Some(named) => {
            let (with, output) = bytes.with_embedding_output(named.as_deref())?;
            (with, Some(output))
        }
        None => (bytes, None),
    };
    // With several GPUs the first session is built on the first; the pool puts the
    // others on each GPU in turn.
    let gpus = plan.device.each();
    let opts = SessionOptions {
        device: gpus.first().copied().unwrap_or(plan.device),
        allow_cpu_fallback: plan.allow_cpu_fallback,
        intra_threads: plan.intra_threads,
        precision: plan.precision,
    };
    let (first, device) = build_session_on(&bytes, &opts)?;
    // After a permitted CPU fallback every session runs on CPU; otherwise the sessions
    // go to the GPUs asked for, and the run reports the device as asked (a set or one).
    let (devices, run_device) = if device == Device::Cpu {
        (vec![Device::Cpu], Device::Cpu)
    } else {
        (gpus, plan.device)
    };
    let mut info = describe(&bytes, &first)?;
    if let Some(e) = &embedding {
        check_embedding_output(&bytes, &first, e)?;
    }
    info.embedding = embedding;
    let base = info.preprocess.clone().unwrap_or_else(|| PreprocessSpec {
        layout: info.layout,
        ..info
            .input_size
            .map_or_else(PreprocessSpec::default, PreprocessSpec::imagenet)
    });
    let spec = plan.preprocess.apply(base.clone());
    spec.validate()?;
    check_spec(&bytes, &info, &spec)?;
    if info.element == Element::U8 {
        check_graph_normalises(&bytes, &base, &spec)?;
    }
    // With test-time augmentation a batch holds whole images' views: round it up to
    // a multiple of the views per image.
    let views = plan.tta.views();
    let batch = plan.batch_size.div_ceil(views) * views;
    let pool = InferencePool::start(
        &bytes,
        Described {
            session: first,
            device,
            info: info.clone(),
        },
        &spec,
        &PoolOptions {
            session: opts,
            // One session per GPU at least.
            sessions: plan.sessions.max(devices.len()),
            devices,
            batch_size: batch,
            queue_capacity: plan.batch_queue,
            io_binding: plan.io_binding,
        },
    )?;
    if pool.batch_size() < views {
        let fixed = pool.batch_size();
        pool.shutdown();
        return Err(Error::Config(format!(
            "test-time augmentation {} needs {views} inputs per image, but {} has a fixed batch size of {fixed}",
            plan.tta,
            plan.path.display()
        ))
        .with_hint(
            Hint::new("use ")
                .setting(Setting::Tta)
                .then(" none or a model with a dynamic (or larger) batch"),
        ));
    }
    Ok(LoadedModel {
        location: bytes.location.clone(),
        info,
        spec,
        device: run_device,
        pool,
    })
}
