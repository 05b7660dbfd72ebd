//! Detectors, in the three layouts YOLO-family exports use (coordinates in model-input pixels):
//! - `yolov8`: `[N, 4 + C, boxes]`, rows cx, cy, w, h, then one score per class;
//! - `yolov5`: `[N, boxes, 5 + C]`, columns cx, cy, w, h, objectness, class scores (confidence = objectness ×
//!   class score);
//! - `nms`: `[N, K, 6]`, x1, y1, x2, y2, score, class index, already suppressed (rows of score 0 are padding).
//!
//! A box counts when its confidence reaches its class's threshold; class-aware NMS (`iou`) keeps the
//! strongest. The frame is suspect when any box counts; its score is the best confidence of any box.

use super::{DecodeError, Score};
use crate::manifest::{DetectionLayout, OutputSpec};
use crate::regions::{Region, nms};

pub(super) fn row(o: &OutputSpec, shape: &[i64], v: &[f32]) -> Result<Score, DecodeError> {
    let c = o.classes.len();
    let layout = o.layout.unwrap_or(DetectionLayout::Yolov8);
    let dims: Vec<usize> = shape
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(0))
        .collect();
    let (boxes, stride, along_rows) = match (layout, dims.as_slice()) {
        (DetectionLayout::Yolov8, [f, b]) if *f == 4 + c => (*b, 1, true),
        (DetectionLayout::Yolov5, [b, f]) if *f == 5 + c => (*b, *f, false),
        (DetectionLayout::Nms, [k, 6]) => (*k, 6, false),
        _ => {
            let want = match layout {
                DetectionLayout::Yolov8 => format!("[{}, boxes]", 4 + c),
                DetectionLayout::Yolov5 => format!("[boxes, {}]", 5 + c),
                DetectionLayout::Nms => "[K, 6]".to_string(),
            };
            return Err(DecodeError(format!(
                "detection output has shape {shape:?} per image; the {layout:?} layout with {c} classes needs {want}"
            )));
        }
    };
    if Some(v.len()) != dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)) {
        return Err(DecodeError(
            "detection output size does not match its shape".into(),
        ));
    }
    // Field `f` of box `b`.
    let at = |b: usize, f: usize| {
        if along_rows {
            v[f * boxes + b]
        } else {
            v[b * stride + f]
        }
    };
    let floor = o.thresholds.values().copied().fold(o.threshold, f32::min);
    let mut best = 0.0f32;
    let mut class_best = vec![0.0f32; c];
    let mut candidates = Vec::new();
    for b in 0..boxes {
        let (class, conf, rect) = match layout {
            DetectionLayout::Yolov8 | DetectionLayout::Yolov5 => {
                let first = if layout == DetectionLayout::Yolov8 {
                    4
                } else {
                    5
                };
                let obj = if layout == DetectionLayout::Yolov5 {
                    at(b, 4)
                } else {
                    1.0
                };
                let (class, score) = (0..c)
                    .map(|k| (k, at(b, first + k)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((0, 0.0));
                let (cx, cy, w, h) = (at(b, 0), at(b, 1), at(b, 2), at(b, 3));
                (class, obj * score, [cx - w / 2.0, cy - h / 2.0, w, h])
            }
            DetectionLayout::Nms => {
                let k = at(b, 5);
                if !(k >= 0.0 && (k as usize) < c) {
                    continue;
                }
                let (x1, y1, x2, y2) = (at(b, 0), at(b, 1), at(b, 2), at(b, 3));
                (k as usize, at(b, 4), [x1, y1, x2 - x1, y2 - y1])
            }
        };
        if !conf.is_finite() || rect.iter().any(|x| !x.is_finite()) {
            return Err(DecodeError(format!("box {b} has non-finite values")));
        }
        let conf = conf.clamp(0.0, 1.0);
        best = best.max(conf);
        class_best[class] = class_best[class].max(conf);
        let name = &o.classes[class];
        if conf >= floor && conf >= o.threshold_for(name) {
            let [x, y, w, h] = rect;
            candidates.push(Region::new(x, y, w, h, name, conf));
        }
    }
    let kept = if layout == DetectionLayout::Nms {
        let mut kept = candidates;
        kept.sort_by(|a, b| b.score.total_cmp(&a.score));
        kept.truncate(o.max_regions);
        kept
    } else {
        nms(candidates, o.iou, o.max_regions)
    };
    let defective = !kept.is_empty();
    Ok(Score {
        defect_score: best,
        defective,
        label: kept
            .first()
            .map_or_else(|| o.good_label().to_string(), |r| r.class.clone()),
        class_scores: o.classes.iter().cloned().zip(class_best).collect(),
        regions: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::manifest;
    use super::*;

    fn spec(layout: &str) -> OutputSpec {
        manifest(&format!(
            "name = \"out\"\nkind = \"detection\"\nlayout = \"{layout}\"\nclasses = [\"scratch\", \"dent\"]\nthreshold = 0.5\nthresholds = {{ dent = 0.3 }}"
        ))
        .output
    }

    #[test]
    fn yolov8_boxes_are_decoded_and_suppressed() {
        // Three boxes: two overlapping scratches (0.9, 0.8) and a weak dent (0.35, passes its own 0.3).
        let cx = [10.0, 11.0, 40.0];
        let cy = [10.0, 10.0, 40.0];
        let w = [8.0, 8.0, 4.0];
        let h = [4.0, 4.0, 4.0];
        let scratch = [0.9, 0.8, 0.0];
        let dent = [0.0, 0.0, 0.35];
        let v: Vec<f32> = [cx, cy, w, h, scratch, dent].concat();
        let s = row(&spec("yolov8"), &[6, 3], &v).unwrap();
        assert!(s.defective);
        assert_eq!(s.label, "scratch");
        assert_eq!(s.regions.len(), 2, "{:?}", s.regions);
        assert_eq!(
            s.regions[0],
            Region::new(6.0, 8.0, 8.0, 4.0, "scratch", 0.9)
        );
        assert_eq!(s.regions[1].class, "dent");
        assert!((s.defect_score - 0.9).abs() < 1e-6);
    }

    #[test]
    fn yolov5_confidence_is_objectness_times_class() {
        let v = [20.0, 20.0, 10.0, 10.0, 0.5, 0.9, 0.1];
        let s = row(&spec("yolov5"), &[1, 7], &v).unwrap();
        assert!((s.defect_score - 0.45).abs() < 1e-6);
        assert!(!s.defective, "0.45 is below scratch's 0.5");
    }

    #[test]
    fn nms_layout_reads_corners_and_skips_padding() {
        let v = [
            1.0, 2.0, 11.0, 12.0, 0.7, 1.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, -1.0,
        ];
        let s = row(&spec("nms"), &[2, 6], &v).unwrap();
        assert_eq!(
            s.regions,
            vec![Region::new(1.0, 2.0, 10.0, 10.0, "dent", 0.7)]
        );
    }

    #[test]
    fn a_layout_mismatch_names_both_shapes() {
        let err = row(&spec("yolov8"), &[84, 100], &vec![0.0; 8400]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("[84, 100]") && msg.contains("[6, boxes]"),
            "{msg}"
        );
    }
}
