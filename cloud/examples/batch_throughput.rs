//! Full-model throughput against batch size: scores the golden PNGs round-robin through one runner thread
//! with `max_batch` 1, 2, 4, 8, 16, keeping 64 frames in flight so batches can fill. Frames/s include PNG
//! decode and preprocessing, as the cloud worker pays them.
//!
//! ```sh
//! cargo run --release -p tierline-cloud --example batch_throughput -- [frames per size, default 2000]
//! ```

use bytes::Bytes;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tierline_shared::runner::{ModelRunner, RunnerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let frames: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let images: Vec<Bytes> = std::fs::read_dir(models.join("golden"))?
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read(e.path()).map(Bytes::from))
        .collect::<Result<_, _>>()?;
    println!("batch  frames/s  mean time in runner per frame (ms)");
    for batch in [1usize, 2, 4, 8, 16] {
        let config = RunnerConfig {
            threads: NonZeroUsize::MIN,
            max_batch: NonZeroUsize::new(batch).unwrap_or(NonZeroUsize::MIN),
            max_wait: Duration::from_millis(2),
            queue: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
        };
        let runner = ModelRunner::load_checked(&models.join("full.toml"), config).await?;
        // Warm up.
        for img in &images {
            runner.score(img.clone()).await?;
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(64));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(frames);
        for i in 0..frames {
            let permit = permits.clone().acquire_owned().await?;
            let (r, img) = (runner.clone(), images[i % images.len()].clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let s = r.score(img).await;
                drop(permit);
                s.map(|_| t.elapsed())
            }));
        }
        let mut latency = Duration::ZERO;
        for t in tasks {
            latency += t.await??;
        }
        let took = started.elapsed();
        println!(
            "{batch:>5}  {:>8.1}  {:>8.2}",
            frames as f64 / took.as_secs_f64(),
            latency.as_secs_f64() * 1000.0 / frames as f64
        );
    }
    Ok(())
}
