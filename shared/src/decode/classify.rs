//! Classifiers: `sigmoid` (`[N,1]`, the defect probability) and `softmax` (`[N,C]`, class probabilities).
//! A frame is defective when `1 − p(good)` reaches `threshold`, or when a defect class with its own entry in
//! `thresholds` reaches that.

use super::{DecodeError, Score};
use crate::manifest::{Manifest, OutputKind, OutputSpec};

/// One row's values into a score (no regions: a classifier sees the whole row).
pub(super) fn row(o: &OutputSpec, v: &[f32]) -> Result<Score, DecodeError> {
    let good = o.good_class.unwrap_or(0);
    let expected = match o.kind {
        OutputKind::Sigmoid => 1,
        _ => o.classes.len(),
    };
    if v.len() != expected {
        return Err(DecodeError(format!(
            "expected {expected} values per image, got {}",
            v.len()
        )));
    }
    let defect_class = 1 - good.min(1);
    let probs: Vec<f32> = match o.kind {
        OutputKind::Sigmoid => {
            let mut probs = vec![0.0; 2];
            probs[good] = 1.0 - v[0];
            probs[defect_class] = v[0];
            probs
        }
        _ => v.to_vec(),
    };
    if probs.iter().any(|p| !p.is_finite()) {
        return Err(DecodeError(format!("non-finite output {probs:?}")));
    }
    let defect_score = (1.0 - probs[good]).clamp(0.0, 1.0);
    let by_class = o
        .thresholds
        .iter()
        .filter_map(|(class, t)| {
            let c = o.classes.iter().position(|n| n == class)?;
            (probs[c] >= *t).then_some(c)
        })
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let defective = defect_score >= o.threshold || by_class.is_some();
    let label_idx = match by_class {
        Some(c) => c,
        None if defective => (0..probs.len())
            .filter(|&c| c != good)
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
            .unwrap_or(defect_class),
        None => good,
    };
    Ok(Score {
        defect_score,
        defective,
        label: o.classes[label_idx].clone(),
        class_scores: o.classes.iter().cloned().zip(probs).collect(),
        regions: Vec::new(),
    })
}

/// Turns raw classifier output values for `n` whole-frame images into scores.
pub fn interpret(manifest: &Manifest, values: &[f32], n: usize) -> Result<Vec<Score>, DecodeError> {
    let n = n.max(1);
    let per = values.len() / n;
    if per * n != values.len() {
        return Err(DecodeError(format!(
            "{} values do not split into {n} images",
            values.len()
        )));
    }
    values
        .chunks_exact(per.max(1))
        .map(|v| row(&manifest.output, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::manifest;
    use super::*;

    #[test]
    fn sigmoid_scores_map_to_labels() {
        let m = manifest(
            "name = \"out\"\nkind = \"sigmoid\"\nclasses = [\"good\", \"defect\"]\ngood_class = 0\nthreshold = 0.5",
        );
        let s = interpret(&m, &[0.1, 0.9], 2).unwrap();
        assert_eq!((s[0].label.as_str(), s[0].defective), ("good", false));
        assert_eq!((s[1].label.as_str(), s[1].defective), ("defect", true));
        assert!((s[1].defect_score - 0.9).abs() < 1e-6);
    }

    #[test]
    fn softmax_label_is_the_best_defect_class_when_defective() {
        let m = manifest(
            "name = \"out\"\nkind = \"softmax\"\nclasses = [\"good\", \"spot\", \"scratch\"]\ngood_class = 0\nthreshold = 0.3",
        );
        // good wins the argmax, but the defect mass (0.45) is over the threshold.
        let s = interpret(&m, &[0.55, 0.15, 0.30], 1).unwrap();
        assert!(s[0].defective);
        assert_eq!(s[0].label, "scratch");
    }

    #[test]
    fn a_per_class_threshold_flags_a_critical_class_early() {
        let m = manifest(
            "name = \"out\"\nkind = \"softmax\"\nclasses = [\"good\", \"spot\", \"crack\"]\ngood_class = 0\nthreshold = 0.5\nthresholds = { crack = 0.1 }",
        );
        let s = interpret(&m, &[0.8, 0.05, 0.15, 0.8, 0.15, 0.05], 2).unwrap();
        assert!(s[0].defective, "crack at 0.15 passes its 0.1 threshold");
        assert_eq!(s[0].label, "crack");
        assert!(
            !s[1].defective,
            "spot at 0.15 has only the 0.5 mass threshold"
        );
    }

    #[test]
    fn wrong_output_size_is_an_error() {
        let m = manifest(
            "name = \"out\"\nkind = \"softmax\"\nclasses = [\"good\", \"spot\", \"scratch\"]\ngood_class = 0\nthreshold = 0.5",
        );
        assert!(interpret(&m, &[0.5, 0.5], 1).is_err());
    }
}
