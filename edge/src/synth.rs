//! Deterministic synthetic inspection frames: a port of the procedural part of `models/tools/synth.py`,
//! following `models/SYNTHETIC.md`, so the edge's synthetic camera shows the surfaces and defects the shipped
//! models were trained and measured on. Every frame is a pure function of `(seed, index, width, height,
//! defect_rate)`; surfaces are drawn from the four procedural kinds (brushed, cast, woven, painted; woven is
//! one the models never saw in training).

use std::f64::consts::PI;

/// What a synthetic frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// No defect.
    Good,
    /// A straight line segment, brighter or darker.
    Scratch,
    /// A filled disc with a soft edge.
    Spot,
    /// A dark, jagged path.
    Crack,
    /// A shaded bump: one side lit, the other in shadow.
    Dent,
    /// A large, low-contrast blob with an irregular, soft edge.
    Stain,
}

/// Defect kinds in draw order.
const DEFECTS: [Truth; 5] = [
    Truth::Scratch,
    Truth::Spot,
    Truth::Crack,
    Truth::Dent,
    Truth::Stain,
];

impl Truth {
    /// The class name used by the models.
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::Good => "good",
            Truth::Scratch => "scratch",
            Truth::Spot => "spot",
            Truth::Crack => "crack",
            Truth::Dent => "dent",
            Truth::Stain => "stain",
        }
    }
}

/// The surface under the defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Fine horizontal streaks and row offsets.
    Brushed,
    /// Blotchy two-scale grain.
    Cast,
    /// An over-under thread pattern (held out of training).
    Woven,
    /// Slow shading with a fine orange peel.
    Painted,
}

const SURFACES: [Surface; 4] = [
    Surface::Brushed,
    Surface::Cast,
    Surface::Woven,
    Surface::Painted,
];

impl Surface {
    /// The surface name used by the generator.
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Brushed => "brushed",
            Surface::Cast => "cast",
            Surface::Woven => "woven",
            Surface::Painted => "painted",
        }
    }
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const SALT_PIXEL: u64 = 1;
const SALT_ROW: u64 = 2;
const SALT_LATTICE_A: u64 = 3;
const SALT_LATTICE_B: u64 = 4;
const STRIDE: u64 = 4099;
const CRACK_SEGMENTS: usize = 10;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An addressable random stream: draw `k` costs the same whatever was drawn before.
#[derive(Clone, Copy)]
struct Stream(u64);

impl Stream {
    fn frame(seed: u64, index: u64) -> Self {
        Self(mix64(seed ^ mix64(index)))
    }

    fn child(self, salt: u64) -> Self {
        Self(mix64(self.0 ^ mix64(salt)))
    }

    fn u(self, k: u64) -> f64 {
        let z = mix64(self.0.wrapping_add(k.wrapping_add(1).wrapping_mul(GAMMA)));
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal `j` (Box–Muller over draws `2j` and `2j + 1`).
    fn normal(self, j: u64) -> f64 {
        (-2.0 * (1.0 - self.u(2 * j)).ln()).sqrt() * (2.0 * PI * self.u(2 * j + 1)).cos()
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
    /// The surface.
    pub surface: Surface,
}

#[derive(Debug, Clone)]
enum Defect {
    None,
    Scratch {
        a: (f64, f64),
        b: (f64, f64),
        width: f64,
        delta: f64,
    },
    Spot {
        c: (f64, f64),
        r: f64,
        blur: f64,
        delta: f64,
    },
    Crack {
        points: Vec<(f64, f64)>,
        width: f64,
        delta: f64,
    },
    Dent {
        c: (f64, f64),
        r: f64,
        light: f64,
        delta: f64,
    },
    Stain {
        c: (f64, f64),
        r: f64,
        ramp: f64,
        ph3: f64,
        ph5: f64,
        delta: f64,
    },
}

struct Params {
    truth: Truth,
    surface: Surface,
    g0: f64,
    amp: f64,
    theta: f64,
    sigma: f64,
    sa: f64,
    sb: f64,
    defect: Defect,
}

fn draw(s: Stream, width: u32, height: u32, defect_rate: f64) -> Params {
    let u: Vec<f64> = (0..32).map(|k| s.u(k)).collect();
    let (wf, hf) = (f64::from(width), f64::from(height));
    let m = wf.min(hf);
    let truth = if u[0] < defect_rate {
        DEFECTS[((u[1] * 5.0) as usize).min(4)]
    } else {
        Truth::Good
    };
    let surface = SURFACES[((u[2] * 4.0) as usize).min(3)];
    let mag = 25.0 + 55.0 * u[15];
    let sign = if u[16] < 0.5 { 1.0 } else { -1.0 };
    let centred = |r: f64| {
        (
            r + u[10] * (wf - 1.0 - 2.0 * r),
            r + u[11] * (hf - 1.0 - 2.0 * r),
        )
    };
    let defect = match truth {
        Truth::Good => Defect::None,
        Truth::Scratch => {
            let len = m * (0.12 + 0.35 * u[12]);
            let phi = PI * u[13];
            let (hx, hy) = (0.5 * len * phi.cos().abs(), 0.5 * len * phi.sin().abs());
            let cx = hx + u[10] * (wf - 1.0 - 2.0 * hx);
            let cy = hy + u[11] * (hf - 1.0 - 2.0 * hy);
            let (dx, dy) = (0.5 * len * phi.cos(), 0.5 * len * phi.sin());
            Defect::Scratch {
                a: (cx - dx, cy - dy),
                b: (cx + dx, cy + dy),
                width: m * (0.004 + 0.010 * u[14]),
                delta: sign * mag,
            }
        }
        Truth::Spot => {
            let r = m * (0.012 + 0.035 * u[12]);
            Defect::Spot {
                c: centred(r),
                r,
                blur: 1.0 + 4.0 * u[14],
                delta: sign * mag,
            }
        }
        Truth::Crack => {
            let step = m * (0.025 + 0.02 * u[12]);
            let mut heading = 2.0 * PI * u[13];
            let mut x = 0.15 * wf + u[10] * 0.7 * wf;
            let mut y = 0.15 * hf + u[11] * 0.7 * hf;
            let mut points = vec![(x, y)];
            for i in 0..CRACK_SEGMENTS {
                heading += (u[17 + i] - 0.5) * 1.2;
                x += step * heading.cos();
                y += step * heading.sin();
                points.push((x, y));
            }
            Defect::Crack {
                points,
                width: m * (0.0025 + 0.005 * u[14]),
                delta: -(35.0 + 55.0 * u[15]),
            }
        }
        Truth::Dent => {
            let r = m * (0.03 + 0.05 * u[12]);
            Defect::Dent {
                c: centred(r),
                r,
                light: 2.0 * PI * u[13],
                delta: 20.0 + 40.0 * u[15],
            }
        }
        Truth::Stain => {
            let r = m * (0.05 + 0.10 * u[12]);
            Defect::Stain {
                c: centred(r),
                r,
                ramp: m * (0.01 + 0.03 * u[14]),
                ph3: 2.0 * PI * u[17],
                ph5: 2.0 * PI * u[18],
                delta: (12.0 + 33.0 * u[15]) * if u[16] >= 0.75 { 1.0 } else { -1.0 },
            }
        }
    };
    Params {
        truth,
        surface,
        g0: 70.0 + 110.0 * u[3],
        amp: -30.0 + 60.0 * u[4],
        theta: 2.0 * PI * u[5],
        sigma: 2.0 + 4.0 * u[6],
        sa: u[7],
        sb: u[8],
        defect,
    }
}

/// Smoothstep-interpolated lattice noise in [-1, 1], evaluated over a whole frame.
struct ValueNoise {
    grid: Vec<f64>,
    grid_w: usize,
    ix: Vec<usize>,
    sx: Vec<f64>,
    iy: Vec<usize>,
    sy: Vec<f64>,
}

impl ValueNoise {
    fn new(s: Stream, width: u32, height: u32, cell_x: f64, cell_y: f64) -> Self {
        let axis = |n: u32, cell: f64| -> (Vec<usize>, Vec<f64>) {
            (0..n)
                .map(|i| {
                    let g = f64::from(i) / cell;
                    let f = g.floor();
                    let t = g - f;
                    (f as usize, t * t * (3.0 - 2.0 * t))
                })
                .unzip()
        };
        let (ix, sx) = axis(width, cell_x);
        let (iy, sy) = axis(height, cell_y);
        let grid_w = ix.last().copied().unwrap_or(0) + 2;
        let grid_h = iy.last().copied().unwrap_or(0) + 2;
        let grid = (0..grid_h)
            .flat_map(|b| (0..grid_w).map(move |a| (a, b)))
            .map(|(a, b)| 2.0 * s.u(b as u64 * STRIDE + a as u64) - 1.0)
            .collect();
        Self {
            grid,
            grid_w,
            ix,
            sx,
            iy,
            sy,
        }
    }

    fn at(&self, x: usize, y: usize) -> f64 {
        let (ix, sx, iy, sy) = (self.ix[x], self.sx[x], self.iy[y], self.sy[y]);
        let g = |a: usize, b: usize| self.grid[b * self.grid_w + a];
        let top = g(ix, iy) * (1.0 - sx) + g(ix + 1, iy) * sx;
        let bot = g(ix, iy + 1) * (1.0 - sx) + g(ix + 1, iy + 1) * sx;
        top * (1.0 - sy) + bot * sy
    }
}

/// The zero-mean surface pattern for every pixel, row-major.
fn surface(p: &Params, s: Stream, width: u32, height: u32) -> Vec<f64> {
    let (w, h) = (width as usize, height as usize);
    let mut out = Vec::with_capacity(w * h);
    match p.surface {
        Surface::Brushed => {
            let rows = s.child(SALT_ROW);
            let streak = ValueNoise::new(
                s.child(SALT_LATTICE_A),
                width,
                height,
                40.0 + 80.0 * p.sa,
                1.0,
            );
            for y in 0..h {
                let row = 2.5 * rows.normal(y as u64);
                out.extend((0..w).map(|x| row + (3.0 + 4.0 * p.sb) * streak.at(x, y)));
            }
        }
        Surface::Cast => {
            let a = ValueNoise::new(s.child(SALT_LATTICE_A), width, height, 40.0, 40.0);
            let b = ValueNoise::new(s.child(SALT_LATTICE_B), width, height, 8.0, 8.0);
            for y in 0..h {
                out.extend(
                    (0..w).map(|x| {
                        (6.0 + 10.0 * p.sa) * a.at(x, y) + (3.0 + 5.0 * p.sb) * b.at(x, y)
                    }),
                );
            }
        }
        Surface::Woven => {
            let period = 10.0 + 14.0 * p.sa;
            for y in 0..h {
                let gy = y as f64 / period;
                let fy = gy - gy.floor();
                out.extend((0..w).map(|x| {
                    let gx = x as f64 / period;
                    let fx = gx - gx.floor();
                    let prof = if (gx.floor() + gy.floor()) % 2.0 == 0.0 {
                        (PI * fx).sin()
                    } else {
                        (PI * fy).sin()
                    };
                    (10.0 + 20.0 * p.sb) * (prof - 0.5)
                }));
            }
        }
        Surface::Painted => {
            let a = ValueNoise::new(s.child(SALT_LATTICE_A), width, height, 120.0, 120.0);
            let b = ValueNoise::new(s.child(SALT_LATTICE_B), width, height, 5.0, 5.0);
            for y in 0..h {
                out.extend(
                    (0..w)
                        .map(|x| (4.0 + 6.0 * p.sa) * a.at(x, y) + (1.5 + 2.5 * p.sb) * b.at(x, y)),
                );
            }
        }
    }
    out
}

fn capsule(x: f64, y: f64, a: (f64, f64), b: (f64, f64), width: f64) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((x - a.0) * dx + (y - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    let dist = (x - (a.0 + t * dx)).hypot(y - (a.1 + t * dy));
    (0.5 * width + 0.5 - dist).clamp(0.0, 1.0)
}

impl Defect {
    /// Pixels outside this box (x0, y0, x1, y1; inclusive) get exactly 0; `None`: every pixel may change.
    fn bounds(&self) -> Option<(f64, f64, f64, f64)> {
        let around = |pts: &[(f64, f64)], margin: f64| {
            let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
            for &(x, y) in pts {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
            Some((x0 - margin, y0 - margin, x1 + margin, y1 + margin))
        };
        match self {
            Defect::None | Defect::Dent { .. } => None,
            Defect::Scratch { a, b, width, .. } => around(&[*a, *b], width / 2.0 + 2.0),
            Defect::Crack { points, width, .. } => around(points, width / 2.0 + 2.0),
            Defect::Spot { c, r, blur, .. } => around(&[*c], r + blur / 2.0 + 2.0),
            Defect::Stain { c, r, ramp, .. } => around(&[*c], 1.32 * r + ramp / 2.0 + 2.0),
        }
    }

    /// The defect's additive contribution at pixel `(x, y)`, in grey levels.
    fn at(&self, x: f64, y: f64) -> f64 {
        match self {
            Defect::None => 0.0,
            Defect::Scratch { a, b, width, delta } => delta * capsule(x, y, *a, *b, *width),
            Defect::Spot { c, r, blur, delta } => {
                let dist = (x - c.0).hypot(y - c.1);
                delta * ((r + 0.5 * blur - dist) / blur).clamp(0.0, 1.0)
            }
            Defect::Crack {
                points,
                width,
                delta,
            } => {
                let alpha = points
                    .windows(2)
                    .map(|s| capsule(x, y, s[0], s[1], *width))
                    .fold(0.0, f64::max);
                delta * alpha
            }
            Defect::Dent { c, r, light, delta } => {
                let (dx, dy) = (x - c.0, y - c.1);
                let along = (dx * light.cos() + dy * light.sin()) / r;
                delta * along * (0.5 - (dx * dx + dy * dy) / (2.0 * r * r)).exp()
            }
            Defect::Stain {
                c,
                r,
                ramp,
                ph3,
                ph5,
                delta,
            } => {
                let (dx, dy) = (x - c.0, y - c.1);
                let ang = dy.atan2(dx);
                let edge =
                    r * (1.0 + 0.2 * (3.0 * ang + ph3).sin() + 0.12 * (5.0 * ang + ph5).sin());
                delta * ((edge - dx.hypot(dy)) / ramp + 0.5).clamp(0.0, 1.0)
            }
        }
    }
}

/// Renders frame `index` of the stream `seed`: a procedural surface, with one defect on a `defect_rate`
/// share of frames.
pub fn render(seed: u64, index: u64, width: u32, height: u32, defect_rate: f64) -> Frame {
    let s = Stream::frame(seed, index);
    let p = draw(s, width, height, defect_rate);
    let (wf, hf) = (f64::from(width), f64::from(height));
    let (ct, st) = (p.theta.cos(), p.theta.sin());
    let (mx, my) = ((wf - 1.0) / 2.0, (hf - 1.0) / 2.0);
    let t_max = mx * ct.abs() + my * st.abs();
    let mut v = surface(&p, s, width, height);
    let noise = s.child(SALT_PIXEL);
    let w = width as usize;
    for (i, value) in v.iter_mut().enumerate() {
        let (x, y) = ((i % w) as f64, (i / w) as f64);
        let t = (x - mx) * ct + (y - my) * st;
        *value = (p.g0 + p.amp * t / (2.0 * t_max) + *value) + p.sigma * noise.normal(i as u64);
    }
    if !matches!(p.defect, Defect::None) {
        let (x0, y0, x1, y1) = p.defect.bounds().unwrap_or((0.0, 0.0, wf, hf));
        let xs = (x0.max(0.0).floor() as usize)..=(x1.min(wf - 1.0).max(0.0).ceil() as usize);
        let ys = (y0.max(0.0).floor() as usize)..=(y1.min(hf - 1.0).max(0.0).ceil() as usize);
        for y in ys {
            for x in xs.clone() {
                v[y * w + x] += p.defect.at(x as f64, y as f64);
            }
        }
    }
    let pixels = v
        .into_iter()
        .map(|x| (x + 0.5).floor().clamp(0.0, 255.0) as u8)
        .collect();
    Frame {
        width,
        height,
        pixels,
        truth: p.truth,
        surface: p.surface,
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

    /// Reference values from `models/SYNTHETIC.md` (`synth.py --describe --count 6 --seed 1 --p-defect 0.9`):
    /// (truth, surface, raw pixel sum, pixel[0,0], pixel[240,320]).
    const REFERENCE: [(Truth, Surface, u64, u8, u8); 6] = [
        (Truth::Spot, Surface::Cast, 53_746_370, 163, 225),
        (Truth::Scratch, Surface::Painted, 41_914_685, 132, 141),
        (Truth::Stain, Surface::Brushed, 33_019_660, 124, 103),
        (Truth::Dent, Surface::Woven, 51_443_830, 153, 172),
        (Truth::Crack, Surface::Woven, 27_367_232, 70, 92),
        (Truth::Dent, Surface::Cast, 43_455_515, 128, 128),
    ];

    #[test]
    fn matches_the_reference_generator() {
        let s = Stream::frame(1, 0);
        assert_eq!(s.0, 0x5692_161d_100b_05e5);
        assert!((s.u(0) - 0.749_748_241_358_030_1).abs() < 1e-15);
        for (i, (truth, surface, sum, p00, p_mid)) in REFERENCE.into_iter().enumerate() {
            let f = render(1, i as u64, 640, 480, 0.9);
            assert_eq!((f.truth, f.surface), (truth, surface), "frame {i}");
            let got: u64 = f.pixels.iter().map(|&p| u64::from(p)).sum();
            // ±1 on rare pixels is allowed by the spec (libm rounding).
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
    fn every_defect_and_surface_occurs() {
        let frames: Vec<Frame> = (0..200).map(|i| render(4, i, 32, 24, 0.8)).collect();
        for d in DEFECTS {
            assert!(frames.iter().any(|f| f.truth == d), "{d:?}");
        }
        for s in SURFACES {
            assert!(frames.iter().any(|f| f.surface == s), "{s:?}");
        }
    }

    #[test]
    fn encodes_as_jpeg() {
        let f = render(1, 1, 64, 48, 0.5);
        let jpeg = f.to_jpeg(90).unwrap();
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (64, 48));
    }
}
