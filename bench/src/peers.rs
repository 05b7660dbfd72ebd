//! Measurement 7: Tierline against the cascade a plant would write instead (`bench/peers/peer.py`), on the
//! same models, frames and machine, in one run:
//!
//! - **mqtt peer**: Pillow + onnxruntime + paho-mqtt, SQLite outbox (WAL, `synchronous=FULL`), one
//!   sequential loop per edge;
//! - **sedna peer**: KubeEdge Sedna's joint inference: a blocking HTTP POST per hard example.
//!
//! Figures: edge frames/s on one core (decode, resize, normalize, prescreen; one thread each), and suspect
//! decision latency (camera production time → decision, every frame a suspect, 10 frames/s, 500 ms deadline)
//! with Mosquitto on loopback; and a 10 s partition in the middle of a 30 s run (the broker stopped, or
//! for the Sedna peer its cloud server): frames decided late, suspects the cloud never judged, and the time
//! from healing until the edge's backlog is empty. The peers run in their own virtualenv (`target/peers/venv`), created here with
//! `pip` on first use; the tests never need it.

use crate::common::{Percentiles, histogram, write_frames};
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

/// One system through a 10 s partition in the middle of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionRow {
    /// `tierline`, `mqtt peer` or `sedna peer`.
    pub system: String,
    /// Frames the camera produced.
    pub frames: u64,
    /// Frames with a line decision.
    pub decided: u64,
    /// Suspects (frames the edge asked the cloud about).
    pub suspects: u64,
    /// Frames decided later than the deadline plus 200 ms of slack.
    pub late: u64,
    /// Suspects the cloud never judged (no stored verdict, or never sent again) by the end.
    pub never_judged: u64,
    /// Healing → the edge's backlog first empty, s (`None`: it never emptied, or nothing is kept).
    pub drain_s: Option<f64>,
    /// Healing → edge and cloud both connected again, s (Tierline only: its reconnect backoff).
    #[serde(default)]
    pub reconnect_s: Option<f64>,
}

/// Results of measurement 7.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerResults {
    /// Python and package versions of the peers.
    pub python: String,
    /// One row per system, Tierline first.
    pub rows: Vec<PeerRow>,
    /// The partition run, one row per system, Tierline first.
    #[serde(default)]
    pub partition: Vec<PartitionRow>,
}

/// Length of the partition run, when the cut starts and how long it lasts.
const RUN: Duration = Duration::from_secs(30);
const CUT_AT: Duration = Duration::from_secs(10);
const CUT: Duration = Duration::from_secs(10);
/// A decision later than the deadline plus this is late.
const SLACK_US: i64 = 200_000;

/// Rows in `table` of the SQLite database at `db` (`None` when it cannot be read).
async fn rows(db: &Path, table: &str) -> Option<u64> {
    let count = async {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db)
                .read_only(true),
        )
        .await?;
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok::<_, sqlx::Error>(n as u64)
    };
    count.await.ok()
}

/// Polls the outbox table `table` of `db` until it is empty (at most 120 s); returns the seconds it took.
async fn until_empty(db: &Path, table: &str) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if rows(db, table).await == Some(0) {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Late decisions in a peer's log, and (suspects, suspects decided by fallback).
fn peer_log(log: &Path, deadline_us: i64) -> anyhow::Result<(u64, u64, u64, u64)> {
    let (mut decided, mut late, mut suspects, mut fallbacks) = (0, 0, 0, 0);
    for line in std::fs::read_to_string(log)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        decided += 1;
        let took = v["decision_time_us"].as_i64().unwrap_or(0)
            - v["capture_time_us"].as_i64().unwrap_or(0);
        late += u64::from(took > deadline_us + SLACK_US);
        if v["suspect"] == true {
            suspects += 1;
            fallbacks += u64::from(v["source"] == "local-fallback");
        }
    }
    Ok((decided, late, suspects, fallbacks))
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
    // Seconds of waiting on a child process: keep the async workers (the cloud worker's tasks) free.
    let out = tokio::task::block_in_place(|| {
        Command::new(python)
            .arg(script())
            .args(args)
            .stderr(Stdio::inherit())
            .output()
    })
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
        tokio::task::block_in_place(|| {
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        })?;
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
    let python = tokio::task::block_in_place(venv)?;
    let version = Command::new(&python)
        .args([
            "-c",
            "import sys, onnxruntime, PIL, paho.mqtt; print(sys.version.split()[0], 'onnxruntime', onnxruntime.__version__, 'Pillow', PIL.__version__, 'paho-mqtt', paho.mqtt.__version__)",
        ])
        .output()?;
    let python_version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let dir = tempfile::tempdir()?;
    let mixed = write_frames(dir.path(), "mixed", 0.05)?;
    let suspects = write_frames(dir.path(), "suspects", 1.0)?;
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
    let cloud =
        crate::common::subscribed_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"))
            .await;
    let c = cloud.stats.clone();
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

    // A 10 s partition in the middle of a 30 s run, a quarter of the frames suspects.
    let quarter = write_frames(dir.path(), "quarter", 0.25)?;
    let mut partition = vec![tierline_partition(dir.path(), &quarter).await?];
    for kind in ["mqtt", "sedna"] {
        partition.push(
            peer_partition(
                &python,
                dir.path(),
                kind,
                &quarter,
                &prescreen,
                &full,
                threshold,
            )
            .await?,
        );
    }
    for p in &partition {
        eprintln!(
            "peers: partition: {}: {} frames, {} decided, {} late, {} suspects, {} never judged by the cloud, drained {}, reconnected {:?} s after healing",
            p.system,
            p.frames,
            p.decided,
            p.late,
            p.suspects,
            p.never_judged,
            p.drain_s
                .map_or("never".to_string(), |d| format!("{d:.1} s after healing")),
            p.reconnect_s
        );
    }
    Ok(PeerResults {
        python: python_version,
        rows,
        partition,
    })
}

/// Tierline through the partition: Mosquitto stopped for [`CUT`] after [`CUT_AT`] while the camera runs.
async fn tierline_partition(dir: &Path, frames_dir: &Path) -> anyhow::Result<PartitionRow> {
    let run_dir = dir.join("tierline-partition");
    std::fs::create_dir_all(&run_dir)?;
    let mut broker = Mosquitto::start(&run_dir);
    let cloud =
        crate::common::subscribed_cloud(pipeline::cloud_config(broker.port(), &run_dir, "w1"))
            .await;
    let c = cloud.stats.clone();
    let frames = RUN.as_secs() * 10;
    let cams = format!(
        "[[camera]]\nid = \"cam-0\"\nkind = \"files\"\npath = {:?}\nloop = true\nfps = 10\nframes = {frames}\n",
        frames_dir.display().to_string()
    );
    let edge = pipeline::start_edge(pipeline::edge_config(broker.port(), &run_dir, &cams, ""));
    let e = edge.stats.clone();
    tokio::time::sleep(CUT_AT).await;
    broker.stop();
    tokio::time::sleep(CUT).await;
    broker.restart();
    let healed = Instant::now();
    let outbox = run_dir.join("outbox.db");
    let drain = until_empty(&outbox, "outbox");
    let reconnect = async {
        while !(e.link_up.load(Ordering::Relaxed) && c.link_up.load(Ordering::Relaxed)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        healed.elapsed().as_secs_f64()
    };
    let (drain_s, reconnect_s) = tokio::join!(drain, reconnect);
    pipeline::wait_until(
        "every frame decided",
        Duration::from_secs(120),
        || get(&e.decisions) + get(&e.frames_dropped) >= frames,
        || pipeline::describe(&e, &c),
    )
    .await;
    until_empty(&run_dir.join("outbox.db"), "outbox").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    edge.stop().await?;
    cloud.stop().await?;
    let deadline_us = tierline_edge::config::DecisionConfig::default()
        .deadline
        .as_micros() as i64;
    let (mut decided, mut late) = (0, 0);
    for line in std::fs::read_to_string(run_dir.join("decisions.jsonl"))?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["event"] != "decision" {
            continue;
        }
        decided += 1;
        late += u64::from(v["latency_us"].as_i64().unwrap_or(0) > deadline_us + SLACK_US);
    }
    let suspects = get(&e.frames_suspect) + get(&e.frames_audit);
    let stored = rows(&run_dir.join("cloud.db"), "verdicts")
        .await
        .unwrap_or(0);
    Ok(PartitionRow {
        system: "tierline".into(),
        frames,
        decided,
        suspects,
        late,
        never_judged: suspects.saturating_sub(stored),
        drain_s,
        reconnect_s: Some(reconnect_s),
    })
}

/// A peer through the same partition: the broker (mqtt) or the cloud server (sedna) stopped for [`CUT`].
async fn peer_partition(
    python: &Path,
    dir: &Path,
    kind: &str,
    frames_dir: &Path,
    prescreen: &str,
    full: &str,
    threshold: f32,
) -> anyhow::Result<PartitionRow> {
    let s = |v: &str| v.to_string();
    let run_dir = dir.join(format!("{kind}-partition"));
    std::fs::create_dir_all(&run_dir)?;
    let mut broker = Mosquitto::start(&run_dir);
    let http_port = free_port()?;
    let cloud_db = run_dir.join("cloud.db");
    let cloud_args: Vec<String> = if kind == "mqtt" {
        vec![
            s("cloud-mqtt"),
            s("--port"),
            broker.port().to_string(),
            s("--model"),
            s(full),
            s("--db"),
            cloud_db.display().to_string(),
        ]
    } else {
        vec![
            s("cloud-http"),
            s("--port"),
            http_port.to_string(),
            s("--model"),
            s(full),
        ]
    };
    let mut server = Some(Server::start(python, &cloud_args)?);
    let outbox = run_dir.join("outbox.db");
    let log = run_dir.join("decisions.jsonl");
    let mut edge = Command::new(python)
        .arg(script())
        .args([
            s("edge"),
            s("--kind"),
            s(kind),
            s("--port"),
            if kind == "mqtt" {
                broker.port()
            } else {
                http_port
            }
            .to_string(),
            s("--frames"),
            frames_dir.display().to_string(),
            s("--model"),
            s(prescreen),
            s("--threshold"),
            format!("{threshold}"),
            s("--fps"),
            s("10"),
            s("--seconds"),
            RUN.as_secs().to_string(),
            s("--deadline-ms"),
            s("500"),
            s("--db"),
            outbox.display().to_string(),
            s("--log"),
            log.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the peer edge")?;
    tokio::time::sleep(CUT_AT).await;
    if kind == "mqtt" {
        broker.stop();
    } else {
        drop(server.take());
    }
    tokio::time::sleep(CUT).await;
    if kind == "mqtt" {
        broker.restart();
    } else {
        server = Some(Server::start(python, &cloud_args)?);
    }
    let drain_s = if kind == "mqtt" {
        until_empty(&outbox, "outbox").await
    } else {
        None
    };
    let edge_done = tokio::task::spawn_blocking(move || edge.wait()).await??;
    anyhow::ensure!(edge_done.success(), "the {kind} peer's edge failed");
    drop(server);
    let deadline_us = 500_000;
    let (decided, late, suspects, fallbacks) = peer_log(&log, deadline_us)?;
    let never_judged = if kind == "mqtt" {
        suspects.saturating_sub(rows(&cloud_db, "verdicts").await.unwrap_or(0))
    } else {
        // A hard example the cloud did not answer is never sent again.
        fallbacks
    };
    Ok(PartitionRow {
        system: format!("{kind} peer"),
        frames: RUN.as_secs() * 10,
        decided,
        suspects,
        late,
        never_judged,
        drain_s,
        reconnect_s: None,
    })
}
