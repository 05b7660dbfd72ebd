//! The `tierline-review` CLI as a subprocess against a real review API (the cloud's tonic server over a
//! seeded SQLite store): every command, authentication errors, JSON output, and exit codes.

#![allow(clippy::unwrap_used)]

use tierline_tests::review::{TOKEN, start};

mod common;
use common::cli;

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

        // The reviewed frame as a labelled folder: its image and a labels.csv with the human label.
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("labels");
        let folder_arg = folder.to_str().unwrap();
        let (code, out, err) = cli(addr, Some(TOKEN), &["export", folder_arg]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("1 reviewed frames written"), "{out}");
        let csv = std::fs::read_to_string(folder.join("labels.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "file,label,edge_id,seq,camera_id,cloud_label,reviewer"
        );
        assert_eq!(lines[1], "edge-a-3.png,good,edge-a,3,cam-0,scratch,bo");
        assert_eq!(std::fs::read(folder.join("edge-a-3.png")).unwrap().len(), 5);
        // A second export into the same folder would mix two sets of labels: refused.
        let (code, _, err) = cli(addr, Some(TOKEN), &["export", folder_arg]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("labels.csv already exists"), "{err}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_reports_the_miss_rate_from_audit_samples_against_the_target() {
    let s = start().await;
    // 40 audit samples of edge-r's prescreen pre-1, captured now; the cloud finds 2 of them defective.
    let now = tierline_shared::time::now_us();
    for seq in 1..=40u64 {
        let mut f = tierline_tests::review::frame("edge-r", seq, now, "");
        f.reason = 2;
        let label = if seq <= 2 { "scratch" } else { "good" };
        s.store
            .store(&f, &tierline_tests::review::verdict("edge-r", seq, label))
            .await
            .unwrap();
    }
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let (code, out, err) = cli(addr, Some(TOKEN), &["--json", "recall", "--window", "1h"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let e = &v["estimates"][0];
        assert_eq!(e["edge_id"], "edge-r");
        assert_eq!(
            (e["audits"].as_u64(), e["misses"].as_u64()),
            (Some(40), Some(2))
        );
        assert!((e["miss_rate"].as_f64().unwrap() - 0.05).abs() < 1e-9);
        // Wilson 95 % interval of 2 in 40: 1.38 % to 16.5 %; the default target (1 %) is below it.
        assert!(
            (e["lower95"].as_f64().unwrap() - 0.01382).abs() < 1e-4,
            "{e}"
        );
        assert!(
            (e["upper95"].as_f64().unwrap() - 0.16500).abs() < 1e-3,
            "{e}"
        );
        assert_eq!(e["verdict"], "above target");
        assert_eq!(v["window_seconds"], 3600);
        let (code, table, err) = cli(addr, Some(TOKEN), &["recall"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            table.contains("edge-r") && table.contains("above target"),
            "{table}"
        );
    })
    .await
    .unwrap();
}
