//! Reading a model's outputs, whatever kind of model it is, into one judgement per frame: a defect score, a
//! decision, a label, class scores and where the defect is.
//!
//! ```text
//! output tensors ──► per row (image or tile), by the manifest's kind:
//!                      sigmoid / softmax ─► classify.rs      (class probabilities, per-class thresholds)
//!                      anomaly           ─► anomaly.rs       (score and/or map, exporter normalization)
//!                      detection         ─► detection.rs     (three YOLO layouts, class-aware NMS)
//!                      segmentation      ─► segmentation.rs  (class map, min_area)
//!                ──► per frame (combine): worst tile's score, regions mapped to frame pixels
//! ```

mod anomaly;
mod classify;
mod detection;
mod segmentation;

use crate::manifest::{Manifest, OutputKind};
use crate::preprocess::Geometry;
use crate::regions::Region;
use thiserror::Error;

pub use classify::interpret;

/// The model's judgement of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// How strongly the image shows a defect, in [0, 1] (classifiers: 1 − p(good); anomaly: the normalized
    /// score; detection: the best box confidence; segmentation: the strongest region's peak).
    pub defect_score: f32,
    /// Whether the model's own thresholds call the image defective.
    pub defective: bool,
    /// The good label when not defective, otherwise the most likely defect class.
    pub label: String,
    /// Score per class, in manifest order.
    pub class_scores: Vec<(String, f32)>,
    /// Where the defects are, in frame pixels (empty for a whole-frame classifier without tiles).
    pub regions: Vec<Region>,
}

/// The model output does not match the manifest.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// One output tensor of a batch, as floats.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape, batch first.
    pub shape: Vec<i64>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

impl Tensor {
    /// The values of row `i` of `rows`, with the shape of one row.
    fn row(&self, i: usize, rows: usize) -> Result<(&[i64], &[f32]), DecodeError> {
        let per = self.values.len() / rows.max(1);
        if self.values.len() != per * rows || self.shape.first().copied() != Some(rows as i64) {
            return Err(DecodeError(format!(
                "output of shape {:?} does not hold {rows} rows",
                self.shape
            )));
        }
        Ok((&self.shape[1..], &self.values[i * per..(i + 1) * per]))
    }
}

/// The output tensors a manifest reads, in the order [`decode`] expects them: the main output (when named),
/// then the anomaly map (when named).
pub fn output_names(manifest: &Manifest) -> Vec<String> {
    let o = &manifest.output;
    let mut names = Vec::new();
    if !o.name.is_empty() {
        names.push(o.name.clone());
    }
    if let Some(map) = &o.map {
        names.push(map.clone());
    }
    names
}

/// Decodes `rows` rows of outputs (named as [`output_names`] says) and combines them into one score per
/// image: `geometries[k]` are the rows of image `k`, in order.
pub fn decode(
    manifest: &Manifest,
    outputs: &[Tensor],
    geometries: &[Vec<Geometry>],
) -> Result<Vec<Score>, DecodeError> {
    let rows: usize = geometries.iter().map(Vec::len).sum();
    let mut per_row = Vec::with_capacity(rows);
    for i in 0..rows {
        per_row.push(decode_row(manifest, outputs, i, rows)?);
    }
    let mut it = per_row.into_iter();
    Ok(geometries
        .iter()
        .map(|g| combine(manifest, it.by_ref().take(g.len()).collect(), g))
        .collect())
}

/// One row's judgement, with regions in model-input pixels.
fn decode_row(
    manifest: &Manifest,
    outputs: &[Tensor],
    i: usize,
    rows: usize,
) -> Result<Score, DecodeError> {
    let o = &manifest.output;
    let first = || {
        outputs
            .first()
            .ok_or_else(|| DecodeError("the model returned no output".into()))?
            .row(i, rows)
    };
    match o.kind {
        OutputKind::Sigmoid | OutputKind::Softmax => {
            let (_, v) = first()?;
            classify::row(o, v)
        }
        OutputKind::Anomaly => {
            let mut it = outputs.iter();
            let score = if o.name.is_empty() {
                None
            } else {
                Some(
                    it.next()
                        .ok_or_else(|| DecodeError("no score output".into()))?
                        .row(i, rows)?,
                )
            };
            let map = match &o.map {
                Some(_) => Some(
                    it.next()
                        .ok_or_else(|| DecodeError("no map output".into()))?
                        .row(i, rows)?,
                ),
                None => None,
            };
            anomaly::row(&manifest.input, o, score.map(|s| s.1), map)
        }
        OutputKind::Detection => {
            let (shape, v) = first()?;
            detection::row(o, shape, v)
        }
        OutputKind::Segmentation => {
            let (shape, v) = first()?;
            segmentation::row(&manifest.input, o, shape, v)
        }
    }
}

/// Combines the rows of one image: regions mapped to frame pixels; with tiles, the worst tile decides.
fn combine(manifest: &Manifest, rows: Vec<Score>, geometries: &[Geometry]) -> Score {
    let o = &manifest.output;
    let tiled = rows.len() > 1;
    let classifier = matches!(o.kind, OutputKind::Sigmoid | OutputKind::Softmax);
    let mut regions = Vec::new();
    let mut best: Option<Score> = None;
    let mut class_scores: Vec<(String, f32)> = Vec::new();
    for (row, g) in rows.into_iter().zip(geometries) {
        regions.extend(
            row.regions
                .iter()
                .map(|r| r.mapped(|x, y| g.to_frame(x, y))),
        );
        if tiled && classifier && row.defective {
            let [x, y, w, h] = g.source;
            regions.push(Region::new(x, y, w, h, &row.label, row.defect_score));
        }
        if class_scores.is_empty() {
            class_scores = row.class_scores.clone();
        } else {
            for ((_, have), (_, new)) in class_scores.iter_mut().zip(&row.class_scores) {
                *have = have.max(*new);
            }
        }
        let better = best
            .as_ref()
            .is_none_or(|b| (row.defective, row.defect_score) > (b.defective, b.defect_score));
        if better {
            best = Some(row);
        }
    }
    let mut score = best.unwrap_or_else(|| Score {
        defect_score: 0.0,
        defective: false,
        label: o.good_label().to_string(),
        class_scores: Vec::new(),
        regions: Vec::new(),
    });
    if tiled {
        // A tile's good-class score is not the frame's: the frame is as good as its worst tile.
        if let Some(entry) = o.good_class.and_then(|g| class_scores.get_mut(g)) {
            entry.1 = 1.0 - score.defect_score;
        }
        score.class_scores = class_scores;
    }
    score.regions = if o.kind == OutputKind::Detection && tiled {
        crate::regions::nms(regions, o.iou, o.max_regions)
    } else {
        regions.sort_by(|a, b| b.score.total_cmp(&a.score));
        regions.truncate(o.max_regions);
        regions
    };
    score
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::manifest::Manifest;
    use std::path::Path;

    /// A manifest with the given `[output]` body over an 8×8 grey input.
    pub fn manifest(output: &str) -> Manifest {
        let text = format!(
            r#"name = "m"
version = "1"
file = "m.onnx"
sha256 = "{}"
[input]
name = "image"
layout = "nchw"
channels = 1
width = 8
height = 8
mean = [0.5]
std = [0.25]
[output]
{output}
"#,
            "0".repeat(64)
        );
        Manifest::parse(&text, Path::new("m.toml")).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(x: f32, y: f32) -> Geometry {
        Geometry {
            origin_x: x,
            origin_y: y,
            source: [x, y, 8.0, 8.0],
            ..Geometry::identity(8.0, 8.0)
        }
    }

    #[test]
    fn the_worst_tile_decides_and_names_its_place() {
        let m = test_support::manifest(
            "name = \"p\"\nkind = \"sigmoid\"\nclasses = [\"good\", \"defect\"]\ngood_class = 0\nthreshold = 0.5",
        );
        let out = Tensor {
            shape: vec![3, 1],
            values: vec![0.1, 0.8, 0.3],
        };
        let g = vec![vec![
            geometry(0.0, 0.0),
            geometry(8.0, 0.0),
            geometry(16.0, 0.0),
        ]];
        let s = decode(&m, &[out], &g).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].defective);
        assert!((s[0].defect_score - 0.8).abs() < 1e-6);
        assert_eq!(
            s[0].regions,
            vec![Region::new(8.0, 0.0, 8.0, 8.0, "defect", 0.8)]
        );
        assert!((s[0].class_scores[0].1 - 0.2).abs() < 1e-6);
    }

    #[test]
    fn rows_are_split_between_images() {
        let m = test_support::manifest(
            "name = \"p\"\nkind = \"sigmoid\"\nclasses = [\"good\", \"defect\"]\ngood_class = 0\nthreshold = 0.5",
        );
        let out = Tensor {
            shape: vec![3, 1],
            values: vec![0.9, 0.1, 0.2],
        };
        let g = vec![
            vec![geometry(0.0, 0.0)],
            vec![geometry(0.0, 0.0), geometry(8.0, 0.0)],
        ];
        let s = decode(&m, &[out], &g).unwrap();
        assert_eq!((s[0].defective, s[1].defective), (true, false));
        assert!(s[1].regions.is_empty());
    }

    #[test]
    fn a_short_output_is_an_error() {
        let m = test_support::manifest(
            "name = \"p\"\nkind = \"softmax\"\nclasses = [\"good\", \"a\", \"b\"]\ngood_class = 0\nthreshold = 0.5",
        );
        let out = Tensor {
            shape: vec![1, 2],
            values: vec![0.5, 0.5],
        };
        assert!(decode(&m, &[out], &[vec![geometry(0.0, 0.0)]]).is_err());
    }
}
