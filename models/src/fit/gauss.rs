//! PaDiM's statistics: one Gaussian per feature-map location (mean and covariance over the good tiles),
//! regularized and inverted, so a tile's anomaly at a location is its Mahalanobis distance there.

/// Running sums for `locations` Gaussians of dimension `channels`, in f64.
pub struct Accumulator {
    channels: usize,
    locations: usize,
    count: u64,
    sum: Vec<f64>,
    outer: Vec<f64>,
}

/// The fitted Gaussians.
pub struct Fitted {
    /// Feature channels.
    pub channels: usize,
    /// Feature-map locations.
    pub locations: usize,
    /// Tiles the statistics came from.
    pub samples: u64,
    /// Means, `[locations][channels]`.
    pub mean: Vec<f32>,
    /// Inverse covariances, `[locations][channels][channels]`.
    pub precision: Vec<f32>,
}

impl Accumulator {
    /// Empty sums.
    pub fn new(channels: usize, locations: usize) -> Self {
        Self {
            channels,
            locations,
            count: 0,
            sum: vec![0.0; channels * locations],
            outer: vec![0.0; channels * channels * locations],
        }
    }

    /// Adds one tile's features, laid out `[channels][locations]` (NCHW without N). Panics if the slice is
    /// not `channels × locations` long (the caller checks the trunk's output shape).
    pub fn add(&mut self, features: &[f32]) {
        let (c, l) = (self.channels, self.locations);
        assert_eq!(features.len(), c * l, "one tile's features");
        let mut x = vec![0.0f64; c];
        for loc in 0..l {
            for (ch, v) in x.iter_mut().enumerate() {
                *v = f64::from(features[ch * l + loc]);
            }
            let sum = &mut self.sum[loc * c..(loc + 1) * c];
            for (s, v) in sum.iter_mut().zip(&x) {
                *s += v;
            }
            let outer = &mut self.outer[loc * c * c..(loc + 1) * c * c];
            for i in 0..c {
                let row = &mut outer[i * c..(i + 1) * c];
                // Lower triangle only; mirrored in `finish`.
                for j in 0..=i {
                    row[j] += x[i] * x[j];
                }
            }
        }
        self.count += 1;
    }

    /// Tiles added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Means and inverse covariances (one-pass sums in f64: enough for post-ReLU features, whose means are
    /// not far above their spread). Each covariance gets `ridge` times its mean variance (at least
    /// 1e-6) added to its diagonal, as PaDiM adds 0.01·I, so channels that never vary on good tiles
    /// stay invertible.
    pub fn finish(&self, ridge: f64) -> Result<Fitted, String> {
        let (c, l) = (self.channels, self.locations);
        if self.count < 2 {
            return Err(format!(
                "{} tiles are too few to fit; give more frames or lower --holdout",
                self.count
            ));
        }
        let n = self.count as f64;
        let mut mean = Vec::with_capacity(l * c);
        let mut precision = Vec::with_capacity(l * c * c);
        for loc in 0..l {
            let mu: Vec<f64> = self.sum[loc * c..(loc + 1) * c]
                .iter()
                .map(|s| s / n)
                .collect();
            let outer = &self.outer[loc * c * c..(loc + 1) * c * c];
            let mut cov = vec![0.0f64; c * c];
            for i in 0..c {
                for j in 0..=i {
                    let v = (outer[i * c + j] - n * mu[i] * mu[j]) / (n - 1.0);
                    cov[i * c + j] = v;
                    cov[j * c + i] = v;
                }
            }
            let mean_var = (0..c).map(|i| cov[i * c + i]).sum::<f64>() / c as f64;
            let eps = (ridge * mean_var).max(1e-6);
            for i in 0..c {
                cov[i * c + i] += eps;
            }
            let inv = invert_spd(&cov, c).ok_or_else(|| {
                format!("the covariance at feature location {loc} is singular; raise --ridge")
            })?;
            mean.extend(mu.iter().map(|v| *v as f32));
            precision.extend(inv.iter().map(|v| *v as f32));
        }
        Ok(Fitted {
            channels: c,
            locations: l,
            samples: self.count,
            mean,
            precision,
        })
    }
}

/// Inverse of a symmetric positive definite `n`×`n` matrix by Cholesky factorization; `None` if it is not
/// positive definite.
pub fn invert_spd(a: &[f64], n: usize) -> Option<Vec<f64>> {
    // a = L Lᵀ
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    // m = L⁻¹ (lower triangular), then a⁻¹ = mᵀ m.
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0 / l[i * n + i];
        for j in 0..i {
            let mut s = 0.0;
            for k in j..i {
                s -= l[i * n + k] * m[k * n + j];
            }
            m[i * n + j] = s / l[i * n + i];
        }
    }
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i..n).map(|k| m[k * n + i] * m[k * n + j]).sum();
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_matrix_is_identity() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let inv = invert_spd(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!(
                    (v - f64::from(u8::from(i == j))).abs() < 1e-12,
                    "{i},{j}: {v}"
                );
            }
        }
    }

    #[test]
    fn not_positive_definite_is_refused() {
        assert!(invert_spd(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn mean_and_covariance_of_known_samples() {
        // One location, two channels: samples (1, 2), (3, 2), (5, 8).
        let mut acc = Accumulator::new(2, 1);
        for s in [[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]] {
            acc.add(&s);
        }
        let f = acc.finish(0.0).unwrap();
        assert_eq!(f.mean, vec![3.0, 4.0]);
        // Covariance [[4, 6], [6, 12]]; its inverse is [[1, -0.5], [-0.5, 1/3]].
        let want = [1.0, -0.5, -0.5, 1.0 / 3.0];
        for (got, want) in f.precision.iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
        }
    }
}
