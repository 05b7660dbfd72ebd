//! Deterministic synthetic inspection frames: a port of `models/tools/synth.py`, following
//! `models/SYNTHETIC.md` exactly, so the edge's synthetic camera produces the same surfaces and defects the
//! models were built and checked on. Every frame is a pure function of `(seed, index, width, height,
//! defect_rate)`.

use std::f64::consts::PI;

/// What a synthetic frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// No defect.
    Good,
    /// A filled disc.
    Spot,
    /// A straight segment.
    Scratch,
}

impl Truth {
    /// The class name used by the models.
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::Good => "good",
            Truth::Spot => "spot",
            Truth::Scratch => "scratch",
        }
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The per-frame random stream: addressable draws, so unused ones cost nothing.
struct Stream(u64);

impl Stream {
    fn new(seed: u64, index: u64) -> Self {
        Self(mix64(seed ^ mix64(index)))
    }

    fn u(&self, k: u64) -> f64 {
        let z = mix64(
            self.0
                .wrapping_add(k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn n(&self, a: u64) -> f64 {
        (-2.0 * (1.0 - self.u(a)).ln()).sqrt() * (2.0 * PI * self.u(a + 1)).cos()
    }
}

/// A rendered frame: raw 8-bit grey pixels, row-major.
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels, `width × height`.
    pub pixels: Vec<u8>,
    /// The ground truth.
    pub truth: Truth,
}

enum Defect {
    None,
    Spot {
        cx: f64,
        cy: f64,
        r: f64,
    },
    Scratch {
        p0: (f64, f64),
        d: (f64, f64),
        w: f64,
    },
}

/// Renders frame `index` of the stream `seed`.
pub fn render(seed: u64, index: u64, width: u32, height: u32, defect_rate: f64) -> Frame {
    let s = Stream::new(seed, index);
    let (wf, hf) = (f64::from(width), f64::from(height));
    let m = wf.min(hf);
    let defective = s.u(0) < defect_rate;
    let truth = match (defective, s.u(1) < 0.5) {
        (false, _) => Truth::Good,
        (true, true) => Truth::Spot,
        (true, false) => Truth::Scratch,
    };
    let g0 = 90.0 + 80.0 * s.u(2);
    let amp = -25.0 + 50.0 * s.u(3);
    let theta = 2.0 * PI * s.u(4);
    let sigma = 3.0 + 5.0 * s.u(5);
    let magnitude = 40.0 + 50.0 * s.u(11);
    let delta = if s.u(12) < 0.5 { magnitude } else { -magnitude };
    let defect = match truth {
        Truth::Good => Defect::None,
        Truth::Spot => {
            let r = m * (0.02 + 0.03 * s.u(6));
            Defect::Spot {
                cx: r + s.u(7) * (wf - 1.0 - 2.0 * r),
                cy: r + s.u(8) * (hf - 1.0 - 2.0 * r),
                r,
            }
        }
        Truth::Scratch => {
            let len = m * (0.15 + 0.30 * s.u(6));
            let phi = PI * s.u(9);
            let w = (m * (0.008 + 0.008 * s.u(10))).max(2.0);
            let (c, sn) = (phi.cos(), phi.sin());
            let (hx, hy) = (len / 2.0 * c.abs(), len / 2.0 * sn.abs());
            let cx = hx + s.u(7) * (wf - 1.0 - 2.0 * hx);
            let cy = hy + s.u(8) * (hf - 1.0 - 2.0 * hy);
            Defect::Scratch {
                p0: (cx - len / 2.0 * c, cy - len / 2.0 * sn),
                d: (len * c, len * sn),
                w,
            }
        }
    };
    let (ct, st) = (theta.cos(), theta.sin());
    let (mx, my) = ((wf - 1.0) / 2.0, (hf - 1.0) / 2.0);
    let t_max = mx * ct.abs() + my * st.abs();
    let mut pixels = Vec::with_capacity((width * height) as usize);
    let h = u64::from(height);
    let w = u64::from(width);
    for y in 0..height {
        let yf = f64::from(y);
        let row = 2.0 * s.n(16 + 2 * u64::from(y));
        for x in 0..width {
            let xf = f64::from(x);
            let t = (xf - mx) * ct + (yf - my) * st;
            let noise = sigma * s.n(16 + 2 * h + 2 * (u64::from(y) * w + u64::from(x)));
            let alpha = match defect {
                Defect::None => 0.0,
                Defect::Spot { cx, cy, r } => {
                    let dist = ((xf - cx).powi(2) + (yf - cy).powi(2)).sqrt();
                    ((r + 0.75 - dist) / 1.5).clamp(0.0, 1.0)
                }
                Defect::Scratch { p0, d, w } => {
                    let (px, py) = (xf - p0.0, yf - p0.1);
                    let sp = ((px * d.0 + py * d.1) / (d.0 * d.0 + d.1 * d.1)).clamp(0.0, 1.0);
                    let dist = ((px - sp * d.0).powi(2) + (py - sp * d.1).powi(2)).sqrt();
                    (w / 2.0 + 0.5 - dist).clamp(0.0, 1.0)
                }
            };
            let v = g0 + amp * t / (2.0 * t_max) + row + noise + alpha * delta;
            pixels.push((v + 0.5).floor().clamp(0.0, 255.0) as u8);
        }
    }
    Frame {
        width,
        height,
        pixels,
        truth,
    }
}

impl Frame {
    /// Encodes the frame as a greyscale JPEG.
    pub fn to_jpeg(&self, quality: u8) -> Result<Vec<u8>, image::ImageError> {
        let mut out = Vec::with_capacity(self.pixels.len() / 4);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode(
            &self.pixels,
            self.width,
            self.height,
            image::ExtendedColorType::L8,
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from `models/SYNTHETIC.md` (`synth.py --describe --count 4 --seed 1`).
    #[test]
    fn matches_the_reference_generator() {
        let s = Stream::new(1, 0);
        assert_eq!(s.0, 0x5692_161d_100b_05e5);
        assert!((s.u(0) - 0.749_748_241_358_030_1).abs() < 1e-15);
        let expect = [
            (Truth::Good, 38_370_156u64, 115u8, 116u8),
            (Truth::Spot, 50_559_034, 154, 162),
            (Truth::Good, 29_705_967, 99, 95),
            (Truth::Scratch, 43_321_484, 151, 136),
        ];
        for (i, (truth, sum, p00, p_mid)) in expect.into_iter().enumerate() {
            let f = render(1, i as u64, 640, 480, 0.5);
            assert_eq!(f.truth, truth, "frame {i}");
            let got: u64 = f.pixels.iter().map(|&p| u64::from(p)).sum();
            // ±1 on rare pixels is allowed by the spec (ln/cos rounding).
            assert!(got.abs_diff(sum) <= 50, "frame {i}: sum {got} vs {sum}");
            assert!(f.pixels[0].abs_diff(p00) <= 1, "frame {i}");
            assert!(f.pixels[240 * 640 + 320].abs_diff(p_mid) <= 1, "frame {i}");
        }
    }

    #[test]
    fn same_seed_same_frame_and_rate_is_respected() {
        let a = render(9, 5, 64, 48, 0.3);
        let b = render(9, 5, 64, 48, 0.3);
        assert_eq!(a.pixels, b.pixels);
        let defective = (0..1000)
            .filter(|&i| render(3, i, 8, 8, 0.2).truth != Truth::Good)
            .count();
        assert!((150..250).contains(&defective), "{defective}");
    }

    #[test]
    fn encodes_as_jpeg() {
        let f = render(1, 1, 64, 48, 0.5);
        let jpeg = f.to_jpeg(90).unwrap();
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (64, 48));
    }
}
