//! Staged rollouts on a fleet of three edges (in-process, synthetic cameras, a real Mosquitto) and a cloud
//! worker running the rollout controller and the bundle server. The oracle is what leaves the edges: the
//! model version every frame on the broker carries, per edge and with the time it was seen, read by a
//! separate subscriber; and the registry's recorded events.
//!
//! A good bundle goes to one edge, then two, then all three, each stage only after the one before has
//! served it for the soak time. A bundle failing its golden samples is refused by the canary and the rollout
//! is rolled back with no other edge touched. A bundle that forwards nearly every frame (the edges' own
//! shadow gates are opened wide here, so it gets through them) becomes active on the canary only, fails the
//! controller's forwarded-share gate there, and the canary is rolled back automatically.
//!
//! A partition during a rollout: the edge of the last stage is cut off from the broker and the bundle
//! server; it keeps its model, the rollout finishes without it, and it converges after healing.
//!
//! Two worker processes on PostgreSQL: the one running the controller is killed with SIGKILL while the
//! canary serves the new bundle; the other takes the controller's lease and finishes the rollout.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tierline_cloud::registry::Registry;
use tierline_cloud::rollout::{self, RolloutConfig};
use tierline_cloud::store::{RolloutRow, Store};
use tierline_shared::bundle::{SignedStatement, SigningKey, TrustedKeys, archive};
use tierline_shared::wire::FrameEnvelope;
use tierline_tests::bundles::{prescreen_variant, with_threshold};
use tierline_tests::mosquitto::Mosquitto;
use tierline_tests::pg::TestDb;
use tierline_tests::pipeline;
use tierline_tests::process;
use tierline_tests::proxy::{Mode, Proxy};

const GROUP: &str = "l1";
const SOAK: Duration = Duration::from_secs(2);

/// Packs and signs `manifest` at `sequence`.
fn signed(manifest: &Path, sequence: u64, key: &SigningKey) -> (archive::Packed, SignedStatement) {
    let packed = archive::pack(manifest).unwrap();
    let signed = SignedStatement::sign(&packed.statement(sequence), key).unwrap();
    (packed, signed)
}

/// Frames seen on the broker, per edge: (when seen, seq, model version), in arrival order.
type Seen = Arc<Mutex<BTreeMap<String, Vec<(Instant, u64, String)>>>>;

async fn frame_reader(port: u16) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let reader = pipeline::read_messages(
        port,
        "rollout-frame-reader",
        "tierline/v1/+/+/+/frames",
        move |f: FrameEnvelope| {
            s.lock()
                .unwrap()
                .entry(f.edge_id.clone())
                .or_default()
                .push((Instant::now(), f.seq, f.edge_model_version));
        },
    )
    .await;
    (seen, reader)
}

/// When `edge` first sent a new frame (seq above any seen before `since`) carrying `version` after `since`.
fn first_with(seen: &Seen, edge: &str, version: &str, since: Instant) -> Option<Instant> {
    let seen = seen.lock().unwrap();
    let frames = seen.get(edge)?;
    let top = frames
        .iter()
        .filter(|(t, ..)| *t < since)
        .map(|(_, s, _)| *s)
        .max()
        .unwrap_or(0);
    frames
        .iter()
        .find(|(t, s, v)| *t >= since && *s > top && v == version)
        .map(|(t, ..)| *t)
}

/// Versions `edge` sent in new frames after `since`, in order of first appearance, with counts.
fn versions_since(seen: &Seen, edge: &str, since: Instant) -> Vec<(String, usize)> {
    let seen = seen.lock().unwrap();
    let Some(frames) = seen.get(edge) else {
        return vec![];
    };
    let top = frames
        .iter()
        .filter(|(t, ..)| *t < since)
        .map(|(_, s, _)| *s)
        .max()
        .unwrap_or(0);
    let mut out: Vec<(String, usize)> = Vec::new();
    for (_, _, v) in frames.iter().filter(|(t, s, _)| *t >= since && *s > top) {
        match out.iter_mut().find(|(x, _)| x == v) {
            Some((_, n)) => *n += 1,
            None => out.push((v.clone(), 1)),
        }
    }
    out
}

/// The latest version `edge` sent.
fn latest(seen: &Seen, edge: &str) -> String {
    let seen = seen.lock().unwrap();
    seen.get(edge)
        .and_then(|f| f.iter().max_by_key(|(_, s, _)| *s))
        .map(|(_, _, v)| v.clone())
        .unwrap_or_default()
}

async fn wait_rollout(store: &Store, id: i64, states: &[&str], timeout: Duration) -> RolloutRow {
    let start = Instant::now();
    loop {
        let row = store.rollout(id).await.unwrap().unwrap();
        if states.contains(&row.state.as_str()) {
            return row;
        }
        assert!(
            start.elapsed() < timeout,
            "rollout {id} not {states:?} within {timeout:?}: {} stage {}: {} {}",
            row.state,
            row.stage,
            row.reason,
            row.progress
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_all_on(seen: &Seen, edges: &[String], version: &str, since: Instant, what: &str) {
    let s = seen.clone();
    let v = version.to_string();
    let e = edges.to_vec();
    pipeline::wait_until(
        what,
        Duration::from_secs(90),
        || e.iter().all(|id| first_with(&s, id, &v, since).is_some()),
        || {
            e.iter()
                .map(|id| format!("{id}: {:?}", versions_since(&s, id, since)))
                .collect::<Vec<_>>()
                .join("; ")
        },
    )
    .await;
}

/// Starts one edge (`edge-1` …) per path in `paths` (its broker's port and the bundle server's address), in
/// group `GROUP` on synthetic cameras, with their shadow gates wide open (so a bundle that forwards too much
/// reaches the controller's gates).
fn start_edges(
    paths: &[(u16, String)],
    dir: &Path,
    ops_pub: &Path,
) -> (
    Vec<String>,
    Vec<pipeline::Running<tierline_edge::EdgeStats>>,
) {
    let ids: Vec<String> = (1..=paths.len()).map(|i| format!("edge-{i}")).collect();
    let mut edges = Vec::new();
    for (i, (id, (port, bundles))) in ids.iter().zip(paths).enumerate() {
        let home = dir.join(id);
        std::fs::create_dir_all(&home).unwrap();
        let cameras = pipeline::synthetic_cameras(1, 1_000_000, 40.0, 0.05)
            .replace("seed = 7", &format!("seed = {}", 70 + i));
        let mut c = pipeline::edge_config(*port, &home, &cameras, "audit_rate = 0.05");
        c.edge.id = id.clone();
        c.updates.url = Some(format!("http://{bundles}"));
        c.updates.trusted_keys = vec![ops_pub.to_path_buf()];
        c.updates.dir = home.join("models");
        c.updates.interval = Duration::from_millis(200);
        // Enough frames that the serving model flags some (5 % defects), so the wide gate is never 2 % of 0.
        c.updates.shadow_frames = 200;
        c.updates.min_agreement = 0.0;
        c.updates.max_suspect_ratio = 1000.0;
        edges.push(pipeline::start_edge(c));
    }
    (ids, edges)
}

/// Waits until `n` edges have named group `GROUP` in their heartbeats (the controller's members), each
/// serving `version` there: a rollout starts only once the group is on its target.
async fn wait_members(store: &Store, n: usize, version: &str) {
    let started = Instant::now();
    loop {
        let edges = store.list_edges().await.unwrap();
        let members: Vec<_> = edges.iter().filter(|e| e.update_group == GROUP).collect();
        if members.len() >= n && members.iter().all(|e| e.edge_model_version == version) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the heartbeats of {n} edges never all named group {GROUP} and {version}: {:?}",
            members
                .iter()
                .map(|e| (&e.edge_id, &e.edge_model_version))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_roll_out_stage_by_stage_and_bad_ones_are_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let ops = SigningKey::generate().unwrap();
    let ops_pub = dir.path().join("ops.pub");
    std::fs::write(&ops_pub, ops.public().to_file_text()).unwrap();

    // One cloud worker: verdicts, the bundle server, and the rollout controller.
    let mut config = pipeline::cloud_config(broker.port(), dir.path(), "w1");
    config.registry.listen = Some(([127, 0, 0, 1], 0).into());
    config.registry.trusted_keys = vec![ops_pub.clone()];
    config.rollouts = RolloutConfig {
        stages: vec!["1".into(), "50%".into(), "100%".into()],
        soak: SOAK,
        stage_timeout: Duration::from_secs(60),
        min_frames: 40,
        interval: Duration::from_millis(300),
        lease_ttl: Duration::from_secs(3),
        // Three edges, a cloud worker and the test share two cores here: latency is not what is tested.
        latency_slack: Duration::from_secs(5),
        ..RolloutConfig::default()
    };
    let cfg = config.rollouts.clone();
    let cloud = pipeline::start_cloud(config);
    pipeline::wait_subscribed(&cloud.stats, "cloud subscribed", Duration::from_secs(30)).await;
    let bundles = *cloud.bundles_addr.get().unwrap();
    let store = Store::open(
        &format!("sqlite://{}", dir.path().join("cloud.db").display()),
        true,
    )
    .await
    .unwrap();
    let registry = Registry::new(store.clone(), TrustedKeys::new(vec![ops.public()]));
    let publish = |manifest: std::path::PathBuf, sequence: u64| {
        let (registry, ops) = (registry.clone(), &ops);
        let (b, s) = signed(&manifest, sequence, ops);
        async move {
            registry
                .publish(&s.to_json(), b.bytes.clone(), "ops")
                .await
                .unwrap();
            b.sha256
        }
    };

    // The fleet's model before any rollout: the shipped prescreen as 1.2.0, the group's target.
    let base = publish(prescreen_variant(dir.path(), "1.2.0", |t| t), 1).await;
    registry
        .set_target(&format!("edges/{GROUP}"), &base, false, "ops", "first")
        .await
        .unwrap();

    let (seen, reader) = frame_reader(broker.port()).await;
    // edge-3 reaches the broker and the bundle server through proxies that can cut it off (part 3).
    let (broker_path, bundle_path) = (
        Proxy::start(([127, 0, 0, 1], broker.port()).into())
            .await
            .unwrap(),
        Proxy::start(bundles).await.unwrap(),
    );
    let direct = (broker.port(), bundles.to_string());
    let paths = [
        direct.clone(),
        direct,
        (broker_path.port(), bundle_path.addr().to_string()),
    ];
    let (ids, edges) = start_edges(&paths, dir.path(), &ops_pub);
    let t0 = Instant::now();
    wait_all_on(
        &seen,
        &ids,
        "1.2.0",
        t0,
        "every edge on the group's bundle 1.2.0",
    )
    .await;
    wait_members(&store, 3, "1.2.0").await;

    // 1. A good bundle: one edge, then two, then all three, a soak apart.
    let good = publish(prescreen_variant(dir.path(), "1.3.0", |t| t), 2).await;
    let t1 = Instant::now();
    let row = rollout::start(&store, &cfg, GROUP, &good, "ops", "good one")
        .await
        .unwrap();
    let done = wait_rollout(&store, row.id, &["done"], Duration::from_secs(120)).await;
    wait_all_on(&seen, &ids, "1.3.0", t1, "every edge on 1.3.0").await;
    let mut firsts: Vec<(Instant, String)> = ids
        .iter()
        .map(|id| (first_with(&seen, id, "1.3.0", t1).unwrap(), id.clone()))
        .collect();
    firsts.sort();
    eprintln!(
        "good rollout: done in {:.1} s; first 1.3.0 frame per edge at {:?}",
        t1.elapsed().as_secs_f64(),
        firsts
            .iter()
            .map(|(t, id)| format!("{id} +{:.1} s", (*t - t1).as_secs_f64()))
            .collect::<Vec<_>>()
    );
    assert_eq!(firsts[0].1, "edge-1", "the canary is the first edge");
    for w in firsts.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= SOAK,
            "{} switched {:?} after {}, less than the soak time {SOAK:?}: stages overlapped",
            w[1].1,
            w[1].0 - w[0].0,
            w[0].1
        );
    }
    assert_eq!(done.stage, 2, "three stages: {}", done.reason);

    // 2. Bundles that must not get past the canary; every edge ends on 1.3.0.
    let fails_golden = prescreen_variant(dir.path(), "1.4.0", |t| with_threshold(t, "0.0"));
    let forwards_everything = prescreen_variant(dir.path(), "1.5.0", |t| {
        // Only the defect golden samples stay, so it passes them; on live frames it flags nearly all.
        let head = t.split("[[golden]]").next().unwrap().to_string();
        with_threshold(head, "0.001")
            + "\n[[golden]]\nfile = \"golden/spot-0.png\"\nexpect = \"defect\"\n"
            + "[[golden]]\nfile = \"golden/dent-0.png\"\nexpect = \"defect\"\n"
    });
    for (manifest, sequence, version, why) in [
        (fails_golden, 3, "1.4.0", "refused the bundle"),
        (forwards_everything, 4, "1.5.0", "forwards"),
    ] {
        let sha = publish(manifest, sequence).await;
        let t = Instant::now();
        let row = rollout::start(&store, &cfg, GROUP, &sha, "ops", version)
            .await
            .unwrap();
        let end = wait_rollout(&store, row.id, &["rolled-back"], Duration::from_secs(120)).await;
        eprintln!(
            "bad rollout {version}: rolled back after {:.1} s: {}",
            t.elapsed().as_secs_f64(),
            end.reason
        );
        assert!(
            end.reason.contains("edge-1") && end.reason.contains(why),
            "{version}: the reason names the canary and why: {}",
            end.reason
        );
        assert_eq!(end.stage, 0, "{version} stopped at the first stage");
        // Every edge serves 1.3.0 again (or never left it), and only the canary ever tried the bundle.
        let after = Instant::now();
        wait_all_on(&seen, &ids, "1.3.0", after, "every edge back on 1.3.0").await;
        for id in &ids[1..] {
            let sent = versions_since(&seen, id, t);
            assert!(
                sent.iter().all(|(v, _)| v == "1.3.0"),
                "{id} never serves {version}: {sent:?}"
            );
        }
        let events = store.bundle_events(&sha, 0).await.unwrap();
        assert!(
            events.iter().all(|e| !ids[1..].contains(&e.subject)),
            "only the canary heard of {version}: {events:?}"
        );
        let rollout_events: Vec<String> = store
            .model_events(Some(&format!("rollout/{}", row.id)), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(
            rollout_events,
            ["rollout-started", "gate-failed", "rolled-back"],
            "{version}"
        );
        if version == "1.5.0" {
            // It did serve on the canary, then the canary went back by itself.
            let on = first_with(&seen, "edge-1", "1.5.0", t).expect("1.5.0 served on the canary");
            let back = first_with(&seen, "edge-1", "1.3.0", on).expect("canary back on 1.3.0");
            eprintln!(
                "automatic rollback: the canary served 1.5.0 for {:.1} s",
                (back - on).as_secs_f64()
            );
        }
        for id in &ids {
            assert_eq!(latest(&seen, id), "1.3.0", "{id} ends on 1.3.0");
        }
    }

    // 3. A partition during a rollout: once it started, edge-3 (the last stage's) is cut off from the broker
    // and the bundle server, without a packet or a close getting through. It keeps deciding on 1.3.0; the
    // broker marks it offline; the rollout finishes on the edges it reaches; after healing edge-3 follows the
    // group target to the new bundle.
    let v16 = publish(prescreen_variant(dir.path(), "1.6.0", |t| t), 5).await;
    wait_members(&store, 3, "1.3.0").await;
    let t3 = Instant::now();
    let row = rollout::start(&store, &cfg, GROUP, &v16, "ops", "during a partition")
        .await
        .unwrap();
    broker_path.set_mode(Mode::BlackHole);
    bundle_path.set_mode(Mode::BlackHole);
    let done = wait_rollout(&store, row.id, &["done"], Duration::from_secs(120)).await;
    eprintln!(
        "partition: rollout done {:.1} s after its start with edge-3 cut off: {}",
        t3.elapsed().as_secs_f64(),
        done.reason
    );
    assert!(
        done.progress
            .contains("offline; follows the group target when back"),
        "the cut-off edge is waited for when back, not failed: {}",
        done.progress
    );
    wait_all_on(&seen, &ids[..2], "1.6.0", t3, "edge-1 and edge-2 on 1.6.0").await;
    assert!(
        first_with(&seen, "edge-3", "1.6.0", t3).is_none(),
        "edge-3 was cut off from the bundle"
    );
    let healed = Instant::now();
    broker_path.set_mode(Mode::Forward);
    bundle_path.set_mode(Mode::Forward);
    wait_all_on(
        &seen,
        &ids[2..],
        "1.6.0",
        healed,
        "edge-3 on 1.6.0 after healing",
    )
    .await;
    // What it decided while cut off arrives first, judged by the model it kept.
    let sent = versions_since(&seen, "edge-3", healed);
    eprintln!(
        "partition: edge-3 on 1.6.0 {:.1} s after healing; frames since: {sent:?}",
        (first_with(&seen, "edge-3", "1.6.0", healed).unwrap() - healed).as_secs_f64()
    );
    assert_eq!(
        sent.first().map(|(v, _)| v.as_str()),
        Some("1.3.0"),
        "edge-3's backlog from the cut was judged by 1.3.0: {sent:?}"
    );
    assert!(
        sent.first().is_some_and(|(_, n)| *n >= 5),
        "edge-3 kept deciding while cut off: {sent:?}"
    );
    assert_eq!(sent.last().map(|(v, _)| v.as_str()), Some("1.6.0"));

    for e in edges {
        e.stop().await.unwrap();
    }
    reader.abort();
    cloud.stop().await.unwrap();
}

/// A cloud worker process.
struct Worker {
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Worker {
    fn start(dir: &Path, id: &str, toml: &str) -> Self {
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{id}.log"));
        let child = Some(process::spawn_cloud(&config, &log));
        Self { log, child }
    }

    fn logged(&self, line: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(line)
            .count()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::terminate(&mut c);
        }
    }
}

async fn wait_logged(w: &Worker, line: &str, what: &str) {
    let started = Instant::now();
    while w.logged(line) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {}",
            std::fs::read_to_string(&w.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_the_kill_9_of_its_controller() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let db = TestDb::create("rollout_leader").await;
    let ops = SigningKey::generate().unwrap();
    let ops_pub = dir.path().join("ops.pub");
    std::fs::write(&ops_pub, ops.public().to_file_text()).unwrap();
    let ports = [free_port(), free_port()];
    let toml = |id: &str, port: u16| {
        let extra = format!(
            "[registry]\nlisten = \"127.0.0.1:{port}\"\ntrusted_keys = [{ops_pub:?}]\n\
             [rollouts]\nstages = [\"1\", \"100%\"]\nsoak = \"2s\"\nstage_timeout = \"60s\"\nmin_frames = 40\n\
             interval = \"300ms\"\nlease_ttl = \"3s\"\nlatency_slack = \"5s\"\n"
        );
        process::cloud_worker_toml(broker.port(), id, &db.url, &extra)
    };
    // The first worker leads; the second starts once it does.
    let mut leader = Worker::start(dir.path(), "w1", &toml("w1", ports[0]));
    wait_logged(&leader, "Rollout controller lease taken.", "w1 leading").await;
    let follower = Worker::start(dir.path(), "w2", &toml("w2", ports[1]));
    wait_logged(&follower, "Subscribed; receiving frames.", "w2 subscribed").await;

    let store = Store::open(&db.url, true).await.unwrap();
    let registry = Registry::new(store.clone(), TrustedKeys::new(vec![ops.public()]));
    let mut published = Vec::new();
    for (version, sequence) in [("1.2.0", 1), ("1.3.0", 2)] {
        let (b, s) = signed(
            &prescreen_variant(dir.path(), version, |t| t),
            sequence,
            &ops,
        );
        registry
            .publish(&s.to_json(), b.bytes.clone(), "ops")
            .await
            .unwrap();
        published.push(b.sha256);
    }
    registry
        .set_target(
            &format!("edges/{GROUP}"),
            &published[0],
            false,
            "ops",
            "first",
        )
        .await
        .unwrap();
    // The edges download from the worker that stays.
    let (seen, reader) = frame_reader(broker.port()).await;
    let bundles = format!("127.0.0.1:{}", ports[1]);
    let direct = (broker.port(), bundles);
    let (ids, edges) = start_edges(&[direct.clone(), direct], dir.path(), &ops_pub);
    let t0 = Instant::now();
    wait_all_on(&seen, &ids, "1.2.0", t0, "both edges on 1.2.0").await;
    wait_members(&store, 2, "1.2.0").await;

    let cfg = RolloutConfig {
        stages: vec!["1".into(), "100%".into()],
        ..RolloutConfig::default()
    };
    let t1 = Instant::now();
    let row = rollout::start(&store, &cfg, GROUP, &published[1], "ops", "failover")
        .await
        .unwrap();
    // Mid-rollout: the canary serves the new bundle; the leader dies before the last stage.
    let s = seen.clone();
    pipeline::wait_until(
        "the canary on 1.3.0",
        Duration::from_secs(60),
        || first_with(&s, "edge-1", "1.3.0", t1).is_some(),
        || format!("{:?}", versions_since(&s, "edge-1", t1)),
    )
    .await;
    let mid = store.rollout(row.id).await.unwrap().unwrap();
    assert_eq!(
        (mid.state.as_str(), mid.stage),
        ("running", 0),
        "killed mid-rollout"
    );
    let mut child = leader.child.take().unwrap();
    process::kill9(&mut child);
    let killed = Instant::now();
    eprintln!("rollout: killed the controller's worker w1 with SIGKILL at stage 1");

    let done = wait_rollout(&store, row.id, &["done"], Duration::from_secs(120)).await;
    assert!(
        follower.logged("Rollout controller lease taken.") >= 1,
        "w2 took the controller's lease"
    );
    wait_all_on(&seen, &ids, "1.3.0", t1, "both edges on 1.3.0").await;
    eprintln!(
        "rollout: done {:.1} s after the kill: {}",
        killed.elapsed().as_secs_f64(),
        done.reason
    );
    let events: Vec<(String, String)> = store
        .model_events(Some(&format!("rollout/{}", row.id)), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.actor))
        .collect();
    assert_eq!(
        events.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        ["rollout-started", "stage", "done"],
        "{events:?}"
    );
    for e in edges {
        e.stop().await.unwrap();
    }
    reader.abort();
    drop(follower);
    drop(leader);
}
