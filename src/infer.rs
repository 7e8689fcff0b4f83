//! Inference: a model's description, one ONNX Runtime session per inference thread fed
//! by a bounded queue, and logits → probabilities → top-k.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorRef, ValueType};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::onnx::metadata;
use crate::preprocess::{Layout, PreprocessSpec};
use crate::runtime::{self, Device};

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
            bytes: Arc::new(bytes),
        })
    }

    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.bytes.as_slice()))
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

/// How sessions are built.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// Run on CPU when the CUDA provider cannot be registered (otherwise that is an error).
    pub allow_cpu_fallback: bool,
    /// ONNX Runtime intra-op threads per session (0: ONNX Runtime's default).
    pub intra_threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            allow_cpu_fallback: false,
            intra_threads: 0,
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
        (Device::Cuda(id), Err(Error::Runtime(reason))) if opts.allow_cpu_fallback => {
            tracing::warn!(device = id, %reason, "CUDA cannot be used; running on CPU as --allow-cpu-fallback asks");
            Ok((session_for(model, opts, Device::Cpu)?, Device::Cpu))
        }
        (device, result) => result.map(|s| (s, device)),
    }
}

fn session_for(model: &ModelBytes, opts: &SessionOptions, device: Device) -> Result<Session> {
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
    if let Device::Cuda(id) = device {
        let ep = ort::ep::CUDA::default()
            .with_device_id(id)
            .build()
            .error_on_failure();
        builder = builder.with_execution_providers([ep]).map_err(|e| {
            Error::Runtime(format!(
                "cannot use CUDA device {id}: {}. Check `labelflow doctor` (needs the onnxruntime-gpu library, CUDA 13 and cuDNN 9 on the loader path), or pass --allow-cpu-fallback to run on CPU",
                e.to_string().trim_end_matches('.')
            ))
        })?;
    }
    builder
        .commit_from_memory(&model.bytes)
        .map_err(|e| Error::Model {
            path: model.location.clone(),
            reason: format!("ONNX Runtime cannot load it: {e}"),
        })
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
    })
}

/// One top-k entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub index: usize,
    pub score: f32,
}

/// In-place softmax of one row (numerically stable).
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

fn looks_like_probabilities(row: &[f32]) -> bool {
    let sum: f32 = row.iter().sum();
    row.iter().all(|v| (0.0..=1.0).contains(v)) && (sum - 1.0).abs() < 1e-3
}

/// Softmax `row` in place unless `kind` says it already holds probabilities.
fn to_probabilities(row: &mut [f32], kind: OutputKind) {
    let needs_softmax = match kind {
        OutputKind::Logits => true,
        OutputKind::Probabilities => false,
        OutputKind::Unknown => !looks_like_probabilities(row),
    };
    if needs_softmax {
        softmax(row);
    }
}

/// Probabilities of one image seen as `rows.len() / classes` views (test-time
/// augmentation): each view's row is turned into probabilities (per `kind`), then
/// the rows are averaged, as the 2012 paper averaged its ten crops' softmax outputs.
/// `rows` is overwritten.
pub fn average_views(rows: &mut [f32], classes: usize, kind: OutputKind) -> Vec<f32> {
    let mut mean = vec![0f32; classes];
    let mut views = 0usize;
    for row in rows.chunks_exact_mut(classes.max(1)) {
        to_probabilities(row, kind);
        for (m, v) in mean.iter_mut().zip(row.iter()) {
            *m += *v;
        }
        views += 1;
    }
    if views > 1 {
        for m in mean.iter_mut() {
            *m /= views as f32;
        }
    }
    mean
}

/// Turn one output row into probabilities (per `kind`) and return the `k` best,
/// highest first; ties keep the lower index first.
pub fn top_k(row: &mut [f32], kind: OutputKind, k: usize) -> Vec<Scored> {
    to_probabilities(row, kind);
    let k = k.min(row.len());
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let cmp = |a: &usize, b: &usize| {
        row[*b]
            .partial_cmp(&row[*a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter()
        .take(k)
        .map(|index| Scored {
            index,
            score: row[index],
        })
        .collect()
}

/// A batch of preprocessed images, padded to the session's batch size.
pub struct BatchInput {
    /// `batch_size × tensor_len` values; rows past `real` are padding.
    pub data: Vec<f32>,
    /// Number of real images at the front.
    pub real: usize,
}

struct Job {
    input: BatchInput,
    reply: oneshot::Sender<Result<Vec<f32>>>,
}

/// A pool of inference threads, each owning one session, fed by a bounded queue.
/// Dropping the pool closes the queue; the threads finish their current batch and stop.
pub struct InferencePool {
    queue: mpsc::Sender<Job>,
    info: ModelInfo,
    batch_size: usize,
    shape: [usize; 4],
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl InferencePool {
    /// Start `sessions` threads for `model`, the first of which uses `first` (the
    /// session [`describe`] read `info` from). `batch_size` is replaced by the model's
    /// fixed batch dimension when it has one.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        model: &ModelBytes,
        opts: &SessionOptions,
        device: Device,
        first: Session,
        info: ModelInfo,
        sessions: usize,
        batch_size: usize,
        queue_capacity: usize,
        spec: &PreprocessSpec,
    ) -> Result<Self> {
        let sessions = sessions.max(1);
        let batch_size = info.fixed_batch.unwrap_or(batch_size.max(1));
        check_spec(model, &info, spec)?;
        let c = spec.crop as usize;
        let shape = match info.layout {
            Layout::Nchw => [batch_size, 3, c, c],
            Layout::Nhwc => [batch_size, c, c, 3],
        };
        let (tx, rx) = mpsc::channel::<Job>(queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(sessions);
        let mut first = Some(first);
        for i in 0..sessions {
            let session = match first.take() {
                Some(s) => s,
                None => session_for(model, opts, device)?,
            };
            let rx = Arc::clone(&rx);
            let input_name = info.input_name.clone();
            let output_name = info.output_name.clone();
            let handle = std::thread::Builder::new()
                .name(format!("labelflow-infer-{i}"))
                .spawn(move || session_loop(session, rx, input_name, output_name, shape))
                .map_err(|e| Error::Task(format!("cannot start inference thread: {e}")))?;
            threads.push(handle);
        }
        Ok(Self {
            queue: tx,
            info,
            batch_size,
            shape,
            threads,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The input tensor shape every call uses.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// A handle that submits batches; cheap to clone.
    pub fn handle(&self) -> InferenceHandle {
        InferenceHandle {
            queue: self.queue.clone(),
            classes: self.info.num_classes(),
            batch: self.batch_size,
        }
    }

    /// Close the queue and wait for the threads.
    pub fn shutdown(self) {
        let InferencePool { queue, threads, .. } = self;
        drop(queue);
        for t in threads {
            let _ = t.join();
        }
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

/// Submits batches to an [`InferencePool`].
#[derive(Clone)]
pub struct InferenceHandle {
    queue: mpsc::Sender<Job>,
    classes: usize,
    batch: usize,
}

impl InferenceHandle {
    /// Run one padded batch; returns `real × classes` raw outputs (padding dropped).
    /// Waits for room in the queue: this is the back-pressure on decoding.
    pub async fn run(&self, input: BatchInput) -> Result<Vec<f32>> {
        let real = input.real;
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Job { input, reply })
            .await
            .map_err(|_| Error::Inference("inference threads have stopped".into()))?;
        let mut out = rx
            .await
            .map_err(|_| Error::Inference("an inference thread stopped mid-batch".into()))??;
        // Every batch is checked, not only the first: a model whose class dimension is
        // dynamic can disagree with its class names on any call.
        if out.len() != self.batch * self.classes {
            return Err(Error::Inference(format!(
                "the model returned {} values for a batch of {}, expected {} ({} per image for its {} class names); the model's output disagrees with its metadata",
                out.len(),
                self.batch,
                self.batch * self.classes,
                self.classes,
                self.classes
            )));
        }
        out.truncate(real * self.classes);
        Ok(out)
    }
}

fn session_loop(
    mut session: Session,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    input_name: String,
    output_name: String,
    shape: [usize; 4],
) {
    loop {
        let job = {
            let mut guard = match rx.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.blocking_recv()
        };
        let Some(job) = job else { break };
        let result = run_once(&mut session, &input_name, &output_name, shape, &job.input);
        let _ = job.reply.send(result);
    }
}

fn run_once(
    session: &mut Session,
    input_name: &str,
    output_name: &str,
    shape: [usize; 4],
    input: &BatchInput,
) -> Result<Vec<f32>> {
    let tensor = TensorRef::from_array_view((shape, input.data.as_slice())).map_err(|source| {
        Error::Ort {
            context: "building the input tensor".into(),
            source,
        }
    })?;
    let outputs = session
        .run(ort::inputs![input_name => tensor])
        .map_err(|source| Error::Ort {
            context: "running the model".into(),
            source,
        })?;
    let value = outputs
        .get(output_name)
        .ok_or_else(|| Error::Inference(format!("the model produced no output {output_name:?}")))?;
    let (_, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|source| Error::Ort {
            context: format!("reading output {output_name:?}"),
            source,
        })?;
    Ok(data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_then_top_k_orders_by_probability() {
        let mut row = vec![1.0, 3.0, 2.0, 3.0];
        let top = top_k(&mut row, OutputKind::Logits, 3);
        assert_eq!(
            top.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert!((top[0].score - top[1].score).abs() < 1e-7);
    }

    #[test]
    fn model_names_come_from_the_file_or_its_version_folder() {
        assert_eq!(display_name(Path::new("out/alexnet.onnx")), "alexnet");
        assert_eq!(display_name(Path::new("models/v2/model.onnx")), "v2");
        assert_eq!(display_name(Path::new("model.onnx")), "model");
    }

    #[test]
    fn views_are_averaged_after_softmax() {
        // Two views of three classes: softmax each, then the mean.
        let mut rows = vec![0.0, 0.0, 0.0, 2.0f32.ln(), 0.0, 0.0];
        let p = average_views(&mut rows, 3, OutputKind::Logits);
        let expect = [(1.0 / 3.0 + 0.5) / 2.0, (1.0 / 3.0 + 0.25) / 2.0];
        assert!((p[0] - expect[0]).abs() < 1e-6, "{p:?}");
        assert!((p[1] - expect[1]).abs() < 1e-6 && (p[2] - p[1]).abs() < 1e-6);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut probs = vec![1.0, 0.0, 0.0, 1.0];
        assert_eq!(
            average_views(&mut probs, 2, OutputKind::Probabilities),
            [0.5, 0.5]
        );
    }

    #[test]
    fn probabilities_are_not_softmaxed_twice() {
        let mut row = vec![0.1, 0.7, 0.2];
        let top = top_k(&mut row, OutputKind::Unknown, 5);
        assert_eq!(top.len(), 3);
        assert_eq!(
            top[0],
            Scored {
                index: 1,
                score: 0.7
            }
        );
    }
}
