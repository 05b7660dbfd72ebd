//! The part of the ONNX protobuf schema (`onnx/onnx.proto`, IR version 8) that `fit` reads and writes: a
//! model, its graph, nodes with attributes, dense tensors and typed inputs and outputs. Field numbers are
//! ONNX's; fields not listed here (functions, sparse tensors, training info, quantization notes) are dropped
//! when a model is decoded, so a trunk that needs them is refused (see [`check_plain`]).

use prost::Message;

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;
/// `AttributeProto.AttributeType.FLOAT`.
pub const ATTR_FLOAT: i32 = 1;
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
    /// Model-local functions (refused in a trunk).
    #[prost(bytes = "vec", repeated, tag = "25")]
    pub functions: Vec<Vec<u8>>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OpsetId {
    /// Domain ("" is the default ONNX domain).
    #[prost(string, tag = "1")]
    pub domain: String,
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
}

/// `AttributeProto` (the scalar, list and tensor forms).
#[derive(Clone, PartialEq, Message)]
pub struct Attribute {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `AttributeType`.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    /// FLOAT.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// INT.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// STRING.
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// TENSOR.
    #[prost(message, optional, tag = "5")]
    pub t: Option<Tensor>,
    /// FLOATS.
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// INTS.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// GRAPH (refused in a trunk: control flow).
    #[prost(bytes = "vec", optional, tag = "6")]
    pub g: Option<Vec<u8>>,
}

/// `TensorProto` (dense, stored inside the model).
#[derive(Clone, PartialEq, Message)]
pub struct Tensor {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// FLOAT values (when not in `raw_data`).
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT32-backed values.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
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
    if let Some(n) = g
        .node
        .iter()
        .find(|n| n.attribute.iter().any(|a| a.g.is_some()))
    {
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
        r#type: ATTR_INTS,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// An INT attribute.
pub fn int(name: &str, value: i64) -> Attribute {
    Attribute {
        name: name.to_string(),
        r#type: ATTR_INT,
        i: value,
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
