//! A partition longer than the decision deadline: the broker is stopped while frames flow. Every suspect of
//! the cut must be decided locally within the deadline, every provisional decision reconciled after healing,
//! and every accepted frame judged exactly once. (Its own test binary, so its timing check does not share
//! the machine with other end-to-end tests.)

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tierline_edge::stats::get;
use tierline_tests::oracle::check_pipeline;
use tierline_tests::outage::{DEADLINE_MS, settle, start};
use tierline_tests::{Mosquitto, pipeline};

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
