//! Building ONNX models from nodes and named f32 weights, and writing them out.
//!
//! Nothing here knows about AlexNet: a training job can export any graph by adding its
//! inputs, outputs, initializers (shape + `Vec<f32>`, stored as little-endian
//! `raw_data`) and nodes to a [`GraphBuilder`], wrapping it with [`model_proto`] and
//! writing it with [`write_model_file`], which returns the file's sha256.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use sha2::{Digest, Sha256};

use crate::error::OnnxError;

/// The ONNX IR version written (ONNX 1.13+, onnxruntime 1.14+ read it).
pub const IR_VERSION: i64 = 8;
/// The default-domain opset written.
pub const OPSET: i64 = 17;
/// `producer_name` of every model written.
pub const PRODUCER_NAME: &str = "labelflow";

/// Protobuf cannot encode a message of 2 GiB or more; ONNX would need external data.
const MAX_MODEL_BYTES: u64 = (1 << 31) - 1;

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named symbolic size such as `"batch"`, chosen at run time.
    Param(String),
    /// Neither (allowed by ONNX; only ever seen when reading).
    Unknown,
}

impl Dim {
    /// The symbolic batch dimension used by this project's models.
    pub fn batch() -> Self {
        Dim::Param("batch".to_owned())
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Param(p) => f.write_str(p),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A dense f32 tensor in row-major order: the unit of weights in and out of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl F32Tensor {
    /// A tensor of `shape` holding `data` (row-major); fails when the lengths disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, OnnxError> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(OnnxError::Weights(format!(
                "shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(F32Tensor { shape, data })
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let len = shape.iter().product();
        F32Tensor {
            shape,
            data: vec![0.0; len],
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, row-major, for in-place updates (the shape stays fixed).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Splits into shape and values.
    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.data)
    }

    /// As an `ndarray` array of the same shape (copies the values).
    pub fn to_ndarray(&self) -> ndarray::ArrayD<f32> {
        // The length was checked against the shape when the tensor was made.
        ndarray::ArrayD::from_shape_vec(self.shape.clone(), self.data.clone())
            .unwrap_or_else(|_| ndarray::ArrayD::zeros(self.shape.clone()))
    }
}

/// An `INT` attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        type_: AttributeType::INT.into(),
        i: value,
        ..Default::default()
    }
}

/// An `INTS` attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        type_: AttributeType::INTS.into(),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A `FLOAT` attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        type_: AttributeType::FLOAT.into(),
        f: value,
        ..Default::default()
    }
}

/// A `STRING` attribute.
pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        type_: AttributeType::STRING.into(),
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A `TensorProto` named `name` holding `tensor` as little-endian `raw_data`.
pub fn tensor_proto(name: &str, tensor: &F32Tensor) -> TensorProto {
    let mut raw = Vec::with_capacity(tensor.data.len() * 4);
    for v in &tensor.data {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: name.to_owned(),
        dims: tensor.shape.iter().map(|&d| d as i64).collect(),
        data_type: DataType::FLOAT as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// A `TensorProto` named `name` holding `tensor` rounded to float16, as little-endian
/// `raw_data`.
pub fn tensor_proto_f16(name: &str, tensor: &F32Tensor) -> TensorProto {
    let mut raw = Vec::with_capacity(tensor.data.len() * 2);
    for v in &tensor.data {
        raw.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
    }
    TensorProto {
        name: name.to_owned(),
        dims: tensor.shape.iter().map(|&d| d as i64).collect(),
        data_type: DataType::FLOAT16 as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// A float32 tensor `ValueInfoProto` with the given dimensions.
pub fn value_info_f32(name: &str, dims: &[Dim]) -> ValueInfoProto {
    value_info(name, DataType::FLOAT, dims)
}

/// A tensor `ValueInfoProto` of `elem` with the given dimensions.
fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| {
            let mut out = tensor_shape_proto::Dimension::new();
            match d {
                Dim::Fixed(n) => out.set_dim_value(*n),
                Dim::Param(p) => out.set_dim_param(p.clone()),
                Dim::Unknown => {}
            }
            out
        })
        .collect();
    let tensor_type = type_proto::Tensor {
        elem_type: elem as i32,
        shape: Some(TensorShapeProto {
            dim,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let mut type_ = TypeProto::new();
    type_.set_tensor_type(tensor_type);
    ValueInfoProto {
        name: name.to_owned(),
        type_: Some(type_).into(),
        ..Default::default()
    }
}

/// Accumulates a `GraphProto`: inputs, outputs, initializers and nodes in the order
/// they are added (nodes must be added in a topological order, as ONNX requires).
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            graph: GraphProto {
                name: name.to_owned(),
                ..Default::default()
            },
        }
    }

    /// Adds a float32 graph input.
    pub fn input_f32(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(value_info_f32(name, dims));
        self
    }

    /// Adds a uint8 graph input.
    pub fn input_u8(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph
            .input
            .push(value_info(name, DataType::UINT8, dims));
        self
    }

    /// Adds a float32 graph output.
    pub fn output_f32(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.output.push(value_info_f32(name, dims));
        self
    }

    /// Adds a float32 initializer (a weight), copied into little-endian `raw_data`.
    pub fn initializer(&mut self, name: &str, tensor: &F32Tensor) -> &mut Self {
        self.graph.initializer.push(tensor_proto(name, tensor));
        self
    }

    /// Adds a float16 initializer: `tensor` rounded to half precision.
    pub fn initializer_f16(&mut self, name: &str, tensor: &F32Tensor) -> &mut Self {
        self.graph.initializer.push(tensor_proto_f16(name, tensor));
        self
    }

    /// Adds a default-domain node. `name` is the node's name (for error messages and
    /// profiles); `inputs` and `outputs` are value names.
    pub fn node(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> &mut Self {
        self.graph.node.push(NodeProto {
            op_type: op_type.to_owned(),
            name: name.to_owned(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attribute: attributes,
            ..Default::default()
        });
        self
    }

    /// Sets the graph's doc string.
    pub fn doc(&mut self, text: &str) -> &mut Self {
        self.graph.doc_string = text.to_owned();
        self
    }

    /// The finished graph.
    pub fn build(self) -> GraphProto {
        self.graph
    }
}

/// Wraps `graph` in a model: IR [`IR_VERSION`], default-domain opset [`OPSET`],
/// producer [`PRODUCER_NAME`] at this crate's version, and `metadata` as
/// `metadata_props` in the order given.
pub fn model_proto(graph: GraphProto, metadata: &[(String, String)]) -> ModelProto {
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..Default::default()
        }],
        producer_name: PRODUCER_NAME.to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        graph: Some(graph).into(),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A writer that hashes everything passing through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Serialises `model` into `out` (streamed, no second in-memory copy) and returns the
/// lowercase hex sha256 of the bytes written.
pub fn write_model<W: Write>(model: &ModelProto, out: W) -> Result<String, OnnxError> {
    let size = model.compute_size();
    if size > MAX_MODEL_BYTES {
        return Err(OnnxError::Weights(format!(
            "the model would be {size} bytes; a single ONNX protobuf must stay under 2 GiB"
        )));
    }
    let mut hashing = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
    };
    model
        .write_to_writer(&mut hashing)
        .map_err(|source| OnnxError::Protobuf {
            context: "encoding the ONNX model".to_owned(),
            source,
        })?;
    hashing.flush().map_err(|source| OnnxError::Protobuf {
        context: "writing the ONNX model".to_owned(),
        source: source.into(),
    })?;
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// Writes `model` to `path` atomically (a temporary file beside it, then a rename) and
/// returns the file's lowercase hex sha256.
pub fn write_model_file(model: &ModelProto, path: &Path) -> Result<String, OnnxError> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| OnnxError::io(&tmp, e))?;
        let mut buffered = BufWriter::with_capacity(1 << 20, file);
        let sha = write_model(model, &mut buffered).map_err(|e| with_path(e, path))?;
        let file = buffered
            .into_inner()
            .map_err(|e| OnnxError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| OnnxError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| OnnxError::io(path, e))?;
        Ok(sha)
    })();
    if result.is_err() {
        // Best effort: the temporary file is useless after a failure.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `dir/.name.tmp-PID` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.onnx".to_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn with_path(err: OnnxError, path: &Path) -> OnnxError {
    match err {
        OnnxError::Protobuf { context, source } => OnnxError::Protobuf {
            context: format!("{context} to {}", path.display()),
            source,
        },
        other => other,
    }
}

/// The lowercase hex sha256 of a file's bytes (read in chunks).
pub fn sha256_file(path: &Path) -> Result<String, OnnxError> {
    let mut file = File::open(path).map_err(|e| OnnxError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| OnnxError::io(path, e))?;
    Ok(hex::encode(hasher.finalize()))
}
