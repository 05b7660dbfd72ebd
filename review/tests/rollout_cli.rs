//! `tierline-review rollout` against a real review API with a model registry: only operators start and
//! steer rollouts; a rollout needs a group target to return to and a forward bundle; one rollout per group
//! and model at a time; pause, resume, abort and rollback change the state only where it makes sense, each
//! recorded with who and why. (The stages themselves are driven by the rollout controller in the cloud
//! worker: `tests/tests/rollout.rs`.)

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use tierline_shared::bundle::{SignedStatement, SigningKey, TrustedKeys, archive};
use tierline_shared::wire::Heartbeat;
use tierline_tests::bundles::prescreen_variant;
use tierline_tests::review::{OTHER_REVIEWER, OTHER_TOKEN, TOKEN, start_registry};

mod common;

fn cli(addr: SocketAddr, token: &str, args: &[&str]) -> (i32, String, String) {
    common::cli(addr, Some(token), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_start_pause_resume_abort_and_roll_back_rollouts() {
    let dir = tempfile::tempdir().unwrap();
    let ops = SigningKey::generate().unwrap();
    let trusted = TrustedKeys::new(vec![ops.public()]);
    let server = start_registry(trusted.clone()).await;
    let registry = tierline_cloud::registry::Registry::new(server.store.clone(), trusted);
    let mut shas = Vec::new();
    for (version, sequence) in [("1.2.0", 1), ("1.3.0", 2), ("1.4.0", 3)] {
        let packed = archive::pack(&prescreen_variant(dir.path(), version, |t| t)).unwrap();
        let signed = SignedStatement::sign(&packed.statement(sequence), &ops).unwrap();
        registry
            .publish(&signed.to_json(), packed.bytes.clone(), "ops")
            .await
            .unwrap();
        shas.push(packed.sha256);
    }
    // Two edges of group line-3, as their heartbeats report it.
    for id in ["e1", "e2"] {
        let hb = Heartbeat {
            edge_id: id.into(),
            update_group: "line-3".into(),
            edge_model_version: "1.2.0".into(),
            ..Heartbeat::default()
        };
        server
            .store
            .record_heartbeat("plant", "line-3", &hb, 1)
            .await
            .unwrap();
    }
    let api = server.api;
    let store = server.store.clone();
    let shas_c = shas.clone();
    tokio::task::spawn_blocking(move || {
        let shas = shas_c;
        let start = |bundle: &str| {
            cli(
                api,
                OTHER_TOKEN,
                &[
                    "rollout",
                    "start",
                    &bundle[..12],
                    "--group",
                    "line-3",
                    "--reason",
                    "test",
                ],
            )
        };
        // Not an operator.
        let (code, _, err) = cli(api, TOKEN, &["rollout", "list"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("not an operator"), "{err}");
        // No group target yet: nothing to roll back to.
        let (code, _, err) = start(&shas[1]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("has no prescreen target yet"), "{err}");
        let (code, _, err) = cli(
            api,
            OTHER_TOKEN,
            &["models", "target", "edges/line-3", &shas[0][..12]],
        );
        assert_eq!(code, 0, "{err}");
        // Not forward.
        let (code, _, err) = start(&shas[0]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("runs bundle"), "{err}");
        // Started: running at stage 1 of 2 (one edge, then all), 1.2.0 → 1.3.0.
        let (code, out, err) = start(&shas[1]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("prescreen 1.2.0 -> 1.3.0 on edges/line-3: running (stage 1 of 2)"),
            "{out}"
        );
        // One at a time per group and model.
        let (code, _, err) = start(&shas[2]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("rollout 1 of this model to this group has not finished"),
            "{err}"
        );

        let act = |action: &str| {
            cli(
                api,
                OTHER_TOKEN,
                &["rollout", action, "1", "--reason", action],
            )
        };
        let (code, out, err) = act("pause");
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(": paused"), "{out}");
        let (code, _, err) = act("pause");
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("only a running rollout can be paused"),
            "{err}"
        );
        let (code, out, err) = act("resume");
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(": running"), "{out}");
        let (code, out, err) = act("abort");
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(": aborted"), "{out}");
        let (code, _, err) = act("resume");
        assert_eq!(code, 1, "{err}");
        // An aborted rollout can still be rolled back (the controller then sends its edges back).
        let (code, out, err) = act("rollback");
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(": rolling-back"), "{out}");
        let (code, out, err) = cli(api, OTHER_TOKEN, &["--json", "rollout", "list"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["rollouts"][0]["state"], "rolling-back");
        assert_eq!(v["rollouts"][0]["previous_version"], "1.2.0");
        let (code, _, err) = cli(
            api,
            OTHER_TOKEN,
            &["rollout", "pause", "9", "--reason", "x"],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("no rollout 9"), "{err}");
    })
    .await
    .unwrap();

    // The bundle server says when each target changed: an edge follows the newer of its own and its
    // group's.
    let (status, _, body) = tierline_tests::http::get_bytes(server.bundles, "/v1/targets", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let targets: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let group = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "edges/line-3")
        .unwrap();
    assert!(group["changed_us"].as_i64().unwrap() > 0, "{group}");

    // Every change is recorded, by whom and why.
    let events: Vec<(String, String, String)> = store
        .model_events(Some("rollout/1"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.actor, e.detail))
        .collect();
    let names: Vec<&str> = events.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "rollout-started",
            "paused",
            "resumed",
            "aborted",
            "rollback-requested"
        ]
    );
    assert!(events.iter().all(|(_, actor, _)| actor == OTHER_REVIEWER));
    assert_eq!(events[1].2, "pause");
}
