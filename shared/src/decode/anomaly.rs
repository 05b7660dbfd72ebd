//! Anomaly models (PatchCore, PaDiM, EfficientAD exported by anomalib, or a plant's own): an image score
//! (`[N]` or `[N,1]`) and/or an anomaly map (`[N,1,H,W]` or `[N,H,W]`). Raw values go through the
//! exporter's normalization when the manifest gives it (otherwise they must already lie in [0, 1]). The
//! score is the given score, or the map's maximum; the regions are the map's connected areas at or above
//! the threshold with at least `min_area` pixels.

use super::{DecodeError, Score};
use crate::manifest::{InputSpec, OutputSpec};
use crate::regions::{Region, components};

pub(super) fn row(
    input: &InputSpec,
    o: &OutputSpec,
    score: Option<&[f32]>,
    map: Option<(&[i64], &[f32])>,
) -> Result<Score, DecodeError> {
    let class = &o.classes[0];
    let norm = |raw: f32, pixel: bool| match &o.normalization {
        Some(n) => {
            let t = if pixel {
                n.pixel_threshold.unwrap_or(n.image_threshold)
            } else {
                n.image_threshold
            };
            n.apply(raw, t)
        }
        None => raw.clamp(0.0, 1.0),
    };
    let mut regions = Vec::new();
    let mut map_peak: Option<f32> = None;
    if let Some((shape, values)) = map {
        let (h, w) = match shape {
            [1, h, w] | [h, w] => (*h, *w),
            other => {
                return Err(DecodeError(format!(
                    "anomaly map {:?} has shape {other:?} per image; expected [1, H, W] or [H, W]",
                    o.map.as_deref().unwrap_or("")
                )));
            }
        };
        let (h, w) = (
            usize::try_from(h).unwrap_or(0),
            usize::try_from(w).unwrap_or(0),
        );
        if h.checked_mul(w) != Some(values.len()) || h == 0 {
            return Err(DecodeError(format!(
                "anomaly map holds {} values, not {h}x{w}",
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(DecodeError("anomaly map has non-finite values".into()));
        }
        let normalized: Vec<f32> = values.iter().map(|v| norm(*v, true)).collect();
        let raw_max = values.iter().copied().fold(f32::MIN, f32::max);
        map_peak = Some(norm(raw_max, false));
        let t = o.threshold_for(class);
        let (sx, sy) = (
            input.width as f32 / w as f32,
            input.height as f32 / h as f32,
        );
        let mut found: Vec<Region> = components(w, h, |i| normalized[i] >= t, |i| normalized[i])
            .into_iter()
            .filter(|c| c.area >= o.min_area)
            .map(|c| {
                let (x, y, cw, ch) = c.bbox;
                Region::new(
                    x as f32 * sx,
                    y as f32 * sy,
                    cw as f32 * sx,
                    ch as f32 * sy,
                    class,
                    c.peak,
                )
            })
            .collect();
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.truncate(o.max_regions);
        regions = found;
    }
    let s = match (score, map_peak) {
        (Some([v]), _) if v.is_finite() => norm(*v, false),
        (Some(v), _) => {
            return Err(DecodeError(format!(
                "anomaly score output holds {:?} per image; expected one finite value",
                v
            )));
        }
        (None, Some(p)) => p,
        (None, None) => return Err(DecodeError("no anomaly score or map".into())),
    };
    let defective = s >= o.threshold_for(class);
    Ok(Score {
        defect_score: s,
        defective,
        label: if defective {
            class.clone()
        } else {
            o.good_label().to_string()
        },
        class_scores: vec![(o.good_label().to_string(), 1.0 - s), (class.clone(), s)],
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::manifest;
    use super::*;

    #[test]
    fn anomalib_normalization_and_map_regions() {
        let m = manifest(
            "name = \"pred_score\"\nmap = \"anomaly_map\"\nkind = \"anomaly\"\nclasses = [\"anomaly\"]\nthreshold = 0.5\nnormalization = { min = 0.0, max = 10.0, image_threshold = 4.0 }",
        );
        // A 4x4 map (input is 8x8, so each map pixel is 2x2 input pixels) with a hot spot at (2..4, 1).
        let mut map = vec![0.0f32; 16];
        map[6] = 9.0;
        map[7] = 6.0;
        let s = row(&m.input, &m.output, Some(&[7.0]), Some((&[1, 4, 4], &map))).unwrap();
        // (7 - 4) / 10 + 0.5 = 0.8
        assert!((s.defect_score - 0.8).abs() < 1e-6, "{s:?}");
        assert!(s.defective);
        assert_eq!(s.label, "anomaly");
        assert_eq!(s.regions.len(), 1);
        let r = &s.regions[0];
        assert_eq!((r.x, r.y, r.w, r.h), (4.0, 2.0, 4.0, 2.0));
        assert!(
            (r.score - 1.0).abs() < 1e-6,
            "9 normalizes to 0.5 + 0.5 = 1.0"
        );
    }

    #[test]
    fn a_map_alone_gives_the_score_and_small_areas_are_ignored() {
        let m = manifest(
            "map = \"m\"\nkind = \"anomaly\"\nclasses = [\"anomaly\"]\nthreshold = 0.5\nmin_area = 2",
        );
        let mut map = vec![0.1f32; 16];
        map[0] = 0.9;
        let s = row(&m.input, &m.output, None, Some((&[4, 4], &map))).unwrap();
        assert!(s.defective);
        assert!((s.defect_score - 0.9).abs() < 1e-6);
        assert!(s.regions.is_empty(), "a one-pixel area is below min_area");
    }

    #[test]
    fn a_map_of_the_wrong_rank_is_named() {
        let m =
            manifest("map = \"m\"\nkind = \"anomaly\"\nclasses = [\"anomaly\"]\nthreshold = 0.5");
        let err = row(&m.input, &m.output, None, Some((&[2, 2, 2], &[0.0; 8]))).unwrap_err();
        assert!(err.to_string().contains("[1, H, W]"), "{err}");
    }
}
