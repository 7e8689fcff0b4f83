//! Inference: a model's description ([`model`]), ONNX Runtime sessions on the requested
//! device ([`session`]), a pool of session threads fed by a bounded queue ([`pool`]),
//! a model's outputs → probabilities → top-k ([`score`]), and feature vectors →
//! normalised embeddings and binary codes ([`embed`]).

pub mod embed;
pub mod info;
pub mod model;
pub mod pool;
pub mod score;
pub mod session;

pub use embed::{Embedded, Embedder};
pub use info::{check_spec, ModelBytes, ModelInfo, OutputKind};
pub use model::{describe, load_model, LoadedModel, ModelOptions};
pub use pool::{Described, InferenceHandle, InferencePool, Outputs, PoolOptions};
pub use score::{average_views, classify, softmax, top_k, Scored};
pub use session::{build_session, build_session_on, SessionOptions};
