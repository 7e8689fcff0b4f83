//! Reading an ONNX model back: metadata, input/output shapes and f32 initializers.
//!
//! Initializers are decoded one at a time and their protobuf bytes dropped as they go,
//! so reading a model holds about one copy of its weights at the end (plus one tensor).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use onnx_protobuf::{
    tensor_proto::{DataLocation, DataType},
    tensor_shape_proto::dimension,
    type_proto, Message, ModelProto, TensorProto, ValueInfoProto,
};

use super::metadata;
use super::writer::{Dim, F32Tensor};
use crate::error::OnnxError;

/// A graph input or output: its name, element type and dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueShape {
    /// The value's name in the graph (`"input"`, `"logits"`).
    pub name: String,
    /// ONNX `TensorProto.DataType` number (1 = float32); 0 when not a tensor.
    pub elem_type: i32,
    /// The dimensions; empty when the model gives no shape.
    pub dims: Vec<Dim>,
}

/// What this project needs from an ONNX model file.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// `metadata_props` as key → value.
    pub metadata: BTreeMap<String, String>,
    /// Graph inputs that are not initializers, in graph order.
    pub inputs: Vec<ValueShape>,
    /// Graph outputs, in graph order.
    pub outputs: Vec<ValueShape>,
    /// Every float32 initializer, by name.
    pub initializers: BTreeMap<String, F32Tensor>,
    /// Names of initializers of other element types (kept out of `initializers`).
    pub other_initializers: Vec<String>,
    /// `producer_name` of the file.
    pub producer_name: String,
    /// ONNX IR version of the file.
    pub ir_version: i64,
    /// Default-domain opset version; `None` when the model imports none.
    pub opset: Option<i64>,
}

impl OnnxModel {
    /// Reads and decodes the model file at `path`.
    pub fn read(path: &Path) -> Result<Self, OnnxError> {
        let file = File::open(path).map_err(|e| OnnxError::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        Self::read_from(&mut reader).map_err(|e| match e {
            OnnxError::Protobuf { source, .. } => OnnxError::Protobuf {
                context: format!("{} is not a readable ONNX model", path.display()),
                source,
            },
            other => other,
        })
    }

    /// Reads and decodes a model from any byte stream.
    pub fn read_from(reader: &mut dyn Read) -> Result<Self, OnnxError> {
        let proto =
            ModelProto::parse_from_reader(reader).map_err(|source| OnnxError::Protobuf {
                context: "decoding the ONNX model".to_owned(),
                source,
            })?;
        Self::from_proto(proto)
    }

    /// Takes what this project needs out of a decoded model.
    pub fn from_proto(mut proto: ModelProto) -> Result<Self, OnnxError> {
        let metadata = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version);
        let mut graph = proto.graph.take().unwrap_or_default();

        let mut initializers = BTreeMap::new();
        let mut other_initializers = Vec::new();
        for tensor in std::mem::take(&mut graph.initializer) {
            if tensor.data_type == DataType::FLOAT as i32 {
                let name = tensor.name.clone();
                initializers.insert(name, decode_f32(tensor)?);
            } else {
                other_initializers.push(tensor.name);
            }
        }
        let is_weight = |v: &&ValueInfoProto| {
            initializers.contains_key(&v.name) || other_initializers.contains(&v.name)
        };
        let inputs = graph
            .input
            .iter()
            .filter(|v| !is_weight(v))
            .map(value_shape)
            .collect();
        let outputs = graph.output.iter().map(value_shape).collect();
        Ok(OnnxModel {
            metadata,
            inputs,
            outputs,
            initializers,
            other_initializers,
            producer_name: proto.producer_name,
            ir_version: proto.ir_version,
            opset,
        })
    }

    /// The class names stored under [`metadata::CLASSES`], if the model has them.
    pub fn class_names(&self) -> Result<Option<Vec<String>>, OnnxError> {
        self.metadata
            .get(metadata::CLASSES)
            .map(|text| metadata::classes_from_json(text))
            .transpose()
    }

    /// The input transform stored under [`metadata::PREPROCESS`], if the model has one.
    pub fn preprocess(&self) -> Result<Option<crate::preprocess::PreprocessSpec>, OnnxError> {
        self.metadata
            .get(metadata::PREPROCESS)
            .map(|text| metadata::preprocess_from_json(text))
            .transpose()
    }

    /// The float32 initializer called `name`.
    pub fn initializer(&self, name: &str) -> Option<&F32Tensor> {
        self.initializers.get(name)
    }
}

fn value_shape(v: &ValueInfoProto) -> ValueShape {
    let (elem_type, dims) = match v.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let dims = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(n)) => Dim::Fixed(*n),
                            Some(dimension::Value::DimParam(p)) => Dim::Param(p.clone()),
                            _ => Dim::Unknown,
                        })
                        .collect()
                })
                .unwrap_or_default();
            (t.elem_type, dims)
        }
        _ => (0, Vec::new()),
    };
    ValueShape {
        name: v.name.clone(),
        elem_type,
        dims,
    }
}

/// Decodes a float32 `TensorProto` from `raw_data` (little-endian) or `float_data`.
fn decode_f32(mut tensor: TensorProto) -> Result<F32Tensor, OnnxError> {
    let name = std::mem::take(&mut tensor.name);
    let fail = |reason: String| OnnxError::Tensor {
        name: name.clone(),
        reason,
    };
    if tensor.data_location.value() == DataLocation::EXTERNAL as i32 {
        return Err(fail(
            "stored as external data, which this reader does not support".to_owned(),
        ));
    }
    let shape = tensor
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| fail(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let len: usize = shape.iter().product();
    let data = if !tensor.raw_data.is_empty() {
        let raw = std::mem::take(&mut tensor.raw_data);
        if raw.len() != len * 4 {
            return Err(fail(format!(
                "shape {shape:?} needs {} bytes of raw_data, found {}",
                len * 4,
                raw.len()
            )));
        }
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        let data = std::mem::take(&mut tensor.float_data);
        if data.len() != len {
            return Err(fail(format!(
                "shape {shape:?} needs {len} values, found {} in float_data",
                data.len()
            )));
        }
        data
    };
    F32Tensor::new(shape, data).map_err(|e| fail(e.to_string()))
}
