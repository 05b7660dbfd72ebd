//! Tierline's benchmark harness: six measurements of the real edge, outbox, link and cloud, each next to
//! the bare baseline it is judged against, written as `docs/benchmarks/results.json` and
//! `docs/benchmarks.md`.
//!
//! ```text
//! main ─► machine::describe ─► edge (1) ─► latency (2) ─► outbox (3) ─► recovery (4 + 6) ─► cloud (5)
//!                                  └──────────── results.json (merged by section) ─► report ─► benchmarks.md
//! ```

pub mod camera;
pub mod charts;
pub mod cloud;
pub mod common;
pub mod edge;
pub mod flops;
pub mod latency;
pub mod machine;
pub mod outbox;
pub mod peak;
pub mod peers;
pub mod recovery;
pub mod report;
pub mod tiling;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One of the six measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// 1: edge pipeline throughput against raw ONNX Runtime.
    Edge,
    /// 2: suspect decision latency through Mosquitto.
    Latency,
    /// 3: durable outbox enqueue.
    Outbox,
    /// 4: partition recovery and restart with a backlog.
    Recovery,
    /// 5: cloud full-model throughput against batch size.
    Cloud,
    /// 6: edge memory.
    Memory,
    /// 7: the cascade written without Tierline (Python peers in `bench/peers`).
    Peers,
    /// 8: camera streams (1080p H.264 and MJPEG over RTSP) per core, next to FFmpeg.
    Camera,
    /// 9: the cost of tiling a 1080p frame, per grid.
    Tiling,
}

/// Every section, in report order.
pub const ALL: [Section; 9] = [
    Section::Edge,
    Section::Latency,
    Section::Outbox,
    Section::Recovery,
    Section::Cloud,
    Section::Memory,
    Section::Peers,
    Section::Camera,
    Section::Tiling,
];

/// What to run and where to write.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sections to run.
    pub only: Vec<Section>,
    /// Tiny sizes: a smoke run, not a measurement.
    pub quick: bool,
    /// Directory that receives `benchmarks.md` and `benchmarks/results.json`.
    pub out_dir: PathBuf,
    /// Measure nothing: rewrite `benchmarks.md` from the existing `results.json`.
    pub render_only: bool,
}

/// Everything a run measured. Sections not run keep their previous values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The machine of the latest run.
    pub machine: machine::Machine,
    /// Whether the latest run used `--quick` sizes.
    pub quick: bool,
    /// Command that produced the latest run.
    pub command: String,
    /// 1-minute load average when the latest run started.
    #[serde(default)]
    pub load_at_start: f64,
    /// Measurement 1.
    pub edge: Option<edge::EdgeResults>,
    /// Measurement 2.
    pub latency: Option<latency::LatencyResults>,
    /// Measurement 3.
    pub outbox: Option<outbox::OutboxResults>,
    /// Measurement 4.
    pub recovery: Option<recovery::RecoveryResults>,
    /// Measurement 5.
    pub cloud: Option<cloud::CloudResults>,
    /// Measurement 6.
    pub memory: Option<recovery::MemoryResults>,
    /// Measurement 7.
    #[serde(default)]
    pub peers: Option<peers::PeerResults>,
    /// Measurement 8.
    #[serde(default)]
    pub camera: Option<camera::CameraResults>,
    /// Measurement 9.
    #[serde(default)]
    pub tiling: Option<tiling::TilingResults>,
}

/// The repository root (this crate's parent directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Path of the JSON results under `out_dir`.
pub fn json_path(out_dir: &Path) -> PathBuf {
    out_dir.join("benchmarks").join("results.json")
}

/// Path of the readable report under `out_dir`.
pub fn markdown_path(out_dir: &Path) -> PathBuf {
    out_dir.join("benchmarks.md")
}

/// Runs the selected measurements, merges them into the existing results and rewrites both files.
pub async fn run(opts: Options, command: String) -> anyhow::Result<Results> {
    let models = tierline_tests::pipeline::models_dir();
    let root = repo_root();
    let wants = |s: Section| opts.only.contains(&s);
    let q = opts.quick;
    let before = machine::describe(&root);
    let measured_peak = if opts.render_only {
        None
    } else {
        peak::measure(if q { 0.2 } else { 2.0 })
    };
    // The fraction of peak uses the measured figure; the estimate from flags and clock is only a fallback.
    let peak = measured_peak.map_or(before.core_peak_gflops, |(g, _)| g);

    let previous: Option<Results> = std::fs::read_to_string(json_path(&opts.out_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if opts.render_only {
        let r = previous.with_context(|| {
            format!(
                "--render needs {}; run the benchmarks first",
                json_path(&opts.out_dir).display()
            )
        })?;
        let md = markdown_path(&opts.out_dir);
        std::fs::write(&md, report::markdown(&r))
            .with_context(|| format!("writing {}", md.display()))?;
        charts::draw(&r, &opts.out_dir.join("benchmarks"))?;
        eprintln!("wrote {}", md.display());
        return Ok(r);
    }
    let mut r = previous.unwrap_or_else(|| Results {
        machine: machine::describe(&root),
        quick: q,
        command: command.clone(),
        load_at_start: before.load_average,
        edge: None,
        latency: None,
        outbox: None,
        recovery: None,
        cloud: None,
        memory: None,
        peers: None,
        camera: None,
        tiling: None,
    });

    if wants(Section::Edge) {
        r.edge = Some(
            edge::run(&models, if q { 16 } else { 1000 }, peak)
                .await
                .context("measurement 1 (edge pipeline)")?,
        );
    }
    if wants(Section::Latency) {
        r.latency = Some(
            latency::run(if q { 1.0 } else { 15.0 })
                .await
                .context("measurement 2 (decision latency)")?,
        );
    }
    if wants(Section::Outbox) {
        r.outbox = Some(
            outbox::run(if q { 128 } else { 6400 })
                .await
                .context("measurement 3 (outbox)")?,
        );
    }
    if wants(Section::Recovery) || wants(Section::Memory) {
        let sizes = if q {
            recovery::Sizes {
                restart_queued: 2000,
                drain_queued: 200,
                watch: Duration::from_secs(2),
                drain_limit: Duration::from_secs(60),
            }
        } else {
            recovery::Sizes {
                restart_queued: 100_000,
                drain_queued: 20_000,
                watch: Duration::from_secs(8),
                drain_limit: Duration::from_secs(90),
            }
        };
        let (rec, mem) = recovery::run(sizes)
            .await
            .context("measurements 4 and 6 (recovery, memory)")?;
        if wants(Section::Recovery) {
            r.recovery = Some(rec);
        }
        if wants(Section::Memory) {
            r.memory = Some(mem);
        }
    }
    if wants(Section::Cloud) {
        let batches: &[usize] = if q { &[1, 4] } else { &[1, 2, 4, 8, 16, 32] };
        r.cloud = Some(
            cloud::run(&models, if q { 16 } else { 1600 }, batches)
                .await
                .context("measurement 5 (cloud)")?,
        );
    }

    if wants(Section::Peers) {
        // Tierline's side of the edge comparison is section 1's pipeline on one thread, from this run or the
        // last one that measured it.
        let tierline_fps = r
            .edge
            .as_ref()
            .and_then(|e| e.rows.iter().find(|row| row.threads == 1))
            .map_or(0.0, |row| row.pipeline_fps);
        r.peers = Some(
            peers::run(if q { 3.0 } else { 15.0 }, tierline_fps)
                .await
                .context("measurement 7 (peers)")?,
        );
    }

    if wants(Section::Camera) {
        let window = Duration::from_secs(if q { 3 } else { 12 });
        r.camera = Some(
            tokio::task::block_in_place(|| camera::run(window, if q { 1 } else { 6 }))
                .context("measurement 8 (camera)")?,
        );
    }

    if wants(Section::Tiling) {
        let models = models.clone();
        r.tiling = Some(
            tokio::task::block_in_place(|| tiling::run(&models, if q { 3 } else { 40 }))
                .context("measurement 9 (tiling)")?,
        );
    }

    r.machine = machine::describe(&root);
    if let Some((gflops, kernel)) = measured_peak {
        r.machine.measured_peak_gflops = gflops;
        r.machine.measured_peak_kernel = kernel.into();
    }
    r.quick = q;
    r.command = command;
    r.load_at_start = before.load_average;
    let json = json_path(&opts.out_dir);
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&r)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let md = markdown_path(&opts.out_dir);
    std::fs::write(&md, report::markdown(&r))
        .with_context(|| format!("writing {}", md.display()))?;
    charts::draw(&r, &opts.out_dir.join("benchmarks"))?;
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(r)
}
