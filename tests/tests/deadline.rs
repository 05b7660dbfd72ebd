//! The deadline runs from capture, whatever is stuck. While frames flow, the edge model stalls for 3 s
//! (every runner thread blocks, as a hung session would) and later an outside process holds an exclusive
//! lock on the outbox for 2 s. Every frame must still get its line decision by `capture + deadline`.
//!
//! Oracle, independent of the edge's own latency figures: the test tails the decision log every 5 ms and
//! stamps each line when it appears; a line's latency is that stamp minus the capture time it carries.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tierline_edge::EdgeStats;
use tierline_edge::stats::get;
use tierline_shared::runner::Fault;
use tierline_shared::time::now_us;
use tierline_tests::{Mosquitto, pipeline};
use tokio_util::sync::CancellationToken;

const FRAMES: u64 = 240;
const DEADLINE: Duration = Duration::from_secs(1);
/// Scheduling slack on a shared 2-core machine, plus the 5 ms polling of the log.
const SLACK: Duration = Duration::from_millis(300);

/// Lines seen in the decision log, with the wall-clock time each was first seen.
type Seen = Arc<Mutex<Vec<(Value, i64)>>>;

fn tail(path: PathBuf, seen: Seen, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut offset = 0usize;
        let mut partial = String::new();
        while !stop.is_cancelled() {
            if let Ok(bytes) = std::fs::read(&path) {
                let stamp = now_us();
                if bytes.len() > offset {
                    partial.push_str(&String::from_utf8_lossy(&bytes[offset..]));
                    offset = bytes.len();
                    while let Some(i) = partial.find('\n') {
                        let line: String = partial.drain(..=i).collect();
                        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                            seen.lock().unwrap().push((v, stamp));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_is_decided_by_its_deadline_while_the_model_and_the_disk_are_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let cfg = pipeline::edge_config(
        broker.port(),
        dir.path(),
        &pipeline::synthetic_cameras(1, FRAMES, 20.0, 0.3),
        &format!(
            "deadline = \"{}ms\"\naudit_rate = 0.05",
            DEADLINE.as_millis()
        ),
    );
    let outbox_path = cfg.outbox.path.clone();
    let threads = cfg.model.threads.get();
    let stats = Arc::new(EdgeStats::default());
    let app = tierline_edge::App::build(cfg, stats.clone()).await.unwrap();
    let model = app.model();
    let stop = CancellationToken::new();
    let edge = tokio::spawn(app.run(stop.clone()));

    let seen: Seen = Arc::default();
    let tail_stop = CancellationToken::new();
    let tailer = tail(
        dir.path().join("decisions.jsonl"),
        seen.clone(),
        tail_stop.clone(),
    );
    let e = stats.clone();
    pipeline::wait_until(
        "frames flow",
        Duration::from_secs(30),
        || get(&e.decisions) >= 30,
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;

    // The model stalls: every runner thread blocks for 3 s on its next batch.
    model
        .runner()
        .inject_fault(&vec![Fault::Stall(Duration::from_secs(3)); threads]);
    let stalled_at = get(&e.frames_captured);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // An outside process holds the outbox's write lock for 2 s.
    let mut lock = {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", outbox_path.display()))
            .await
            .unwrap()
    };
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let locked_at = get(&e.frames_captured);
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    drop(lock);
    let unlocked_at = get(&e.frames_captured);

    pipeline::wait_until(
        "every frame decided",
        Duration::from_secs(60),
        || {
            get(&e.frames_captured) == FRAMES
                && get(&e.decisions) + get(&e.frames_dropped) == FRAMES
        },
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    edge.await.unwrap().unwrap();
    tail_stop.cancel();
    tailer.join().unwrap();
    cloud.stop().await.unwrap();

    assert!(
        stalled_at < FRAMES && unlocked_at < FRAMES && locked_at > stalled_at,
        "both faults landed while frames flowed (stall at frame {stalled_at}, lock {locked_at}..{unlocked_at} of {FRAMES})"
    );
    let seen = seen.lock().unwrap();
    let mut per_seq: BTreeMap<u64, usize> = BTreeMap::new();
    let mut worst: Option<(i64, &Value)> = None;
    let mut before_score = 0;
    for (line, stamp) in seen.iter().filter(|(l, _)| l["event"] == "decision") {
        *per_seq.entry(line["seq"].as_u64().unwrap()).or_default() += 1;
        let latency = stamp - line["capture_time_us"].as_i64().unwrap();
        if worst.is_none_or(|(w, _)| latency > w) {
            worst = Some((latency, line));
        }
        if line["source"] == "unscored" {
            before_score += 1;
        }
    }
    let (worst_us, worst_line) = worst.unwrap();
    println!(
        "frames {FRAMES}, dropped {}, decisions {}, decided before the prescreen answered {before_score}, worst capture → line {:.1} ms: {worst_line}",
        get(&e.frames_dropped),
        per_seq.len(),
        worst_us as f64 / 1000.0
    );
    assert!(
        per_seq.values().all(|&n| n == 1),
        "a frame was decided twice"
    );
    assert_eq!(
        per_seq.len() as u64,
        FRAMES - get(&e.frames_dropped),
        "every frame taken has a decision line"
    );
    assert!(
        before_score > 0,
        "the stall must have held frames past their deadline (else the test shows nothing)"
    );
    assert!(
        worst_us <= (DEADLINE + SLACK).as_micros() as i64,
        "a decision line appeared {:.1} ms after capture (deadline {DEADLINE:?} + {SLACK:?} slack): {worst_line}",
        worst_us as f64 / 1000.0
    );
}
