//! A pool of inference threads, each owning one session, fed by a bounded queue; the
//! queue is the back-pressure on decoding.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ort::session::Session;
use ort::value::TensorRef;
use tokio::sync::{mpsc, oneshot};

use super::info::{check_spec, ModelBytes, ModelInfo};
use super::session::{session_for, SessionOptions};
use crate::batch::{BatchInput, Element, Values};
use crate::error::{Error, Result};
use crate::preprocess::{Layout, PreprocessSpec};
use crate::runtime::Device;

/// A session already built (to read the model's description) and what it said.
pub struct Described {
    pub session: Session,
    /// The device it runs on (CPU after a permitted CUDA fallback).
    pub device: Device,
    pub info: ModelInfo,
}

/// How many sessions, how large their batches, how long their queue.
#[derive(Debug, Clone, Default)]
pub struct PoolOptions {
    /// How each further session is built.
    pub session: SessionOptions,
    /// Inference threads, one session each (at least one).
    pub sessions: usize,
    /// The devices the sessions go to in turn (the first session's is `devices[0]`);
    /// empty means the first session's device for all.
    pub devices: Vec<Device>,
    /// Inputs per call, unless the model fixes its batch dimension.
    pub batch_size: usize,
    /// Batches waiting for a free session.
    pub queue_capacity: usize,
    /// Bind each session's input and outputs to buffers allocated once (`auto`: on
    /// CUDA, with pinned host memory).
    pub io_binding: crate::runtime::Toggle,
}

/// What one batch returns: the scores, and with `--embeddings` the feature vectors.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `images × classes` raw model outputs.
    pub scores: Vec<f32>,
    /// `images × dim` raw feature values, when the pool reads an embedding output.
    pub embedding: Option<Vec<f32>>,
}

/// The tensors a session reads after each call.
#[derive(Clone)]
struct OutputNames {
    input: String,
    scores: String,
    embedding: Option<String>,
}

struct Job {
    input: BatchInput,
    reply: oneshot::Sender<Result<Outputs>>,
    /// Where the session's time on this batch is added (nanoseconds).
    busy: Option<Arc<AtomicU64>>,
}

/// A pool of inference threads, each owning one session, fed by a bounded queue.
/// Dropping the pool closes the queue and waits for the threads: they finish their
/// current batch and stop (once every [`InferenceHandle`] is dropped too).
pub struct InferencePool {
    queue: mpsc::Sender<Job>,
    info: ModelInfo,
    batch_size: usize,
    shape: [usize; 4],
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl InferencePool {
    /// Start `opts.sessions` threads for `model`, the first of which uses the session
    /// `first` was described from; the others are built on the same device. The batch
    /// size is replaced by the model's fixed batch dimension when it has one.
    pub fn start(
        model: &ModelBytes,
        first: Described,
        spec: &PreprocessSpec,
        opts: &PoolOptions,
    ) -> Result<Self> {
        let Described {
            session: first,
            device,
            info,
        } = first;
        let sessions = opts.sessions.max(1);
        let queue_capacity = opts.queue_capacity;
        let batch_size = info.fixed_batch.unwrap_or(opts.batch_size.max(1));
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
                None => {
                    let on = if opts.devices.is_empty() {
                        device
                    } else {
                        opts.devices[i % opts.devices.len()]
                    };
                    session_for(model, &opts.session, on)?
                }
            };
            let rx = Arc::clone(&rx);
            let names = OutputNames {
                input: info.input_name.clone(),
                scores: info.output_name.clone(),
                embedding: info.embedding.as_ref().map(|e| e.name.clone()),
            };
            let on = if opts.devices.is_empty() {
                device
            } else {
                opts.devices[i % opts.devices.len()]
            };
            // The session's own device: CPU after a permitted fallback.
            let on = if device == Device::Cpu {
                Device::Cpu
            } else {
                on
            };
            let feed = Feed {
                shape,
                element: info.element,
                bind: opts.io_binding.on_for(on).then_some(on),
            };
            let handle = std::thread::Builder::new()
                .name(format!("labelflow-infer-{i}"))
                .spawn(move || session_loop(session, rx, names, feed))
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
            element: self.info.element,
            classes: self.info.num_classes(),
            embedding_dim: self.info.embedding.as_ref().map(|e| e.dim),
            batch: self.batch_size,
            busy: None,
        }
    }

    /// Close the queue and wait for the threads (what dropping the pool does).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for InferencePool {
    fn drop(&mut self) {
        // Our sender goes; the threads end once the handles' senders are gone too.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, closed));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Submits batches to an [`InferencePool`].
#[derive(Clone)]
pub struct InferenceHandle {
    queue: mpsc::Sender<Job>,
    /// What the model's input takes.
    element: Element,
    classes: usize,
    embedding_dim: Option<usize>,
    batch: usize,
    busy: Option<Arc<AtomicU64>>,
}

impl InferenceHandle {
    /// The same handle, adding the time the sessions spend on its batches to `busy`
    /// (nanoseconds): a run's inference busy time.
    pub fn timed(mut self, busy: Arc<AtomicU64>) -> Self {
        self.busy = Some(busy);
        self
    }

    /// Run one padded batch; returns `real × classes` raw outputs (padding dropped),
    /// and `real × dim` feature values when the pool reads an embedding output.
    /// Waits for room in the queue: this is the back-pressure on decoding.
    pub async fn run(&self, input: BatchInput) -> Result<Outputs> {
        let real = input.real;
        if input.data.element() != self.element {
            return Err(Error::Inference(format!(
                "a batch of {} values for a model whose input is {}",
                input.data.element(),
                self.element
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Job {
                input,
                reply,
                busy: self.busy.clone(),
            })
            .await
            .map_err(|_| Error::Inference("inference threads have stopped".into()))?;
        let Outputs {
            scores: mut out,
            mut embedding,
        } = rx
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
        if let (Some(dim), Some(e)) = (self.embedding_dim, embedding.as_mut()) {
            if e.len() != self.batch * dim {
                return Err(Error::Inference(format!(
                    "the embedding output returned {} values for a batch of {}, expected {} ({dim} per image)",
                    e.len(),
                    self.batch,
                    self.batch * dim
                )));
            }
            e.truncate(real * dim);
        }
        Ok(Outputs {
            scores: out,
            embedding,
        })
    }
}

/// How a session thread feeds its session.
#[derive(Clone, Copy)]
struct Feed {
    shape: [usize; 4],
    element: Element,
    /// With IoBinding: the session's device (pinned host buffers on CUDA).
    bind: Option<Device>,
}

fn session_loop(
    mut session: Session,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    names: OutputNames,
    feed: Feed,
) {
    // Buffers for IoBinding, made on the first batch; when they cannot be made the
    // session is fed the plain way and the reason is logged once.
    let mut bound: Option<Bound> = None;
    let mut bind = feed.bind;
    loop {
        let job = {
            let mut guard = match rx.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.blocking_recv()
        };
        let Some(job) = job else { break };
        let started = Instant::now();
        if let (Some(device), None) = (bind, &bound) {
            match Bound::new(&session, &names, feed, device) {
                Ok(b) => bound = Some(b),
                Err(e) => {
                    tracing::warn!(error = %crate::error::report(&e), "IoBinding is not available; feeding the session without it");
                    bind = None;
                }
            }
        }
        let result = match bound.as_mut() {
            Some(b) => b.run(&mut session, &names, &job.input),
            None => run_once(&mut session, &names, feed.shape, &job.input),
        };
        if let Some(busy) = &job.busy {
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            busy.fetch_add(ns, Relaxed);
        }
        let _ = job.reply.send(result);
    }
}

fn ort_error(context: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |source| Error::Ort {
        context: context.into(),
        source,
    }
}

/// One session's bound buffers: the input tensor allocated once (pinned host memory
/// for a CUDA session) that each batch is copied into, and the outputs bound to host
/// (pinned) memory.
struct Bound {
    binding: ort::session::IoBinding,
    input: BoundInput,
}

enum BoundInput {
    F32(ort::value::Tensor<f32>),
    U8(ort::value::Tensor<u8>),
}

impl Bound {
    fn new(session: &Session, names: &OutputNames, feed: Feed, device: Device) -> Result<Self> {
        use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
        let (allocator, out_memory) = match device {
            Device::Cpu => (Allocator::default(), MemoryInfo::default()),
            _ => (
                Allocator::new(
                    session,
                    MemoryInfo::new(
                        AllocationDevice::CUDA_PINNED,
                        0,
                        AllocatorType::Device,
                        MemoryType::CPUInput,
                    )
                    .map_err(ort_error("describing pinned input memory"))?,
                )
                .map_err(ort_error("making the pinned input allocator"))?,
                MemoryInfo::new(
                    AllocationDevice::CUDA_PINNED,
                    0,
                    AllocatorType::Device,
                    MemoryType::CPUOutput,
                )
                .map_err(ort_error("describing pinned output memory"))?,
            ),
        };
        let input = match feed.element {
            Element::F32 => BoundInput::F32(
                ort::value::Tensor::<f32>::new(&allocator, feed.shape)
                    .map_err(ort_error("allocating the bound input"))?,
            ),
            Element::U8 => BoundInput::U8(
                ort::value::Tensor::<u8>::new(&allocator, feed.shape)
                    .map_err(ort_error("allocating the bound input"))?,
            ),
        };
        let mut binding = session
            .create_binding()
            .map_err(ort_error("creating the IoBinding"))?;
        for name in std::iter::once(&names.scores).chain(names.embedding.as_ref()) {
            binding
                .bind_output_to_device(name.as_str(), &out_memory)
                .map_err(ort_error("binding an output"))?;
        }
        Ok(Self { binding, input })
    }

    fn run(
        &mut self,
        session: &mut Session,
        names: &OutputNames,
        input: &BatchInput,
    ) -> Result<Outputs> {
        let wrong = || {
            Error::Inference(format!(
                "a batch of {} {} values does not fit the bound input",
                input.data.len(),
                input.data.element()
            ))
        };
        /// Copy `data` into the bound tensor and bind it again.
        fn fill<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Copy>(
            binding: &mut ort::session::IoBinding,
            name: &str,
            tensor: &mut ort::value::Tensor<T>,
            data: &[T],
        ) -> Option<Result<()>> {
            let (_, dst) = tensor.extract_tensor_mut();
            if dst.len() != data.len() {
                return None;
            }
            dst.copy_from_slice(data);
            Some(
                binding
                    .bind_input(name, tensor)
                    .map_err(ort_error("binding the input")),
            )
        }
        let name = names.input.as_str();
        let filled = match (&mut self.input, &input.data) {
            (BoundInput::F32(t), Values::F32(d)) => fill(&mut self.binding, name, t, d),
            (BoundInput::U8(t), Values::U8(d)) => fill(&mut self.binding, name, t, d),
            _ => None,
        };
        filled.ok_or_else(wrong)??;
        let outputs = session
            .run_binding(&self.binding)
            .map_err(ort_error("running the model"))?;
        read_outputs(&outputs, names)
    }
}

/// The scores (and the embedding) out of one call's outputs, as host floats.
fn read_outputs(
    outputs: &ort::session::SessionOutputs<'_>,
    names: &OutputNames,
) -> Result<Outputs> {
    let read = |name: &str| -> Result<Vec<f32>> {
        let value = outputs
            .get(name)
            .ok_or_else(|| Error::Inference(format!("the model produced no output {name:?}")))?;
        let (_, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|source| Error::Ort {
                context: format!("reading output {name:?}"),
                source,
            })?;
        Ok(data.to_vec())
    };
    Ok(Outputs {
        scores: read(&names.scores)?,
        embedding: names.embedding.as_deref().map(read).transpose()?,
    })
}

fn run_once(
    session: &mut Session,
    names: &OutputNames,
    shape: [usize; 4],
    input: &BatchInput,
) -> Result<Outputs> {
    let tensor_error = ort_error("building the input tensor");
    let value = match &input.data {
        Values::F32(data) => TensorRef::from_array_view((shape, data.as_slice()))
            .map_err(tensor_error)?
            .into_dyn(),
        Values::U8(data) => TensorRef::from_array_view((shape, data.as_slice()))
            .map_err(tensor_error)?
            .into_dyn(),
    };
    let outputs = session
        .run(ort::inputs![names.input.as_str() => value])
        .map_err(ort_error("running the model"))?;
    read_outputs(&outputs, names)
}
