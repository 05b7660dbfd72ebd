//! Measurement 5: the cloud's full model against batch size, next to bare ONNX Runtime with the same batches.
//!
//! - **raw ONNX Runtime**: `session.run` on a pre-decoded batch of `b` images, one session, one thread.
//! - **cloud runner**: the model runner as the cloud worker runs it (one worker thread, `max_batch = b`, the
//!   cloud's default batch wait), fed with encoded frames by enough concurrent requests to fill every batch.
//!   It decodes, resizes and normalizes each frame, so the gap to raw is the preprocessing plus queueing.
//!
//! Frames are the small 160×120 JPEGs the recovery measurement queues, so decoding does not hide the model.

use crate::common::{jpeg_frames, load_model, raw_session, run_raw};
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tierline_shared::preprocess::Preprocessor;
use tierline_shared::runner::{ModelRunner, RunnerConfig};

/// One batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudRow {
    /// Images per `session.run`.
    pub batch: usize,
    /// Raw ONNX Runtime, images/s.
    pub raw_ort_ips: f64,
    /// The cloud's model runner on encoded frames, images/s.
    pub runner_ips: f64,
    /// `runner_ips / raw_ort_ips`.
    pub runner_vs_raw: f64,
}

/// Results of measurement 5.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudResults {
    /// Model name and version.
    pub model: String,
    /// Frame fed to the runner.
    pub frame: String,
    /// Per-frame decode + resize + normalize, single thread, ms.
    pub preprocess_ms: f64,
    /// Model FLOPs per image.
    pub model_flops: f64,
    /// Images per configuration.
    pub images: u64,
    /// One row per batch size.
    pub rows: Vec<CloudRow>,
}

/// Runs measurement 5 with about `images` images per configuration.
pub async fn run(models: &Path, images: u64, batches: &[usize]) -> anyhow::Result<CloudResults> {
    let (manifest, model) = load_model(models, "full.toml")?;
    let flops = crate::flops::count(&model)?;
    let frames = jpeg_frames(16, 160, 120, 1.0)?;
    let mut pre = Preprocessor::new(manifest.input.clone());
    let per = pre.tensor_len();
    let started = Instant::now();
    let mut one = vec![0.0f32; per];
    for f in &frames {
        pre.run(f, &mut one)?;
    }
    let preprocess_ms = started.elapsed().as_secs_f64() * 1000.0 / frames.len() as f64;
    let max_batch = batches.iter().copied().max().unwrap_or(1);
    let mut tensor = vec![0.0f32; per * max_batch];
    for (i, chunk) in tensor.chunks_exact_mut(per).enumerate() {
        pre.run(&frames[i % frames.len()], chunk)?;
    }
    let cloud_wait = cloud_default_wait();
    let mut rows = Vec::new();
    for &b in batches {
        let runs = (images / b as u64).max(2);
        let mut session = raw_session(&model)?;
        run_raw(&mut session, &manifest, b, &tensor[..b * per])?;
        let started = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(run_raw(&mut session, &manifest, b, &tensor[..b * per])?);
        }
        let raw = (runs * b as u64) as f64 / started.elapsed().as_secs_f64();
        drop(session);

        let runner = Arc::new(ModelRunner::start(
            manifest.clone(),
            RunnerConfig {
                threads: NonZeroUsize::MIN,
                max_batch: NonZeroUsize::new(b).unwrap_or(NonZeroUsize::MIN),
                max_wait: cloud_wait,
                queue: NonZeroUsize::new(4 * b).unwrap_or(NonZeroUsize::MIN),
            },
        )?);
        runner.score(frames[0].clone()).await?;
        let total = runs * b as u64;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(4 * b));
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        for i in 0..total {
            let permit = in_flight.clone().acquire_owned().await?;
            let (runner, frame) = (runner.clone(), frames[i as usize % frames.len()].clone());
            tasks.spawn(async move {
                let r = runner.score(frame).await;
                drop(permit);
                r
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let via_runner = total as f64 / started.elapsed().as_secs_f64();
        eprintln!("cloud: batch {b}: raw {raw:.0} images/s, runner {via_runner:.0} images/s");
        rows.push(CloudRow {
            batch: b,
            raw_ort_ips: raw,
            runner_ips: via_runner,
            runner_vs_raw: via_runner / raw,
        });
    }
    Ok(CloudResults {
        model: format!("{} {}", manifest.name, manifest.version),
        frame: "160x120 grey JPEG q90".into(),
        preprocess_ms,
        model_flops: flops.flops_per_image,
        images,
        rows,
    })
}

/// The cloud worker's default batch wait, read from its configuration defaults.
fn cloud_default_wait() -> Duration {
    tierline_tests::pipeline::cloud_config(1883, &std::env::temp_dir(), "w")
        .model
        .max_wait
}
