//! Exposing a model's penultimate layer as an extra graph output, for
//! `labelflow run --embeddings`.
//!
//! The feature vector is the input of the last fully connected layer: the last `Gemm`
//! or `MatMul` node in the graph (ONNX nodes are in topological order), whose weight
//! initializer gives the vector's length. For AlexNet that is fc7 after its ReLU, the
//! 4 096-d vector of the paper's section 6.1. Another tensor can be named instead.
//!
//! Only `graph.output` changes: no node, initializer or existing output is touched, so
//! the logits are computed exactly as before.

use onnx_protobuf::{Message, ModelProto, NodeProto};

use super::writer::{value_info_f32, Dim};
use crate::error::OnnxError;

/// The extra output: its tensor name and its length per image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingOutput {
    pub name: String,
    pub dim: usize,
}

/// `bytes` with `named` (or, when `None`, the input of the last Gemm/MatMul) added as
/// a graph output `[N, dim]`. A tensor that already is a graph output is left as is.
pub fn add_embedding_output(
    bytes: &[u8],
    named: Option<&str>,
) -> Result<(Vec<u8>, EmbeddingOutput), OnnxError> {
    let mut model = ModelProto::parse_from_bytes(bytes).map_err(|source| OnnxError::Protobuf {
        context: "reading the model to add its embedding output".into(),
        source,
    })?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| OnnxError::Embedding("the model has no graph".into()))?;
    let found = match named {
        Some(name) => named_output(graph, name)?,
        None => last_dense_input(graph)?,
    };
    if !graph.output.iter().any(|o| o.name == found.name) {
        graph.output.push(value_info_f32(
            &found.name,
            &[Dim::Param("N".into()), Dim::Fixed(found.dim as i64)],
        ));
    }
    let out = model
        .write_to_bytes()
        .map_err(|source| OnnxError::Protobuf {
            context: "writing the model with its embedding output".into(),
            source,
        })?;
    Ok((out, found))
}

fn attribute_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn last_dense_input(graph: &onnx_protobuf::GraphProto) -> Result<EmbeddingOutput, OnnxError> {
    let node = graph
        .node
        .iter()
        .rev()
        .find(|n| n.op_type == "Gemm" || n.op_type == "MatMul")
        .ok_or_else(|| {
            OnnxError::Embedding(
                "no Gemm or MatMul node (a fully connected layer) to take the features from; \
                 name the feature tensor to store"
                    .into(),
            )
        })?;
    let (Some(features), Some(weight)) = (node.input.first(), node.input.get(1)) else {
        return Err(OnnxError::Embedding(format!(
            "node {:?} ({}) has fewer than two inputs",
            node.name, node.op_type
        )));
    };
    let dims = graph
        .initializer
        .iter()
        .find(|t| &t.name == weight)
        .map(|t| t.dims.clone())
        .ok_or_else(|| {
            OnnxError::Embedding(format!(
                "the weight {weight:?} of the last fully connected layer ({:?}) is not stored in the model, so the feature length is unknown; name the feature tensor to store",
                node.name
            ))
        })?;
    if dims.len() != 2 {
        return Err(OnnxError::Embedding(format!(
            "the weight {weight:?} of {:?} has shape {dims:?}, expected two dimensions",
            node.name
        )));
    }
    // Gemm computes A·B (or A·Bᵀ with transB = 1); MatMul A·B. A's length is B's
    // first dimension, or its second when transposed.
    let transposed = node.op_type == "Gemm" && attribute_int(node, "transB") == Some(1);
    let dim = if transposed { dims[1] } else { dims[0] };
    if node.op_type == "Gemm" && attribute_int(node, "transA") == Some(1) {
        return Err(OnnxError::Embedding(format!(
            "the last fully connected layer {:?} transposes its input (transA); name the feature tensor to store",
            node.name
        )));
    }
    Ok(EmbeddingOutput {
        name: features.clone(),
        dim: usize::try_from(dim).map_err(|_| {
            OnnxError::Embedding(format!("weight {weight:?} has a negative dimension"))
        })?,
    })
}

fn named_output(
    graph: &onnx_protobuf::GraphProto,
    name: &str,
) -> Result<EmbeddingOutput, OnnxError> {
    let produced = graph
        .node
        .iter()
        .any(|n| n.output.iter().any(|o| o == name));
    if !produced && !graph.output.iter().any(|o| o.name == name) {
        let mut dense: Vec<&str> = graph
            .node
            .iter()
            .filter(|n| n.op_type == "Gemm" || n.op_type == "MatMul")
            .filter_map(|n| n.input.first().map(String::as_str))
            .collect();
        dense.dedup();
        return Err(OnnxError::Embedding(format!(
            "no tensor {name:?} in the model; the inputs of its fully connected layers are {dense:?}"
        )));
    }
    // The length: from the graph's declared shapes, when it has one.
    let declared = graph
        .output
        .iter()
        .chain(graph.value_info.iter())
        .find(|v| v.name == name)
        .and_then(|v| v.type_.as_ref()?.tensor_type().shape.as_ref().cloned());
    let dim = declared.and_then(|shape| {
        let last = shape.dim.last()?;
        let d = last.dim_value();
        (shape.dim.len() == 2 && d > 0).then_some(d as usize)
    });
    match dim {
        Some(dim) => Ok(EmbeddingOutput {
            name: name.to_owned(),
            dim,
        }),
        None => Err(OnnxError::Embedding(format!(
            "the model does not declare the shape of {name:?} as [N, D]; only such a tensor can be stored as an embedding"
        ))),
    }
}
