//! End to end on real parts: a Mosquitto process (and the embedded broker), a cloud worker on SQLite with the
//! full ONNX model, and an edge with synthetic cameras and the prescreen model. The oracle checks that every
//! frame got exactly one line decision, every suspect exactly one stored verdict, and nothing was left behind.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;
use tierline_edge::outbox::Outbox;
use tierline_edge::stats::get;
use tierline_tests::Mosquitto;
use tierline_tests::oracle::{Decisions, Stored};
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
    check_oracle(dir, &edge_stats, total).await;
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

async fn check_oracle(dir: &Path, stats: &tierline_edge::EdgeStats, total: u64) {
    let log = Decisions::read(&dir.join("decisions.jsonl"));
    let stored = Stored::read(&dir.join("cloud.db")).await;
    let per_seq = log.per_seq();
    assert!(
        per_seq.values().all(|&n| n == 1),
        "a frame was decided twice"
    );
    assert_eq!(
        per_seq.len() as u64,
        total - get(&stats.frames_dropped),
        "every frame taken gets a decision"
    );
    // Provisional decisions must have been reconciled by the late verdict.
    let reconciled: std::collections::BTreeSet<u64> = log
        .of("reconciliation")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    for d in log.decisions().filter(|d| d["provisional"] == true) {
        assert!(
            reconciled.contains(&d["seq"].as_u64().unwrap()),
            "unreconciled provisional decision {d}"
        );
    }
    // Every suspect has exactly one stored verdict; every stored verdict is a frame the edge accepted.
    let forwarded = get(&stats.frames_suspect) + get(&stats.frames_audit);
    assert_eq!(
        stored.verdicts.len() as u64,
        forwarded,
        "one stored verdict per accepted frame"
    );
    assert!(stored.verdicts.values().all(|&n| n == 1));
    for seq in log.suspect_seqs() {
        assert!(
            stored.verdicts.contains_key(&("edge-t".to_string(), seq)),
            "suspect {seq} has no stored verdict"
        );
    }
    // The placeholder models are exact on synthetic surfaces: every defect is rejected, every good frame passed.
    for d in log.decisions() {
        match d["truth"].as_str() {
            Some("good") => assert_eq!(d["action"], "pass", "{d}"),
            Some(_) => assert_ne!(d["action"], "pass", "{d}"),
            None => {}
        }
    }
    assert!(
        get(&stats.frames_suspect) > 0,
        "the run must exercise suspects"
    );
    eprintln!(
        "oracle: {total} frames, {} suspects, {} audits, {} stored verdicts, {} duplicate deliveries",
        get(&stats.frames_suspect),
        get(&stats.frames_audit),
        stored.verdicts.len(),
        stored.duplicate_deliveries()
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
