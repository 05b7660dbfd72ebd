//! Measurement 7: Tierline against the cascade a plant would write instead (`bench/peers/peer.py`), on the
//! same models, frames and machine, in one run:
//!
//! - **mqtt peer**: Pillow + onnxruntime + paho-mqtt, SQLite outbox (WAL, `synchronous=FULL`), one
//!   sequential loop per edge;
//! - **sedna peer**: KubeEdge Sedna's joint inference: a blocking HTTP POST per hard example.
//!
//! Figures: edge frames/s on one core (decode, resize, normalize, prescreen; one thread each), and suspect
//! decision latency (camera production time → decision, every frame a suspect, 10 frames/s, 500 ms deadline)
//! with Mosquitto on loopback. The peers run in their own virtualenv (`target/peers/venv`), created here with
//! `pip` on first use; the tests never need it.

use crate::common::{Percentiles, histogram, jpeg_frames};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tierline_edge::stats::get;
use tierline_tests::{Mosquitto, pipeline};

/// One system's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRow {
    /// `tierline`, `mqtt peer` or `sedna peer`.
    pub system: String,
    /// Edge frames/s on one core (720p JPEG, 5 % defects).
    pub edge_fps: f64,
    /// Suspect decision latency.
    pub latency: Percentiles,
    /// Suspects decided by local fallback (verdict later than the deadline).
    pub fallbacks: u64,
}

/// Results of measurement 7.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerResults {
    /// Python and package versions of the peers.
    pub python: String,
    /// One row per system, Tierline first.
    pub rows: Vec<PeerRow>,
}

/// The repository's `bench/peers` directory.
fn peers_dir() -> PathBuf {
    crate::repo_root().join("bench").join("peers")
}

/// Creates the peers' virtualenv if needed; returns its python.
fn venv() -> anyhow::Result<PathBuf> {
    let dir = crate::repo_root().join("target").join("peers").join("venv");
    let python = dir.join("bin").join("python");
    let stamp = dir.join("installed");
    if !stamp.is_file() {
        eprintln!("peers: creating {} (pip, once)", dir.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .context("running python3 -m venv")?;
        anyhow::ensure!(
            ok.success(),
            "python3 -m venv failed (Debian: apt-get install python3-venv)"
        );
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(peers_dir().join("requirements.txt"))
            .status()
            .context("running pip")?;
        anyhow::ensure!(
            ok.success(),
            "pip could not install bench/peers/requirements.txt"
        );
        std::fs::write(&stamp, "")?;
    }
    Ok(python)
}

fn script() -> PathBuf {
    peers_dir().join("peer.py")
}

/// Runs a peer command to its end; returns the JSON object on its last line.
fn run_json(python: &Path, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(script())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running peer.py {}", args.join(" ")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    if !out.status.success() {
        bail!("peer.py {} failed: {text}", args.join(" "));
    }
    serde_json::from_str(last).with_context(|| format!("peer.py printed {last:?}"))
}

/// A peer server process, killed on drop.
struct Server(Child);

impl Server {
    fn start(python: &Path, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(python)
            .arg(script())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a peer server")?;
        // It prints {"ready": true} once listening or connected.
        let stdout = child.stdout.take().context("peer stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        anyhow::ensure!(
            line.contains("ready"),
            "peer server did not start: {line:?}"
        );
        Ok(Self(child))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Suspect latencies from a peer's decision log (decision time − production time).
fn peer_latency(log: &Path) -> anyhow::Result<(Percentiles, u64)> {
    let mut h = histogram();
    let mut fallbacks = 0;
    for line in std::fs::read_to_string(log)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["suspect"] != true {
            continue;
        }
        let us = v["decision_time_us"].as_i64().unwrap_or(0)
            - v["capture_time_us"].as_i64().unwrap_or(0);
        h.saturating_record(us.max(1) as u64);
        fallbacks += u64::from(v["source"] == "local-fallback");
    }
    Ok((Percentiles::from_us(&h), fallbacks))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs measurement 7. `tierline_edge_fps` is Tierline's pipeline on one thread (section 1), measured in
/// the same run.
pub async fn run(seconds: f64, tierline_edge_fps: f64) -> anyhow::Result<PeerResults> {
    let python = venv()?;
    let version = Command::new(&python)
        .args([
            "-c",
            "import sys, onnxruntime, PIL, paho.mqtt; print(sys.version.split()[0], 'onnxruntime', onnxruntime.__version__, 'Pillow', PIL.__version__, 'paho-mqtt', paho.mqtt.__version__)",
        ])
        .output()?;
    let python_version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let dir = tempfile::tempdir()?;
    let write = |name: &str, rate: f64| -> anyhow::Result<PathBuf> {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        for (i, j) in jpeg_frames(16, 1280, 720, rate)?.iter().enumerate() {
            std::fs::write(d.join(format!("frame-{i:02}.jpg")), j)?;
        }
        Ok(d)
    };
    let mixed = write("mixed", 0.05)?;
    let suspects = write("suspects", 1.0)?;
    let models = pipeline::models_dir();
    let prescreen = models.join("prescreen-1.1.0.onnx").display().to_string();
    let full = models.join("full-1.0.0.onnx").display().to_string();
    let threshold = tierline_shared::manifest::Manifest::load(&models.join("prescreen.toml"))?
        .output
        .threshold;
    let s = |v: &str| v.to_string();

    // Edge frames/s on one core.
    let peer_fps = run_json(
        &python,
        &[
            s("throughput"),
            s("--frames"),
            mixed.display().to_string(),
            s("--model"),
            prescreen.clone(),
            s("--seconds"),
            format!("{}", seconds.min(10.0)),
        ],
    )?["frames_per_s"]
        .as_f64()
        .unwrap_or(0.0);
    eprintln!(
        "peers: edge frames/s on one core: Tierline {tierline_edge_fps:.0}, Python peer {peer_fps:.0}"
    );

    // Tierline's suspect latency, measured here with the same frames and rate as the peers.
    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let c = cloud.stats.clone();
    pipeline::wait_until(
        "cloud subscribed",
        Duration::from_secs(60),
        || c.link_up.load(Ordering::Relaxed),
        String::new,
    )
    .await;
    let frames = (seconds * 10.0) as u64;
    let cams = format!(
        "[[camera]]\nid = \"cam-0\"\nkind = \"files\"\npath = {:?}\nloop = true\nfps = 10\nframes = {frames}\n",
        suspects.display().to_string()
    );
    let run_dir = dir.path().join("tierline");
    std::fs::create_dir_all(&run_dir)?;
    let edge = pipeline::start_edge(pipeline::edge_config(broker.port(), &run_dir, &cams, ""));
    let e = edge.stats.clone();
    pipeline::wait_until(
        "every frame decided",
        Duration::from_secs_f64(seconds * 3.0 + 60.0),
        || get(&e.decisions) + get(&e.frames_dropped) >= frames,
        || pipeline::describe(&e, &c),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    edge.stop().await?;
    cloud.stop().await?;
    let tierline_latency = match e.decision_latency_us.lock() {
        Ok(h) => Percentiles::from_us(&h),
        Err(_) => bail!("latency histogram poisoned"),
    };
    let mut rows = vec![PeerRow {
        system: "tierline".into(),
        edge_fps: tierline_edge_fps,
        latency: tierline_latency,
        fallbacks: get(&e.decisions_fallback),
    }];

    for kind in ["mqtt", "sedna"] {
        let (port, server) = if kind == "mqtt" {
            let db = dir.path().join("peer-cloud.db").display().to_string();
            let server = Server::start(
                &python,
                &[
                    s("cloud-mqtt"),
                    s("--port"),
                    broker.port().to_string(),
                    s("--model"),
                    full.clone(),
                    s("--db"),
                    db,
                ],
            )?;
            (broker.port(), server)
        } else {
            let port = free_port()?;
            let server = Server::start(
                &python,
                &[
                    s("cloud-http"),
                    s("--port"),
                    port.to_string(),
                    s("--model"),
                    full.clone(),
                ],
            )?;
            (port, server)
        };
        let log = dir.path().join(format!("{kind}.jsonl"));
        let started = Instant::now();
        run_json(
            &python,
            &[
                s("edge"),
                s("--kind"),
                s(kind),
                s("--port"),
                port.to_string(),
                s("--frames"),
                suspects.display().to_string(),
                s("--model"),
                prescreen.clone(),
                s("--threshold"),
                format!("{threshold}"),
                s("--fps"),
                s("10"),
                s("--seconds"),
                format!("{seconds}"),
                s("--deadline-ms"),
                s("500"),
                s("--db"),
                dir.path()
                    .join(format!("{kind}-outbox.db"))
                    .display()
                    .to_string(),
                s("--log"),
                log.display().to_string(),
            ],
        )?;
        drop(server);
        let (latency, fallbacks) = peer_latency(&log)?;
        eprintln!(
            "peers: {kind} peer: p50 {:.2} ms, p99 {:.2} ms over {} suspects ({fallbacks} fallbacks) in {:.0} s",
            latency.p50_ms,
            latency.p99_ms,
            latency.count,
            started.elapsed().as_secs_f64()
        );
        rows.push(PeerRow {
            system: format!("{kind} peer"),
            edge_fps: peer_fps,
            latency,
            fallbacks,
        });
    }
    drop(broker);
    Ok(PeerResults {
        python: python_version,
        rows,
    })
}
