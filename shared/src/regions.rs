//! Where a model found a defect: rectangles in frame pixels, and the two ways they are found — connected
//! regions of a per-pixel map (anomaly and segmentation models) and non-maximum suppression of boxes
//! (detectors).

use serde::{Deserialize, Serialize};

/// A rectangle in frame pixels with the class and score of what is inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
    /// Class name.
    pub class: String,
    /// Confidence or peak score, in [0, 1].
    pub score: f32,
}

impl Region {
    /// A region from its left, top, width and height.
    pub fn new(x: f32, y: f32, w: f32, h: f32, class: &str, score: f32) -> Self {
        Self {
            x,
            y,
            w,
            h,
            class: class.to_string(),
            score,
        }
    }

    /// Area in square pixels.
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Intersection over union with `other`.
    pub fn iou(&self, other: &Region) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// The same region with every coordinate passed through `map` (corner to corner).
    pub fn mapped(&self, map: impl Fn(f32, f32) -> (f32, f32)) -> Region {
        let (x0, y0) = map(self.x, self.y);
        let (x1, y1) = map(self.x + self.w, self.y + self.h);
        Region {
            x: x0.min(x1),
            y: y0.min(y1),
            w: (x1 - x0).abs(),
            h: (y1 - y0).abs(),
            class: self.class.clone(),
            score: self.score,
        }
    }
}

/// One connected set of pixels of a mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Bounding box in map pixels (x, y, width, height).
    pub bbox: (u32, u32, u32, u32),
    /// Pixels in the component.
    pub area: u32,
    /// Highest value of the scoring map inside it.
    pub peak: f32,
}

/// The 4-connected components of the pixels where `inside(index)` holds, on a `width` × `height` map, each
/// with its peak of `value(index)`. Iterative (no recursion), so a map of any size is safe.
pub fn components(
    width: usize,
    height: usize,
    inside: impl Fn(usize) -> bool,
    value: impl Fn(usize) -> f32,
) -> Vec<Component> {
    let mut seen = vec![false; width * height];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    for start in 0..width * height {
        if seen[start] || !inside(start) {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let mut area = 0u32;
        let mut peak = f32::MIN;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            area += 1;
            peak = peak.max(value(i));
            let mut visit = |j: usize| {
                if !seen[j] && inside(j) {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < width {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - width);
            }
            if y + 1 < height {
                visit(i + width);
            }
        }
        let span = |a: usize, b: usize| u32::try_from(b - a + 1).unwrap_or(u32::MAX);
        out.push(Component {
            bbox: (
                u32::try_from(x0).unwrap_or(u32::MAX),
                u32::try_from(y0).unwrap_or(u32::MAX),
                span(x0, x1),
                span(y0, y1),
            ),
            area,
            peak,
        });
    }
    out
}

/// Class-aware greedy non-maximum suppression: the strongest box of a class suppresses every weaker box
/// of the same class that overlaps it by more than `iou`. Returns at most `keep` boxes, strongest first.
pub fn nms(mut boxes: Vec<Region>, iou: f32, keep: usize) -> Vec<Region> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Region> = Vec::new();
    for b in boxes {
        if kept.len() >= keep {
            break;
        }
        if kept.iter().all(|k| k.class != b.class || k.iou(&b) <= iou) {
            kept.push(b);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = Region::new(0.0, 0.0, 10.0, 10.0, "x", 1.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        let b = Region::new(20.0, 0.0, 10.0, 10.0, "x", 1.0);
        assert_eq!(a.iou(&b), 0.0);
        let c = Region::new(5.0, 0.0, 10.0, 10.0, "x", 1.0);
        assert!((a.iou(&c) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn components_are_found_with_their_boxes_and_peaks() {
        #[rustfmt::skip]
        let map = [
            0.0, 0.9, 0.8, 0.0, 0.0,
            0.0, 0.7, 0.0, 0.0, 0.6,
            0.0, 0.0, 0.0, 0.0, 0.6,
        ];
        let mut c = components(5, 3, |i| map[i] > 0.5, |i| map[i]);
        c.sort_by_key(|c| c.bbox.0);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].bbox, c[0].area), ((1, 0, 2, 2), 3));
        assert!((c[0].peak - 0.9).abs() < 1e-6);
        assert_eq!((c[1].bbox, c[1].area), ((4, 1, 1, 2), 2));
    }

    #[test]
    fn a_large_component_does_not_recurse() {
        let n = 2000;
        let c = components(n, n, |_| true, |_| 1.0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].area as usize, n * n);
    }

    #[test]
    fn nms_keeps_other_classes_and_distant_boxes() {
        let boxes = vec![
            Region::new(0.0, 0.0, 10.0, 10.0, "a", 0.9),
            Region::new(1.0, 1.0, 10.0, 10.0, "a", 0.8),
            Region::new(1.0, 1.0, 10.0, 10.0, "b", 0.7),
            Region::new(50.0, 50.0, 10.0, 10.0, "a", 0.6),
        ];
        let kept = nms(boxes, 0.45, 10);
        let scores: Vec<f32> = kept.iter().map(|r| r.score).collect();
        assert_eq!(scores, vec![0.9, 0.7, 0.6]);
        assert_eq!(nms(kept, 0.45, 1).len(), 1);
    }
}
