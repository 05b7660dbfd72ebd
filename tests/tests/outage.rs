//! Outages on real parts: Mosquitto (persistence on) is stopped, killed and restarted while frames flow, and
//! a partition longer than the decision deadline cuts the edge off. Every frame must still be decided in
//! time (locally when needed), every provisional decision reconciled, and every accepted frame judged once.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;
use tierline_edge::stats::get;
use tierline_tests::oracle::check_pipeline;
use tierline_tests::process::{self, Rng};
use tierline_tests::{Mosquitto, pipeline};

const DEADLINE_MS: u64 = 300;

/// Waits until every frame is decided, every provisional decision reconciled and the outbox empty.
async fn settle(
    dir: &Path,
    edge: &pipeline::Running<tierline_edge::EdgeStats>,
    cloud: &pipeline::Running<tierline_cloud::CloudStats>,
    total: u64,
) {
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    let db = dir.join("outbox.db");
    let started = std::time::Instant::now();
    loop {
        let decided =
            get(&e.frames_captured) == total && get(&e.decisions) + get(&e.frames_dropped) == total;
        let reconciled = get(&e.reconciliations) >= get(&e.decisions_fallback);
        if decided && reconciled && process::outbox_seqs(&db).await.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "did not settle: {}",
            pipeline::describe(&e, &c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn start(
    dir: &Path,
    port: u16,
    frames: u64,
) -> (
    pipeline::Running<tierline_cloud::CloudStats>,
    pipeline::Running<tierline_edge::EdgeStats>,
) {
    let cloud = pipeline::start_cloud(pipeline::cloud_config(port, dir, "w1"));
    let edge = pipeline::start_edge(pipeline::edge_config(
        port,
        dir,
        &pipeline::synthetic_cameras(2, frames, 40.0, 0.3),
        &format!("deadline = \"{DEADLINE_MS}ms\"\naudit_rate = 0.05"),
    ));
    (cloud, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stops_and_kills_during_flow_lose_nothing() {
    let mut rng = Rng::from_env("broker restarts");
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let frames = 160;
    let (cloud, edge) = start(dir.path(), broker.port(), frames);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.range(400, 1200))).await;
        if round % 2 == 0 {
            broker.stop()
        } else {
            broker.kill()
        }
        tokio::time::sleep(Duration::from_millis(rng.range(200, 1000))).await;
        broker.restart();
    }
    settle(dir.path(), &edge, &cloud, 2 * frames).await;
    let stats = edge.stats.clone();
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    check_pipeline(dir.path(), "edge-t", &stats, 2 * frames).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_longer_than_the_deadline_decides_locally_then_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let frames = 160;
    let (cloud, edge) = start(dir.path(), broker.port(), frames);
    let e = edge.stats.clone();
    pipeline::wait_until(
        "first cloud decisions",
        Duration::from_secs(30),
        || get(&e.decisions_cloud) > 3,
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;
    broker.stop();
    let before = get(&e.frames_suspect);
    tokio::time::sleep(Duration::from_millis(10 * DEADLINE_MS)).await;
    let during = get(&e.frames_suspect) - before;
    broker.restart();
    settle(dir.path(), &edge, &cloud, 2 * frames).await;
    let stats = edge.stats.clone();
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    let (log, _) = check_pipeline(dir.path(), "edge-t", &stats, 2 * frames).await;
    assert!(during > 0, "suspects must arrive during the partition");
    let fallbacks: Vec<_> = log
        .decisions()
        .filter(|d| d["source"] == "local-fallback")
        .collect();
    assert!(
        fallbacks.len() as u64 >= during,
        "every suspect of the partition is decided locally"
    );
    // The deadline is the guarantee; allow scheduling slack on a loaded 2-core machine.
    let limit_us = (DEADLINE_MS + 200) * 1000;
    let late: Vec<_> = fallbacks
        .iter()
        .filter(|d| d["latency_us"].as_u64().unwrap() > limit_us)
        .collect();
    assert!(
        late.is_empty(),
        "local decisions later than the deadline: {late:?}"
    );
    eprintln!(
        "partition: {} suspects during the cut, {} local decisions, all within {} ms",
        during,
        fallbacks.len(),
        limit_us / 1000
    );
}
