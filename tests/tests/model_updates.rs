//! Model updates on a running edge: the edge follows its group's target in the registry (the cloud's bundle
//! server over HTTP), with live synthetic frames flowing through a real Mosquitto. The oracle is what leaves
//! the edge: the model version every frame on the broker carries, read by a separate subscriber.
//!
//! A good bundle is shadowed and swapped in; a bundle failing its golden samples, one that would forward far
//! more suspects in shadow, one signed by an untrusted key (planted in the registry's store, as a compromised
//! registry would) and a downgrade without a rollback are each refused while the serving model keeps
//! serving; an explicit rollback goes back. A restarted edge serves what was last made active. Cloud workers
//! follow their own target (`workers/<group>`) for the full model the same way, seen in the model version
//! every verdict on the broker carries.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tierline_cloud::registry::Registry;
use tierline_cloud::store::NewBundle;
use tierline_shared::bundle::{SignedStatement, SigningKey, TrustedKeys, archive};
use tierline_shared::mqtt::{Event, MqttConfig, Packet, QoS};
use tierline_shared::wire::{FrameEnvelope, Verdict};
use tierline_tests::bundles::{full_variant, prescreen_variant, with_threshold};
use tierline_tests::mosquitto::Mosquitto;
use tierline_tests::pipeline;
use tierline_tests::review::start_registry;

const TARGET: &str = "edges/l1";

/// Packs and signs `manifest` at `sequence`.
fn signed(manifest: &Path, sequence: u64, key: &SigningKey) -> (archive::Packed, SignedStatement) {
    let packed = archive::pack(manifest).unwrap();
    let signed = SignedStatement::sign(&packed.statement(sequence), key).unwrap();
    (packed, signed)
}

/// Frames seen on the broker: seq → the model version it carried.
type Seen = Arc<Mutex<BTreeMap<u64, String>>>;

/// Versions carried by frames with a seq above `after` (resends of older frames are left out).
fn versions_after(seen: &Seen, after: u64) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, v) in seen.lock().unwrap().range(after + 1..) {
        *out.entry(v.clone()).or_insert(0) += 1;
    }
    out
}

fn last_seq(seen: &Seen) -> u64 {
    seen.lock()
        .unwrap()
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
}

async fn wait_for_version(seen: &Seen, after: u64, version: &str, what: &str) -> u64 {
    let s = seen.clone();
    let v = version.to_string();
    pipeline::wait_until(
        what,
        Duration::from_secs(60),
        || versions_after(&s, after).contains_key(&v),
        || {
            format!(
                "versions on the broker after seq {after}: {:?}",
                versions_after(&s, after)
            )
        },
    )
    .await;
    last_seq(seen)
}

/// Subscribes to every edge's frames: seq → the model version each carried.
async fn frame_reader(port: u16) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let reader = pipeline::read_messages(
        port,
        "frame-reader",
        "tierline/v1/+/+/+/frames",
        move |f: FrameEnvelope| {
            s.lock().unwrap().insert(f.seq, f.edge_model_version);
        },
    )
    .await;
    (seen, reader)
}

/// What every test here starts with: a Mosquitto, an operator's signing key (its public key written to
/// `ops.pub`), and a registry trusting it with its bundle server.
struct Fleet {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    ops: SigningKey,
    ops_pub: std::path::PathBuf,
    server: tierline_tests::review::RegistryServer,
    registry: Registry,
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let ops = SigningKey::generate().unwrap();
    let ops_pub = dir.path().join("ops.pub");
    std::fs::write(&ops_pub, ops.public().to_file_text()).unwrap();
    let trusted = TrustedKeys::new(vec![ops.public()]);
    let server = start_registry(trusted.clone()).await;
    let registry = Registry::new(server.store.clone(), trusted);
    Fleet {
        dir,
        broker,
        ops,
        ops_pub,
        server,
        registry,
    }
}

/// Waits until the edge has refused `n` bundles in all.
async fn wait_rejected(stats: &Arc<tierline_edge::EdgeStats>, n: u64, what: &str) {
    let st = stats.clone();
    pipeline::wait_until(
        &format!("the bundle ({what}) refused"),
        Duration::from_secs(60),
        || st.model_updates.rejected.load(Ordering::Relaxed) >= n,
        || {
            format!(
                "rejected {}",
                st.model_updates.rejected.load(Ordering::Relaxed)
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_takes_good_bundles_refuses_bad_ones_and_rolls_back() {
    let Fleet {
        dir,
        broker,
        ops,
        ops_pub,
        server,
        registry,
    } = fleet().await;
    let stranger = SigningKey::generate().unwrap();

    // The oracle: every frame the edge publishes, with the model version it carries.
    let (seen, reader) = frame_reader(broker.port()).await;

    // Bundles: the shipped model as sequence 1, the same model as 1.2.0 (sequence 2).
    let (v1, v1_signed) = signed(&pipeline::models_dir().join("prescreen.toml"), 1, &ops);
    registry
        .publish(&v1_signed.to_json(), v1.bytes.clone(), "ops")
        .await
        .unwrap();
    let (v2, v2_signed) = signed(&prescreen_variant(dir.path(), "1.2.0", |t| t), 2, &ops);
    registry
        .publish(&v2_signed.to_json(), v2.bytes.clone(), "ops")
        .await
        .unwrap();

    // A cloud worker: it records the steps the edge reports over MQTT.
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    pipeline::wait_subscribed(&cloud.stats, "cloud subscribed", Duration::from_secs(30)).await;

    let cameras = pipeline::synthetic_cameras(1, 1_000_000, 40.0, 0.05);
    let mut config = pipeline::edge_config(broker.port(), dir.path(), &cameras, "audit_rate = 0.5");
    config.updates.url = Some(format!("http://{}", server.bundles));
    config.updates.trusted_keys = vec![ops_pub.clone()];
    config.updates.dir = dir.path().join("models");
    config.updates.interval = Duration::from_millis(200);
    config.updates.shadow_frames = 40;
    let edge = pipeline::start_edge(config.clone());
    let stats = edge.stats.clone();
    let mut at = wait_for_version(&seen, 0, "1.1.0", "frames from the shipped model").await;

    // Good bundles, each shadowed, then serving: 1.2.0, then 1.3.0 (1.2.0 stays on disk as the one before).
    registry
        .set_target(TARGET, &v2.sha256, false, "ops", "upgrade")
        .await
        .unwrap();
    at = wait_for_version(&seen, at, "1.2.0", "frames from bundle 1.2.0").await;
    // The installed model is the published one, byte for byte.
    let installed = dir.path().join("models/bundles").join(&v2.sha256);
    assert_eq!(
        std::fs::read(installed.join("prescreen-1.1.0.onnx")).unwrap(),
        std::fs::read(pipeline::models_dir().join("prescreen-1.1.0.onnx")).unwrap()
    );
    let (v3, v3_signed) = signed(&prescreen_variant(dir.path(), "1.3.0", |t| t), 3, &ops);
    registry
        .publish(&v3_signed.to_json(), v3.bytes.clone(), "ops")
        .await
        .unwrap();
    registry
        .set_target(TARGET, &v3.sha256, false, "ops", "upgrade")
        .await
        .unwrap();
    at = wait_for_version(&seen, at, "1.3.0", "frames from bundle 1.3.0").await;

    // Bad bundles, each refused while 1.3.0 keeps serving.
    let fails_golden = prescreen_variant(dir.path(), "1.4.0", |t| with_threshold(t, "0.0"));
    let forwards_everything = prescreen_variant(dir.path(), "1.5.0", |t| {
        // Only the defect golden samples stay, so it passes them; on live frames it flags nearly all.
        let head = t.split("[[golden]]").next().unwrap().to_string();
        with_threshold(head, "0.001")
            + "\n[[golden]]\nfile = \"golden/spot-0.png\"\nexpect = \"defect\"\n"
            + "[[golden]]\nfile = \"golden/dent-0.png\"\nexpect = \"defect\"\n"
    });
    let mut rejected = 0;
    for (manifest, sequence, what) in [
        (fails_golden, 4, "failing its golden samples"),
        (
            forwards_everything,
            5,
            "flagging nearly every frame in shadow",
        ),
    ] {
        let (b, s) = signed(&manifest, sequence, &ops);
        registry
            .publish(&s.to_json(), b.bytes.clone(), "ops")
            .await
            .unwrap();
        registry
            .set_target(TARGET, &b.sha256, false, "ops", what)
            .await
            .unwrap();
        rejected += 1;
        wait_rejected(&stats, rejected, what).await;
    }
    // Planted in the store past the registry's checks: signed by a key the edge does not trust.
    let (rogue, rogue_signed) =
        signed(&prescreen_variant(dir.path(), "6.6.6", |t| t), 6, &stranger);
    let json = rogue_signed.to_json();
    server
        .store
        .publish_bundle(
            NewBundle {
                sha256: &rogue.sha256,
                name: "prescreen",
                version: "6.6.6",
                sequence: 6,
                key_id: &rogue_signed.key_id,
                signed: &json,
                data: &rogue.bytes,
            },
            "intruder",
            1,
        )
        .await
        .unwrap()
        .unwrap();
    // Set past the registry's rules: a downgrade to sequence 1 while 3 serves, first unmarked, then marked as
    // a rollback, which the edge honours only towards a bundle it served before (1.1.0 never was one here).
    for (sha, rollback, what) in [
        (&rogue.sha256, false, "untrusted key"),
        (&v1.sha256, false, "downgrade"),
        (&v1.sha256, true, "rollback to a bundle never served here"),
    ] {
        server
            .store
            .set_target(TARGET, sha, rollback, "intruder", what, 2)
            .await
            .unwrap()
            .unwrap();
        rejected += 1;
        wait_rejected(&stats, rejected, what).await;
    }
    // Let more frames through: all from 1.3.0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let since = versions_after(&seen, at);
    assert!(
        since.keys().all(|v| v == "1.3.0") && since.get("1.3.0").copied().unwrap_or(0) > 5,
        "while bad bundles were refused the frames carried {since:?}"
    );
    at = last_seq(&seen);

    // An explicit rollback to the bundle served before: no shadow, no download, back to 1.2.0.
    registry
        .set_target(TARGET, &v2.sha256, true, "ops", "rollback")
        .await
        .unwrap();
    at = wait_for_version(&seen, at, "1.2.0", "frames from the rolled-back bundle").await;
    edge.stop().await.unwrap();

    // A restarted edge serves what was last made active, with no target change.
    let edge = pipeline::start_edge(config);
    wait_for_version(&seen, at, "1.2.0", "frames after a restart").await;
    let after_restart = versions_after(&seen, at);
    assert_eq!(
        after_restart.keys().collect::<Vec<_>>(),
        ["1.2.0"],
        "{after_restart:?}"
    );
    edge.stop().await.unwrap();
    reader.abort();

    // Every step reached the cloud's record over MQTT, under the edge's id, in order.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cloud.stop().await.unwrap();
    let store = tierline_cloud::store::Store::open(
        &format!("sqlite://{}", dir.path().join("cloud.db").display()),
        true,
    )
    .await
    .unwrap();
    let events = store.model_events(Some("edge-t"), 1000).await.unwrap();
    let of = |sha: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.sha256 == sha)
            .map(|e| e.event.clone())
            .collect()
    };
    let upgrade = [
        "verified",
        "downloaded",
        "golden-pass",
        "shadowing",
        "shadowed",
        "active",
    ];
    assert_eq!(of(&v3.sha256), upgrade, "{events:#?}");
    // 1.2.0: upgraded to, then rolled back to from the copy kept on disk.
    let mut v2_steps = upgrade.to_vec();
    v2_steps.extend(["verified", "golden-pass", "rolled-back"]);
    assert_eq!(of(&v2.sha256), v2_steps, "{events:#?}");
    let rejections: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "rejected")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(rejections.len(), 5, "{events:#?}");
    for (detail, says) in rejections.iter().zip([
        "golden sample",
        "failed its shadow",
        "not trusted",
        "sequence",
        "sequence",
    ]) {
        assert!(
            detail.contains(says),
            "a rejection should say {says:?}: {detail}"
        );
    }
    assert!(events.iter().all(|e| e.actor == "edge-t"));
}

/// The edge config file of a process edge following `edges/l1` at `bundles`.
fn edge_toml(port: u16, dir: &Path, bundles: std::net::SocketAddr, key: &Path) -> String {
    format!(
        "[edge]\nid = \"edge-c\"\nsite = \"plant\"\nline = \"l1\"\n[mqtt]\nport = {port}\nreconnect_delay = \"100ms\"\n\
         [model]\nmanifest = {:?}\n[decision]\naudit_rate = 0.5\n[outbox]\npath = {:?}\nresend_after = \"2s\"\n\
         [sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [updates]\nurl = \"http://{bundles}\"\ntrusted_keys = [{:?}]\ndir = {:?}\ninterval = \"200ms\"\nshadow_frames = 80\n{}",
        pipeline::models_dir().join("prescreen.toml"),
        dir.join("outbox.db"),
        dir.join("decisions.jsonl"),
        key,
        dir.join("models"),
        pipeline::synthetic_cameras(1, 1_000_000, 40.0, 0.05),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_swap_comes_back_on_a_whole_model_and_converges() {
    use std::os::unix::process::ExitStatusExt;
    use tierline_tests::process;
    let Fleet {
        dir: root,
        broker,
        ops,
        ops_pub,
        server,
        registry,
    } = fleet().await;
    let (v2, v2_signed) = signed(&prescreen_variant(root.path(), "1.2.0", |t| t), 2, &ops);
    registry
        .publish(&v2_signed.to_json(), v2.bytes.clone(), "ops")
        .await
        .unwrap();
    registry
        .set_target(TARGET, &v2.sha256, false, "ops", "upgrade")
        .await
        .unwrap();
    let (seen, reader) = frame_reader(broker.port()).await;

    // Crash points inside the swap, then a kill -9 from outside while the new model shadows.
    for point in [
        "updates:downloaded",
        "updates:unpacked",
        "updates:pending",
        "updates:swapped",
        "kill -9 while shadowing",
    ] {
        let dir = root.path().join(point.replace([':', ' '], "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("edge.toml");
        std::fs::write(
            &config,
            edge_toml(broker.port(), &dir, server.bundles, &ops_pub),
        )
        .unwrap();
        let log = dir.join("edge.log");
        seen.lock().unwrap().clear();
        if let Some(external) = point.strip_prefix("kill -9 ") {
            let mut child = process::spawn_edge(&config, &log);
            let log2 = log.clone();
            pipeline::wait_until(
                &format!("the edge {external}"),
                Duration::from_secs(30),
                || {
                    std::fs::read_to_string(&log2)
                        .unwrap_or_default()
                        .contains("shadow")
                },
                || std::fs::read_to_string(&log2).unwrap_or_default(),
            )
            .await;
            process::kill9(&mut child);
        } else {
            let mut child =
                process::spawn_edge_with(&config, &log, &[("TIERLINE_CRASH_AT", point)]);
            let status = tokio::task::spawn_blocking(move || {
                process::wait_exit(&mut child, Duration::from_secs(30))
            })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the edge did not reach {point}"));
            assert_eq!(status.signal(), Some(6), "{point}: {status:?}");
        }
        // What the crash left on disk is one whole state: the swap recorded as pending at most.
        let state: serde_json::Value = std::fs::read(dir.join("models/state.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(serde_json::Value::Null);
        assert!(state["active"].is_null(), "{point}: {state}");
        let pending_expected = matches!(point, "updates:pending" | "updates:swapped");
        assert_eq!(
            !state["pending"].is_null(),
            pending_expected,
            "{point}: {state}"
        );

        // Restarted: it serves the model it served before, whole, then takes the bundle again.
        let at = last_seq(&seen);
        let mut child = process::spawn_edge(&config, &log);
        let s = seen.clone();
        pipeline::wait_until(
            &format!("{point}: frames from 1.2.0 after the restart"),
            Duration::from_secs(60),
            || versions_after(&s, at).contains_key("1.2.0"),
            || {
                format!(
                    "{:?}\n{}",
                    versions_after(&s, at),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        )
        .await;
        let versions = versions_after(&seen, 0);
        assert!(
            versions.keys().all(|v| v == "1.1.0" || v == "1.2.0"),
            "{point}: {versions:?}"
        );
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("models/state.json")).unwrap()).unwrap();
        assert_eq!(
            state["active"]["sha256"],
            v2.sha256.as_str(),
            "{point}: {state}"
        );
        assert!(state["pending"].is_null(), "{point}: {state}");
        let installed = dir.join("models/bundles").join(&v2.sha256);
        assert_eq!(
            std::fs::read(installed.join("prescreen-1.1.0.onnx")).unwrap(),
            std::fs::read(pipeline::models_dir().join("prescreen-1.1.0.onnx")).unwrap(),
            "{point}"
        );
        if pending_expected {
            assert!(
                std::fs::read_to_string(&log)
                    .unwrap()
                    .contains("interrupted"),
                "{point}: the restart should say the swap was interrupted"
            );
        }
        process::terminate(&mut child);
    }
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cut_off_from_the_registry_keeps_its_model_and_converges_after_healing() {
    use tierline_tests::proxy::{Mode, Proxy};
    let Fleet {
        dir,
        broker,
        ops,
        ops_pub,
        server,
        registry,
    } = fleet().await;
    // The edge reaches the bundle server through a proxy that can drop every packet.
    let path = Proxy::start(server.bundles).await.unwrap();
    let (seen, reader) = frame_reader(broker.port()).await;

    let cameras = pipeline::synthetic_cameras(1, 1_000_000, 40.0, 0.05);
    let mut config = pipeline::edge_config(broker.port(), dir.path(), &cameras, "audit_rate = 0.5");
    config.updates.url = Some(format!("http://{}", path.addr()));
    config.updates.trusted_keys = vec![ops_pub];
    config.updates.dir = dir.path().join("models");
    config.updates.interval = Duration::from_millis(200);
    config.updates.shadow_frames = 20;
    let edge = pipeline::start_edge(config);
    let mut at = wait_for_version(&seen, 0, "1.1.0", "frames from the shipped model").await;

    let publish = async |version: &str, sequence: u64| {
        let (b, s) = signed(
            &prescreen_variant(dir.path(), version, |t| t),
            sequence,
            &ops,
        );
        registry
            .publish(&s.to_json(), b.bytes.clone(), "ops")
            .await
            .unwrap();
        registry
            .set_target(TARGET, &b.sha256, false, "ops", version)
            .await
            .unwrap();
    };
    publish("1.2.0", 2).await;
    at = wait_for_version(&seen, at, "1.2.0", "frames from 1.2.0").await;

    // Cut off: a newer bundle is targeted meanwhile; the edge keeps deciding with what it has.
    path.set_mode(Mode::BlackHole);
    publish("1.3.0", 3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = versions_after(&seen, at);
    assert_eq!(
        during.keys().collect::<Vec<_>>(),
        ["1.2.0"],
        "while cut off the edge should keep serving 1.2.0: {during:?}"
    );
    assert!(during["1.2.0"] > 20, "frames kept flowing: {during:?}");
    at = last_seq(&seen);

    // Healed: it catches up.
    path.set_mode(Mode::Forward);
    wait_for_version(&seen, at, "1.3.0", "frames from 1.3.0 after healing").await;
    edge.stop().await.unwrap();
    reader.abort();
}

/// Subscribes to every edge's verdicts: the cloud model version of each first judgment, in arrival order
/// (a redelivered frame is answered with the verdict stored before, whatever serves now).
async fn verdict_reader(port: u16) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let reader = pipeline::read_messages(
        port,
        "verdict-reader",
        "tierline/v1/+/+/+/verdicts",
        move |v: Verdict| {
            if !v.redelivery {
                s.lock().unwrap().push(v.cloud_model_version);
            }
        },
    )
    .await;
    (seen, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_worker_takes_full_model_bundles_from_the_registry() {
    const WORKERS: &str = "workers/default";
    let Fleet {
        dir,
        broker,
        ops,
        ops_pub,
        server,
        registry,
    } = fleet().await;
    let (verdicts, reader) = verdict_reader(broker.port()).await;
    // The versions of the verdicts published after the first `from`.
    let versions_from = |from: usize| -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for v in verdicts.lock().unwrap().iter().skip(from) {
            *out.entry(v.clone()).or_insert(0) += 1;
        }
        out
    };
    let wait_verdicts = async |from: usize, version: &str, what: &str| -> usize {
        pipeline::wait_until(
            what,
            Duration::from_secs(60),
            || versions_from(from).contains_key(version),
            || format!("verdict versions since #{from}: {:?}", versions_from(from)),
        )
        .await;
        verdicts.lock().unwrap().len()
    };

    let mut config = pipeline::cloud_config(broker.port(), dir.path(), "w1");
    config.updates.url = Some(format!("http://{}", server.bundles));
    config.updates.trusted_keys = vec![ops_pub];
    config.updates.dir = dir.path().join("worker-models");
    config.updates.interval = Duration::from_millis(200);
    config.updates.shadow_frames = 10;
    let cloud = pipeline::start_cloud(config.clone());
    pipeline::wait_subscribed(&cloud.stats, "cloud subscribed", Duration::from_secs(30)).await;
    // Many suspects, so the worker sees live frames to shadow on.
    let cameras = pipeline::synthetic_cameras(1, 1_000_000, 40.0, 0.3);
    let edge = pipeline::start_edge(pipeline::edge_config(
        broker.port(),
        dir.path(),
        &cameras,
        "audit_rate = 0.5",
    ));
    let mut at = wait_verdicts(0, "1.0.0", "verdicts of the shipped full model").await;

    // Sequence 1 is the shipped model, sequence 2 the same network as 1.1.0.
    let publish = async |manifest: &Path, sequence: u64, key: &SigningKey| {
        let (b, s) = signed(manifest, sequence, key);
        registry
            .publish(&s.to_json(), b.bytes.clone(), "ops")
            .await
            .unwrap();
        b.sha256
    };
    let v1 = publish(&pipeline::models_dir().join("full.toml"), 1, &ops).await;
    registry
        .set_target(WORKERS, &v1, false, "ops", "adopt")
        .await
        .unwrap();
    let applied = |n: u64| {
        let stats = cloud.stats.clone();
        async move {
            pipeline::wait_until(
                &format!("{n} bundles applied on the worker"),
                Duration::from_secs(60),
                || stats.model_updates.applied.load(Ordering::Relaxed) >= n,
                || format!("{:?}", stats.model_updates),
            )
            .await;
        }
    };
    applied(1).await;
    let v2 = publish(&full_variant(dir.path(), "1.1.0", |t| t), 2, &ops).await;
    registry
        .set_target(WORKERS, &v2, false, "ops", "upgrade")
        .await
        .unwrap();
    wait_verdicts(at, "1.1.0", "verdicts of bundle 1.1.0").await;
    applied(2).await;

    // A restarted worker serves what was made active last, not model.manifest.
    cloud.stop().await.unwrap();
    let cloud = pipeline::start_cloud(config.clone());
    pipeline::wait_subscribed(
        &cloud.stats,
        "cloud subscribed again",
        Duration::from_secs(30),
    )
    .await;
    let restarted = verdicts.lock().unwrap().len();
    at = wait_verdicts(restarted, "1.1.0", "verdicts of 1.1.0 after the restart").await;
    // Frames judged just before the swap may still be on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let since_swap = verdicts.lock().unwrap().len();

    // A bundle failing its golden samples (a good sample expected as a stain) is refused; 1.1.0 serves on.
    let wrong = full_variant(dir.path(), "1.2.0", |t| {
        t.replacen("expect = \"good\"", "expect = \"stain\"", 1)
    });
    let v3 = publish(&wrong, 3, &ops).await;
    registry
        .set_target(WORKERS, &v3, false, "ops", "bad upgrade")
        .await
        .unwrap();
    {
        let stats = cloud.stats.clone();
        pipeline::wait_until(
            "the bundle failing its golden samples refused on the worker",
            Duration::from_secs(60),
            || stats.model_updates.rejected.load(Ordering::Relaxed) >= 1,
            || format!("{:?}", stats.model_updates),
        )
        .await;
    }
    at = wait_verdicts(at, "1.1.0", "verdicts after the refusal").await;
    let after = versions_from(since_swap);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["1.1.0"],
        "after the restart every first verdict comes from 1.1.0 (the refused 1.2.0 never served): {after:?}"
    );

    // An explicit rollback to the bundle that served before goes back, without a shadow.
    registry
        .set_target(WORKERS, &v1, true, "ops", "rollback")
        .await
        .unwrap();
    wait_verdicts(at, "1.0.0", "verdicts of 1.0.0 after the rollback").await;

    // Every step is in the worker's store, under the worker (written off the update's path: waited for).
    let store = tierline_cloud::store::Store::open(
        &format!("sqlite://{}", dir.path().join("cloud.db").display()),
        false,
    )
    .await
    .unwrap();
    let wanted: [(&String, &[&str]); 3] = [
        (
            &v2,
            &[
                "verified",
                "downloaded",
                "golden-pass",
                "shadowing",
                "active",
            ],
        ),
        (&v3, &["verified", "downloaded", "rejected"]),
        (&v1, &["rolled-back"]),
    ];
    let started = std::time::Instant::now();
    let events = loop {
        let events = store.model_events(Some("worker/w1"), 1000).await.unwrap();
        let missing: Vec<String> = wanted
            .iter()
            .flat_map(|(sha, steps)| {
                steps
                    .iter()
                    .filter(|w| !events.iter().any(|e| &e.sha256 == *sha && e.event == **w))
                    .map(move |w| format!("{w} of {sha}"))
            })
            .collect();
        if missing.is_empty() {
            break events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "steps never recorded: {missing:?}; recorded: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !events
            .iter()
            .any(|e| e.sha256 == v3 && e.event == "golden-pass"),
        "1.2.0 was refused at its golden samples: {events:?}"
    );
    assert!(
        events.iter().all(|e| e.actor == "w1"),
        "steps recorded under the worker: {events:?}"
    );

    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_hears_of_a_target_change_at_once_from_the_retained_announcement() {
    let Fleet {
        dir,
        broker,
        ops,
        ops_pub,
        server,
        registry,
    } = fleet().await;
    let (seen, reader) = frame_reader(broker.port()).await;
    // A cloud worker on the registry's store announces its targets.
    let mut cloud_config = pipeline::cloud_config(broker.port(), dir.path(), "w1");
    cloud_config.store.url = server.url.clone();
    let cloud = pipeline::start_cloud(cloud_config);
    pipeline::wait_subscribed(&cloud.stats, "cloud subscribed", Duration::from_secs(30)).await;

    // The edge polls the bundle server once at start and then only every hour: only the announcement can
    // tell it of a change within this test.
    let cameras = pipeline::synthetic_cameras(1, 1_000_000, 40.0, 0.05);
    let mut config = pipeline::edge_config(broker.port(), dir.path(), &cameras, "audit_rate = 0.5");
    config.updates.url = Some(format!("http://{}", server.bundles));
    config.updates.trusted_keys = vec![ops_pub];
    config.updates.dir = dir.path().join("models");
    config.updates.interval = Duration::from_secs(3600);
    config.updates.shadow_frames = 20;
    let edge = pipeline::start_edge(config);
    let at = wait_for_version(&seen, 0, "1.1.0", "frames from the shipped model").await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (v2, v2_signed) = signed(&prescreen_variant(dir.path(), "1.2.0", |t| t), 2, &ops);
    registry
        .publish(&v2_signed.to_json(), v2.bytes.clone(), "ops")
        .await
        .unwrap();
    let changed = std::time::Instant::now();
    registry
        .set_target(TARGET, &v2.sha256, false, "ops", "upgrade")
        .await
        .unwrap();
    wait_for_version(
        &seen,
        at,
        "1.2.0",
        "frames from 1.2.0 well before the next poll",
    )
    .await;
    println!(
        "announcement: the edge served 1.2.0 {:.1} s after the target changed (its poll interval: 1 h)",
        changed.elapsed().as_secs_f64()
    );

    // The announcement stays on the broker: a new subscriber gets it at once, naming the bundle.
    let mqtt = MqttConfig {
        port: broker.port(),
        ..Default::default()
    };
    let (sub, mut events) =
        tierline_shared::mqtt::client(mqtt.options("target-reader").unwrap(), 64);
    sub.subscribe(
        tierline_shared::topics::target_filter(TARGET),
        QoS::AtLeastOnce,
    )
    .await
    .unwrap();
    let retained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                return (p.retain, p.payload);
            }
        }
    })
    .await
    .expect("a retained announcement");
    assert!(retained.0, "the announcement is retained");
    let view: serde_json::Value = serde_json::from_slice(&retained.1).unwrap();
    assert_eq!(view["sha256"], v2.sha256.as_str(), "{view}");
    assert_eq!(view["name"], "prescreen", "{view}");
    // It carries the operator's signed statement, which verifies with the operator's key.
    let statement = SignedStatement::parse(view["signed"].as_str().unwrap())
        .unwrap()
        .verify(&TrustedKeys::new(vec![ops.public()]))
        .unwrap();
    assert_eq!(statement.sha256, v2.sha256);
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_download_resumes_by_range_and_a_corrupt_start_fails_the_signed_hash() {
    use tierline_edge::updates::fetch::Server;
    let dir = tempfile::tempdir().unwrap();
    let ops = SigningKey::generate().unwrap();
    let trusted = TrustedKeys::new(vec![ops.public()]);
    let server = start_registry(trusted.clone()).await;
    let registry = Registry::new(server.store.clone(), trusted);
    let (b, s) = signed(&prescreen_variant(dir.path(), "1.2.0", |t| t), 2, &ops);
    registry
        .publish(&s.to_json(), b.bytes.clone(), "ops")
        .await
        .unwrap();
    let bundles = Server::parse(&format!("http://{}", server.bundles)).unwrap();
    let size = b.bytes.len() as u64;

    // The first half arrived before the cut: the rest is fetched by range, and the whole is the archive.
    let part = dir.path().join("staging/a.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &b.bytes[..b.bytes.len() / 2]).unwrap();
    let got = bundles.download(&b.sha256, size, &part).await.unwrap();
    assert_eq!(got, b.bytes);
    let statement = s.verify(&TrustedKeys::new(vec![ops.public()])).unwrap();
    archive::check(&got, &statement).unwrap();

    // A partial file that is not the bundle's start: the resumed whole fails the signed hash.
    let part = dir.path().join("staging/b.part");
    std::fs::write(&part, vec![0u8; 1000]).unwrap();
    let got = bundles.download(&b.sha256, size, &part).await.unwrap();
    assert_eq!(got.len() as u64, size);
    assert!(archive::check(&got, &statement).is_err());
    // Longer than the bundle: started over from the beginning.
    let part = dir.path().join("staging/c.part");
    std::fs::write(&part, vec![0u8; size as usize + 10]).unwrap();
    let got = bundles.download(&b.sha256, size, &part).await.unwrap();
    assert_eq!(got, b.bytes);
}
