//! Pieces the measurements share: the raw ONNX Runtime baseline, test frames, percentiles.

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tierline_shared::manifest::{Layout, Manifest};

/// Loads a manifest from the models directory and returns it with its verified model bytes.
pub fn load_model(models: &Path, manifest: &str) -> anyhow::Result<(Manifest, Vec<u8>)> {
    let path = models.join(manifest);
    let m = Manifest::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let bytes = m.read_verified_model()?;
    Ok((m, bytes))
}

/// An ONNX Runtime session set up exactly as the model runner sets up its own: one intra-op thread, one
/// inter-op thread, no spinning.
pub fn raw_session(model: &[u8]) -> anyhow::Result<Session> {
    let env = tierline_shared::onnx::environment()?;
    Session::builder(&env)
        .map_err(|e| anyhow!("ONNX Runtime: {e}"))?
        .with_intra_threads(1)
        .map_err(|e| anyhow!("ONNX Runtime: {e}"))?
        .with_inter_threads(1)
        .map_err(|e| anyhow!("ONNX Runtime: {e}"))?
        .with_intra_op_spinning(false)
        .map_err(|e| anyhow!("ONNX Runtime: {e}"))?
        .with_inter_op_spinning(false)
        .map_err(|e| anyhow!("ONNX Runtime: {e}"))?
        .commit_from_memory(model)
        .map_err(|e| anyhow!("ONNX Runtime cannot load the model: {e}"))
}

/// The input tensor shape for `n` images.
pub fn input_shape(m: &Manifest, n: usize) -> [usize; 4] {
    let i = &m.input;
    let (c, h, w) = (i.channels as usize, i.height as usize, i.width as usize);
    match i.layout {
        Layout::Nchw => [n, c, h, w],
        Layout::Nhwc => [n, h, w, c],
    }
}

/// One bare `session.run` on `data` (`n` images); returns the output values.
pub fn run_raw(
    session: &mut Session,
    m: &Manifest,
    n: usize,
    data: &[f32],
) -> anyhow::Result<Vec<f32>> {
    let tensor = TensorRef::from_array_view((input_shape(m, n), data))
        .map_err(|e| anyhow!("input tensor: {e}"))?;
    let outputs = session
        .run(ort::inputs![m.input.name.as_str() => tensor])
        .map_err(|e| anyhow!("session.run: {e}"))?;
    let out = outputs
        .get(&m.output.name)
        .with_context(|| format!("no output {:?}", m.output.name))?;
    let (_, values) = out
        .try_extract_tensor::<f32>()
        .map_err(|e| anyhow!("output: {e}"))?;
    Ok(values.to_vec())
}

/// Renders `count` synthetic frames of `width × height` as JPEG (quality 90, as the synthetic camera
/// does). With `defect_rate` 1.0 every frame shows a defect.
pub fn jpeg_frames(
    count: u64,
    width: u32,
    height: u32,
    defect_rate: f64,
) -> anyhow::Result<Vec<bytes::Bytes>> {
    (0..count)
        .map(|i| {
            let f = tierline_edge::synth::render(11, i, width, height, defect_rate);
            Ok(bytes::Bytes::from(f.to_jpeg(90)?))
        })
        .collect()
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
                count: 0,
            };
        }
        Self {
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
            count: h.len(),
        }
    }
}

/// A histogram of microseconds from 1 µs to 1 h.
pub fn histogram() -> Histogram<u64> {
    // Bounds 1 µs ..= 1 h at 3 significant digits are valid constants.
    #[allow(clippy::unwrap_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

/// Records a duration in a microsecond histogram.
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// The distribution of a microsecond histogram as (share of samples, ms) points, one per percent; empty
/// for an empty histogram.
pub fn cdf_ms(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=100)
        .map(|p| {
            let q = f64::from(p) / 100.0;
            [q, h.value_at_quantile(q) as f64 / 1000.0]
        })
        .collect()
}

/// Starts a cloud worker with `config` and waits until it is subscribed (at most a minute).
pub async fn subscribed_cloud(
    config: tierline_cloud::CloudConfig,
) -> tierline_tests::pipeline::Running<tierline_cloud::CloudStats> {
    let cloud = tierline_tests::pipeline::start_cloud(config);
    let c = cloud.stats.clone();
    tierline_tests::pipeline::wait_until(
        "cloud subscribed",
        std::time::Duration::from_secs(60),
        || c.link_up.load(std::sync::atomic::Ordering::Relaxed),
        String::new,
    )
    .await;
    cloud
}

/// Writes 16 synthetic 720p JPEG frames with `defect_rate` into `parent/name`; returns that directory.
pub fn write_frames(
    parent: &Path,
    name: &str,
    defect_rate: f64,
) -> anyhow::Result<std::path::PathBuf> {
    let d = parent.join(name);
    std::fs::create_dir_all(&d)?;
    for (i, j) in jpeg_frames(16, 1280, 720, defect_rate)?.iter().enumerate() {
        std::fs::write(d.join(format!("frame-{i:02}.jpg")), j)?;
    }
    Ok(d)
}

/// `len` incompressible bytes (xorshift64 from `seed`), as a JPEG is.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
