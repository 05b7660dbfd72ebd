//! The Wilson score interval for a proportion: how sure `k` hits in `n` trials make us of the true rate. Used
//! for recall bounds (`tierline-models`) and for the live miss-rate estimate from audit samples (cloud).

/// Two-sided 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval `(lower, upper)` for `k` hits in `n` trials at normal quantile `z`;
/// `(0, 1)` when `n` is 0 (nothing is known).
pub fn interval(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let d = 1.0 + z2 / n;
    (
        ((centre - spread) / d).max(0.0),
        ((centre + spread) / d).min(1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_values() {
        // 0 of 10: (0, 0.2775); 5 of 10: (0.2366, 0.7634) (Wilson 1927; e.g. Newcombe 1998, table I).
        let (lo, hi) = interval(0, 10, Z95);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-4, "{lo} {hi}");
        let (lo, hi) = interval(5, 10, Z95);
        assert!(
            (lo - 0.2366).abs() < 1e-4 && (hi - 0.7634).abs() < 1e-4,
            "{lo} {hi}"
        );
        assert_eq!(interval(0, 0, Z95), (0.0, 1.0));
        let (lo, hi) = interval(10, 10, Z95);
        assert!(
            (lo - 0.7225).abs() < 1e-4 && (hi - 1.0).abs() < 1e-12,
            "{lo} {hi}"
        );
    }
}
