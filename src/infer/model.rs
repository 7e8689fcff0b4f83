//! The model as the batch job sees it: the file's bytes, what its inputs, outputs and
//! metadata say ([`describe`]), the preprocessing it needs, and [`load_model`], which
//! turns a plan into running sessions.

use std::path::Path;
use std::sync::Arc;

use ort::session::Session;
use ort::value::ValueType;
use sha2::{Digest, Sha256};

use super::pool::{Described, InferencePool, PoolOptions};
use super::session::{build_session_on, SessionOptions};
use crate::config::RunPlan;
use crate::error::{Error, Result};
use crate::onnx::embedding::{add_embedding_output, EmbeddingOutput};
use crate::onnx::metadata;
use crate::preprocess::{Layout, PreprocessSpec};
use crate::runtime::Device;

/// Whether the model's output is raw scores or already probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Logits,
    Probabilities,
    /// Not declared by the model: decided per row (rows that already sum to 1 with
    /// values in [0, 1] are taken as probabilities).
    Unknown,
}

/// What the job needs to know about a model, read once from the file.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Display name (file stem, or the metadata's graph name).
    pub name: String,
    pub sha256: String,
    pub input_name: String,
    pub output_name: String,
    /// The batch size the model demands, when its batch dimension is fixed.
    pub fixed_batch: Option<usize>,
    pub layout: Layout,
    /// Spatial input size when the model fixes it.
    pub input_size: Option<u32>,
    pub classes: Vec<String>,
    pub output_kind: OutputKind,
    /// Preprocessing declared by the model's metadata, if any.
    pub preprocess: Option<PreprocessSpec>,
    /// With `--embeddings`: the extra output read per image.
    pub embedding: Option<EmbeddingOutput>,
}

impl ModelInfo {
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

/// A model file loaded into memory.
#[derive(Clone)]
pub struct ModelBytes {
    pub name: String,
    pub location: String,
    pub bytes: Arc<Vec<u8>>,
    /// The sha256 of the file as read (kept when the bytes gain an embedding output,
    /// so rows name the file the user has).
    digest: String,
}

impl ModelBytes {
    /// Read a model from a local path.
    pub fn read(path: &Path) -> Result<Self> {
        let model_err = |reason: String| Error::Model {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            return Err(model_err(
                "file not found; create one with `labelflow model init --out PATH` or pass --model"
                    .into(),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| model_err(format!("cannot read: {e}")))?;
        let name = display_name(path);
        Ok(Self {
            name,
            location: path.display().to_string(),
            digest: hex::encode(Sha256::digest(bytes.as_slice())),
            bytes: Arc::new(bytes),
        })
    }

    /// The sha256 of the model file.
    pub fn sha256(&self) -> String {
        self.digest.clone()
    }

    /// The same model with its feature tensor (`named`, or the input of the last
    /// fully connected layer) as an extra output; the file's sha256 is kept.
    pub fn with_embedding_output(&self, named: Option<&str>) -> Result<(Self, EmbeddingOutput)> {
        let (bytes, output) =
            add_embedding_output(&self.bytes, named).map_err(|e| Error::Model {
                path: self.location.clone(),
                reason: e.to_string(),
            })?;
        Ok((
            Self {
                bytes: Arc::new(bytes),
                ..self.clone()
            },
            output,
        ))
    }
}

/// The name a model is known by in the output's `model` column: the file stem, or
/// for the training job's `<version>/model.onnx` layout the version folder's name
/// (`models/v2/model.onnx` → `v2`), so runs of different versions tell apart.
fn display_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "model" {
        if let Some(dir) = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|d| d.to_str())
        {
            return dir.to_string();
        }
    }
    stem.to_string()
}

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
    if ty != ort::value::TensorElementType::Float32 || shape.len() != 4 {
        return Err(bad(format!(
            "input {:?} is {ty} with shape {shape:?}; expected a float32 image tensor [N,3,H,W] (NCHW) or [N,H,W,3] (NHWC)",
            input.name()
        )));
    }
    let layout = if shape[1] == 3 {
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

/// Checks the preprocessing output fits the model's input.
pub fn check_spec(model: &ModelBytes, info: &ModelInfo, spec: &PreprocessSpec) -> Result<()> {
    if let Some(size) = info.input_size {
        if size != spec.crop {
            return Err(Error::Config(format!(
                "model {} takes {size}x{size} images but the crop is {}; pass --crop {size} (or drop the crop override)",
                model.location, spec.crop
            )));
        }
    }
    if info.layout != spec.layout {
        return Err(Error::Config(format!(
            "model {} expects {:?} input but the layout is set to {:?}",
            model.location, info.layout, spec.layout
        )));
    }
    Ok(())
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

/// Load ONNX Runtime and the model, resolve preprocessing, start the sessions.
pub fn load_model(plan: &RunPlan) -> Result<LoadedModel> {
    crate::runtime::init(plan.ort_lib.as_deref())?;
    let bytes = ModelBytes::read(&plan.model)?;
    let (bytes, embedding) = match &plan.embeddings {
        Some(e) => {
            let (with, output) = bytes.with_embedding_output(e.output.as_deref())?;
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
        intra_threads: plan.tuning.intra_threads,
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
    let spec = plan.preprocess.apply(base);
    spec.validate()?;
    check_spec(&bytes, &info, &spec)?;
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
            sessions: plan.tuning.sessions.max(devices.len()),
            devices,
            batch_size: batch,
            queue_capacity: plan.tuning.batch_queue,
        },
    )?;
    if pool.batch_size() < views {
        let fixed = pool.batch_size();
        pool.shutdown();
        return Err(Error::Config(format!(
            "--tta {} needs {views} inputs per image, but {} has a fixed batch size of {fixed}; use --tta none or a model with a dynamic (or larger) batch",
            plan.tta,
            plan.model.display()
        )));
    }
    Ok(LoadedModel {
        location: bytes.location.clone(),
        info,
        spec,
        device: run_device,
        pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_come_from_the_file_or_its_version_folder() {
        assert_eq!(display_name(Path::new("out/alexnet.onnx")), "alexnet");
        assert_eq!(display_name(Path::new("models/v2/model.onnx")), "v2");
        assert_eq!(display_name(Path::new("model.onnx")), "model");
    }
}
