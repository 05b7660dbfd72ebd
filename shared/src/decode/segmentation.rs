//! Segmenters: a class per pixel, from scores `[N, C, H, W]` (the pixel's class is the argmax, its score that
//! class's value) or from class indices `[N, H, W]` / `[N, 1, H, W]` (score 1). A defect class's connected
//! area counts when it has at least `min_area` pixels whose score reaches the class's threshold. Scores
//! are read as probabilities: a model that outputs logits needs `threshold = 0`.

use super::{DecodeError, Score};
use crate::manifest::{InputSpec, OutputSpec};
use crate::regions::{Region, components};

pub(super) fn row(
    input: &InputSpec,
    o: &OutputSpec,
    shape: &[i64],
    v: &[f32],
) -> Result<Score, DecodeError> {
    let c = o.classes.len();
    let good = o.good_class.unwrap_or(0);
    let dims: Vec<usize> = shape
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(0))
        .collect();
    let (h, w, scored) = match dims.as_slice() {
        [k, h, w] if *k == c && c > 1 => (*h, *w, true),
        [1, h, w] | [h, w] => (*h, *w, false),
        _ => {
            return Err(DecodeError(format!(
                "segmentation output has shape {shape:?} per image; expected [{c}, H, W] class scores or [H, W] class indices"
            )));
        }
    };
    let plane = h.checked_mul(w).unwrap_or(0);
    if plane == 0 || Some(v.len()) != plane.checked_mul(if scored { c } else { 1 }) {
        return Err(DecodeError(
            "segmentation output size does not match its shape".into(),
        ));
    }
    let mut class_of = vec![0usize; plane];
    let mut score_of = vec![1.0f32; plane];
    for i in 0..plane {
        if scored {
            let (k, s) = (0..c)
                .map(|k| (k, v[k * plane + i]))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((good, 0.0));
            class_of[i] = k;
            score_of[i] = s.clamp(0.0, 1.0);
        } else {
            let k = v[i];
            if !(k >= 0.0 && (k as usize) < c) {
                return Err(DecodeError(format!(
                    "segmentation class index {k} is outside the manifest's {c} classes"
                )));
            }
            class_of[i] = k as usize;
        }
    }
    let (sx, sy) = (
        input.width as f32 / w as f32,
        input.height as f32 / h as f32,
    );
    let mut regions = Vec::new();
    let mut defect_score = 0.0f32;
    let mut class_best = vec![0.0f32; c];
    for (k, name) in o.classes.iter().enumerate() {
        if k == good {
            continue;
        }
        let t = o.threshold_for(name);
        for comp in components(
            w,
            h,
            |i| class_of[i] == k && score_of[i] >= t,
            |i| score_of[i],
        ) {
            let weight = (comp.area as f32 / o.min_area.max(1) as f32).min(1.0);
            defect_score = defect_score.max(comp.peak * weight);
            class_best[k] = class_best[k].max(comp.peak * weight);
            if comp.area >= o.min_area {
                let (x, y, cw, ch) = comp.bbox;
                regions.push(Region::new(
                    x as f32 * sx,
                    y as f32 * sy,
                    cw as f32 * sx,
                    ch as f32 * sy,
                    name,
                    comp.peak,
                ));
            }
        }
    }
    regions.sort_by(|a, b| b.score.total_cmp(&a.score));
    regions.truncate(o.max_regions);
    let defective = !regions.is_empty();
    class_best[good] = 1.0 - defect_score;
    Ok(Score {
        defect_score,
        defective,
        label: regions
            .first()
            .map_or_else(|| o.good_label().to_string(), |r| r.class.clone()),
        class_scores: o.classes.iter().cloned().zip(class_best).collect(),
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::manifest;
    use super::*;

    fn spec() -> (InputSpec, OutputSpec) {
        let m = manifest(
            "name = \"mask\"\nkind = \"segmentation\"\nclasses = [\"background\", \"crack\"]\ngood_class = 0\nthreshold = 0.5\nmin_area = 2",
        );
        (m.input, m.output)
    }

    #[test]
    fn class_indices_become_regions() {
        let (i, o) = spec();
        // 4x4 index map (2x upscaled to the 8x8 input): a 2-pixel crack and a lone pixel.
        let mut map = vec![0.0f32; 16];
        map[5] = 1.0;
        map[9] = 1.0;
        map[15] = 1.0;
        let s = row(&i, &o, &[1, 4, 4], &map).unwrap();
        assert!(s.defective);
        assert_eq!(s.label, "crack");
        assert_eq!(
            s.regions,
            vec![Region::new(2.0, 2.0, 2.0, 4.0, "crack", 1.0)]
        );
    }

    #[test]
    fn class_scores_use_argmax_and_threshold() {
        let (i, o) = spec();
        // 2 classes × 2×2: crack wins pixels 0 and 1 but only pixel 0 reaches 0.5.
        let v = [0.3, 0.45, 0.9, 0.9, 0.7, 0.48, 0.1, 0.1];
        let s = row(&i, &o, &[2, 2, 2], &v).unwrap();
        assert!(!s.defective, "one pixel is below min_area 2");
        assert!(
            (s.defect_score - 0.35).abs() < 1e-6,
            "0.7 × 1/2: {}",
            s.defect_score
        );
    }

    #[test]
    fn an_index_outside_the_classes_is_named() {
        let (i, o) = spec();
        let err = row(&i, &o, &[2, 2], &[0.0, 7.0, 0.0, 0.0]).unwrap_err();
        assert!(err.to_string().contains("class index 7"), "{err}");
    }
}
