//! Choosing the edge threshold: the highest threshold at which the edge forwards at least `target` of the
//! frames the cloud model flags, on a validation set, and writing it where the runtime reads it.
//!
//! With `n` cloud-flagged frames the edge may miss at most `floor((1 - target) n)` of them. The threshold is
//! the edge score of the lowest-scored flagged frame it must still forward (scores at or above the threshold
//! are forwarded). The achieved recall carries a Wilson 95 % lower bound: with few flagged frames the bound
//! sits well below the target, and the report says so.

use crate::cascade::Scored;
use crate::report::{Z95, wilson_lower};
use serde::Serialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where the runtime reads the suspect threshold in a prescreen manifest (table, key).
pub const THRESHOLD_KEY: (&str, &str) = ("output", "threshold");

/// Errors from calibrating.
#[derive(Debug, Error)]
pub enum CalibrateError {
    /// The target is not a proportion.
    #[error("--target-recall is {0}; it must be in (0, 1]")]
    Target(f64),
    /// The cloud model flags nothing in the set, so there is nothing to reach.
    #[error(
        "the cloud model flags none of the {frames} frames as defective, so no recall can be measured; use a validation set with defects the cloud model finds"
    )]
    NothingFlagged {
        /// Frames in the set.
        frames: usize,
    },
    /// The manifest could not be read or written.
    #[error("cannot update manifest {path}: {message}")]
    Manifest {
        /// Manifest path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The chosen threshold and what it achieves on the validation set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Calibration {
    /// Target recall relative to the cloud model's flags.
    pub target_recall: f64,
    /// The chosen edge threshold.
    pub threshold: f32,
    /// Frames the cloud model flags.
    pub cloud_flagged: usize,
    /// Of those, frames the edge forwards at the threshold.
    pub edge_forwarded: usize,
    /// `edge_forwarded / cloud_flagged`.
    pub recall: f64,
    /// Wilson 95 % lower bound on that recall.
    pub recall_lower_95: f64,
    /// Whether the lower bound reaches the target too (it needs enough flagged frames).
    pub bound_meets_target: bool,
    /// Share of all validation frames forwarded at the threshold.
    pub forwarded_frames: f64,
    /// The threshold that was in the manifest before.
    pub previous_threshold: Option<f32>,
}

/// Largest `t` such that at least `target` of `scores` are `>= t`, as `(t, count >= t)`.
pub fn pick_threshold(scores: &[f32], target: f64) -> Option<(f32, usize)> {
    if scores.is_empty() {
        return None;
    }
    let mut s = scores.to_vec();
    s.sort_by(f32::total_cmp);
    let n = s.len();
    let allowed_misses = ((1.0 - target) * n as f64 + 1e-9).floor().max(0.0) as usize;
    let t = s[allowed_misses.min(n - 1)];
    let kept = s.iter().filter(|&&x| x >= t).count();
    Some((t, kept))
}

/// Calibrates on scored validation frames.
pub fn calibrate(
    frames: &[Scored],
    target: f64,
    previous: Option<f32>,
) -> Result<Calibration, CalibrateError> {
    if !(target > 0.0 && target <= 1.0) {
        return Err(CalibrateError::Target(target));
    }
    let flagged: Vec<f32> = frames
        .iter()
        .filter(|f| f.cloud.defective)
        .map(|f| f.edge_score)
        .collect();
    let (threshold, kept) =
        pick_threshold(&flagged, target).ok_or(CalibrateError::NothingFlagged {
            frames: frames.len(),
        })?;
    let threshold = representable_at_or_below(threshold);
    let n = flagged.len();
    let lower = wilson_lower(kept, n, Z95);
    Ok(Calibration {
        target_recall: target,
        threshold,
        cloud_flagged: n,
        edge_forwarded: kept,
        recall: kept as f64 / n as f64,
        recall_lower_95: lower,
        bound_meets_target: lower >= target,
        forwarded_frames: frames.iter().filter(|f| f.edge_score >= threshold).count() as f64
            / frames.len() as f64,
        previous_threshold: previous,
    })
}

/// A value with at most 6 decimals that is at or below `t` once read back as `f32`, so the manifest text
/// stays short and the frame that set the threshold is still forwarded.
fn representable_at_or_below(t: f32) -> f32 {
    let mut d = (f64::from(t) * 1e6).floor() / 1e6;
    loop {
        let parsed: f32 = format!("{d:.6}").parse().unwrap_or(0.0);
        if parsed <= t || d <= 0.0 {
            return parsed.max(0.0);
        }
        d -= 1e-6;
    }
}

/// Reads the threshold the manifest holds now.
pub fn read_threshold(path: &Path) -> Result<Option<f32>, CalibrateError> {
    let doc = read_doc(path)?;
    let (table, key) = THRESHOLD_KEY;
    Ok(doc
        .get(table)
        .and_then(|t| t.get(key))
        .and_then(|v| v.as_float())
        .map(|v| v as f32))
}

fn read_doc(path: &Path) -> Result<toml_edit::DocumentMut, CalibrateError> {
    let err = |message: String| CalibrateError::Manifest {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| err(e.to_string()))
}

/// Writes `threshold` into the manifest at `path`, keeping the rest of the file as it is. Returns the old text
/// so a caller can put it back.
pub fn write_threshold(path: &Path, threshold: f32) -> Result<String, CalibrateError> {
    let err = |message: String| CalibrateError::Manifest {
        path: path.to_path_buf(),
        message,
    };
    let old = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut doc = read_doc(path)?;
    let (table, key) = THRESHOLD_KEY;
    let Some(t) = doc.get_mut(table).and_then(|t| t.as_table_like_mut()) else {
        return Err(err(format!("it has no [{table}] table")));
    };
    let value: f64 = format!("{threshold:.6}")
        .parse()
        .unwrap_or(f64::from(threshold));
    t.insert(key, toml_edit::value(value));
    std::fs::write(path, doc.to_string()).map_err(|e| err(e.to_string()))?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn threshold_keeps_the_target_share() {
        let scores: Vec<f32> = (1..=200).map(|i| i as f32 / 200.0).collect();
        // 99.5 % of 200: one miss allowed, so the threshold is the second-lowest score.
        let (t, kept) = pick_threshold(&scores, 0.995).unwrap();
        assert_eq!((t, kept), (2.0 / 200.0, 199));
        let (t, kept) = pick_threshold(&scores, 1.0).unwrap();
        assert_eq!((t, kept), (1.0 / 200.0, 200));
    }

    #[test]
    fn written_value_never_rounds_up() {
        for t in [0.123_456_79_f32, 0.999_999_9, 1e-7, 0.5] {
            let r = representable_at_or_below(t);
            assert!(r <= t && t - r < 2e-6, "{t} -> {r}");
        }
    }

    #[test]
    fn threshold_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let text = "name = \"m\" # role\n\n[output]\nkind = \"sigmoid\"\nthreshold = 0.5\n\n[[golden]]\nfile = \"g.png\"\n";
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_threshold(&path).unwrap(), Some(0.5));
        let old = write_threshold(&path, 0.012_345).unwrap();
        assert_eq!(old, text);
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(new, text.replace("0.5", "0.012345"));
    }

    proptest! {
        #[test]
        fn picked_threshold_reaches_the_target_and_is_the_highest(
            scores in proptest::collection::vec(0.0f32..1.0, 1..300),
            target in 0.5f64..=1.0,
        ) {
            let (t, kept) = pick_threshold(&scores, target).unwrap();
            let n = scores.len();
            prop_assert_eq!(kept, scores.iter().filter(|&&s| s >= t).count());
            prop_assert!(kept as f64 >= target * n as f64 - 1e-6);
            // Any higher score as threshold would fall short of the target.
            if let Some(next) = scores.iter().copied().filter(|&s| s > t).reduce(f32::min) {
                let kept_next = scores.iter().filter(|&&s| s >= next).count();
                prop_assert!((kept_next as f64) < target * n as f64 - 1e-9);
            }
        }
    }
}
