//! `tierline-demo`: runs an embedded broker, a cloud worker on SQLite and an edge with synthetic cameras in
//! one process, prints a live summary every second, and a report at the end.

use anyhow::Context;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tierline_cloud::{CloudConfig, CloudStats};
use tierline_demo::broker::{EmbeddedBroker, LocalMosquitto};
use tierline_demo::summary;
use tierline_edge::stats::get;
use tierline_edge::{EdgeConfig, EdgeStats};
use tokio_util::sync::CancellationToken;

/// Tierline demo: the whole edge + cloud pipeline on embedded defaults.
///
/// Starts an in-process MQTT broker (or uses --broker), a cloud worker with the full model on SQLite, and an
/// edge whose synthetic cameras show surfaces with spots and scratches. Runs until --frames are captured or
/// Ctrl-C, then prints a report. Decisions are written as JSON lines to <data-dir>/decisions.jsonl.
#[derive(Parser, Debug)]
#[command(name = "tierline-demo", version)]
struct Args {
    /// Total frames to capture across all cameras (0 = until Ctrl-C).
    #[arg(long, default_value_t = 1200)]
    frames: u64,
    /// Number of synthetic cameras (ignored when --camera is given).
    #[arg(long, default_value_t = 2)]
    cameras: u32,
    /// A real camera instead of the synthetic ones (repeatable): `rtsp://user:pass@host/path` (H.264 or
    /// MJPEG), `http://host/video.mjpg` (MJPEG stream), `http://host/snapshot.jpg` (snapshots; any http URL
    /// ending in .jpg, .jpeg or .png, or prefixed `snapshot:`), or a directory or glob of image files.
    #[arg(long = "camera", value_name = "URL")]
    camera_urls: Vec<String>,
    /// Frames per second per camera.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Fraction of frames with a defect.
    #[arg(long, default_value_t = 0.05)]
    defect_rate: f64,
    /// Use this MQTT broker (host:port) instead of starting one.
    #[arg(long)]
    broker: Option<String>,
    /// Use the in-process broker even when Mosquitto is installed (by default a private Mosquitto is
    /// started when it is installed, since the in-process broker delays small messages).
    #[arg(long, conflicts_with = "broker")]
    embedded_broker: bool,
    /// Directory for the outbox, the verdict store and the decision log (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory holding the model manifests.
    #[arg(long, default_value_os_t = default_models())]
    models: PathBuf,
    /// Keep the review console open after the run, until Ctrl-C, to review the run's frames in a browser.
    #[arg(long)]
    review: bool,
}

fn default_models() -> PathBuf {
    let local = PathBuf::from("models");
    if local.join("prescreen.toml").is_file() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }
}

/// The `[[camera]]` source keys for a `--camera` argument.
fn camera_source(arg: &str) -> String {
    let lower = arg.to_ascii_lowercase();
    if let Some(url) = arg.strip_prefix("snapshot:") {
        format!("kind = \"snapshot\"\nurl = {url:?}")
    } else if let Some(url) = arg.strip_prefix("mjpeg:") {
        format!("kind = \"mjpeg\"\nurl = {url:?}")
    } else if lower.starts_with("rtsp://") {
        format!("kind = \"rtsp\"\nurl = {arg:?}")
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        let path = lower.split(['?', '#']).next().unwrap_or("");
        if [".jpg", ".jpeg", ".png"].iter().any(|e| path.ends_with(e)) {
            format!("kind = \"snapshot\"\nurl = {arg:?}")
        } else {
            format!("kind = \"mjpeg\"\nurl = {arg:?}")
        }
    } else {
        format!("kind = \"files\"\npath = {arg:?}\nloop = true")
    }
}

/// The demo's reviewer, who signs in to the review console with a token made for this run.
const DEMO_REVIEWER: &str = "demo";

fn configs(
    args: &Args,
    host: &str,
    port: u16,
    dir: &Path,
    token: &str,
) -> anyhow::Result<(EdgeConfig, CloudConfig)> {
    let n = if args.camera_urls.is_empty() {
        args.cameras.max(1)
    } else {
        args.camera_urls.len() as u32
    };
    let per_camera = (args.frames > 0).then(|| args.frames.div_ceil(u64::from(n)));
    let limit = per_camera
        .map(|n| format!("frames = {n}"))
        .unwrap_or_default();
    let real: String = args
        .camera_urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            format!(
                "[[camera]]\nid = \"cam-{i}\"\n{}\nfps = {}\n{limit}\n",
                camera_source(url),
                args.fps
            )
        })
        .collect();
    let synthetic: String = (0..args.cameras.max(1))
        .map(|i| {
            format!(
                "[[camera]]\nid = \"cam-{i}\"\nkind = \"synthetic\"\nseed = {}\nfps = {}\ndefect_rate = {}\n{}\n",
                1000 + i,
                args.fps,
                args.defect_rate,
                per_camera.map(|n| format!("frames = {n}")).unwrap_or_default()
            )
        })
        .collect();
    let cameras = if real.is_empty() { synthetic } else { real };
    let edge = format!(
        "[edge]\nid = \"edge-demo\"\nsite = \"demo-plant\"\nline = \"line-1\"\n\
         [mqtt]\nhost = \"{host}\"\nport = {port}\n\
         [model]\nmanifest = {:?}\n\
         [decision]\ndeadline = \"500ms\"\naudit_rate = 0.01\n\
         [outbox]\npath = {:?}\n\
         [sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{cameras}",
        args.models.join("prescreen.toml"),
        dir.join("outbox.db"),
        dir.join("decisions.jsonl"),
    );
    let cloud = format!(
        "[mqtt]\nhost = \"{host}\"\nport = {port}\n[model]\nmanifest = {:?}\n[store]\nurl = \"sqlite://{}\"\n\
         [api]\nenabled = false\n[[api.reviewers]]\nname = \"{DEMO_REVIEWER}\"\ntoken = \"{token}\"\n\
         [console]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        args.models.join("full.toml"),
        dir.join("cloud.db").display(),
    );
    let edge: EdgeConfig = toml::from_str(&edge).context("demo edge config")?;
    let cloud: CloudConfig = toml::from_str(&cloud).context("demo cloud config")?;
    Ok((edge, cloud))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tierline_shared::telemetry::init_logging(
        "warn,tierline_edge=info,tierline_cloud=info,rumqttd=off",
    );
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let max_payload = tierline_shared::wire::DEFAULT_MAX_MESSAGE_BYTES;
    let mut _mosquitto = None;
    let (host, port, kind) = match &args.broker {
        Some(hp) => {
            let (h, p) = hp.rsplit_once(':').context("--broker must be host:port")?;
            (h.to_string(), p.parse().context("--broker port")?, "given")
        }
        None if !args.embedded_broker => match LocalMosquitto::start(max_payload)? {
            Some(m) => {
                let port = m.port();
                _mosquitto = Some(m);
                ("127.0.0.1".to_string(), port, "private Mosquitto")
            }
            None => {
                let b = EmbeddedBroker::start(max_payload)?;
                (
                    "127.0.0.1".to_string(),
                    b.port(),
                    "embedded; Mosquitto is not installed (scripts/setup installs it), so verdicts may wait \
                     tens of ms for Nagle's algorithm",
                )
            }
        },
        None => {
            let b = EmbeddedBroker::start(max_payload)?;
            ("127.0.0.1".to_string(), b.port(), "embedded")
        }
    };
    let token = tierline_cloud::console::session::random_token();
    let (edge_cfg, cloud_cfg) = configs(&args, &host, port, &dir, &token)?;
    eprintln!(
        "Tierline demo: broker {host}:{port} ({kind}), data in {}",
        dir.display()
    );

    let shutdown = CancellationToken::new();
    let cloud_stop = CancellationToken::new();
    let edge_stats = Arc::new(EdgeStats::default());
    let cloud_stats = Arc::new(CloudStats::default());
    let cloud_app = tierline_cloud::App::build(cloud_cfg.clone(), cloud_stats.clone())
        .await
        .context("cloud worker")?;
    let edge_app = tierline_edge::App::build(edge_cfg, edge_stats.clone())
        .await
        .context("edge")?;
    if let (Some(e), Some(c)) = (edge_app.admin_addr(), cloud_app.admin_addr()) {
        println!(
            "health and metrics: edge http://{e}/readyz  /metrics, cloud http://{c}/readyz  /metrics"
        );
    }
    if let Some(addr) = cloud_app.console_addr() {
        println!(
            "review console: http://{addr}/  sign in with the token {token} (reviewer {DEMO_REVIEWER}){}",
            if args.review {
                ""
            } else {
                "; pass --review to keep it open after the run"
            }
        );
    }
    let cloud = tokio::spawn(cloud_app.run(cloud_stop.clone()));
    let mut edge = tokio::spawn(edge_app.run(shutdown.clone()));

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut settled_at: Option<Instant> = None;
    let edge_result = loop {
        tokio::select! {
            r = &mut edge => break r,
            _ = tokio::signal::ctrl_c() => { eprintln!("\nCtrl-C: draining."); shutdown.cancel(); }
            _ = tick.tick() => {
                println!("{}", summary::line(started.elapsed(), &edge_stats, &cloud_stats));
                // With a frame limit: stop once every frame is decided and every forwarded frame has its verdict.
                let captured = get(&edge_stats.frames_captured);
                let done = args.frames > 0
                    && captured >= args.frames
                    && get(&edge_stats.decisions) + get(&edge_stats.frames_dropped) >= captured
                    && get(&edge_stats.verdicts) >= get(&edge_stats.frames_suspect) + get(&edge_stats.frames_audit);
                if done && settled_at.is_none() {
                    settled_at = Some(Instant::now());
                    shutdown.cancel();
                }
                if cloud.is_finished() {
                    eprintln!("cloud worker stopped unexpectedly");
                    shutdown.cancel();
                }
            }
        }
    };
    let elapsed = started.elapsed();
    if args.review && !cloud.is_finished() {
        println!(
            "{}",
            summary::line(started.elapsed(), &edge_stats, &cloud_stats)
        );
        eprintln!("Run done; the review console stays open. Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    cloud_stop.cancel();
    let cloud_result = cloud.await;
    let stored = match tierline_cloud::store::Store::open(&cloud_cfg.store.url, true).await {
        Ok(s) => s.verdict_count().await.unwrap_or(0),
        Err(_) => 0,
    };
    println!(
        "{}",
        summary::report(elapsed, &edge_stats, &cloud_stats, stored)
    );
    println!("decisions: {}", dir.join("decisions.jsonl").display());
    if args.data_dir.is_none() {
        println!("(temporary data directory removed; pass --data-dir to keep it)");
    }
    edge_result.context("edge task")??;
    cloud_result.context("cloud task")??;
    Ok(())
}
