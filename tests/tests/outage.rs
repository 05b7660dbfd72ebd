//! Broker outages on real parts: Mosquitto (persistence on) is stopped and killed, and restarted, while frames
//! flow. Every frame must still be decided (locally when needed), every provisional decision reconciled, and
//! every accepted frame judged once. The partition test is in `partition.rs`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tierline_tests::Mosquitto;
use tierline_tests::oracle::check_pipeline;
use tierline_tests::process::Rng;

use tierline_tests::outage::{settle, start};

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
