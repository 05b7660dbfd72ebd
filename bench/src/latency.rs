//! Measurement 2: suspect decision latency, capture → cloud verdict back at the edge → line decision,
//! through a real Mosquitto on loopback (`set_tcp_nodelay true`, started on a free port).
//!
//! The edge and a cloud worker run in this process with their shipped defaults; the edge reads 720p JPEG
//! frames from files (so rendering costs nothing) through its `files` camera.
//! - **unloaded**: one camera at 10 frames/s, every frame a suspect, so suspects never overlap;
//! - **loaded**: two cameras at 30 frames/s each (60 frames/s of 720p), a quarter of them suspects.
//!
//! The latency is the edge's own histogram of suspect line decisions (capture to decision).

use crate::common::Percentiles;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tierline_edge::stats::get;
use tierline_tests::{Mosquitto, pipeline};

/// One load level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Load name.
    pub load: String,
    /// Frames per second offered by the cameras.
    pub offered_fps: f64,
    /// Share of frames that are suspects.
    pub suspect_share: f64,
    /// Frames captured.
    pub frames: u64,
    /// Frames dropped by the camera queue (prescreen behind).
    pub dropped: u64,
    /// Suspect decisions taken from cloud verdicts.
    pub from_cloud: u64,
    /// Suspect decisions by local fallback (verdict later than the deadline).
    pub by_fallback: u64,
    /// Capture → line decision for suspects.
    pub latency: Percentiles,
    /// The latency distribution: (share of suspects, ms), one point per percent.
    #[serde(default)]
    pub cdf_ms: Vec<[f64; 2]>,
}

/// Results of measurement 2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyResults {
    /// Frame size.
    pub frame: String,
    /// Decision deadline (shipped default), ms.
    pub deadline_ms: f64,
    /// One row per load level.
    pub rows: Vec<LatencyRow>,
}

/// Runs measurement 2. `seconds` is the length of each load level.
pub async fn run(seconds: f64) -> anyhow::Result<LatencyResults> {
    let dir = tempfile::tempdir()?;
    eprintln!("latency: rendering 720p frames");
    let all_suspect = crate::common::write_frames(dir.path(), "suspects", 1.0)?;
    let mixed = crate::common::write_frames(dir.path(), "mixed", 0.25)?;
    let broker = Mosquitto::start(dir.path());
    let cloud =
        crate::common::subscribed_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"))
            .await;
    let c = cloud.stats.clone();
    let deadline = tierline_edge::config::DecisionConfig::default().deadline;
    let mut rows = Vec::new();
    for (load, frames, cameras, fps) in [
        ("unloaded", &all_suspect, 1u32, 10.0),
        ("loaded", &mixed, 2, 30.0),
    ] {
        let per_camera = ((seconds * fps) as u64).max(5);
        let cams: String = (0..cameras)
            .map(|i| {
                format!(
                    "[[camera]]\nid = \"cam-{i}\"\nkind = \"files\"\npath = {:?}\nloop = true\nfps = {fps}\nframes = {per_camera}\n",
                    frames.display().to_string()
                )
            })
            .collect();
        let run_dir = dir.path().join(load);
        std::fs::create_dir_all(&run_dir)?;
        let mut config = pipeline::edge_config(broker.port(), &run_dir, &cams, "");
        config.edge.id = format!("edge-{load}");
        let edge = pipeline::start_edge(config);
        let e = edge.stats.clone();
        let total = per_camera * u64::from(cameras);
        eprintln!(
            "latency: {load}: {total} frames at {} frames/s",
            fps * f64::from(cameras)
        );
        pipeline::wait_until(
            "every frame decided",
            Duration::from_secs_f64(seconds * 3.0 + 60.0),
            || get(&e.decisions) + get(&e.frames_dropped) >= total,
            || pipeline::describe(&e, &c),
        )
        .await;
        // Let verdicts still on their way arrive before stopping.
        tokio::time::sleep(deadline).await;
        edge.stop().await?;
        let (latency, cdf_ms) = match e.decision_latency_us.lock() {
            Ok(h) => (Percentiles::from_us(&h), crate::common::cdf_ms(&h)),
            Err(_) => anyhow::bail!("latency histogram poisoned"),
        };
        let captured = get(&e.frames_captured);
        rows.push(LatencyRow {
            load: load.into(),
            offered_fps: fps * f64::from(cameras),
            suspect_share: (get(&e.frames_suspect) as f64 / captured.max(1) as f64),
            frames: captured,
            dropped: get(&e.frames_dropped),
            from_cloud: get(&e.decisions_cloud),
            by_fallback: get(&e.decisions_fallback),
            latency,
            cdf_ms,
        });
        eprintln!(
            "latency: {load}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} suspects",
            latency.p50_ms, latency.p99_ms, latency.max_ms, latency.count
        );
    }
    cloud.stop().await?;
    drop(broker);
    Ok(LatencyResults {
        frame: "1280x720 grey JPEG q90".into(),
        deadline_ms: deadline.as_secs_f64() * 1000.0,
        rows,
    })
}
