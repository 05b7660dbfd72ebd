//! A full disk degrades the edge; it does not kill it. The outbox and the decision log live on a small tmpfs
//! that the test fills while frames flow: the edge keeps deciding every frame (locally, under the offline
//! policy), `/readyz` turns unready naming the cause, and when space returns the edge recovers by itself:
//! every held decision line is written and the check turns green.
//!
//! Oracle: the decision log the edge wrote, read after the run: exactly one decision per frame the cameras
//! produced (the frame count is the camera's, set here), including the frames decided while the disk was
//! full. Needs permission to mount a tmpfs (root, as on the CI machine); without it the test says so and
//! stops rather than pretend.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tierline_edge::stats::get;
use tierline_tests::oracle::Decisions;
use tierline_tests::{Mosquitto, http, pipeline};

const FRAMES: u64 = 240;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            println!(
                "SKIPPED: cannot mount a tmpfs here ({}); this test needs root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` to the last byte; returns the filler's path.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 << 10];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    for _ in 0..4096 {
        if f.write_all(&[0u8]).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    path
}

async fn readyz(addr: SocketAddr) -> (u16, String) {
    http::get(addr, "/readyz").await.unwrap()
}

async fn wait_ready(addr: SocketAddr, want: u16, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = readyz(addr).await;
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < timeout,
            "/readyz stayed {status} (want {want}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_edge_and_it_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        return;
    };
    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let mut cfg = pipeline::edge_config(
        broker.port(),
        &disk.0,
        &pipeline::synthetic_cameras(1, FRAMES, 20.0, 0.3),
        "deadline = \"1s\"\naudit_rate = 0.1",
    );
    cfg.outbox.max_bytes = tierline_shared::config::ByteSize(2 << 20);
    cfg.admin.check_every = Duration::from_millis(200);
    let edge = pipeline::start_edge(cfg);
    let e = edge.stats.clone();
    let started = Instant::now();
    while edge.admin_addr.get().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "admin never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = *edge.admin_addr.get().unwrap();
    pipeline::wait_until(
        "frames flow",
        Duration::from_secs(30),
        || get(&e.decisions) >= 20,
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;

    let filler = fill(&disk.0);
    let full_at = get(&e.decisions);
    let body = wait_ready(addr, 503, Duration::from_secs(20)).await;
    println!("unready while full: {body}");
    assert!(
        body.contains("\"sink\"") || body.contains("\"outbox\""),
        "the reason names the sink or the outbox: {body}"
    );
    // Decisions go on while the disk is full.
    pipeline::wait_until(
        "decisions go on while the disk is full",
        Duration::from_secs(20),
        || get(&e.decisions) >= full_at + 40,
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;
    let (status, _) = readyz(addr).await;
    assert_eq!(status, 503, "still unready while the disk is full");
    assert!(!edge.is_finished(), "the edge is still running");

    std::fs::remove_file(&filler).unwrap();
    let body = wait_ready(addr, 200, Duration::from_secs(30)).await;
    println!("ready again: {body}");
    pipeline::wait_until(
        "every frame decided and written",
        Duration::from_secs(60),
        || {
            get(&e.frames_captured) == FRAMES
                && get(&e.decisions) + get(&e.frames_dropped) == FRAMES
                && get(&e.sink_held_bytes) == 0
        },
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;
    edge.stop()
        .await
        .expect("the edge stops cleanly after a full disk");
    cloud.stop().await.unwrap();

    Decisions::read(&disk.0.join("decisions.jsonl"))
        .assert_one_decision_each(FRAMES - get(&e.frames_dropped));
    println!(
        "frames {FRAMES}, dropped {}, outbox errors {}, sink errors {}, local fallbacks {}",
        get(&e.frames_dropped),
        get(&e.outbox_errors),
        get(&e.sink_errors),
        get(&e.decisions_fallback)
    );
    assert!(get(&e.sink_errors) > 0, "the sink met the full disk");
}
