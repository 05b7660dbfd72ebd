//! Every stage is supervised. A panic, an early return or an error is injected into one stage at a time
//! (`TIERLINE_FAULT=<stage>:<kind>:<after_ms>`, compiled into the binaries only for the workspace's tests)
//! while frames flow. The oracle:
//! - the process exits non-zero, and its last words name the stage;
//! - no accepted frame is lost: after a restart without the fault, every frame the edge had accepted (held in
//!   its outbox when it stopped, or decided as a suspect or audit sample) has exactly one stored verdict.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tierline_tests::oracle::{Decisions, Stored};
use tierline_tests::process;
use tierline_tests::{Mosquitto, pipeline};

/// Every stage of the edge, with the fault injected into it. A camera may end by design (frame limits, files
/// that run out), so only a panic is a failure there.
const EDGE_STAGES: &[(&str, &str)] = &[
    ("camera cam-0", "panic"),
    ("prescreen", "return"),
    ("intake", "panic"),
    ("decisions", "return"),
    ("local decisions", "error"),
    ("sink", "return"),
    ("uplink", "error"),
    ("heartbeats", "return"),
    ("link", "panic"),
    ("settle", "return"),
    ("health", "panic"),
    ("model supervisor", "return"),
    ("systemd notify", "return"),
    ("admin endpoint", "error"),
];

/// Every stage of the cloud worker (review API on).
const CLOUD_STAGES: &[(&str, &str)] = &[
    ("ingest", "return"),
    ("processing", "panic"),
    ("acknowledgement", "return"),
    ("presence", "error"),
    ("retention", "return"),
    ("review API", "panic"),
    ("health", "return"),
    ("model supervisor", "panic"),
    ("systemd notify", "error"),
    ("admin endpoint", "return"),
];

/// The fault lands this long after the stage started: the model is loaded and frames flow.
const AFTER_MS: u64 = 1500;

fn edge_toml(port: u16, dir: &Path, id: &str, frames: &str) -> String {
    format!(
        "[edge]\nid = \"{id}\"\nsite = \"plant\"\nline = \"l1\"\n[mqtt]\nport = {port}\nreconnect_delay = \"100ms\"\n\
         [model]\nmanifest = {:?}\n[decision]\ndeadline = \"300ms\"\naudit_rate = 0.1\n\
         [outbox]\npath = {:?}\nresend_after = \"1s\"\n[sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[camera]]\nid = \"cam-0\"\nkind = \"synthetic\"\nseed = 3\nfps = 30\ndefect_rate = 0.5\n{frames}\n",
        pipeline::models_dir().join("prescreen.toml"),
        dir.join("outbox.db"),
        dir.join("decisions.jsonl"),
    )
}

/// The line naming the failed stage, from the process's log.
fn names_stage(log: &str, stage: &str) -> bool {
    log.lines().any(|l| {
        l.contains(&format!("stage {stage} "))
            && (l.contains("failed")
                || l.contains("panicked")
                || l.contains("ended before shutdown"))
    })
}

/// Waits for the process to exit after `fault`, and checks that it failed naming `stage`.
fn stops_naming(
    child: &mut std::process::Child,
    log: &Path,
    stage: &str,
    fault: &str,
) -> std::process::ExitStatus {
    let status = process::wait_exit(child, Duration::from_secs(60));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let Some(status) = status else {
        process::kill9(child);
        panic!("{fault}: the process kept running; log:\n{text}");
    };
    assert!(
        !status.success(),
        "{fault}: the process exited {status}; log:\n{text}"
    );
    assert!(
        names_stage(&text, stage),
        "{fault}: no line names stage {stage:?}; log:\n{text}"
    );
    status
}

/// Every frame the edge accepted, by its decision log and what its outbox held when it stopped.
fn accepted(log: &Decisions, held: &[u64]) -> BTreeSet<u64> {
    let mut all: BTreeSet<u64> = held.iter().copied().collect();
    all.extend(log.suspect_seqs());
    all.extend(log.of("audit").filter_map(|a| a["seq"].as_u64()));
    all
}

/// The accepted frames of `edge` that have no stored verdict.
fn without_verdict(stored: &Stored, edge: &str, accepted: &BTreeSet<u64>) -> Vec<u64> {
    accepted
        .iter()
        .copied()
        .filter(|s| !stored.verdicts.contains_key(&(edge.to_string(), *s)))
        .collect()
}

/// Waits until the edge's outbox is empty.
async fn drained(db: &Path, what: &str, log: &Path) {
    let started = Instant::now();
    while !process::outbox_seqs(db).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what}: the outbox did not drain; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_edge_stage_stops_the_edge_by_name_and_loses_no_frame() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let mut total_accepted = 0;
    for (i, (stage, kind)) in EDGE_STAGES.iter().enumerate() {
        let id = format!("edge-f{i}");
        let edge_dir = dir.path().join(&id);
        std::fs::create_dir_all(&edge_dir).unwrap();
        let config = edge_dir.join("edge.toml");
        let log = edge_dir.join("edge.log");
        let db = edge_dir.join("outbox.db");
        std::fs::write(&config, edge_toml(broker.port(), &edge_dir, &id, "")).unwrap();
        let fault = format!("{stage}:{kind}:{AFTER_MS}");
        let mut edge = process::spawn_edge_with(&config, &log, &[("TIERLINE_FAULT", &fault)]);
        let status = stops_naming(&mut edge, &log, stage, &fault);
        let held = process::outbox_seqs(&db).await;

        // Restart without the fault and without new frames: the backlog drains.
        std::fs::write(
            &config,
            edge_toml(broker.port(), &edge_dir, &id, "frames = 0"),
        )
        .unwrap();
        let mut edge = process::spawn_edge(&config, &log);
        drained(&db, &fault, &log).await;
        process::terminate(&mut edge);

        let decisions = Decisions::read(&edge_dir.join("decisions.jsonl"));
        let accepted = accepted(&decisions, &held);
        let stored = Stored::read(&dir.path().join("cloud.db")).await;
        let missing = without_verdict(&stored, &id, &accepted);
        assert!(
            missing.is_empty(),
            "{fault}: accepted frames without a stored verdict: {missing:?}"
        );
        eprintln!(
            "{fault}: exit {status}, {} frames held at exit, {} accepted in all, all with a verdict",
            held.len(),
            accepted.len()
        );
        total_accepted += accepted.len();
    }
    let stored = Stored::read(&dir.path().join("cloud.db")).await;
    assert_eq!(
        stored.deliveries.len(),
        stored.verdicts.len(),
        "every received frame has exactly one verdict"
    );
    assert!(
        total_accepted > 0,
        "no frame was accepted; the test exercised nothing"
    );
    cloud.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cloud_stage_stops_the_worker_by_name_and_loses_no_frame() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let db_url = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let cloud_config = dir.path().join("cloud.toml");
    std::fs::write(
        &cloud_config,
        process::cloud_worker_toml(
            broker.port(),
            "w1",
            &db_url,
            "[api]\nenabled = true\nlisten = \"127.0.0.1:0\"\n[retention]\nmax_age = \"1h\"\n",
        )
        .replace("[api]\nenabled = false\n", ""),
    )
    .unwrap();
    let cloud_log = dir.path().join("cloud.log");
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let edge_config = edge_dir.join("edge.toml");
    let edge_log = edge_dir.join("edge.log");
    std::fs::write(
        &edge_config,
        edge_toml(broker.port(), &edge_dir, "edge-c", ""),
    )
    .unwrap();
    let mut edge = process::spawn_edge(&edge_config, &edge_log);
    for (stage, kind) in CLOUD_STAGES {
        let fault = format!("{stage}:{kind}:{AFTER_MS}");
        let mut cloud =
            process::spawn_cloud_with(&cloud_config, &cloud_log, &[("TIERLINE_FAULT", &fault)]);
        let status = stops_naming(&mut cloud, &cloud_log, stage, &fault);
        eprintln!("{fault}: exit {status}");
    }
    // The edge kept frames flowing meanwhile; a healthy worker answers all of them.
    std::fs::write(
        &edge_config,
        edge_toml(broker.port(), &edge_dir, "edge-c", "frames = 0"),
    )
    .unwrap();
    process::terminate(&mut edge);
    let held = process::outbox_seqs(&edge_dir.join("outbox.db")).await;
    let mut cloud = process::spawn_cloud(&cloud_config, &cloud_log);
    let mut edge = process::spawn_edge(&edge_config, &edge_log);
    drained(&edge_dir.join("outbox.db"), "cloud faults", &edge_log).await;
    process::terminate(&mut edge);
    process::terminate(&mut cloud);

    let decisions = Decisions::read(&edge_dir.join("decisions.jsonl"));
    let accepted = accepted(&decisions, &held);
    let stored = Stored::read(&dir.path().join("cloud.db")).await;
    let missing = without_verdict(&stored, "edge-c", &accepted);
    assert!(
        missing.is_empty(),
        "accepted frames without a stored verdict: {missing:?}"
    );
    assert_eq!(
        stored.deliveries.len(),
        stored.verdicts.len(),
        "every received frame has exactly one verdict"
    );
    assert!(
        !accepted.is_empty(),
        "no frame was accepted; the test exercised nothing"
    );
    eprintln!(
        "cloud faults: {} frames accepted by the edge, all with one stored verdict",
        accepted.len()
    );
}
