//! Cameras against real servers: the GStreamer RTSP server (H.264 and MJPEG over RTP, killed and restarted
//! as a rebooting camera; VP8 and audio-only streams the edge cannot decode), an HTTP MJPEG and snapshot
//! camera, and a fault proxy between camera and edge that freezes (socket open, no data) and resets. The oracle is what the servers sent and what the edge's
//! decision log and the cloud's store hold, not the edge's own counters alone.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_cloud::api::pb::{self, review_client::ReviewClient};
use tierline_edge::stats::get;
use tierline_tests::Mosquitto;
use tierline_tests::camera::{self, HttpCamera, RtspServer};
use tierline_tests::oracle::{Decisions, Stored};
use tierline_tests::pipeline;
use tierline_tests::process;
use tierline_tests::proxy::{Mode, Proxy};

/// Refreshes `/readyz` twice a second. It lands in the `[admin]` table: `pipeline::edge_config` writes the
/// cameras' text right after that table's keys.
const FAST_CHECKS: &str = "check_every = \"500ms\"\n";

/// Seconds-scale watchdog settings so faults are seen quickly.
const WATCHDOG: &str = "no_frame_timeout = \"1s\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\nconnect_timeout = \"3s\"\n";

fn camera_frames(d: &Decisions, camera: &str) -> usize {
    d.decisions().filter(|e| e["camera_id"] == camera).count()
}

async fn readyz(addr: std::net::SocketAddr) -> serde_json::Value {
    let (_, body) = tierline_tests::http::get(addr, "/readyz").await.unwrap();
    serde_json::from_str(&body).unwrap()
}

/// The value of metric `name` for `camera` in a scrape.
fn camera_metric(metrics: &str, name: &str, camera: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{camera=\"{camera}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} for {camera} missing from metrics:\n{metrics}"))
}

/// Polls `/readyz` until check `name` has `ok`; returns that report.
async fn wait_check(admin: std::net::SocketAddr, name: &str, ok: bool) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let r = readyz(admin).await;
        // A camera's check appears once the camera has started.
        let found = r["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["name"] == name));
        if found.is_some_and(|c| c["ok"] == ok) {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} never became ok = {ok}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker, a cloud worker and an edge with `cameras`; a 5 s deadline lets suspects wait for the cloud.
fn start_line(
    dir: &std::path::Path,
    cameras: &str,
) -> (
    Mosquitto,
    pipeline::Running<tierline_cloud::CloudStats>,
    pipeline::Running<tierline_edge::stats::EdgeStats>,
) {
    let broker = Mosquitto::start(dir);
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir, "w1"));
    let edge = pipeline::start_edge(pipeline::edge_config(
        broker.port(),
        dir,
        cameras,
        "deadline = \"5s\"",
    ));
    (broker, cloud, edge)
}

/// An edge with `cameras` and no cloud worker: a 300 ms deadline decides every frame at the edge.
fn start_edge(
    broker: &Mosquitto,
    dir: &std::path::Path,
    cameras: &str,
) -> pipeline::Running<tierline_edge::stats::EdgeStats> {
    pipeline::start_edge(pipeline::edge_config(
        broker.port(),
        dir,
        cameras,
        "deadline = \"300ms\"",
    ))
}

/// Oracle after a run of [`start_line`]: every frame taken got one decision, the edge acted on exactly what
/// the cloud stored, and each of `cams` had defective frames that reached the cloud and were found there.
async fn assert_defects_found_by_the_cloud(dir: &std::path::Path, cams: &[&str]) {
    let d = Decisions::read(&dir.join("decisions.jsonl"));
    d.assert_one_decision_each(d.per_seq().len() as u64);
    let stored = Stored::read(&dir.join("cloud.db")).await;
    stored.check_labels("edge-t", &d);
    for cam in cams {
        let judged = d
            .decisions()
            .filter(|e| e["camera_id"] == *cam && e["source"] == "cloud")
            .count();
        let defects_found = d
            .decisions()
            .filter(|e| {
                e["camera_id"] == *cam && e["source"] == "cloud" && e["cloud_label"] != "good"
            })
            .count();
        println!("{cam}: {judged} frames judged by the cloud, {defects_found} of them defective");
        assert!(
            defects_found > 0,
            "{cam}: defective frames from the stream reached the cloud and were found"
        );
    }
}

fn check<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_h264_and_mjpeg_cameras_are_judged_end_to_end_and_survive_a_camera_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    // Every other frame carries a defect; the server loops over them at 30 fps.
    let truth = camera::write_frames(&frames, 20, 11, 0.5, 640, 480);
    let defects = truth.iter().filter(|t| *t != "good").count();
    println!("frames: {} with a defect of {}", defects, truth.len());
    let mut server = RtspServer::start(&["--frames", frames.to_str().unwrap(), "--fps", "30"]);
    let cameras = format!(
        "{FAST_CHECKS}[[camera]]\nid = \"h264\"\nkind = \"rtsp\"\nurl = \"{}\"\nfps = 10\n{WATCHDOG}\
         [[camera]]\nid = \"mjpeg\"\nkind = \"rtsp\"\nurl = \"{}\"\ntransport = \"udp\"\nfps = 10\n{WATCHDOG}",
        server.url("h264"),
        server.url("mjpeg"),
    );
    let (_broker, cloud, edge) = start_line(dir.path(), &cameras);
    let log = dir.path().join("decisions.jsonl");
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    pipeline::wait_until(
        "both RTSP cameras delivering and suspects judged by the cloud",
        Duration::from_secs(60),
        || {
            let d = Decisions::read(&log);
            camera_frames(&d, "h264") >= 30
                && camera_frames(&d, "mjpeg") >= 30
                && get(&c.verdicts_stored) >= 4
        },
        || pipeline::describe(&e, &c),
    )
    .await;
    let admin = *edge.admin_addr.get().unwrap();
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    // Pacing: a 30 fps stream judged at 10 fps leaves about two frames of three.
    let value = |name: &str, cam: &str| camera_metric(&metrics, name, cam);
    let (kept, skipped) = (
        value("tierline_edge_camera_frames_total", "h264"),
        value("tierline_edge_camera_frames_skipped_total", "h264"),
    );
    println!("h264 camera: kept {kept}, skipped by pacing {skipped}");
    assert!(
        skipped >= kept * 1.5 && skipped <= kept * 2.6,
        "pacing 30 → 10 fps: kept {kept}, skipped {skipped}"
    );

    // A camera reboot: the server is killed and comes back on the same port.
    wait_check(admin, "camera h264", true).await;
    server.kill();
    let r = wait_check(admin, "camera h264", false).await;
    println!("while the camera is off: {}", check(&r, "camera h264"));
    assert!(
        r["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "camera h264"),
        "{r}"
    );
    assert_eq!(
        r["ready"], true,
        "a camera down leaves the edge ready, degraded: {r}"
    );
    server.restart();
    let before = Decisions::read(&log);
    let (h0, m0) = (
        camera_frames(&before, "h264"),
        camera_frames(&before, "mjpeg"),
    );
    pipeline::wait_until(
        "both RTSP cameras back after the reboot",
        Duration::from_secs(30),
        || {
            let d = Decisions::read(&log);
            camera_frames(&d, "h264") >= h0 + 10 && camera_frames(&d, "mjpeg") >= m0 + 10
        },
        || pipeline::describe(&e, &c),
    )
    .await;
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("tierline_edge_camera_reconnects_total{camera=\"h264\"} 1")
            || metrics.lines().any(|l| l
                .starts_with("tierline_edge_camera_reconnects_total{camera=\"h264\"}")
                && !l.ends_with(" 0")),
        "the reboot is counted as a reconnect:\n{metrics}"
    );
    wait_check(admin, "camera h264", true).await;

    // Capture times come from the stream once the camera's first RTCP sender report arrived (every few
    // seconds): the frame's RTP time mapped to wall time, within moments of now on this one machine.
    pipeline::wait_until(
        "a frame timed by the stream's sender reports",
        Duration::from_secs(20),
        || {
            Decisions::read(&log)
                .decisions()
                .any(|e| e["camera_id"] == "h264" && e["capture_clock"] == "stream")
        },
        || pipeline::describe(&e, &c),
    )
    .await;
    let now_us = tierline_shared::time::now_us();
    for d in Decisions::read(&log)
        .decisions()
        .filter(|e| e["capture_clock"] == "stream")
    {
        let t = d["capture_time_us"].as_i64().unwrap();
        assert!(
            (now_us - t).abs() < 30_000_000,
            "stream time far from wall time: {d}"
        );
    }
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    // Capture times never go back within a camera.
    for cam in ["h264", "mjpeg"] {
        let times: Vec<i64> = Decisions::read(&log)
            .decisions()
            .filter(|e| e["camera_id"] == cam)
            .map(|e| {
                (
                    e["seq"].as_u64().unwrap(),
                    e["capture_time_us"].as_i64().unwrap(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{cam}: capture times go back"
        );
    }
    // Oracle: the suspects of both cameras reached the cloud and were judged there.
    assert_defects_found_by_the_cloud(dir.path(), &["h264", "mjpeg"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_or_reset_http_camera_recovers_and_the_other_cameras_never_stop() {
    let dir = tempfile::tempdir().unwrap();
    let jpegs = camera::jpeg_frames(8, 3, 320, 240);
    // Every 7th part is a truncated JPEG: counted and skipped, the stream goes on.
    let cam = HttpCamera::start(jpegs.clone(), 20.0, 7).await;
    let proxy = Proxy::start(cam.addr).await.unwrap();
    let broker = Mosquitto::start(dir.path());
    let cameras = format!(
        "{FAST_CHECKS}[[camera]]\nid = \"behind-proxy\"\nkind = \"mjpeg\"\nurl = \"http://127.0.0.1:{}/mjpeg\"\nfps = 20\n{WATCHDOG}\
         [[camera]]\nid = \"direct\"\nkind = \"mjpeg\"\nurl = \"http://{}/mjpeg\"\nfps = 20\n{WATCHDOG}\
         [[camera]]\nid = \"snap\"\nkind = \"snapshot\"\nurl = \"http://{}/snapshot.jpg\"\nfps = 5\n{WATCHDOG}\
         [[camera]]\nid = \"not-a-camera\"\nkind = \"mjpeg\"\nurl = \"http://user:hunter2@{}/page\"\n{WATCHDOG}\
         [[camera]]\nid = \"nobody-home\"\nkind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:1/x\"\n{WATCHDOG}",
        proxy.port(),
        cam.addr,
        cam.addr,
        cam.addr,
    );
    // No cloud worker: these frames are decided at the edge; the cameras are what is under test.
    let edge = start_edge(&broker, dir.path(), &cameras);
    let log = dir.path().join("decisions.jsonl");
    let e = edge.stats.clone();
    let count = |cam: &str| camera_frames(&Decisions::read(&log), cam);
    pipeline::wait_until(
        "the working cameras deliver, though two cameras are broken from the start",
        Duration::from_secs(30),
        || count("behind-proxy") >= 20 && count("direct") >= 20 && count("snap") >= 3,
        || format!("captured {}", get(&e.frames_captured)),
    )
    .await;
    let admin = *edge.admin_addr.get().unwrap();
    let r = readyz(admin).await;
    let bad = check(&r, "camera not-a-camera")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        bad.contains("not an MJPEG stream") && !bad.contains("hunter2") && bad.contains("***"),
        "{bad}"
    );
    let nobody = check(&r, "camera nobody-home")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(nobody.contains("down"), "{nobody}");
    assert_eq!(r["ready"], true, "{r}");

    for (fault, mode) in [("freeze", Mode::BlackHole), ("reset", Mode::Reset)] {
        proxy.set_mode(mode);
        let (p0, d0) = (count("behind-proxy"), count("direct"));
        let started = std::time::Instant::now();
        let r = wait_check(admin, "camera behind-proxy", false).await;
        println!("{fault}: {}", check(&r, "camera behind-proxy")["detail"]);
        let noticed = started.elapsed();
        println!("{fault}: noticed after {noticed:?}");
        // The other camera keeps going while this one is broken.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            count("direct") >= d0 + 10,
            "{fault}: the direct camera stopped"
        );
        assert!(
            count("behind-proxy") <= p0 + 25,
            "{fault}: frames still arrive through a broken proxy?"
        );
        proxy.set_mode(Mode::Forward);
        let p1 = count("behind-proxy");
        pipeline::wait_until(
            &format!("camera back after the {fault}"),
            Duration::from_secs(10),
            || count("behind-proxy") >= p1 + 10,
            || format!("captured {}", get(&e.frames_captured)),
        )
        .await;
    }
    // A slow path (every chunk 400 ms late, under the 1 s no-frame timeout) is not a fault: frames keep
    // coming, late, and the camera is not reconnected.
    let reconnects = |metrics: &str| {
        camera_metric(
            metrics,
            "tierline_edge_camera_reconnects_total",
            "behind-proxy",
        )
    };
    let (_, before) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    proxy.set_mode(Mode::Delay(Duration::from_millis(400)));
    let p2 = count("behind-proxy");
    pipeline::wait_until(
        "frames through a delaying path",
        Duration::from_secs(10),
        || count("behind-proxy") >= p2 + 20,
        || format!("captured {}", get(&e.frames_captured)),
    )
    .await;
    let (_, after) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    println!(
        "delay: {} frames through, reconnects {} -> {}",
        count("behind-proxy") - p2,
        reconnects(&before),
        reconnects(&after)
    );
    assert_eq!(
        reconnects(&before),
        reconnects(&after),
        "a delayed but flowing stream was reconnected"
    );
    proxy.set_mode(Mode::Forward);
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    let value = |name: &str, cam: &str| camera_metric(&metrics, name, cam);
    assert!(value("tierline_edge_camera_reconnects_total", "behind-proxy") >= 2.0);
    assert!(value("tierline_edge_camera_decode_errors_total", "direct") >= 1.0);
    assert_eq!(
        value("tierline_edge_camera_reconnects_total", "direct"),
        0.0
    );
    assert!(cam.served.load(Ordering::Relaxed) > 0);
    edge.stop().await.unwrap();
    // Every frame the edge took got exactly one decision.
    let d = Decisions::read(&log);
    d.assert_one_decision_each(d.per_seq().len() as u64);
}

/// An RTSP camera (TCP interleaved) whose connection stays open but goes silent: a fault proxy between the
/// edge and the RTSP server freezes it. The watchdog reports the camera down in `/readyz` within its
/// no-frame timeout, reconnects (counted), and frames resume once the path is back, within the no-frame
/// timeout plus the longest reconnect backoff; the camera streaming directly never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_rtsp_stream_is_reconnected_within_its_watchdog_bound_and_the_other_camera_never_stops()
 {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    camera::write_frames(&frames, 10, 3, 0.0, 320, 240);
    let server = RtspServer::start(&["--frames", frames.to_str().unwrap(), "--fps", "10"]);
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into())
        .await
        .unwrap();
    let broker = Mosquitto::start(dir.path());
    let cameras = format!(
        "{FAST_CHECKS}[[camera]]\nid = \"frozen\"\nkind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:{}/h264\"\ntransport = \"tcp\"\n{WATCHDOG}\
         [[camera]]\nid = \"direct\"\nkind = \"rtsp\"\nurl = \"{}\"\ntransport = \"tcp\"\n{WATCHDOG}",
        proxy.port(),
        server.url("mjpeg"),
    );
    let config = pipeline::edge_config(broker.port(), dir.path(), &cameras, "deadline = \"300ms\"");
    // The bounds come from the configuration the edge runs with.
    let cam = config.cameras.iter().find(|c| c.id == "frozen").unwrap();
    let (no_frame, backoff_max, connect_timeout, check_every) = (
        cam.no_frame_timeout,
        cam.reconnect_max,
        cam.connect_timeout,
        config.admin.check_every,
    );
    // Slack: an RTSP handshake on loopback, the first key frame at 10 fps, this test's 100 ms polling, and
    // room for a busy 2-core machine running other tests.
    let slack = Duration::from_secs(2);
    let detect_bound = no_frame + check_every + slack;
    let recover_bound = no_frame + backoff_max + slack;
    let edge = pipeline::start_edge(config);
    let log = dir.path().join("decisions.jsonl");
    let count = |cam: &str| camera_frames(&Decisions::read(&log), cam);
    pipeline::wait_until(
        "both RTSP cameras delivering",
        Duration::from_secs(30),
        || count("frozen") >= 10 && count("direct") >= 10,
        || format!("frozen {} direct {}", count("frozen"), count("direct")),
    )
    .await;
    let admin = *edge.admin_addr.get().unwrap();
    wait_check(admin, "camera frozen", true).await;
    let reconnects = |metrics: &str, cam: &str| {
        camera_metric(metrics, "tierline_edge_camera_reconnects_total", cam)
    };
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    let before = reconnects(&metrics, "frozen");

    // The freeze: the connection stays open and nothing flows, for longer than a reconnect cycle (the
    // edge's reconnects during it are held by the proxy as well).
    let freeze = no_frame + backoff_max + connect_timeout;
    proxy.set_mode(Mode::BlackHole);
    let frozen_at = std::time::Instant::now();
    let (f0, d0) = (count("frozen"), count("direct"));
    let mut detected = None;
    let mut direct_age: f64 = 0.0;
    while frozen_at.elapsed() < freeze {
        let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
        direct_age = direct_age.max(camera_metric(
            &metrics,
            "tierline_edge_camera_last_frame_age_seconds",
            "direct",
        ));
        let r = readyz(admin).await;
        assert_eq!(
            check(&r, "camera direct")["ok"],
            true,
            "the direct camera went down during the other's freeze: {r}"
        );
        if detected.is_none() && check(&r, "camera frozen")["ok"] == false {
            detected = Some(frozen_at.elapsed());
            println!("freeze: {}", check(&r, "camera frozen")["detail"]);
            assert_eq!(r["ready"], true, "a camera down leaves the edge ready: {r}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = proxy.stats().bytes_to_client;
    let stuck = count("frozen");
    let detected = detected.expect("the frozen camera was never reported down");
    // Frames already in flight when the path froze may still arrive; then nothing.
    assert!(
        stuck <= f0 + 5,
        "frames through a frozen path: {f0} -> {stuck}"
    );
    println!("freeze: reported down in /readyz after {detected:?} (bound {detect_bound:?})");
    assert!(
        detected <= detect_bound,
        "down after {detected:?}, beyond no_frame_timeout {no_frame:?} + check_every {check_every:?} + slack {slack:?}"
    );
    println!("freeze: the direct camera's last frame was at most {direct_age:.2} s old");
    assert!(
        direct_age < no_frame.as_secs_f64(),
        "the direct camera went {direct_age} s without a frame during the freeze"
    );
    assert!(
        count("direct") >= d0 + 20,
        "the direct camera kept delivering during the freeze: {} -> {}",
        d0,
        count("direct")
    );

    // The path is back: the camera reconnects and frames resume.
    proxy.set_mode(Mode::Forward);
    let thawed_at = std::time::Instant::now();
    pipeline::wait_until(
        "frames from the frozen camera after the freeze",
        recover_bound * 3,
        || count("frozen") > stuck,
        || format!("frozen {} direct {}", count("frozen"), count("direct")),
    )
    .await;
    let recovered = thawed_at.elapsed();
    let r = wait_check(admin, "camera frozen", true).await;
    let ready_again = thawed_at.elapsed();
    println!(
        "freeze: first frame {recovered:?} and /readyz ok {ready_again:?} after the path came back (bound {recover_bound:?}); {}",
        check(&r, "camera frozen")["detail"]
    );
    assert!(
        recovered <= recover_bound,
        "frames resumed after {recovered:?}, beyond no_frame_timeout {no_frame:?} + reconnect_max {backoff_max:?} + slack {slack:?}"
    );
    assert!(
        proxy.stats().bytes_to_client > held,
        "the stream flows through the proxy again"
    );
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    let after = reconnects(&metrics, "frozen");
    println!("freeze: reconnects of the frozen camera {before} -> {after}");
    assert!(after > before, "the stall is counted as a reconnect");
    assert_eq!(reconnects(&metrics, "direct"), 0.0);
    edge.stop().await.unwrap();
    let d = Decisions::read(&log);
    d.assert_one_decision_each(d.per_seq().len() as u64);
}

/// RTSP cameras whose streams the edge cannot decode (VP8 video; G.711 audio and no video at all), run by
/// the edge binary: each camera is down with a reason naming what the stream carries, every attempt is logged
/// with the camera id and the URL with its password hidden, it keeps retrying with backoff, and the edge
/// keeps deciding the other camera's frames, without a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_streams_in_codecs_the_edge_cannot_decode_are_named_and_the_other_camera_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    camera::write_frames(&frames, 10, 4, 0.0, 320, 240);
    let server = RtspServer::start(&["--frames", frames.to_str().unwrap(), "--fps", "10"]);
    let with_login = |path: &str| {
        server
            .url(path)
            .replacen("rtsp://", "rtsp://inspector:s3cret@", 1)
    };
    let broker = Mosquitto::start(dir.path());
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let cameras = format!(
        "{FAST_CHECKS}[[camera]]\nid = \"vp8\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}\
         [[camera]]\nid = \"audio-only\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}\
         [[camera]]\nid = \"mjpeg\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}",
        with_login("vp8"),
        with_login("audio"),
        server.url("mjpeg"),
    );
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        pipeline::edge_toml(broker.port(), dir.path(), &cameras, "deadline = \"300ms\"").replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{admin_port}\""),
        ),
    )
    .unwrap();
    let edge_log = dir.path().join("edge.log");
    let mut edge = process::spawn_edge(&config, &edge_log);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let log = dir.path().join("decisions.jsonl");
    let count = |cam: &str| camera_frames(&Decisions::read(&log), cam);
    let started = std::time::Instant::now();
    // Until both broken cameras have been refused once, with the reason in /readyz.
    let r = loop {
        assert!(
            edge.try_wait().unwrap().is_none(),
            "the edge exited: {}",
            std::fs::read_to_string(&edge_log).unwrap_or_default()
        );
        if let Ok((200 | 503, body)) = tierline_tests::http::get(admin, "/readyz").await {
            let r: serde_json::Value = serde_json::from_str(&body).unwrap();
            let named = |name: &str, codec: &str| {
                r["checks"].as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["name"] == name && c["detail"].as_str().is_some_and(|d| d.contains(codec))
                    })
                })
            };
            if named("camera vp8", "video/vp8") && named("camera audio-only", "audio/pcmu") {
                break r;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the broken cameras were never named in /readyz; edge log:\n{}",
            std::fs::read_to_string(&edge_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for cam in ["vp8", "audio-only"] {
        let c = check(&r, &format!("camera {cam}"));
        let detail = c["detail"].as_str().unwrap();
        println!("{cam}: {detail}");
        assert_eq!(c["ok"], false, "{c}");
        assert!(
            detail.contains("H.264") && detail.contains("***") && !detail.contains("s3cret"),
            "the reason says what the edge decodes, the password hidden: {detail}"
        );
    }
    assert_eq!(r["ready"], true, "cameras down leave the edge ready: {r}");
    // The broken cameras keep being retried with backoff while the other camera's frames are decided.
    let m0 = count("mjpeg");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m1 = count("mjpeg");
    println!("mjpeg camera: {m0} -> {m1} frames decided over 4 s while the others were refused");
    assert!(m1 >= m0 + 20, "the other camera's frames: {m0} -> {m1}");
    let r = readyz(admin).await;
    assert_eq!(check(&r, "camera mjpeg")["ok"], true, "{r}");
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    for cam in ["vp8", "audio-only"] {
        assert_eq!(camera_metric(&metrics, "tierline_edge_camera_up", cam), 0.0);
        assert_eq!(
            camera_metric(&metrics, "tierline_edge_camera_frames_total", cam),
            0.0
        );
        let refused = camera_metric(&metrics, "tierline_edge_camera_open_failures_total", cam);
        assert!(refused >= 2.0, "{cam}: {refused} failed opens counted");
    }
    assert_eq!(
        camera_metric(
            &metrics,
            "tierline_edge_camera_open_failures_total",
            "mjpeg"
        ),
        0.0
    );
    assert!(
        edge.try_wait().unwrap().is_none(),
        "the edge is still running"
    );
    process::terminate(&mut edge);
    let status = edge.wait().unwrap();
    let text = std::fs::read_to_string(&edge_log).unwrap();
    assert!(
        !text.contains("panicked") && !text.contains("s3cret"),
        "no panic and no password in the edge log:\n{text}"
    );
    // Each attempt is a log line naming the camera, the stream (password hidden) and what it carries.
    for (cam, codec) in [("vp8", "video/vp8"), ("audio-only", "audio/pcmu")] {
        let attempts: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!("camera={cam} ")) && l.contains("Camera source failed"))
            .collect();
        println!(
            "{cam}: {} refused attempts logged, e.g. {:?}",
            attempts.len(),
            attempts.first()
        );
        assert!(
            attempts.len() >= 2,
            "{cam}: retried and logged each time:\n{text}"
        );
        assert!(
            attempts
                .iter()
                .all(|l| l.contains(codec) && l.contains("***")),
            "{cam}: {attempts:?}"
        );
    }
    assert!(status.success(), "the edge stopped cleanly: {status}");
    let d = Decisions::read(&log);
    d.assert_one_decision_each(d.per_seq().len() as u64);
}

/// Part triggers end to end: N triggers (over HTTP to two cameras, over MQTT to one) give exactly N decisions
/// carrying their part ids, and every triggered frame the edge forwarded (suspects and audit samples) is in
/// the cloud's store under its part id: the store's rows, read with SQL, and the review API's part filter
/// both say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_part_triggers_give_exactly_n_decisions_and_forwarded_parts_reach_the_cloud_store() {
    let dir = tempfile::tempdir().unwrap();
    // Every other picture the camera serves shows a defect, so some triggered frames are suspects.
    let seed = 5;
    let (jpegs, truth) = camera::alternating_jpeg_frames(6, seed, 320, 240);
    println!("camera pictures (seed {seed}): {truth:?}");
    assert!(truth.iter().any(|t| t != "good"), "{truth:?}");
    let cam = HttpCamera::start(jpegs, 10.0, 0).await;
    let broker = Mosquitto::start(dir.path());
    let cameras = format!(
        "[[camera]]\nid = \"station\"\nkind = \"snapshot\"\nmode = \"trigger\"\nurl = \"http://{}/snapshot.jpg\"\n{WATCHDOG}\
         [[camera]]\nid = \"stream\"\nkind = \"mjpeg\"\nmode = \"trigger\"\nurl = \"http://{}/mjpeg\"\n{WATCHDOG}",
        cam.addr, cam.addr,
    );
    // A cloud worker judges the suspects; half the passed frames go to it too, as audit samples.
    let audit_seed = 15;
    println!("audit sampling seed {audit_seed}");
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let edge = pipeline::start_edge(pipeline::edge_config(
        broker.port(),
        dir.path(),
        &cameras,
        &format!("deadline = \"5s\"\naudit_rate = 0.5\naudit_seed = {audit_seed}"),
    ));
    let admin = loop {
        if let Some(a) = edge.admin_addr.get() {
            break *a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Five parts over HTTP to both cameras, five over MQTT to the snapshot camera only.
    let mut want_station = Vec::new();
    let mut want_stream = Vec::new();
    for i in 0..5 {
        let part = format!("P-http-{i}");
        let (code, body) =
            tierline_tests::http::post(admin, "/trigger", &format!("{{\"part_id\":\"{part}\"}}"))
                .await
                .unwrap();
        assert_eq!(code, 202, "{body}");
        want_station.push(part.clone());
        want_stream.push(part);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (code, body) = tierline_tests::http::post(admin, "/trigger", "{\"part_id\":\"\"}")
        .await
        .unwrap();
    assert_eq!(code, 400, "an empty part id is refused: {body}");
    let (client, mut ev) = tierline_shared::mqtt::AsyncClient::new(
        tierline_shared::mqtt::MqttOptions::new("line-plc", "127.0.0.1", broker.port()),
        16,
    );
    let pump = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    // The edge subscribes after it connects: wait for its link.
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    pipeline::wait_until(
        "edge link up",
        Duration::from_secs(10),
        || e.link_up.load(Ordering::Relaxed),
        String::new,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        let part = format!("P-mqtt-{i}");
        client
            .publish(
                "tierline/v1/plant/l1/edge-t/trigger",
                tierline_shared::mqtt::QoS::AtLeastOnce,
                false,
                format!("{{\"part_id\":\"{part}\",\"camera\":\"station\"}}"),
            )
            .await
            .unwrap();
        want_station.push(part);
    }
    let log = dir.path().join("decisions.jsonl");
    let parts_of = |cam: &str| -> Vec<String> {
        Decisions::read(&log)
            .decisions()
            .filter(|e| e["camera_id"] == cam)
            .map(|e| e["part_id"].as_str().unwrap_or("<none>").to_string())
            .collect()
    };
    pipeline::wait_until(
        "one decision per trigger",
        Duration::from_secs(30),
        || parts_of("station").len() >= 10 && parts_of("stream").len() >= 5,
        || {
            format!(
                "station {:?} stream {:?}; {}",
                parts_of("station"),
                parts_of("stream"),
                pipeline::describe(&e, &c)
            )
        },
    )
    .await;
    // Nothing more comes without triggers; the audit samples' verdicts come back too.
    tokio::time::sleep(Duration::from_millis(800)).await;
    pipeline::wait_until(
        "every forwarded frame judged and its verdict back at the edge",
        Duration::from_secs(30),
        || {
            let forwarded = get(&e.frames_suspect) + get(&e.frames_audit);
            get(&c.verdicts_stored) >= forwarded && get(&e.verdicts) >= forwarded
        },
        || pipeline::describe(&e, &c),
    )
    .await;
    pump.abort();
    let mut station = parts_of("station");
    station.sort();
    want_station.sort();
    assert_eq!(
        station, want_station,
        "exactly one decision per trigger, with its part id"
    );
    let mut stream = parts_of("stream");
    stream.sort();
    want_stream.sort();
    assert_eq!(stream, want_stream);

    // The frames the log says were forwarded, with the camera and part of their decision lines.
    let d = Decisions::read(&log);
    let decided: BTreeMap<u64, (String, String)> = d
        .decisions()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                (
                    e["camera_id"].as_str().unwrap().to_string(),
                    e["part_id"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect();
    let suspects = d.suspect_seqs();
    let audits: BTreeSet<u64> = d.of("audit").filter_map(|a| a["seq"].as_u64()).collect();
    println!(
        "{} triggered frames: {} suspects, {} audit samples forwarded",
        decided.len(),
        suspects.len(),
        audits.len()
    );
    assert!(
        !suspects.is_empty(),
        "no triggered frame was a suspect, so nothing defective reached the cloud: {}",
        pipeline::describe(&e, &c)
    );
    assert_eq!(
        (suspects.len() + audits.len()) as u64,
        get(&e.frames_suspect) + get(&e.frames_audit),
        "the log names every frame the edge forwarded"
    );
    let forwarded: BTreeMap<u64, &str> = suspects
        .iter()
        .map(|s| (*s, "suspect"))
        .chain(audits.iter().map(|s| (*s, "audit")))
        .collect();

    // The store, read with SQL: exactly the forwarded frames, each with its camera and part id.
    let url = format!("sqlite://{}?mode=ro", dir.path().join("cloud.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, camera_id, part_id FROM frames WHERE edge_id = 'edge-t'")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    let stored: BTreeMap<u64, (String, String)> = rows
        .into_iter()
        .map(|(seq, camera, part)| (seq as u64, (camera, part)))
        .collect();
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        forwarded.keys().collect::<Vec<_>>(),
        "the store holds exactly the forwarded frames"
    );
    for (seq, row) in &stored {
        assert!(!row.1.is_empty(), "stored frame {seq} has no part id");
        assert_eq!(
            Some(row),
            decided.get(seq),
            "stored frame {seq}: camera and part as the decision log has them"
        );
    }

    // The review API, filtering by part, lists each forwarded part's frames and no other.
    let api = *cloud.api_addr.get().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{api}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut review = ReviewClient::new(channel);
    let parts: BTreeSet<&String> = stored.values().map(|(_, p)| p).collect();
    for part in &parts {
        let listed = review
            .list_frames(pb::ListFramesRequest {
                part_id: part.to_string(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .frames;
        let mut got: Vec<(u64, String, String, String)> = listed
            .into_iter()
            .map(|f| (f.seq, f.camera_id, f.part_id, f.reason))
            .collect();
        got.sort();
        let want: Vec<(u64, String, String, String)> = stored
            .iter()
            .filter(|(_, (_, p))| p == *part)
            .map(|(seq, (camera, p))| (*seq, camera.clone(), p.clone(), forwarded[seq].to_string()))
            .collect();
        assert_eq!(got, want, "review API frames of part {part}");
    }
    println!(
        "{} forwarded frames of {} parts in the store and the review API: {:?}",
        stored.len(),
        parts.len(),
        parts
    );
    let stored_labels = Stored::read(&dir.path().join("cloud.db")).await;
    stored_labels.check_labels("edge-t", &d);
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_baseline_main_and_high_profiles_decode() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    camera::write_frames(&frames, 10, 2, 0.0, 640, 480);
    let servers: Vec<RtspServer> = ["baseline", "main", "high"]
        .iter()
        .map(|p| {
            RtspServer::start(&[
                "--frames",
                frames.to_str().unwrap(),
                "--fps",
                "10",
                "--profile",
                p,
            ])
        })
        .collect();
    let broker = Mosquitto::start(dir.path());
    let cameras: String = ["baseline", "main", "high"]
        .iter()
        .zip(&servers)
        .map(|(p, s)| {
            format!(
                "[[camera]]\nid = \"{p}\"\nkind = \"rtsp\"\nurl = \"{}\"\nframes = 15\n{WATCHDOG}",
                s.url("h264")
            )
        })
        .collect();
    let edge = start_edge(&broker, dir.path(), &cameras);
    let log = dir.path().join("decisions.jsonl");
    pipeline::wait_until(
        "15 frames from each profile",
        Duration::from_secs(30),
        || {
            let d = Decisions::read(&log);
            ["baseline", "main", "high"]
                .iter()
                .all(|p| camera_frames(&d, p) >= 15)
        },
        String::new,
    )
    .await;
    let admin = *edge.admin_addr.get().unwrap();
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    edge.stop().await.unwrap();
    for p in ["baseline", "main", "high"] {
        let line = format!("tierline_edge_camera_decode_errors_total{{camera=\"{p}\"}} 0");
        assert!(metrics.contains(&line), "{p}: decode errors:\n{metrics}");
    }
    // Decoded pictures are judged, not refused as unreadable.
    let d = Decisions::read(&log);
    assert_eq!(
        d.decisions()
            .filter(|e| e["source"] == "unreadable")
            .count(),
        0
    );
}

/// RTSP credentials: Basic and Digest logins with the right password deliver frames; a wrong password leaves
/// that camera down with a reason that says the camera refused the login, its password hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_basic_and_digest_logins_work_and_a_wrong_password_is_named_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    camera::write_frames(&frames, 6, 4, 0.0, 320, 240);
    let server = |auth: &str| {
        RtspServer::start(&[
            "--frames",
            frames.to_str().unwrap(),
            "--fps",
            "10",
            "--user",
            "inspector",
            "--password",
            "s3cret",
            "--auth",
            auth,
        ])
    };
    let (basic, digest) = (server("basic"), server("digest"));
    let with = |url: String, login: &str| url.replacen("rtsp://", &format!("rtsp://{login}@"), 1);
    let broker = Mosquitto::start(dir.path());
    let cameras = format!(
        "{FAST_CHECKS}[[camera]]\nid = \"basic\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}\
         [[camera]]\nid = \"digest\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}\
         [[camera]]\nid = \"wrong\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}",
        with(basic.url("mjpeg"), "inspector:s3cret"),
        with(digest.url("mjpeg"), "inspector:s3cret"),
        with(digest.url("mjpeg"), "inspector:guessed-wrong"),
    );
    let edge = start_edge(&broker, dir.path(), &cameras);
    let log = dir.path().join("decisions.jsonl");
    pipeline::wait_until(
        "frames from the Basic and the Digest login",
        Duration::from_secs(30),
        || {
            let d = Decisions::read(&log);
            camera_frames(&d, "basic") >= 10 && camera_frames(&d, "digest") >= 10
        },
        String::new,
    )
    .await;
    let admin = *edge.admin_addr.get().unwrap();
    let r = wait_check(admin, "camera wrong", false).await;
    let why = check(&r, "camera wrong")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    println!("wrong password: {why}");
    assert!(
        why.contains("refused") && why.contains("***") && !why.contains("guessed-wrong"),
        "{why}"
    );
    assert_eq!(camera_frames(&Decisions::read(&log), "wrong"), 0);
    assert_eq!(r["ready"], true, "{r}");
    edge.stop().await.unwrap();
}

/// An H.265 RTSP camera (the edge's `h265` feature, which this crate turns on): its frames are decoded by
/// FFmpeg and judged, and the defective ones reach the cloud and are found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h265_camera_is_judged_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    camera::write_frames(&frames, 20, 5, 0.5, 640, 480);
    let server = RtspServer::start(&["--frames", frames.to_str().unwrap(), "--fps", "10"]);
    let cameras = format!(
        "{FAST_CHECKS}[[camera]]\nid = \"h265\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}\
         [[camera]]\nid = \"h264\"\nkind = \"rtsp\"\nurl = \"{}\"\n{WATCHDOG}",
        server.url("h265"),
        server.url("h264"),
    );
    let (_broker, cloud, edge) = start_line(dir.path(), &cameras);
    let log = dir.path().join("decisions.jsonl");
    let (e, c) = (edge.stats.clone(), cloud.stats.clone());
    pipeline::wait_until(
        "the edge's admin endpoint",
        Duration::from_secs(30),
        || edge.admin_addr.get().is_some(),
        String::new,
    )
    .await;
    let admin = *edge.admin_addr.get().unwrap();
    pipeline::wait_until(
        "30 H.265 frames decided and suspects judged by the cloud",
        Duration::from_secs(60),
        || camera_frames(&Decisions::read(&log), "h265") >= 30 && get(&c.verdicts_stored) >= 4,
        || pipeline::describe(&e, &c),
    )
    .await;
    let (_, metrics) = tierline_tests::http::get(admin, "/metrics").await.unwrap();
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    assert_eq!(
        camera_metric(&metrics, "tierline_edge_camera_decode_errors_total", "h265"),
        0.0
    );
    let d = Decisions::read(&log);
    assert_eq!(
        d.decisions()
            .filter(|e| e["camera_id"] == "h265" && e["source"] == "unreadable")
            .count(),
        0
    );
    assert_defects_found_by_the_cloud(dir.path(), &["h265"]).await;
}

/// A V4L2 camera: with the `v4l2` feature and a video device, frames are decided; where this machine has no
/// video device the test says so and checks nothing else (never a fake device). Without the feature, the
/// config names the feature to build with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v4l2_camera_is_judged_or_the_reason_it_cannot_be_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let device = std::env::var("TIERLINE_TEST_V4L2").unwrap_or_else(|_| "/dev/video0".into());
    let cameras = format!(
        "[[camera]]\nid = \"usb\"\nkind = \"v4l2\"\ndevice = \"{device}\"\nframes = 10\nfps = 5\n"
    );
    let config = pipeline::edge_config(broker.port(), dir.path(), &cameras, "deadline = \"300ms\"");
    if !cfg!(feature = "v4l2") {
        let err = tierline_edge::App::build(config, Default::default())
            .await
            .err()
            .expect("a v4l2 camera needs the feature")
            .to_string();
        assert!(
            err.contains("--features v4l2") && err.contains("usb"),
            "{err}"
        );
        println!("skipped the capture check: built without the v4l2 feature ({err})");
        return;
    }
    if !std::path::Path::new(&device).exists() {
        println!(
            "skipped: no video device at {device} on this machine (set TIERLINE_TEST_V4L2 to another)"
        );
        return;
    }
    let edge = pipeline::start_edge(config);
    let log = dir.path().join("decisions.jsonl");
    pipeline::wait_until(
        "10 frames from the V4L2 camera decided",
        Duration::from_secs(30),
        || camera_frames(&Decisions::read(&log), "usb") >= 10,
        String::new,
    )
    .await;
    edge.stop().await.unwrap();
}
