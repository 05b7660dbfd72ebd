//! Model FLOPs counted from the ONNX graph itself, so a replaced model needs no hand-written figure.
//!
//! Only the fields needed are decoded (prost skips the rest). Shapes are propagated from the graph input at
//! batch 1 through the common vision operators; FLOPs are `2 × multiply-accumulates` of `Conv`, `Gemm` and
//! `MatMul`. Elementwise operators, pooling, normalization and activations are not counted: in a CNN they
//! are a few percent of the total, so the figure is a slight under-count, never an over-count.

use anyhow::{Context, bail};
use prost::Message;
use std::collections::HashMap;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", tag = "4")]
    s: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(message, optional, tag = "2")]
    shape: Option<ShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
}

/// FLOPs of one image through a model.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ModelFlops {
    /// FLOPs per image (2 × multiply-accumulates of Conv, Gemm and MatMul).
    pub flops_per_image: f64,
    /// Operators in the graph, by type.
    pub operators: Vec<String>,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn int64_values(t: &TensorProto) -> Vec<i64> {
    if !t.int64_data.is_empty() {
        return t.int64_data.clone();
    }
    t.raw_data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// Output size of a sliding window along one axis.
fn window_out(input: i64, kernel: i64, stride: i64, pad: i64, dilation: i64, same: bool) -> i64 {
    if same {
        return (input + stride - 1) / stride.max(1);
    }
    let span = (kernel - 1) * dilation + 1;
    (input + pad - span) / stride.max(1) + 1
}

/// Spatial output shape of Conv or a pooling node with kernel `k` on input `x` (NCHW).
fn spatial(node: &NodeProto, x: &[i64], k: &[i64], channels_out: i64) -> Vec<i64> {
    let n = k.len();
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; n]);
    let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; n]);
    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * n]);
    let same = attr(node, "auto_pad").is_some_and(|a| a.s.starts_with(b"SAME"));
    let mut out = vec![x[0], channels_out];
    for i in 0..n {
        let pad = pads.get(i).copied().unwrap_or(0) + pads.get(i + n).copied().unwrap_or(0);
        out.push(window_out(
            x[2 + i],
            k[i],
            strides.get(i).copied().unwrap_or(1),
            pad,
            dil.get(i).copied().unwrap_or(1),
            same,
        ));
    }
    out
}

/// Counts the FLOPs of one image through the ONNX model in `bytes`.
pub fn count(bytes: &[u8]) -> anyhow::Result<ModelFlops> {
    let model = ModelProto::decode(bytes).context("model file is not an ONNX protobuf")?;
    let graph = model.graph.context("ONNX model has no graph")?;
    let init: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut shapes: HashMap<String, Vec<i64>> = HashMap::new();
    for t in &graph.initializer {
        shapes.insert(t.name.clone(), t.dims.clone());
    }
    for i in &graph.input {
        if init.contains_key(i.name.as_str()) {
            continue;
        }
        let dims = i
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.iter().map(|d| d.dim_value.unwrap_or(1)).collect())
            .unwrap_or_default();
        // Symbolic dimensions (the batch) count as 1.
        shapes.insert(i.name.clone(), dims);
    }
    let mut flops = 0f64;
    let mut operators: Vec<String> = Vec::new();
    for node in &graph.node {
        if !operators.contains(&node.op_type) {
            operators.push(node.op_type.clone());
        }
        let shape_of = |k: usize| node.input.get(k).and_then(|n| shapes.get(n)).cloned();
        let need = |k: usize| {
            shape_of(k).with_context(|| {
                format!(
                    "shape of {:?} (input {k} of {}) is unknown; the FLOP counter does not follow an earlier operator",
                    node.input.get(k),
                    node.op_type
                )
            })
        };
        let outs: Vec<Vec<i64>> = match node.op_type.as_str() {
            "Conv" => {
                let (x, w) = (need(0)?, need(1)?);
                if x.len() < 3 || w.len() != x.len() {
                    bail!("Conv with input {x:?} and weights {w:?} is not supported");
                }
                let out = spatial(node, &x, &w[2..], w[0]);
                let macs: i64 = out.iter().product::<i64>() * w[1..].iter().product::<i64>();
                flops += 2.0 * macs as f64;
                vec![out]
            }
            "MaxPool" | "AveragePool" | "LpPool" => {
                let x = need(0)?;
                let k = attr_ints(node, "kernel_shape").unwrap_or_default();
                vec![spatial(node, &x, &k, x[1])]
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = need(0)?;
                let mut out = x[..2].to_vec();
                out.extend(std::iter::repeat_n(1, x.len().saturating_sub(2)));
                vec![out]
            }
            "Flatten" => {
                let x = need(0)?;
                let axis = attr_i(node, "axis", 1).rem_euclid(x.len().max(1) as i64) as usize;
                vec![vec![x[..axis].iter().product(), x[axis..].iter().product()]]
            }
            "Gemm" => {
                let (a, b) = (need(0)?, need(1)?);
                let (m, k) = if attr_i(node, "transA", 0) != 0 {
                    (a[1], a[0])
                } else {
                    (a[0], a[1])
                };
                let n = if attr_i(node, "transB", 0) != 0 {
                    b[0]
                } else {
                    b[1]
                };
                flops += 2.0 * (m * k * n) as f64;
                vec![vec![m, n]]
            }
            "MatMul" => {
                let (a, b) = (need(0)?, need(1)?);
                let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
                let n = b[b.len() - 1];
                let batch: i64 = a[..a.len() - 2].iter().product();
                flops += 2.0 * (batch * m * k * n) as f64;
                let mut out = a[..a.len() - 1].to_vec();
                out.push(n);
                vec![out]
            }
            "Reshape" => {
                let x = need(0)?;
                let target = node
                    .input
                    .get(1)
                    .and_then(|n| init.get(n.as_str()))
                    .map(|t| int64_values(t))
                    .context("Reshape with a computed shape is not supported")?;
                let mut out: Vec<i64> = target
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if d == 0 { x[i] } else { d })
                    .collect();
                let known: i64 = out.iter().filter(|&&d| d > 0).product();
                let total: i64 = x.iter().product();
                for d in &mut out {
                    if *d < 0 {
                        *d = total / known.max(1);
                    }
                }
                vec![out]
            }
            "Transpose" => {
                let x = need(0)?;
                let perm =
                    attr_ints(node, "perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
                vec![perm.iter().map(|&p| x[p as usize]).collect()]
            }
            "Concat" => {
                let first = need(0)?;
                let axis = attr_i(node, "axis", 0).rem_euclid(first.len() as i64) as usize;
                let mut out = first.clone();
                out[axis] = (0..node.input.len())
                    .map(|k| need(k).map(|s| s[axis]))
                    .sum::<anyhow::Result<i64>>()?;
                vec![out]
            }
            "Split" => {
                let x = need(0)?;
                let axis = attr_i(node, "axis", 0).rem_euclid(x.len() as i64) as usize;
                let sizes = node
                    .input
                    .get(1)
                    .and_then(|n| init.get(n.as_str()))
                    .map(|t| int64_values(t))
                    .or_else(|| attr_ints(node, "split"))
                    .unwrap_or_else(|| {
                        vec![x[axis] / node.output.len().max(1) as i64; node.output.len()]
                    });
                sizes
                    .iter()
                    .map(|&s| {
                        let mut o = x.clone();
                        o[axis] = s;
                        o
                    })
                    .collect()
            }
            op if op.starts_with("Reduce") => {
                let x = need(0)?;
                let axes = attr_ints(node, "axes")
                    .or_else(|| {
                        node.input
                            .get(1)
                            .and_then(|n| init.get(n.as_str()))
                            .map(|t| int64_values(t))
                    })
                    .unwrap_or_else(|| (0..x.len() as i64).collect());
                let axes: Vec<usize> = axes
                    .iter()
                    .map(|a| a.rem_euclid(x.len() as i64) as usize)
                    .collect();
                let keep = attr_i(node, "keepdims", 1) != 0;
                let out = x
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                        (false, _) => Some(d),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect();
                vec![out]
            }
            _ => {
                // Elementwise and shape-preserving operators: the broadcast of the known inputs.
                let known: Vec<Vec<i64>> = (0..node.input.len()).filter_map(shape_of).collect();
                let rank = known.iter().map(Vec::len).max().unwrap_or(0);
                let mut out = vec![1i64; rank];
                for s in &known {
                    for (i, &d) in s.iter().enumerate() {
                        let j = rank - s.len() + i;
                        out[j] = out[j].max(d);
                    }
                }
                vec![out; node.output.len().max(1)]
            }
        };
        for (name, shape) in node.output.iter().zip(outs) {
            shapes.insert(name.clone(), shape);
        }
    }
    Ok(ModelFlops {
        flops_per_image: flops,
        operators,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(manifest: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let m = tierline_shared::manifest::Manifest::load(&dir.join(manifest))
            .expect("shipped manifest");
        m.read_verified_model().expect("shipped model")
    }

    #[test]
    fn shipped_models_have_convolution_flops() {
        for manifest in ["prescreen.toml", "full.toml"] {
            let f = count(&shipped(manifest)).expect("count");
            assert!(f.operators.iter().any(|o| o == "Conv"), "{manifest}: {f:?}");
            assert!(f.flops_per_image > 1000.0, "{manifest}: {f:?}");
        }
    }

    #[test]
    fn conv_output_size_follows_the_onnx_formula() {
        // 64 input, kernel 5, no padding, stride 1 → 60; stride 2 with pads 2+2 → 32.
        assert_eq!(window_out(64, 5, 1, 0, 1, false), 60);
        assert_eq!(window_out(64, 5, 2, 4, 1, false), 32);
        assert_eq!(window_out(63, 3, 2, 0, 1, true), 32);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(count(b"not a model at all").is_err());
    }
}
