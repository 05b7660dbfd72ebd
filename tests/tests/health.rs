//! The admin endpoints tell the truth: `/readyz` follows the model's golden answers across a bad model
//! rollout and its fix, and the cloud's readiness follows its broker link.

#![allow(clippy::unwrap_used)]

use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tierline_shared::manifest::Manifest;
use tierline_tests::{Mosquitto, http, pipeline};

/// Copies the committed prescreen (manifest, model, golden samples) into `dir`; returns the manifest path.
fn copy_prescreen(dir: &Path) -> PathBuf {
    let m = Manifest::load(&pipeline::models_dir().join("prescreen.toml")).unwrap();
    let to = |rel: &Path| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    };
    std::fs::copy(&m.path, to(Path::new("prescreen.toml"))).unwrap();
    std::fs::copy(m.model_path(), to(&m.file)).unwrap();
    for g in &m.golden {
        std::fs::copy(m.dir.join(&g.file), to(&g.file)).unwrap();
    }
    dir.join("prescreen.toml")
}

/// Swaps the model under `manifest` for one that calls everything defective, with a manifest that matches
/// it (right checksum, its input and output names), so only its answers are wrong.
fn install_always_defect(manifest: &Path) {
    let wrong =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/always-defect.onnx"))
            .unwrap();
    let m = Manifest::load(manifest).unwrap();
    std::fs::write(m.model_path(), &wrong).unwrap();
    let mut doc: toml::Table = std::fs::read_to_string(manifest).unwrap().parse().unwrap();
    doc["sha256"] = hex::encode(Sha256::digest(&wrong)).into();
    doc["input"]["name"] = "image".into();
    let out = doc["output"].as_table_mut().unwrap();
    out.insert("name".into(), "score".into());
    out.insert("kind".into(), "sigmoid".into());
    out.insert(
        "classes".into(),
        toml::Value::Array(vec!["good".into(), "defect".into()]),
    );
    out.insert("good_class".into(), 0.into());
    std::fs::write(manifest, toml::to_string(&doc).unwrap()).unwrap();
}

async fn wait_status(addr: SocketAddr, path: &str, want: u16, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = http::get(addr, path).await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < timeout,
            "{path} stayed {status} (want {want}) for {timeout:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_addr(get: impl Fn() -> Option<SocketAddr>) -> SocketAddr {
    let started = Instant::now();
    loop {
        if let Some(a) = get() {
            return a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "admin endpoint never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_on_a_wrong_model_and_ready_when_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let manifest = copy_prescreen(&models);
    let original_manifest = std::fs::read(&manifest).unwrap();
    let m = Manifest::load(&manifest).unwrap();
    let original_model = std::fs::read(m.model_path()).unwrap();

    // No broker: the edge works cut off, and the link is not a readiness condition for it.
    let port = tierline_demo::broker::free_port().unwrap();
    let mut config = pipeline::edge_config(
        port,
        dir.path(),
        &pipeline::synthetic_cameras(1, 1_000_000, 10.0, 0.1),
        "deadline = \"200ms\"",
    );
    config.model.manifest = manifest.clone();
    config.model.probe.interval = Duration::from_millis(200);
    let edge = pipeline::start_edge(config);
    let stats = edge.stats.clone();
    let addr = admin_addr(|| edge.admin_addr.get().copied()).await;

    let body = wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await;
    assert!(body.contains("\"model\""), "{body}");
    let (live, _) = http::get(addr, "/healthz").await.unwrap();
    assert_eq!(live, 200);

    install_always_defect(&manifest);
    let body = wait_status(addr, "/readyz", 503, Duration::from_secs(30)).await;
    println!("unready: {body}");
    assert!(
        body.contains("refused") && body.contains("expected good"),
        "the reason names the refused model and the wrong answer: {body}"
    );
    let (live, _) = http::get(addr, "/healthz").await.unwrap();
    assert_eq!(
        live, 200,
        "a wrong model makes the process unready, not dead"
    );
    let (_, metrics) = http::get(addr, "/metrics").await.unwrap();
    assert!(metric(&metrics, "tierline_model_reload_failures_total") >= 1.0);
    assert_eq!(metric(&metrics, "tierline_ready"), 0.0);
    // The previous model keeps serving meanwhile: frames are still decided.
    let decided = tierline_edge::stats::get(&stats.decisions);
    let started = Instant::now();
    while tierline_edge::stats::get(&stats.decisions) <= decided {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edge stopped deciding"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(m.model_path(), &original_model).unwrap();
    std::fs::write(&manifest, &original_manifest).unwrap();
    wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await;
    let (_, metrics) = http::get(addr, "/metrics").await.unwrap();
    assert!(metric(&metrics, "tierline_model_reloads_total") >= 1.0);
    assert_eq!(metric(&metrics, "tierline_ready"), 1.0);
    edge.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_readiness_follows_its_broker_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let mut config = pipeline::cloud_config(broker.port(), dir.path(), "w1");
    config.mqtt.reconnect_delay = Duration::from_millis(100);
    config.admin.check_every = Duration::from_millis(100);
    let cloud = pipeline::start_cloud(config);
    let addr = admin_addr(|| cloud.admin_addr.get().copied()).await;
    wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await;

    broker.stop();
    let body = wait_status(addr, "/readyz", 503, Duration::from_secs(30)).await;
    assert!(
        body.contains("\"link\"") && body.contains("takes no frames"),
        "{body}"
    );
    broker.restart();
    wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await;
    cloud.stop().await.unwrap();
}
