//! Bad input gets a clear error that names the thing, and loses nothing else. (The binaries' own checks of
//! configuration and model files are in `edge/tests/cli.rs` and `cloud/tests/cli.rs`.)

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tierline_edge::stats::get;
use tierline_shared::wire::{self, FrameEnvelope};
use tierline_tests::oracle::{Decisions, Stored};
use tierline_tests::{Mosquitto, pipeline};

fn models() -> std::path::PathBuf {
    pipeline::models_dir()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_image_files_are_rejected_by_name_and_the_rest_flow() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let samples = models().join("samples");
    let mut good = 0;
    for entry in std::fs::read_dir(&samples).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "jpg") && good < 6 {
            std::fs::copy(&p, frames.join(p.file_name().unwrap())).unwrap();
            good += 1;
        }
    }
    let jpeg = std::fs::read(samples.join("frame-00.jpg")).unwrap();
    std::fs::write(frames.join("zz-truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(frames.join("zz-not-an-image.png"), b"this is a text file").unwrap();

    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let cameras = format!(
        "[[camera]]\nid = \"files\"\nkind = \"files\"\npath = {:?}\nfps = 20\n",
        frames.display().to_string()
    );
    let edge = pipeline::start_edge(pipeline::edge_config(
        broker.port(),
        dir.path(),
        &cameras,
        "deadline = \"5s\"\naudit_rate = 0.0",
    ));
    let total = good + 2;
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    pipeline::wait_until(
        "every file decided and every suspect judged",
        Duration::from_secs(60),
        || get(&e.decisions) == total && get(&e.verdicts) >= get(&e.frames_suspect),
        || pipeline::describe(&e, &c),
    )
    .await;
    assert_eq!(get(&e.frames_unreadable), 2);
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    let log = Decisions::read(&dir.path().join("decisions.jsonl"));
    let unreadable: Vec<_> = log
        .decisions()
        .filter(|d| d["source"] == "unreadable")
        .collect();
    assert_eq!(unreadable.len(), 2);
    for name in ["zz-truncated.jpg", "zz-not-an-image.png"] {
        assert!(
            unreadable
                .iter()
                .any(|d| d["detail"].as_str().unwrap().contains(name) && d["action"] == "reject"),
            "{name} must be rejected by name: {unreadable:?}"
        );
    }
    assert_eq!(
        log.decisions().count() as u64,
        total,
        "the readable files were decided too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_rejects_garbage_and_forged_envelopes_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let c = cloud.stats.clone();
    pipeline::wait_until(
        "cloud connected",
        Duration::from_secs(20),
        || c.link_up.load(std::sync::atomic::Ordering::Relaxed),
        String::new,
    )
    .await;

    let mqtt = tierline_shared::mqtt::MqttConfig {
        port: broker.port(),
        ..Default::default()
    };
    let (client, mut eventloop) =
        tierline_shared::mqtt::client(mqtt.options("intruder").unwrap(), 16);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let image = std::fs::read(pipeline::models_dir().join("samples/frame-01.jpg")).unwrap();
    let forged = FrameEnvelope {
        protocol_version: wire::PROTOCOL_VERSION,
        edge_id: "edge-b".into(),
        site: "plant".into(),
        line: "l1".into(),
        seq: 1,
        frame_id: wire::frame_id("edge-b", 1),
        image,
        ..FrameEnvelope::default()
    };
    let qos = tierline_shared::mqtt::QoS::AtLeastOnce;
    // Edge A's topic, edge B's envelope.
    client
        .publish(
            "tierline/v1/plant/l1/edge-a/frames",
            qos,
            false,
            wire::encode(&forged, 1 << 22).unwrap(),
        )
        .await
        .unwrap();
    client
        .publish(
            "tierline/v1/plant/l1/edge-a/frames",
            qos,
            false,
            b"\x00\xffgarbage".to_vec(),
        )
        .await
        .unwrap();
    let mut future = forged.clone();
    future.edge_id = "edge-a".into();
    future.frame_id = wire::frame_id("edge-a", 1);
    future.protocol_version = 9;
    client
        .publish(
            "tierline/v1/plant/l1/edge-a/frames",
            qos,
            false,
            prost::Message::encode_to_vec(&future),
        )
        .await
        .unwrap();

    pipeline::wait_until(
        "three rejections",
        Duration::from_secs(20),
        || get(&c.rejected_forged) == 1 && get(&c.rejected_malformed) == 2,
        || {
            format!(
                "forged {} malformed {}",
                get(&c.rejected_forged),
                get(&c.rejected_malformed)
            )
        },
    )
    .await;
    poller.abort();
    cloud.stop().await.unwrap();
    let stored = Stored::read(&dir.path().join("cloud.db")).await;
    assert!(
        stored.verdicts.is_empty() && stored.deliveries.is_empty(),
        "nothing may be stored for rejected messages"
    );
}
