//! Measurements 4 and 6: partition recovery, edge restart with a queued backlog, and edge memory.
//!
//! A real Mosquitto (own process, free port) and a cloud worker (in this process, shipped defaults) serve
//! an edge that runs as its own process (this binary's `edge-process` mode, which runs the edge exactly as
//! `tierline-edge` does), so its RSS is its own. The edge has a live camera (720p JPEG files at 30 frames/s)
//! in every phase. Queued records are small real frames (160×120 JPEG, about 6 KB) with their local
//! decision already recorded, as after a long outage.
//!
//! - **memory, empty outbox**: the edge's peak RSS over its first seconds with live traffic;
//! - **restart with N queued** (N = 100,000): time from process start to the first frame published (seen by
//!   a subscriber), which includes loading ONNX Runtime, the checksum and golden-sample check and opening
//!   the outbox; RSS at that moment and its peak while the backlog drains;
//! - **drain**: a backlog of M frames queued, live traffic flowing: time from the first publish until the
//!   last backlog record has its verdict and left the outbox; live suspects decided meanwhile.

use crate::machine::rss_kib;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use tierline_edge::config::OutboxConfig;
use tierline_edge::outbox::{Outbox, Record};
use tierline_shared::wire::{ForwardReason, ImageEncoding};
use tierline_tests::{Mosquitto, pipeline};

/// Results of measurement 4.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryResults {
    /// Size of a queued frame, bytes.
    pub frame_bytes: usize,
    /// Frames queued for the restart.
    pub restart_queued: u64,
    /// Outbox database size with them, bytes.
    pub restart_db_bytes: u64,
    /// Process start → first frame published, ms.
    pub restart_first_publish_ms: f64,
    /// Backlog frames for the drain.
    pub drain_queued: u64,
    /// Whether the backlog drained within the time limit.
    pub drain_complete: bool,
    /// First publish → last backlog frame acknowledged (or the time limit), s.
    pub drain_seconds: f64,
    /// Backlog frames acknowledged per second.
    pub drain_fps: f64,
    /// Live frames captured during the drain.
    pub live_frames: u64,
    /// Live suspects decided from cloud verdicts during the drain.
    pub live_suspects_cloud: u64,
    /// Live suspects decided by local fallback during the drain (verdict later than the deadline).
    pub live_suspects_fallback: u64,
    /// Backlog left over the drain: (seconds since the first publish, frames left), every 100 ms.
    #[serde(default)]
    pub drain_curve: Vec<[f64; 2]>,
}

/// Results of measurement 6.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryResults {
    /// Peak edge RSS with an empty outbox, MiB.
    pub empty_rss_mib: f64,
    /// Frames queued for the second figure.
    pub queued: u64,
    /// Edge RSS at its first publish with them queued, MiB.
    pub queued_rss_at_start_mib: f64,
    /// Peak edge RSS while they drain, MiB.
    pub queued_rss_peak_mib: f64,
}

/// Sizes of a run.
pub struct Sizes {
    /// Frames queued for the restart and memory figures.
    pub restart_queued: u64,
    /// Frames queued for the drain.
    pub drain_queued: u64,
    /// Seconds RSS is watched.
    pub watch: Duration,
    /// Longest the drain may take.
    pub drain_limit: Duration,
}

/// Fills a fresh outbox at `db` with `n` copies of `image`, each already decided locally.
async fn fill(db: &Path, n: u64, image: &[u8], edge_id: &str) -> anyhow::Result<()> {
    let outbox = Outbox::open(&OutboxConfig {
        path: db.to_path_buf(),
        max_bytes: tierline_shared::config::ByteSize(u64::MAX / 2),
        ..OutboxConfig::default()
    })
    .await?;
    let mut seqs = outbox.reserve_seqs().await?;
    let mut batch = Vec::with_capacity(1000);
    let mut decided = Vec::with_capacity(1000);
    for i in 0..n {
        let seq = match seqs.next() {
            Some(s) => s,
            None => {
                seqs = outbox.reserve_seqs().await?;
                seqs.next().unwrap_or_default()
            }
        };
        batch.push(Record {
            seq,
            frame_id: tierline_shared::wire::frame_id(edge_id, seq),
            camera_id: "cam-0".into(),
            capture_time_us: tierline_shared::time::now_us(),
            reason: ForwardReason::Suspect,
            score: 0.9,
            encoding: ImageEncoding::Jpeg as i32,
            image: image.to_vec(),
            attempts: 0,
            local_action: Some(tierline_shared::action::Action::Reject),
            image_sha256: tierline_shared::wire::image_sha256(image),
            provenance: Default::default(),
            edge_label: String::new(),
        });
        decided.push(seq);
        if batch.len() == 1000 || i + 1 == n {
            outbox.append(&batch).await?;
            let d: Vec<(u64, tierline_shared::action::Action)> = decided
                .iter()
                .map(|&s| (s, tierline_shared::action::Action::Reject))
                .collect();
            outbox.record_local(&d).await?;
            batch.clear();
            decided.clear();
        }
    }
    outbox.close().await;
    Ok(())
}

struct Edge {
    child: Child,
    started: Instant,
}

impl Edge {
    fn spawn(dir: &Path, name: &str, port: u16, frames: &Path, db: &Path) -> anyhow::Result<Self> {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[edge]\nid = \"{name}\"\nsite = \"plant\"\nline = \"l1\"\n[mqtt]\nport = {port}\n[model]\nmanifest = {:?}\n\
                 [outbox]\npath = {:?}\nmax_bytes = \"100 GiB\"\nmax_in_flight = 512\n[sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [[camera]]\nid = \"cam-0\"\nkind = \"files\"\npath = {:?}\nloop = true\nfps = 30\n",
                pipeline::models_dir().join("prescreen.toml"),
                db,
                dir.join(format!("{name}.jsonl")),
                frames.display().to_string(),
            ),
        )?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let started = Instant::now();
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("edge-process")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn,tierline_edge=info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the edge process")?;
        Ok(Self { child, started })
    }

    fn rss_mib(&self) -> f64 {
        rss_kib(self.child.id()) as f64 / 1024.0
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Subscribes to every frame topic; each publish seen is sent on the returned channel.
async fn watch_frames(port: u16) -> anyhow::Result<tokio::sync::mpsc::Receiver<Instant>> {
    let mqtt = tierline_shared::mqtt::MqttConfig {
        port,
        ..Default::default()
    };
    let (watcher, mut events) =
        tierline_shared::mqtt::client(mqtt.options(&format!("watcher-{port}"))?, 16);
    watcher
        .subscribe(
            "tierline/v1/+/+/+/frames",
            tierline_shared::mqtt::QoS::AtMostOnce,
        )
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let _keep = watcher;
        while let Ok(ev) = events.poll().await {
            if let tierline_shared::mqtt::Event::Incoming(tierline_shared::mqtt::Packet::Publish(
                _,
            )) = ev
            {
                let _ = tx.try_send(Instant::now());
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(rx)
}

async fn first_publish(
    rx: &mut tokio::sync::mpsc::Receiver<Instant>,
    edge: &Edge,
    log: &Path,
) -> anyhow::Result<Instant> {
    while rx.try_recv().is_ok() {}
    let first = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await;
    match first {
        Ok(Some(at)) if at > edge.started => Ok(at),
        _ => anyhow::bail!(
            "the edge published no frame within 120 s; its log {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

async fn backlog_left(pool: &sqlx::SqlitePool, below: u64) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE seq < ?")
        .bind(below as i64)
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

/// Counts live suspect decisions (seq ≥ `from_seq`) in an edge decision log, by source.
fn live_decisions(log: &Path, from_seq: u64) -> (u64, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut cloud, mut fallback) = (0, 0);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] != "decision" || v["seq"].as_u64().is_none_or(|s| s < from_seq) {
            continue;
        }
        match v["source"].as_str() {
            Some("cloud") => cloud += 1,
            Some("local-fallback") => fallback += 1,
            _ => {}
        }
    }
    (cloud, fallback)
}

/// Waits until the cloud worker has received no frame for one second (at most two minutes).
async fn quiesce(stats: &tierline_cloud::CloudStats) {
    let until = Instant::now() + Duration::from_secs(120);
    let mut last = tierline_cloud::stats::get(&stats.frames_received);
    let mut still_since = Instant::now();
    while Instant::now() < until && still_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = tierline_cloud::stats::get(&stats.frames_received);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
}

/// Runs measurements 4 and 6.
pub async fn run(sizes: Sizes) -> anyhow::Result<(RecoveryResults, MemoryResults)> {
    let dir = tempfile::tempdir()?;
    let frames = dir.path().join("live");
    std::fs::create_dir_all(&frames)?;
    for (i, j) in crate::common::jpeg_frames(8, 1280, 720, 0.05)?
        .iter()
        .enumerate()
    {
        std::fs::write(frames.join(format!("frame-{i:02}.jpg")), j)?;
    }
    let image = tierline_edge::synth::render(3, 1, 160, 120, 1.0).to_jpeg(90)?;

    let broker = Mosquitto::start(dir.path());
    let mut cloud_cfg = pipeline::cloud_config(broker.port(), dir.path(), "w1");
    // One worker sized for this machine: an inference thread per core.
    cloud_cfg.model.threads =
        std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN);
    let cloud = crate::common::subscribed_cloud(cloud_cfg).await;
    let mut published = watch_frames(broker.port()).await?;

    // Memory with an empty outbox.
    eprintln!("memory: edge with an empty outbox");
    let edge = Edge::spawn(
        dir.path(),
        "edge-empty",
        broker.port(),
        &frames,
        &dir.path().join("empty.db"),
    )?;
    let mut empty_rss = 0f64;
    let until = Instant::now() + sizes.watch;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        empty_rss = empty_rss.max(edge.rss_mib());
    }
    edge.stop();

    // Restart with a large backlog.
    let n = sizes.restart_queued;
    eprintln!("recovery: filling an outbox with {n} frames");
    let db = dir.path().join("restart.db");
    fill(&db, n, &image, "edge-restart").await?;
    let restart_db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let edge = Edge::spawn(dir.path(), "edge-restart", broker.port(), &frames, &db)?;
    let first = first_publish(&mut published, &edge, &dir.path().join("edge-restart.log")).await?;
    let restart_ms = first.duration_since(edge.started).as_secs_f64() * 1000.0;
    let rss_at_start = edge.rss_mib();
    let mut rss_peak = rss_at_start;
    let until = Instant::now() + sizes.watch;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_peak = rss_peak.max(edge.rss_mib());
    }
    edge.stop();
    eprintln!(
        "recovery: restart with {n} queued: first publish after {restart_ms:.0} ms, RSS {rss_at_start:.1} MiB, peak {rss_peak:.1} MiB"
    );

    // The restart phase left frames queued at the broker for the cloud worker: let it finish them, so the
    // drain below measures its own backlog only.
    quiesce(&cloud.stats).await;

    // Drain with live traffic.
    let m = sizes.drain_queued;
    eprintln!("recovery: draining {m} queued frames with live traffic");
    let db = dir.path().join("drain.db");
    fill(&db, m, &image, "edge-drain").await?;
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true),
    )
    .await?;
    let edge = Edge::spawn(dir.path(), "edge-drain", broker.port(), &frames, &db)?;
    let first = first_publish(&mut published, &edge, &dir.path().join("edge-drain.log")).await?;
    let limit = first + sizes.drain_limit;
    let mut left = m;
    let mut drain_curve = vec![[0.0, m as f64]];
    while Instant::now() < limit {
        left = backlog_left(&pool, m).await?;
        drain_curve.push([first.elapsed().as_secs_f64(), left as f64]);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_seconds = first.elapsed().as_secs_f64();
    // Give live suspects captured during the drain their verdict or deadline before counting them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    edge.stop();
    pool.close().await;
    let drained = m - left;
    let (live_cloud, live_fallback) = live_decisions(&dir.path().join("edge-drain.jsonl"), m);
    let live_frames = std::fs::read_to_string(dir.path().join("edge-drain.jsonl"))
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"event\":\"decision\""))
                .count() as u64
        })
        .unwrap_or(0);
    eprintln!(
        "recovery: drained {drained}/{m} in {drain_seconds:.1} s ({:.0} frames/s); live suspects {live_cloud} by cloud, {live_fallback} by fallback",
        drained as f64 / drain_seconds
    );
    cloud.stop().await?;
    drop(broker);

    Ok((
        RecoveryResults {
            frame_bytes: image.len(),
            restart_queued: n,
            restart_db_bytes,
            restart_first_publish_ms: restart_ms,
            drain_queued: m,
            drain_complete: left == 0,
            drain_seconds,
            drain_fps: drained as f64 / drain_seconds,
            live_frames,
            live_suspects_cloud: live_cloud,
            live_suspects_fallback: live_fallback,
            drain_curve,
        },
        MemoryResults {
            empty_rss_mib: empty_rss,
            queued: n,
            queued_rss_at_start_mib: rss_at_start,
            queued_rss_peak_mib: rss_peak,
        },
    ))
}

/// Runs the edge in this process exactly as the `tierline-edge` binary does.
pub async fn edge_process(config: PathBuf) -> std::process::ExitCode {
    tierline_shared::telemetry::init_logging("info");
    tierline_shared::service::main(
        "tierline-edge",
        tierline_edge::EdgeConfig::load(Some(&config)),
        false,
        |_| async { Ok::<_, String>(String::new()) },
        |config, shutdown| {
            tierline_edge::run(
                config,
                std::sync::Arc::new(tierline_edge::EdgeStats::default()),
                shutdown,
            )
        },
    )
    .await
}
