//! Crash loop: the edge process is killed with SIGKILL at random moments while frames flow, and restarted.
//! Each kill comes after the model is loaded and the first line is decided, 0–700 ms later, at a moment the
//! outbox holds frames when it can (waiting up to 1 s); at least half of the kills must catch frames at risk.
//! After each kill the outbox is read: what it holds was accepted and not yet acknowledged, so it is at risk.
//! A final run drains the outbox. The oracle: every frame ever at risk, and every suspect the edge decided,
//! has exactly one stored verdict in the cloud; duplicates were delivered but never stored twice.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tierline_tests::oracle::{Decisions, Stored};
use tierline_tests::process::{self, Rng};
use tierline_tests::{Mosquitto, pipeline};

fn edge_toml(port: u16, dir: &Path, camera: &str) -> String {
    format!(
        "[edge]\nid = \"edge-k\"\nsite = \"plant\"\nline = \"l1\"\n[mqtt]\nport = {port}\nreconnect_delay = \"100ms\"\n\
         [model]\nmanifest = {:?}\n[decision]\ndeadline = \"300ms\"\naudit_rate = 0.1\n\
         [outbox]\npath = {:?}\nresend_after = \"1s\"\n[sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{camera}",
        pipeline::models_dir().join("prescreen.toml"),
        dir.join("outbox.db"),
        dir.join("decisions.jsonl"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_frame_is_lost_across_kill_9() {
    let cycles: u64 = std::env::var("TIERLINE_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut rng = Rng::from_env("crash loop");
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let config = dir.path().join("edge.toml");
    let log = dir.path().join("edge.log");
    let db = dir.path().join("outbox.db");
    let decisions = dir.path().join("decisions.jsonl");

    let mut at_risk: BTreeSet<u64> = BTreeSet::new();
    let mut suspects_at_risk: BTreeSet<u64> = BTreeSet::new();
    let mut killed_holding = 0usize;
    for cycle in 0..cycles {
        let camera = format!(
            "[[camera]]\nid = \"cam-0\"\nkind = \"synthetic\"\nseed = {cycle}\nfps = 60\ndefect_rate = 0.5\n"
        );
        std::fs::write(&config, edge_toml(broker.port(), dir.path(), &camera)).unwrap();
        let decided_before = Decisions::read(&decisions).events.len();
        let mut edge = process::spawn_edge(&config, &log);
        // Kill only once the model is loaded and frames flow (a new line in the decision log), at a random
        // moment after that, and preferably while the outbox holds frames: a kill that finds nothing at risk
        // shows little.
        let started = Instant::now();
        while Decisions::read(&decisions).events.len() == decided_before
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 700))).await;
        let waiting = Instant::now();
        while process::outbox_seqs(&db).await.is_empty()
            && waiting.elapsed() < Duration::from_secs(1)
        {
            tokio::time::sleep(Duration::from_millis(rng.range(5, 30))).await;
        }
        edge.kill().unwrap();
        edge.wait().unwrap();
        let held = process::outbox_seqs(&db).await;
        suspects_at_risk.extend(process::outbox_suspects(&db).await);
        killed_holding += usize::from(!held.is_empty());
        at_risk.extend(held);
    }

    // Drain: no camera frames, just the backlog.
    std::fs::write(
        &config,
        edge_toml(
            broker.port(),
            dir.path(),
            "[[camera]]\nid = \"cam-0\"\nkind = \"synthetic\"\nframes = 0\n",
        ),
    )
    .unwrap();
    let mut edge = process::spawn_edge(&config, &log);
    let started = Instant::now();
    loop {
        if process::outbox_seqs(&db).await.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "outbox did not drain; edge log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process::terminate(&mut edge);
    cloud.stop().await.unwrap();

    let log = Decisions::read(&dir.path().join("decisions.jsonl"));
    let stored = Stored::read(&dir.path().join("cloud.db")).await;
    let key = |seq: u64| ("edge-k".to_string(), seq);
    let mut accepted = at_risk.clone();
    accepted.extend(log.suspect_seqs());
    accepted.extend(log.of("audit").map(|a| a["seq"].as_u64().unwrap()));
    let missing: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|s| !stored.verdicts.contains_key(&key(*s)))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted frames without a stored verdict: {missing:?}"
    );
    stored.check_labels("edge-k", &log);
    assert_eq!(
        stored.deliveries.len(),
        stored.verdicts.len(),
        "every received frame has exactly one verdict"
    );
    assert!(
        log.torn_lines as u64 <= cycles,
        "more torn decision lines than kills"
    );
    // Every suspect at risk got a line decision, even when the crash came before its deadline (decided at
    // restart). A torn line may have taken one decision record with it.
    let per_seq = log.per_seq();
    let undecided: Vec<u64> = suspects_at_risk
        .iter()
        .copied()
        .filter(|s| !per_seq.contains_key(s))
        .collect();
    assert!(
        undecided.len() <= log.torn_lines,
        "suspects at risk without a line decision: {undecided:?}"
    );
    // A frame is decided twice only when a crash hit between its local decision and recording it; the second
    // decision says so.
    let restart_decisions: BTreeSet<u64> = log
        .decisions()
        .filter(|d| {
            d["detail"]
                .as_str()
                .is_some_and(|t| t.starts_with("decided at restart"))
        })
        .filter_map(|d| d["seq"].as_u64())
        .collect();
    for (seq, n) in &per_seq {
        assert!(
            *n == 1 || restart_decisions.contains(seq),
            "frame {seq} decided {n} times"
        );
    }
    // Provisional decisions are reconciled, across restarts too (the outbox keeps the local decision).
    let reconciled: BTreeSet<u64> = log
        .of("reconciliation")
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    let unreconciled: Vec<u64> = log
        .decisions()
        .filter(|d| d["provisional"] == true)
        .filter_map(|d| d["seq"].as_u64())
        .filter(|s| !reconciled.contains(s))
        .collect();
    assert!(
        unreconciled.len() <= log.torn_lines,
        "provisional decisions never reconciled: {unreconciled:?}"
    );
    assert!(
        killed_holding * 2 >= cycles as usize,
        "only {killed_holding} of {cycles} kills happened while the outbox held frames; at least half must"
    );
    eprintln!(
        "crash loop: {cycles} kills ({killed_holding} with frames at risk), {} frames at risk ({} suspects), {} accepted frames known, {} verdicts stored, {} duplicate deliveries, {} torn log lines, {} decided at restart, {} reconciliations",
        at_risk.len(),
        suspects_at_risk.len(),
        accepted.len(),
        stored.verdicts.len(),
        stored.duplicate_deliveries(),
        log.torn_lines,
        restart_decisions.len(),
        reconciled.len()
    );
}
