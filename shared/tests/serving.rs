//! The model supervisor against real ONNX Runtime sessions: a stuck session and a failing session are
//! detected and rebuilt, and the process reports ready again on the new sessions.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tierline_shared::admin::Readiness;
use tierline_shared::runner::{Fault, InferError, RunnerConfig};
use tierline_shared::serving::{ProbeConfig, ServedModel};
use tokio_util::sync::CancellationToken;

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/prescreen.toml")
}

fn probe() -> ProbeConfig {
    ProbeConfig {
        interval: Duration::from_millis(100),
        latency_budget: Duration::from_secs(5),
        stuck_after: Duration::from_millis(300),
        max_consecutive_errors: 3,
        reload: false,
    }
}

fn sample() -> Bytes {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/samples");
    Bytes::from(std::fs::read(dir.join("frame-00.jpg")).unwrap())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn model_ok(r: &Readiness) -> bool {
    r.report().checks.iter().any(|c| c.name == "model" && c.ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_session_is_rebuilt_and_readiness_recovers() {
    let served = ServedModel::load(&manifest(), RunnerConfig::default(), probe())
        .await
        .unwrap();
    let readiness = Arc::new(Readiness::default());
    let stop = CancellationToken::new();
    let supervisor = tokio::spawn(served.clone().supervise(readiness.clone(), stop.clone()));
    wait_for("first probe passes", || model_ok(&readiness)).await;

    let before = served.runner();
    before.inject_fault(&[Fault::Stall(Duration::from_secs(3))]);
    wait_for("the watchdog rebuilds the sessions", || {
        served.counters.rebuilds.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(
        !Arc::ptr_eq(&before, &served.runner()),
        "new sessions serve"
    );
    wait_for("ready again on the new sessions", || model_ok(&readiness)).await;
    let score = served.score(sample()).await.unwrap();
    assert!(score.defect_score.is_finite());
    stop.cancel();
    supervisor.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_inference_errors_rebuild_the_session() {
    let mut p = probe();
    // Only the error watchdog acts in this test.
    p.interval = Duration::from_secs(3600);
    let served = ServedModel::load(&manifest(), RunnerConfig::default(), p)
        .await
        .unwrap();
    let readiness = Arc::new(Readiness::default());
    let stop = CancellationToken::new();
    let supervisor = tokio::spawn(served.clone().supervise(readiness.clone(), stop.clone()));
    wait_for("first probe passes", || model_ok(&readiness)).await;

    let before = served.runner();
    before.inject_fault(&[Fault::Fail, Fault::Fail]);
    for _ in 0..2 {
        assert!(matches!(
            served.score(sample()).await,
            Err(InferError::Model(_))
        ));
    }
    // Two failures in a row are below the limit of three: nothing happens yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served.counters.rebuilds.load(Ordering::Relaxed), 0);
    before.inject_fault(&[Fault::Fail]);
    assert!(served.score(sample()).await.is_err());
    wait_for("the error watchdog rebuilds the sessions", || {
        served.counters.rebuilds.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(!Arc::ptr_eq(&before, &served.runner()));
    assert_eq!(served.counters.inference_errors.load(Ordering::Relaxed), 3);
    served.score(sample()).await.unwrap();
    stop.cancel();
    supervisor.await.unwrap();
}
