//! Inference: a model's description ([`model`]), ONNX Runtime sessions on the requested
//! device ([`session`]), a pool of session threads fed by a bounded queue ([`pool`]),
//! and a model's outputs → probabilities → top-k ([`score`]).

pub mod model;
pub mod pool;
pub mod score;
pub mod session;

pub use model::{check_spec, describe, load_model, LoadedModel, ModelBytes, ModelInfo, OutputKind};
pub use pool::{Described, InferenceHandle, InferencePool, PoolOptions};
pub use score::{average_views, softmax, top_k, Scored};
pub use session::{build_session, build_session_on, SessionOptions};
