//! Shared setup of the outage tests: an edge and a cloud under a short deadline, and a wait until the
//! pipeline has settled after faults.

use crate::{pipeline, process};
use std::path::Path;
use std::time::Duration;
use tierline_edge::stats::get;

/// The decision deadline used by the outage tests.
pub const DEADLINE_MS: u64 = 300;

/// Waits until every frame is decided, every provisional decision reconciled and the outbox empty.
pub async fn settle(
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

/// Starts a cloud worker and an edge with two synthetic cameras of `frames` frames each, deadline `DEADLINE_MS`.
pub fn start(
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
