//! End to end on real parts: a Mosquitto process (and the embedded broker), a cloud worker on SQLite with the
//! full ONNX model, and an edge with synthetic cameras, a file camera and the prescreen model. The oracle checks
//! that every frame got exactly one line decision, every suspect exactly one stored verdict, and nothing was
//! left behind; and every decision-log line and every stored frame says where its frame came from.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tierline_edge::outbox::Outbox;
use tierline_edge::stats::get;
use tierline_tests::Mosquitto;
use tierline_tests::pipeline;

const CAMERAS: u32 = 2;
const FRAMES_PER_CAMERA: u64 = 60;
/// The file camera's id; it reads the committed sample frames once.
const FILE_CAMERA: &str = "files";

/// The sample frames, as the file camera names them (its directory joined with each file name).
fn sample_files() -> (PathBuf, Vec<String>) {
    let dir = pipeline::models_dir().join("samples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    (dir, files)
}

/// Every line of the log names its frame's capture clock and no part (no trigger here); lines of the file
/// camera name the file each frame was read from, each sample file once (every one of them when the camera
/// queue dropped no frame), and the others name no origin.
/// Every frame the cloud stored has the origin and clock of its decision line. Returns the file camera's
/// frames the cloud stored.
async fn check_provenance(
    dir: &Path,
    log: &tierline_tests::oracle::Decisions,
    none_dropped: bool,
) -> usize {
    let (_, files) = sample_files();
    let camera_of: BTreeMap<u64, &str> = log
        .decisions()
        .map(|d| (d["seq"].as_u64().unwrap(), d["camera_id"].as_str().unwrap()))
        .collect();
    let mut origins: BTreeMap<u64, String> = BTreeMap::new();
    for e in &log.events {
        let seq = e["seq"].as_u64().unwrap();
        assert_eq!(e["capture_clock"], "arrival", "{e}");
        assert!(e.get("part_id").is_none(), "no part trigger here: {e}");
        match camera_of.get(&seq) {
            Some(&FILE_CAMERA) => {
                let origin = e["origin"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no origin: {e}"));
                assert!(
                    files.iter().any(|f| f == origin),
                    "origin {origin} is no sample file: {e}"
                );
                if let Some(seen) = origins.insert(seq, origin.to_string()) {
                    assert_eq!(seen, origin, "one frame, one origin: {e}");
                }
            }
            _ => assert!(
                e.get("origin").is_none(),
                "a synthetic frame has no origin: {e}"
            ),
        }
    }
    let mut decided: Vec<&String> = origins.values().collect();
    decided.sort();
    let before = decided.len();
    decided.dedup();
    assert_eq!(decided.len(), before, "each sample file is one frame");
    if none_dropped {
        assert_eq!(
            decided,
            files.iter().collect::<Vec<_>>(),
            "each sample file decided under its own name"
        );
    }
    let url = format!("sqlite://{}?mode=ro", dir.join("cloud.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let stored: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT seq, camera_id, part_id, origin, capture_clock FROM frames WHERE edge_id = 'edge-t'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let mut from_files = 0;
    for (seq, camera, part, origin, clock) in &stored {
        let logged = origins.get(&(*seq as u64)).map_or("", String::as_str);
        assert_eq!(
            (part.as_str(), origin.as_str(), clock.as_str()),
            ("", logged, "arrival"),
            "stored frame {seq} of {camera}"
        );
        if camera == FILE_CAMERA {
            from_files += 1;
        }
    }
    from_files
}

async fn run_pipeline(port: u16, dir: &Path) {
    let cloud = pipeline::start_cloud(pipeline::cloud_config(port, dir, "w1"));
    let (samples, files) = sample_files();
    let cameras = format!(
        "{}[[camera]]\nid = \"{FILE_CAMERA}\"\nkind = \"files\"\npath = {:?}\nfps = 40\n",
        pipeline::synthetic_cameras(CAMERAS, FRAMES_PER_CAMERA, 40.0, 0.3),
        samples.display().to_string()
    );
    let edge_cfg =
        pipeline::edge_config(port, dir, &cameras, "deadline = \"5s\"\naudit_rate = 0.1");
    let outbox_cfg = edge_cfg.outbox.clone();
    let edge = pipeline::start_edge(edge_cfg);
    let total = u64::from(CAMERAS) * FRAMES_PER_CAMERA + files.len() as u64;
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    pipeline::wait_until(
        "every frame decided and every forwarded frame judged",
        Duration::from_secs(120),
        || {
            let forwarded = get(&e.frames_suspect) + get(&e.frames_audit);
            get(&e.frames_captured) == total
                && get(&e.decisions) + get(&e.frames_dropped) == total
                && get(&c.verdicts_stored) >= forwarded
                && get(&e.verdicts) >= forwarded
        },
        || pipeline::describe(&e, &c),
    )
    .await;
    // The edge's heartbeats tell the cloud each camera's state (the review console's fleet page shows it).
    let ids: Vec<String> = (0..CAMERAS)
        .map(|i| format!("cam-{i}"))
        .chain([FILE_CAMERA.to_string()])
        .collect();
    let url = format!("sqlite://{}?mode=ro", dir.join("cloud.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let json: Option<String> =
            sqlx::query_scalar("SELECT cameras_json FROM edges WHERE edge_id = 'edge-t'")
                .fetch_optional(&pool)
                .await
                .unwrap();
        let cameras: Vec<serde_json::Value> = json
            .as_deref()
            .map(|j| serde_json::from_str(j).unwrap())
            .unwrap_or_default();
        let reported: Vec<&str> = cameras.iter().filter_map(|c| c["id"].as_str()).collect();
        if ids.iter().all(|id| reported.contains(&id.as_str())) {
            assert!(
                cameras
                    .iter()
                    .all(|c| c["up"] == true || c["ended"] == true),
                "every camera delivered its frames: {cameras:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no heartbeat reported cameras {ids:?}: {json:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    let edge_stats = edge.stats.clone();
    edge.stop().await.expect("edge stops cleanly");
    cloud.stop().await.expect("cloud stops cleanly");
    let (log, _) = tierline_tests::oracle::check_pipeline(dir, "edge-t", &edge_stats, total).await;
    let none_dropped = get(&edge_stats.frames_dropped) == 0;
    let from_files = check_provenance(dir, &log, none_dropped).await;
    assert!(
        from_files > 0,
        "the sample frames include defects: some must reach the cloud"
    );
    let backlog = Outbox::open(&outbox_cfg)
        .await
        .unwrap()
        .backlog()
        .await
        .unwrap();
    assert_eq!(
        backlog.frames, 0,
        "every acknowledged frame left the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suspect_gets_one_verdict_through_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    run_pipeline(broker.port(), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suspect_gets_one_verdict_through_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = tierline_demo::broker::EmbeddedBroker::start(
        tierline_shared::wire::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .unwrap();
    run_pipeline(broker.port(), dir.path()).await;
}

/// A detector at both tiers (YOLOv8 layout at the edge, YOLOv5 in the cloud, the same judgement): the boxes
/// where the test planted its spots and holes reach the decision log of every cloud decision and the cloud
/// store, in frame pixels, through the letterbox the manifests ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detectors_boxes_reach_the_decision_log_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = pipeline::models_dir().join("fixtures/own");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    // Planted by `models/tools/fixtures.py`: a bright 16x16 square at (48, 32), a dark one at (96, 64).
    let planted = |name: &str| match name {
        n if n.contains("spot") => Some(("spot", [48.0, 32.0, 16.0, 16.0])),
        n if n.contains("hole") => Some(("hole", [96.0, 64.0, 16.0, 16.0])),
        _ => None,
    };
    for (i, src) in ["det-spot.png", "det-good.png", "det-hole.png"]
        .iter()
        .cycle()
        .take(9)
        .enumerate()
    {
        std::fs::copy(fixtures.join(src), frames.join(format!("{i:02}-{src}"))).unwrap();
    }
    let broker = Mosquitto::start(dir.path());
    let mut cloud_config = pipeline::cloud_config(broker.port(), dir.path(), "w1");
    cloud_config.model.manifest = fixtures.join("detector-yolov5.toml");
    let cloud = pipeline::start_cloud(cloud_config);
    let cameras = format!(
        "[[camera]]\nid = \"files\"\nkind = \"files\"\npath = {:?}\nfps = 10\n",
        frames.display().to_string()
    );
    let mut edge_config = pipeline::edge_config(
        broker.port(),
        dir.path(),
        &cameras,
        "deadline = \"10s\"\naudit_rate = 0.0",
    );
    edge_config.model.manifest = fixtures.join("detector-yolov8.toml");
    let edge = pipeline::start_edge(edge_config);
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    pipeline::wait_until(
        "every file decided",
        Duration::from_secs(60),
        || get(&e.decisions) == 9,
        || pipeline::describe(&e, &c),
    )
    .await;
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();

    let log = tierline_tests::oracle::Decisions::read(&dir.path().join("decisions.jsonl"));
    let mut checked = 0;
    for d in log.decisions() {
        let origin = d["origin"].as_str().unwrap();
        match planted(origin) {
            Some((class, [x, y, w, h])) => {
                assert_eq!(d["source"], "cloud", "{d}");
                assert_eq!(d["cloud_label"], class, "{d}");
                let r = &d["regions"][0];
                let got = [&r["x"], &r["y"], &r["w"], &r["h"]].map(|v| v.as_f64().unwrap());
                assert_eq!(got, [x, y, w, h], "{origin}: {d}");
                assert_eq!(r["class"], class, "{d}");
                checked += 1;
            }
            None => {
                assert_eq!(
                    (&d["action"], &d["source"]),
                    (&"pass".into(), &"edge".into()),
                    "{d}"
                );
                assert!(
                    d.get("regions").is_none(),
                    "a good frame names no region: {d}"
                );
            }
        }
    }
    assert_eq!(
        checked, 6,
        "every planted defect was decided by the cloud with its box"
    );
    // The store has the same boxes, read back as the review API serves them.
    let store = tierline_cloud::store::Store::open(
        &format!("sqlite://{}", dir.path().join("cloud.db").display()),
        true,
    )
    .await
    .unwrap();
    let rows = store
        .list_frames(&tierline_cloud::store::FrameFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        let (class, [x, y, w, h]) = planted(&row.origin).unwrap();
        let regions = row.regions();
        assert_eq!(regions.len(), 1, "{}", row.origin);
        let r = &regions[0];
        assert_eq!(
            (r.class_name.as_str(), r.x, r.y, r.width, r.height),
            (class, x as f32, y as f32, w as f32, h as f32)
        );
    }
}
