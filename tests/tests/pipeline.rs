//! End to end on real parts: a Mosquitto process (and the embedded broker), a cloud worker on SQLite with the
//! full ONNX model, and an edge with synthetic cameras and the prescreen model. The oracle checks that every
//! frame got exactly one line decision, every suspect exactly one stored verdict, and nothing was left behind.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;
use tierline_edge::outbox::Outbox;
use tierline_edge::stats::get;
use tierline_tests::Mosquitto;
use tierline_tests::pipeline;

const CAMERAS: u32 = 2;
const FRAMES_PER_CAMERA: u64 = 60;

async fn run_pipeline(port: u16, dir: &Path) {
    let cloud = pipeline::start_cloud(pipeline::cloud_config(port, dir, "w1"));
    let edge_cfg = pipeline::edge_config(
        port,
        dir,
        &pipeline::synthetic_cameras(CAMERAS, FRAMES_PER_CAMERA, 40.0, 0.3),
        "deadline = \"5s\"\naudit_rate = 0.1",
    );
    let outbox_cfg = edge_cfg.outbox.clone();
    let edge = pipeline::start_edge(edge_cfg);
    let total = u64::from(CAMERAS) * FRAMES_PER_CAMERA;
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    pipeline::wait_until(
        "every frame decided and every forwarded frame judged",
        Duration::from_secs(120),
        || {
            let forwarded = get(&e.frames_suspect) + get(&e.frames_audit);
            get(&e.frames_captured) == total
                && get(&e.decisions) + get(&e.frames_dropped) == total
                && get(&c.verdicts_stored) >= forwarded
                && get(&e.verdicts) >= forwarded
        },
        || pipeline::describe(&e, &c),
    )
    .await;
    let edge_stats = edge.stats.clone();
    edge.stop().await.expect("edge stops cleanly");
    cloud.stop().await.expect("cloud stops cleanly");
    tierline_tests::oracle::check_pipeline(dir, "edge-t", &edge_stats, total).await;
    let backlog = Outbox::open(&outbox_cfg)
        .await
        .unwrap()
        .backlog()
        .await
        .unwrap();
    assert_eq!(
        backlog.frames, 0,
        "every acknowledged frame left the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suspect_gets_one_verdict_through_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    run_pipeline(broker.port(), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suspect_gets_one_verdict_through_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = tierline_demo::broker::EmbeddedBroker::start(
        tierline_shared::wire::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .unwrap();
    run_pipeline(broker.port(), dir.path()).await;
}
