//! The ONNX graphs `fit` builds from a trunk model: the trunk cut at its feature layers (to measure good
//! tiles), and the anomaly model, which is that cut trunk followed by PaDiM's per-location Mahalanobis
//! distance:
//!
//! ```text
//! image ─► trunk ─► layers (average-pooled to the smallest map, concatenated)  [N, C, H, W]
//!        ─► [N, L, C] − mean[L, C] = d ─► dᵀ · precision[L, C, C] · d ─► √  ─► anomaly_map [N, 1, H, W]
//!                                                                          └─► max ─► score [N, 1]
//! ```

use super::gauss::Fitted;
use super::proto::{self, Model, Node, ValueInfo};
use std::collections::HashSet;

/// Output name of the anomaly model's image score.
pub const SCORE: &str = "score";
/// Output name of the anomaly model's map.
pub const MAP: &str = "anomaly_map";

/// A trunk checked for `fit`: a plain ONNX model with one image input, opset 13 or later.
pub struct Trunk {
    /// The model without its graph.
    model: Model,
    graph: proto::Graph,
    input: String,
}

impl Trunk {
    /// Checks the decoded trunk model.
    pub fn new(mut model: Model) -> Result<Self, String> {
        proto::check_plain(&model)?;
        let g = model.graph.take().ok_or("the model has no graph")?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("" | "ai.onnx")))
            .map_or(0, |o| o.version);
        if opset < 13 {
            return Err(format!(
                "it uses ONNX opset {opset}; fit needs opset 13 or later (re-export the trunk)"
            ));
        }
        let init: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&ValueInfo> = g
            .input
            .iter()
            .filter(|i| !init.contains(i.name.as_str()))
            .collect();
        let [input] = inputs[..] else {
            return Err(format!(
                "it has {} inputs besides its weights; a trunk takes one image",
                inputs.len()
            ));
        };
        let input = input.name.clone();
        Ok(Self {
            input,
            graph: g,
            model,
        })
    }

    /// The feature layer a classifier's head reads: the input of its last global pooling node (what
    /// `--layer` defaults to).
    pub fn default_layer(&self) -> Option<String> {
        self.graph()
            .node
            .iter()
            .rev()
            .find(|n| n.op_type.starts_with("Global") && n.op_type.ends_with("Pool"))
            .and_then(|n| n.input.first().cloned())
    }

    /// Every tensor a node of the trunk produces (what `--layer` may name).
    pub fn tensors(&self) -> Vec<String> {
        self.graph()
            .node
            .iter()
            .flat_map(|n| n.output.iter().cloned())
            .collect()
    }

    /// The version of the default ONNX operator set the trunk imports.
    pub fn opset(&self) -> i64 {
        self.model
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("" | "ai.onnx")))
            .map_or(0, |o| o.version)
    }

    fn graph(&self) -> &proto::Graph {
        &self.graph
    }

    /// The trunk cut at `layers`: only the nodes and weights they need, one output per layer.
    pub fn cut(&self, layers: &[String]) -> Result<Model, String> {
        let g = self.graph();
        let produced: HashSet<&str> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        if let Some(l) = layers.iter().find(|l| !produced.contains(l.as_str())) {
            return Err(format!(
                "the trunk has no tensor {l:?}; its node outputs are {}",
                self.tensors().join(", ")
            ));
        }
        // Walk back from the layers to the nodes they need.
        let mut needed: HashSet<String> = layers.iter().cloned().collect();
        let mut keep = vec![false; g.node.len()];
        for (i, n) in g.node.iter().enumerate().rev() {
            if n.output.iter().any(|o| needed.contains(o)) {
                keep[i] = true;
                needed.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
            }
        }
        let node: Vec<Node> = g
            .node
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(n, _)| n.clone())
            .collect();
        let initializer = g
            .initializer
            .iter()
            .filter(|t| needed.contains(&t.name))
            .cloned()
            .collect();
        let input = g
            .input
            .iter()
            .filter(|i| i.name == self.input)
            .cloned()
            .collect();
        let output = layers
            .iter()
            .map(|l| ValueInfo {
                name: l.clone(),
                r#type: Some(proto::TypeProto {
                    tensor_type: Some(proto::TensorType {
                        elem_type: proto::FLOAT,
                        shape: None,
                    }),
                }),
            })
            .collect();
        Ok(Model {
            graph: Some(proto::Graph {
                node,
                name: "trunk".into(),
                initializer,
                input,
                output,
                ..Default::default()
            }),
            ..self.model.clone()
        })
    }
}

/// A layer's output shape per tile: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

/// How the layers combine: each is average-pooled by an integer factor to the smallest map, then they are
/// concatenated along channels. Errors if a map does not divide evenly.
pub fn combined_shape(shapes: &[LayerShape]) -> Result<(LayerShape, Vec<usize>), String> {
    let h = shapes.iter().map(|s| s.height).min().ok_or("no layers")?;
    let w = shapes.iter().map(|s| s.width).min().ok_or("no layers")?;
    let mut factors = Vec::new();
    for s in shapes {
        if s.height % h != 0 || s.width % w != 0 || s.height / h != s.width / w {
            return Err(format!(
                "a {}×{} feature map cannot be pooled evenly to {h}×{w}; choose layers whose maps divide",
                s.height, s.width
            ));
        }
        factors.push(s.height / h);
    }
    Ok((
        LayerShape {
            channels: shapes.iter().map(|s| s.channels).sum(),
            height: h,
            width: w,
        },
        factors,
    ))
}

/// Pooling and concatenation nodes that turn the layers into one `[N, C, H, W]` tensor; returns its name.
fn combine_nodes(layers: &[String], factors: &[usize], nodes: &mut Vec<Node>) -> String {
    let mut parts = Vec::new();
    for (l, f) in layers.iter().zip(factors) {
        if *f == 1 {
            parts.push(l.clone());
        } else {
            let out = format!("padim_pool_{l}");
            let k = *f as i64;
            nodes.push(proto::node(
                "AveragePool",
                &[l],
                &out,
                vec![
                    proto::ints("kernel_shape", &[k, k]),
                    proto::ints("strides", &[k, k]),
                ],
            ));
            parts.push(out);
        }
    }
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    nodes.push(proto::node(
        "Concat",
        &refs,
        "padim_features",
        vec![proto::int("axis", 1)],
    ));
    "padim_features".into()
}

/// The trunk cut at `layers`, the layers combined as [`combined_shape`] says, as a model with one output
/// `padim_features` (what the statistics are fitted on).
pub fn features_model(
    trunk: &Trunk,
    layers: &[String],
    factors: &[usize],
) -> Result<Model, String> {
    let mut m = trunk.cut(layers)?;
    let g = m.graph.as_mut().ok_or("the cut trunk has no graph")?;
    let out = combine_nodes(layers, factors, &mut g.node);
    g.output = vec![ValueInfo {
        name: out,
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TensorType {
                elem_type: proto::FLOAT,
                shape: None,
            }),
        }),
    }];
    Ok(m)
}

/// The anomaly model: the trunk, the combined layers, and PaDiM's distance to the fitted Gaussians.
pub fn anomaly_model(
    trunk: &Trunk,
    layers: &[String],
    factors: &[usize],
    shape: LayerShape,
    fitted: &Fitted,
    doc: &str,
) -> Result<Model, String> {
    let (c, h, w) = (
        shape.channels as i64,
        shape.height as i64,
        shape.width as i64,
    );
    let l = h * w;
    if fitted.channels != shape.channels || fitted.locations != (l as usize) {
        return Err(format!(
            "the statistics ({} channels, {} locations) do not match the features ({} channels, {h}×{w})",
            fitted.channels, fitted.locations, shape.channels
        ));
    }
    let opset = trunk.opset();
    let mut m = trunk.cut(layers)?;
    let g = m.graph.as_mut().ok_or("the cut trunk has no graph")?;
    let feat = combine_nodes(layers, factors, &mut g.node);
    g.initializer.extend([
        proto::int64_tensor("padim_shape_ncl", &[0, c, l]),
        proto::int64_tensor("padim_shape_map", &[0, 1, h, w]),
        proto::int64_tensor("padim_axis_2", &[2]),
        proto::int64_tensor("padim_axis_3", &[3]),
        proto::float_tensor("padim_mean", &[l, c], &fitted.mean),
        proto::float_tensor("padim_precision", &[l, c, c], &fitted.precision),
    ]);
    if opset >= 18 {
        g.initializer
            .push(proto::int64_tensor("padim_axes_hw", &[2, 3]));
    }
    let n = &mut g.node;
    n.push(proto::node(
        "Reshape",
        &[&feat, "padim_shape_ncl"],
        "padim_ncl",
        vec![],
    ));
    n.push(proto::node(
        "Transpose",
        &["padim_ncl"],
        "padim_nlc",
        vec![proto::ints("perm", &[0, 2, 1])],
    ));
    n.push(proto::node(
        "Sub",
        &["padim_nlc", "padim_mean"],
        "padim_d",
        vec![],
    ));
    n.push(proto::node(
        "Unsqueeze",
        &["padim_d", "padim_axis_2"],
        "padim_d4",
        vec![],
    ));
    n.push(proto::node(
        "MatMul",
        &["padim_d4", "padim_precision"],
        "padim_pd",
        vec![],
    ));
    n.push(proto::node(
        "Mul",
        &["padim_pd", "padim_d4"],
        "padim_dpd",
        vec![],
    ));
    n.push(proto::node(
        "ReduceSum",
        &["padim_dpd", "padim_axis_3"],
        "padim_sq",
        vec![proto::int("keepdims", 0)],
    ));
    // Rounding can leave a distance a hair below zero.
    n.push(proto::node("Relu", &["padim_sq"], "padim_sq_pos", vec![]));
    n.push(proto::node("Sqrt", &["padim_sq_pos"], "padim_dist", vec![]));
    n.push(proto::node(
        "Reshape",
        &["padim_dist", "padim_shape_map"],
        MAP,
        vec![],
    ));
    // ReduceMax takes its axes as an attribute before opset 18 and as an input from 18 on.
    if opset >= 18 {
        n.push(proto::node(
            "ReduceMax",
            &[MAP, "padim_axes_hw"],
            SCORE,
            vec![proto::int("keepdims", 0)],
        ));
    } else {
        n.push(proto::node(
            "ReduceMax",
            &[MAP],
            SCORE,
            vec![proto::ints("axes", &[2, 3]), proto::int("keepdims", 0)],
        ));
    }
    g.name = "padim".into();
    g.output = vec![
        proto::float_value(SCORE, &[1]),
        proto::float_value(MAP, &[1, h, w]),
    ];
    m.producer_name = "tierline-models fit".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    m.doc_string = doc.into();
    Ok(m)
}
