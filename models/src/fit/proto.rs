//! The part of the ONNX protobuf schema (`onnx/onnx.proto`, IR version 8) that `fit` reads and writes: a
//! model, its graph, nodes with attributes, dense tensors and typed inputs and outputs. Field numbers are
//! ONNX's. Fields `fit` never looks into are kept as encoded bytes, so they survive a decode and re-encode
//! (a string or number written explicitly at its default, such as an empty node domain, is re-encoded as
//! absent, which ONNX reads the same; attribute values keep their presence, where it matters);
//! what the cut trunk cannot carry over (model functions, sparse or external weights, control-flow
//! subgraphs) is refused by [`check_plain`].

use prost::Message;

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;
/// `AttributeProto.AttributeType.INT`.
pub const ATTR_INT: i32 = 2;
/// `AttributeProto.AttributeType.INTS`.
pub const ATTR_INTS: i32 = 7;

/// `ModelProto`.
#[derive(Clone, PartialEq, Message)]
pub struct Model {
    /// IR version.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets used.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OpsetId>,
    /// Producer name.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Producer version.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Model domain.
    #[prost(string, tag = "4")]
    pub domain: String,
    /// Model version.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Free text.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<Graph>,
    /// Key/value metadata.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringPair>,
    /// Training information, kept as encoded.
    #[prost(bytes = "vec", repeated, tag = "20")]
    pub training_info: Vec<Vec<u8>>,
    /// Model-local functions (refused in a trunk).
    #[prost(bytes = "vec", repeated, tag = "25")]
    pub functions: Vec<Vec<u8>>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OpsetId {
    /// Domain (empty or absent: the default ONNX domain; exporters write it even when empty).
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// Version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct StringPair {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct Graph {
    /// Nodes in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<Node>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<Tensor>,
    /// Sparse constants (refused in a trunk).
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub sparse_initializer: Vec<Vec<u8>>,
    /// Free text.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// Graph inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfo>,
    /// Graph outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfo>,
    /// Intermediate value types, kept as encoded.
    #[prost(bytes = "vec", repeated, tag = "13")]
    pub value_info: Vec<Vec<u8>>,
    /// Quantization notes, kept as encoded.
    #[prost(bytes = "vec", repeated, tag = "14")]
    pub quantization_annotation: Vec<Vec<u8>>,
    /// Metadata, kept as encoded.
    #[prost(bytes = "vec", repeated, tag = "16")]
    pub metadata_props: Vec<Vec<u8>>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct Node {
    /// Input tensor names.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output tensor names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Operator domain.
    #[prost(string, tag = "7")]
    pub domain: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<Attribute>,
    /// Free text.
    #[prost(string, tag = "6")]
    pub doc_string: String,
}

/// `AttributeProto`. ONNX is proto2: a scalar attribute's value is present even when it is zero, so the
/// scalars are optional here (prost would drop a plain zero). Forms `fit` never builds are kept as encoded.
#[derive(Clone, PartialEq, Message)]
pub struct Attribute {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Reference to a function attribute.
    #[prost(string, optional, tag = "21")]
    pub ref_attr_name: Option<String>,
    /// Free text.
    #[prost(string, optional, tag = "13")]
    pub doc_string: Option<String>,
    /// `AttributeType`.
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
    /// FLOAT.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// INT.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// STRING.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// TENSOR.
    #[prost(message, optional, tag = "5")]
    pub t: Option<Tensor>,
    /// GRAPH (refused in a trunk: control flow).
    #[prost(bytes = "vec", optional, tag = "6")]
    pub g: Option<Vec<u8>>,
    /// SPARSE_TENSOR, kept as encoded.
    #[prost(bytes = "vec", optional, tag = "22")]
    pub sparse_tensor: Option<Vec<u8>>,
    /// TYPE_PROTO, kept as encoded.
    #[prost(bytes = "vec", optional, tag = "14")]
    pub tp: Option<Vec<u8>>,
    /// FLOATS.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// INTS.
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// STRINGS.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// TENSORS, kept as encoded.
    #[prost(bytes = "vec", repeated, tag = "10")]
    pub tensors: Vec<Vec<u8>>,
    /// GRAPHS (refused in a trunk: control flow).
    #[prost(bytes = "vec", repeated, tag = "11")]
    pub graphs: Vec<Vec<u8>>,
    /// SPARSE_TENSORS, kept as encoded.
    #[prost(bytes = "vec", repeated, tag = "23")]
    pub sparse_tensors: Vec<Vec<u8>>,
    /// TYPE_PROTOS, kept as encoded.
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub type_protos: Vec<Vec<u8>>,
}

/// `TensorProto` (dense, stored inside the model).
#[derive(Clone, PartialEq, Message)]
pub struct Tensor {
    /// Shape.
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// Element type.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Segment of a chunked tensor, kept as encoded.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub segment: Option<Vec<u8>>,
    /// FLOAT values (when not in `raw_data`).
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT32-backed values.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// STRING values.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    /// INT64 values.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian raw values.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// DOUBLE values.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// UINT32 and UINT64 values.
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    /// Free text.
    #[prost(string, tag = "12")]
    pub doc_string: String,
    /// External data locations (refused in a trunk).
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringPair>,
    /// `DEFAULT` (0) or `EXTERNAL` (1).
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfo {
    /// Tensor name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto` (tensor types only).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// A tensor type.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorType>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorType {
    /// Element type.
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<Shape>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct Shape {
    /// Dimensions.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dim>,
}

/// `TensorShapeProto.Dimension`: a size or a symbolic name.
#[derive(Clone, PartialEq, Message)]
pub struct Dim {
    /// Fixed size.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// Symbolic name.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// Decodes a model file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Model, String> {
    Model::decode(bytes).map_err(|e| format!("not an ONNX model ({e})"))
}

/// Refuses what this schema subset would silently drop: model functions, sparse or external tensors and
/// control-flow subgraphs.
pub fn check_plain(m: &Model) -> Result<(), String> {
    let g = m.graph.as_ref().ok_or("the model has no graph")?;
    if !m.functions.is_empty() {
        return Err("it defines model-local functions".into());
    }
    if !g.sparse_initializer.is_empty() {
        return Err("it has sparse initializers".into());
    }
    if let Some(t) = g
        .initializer
        .iter()
        .find(|t| t.data_location != 0 || !t.external_data.is_empty())
    {
        return Err(format!(
            "initializer {:?} is stored outside the model file",
            t.name
        ));
    }
    if let Some(n) = g.node.iter().find(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return Err(format!(
            "node {:?} ({}) holds a subgraph",
            n.name, n.op_type
        ));
    }
    Ok(())
}

/// A float constant.
pub fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> Tensor {
    Tensor {
        dims: dims.to_vec(),
        data_type: FLOAT,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int64 constant.
pub fn int64_tensor(name: &str, values: &[i64]) -> Tensor {
    Tensor {
        dims: vec![values.len() as i64],
        data_type: INT64,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A node in the default domain.
pub fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<Attribute>) -> Node {
    Node {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        op_type: op.to_string(),
        attribute,
        ..Default::default()
    }
}

/// An INTS attribute.
pub fn ints(name: &str, values: &[i64]) -> Attribute {
    Attribute {
        name: name.to_string(),
        r#type: Some(ATTR_INTS),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// An INT attribute.
pub fn int(name: &str, value: i64) -> Attribute {
    Attribute {
        name: name.to_string(),
        r#type: Some(ATTR_INT),
        i: Some(value),
        ..Default::default()
    }
}

/// A float tensor value with a symbolic batch dimension `N` and fixed other dimensions.
pub fn float_value(name: &str, dims: &[i64]) -> ValueInfo {
    let mut dim = vec![Dim {
        dim_value: None,
        dim_param: Some("N".into()),
    }];
    dim.extend(dims.iter().map(|d| Dim {
        dim_value: Some(*d),
        dim_param: None,
    }));
    ValueInfo {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorType {
                elem_type: FLOAT,
                shape: Some(Shape { dim }),
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_attribute_keeps_its_value() {
        let a = int("keepdims", 0);
        let back = Attribute::decode(&a.encode_to_vec()[..]).unwrap();
        assert_eq!(back.i, Some(0));
        assert_eq!(back.r#type, Some(ATTR_INT));
    }

    #[test]
    fn committed_models_reencode_to_the_same_size() {
        // Same fields, possibly in another order: nothing was dropped or re-packed.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in [
            "prescreen-2.1.0.onnx",
            "full-2.1.0.onnx",
            "anomaly-woven-1.0.0.onnx",
        ] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let m = decode(&bytes).unwrap();
            check_plain(&m).unwrap();
            let again = m.encode_to_vec();
            assert_eq!(again.len(), bytes.len(), "{file}");
            assert_eq!(decode(&again).unwrap(), m, "{file}");
        }
    }
}
