//! Backlog recovery measurement: an edge restarted with N frames queued (default 100,000).
//!
//! Fills an outbox with N records of small real JPEG frames, starts Mosquitto, a cloud worker and the
//! `tierline-edge` binary on that outbox (no live camera frames), and measures: time from process start to
//! the first frame published (seen by a subscriber), edge RSS, and the drain rate (verdicts stored per
//! second) over the first `--seconds`. Writes JSON to `docs/benchmarks/recovery.json` and prints it.
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p tierline-tests --example recovery -- [frames] [seconds]
//! ```

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use tierline_edge::config::OutboxConfig;
use tierline_edge::outbox::{Outbox, Record};
use tierline_shared::wire::ForwardReason;
use tierline_tests::{Mosquitto, pipeline, process};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");

    // A small real frame (160x120 synthetic surface with a defect) so the cloud model really runs.
    let frame = tierline_edge::synth::render(3, 1, 160, 120, 1.0)
        .to_jpeg(90)
        .unwrap();
    let fill_started = Instant::now();
    let outbox = Outbox::open(&OutboxConfig {
        path: db.clone(),
        max_bytes: tierline_shared::config::ByteSize(u64::MAX / 2),
        ..OutboxConfig::default()
    })
    .await
    .unwrap();
    let mut seq_block = outbox.reserve_seqs().await.unwrap();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let seq = match seq_block.next() {
            Some(s) => s,
            None => {
                seq_block = outbox.reserve_seqs().await.unwrap();
                seq_block.next().unwrap()
            }
        };
        batch.push(Record {
            seq,
            frame_id: tierline_shared::wire::frame_id("edge-r", seq),
            camera_id: "cam-0".into(),
            capture_time_us: tierline_shared::time::now_us(),
            reason: ForwardReason::Suspect,
            score: 0.9,
            encoding: tierline_shared::wire::ImageEncoding::Jpeg as i32,
            image: frame.clone(),
            attempts: 0,
            local_action: Some("reject".into()),
        });
        if batch.len() == 1000 || i + 1 == n {
            outbox.append(&batch).await.unwrap();
            batch.clear();
        }
    }
    // As after a long outage: every queued suspect was already decided locally at its deadline.
    let seqs: Vec<(u64, &str)> = (0..n).map(|s| (s, "reject")).collect();
    for chunk in seqs.chunks(10_000) {
        outbox.record_local(chunk).await.unwrap();
    }
    outbox.close().await;
    let fill_s = fill_started.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "filled {n} records ({} bytes each, db {db_bytes} bytes) in {fill_s:.1} s",
        frame.len()
    );

    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let c = cloud.stats.clone();
    pipeline::wait_until(
        "cloud subscribed",
        Duration::from_secs(30),
        || c.link_up.load(std::sync::atomic::Ordering::Relaxed),
        String::new,
    )
    .await;

    // A plain subscriber timestamps the first published frame.
    let mqtt = tierline_shared::mqtt::MqttConfig {
        port: broker.port(),
        ..Default::default()
    };
    let (watcher, mut events) = tierline_shared::mqtt::client(mqtt.options("watcher").unwrap(), 16);
    watcher
        .subscribe("tierline/v1/+/+/+/frames", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Instant>();
    tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        while let Ok(ev) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = ev
                && let Some(tx) = first_tx.take()
            {
                let _ = tx.send(Instant::now());
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[edge]\nid = \"edge-r\"\nsite = \"plant\"\nline = \"l1\"\n[mqtt]\nport = {}\n[model]\nmanifest = {:?}\n\
             [outbox]\npath = {:?}\nmax_bytes = \"100 GiB\"\nmax_in_flight = 512\n[sink]\nkind = \"null\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[camera]]\nid = \"cam-0\"\nkind = \"synthetic\"\nframes = 0\n",
            broker.port(),
            pipeline::models_dir().join("prescreen.toml"),
            db
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut edge = process::spawn_edge(&config, &dir.path().join("edge.log"));
    let first = tokio::time::timeout(Duration::from_secs(60), first_rx)
        .await
        .expect("no frame published within 60 s")
        .unwrap();
    let first_publish_ms = first.duration_since(started).as_secs_f64() * 1000.0;
    let rss_at_first = rss_kib(edge.id());
    let stored_before = tierline_edge::stats::get(&c.verdicts_stored);
    let window = Instant::now();
    let mut rss_max = rss_at_first;
    while window.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss_max = rss_max.max(rss_kib(edge.id()));
    }
    let drained = tierline_edge::stats::get(&c.verdicts_stored) - stored_before;
    let drain_per_s = drained as f64 / window.elapsed().as_secs_f64();
    process::terminate(&mut edge);
    cloud.stop().await.unwrap();
    eprintln!(
        "process started at {:?} after the first timestamp below; edge log:",
        started.elapsed()
    );
    for line in std::fs::read_to_string(dir.path().join("edge.log"))
        .unwrap_or_default()
        .lines()
        .take(6)
    {
        eprintln!("  {line}");
    }

    let result = serde_json::json!({
        "benchmark": "edge restart with a queued backlog",
        "machine": "2 vCPU, 24 GiB (the CI machine kind)",
        "frames_queued": n,
        "frame_bytes": frame.len(),
        "outbox_db_bytes": db_bytes,
        "fill_seconds": fill_s,
        "first_publish_ms_after_process_start": first_publish_ms,
        "edge_rss_kib_at_first_publish": rss_at_first,
        "edge_rss_kib_max_during_drain": rss_max,
        "drain_window_seconds": seconds,
        "verdicts_stored_in_window": drained,
        "drain_frames_per_second": drain_per_s,
        "note": "first publish includes loading ONNX Runtime, the checksum and golden-sample check of the prescreen model, and opening the outbox; drain is bounded by the single cloud worker's full-model throughput",
    });
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks/recovery.json");
    std::fs::write(out, text + "\n").unwrap();
}
