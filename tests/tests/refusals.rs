//! A message the broker refuses is known as refused, not resent forever; and a record leaves the outbox only
//! once the broker has acknowledged the decision line its verdict caused (MQTT decision sink).
//!
//! Both tiers speak MQTT 5, so the broker's PUBACK carries a reason code and its CONNACK states the largest
//! packet it takes. A frame the broker's ACL denies, and a frame larger than its packet limit, must each
//! become a local line decision at once that names the reason, and leave the outbox; the edge must not send
//! it again, and must not lose its connection over it. A decision line the broker refuses is not delivered,
//! so the records behind it must stay.
//!
//! Oracles independent of the edge's own counters: the broker's log (`log_type all` records each denied
//! PUBLISH and each client connection), the decision log or the lines a subscriber received, what the cloud
//! stored, and the outbox file after the run.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_edge::config::SinkConfig;
use tierline_shared::mqtt::{Event, MqttConfig, Packet, QoS};
use tierline_tests::oracle::{Decisions, Stored};
use tierline_tests::{Mosquitto, pipeline, process};

const FRAMES: u64 = 40;
const DEADLINE_MS: u64 = 1000;
const FRAMES_TOPIC: &str = "tierline/v1/plant/l1/edge-t/frames";
const DECISIONS_TOPIC: &str = "tierline/v1/plant/l1/edge-t/decisions";

/// A Mosquitto on a free port with `extra` config lines, logging everything.
fn broker(dir: &Path, extra: &str) -> Mosquitto {
    let port = tierline_demo::broker::free_port().unwrap();
    let data = dir.join("mosquitto");
    std::fs::create_dir_all(&data).unwrap();
    let conf = data.join("mosquitto.conf");
    let log = data.join("mosquitto.log");
    std::fs::write(
        &conf,
        format!(
            // `user root`: a broker started as root otherwise drops to the `mosquitto` user, which cannot write
            // its log into the test's private directory. Ignored when the tests do not run as root.
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nlog_dest file {}\nlog_type all\n{extra}\n",
            log.display()
        ),
    )
    .unwrap();
    Mosquitto::from_config(port, conf, log)
}

/// Runs an edge with one synthetic camera against `broker` (no cloud) until its frames are taken and two
/// resend periods more, then stops it. Returns its decision log path.
async fn run_edge(broker: &Mosquitto, dir: &Path) -> PathBuf {
    let cameras = pipeline::synthetic_cameras(1, FRAMES, 20.0, 0.5);
    let decision = format!("deadline = \"{DEADLINE_MS}ms\"\naudit_rate = 0.0");
    let config = pipeline::edge_config(broker.port(), dir, &cameras, &decision);
    let edge = pipeline::start_edge(config);
    let log = dir.join("decisions.jsonl");
    pipeline::wait_until(
        "every frame decided",
        Duration::from_secs(30),
        || Decisions::read(&log).decisions().count() as u64 >= FRAMES,
        || {
            format!(
                "{} decision lines",
                Decisions::read(&log).decisions().count()
            )
        },
    )
    .await;
    // `resend_after` is 2 s in the test config: a frame still in the outbox would go out again by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    edge.stop().await.unwrap();
    log
}

/// The suspects of the log (every decision that is not a pass), checked to be decided locally, for good,
/// within the deadline, with a detail naming `reason`. Returns how many there were.
fn suspects_decided_for_refusal(log: &Path, reason: &str) -> usize {
    let decisions = Decisions::read(log);
    decisions.assert_one_decision_each(FRAMES);
    let suspects: Vec<_> = decisions
        .decisions()
        .filter(|d| d["source"] != "edge")
        .collect();
    assert!(
        suspects.len() >= 5,
        "too few suspects to show anything: {}",
        suspects.len()
    );
    for d in &suspects {
        assert_eq!(d["source"], "local-fallback", "{d}");
        assert_eq!(
            d["provisional"], false,
            "a refused frame is decided for good: {d}"
        );
        let detail = d["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(reason),
            "the decision names the refusal: {d}"
        );
        let latency = d["latency_us"].as_u64().unwrap();
        assert!(
            latency < DEADLINE_MS * 1000,
            "decided when the refusal came, not at the deadline: {d}"
        );
    }
    suspects.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_acl_denies_are_decided_locally_at_once_and_never_resent() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    // Anonymous clients may read frames (a cloud could subscribe) but not write them.
    std::fs::write(
        &acl,
        "topic read tierline/v1/+/+/+/frames\ntopic readwrite tierline/v1/+/+/+/verdicts\n\
         topic readwrite tierline/v1/+/+/+/presence\ntopic readwrite tierline/v1/+/+/+/heartbeat\n",
    )
    .unwrap();
    let broker = broker(dir.path(), &format!("acl_file {}", acl.display()));
    let log = run_edge(&broker, dir.path()).await;

    let suspects = suspects_decided_for_refusal(&log, "not authorized");
    let broker_log = broker.log();
    let denied: Vec<&str> = broker_log
        .lines()
        .filter(|l| l.contains("Denied PUBLISH") && l.contains(FRAMES_TOPIC))
        .collect();
    println!(
        "acl: {suspects} suspects, {} denied frame publishes",
        denied.len()
    );
    assert_eq!(
        denied.len(),
        suspects,
        "each refused frame reached the broker once and was not sent again:\n{}",
        denied.join("\n")
    );
    assert!(
        process::outbox_seqs(&dir.path().join("outbox.db"))
            .await
            .is_empty(),
        "refused frames leave the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_the_brokers_packet_limit_are_decided_locally_and_the_link_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    // Synthetic frames are JPEGs of several kilobytes; presence and heartbeats are far smaller.
    let broker = broker(dir.path(), "max_packet_size 2000");
    let log = run_edge(&broker, dir.path()).await;

    let suspects = suspects_decided_for_refusal(&log, "maximum packet size");
    let broker_log = broker.log();
    let connects = broker_log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains("tierline-edge-edge-t"))
        .count();
    let frames_received = broker_log
        .lines()
        .filter(|l| l.contains("Received PUBLISH") && l.contains(FRAMES_TOPIC))
        .count();
    println!(
        "packet limit: {suspects} suspects, {connects} connections, {frames_received} frames at the broker"
    );
    assert_eq!(
        connects, 1,
        "the edge kept its one connection (an oversized packet would have cost it):\n{broker_log}"
    );
    assert_eq!(frames_received, 0, "nothing too large was sent");
    assert!(
        process::outbox_seqs(&dir.path().join("outbox.db"))
            .await
            .is_empty(),
        "refused frames leave the outbox"
    );
}

/// Runs a cloud worker and an edge whose decision sink is the MQTT topic [`DECISIONS_TOPIC`] against a broker
/// whose anonymous ACL grants `decisions_acl` on that topic (plus what the pipeline needs). A subscriber
/// collects the lines the broker delivers. Returns the seqs of the lines received, the seqs the cloud
/// The seqs of this test edge's frames with a verdict in the cloud's store under `dir`.
async fn stored_seqs(dir: &Path) -> BTreeSet<u64> {
    Stored::read(&dir.join("cloud.db"))
        .await
        .verdicts
        .keys()
        .filter(|(edge, _)| edge == "edge-t")
        .map(|(_, seq)| *seq)
        .collect()
}

/// An edge config whose decision lines go to the broker (`DECISIONS_TOPIC`), without audits.
fn mqtt_sink_edge(
    broker: &Mosquitto,
    dir: &Path,
    cameras: &str,
    deadline: &str,
) -> tierline_edge::config::EdgeConfig {
    let decision = format!("deadline = \"{deadline}\"\naudit_rate = 0.0");
    let mut config = pipeline::edge_config(broker.port(), dir, cameras, &decision);
    config.sink = SinkConfig::Mqtt {
        topic: DECISIONS_TOPIC.into(),
    };
    config
}

/// stored verdicts for, and the seqs left in the outbox.
async fn run_with_mqtt_sink(decisions_acl: &str) -> (BTreeSet<u64>, BTreeSet<u64>, BTreeSet<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        format!(
            "topic readwrite tierline/v1/+/+/+/frames\ntopic readwrite tierline/v1/+/+/+/verdicts\n\
             topic readwrite tierline/v1/+/+/+/presence\ntopic readwrite tierline/v1/+/+/+/heartbeat\n\
             topic {decisions_acl} {DECISIONS_TOPIC}\n"
        ),
    )
    .unwrap();
    let broker = broker(dir.path(), &format!("acl_file {}", acl.display()));

    // The subscriber: every line the broker delivers on the decisions topic.
    let mqtt = MqttConfig {
        port: broker.port(),
        ..Default::default()
    };
    let (sub, mut events) = tierline_shared::mqtt::client(mqtt.options("line-reader").unwrap(), 16);
    sub.subscribe(DECISIONS_TOPIC, QoS::AtLeastOnce)
        .await
        .unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let reader = tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                if v["event"] == "decision" {
                    let _ = line_tx.send(v["seq"].as_u64().unwrap());
                }
            }
        }
    });

    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let c = cloud.stats.clone();
    pipeline::wait_subscribed(&c, "cloud subscribed", Duration::from_secs(30)).await;
    let cameras = pipeline::synthetic_cameras(1, FRAMES, 20.0, 0.5);
    let config = mqtt_sink_edge(&broker, dir.path(), &cameras, "2s");
    let edge = pipeline::start_edge(config);
    let e = edge.stats.clone();
    pipeline::wait_until(
        "every frame decided",
        Duration::from_secs(30),
        || e.decisions.load(Ordering::Relaxed) >= FRAMES,
        || pipeline::describe(&e, &c),
    )
    .await;
    // Time for verdicts, barriers and acknowledgements to settle whatever can settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    reader.abort();
    let mut received = BTreeSet::new();
    while let Ok(seq) = line_rx.try_recv() {
        received.insert(seq);
    }
    let stored = stored_seqs(dir.path()).await;
    let held: BTreeSet<u64> = process::outbox_seqs(&dir.path().join("outbox.db"))
        .await
        .into_iter()
        .collect();
    (received, stored, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_decision_sink_lets_records_go_once_the_broker_acknowledged_their_lines() {
    let (received, stored, held) = run_with_mqtt_sink("readwrite").await;
    println!(
        "mqtt sink: {} lines received, {} verdicts stored, {} records held",
        received.len(),
        stored.len(),
        held.len()
    );
    assert_eq!(
        received.len() as u64,
        FRAMES,
        "every frame's decision line reached the subscriber"
    );
    assert!(stored.len() >= 5, "too few forwarded frames: {stored:?}");
    assert!(held.is_empty(), "settled records left the outbox: {held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stay_while_the_broker_refuses_their_decision_lines() {
    // The ACL lets the subscriber read the decisions topic but nobody write it: the broker refuses every line.
    let (received, stored, held) = run_with_mqtt_sink("read").await;
    println!(
        "refused lines: {} lines received, {} verdicts stored, {} records held",
        received.len(),
        stored.len(),
        held.len()
    );
    assert!(received.is_empty(), "the broker delivered no line");
    assert!(stored.len() >= 5, "too few forwarded frames: {stored:?}");
    let lost: Vec<_> = stored.difference(&held).collect();
    assert!(
        lost.is_empty(),
        "records whose decision lines were never delivered left the outbox: {lost:?}"
    );
}

/// A burst of verdicts into the MQTT decision sink: an edge restarts with hundreds of frames held and sends
/// them all at once to a cloud that answers them as fast as it can. The verdicts arrive while the settle stage
/// waits for the broker to acknowledge the lines they caused; the link must go on taking those
/// acknowledgements while the settle stage is busy. If it waits for the settle stage instead, neither moves
/// and the records never leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_verdicts_settles_through_an_mqtt_decision_sink() {
    const FLOOD: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), "");
    let edge_config = |frames: u64, defects: f64| {
        let cameras = pipeline::synthetic_cameras(1, frames, 200.0, defects);
        let mut config = mqtt_sink_edge(&broker, dir.path(), &cameras, "300ms");
        // Everything held goes out at once.
        config.outbox.max_in_flight = std::num::NonZeroUsize::new(2000).unwrap();
        config
    };
    // No cloud yet: every frame carries a defect, and the suspects stay held.
    let edge = pipeline::start_edge(edge_config(FLOOD, 1.0));
    let e = edge.stats.clone();
    pipeline::wait_until(
        "every frame decided",
        Duration::from_secs(60),
        || e.decisions.load(Ordering::Relaxed) >= FLOOD,
        || format!("{} decided", e.decisions.load(Ordering::Relaxed)),
    )
    .await;
    edge.stop().await.unwrap();
    let held: BTreeSet<u64> = process::outbox_seqs(&dir.path().join("outbox.db"))
        .await
        .into_iter()
        .collect();
    println!("burst: {} records held", held.len());
    assert!(held.len() >= 300, "too few held to test: {}", held.len());

    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let c = cloud.stats.clone();
    pipeline::wait_subscribed(&c, "cloud subscribed", Duration::from_secs(30)).await;
    // The edge comes back with one good frame to take; all it holds is due at once.
    let edge = pipeline::start_edge(edge_config(1, 0.0));
    let e = edge.stats.clone();
    let started = std::time::Instant::now();
    pipeline::wait_until(
        "every held record settled",
        Duration::from_secs(90),
        || {
            e.verdicts.load(Ordering::Relaxed) >= held.len() as u64
                && e.backlog_frames.load(Ordering::Relaxed) == 0
        },
        || pipeline::describe(&e, &c),
    )
    .await;
    println!("burst: settled in {:?}", started.elapsed());
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    // Oracle: the cloud's store and the outbox file. Every held record has its stored verdict and left.
    let stored = stored_seqs(dir.path()).await;
    let unjudged: Vec<_> = held.difference(&stored).collect();
    assert!(unjudged.is_empty(), "held but never judged: {unjudged:?}");
    let left = process::outbox_seqs(&dir.path().join("outbox.db")).await;
    assert!(left.is_empty(), "records still held: {left:?}");
}
