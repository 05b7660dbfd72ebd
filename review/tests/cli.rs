//! The `tierline-review` CLI as a subprocess against a real review API (the cloud's tonic server over a
//! seeded SQLite store): every command, authentication errors, JSON output, and exit codes.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;
use tierline_cloud::config::ApiConfig;
use tierline_cloud::store::Store;
use tierline_shared::wire::{self, ClassScore, FrameEnvelope, Presence, Verdict};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-token";

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn frame(edge: &str, seq: u64, capture_us: i64, local: &str) -> FrameEnvelope {
    FrameEnvelope {
        protocol_version: 1,
        edge_id: edge.into(),
        seq,
        frame_id: wire::frame_id(edge, seq),
        site: "plant".into(),
        line: "l1".into(),
        camera_id: "cam-0".into(),
        capture_time_us: capture_us,
        reason: 1,
        edge_score: 0.8,
        edge_model_version: "pre-1".into(),
        encoding: 2,
        image: vec![0x89, b'P', b'N', b'G', seq as u8],
        edge_local_action: local.into(),
    }
}

fn verdict(edge: &str, seq: u64, label: &str) -> Verdict {
    Verdict {
        protocol_version: 1,
        edge_id: edge.into(),
        seq,
        frame_id: wire::frame_id(edge, seq),
        cloud_model_version: "full-1".into(),
        label: label.into(),
        defective: label != "good",
        defect_score: 0.5,
        scores: vec![ClassScore {
            class_name: label.into(),
            probability: 0.75,
        }],
        verdict_time_us: tierline_shared::time::now_us(),
        ..Verdict::default()
    }
}

/// A review API on a seeded SQLite store: edge-a seqs 1..=5 (seq 2 rejected locally but good: a
/// disagreement), one edge online.
async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let store = Store::open(&url, true).await.unwrap();
    for seq in 1..=5u64 {
        let local = if seq == 2 { "reject" } else { "" };
        let label = if seq % 2 == 0 { "good" } else { "scratch" };
        store
            .store(
                &frame("edge-a", seq, 1_000_000 * seq as i64, local),
                &verdict("edge-a", seq, label),
            )
            .await
            .unwrap();
    }
    let p = Presence {
        protocol_version: 1,
        edge_id: "edge-a".into(),
        state: wire::PresenceState::Online as i32,
        time_us: tierline_shared::time::now_us(),
        edge_model_version: "pre-1".into(),
        site: "plant".into(),
        line: "l1".into(),
    };
    store
        .record_presence(&p, tierline_shared::time::now_us())
        .await
        .unwrap();
    let config = ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.into()),
        ..ApiConfig::default()
    };
    let stop = CancellationToken::new();
    let api = tierline_cloud::api::ReviewApi::bind(config, store.clone())
        .await
        .unwrap();
    let addr = api.addr();
    tokio::spawn(api.run(stop.clone()));
    Server {
        addr,
        stop,
        _dir: dir,
    }
}

fn cli(addr: SocketAddr, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tierline-review"));
    c.arg("--server")
        .arg(format!("http://{addr}"))
        .args(args)
        .env_remove("TIERLINE_REVIEW_TOKEN")
        .env_remove("TIERLINE_REVIEW_SERVER");
    if let Some(t) = token {
        c.env("TIERLINE_REVIEW_TOKEN", t);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_labels_and_lists_edges() {
    let s = start().await;
    let addr = s.addr;
    let out = tokio::task::spawn_blocking(move || {
        let (code, _, err) = cli(addr, None, &["list"]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("Unauthenticated") && err.contains("TIERLINE_REVIEW_TOKEN"),
            "{err}"
        );

        let (code, table, err) = cli(addr, Some(TOKEN), &["list", "--limit", "3"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("EDGE") && lines[0].contains("LABEL"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("edge-a") && lines[1].contains("scratch"),
            "{table}"
        );
        assert!(
            table.contains("3 frames") && table.contains("more: --page-token"),
            "{table}"
        );

        let (code, json, err) = cli(addr, Some(TOKEN), &["--json", "list", "--disagreement"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["frames"].as_array().unwrap().len(), 1);
        assert_eq!(v["frames"][0]["seq"], 2);

        let (code, out, err) = cli(
            addr,
            Some(TOKEN),
            &[
                "label",
                "edge-a",
                "3",
                "good",
                "--reviewer",
                "bo",
                "--note",
                "glare",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("labelled edge-a/3 as good"), "{out}");

        let (code, json, err) = cli(addr, Some(TOKEN), &["show", "edge-a", "3", "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["review_label"], "good");
        assert_eq!(v["reviews"][0]["reviewer"], "bo");
        assert_eq!(v["image_bytes"], 5);

        let (code, out, err) = cli(addr, Some(TOKEN), &["show", "edge-a", "42"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            err.contains("NotFound") && err.contains("edge-a/42"),
            "{err}"
        );

        let (code, out, err) = cli(addr, Some(TOKEN), &["edges"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.lines().nth(1).unwrap().contains("online"), "{out}");
        out
    })
    .await
    .unwrap();
    eprintln!("{out}");
}

#[test]
fn the_cli_names_an_unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Nothing listens on that port once the listener is dropped.
    let (code, _, err) = cli(port, Some(TOKEN), &["edges"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the review API"), "{err}");
}
