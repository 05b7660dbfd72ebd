//! The review console in a real browser: Debian's Chromium, headless, driven through its WebDriver
//! (`chromedriver`), both installed by `scripts/setup`. Two reviewers sign in in two browsers and work
//! through one queue of disputed frames with the keyboard only; no frame is served to both, every frame
//! ends with one stored label, from the reviewer whose browser showed it. Then one of them exports the
//! labels from the export page, and `tierline-models eval` reads the export.
//!
//! Screenshots of each page go to `TIERLINE_SCREENSHOTS` when set (the README's pictures come from
//! `TIERLINE_SCREENSHOTS=docs/console cargo test -p tierline-tests --test console_browser`).

#![allow(clippy::unwrap_used)]

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tierline_cloud::config::Credential;
use tierline_cloud::store::Store;
use tierline_shared::wire::ClassScore;
use tierline_tests::review::{OTHER_REVIEWER, OTHER_TOKEN, REVIEWER, TOKEN, frame, verdict};
use tierline_tests::{pipeline, process};

/// Disputed frames in the queue: the edge rejected each locally, the cloud called it good.
const FRAMES: u64 = 6;

/// The classes of the shipped full model, in its order (the label buttons' order, keys 1–6).
const CLASSES: [&str; 6] = ["good", "scratch", "spot", "crack", "dent", "stain"];

/// The WebDriver, killed with the test.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).is_file(),
            "{tool} is missing: run scripts/setup (it installs Debian's chromium and chromium-driver)"
        );
    }
    let (child, port) = process::spawn_listening(
        Path::new("/usr/bin/chromedriver"),
        |port| vec![format!("--port={port}")],
        Duration::from_secs(20),
    );
    Driver(child, port)
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1360,1180", "--no-first-run", "--disable-extensions"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .unwrap()
}

/// A 320×240 grey JPEG of the synthetic surface, half of them with a defect.
fn jpeg(index: u64) -> Vec<u8> {
    let f = tierline_edge::synth::render(11, index, 320, 240, 0.5);
    let img = image::GrayImage::from_raw(f.width, f.height, f.pixels).unwrap();
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

/// The console on a SQLite store holding the disputed frames, served on a free port.
async fn serve(dir: &Path) -> (String, Store) {
    let store = Store::open(
        &format!("sqlite://{}", dir.join("cloud.db").display()),
        true,
    )
    .await
    .unwrap();
    for seq in 1..=FRAMES {
        let mut f = frame(
            "edge-b",
            seq,
            1_796_000_000_000_000 + seq as i64 * 1_000_000,
            "reject",
        );
        f.encoding = tierline_shared::wire::ImageEncoding::Jpeg as i32;
        f.image = jpeg(seq);
        f.image_sha256 = tierline_shared::wire::image_sha256(&f.image);
        let mut v = verdict("edge-b", seq, "good");
        // Where the cloud model saw something, below its threshold.
        v.regions = vec![tierline_shared::wire::pb::Region {
            x: 40.0 + 20.0 * seq as f32,
            y: 90.0,
            width: 70.0,
            height: 24.0,
            class_name: "scratch".into(),
            score: 0.05,
        }];
        v.scores = CLASSES
            .iter()
            .map(|c| ClassScore {
                class_name: (*c).into(),
                probability: if *c == "good" { 0.75 } else { 0.05 },
            })
            .collect();
        store.store(&f, &v).await.unwrap();
    }
    let hb = tierline_shared::wire::Heartbeat {
        protocol_version: 1,
        edge_id: "edge-b".into(),
        backlog_frames: 3,
        oldest_backlog_age_ms: 4_000,
        frames_seen: 1_200,
        frames_forwarded: 31,
        edge_model_version: "1.1.0".into(),
        cameras: vec![
            tierline_shared::wire::pb::CameraState {
                camera_id: "line-3-top".into(),
                up: true,
                fps: 10.0,
                last_frame_age_s: 0.1,
                ..Default::default()
            },
            tierline_shared::wire::pb::CameraState {
                camera_id: "line-3-side".into(),
                up: false,
                last_frame_age_s: 42.0,
                error: "no frame for 10 s (stalled stream); reconnecting".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    store
        .record_heartbeat("plant-1", "line-3", &hb, tierline_shared::time::now_us())
        .await
        .unwrap();
    let credentials = [
        Credential {
            reviewer: REVIEWER.into(),
            token: TOKEN.into(),
        },
        Credential {
            reviewer: OTHER_REVIEWER.into(),
            token: OTHER_TOKEN.into(),
        },
    ];
    let app =
        tierline_cloud::console::router(store.clone(), &credentials, Duration::from_secs(600));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, store)
}

/// Presses `key` (a WebDriver key: a character, or `\u{E007}` for Enter) on the page.
async fn press(c: &Client, key: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    c.perform_actions(keys).await.unwrap();
}

/// Waits until the page's URL is no longer `from`; returns its path.
async fn left(c: &Client, from: &str) -> String {
    let started = Instant::now();
    loop {
        let url = c.current_url().await.unwrap();
        if url.as_str() != from {
            // The new page has loaded when its body is there.
            c.wait().for_element(Locator::Css("body")).await.unwrap();
            return url.path().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the page stayed at {from}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/login'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("table.queue"))
        .await
        .unwrap();
}

/// Saves a screenshot of the page as `<TIERLINE_SCREENSHOTS>/<name>.png`, when that is set.
async fn picture(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    if let Some(dir) = std::env::var_os("TIERLINE_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reviewers_work_through_a_queue_with_the_keyboard_and_export_what_they_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let (base, store) = serve(dir.path()).await;
    let driver = chromedriver();
    let bo = browser(&driver).await;
    let ana = browser(&driver).await;
    sign_in(&bo, &base, TOKEN).await;
    sign_in(&ana, &base, OTHER_TOKEN).await;
    picture(&bo, "queue").await;

    // Enter starts the queue; each browser is handed its own frame.
    let mut shown: BTreeMap<String, &str> = BTreeMap::new();
    let mut at: Vec<Option<String>> = Vec::new();
    for c in [&bo, &ana] {
        let from = c.current_url().await.unwrap().to_string();
        press(c, '\u{E007}').await;
        at.push(Some(left(c, &from).await));
    }
    picture(&ana, "frame").await;
    // Each presses the key of its label ("2": scratch for bo, "1": good for ana), which stores the
    // label and moves on to the next free frame, until the queue is empty.
    let who = [
        (REVIEWER, &bo, '2', "scratch"),
        (OTHER_REVIEWER, &ana, '1', "good"),
    ];
    let mut rounds = 0;
    while at.iter().any(Option::is_some) {
        rounds += 1;
        assert!(
            rounds <= FRAMES as usize * 2,
            "the queue never emptied: {shown:?}"
        );
        for (i, (name, c, key, _)) in who.iter().enumerate() {
            let Some(path) = at[i].take() else { continue };
            if !path.starts_with("/frames/") {
                continue;
            }
            assert!(
                shown.insert(path.clone(), name).is_none(),
                "{path} was shown to {name} and to {}",
                shown[&path]
            );
            let from = c.current_url().await.unwrap().to_string();
            press(c, *key).await;
            let next = left(c, &from).await;
            at[i] = next.starts_with("/frames/").then_some(next);
        }
    }
    assert_eq!(
        shown.len(),
        FRAMES as usize,
        "every frame shown once: {shown:?}"
    );
    // Every frame has one stored label: the key its reviewer pressed, under that reviewer's name.
    for (path, name) in &shown {
        let seq: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        let reviews = store.get_frame("edge-b", seq).await.unwrap().unwrap().2;
        let want = who.iter().find(|w| w.0 == *name).unwrap().3;
        assert_eq!(reviews.len(), 1, "{path}: {reviews:?}");
        assert_eq!(
            (reviews[0].reviewer.as_str(), reviews[0].label.as_str()),
            (*name, want),
            "{path}"
        );
    }
    // The queue says it is done.
    bo.goto(&format!("{base}/")).await.unwrap();
    let done = bo
        .find(Locator::Css("p.empty"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(done.contains("Nothing to review"), "{done}");

    bo.goto(&format!("{base}/fleet")).await.unwrap();
    bo.wait()
        .for_element(Locator::Css("table.fleet"))
        .await
        .unwrap();
    picture(&bo, "fleet").await;

    // The export, fetched by the page itself (with its session), unpacked, and read by tierline-models.
    bo.goto(&format!("{base}/export")).await.unwrap();
    let link = bo.find(Locator::Css("a#download")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/export.tar")
    );
    picture(&bo, "export").await;
    let fetched = bo
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/export.tar').then(r => r.arrayBuffer()).then(b => {
               let s = ''; const u = new Uint8Array(b);
               for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
               done(btoa(s));
             }).catch(e => done('error: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    let b64 = fetched.as_str().unwrap();
    assert!(!b64.starts_with("error"), "{b64}");
    let tar_bytes = base64_decode(b64);
    let out = dir.path().join("export");
    tar::Archive::new(std::io::Cursor::new(tar_bytes))
        .unpack(&out)
        .unwrap();
    let folder = out.join("tierline-labels");
    let models = pipeline::models_dir();
    let eval = Command::new(process::binary("tierline-models"))
        .arg("eval")
        .arg(&folder)
        .arg("--edge")
        .arg(models.join("prescreen.toml"))
        .arg("--cloud")
        .arg(models.join("full.toml"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "tierline-models eval refused the export: {}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(
        report["frames"], FRAMES,
        "the report covers every labelled frame: {report}"
    );
    let scratches = shown.values().filter(|n| **n == REVIEWER).count();
    assert_eq!(
        report["defective_frames"], scratches,
        "the truth is the reviewers' labels (bo said scratch): {report}"
    );
    for c in [bo, ana] {
        c.close().await.unwrap();
    }
}

/// Standard base64 (what `btoa` writes).
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | value(*c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
