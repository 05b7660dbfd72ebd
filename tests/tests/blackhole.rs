//! A black hole, a slow path and resets between the edge and the broker, while frames flow.
//!
//! The edge reaches Mosquitto through [`tierline_tests::proxy::Proxy`]; the cloud worker talks to Mosquitto
//! directly. Four faults land inside the traffic window, each longer than the decision deadline:
//! - a **black hole** (15 s) in steady flow: the proxy stops forwarding both ways without closing anything,
//!   so the edge sees no error, no FIN and no RST; only its MQTT keep-alive (5 s here, the least the MQTT
//!   client takes) or a write that cannot complete can tell it the link is dead;
//! - a **delay** of 300 ms each way (3 s): the link stays up but a verdict cannot come back in time;
//! - **resets** (4 s): every open connection is reset, every new one too, so a backlog builds up;
//! - a second **black hole** (15 s) right after the edge reconnected, while it sends that backlog: its socket
//!   buffers fill and its writes block (in most runs), so keep-alive pings cannot go out and the edge notices
//!   only when a poll of its MQTT event loop makes no progress for the keep-alive plus 2 s.
//!
//! The oracle, from the decision log and the cloud's store rather than the edge's counters where it can:
//! every frame taken has exactly one decision; every suspect has one; every provisional decision is
//! reconciled after healing; every forwarded frame has exactly one stored verdict and every stored verdict
//! belongs to a frame the edge decided; each suspect is decided by `capture + deadline` plus 200 ms of
//! scheduling slack, both as the log reports it (`latency_us`) and as the test sees it (the time its own
//! tail of the log first saw the line, minus the capture time). And the faults mattered: suspects were
//! decided locally during each black hole, and the edge noticed each hole (it gave up the dead connection
//! and opened a new one, as the proxy saw) before the hole ended. Fault timing and camera seeds come from
//! `TIERLINE_TEST_SEED`. (Its own test binary, so its timing checks do not share the machine with other
//! end-to-end tests.)

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tierline_edge::EdgeStats;
use tierline_edge::stats::get;
use tierline_shared::time::now_us;
use tierline_tests::oracle::check_pipeline;
use tierline_tests::process::{self, Rng};
use tierline_tests::proxy::{Mode, Proxy};
use tierline_tests::{Mosquitto, pipeline};
use tokio_util::sync::CancellationToken;

const DEADLINE_MS: u64 = 500;
/// Scheduling slack on a shared 2-core machine.
const SLACK_MS: u64 = 200;
const CAMERAS: u64 = 2;
const FPS: f64 = 10.0;
/// Frames per camera: 70 s of traffic; the faults and the waits between them take about 50 s of it.
const FRAMES: u64 = 700;
/// Longer than twice the keep-alive: a dead link shows within two of them, or when a poll of the MQTT event
/// loop makes no progress for the keep-alive plus 2 s (a blocked write).
const HOLE: Duration = Duration::from_secs(15);
const DELAY: Duration = Duration::from_millis(300);
const DELAY_WINDOW: Duration = Duration::from_secs(3);
const RESET_WINDOW: Duration = Duration::from_secs(4);
/// The second black hole: the edge's writes block in it, which it notices when a poll of its event loop
/// makes no progress for the keep-alive plus 2 s.
const BURST_HOLE: Duration = Duration::from_secs(15);
/// Keep-alive of the edge's MQTT session (the least rumqttc's MQTT 5 client takes): a dead link shows as a
/// missing PINGRESP within about 2 of these.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How often the test's tail reads the decision log.
const TAIL_EVERY: Duration = Duration::from_millis(10);

/// A decision-log line and the test's own wall-clock bounds on when it was written: after `after_us` (the
/// read before the one that saw it), no later than `seen_us`.
struct Seen {
    line: Value,
    after_us: i64,
    seen_us: i64,
}

/// Tails the decision log on a thread of its own (not the runtime the edge runs on).
fn tail(
    path: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = None;
        let mut partial = Vec::new();
        let mut last_read = now_us();
        loop {
            let stopping = stop.is_cancelled();
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
            }
            let before = now_us();
            let mut fresh = Vec::new();
            if let Some(f) = file.as_mut() {
                let _ = f.read_to_end(&mut fresh);
            }
            let stamp = now_us();
            partial.extend_from_slice(&fresh);
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    seen.lock().unwrap().push(Seen {
                        line: v,
                        after_us: last_read,
                        seen_us: stamp,
                    });
                }
            }
            last_read = before;
            if stopping {
                return;
            }
            std::thread::sleep(TAIL_EVERY);
        }
    })
}

/// Complete lines in the decision log now.
fn lines_now(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// What happened while one fault was on.
#[derive(Debug)]
struct Window {
    name: &'static str,
    /// Decision-log lines written before the fault began and before it ended.
    lines: (usize, usize),
    /// Frames captured when the fault began and when it ended (the camera's count).
    captured: (u64, u64),
    /// Connections the proxy had accepted when the fault began and when it ended.
    accepted: (u64, u64),
    /// When the edge first opened a new connection after the fault began.
    first_reconnect: Option<Duration>,
    /// When the edge first declared its link down after the fault began, and why (its own words).
    first_link_down: Option<(Duration, String)>,
}

/// Puts `mode` on for `length`, watching the edge meanwhile, then forwards again.
async fn fault(
    name: &'static str,
    proxy: &Proxy,
    mode: Mode,
    length: Duration,
    log: &Path,
    e: &EdgeStats,
) -> Window {
    let captured = get(&e.frames_captured);
    let accepted = proxy.stats().accepted;
    let lines = lines_now(log);
    let started = Instant::now();
    proxy.set_mode(mode);
    let (mut first_reconnect, mut first_link_down) = (None, None);
    while started.elapsed() < length {
        if first_reconnect.is_none() && proxy.stats().accepted > accepted {
            first_reconnect = Some(started.elapsed());
        }
        if first_link_down.is_none() && !e.link_up.load(Ordering::Relaxed) {
            let why = e.link_error.get().unwrap_or_default();
            first_link_down = Some((started.elapsed(), why));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let w = Window {
        name,
        lines: (lines, lines_now(log)),
        captured: (captured, get(&e.frames_captured)),
        accepted: (accepted, proxy.stats().accepted),
        first_reconnect,
        first_link_down,
    };
    proxy.set_mode(Mode::Forward);
    eprintln!(
        "blackhole: {name} for {length:?}: frames {}..{} captured, {} log lines, {} new connections (first after {:?}), link down after {:?}",
        w.captured.0,
        w.captured.1,
        w.lines.1 - w.lines.0,
        w.accepted.1 - w.accepted.0,
        w.first_reconnect,
        w.first_link_down
    );
    w
}

/// Waits until the edge takes cloud decisions again after a fault (the link healed while frames flow).
async fn healed(what: &str, e: &EdgeStats, cloud: &tierline_cloud::CloudStats) -> (Duration, u64) {
    let started = Instant::now();
    let cloud_decisions = get(&e.decisions_cloud);
    pipeline::wait_until(
        what,
        Duration::from_secs(30),
        || get(&e.decisions_cloud) > cloud_decisions + 2,
        || pipeline::describe(e, cloud),
    )
    .await;
    (started.elapsed(), get(&e.frames_captured))
}

/// The cameras, at JPEG quality 100 (frames of about 150 KB): the backlog the edge sends in the second black
/// hole is then several megabytes, more than the socket buffers hold, so its writes really block.
fn cameras(rng: &mut Rng) -> String {
    (0..CAMERAS)
        .map(|i| {
            format!(
                "[[camera]]\nid = \"cam-{i}\"\nkind = \"synthetic\"\nseed = {}\nfps = {FPS}\ndefect_rate = 0.3\nframes = {FRAMES}\njpeg_quality = 100\n",
                rng.range(0, 1 << 30)
            )
        })
        .collect()
}

/// Capture time (µs since the epoch) of every frame the cloud stored, by seq.
async fn capture_times(db: &Path) -> BTreeMap<u64, i64> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT seq, capture_time_us FROM frames WHERE edge_id = 'edge-t'")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().map(|(s, t)| (s as u64, t)).collect()
}

/// Waits, like [`tierline_tests::outage::settle`], until every frame is decided, every provisional decision
/// reconciled and the outbox empty; on timeout returns what was still missing instead of panicking, so the
/// oracle can name the frames before the test fails.
async fn settle_or_explain(
    dir: &Path,
    edge: &pipeline::Running<EdgeStats>,
    cloud: &pipeline::Running<tierline_cloud::CloudStats>,
    total: u64,
) -> Option<String> {
    let (e, c) = (&edge.stats, &cloud.stats);
    let started = Instant::now();
    // Settled twice in a row: a frame decided before it reached the outbox (an audit sample, a frame
    // decided at its deadline before the prescreen answered) is not held yet at the first look.
    let mut settled_polls = 0;
    loop {
        let decided =
            get(&e.frames_captured) == total && get(&e.decisions) + get(&e.frames_dropped) == total;
        let reconciled = get(&e.reconciliations) >= get(&e.decisions_fallback);
        let forwarded = get(&e.frames_suspect) + get(&e.frames_audit);
        let judged = get(&c.verdicts_stored) >= forwarded && get(&e.verdicts) >= forwarded;
        let held = process::outbox_seqs(&dir.join("outbox.db")).await;
        if decided && reconciled && judged && held.is_empty() {
            settled_polls += 1;
            if settled_polls >= 2 {
                return None;
            }
        } else {
            settled_polls = 0;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Some(format!(
                "not settled after {:?}: decided {decided}, judged {judged} ({} stored, {} verdicts at the edge, {forwarded} forwarded), {} reconciliations for {} local fallbacks, {} verdicts refused as another frame's, {} outbox errors, outbox holds {:?}; {}",
                started.elapsed(),
                get(&c.verdicts_stored),
                get(&e.verdicts),
                get(&e.reconciliations),
                get(&e.decisions_fallback),
                get(&e.verdicts_mismatched),
                get(&e.outbox_errors),
                held,
                pipeline::describe(e, c)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_suspect(d: &Value) -> bool {
    d["event"] == "decision"
        && (d["source"] == "cloud"
            || (d["source"] == "local-fallback" && d.get("detail").is_none()))
}

fn local_fallbacks(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter(|d| d["event"] == "decision" && d["source"] == "local-fallback")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_delay_and_resets_between_edge_and_broker_lose_nothing_and_decide_in_time() {
    let mut rng = Rng::from_env("blackhole");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let broker = Mosquitto::start(dir.path());
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], broker.port())))
        .await
        .unwrap();
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let mut config = pipeline::edge_config(
        proxy.port(),
        dir.path(),
        &cameras(&mut rng),
        &format!("deadline = \"{DEADLINE_MS}ms\"\naudit_rate = 0.05"),
    );
    config.mqtt.keep_alive = KEEP_ALIVE;
    let edge = pipeline::start_edge(config);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let tail_stop = CancellationToken::new();
    let tailer = tail(log.clone(), seen.clone(), tail_stop.clone());
    let total = CAMERAS * FRAMES;
    let e = edge.stats.clone();
    pipeline::wait_until(
        "first cloud decisions",
        Duration::from_secs(60),
        || get(&e.decisions_cloud) > 3,
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
    let hole = fault("black hole", &proxy, Mode::BlackHole, HOLE, &log, &e).await;
    let (hole_heal, _) = healed("cloud decisions after the black hole", &e, &cloud.stats).await;
    tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
    let delay = fault(
        "delay 300 ms",
        &proxy,
        Mode::Delay(DELAY),
        DELAY_WINDOW,
        &log,
        &e,
    )
    .await;
    let (delay_heal, _) = healed("cloud decisions after the delay", &e, &cloud.stats).await;
    tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
    let reset = fault("resets", &proxy, Mode::Reset, RESET_WINDOW, &log, &e).await;
    // As soon as the edge is back (its session acknowledged), the path goes dark while it sends its backlog.
    let connects = get(&e.link_connects);
    pipeline::wait_until(
        "the edge reconnects after the resets",
        Duration::from_secs(30),
        || get(&e.link_connects) > connects,
        || pipeline::describe(&e, &cloud.stats),
    )
    .await;
    let burst = fault(
        "black hole while the backlog drains",
        &proxy,
        Mode::BlackHole,
        BURST_HOLE,
        &log,
        &e,
    )
    .await;
    let (burst_heal, captured_at_heal) = healed(
        "cloud decisions after the second black hole",
        &e,
        &cloud.stats,
    )
    .await;
    eprintln!(
        "blackhole: cloud decisions again {hole_heal:?} after the black hole, {delay_heal:?} after the delay, {burst_heal:?} after the second black hole; proxy {:?}",
        proxy.stats()
    );

    let unsettled = settle_or_explain(dir.path(), &edge, &cloud, total).await;
    if let Some(why) = &unsettled {
        eprintln!("blackhole: {why}");
    }
    let stats = edge.stats.clone();
    edge.stop().await.unwrap();
    cloud.stop().await.unwrap();
    // Nothing was left behind in the outbox by the stop (a frame counted as forwarded but never sent).
    let left = process::outbox_seqs(&dir.path().join("outbox.db")).await;
    assert!(
        left.is_empty() || unsettled.is_some(),
        "the outbox still holds {left:?} after the edge stopped; refused {} frames",
        get(&stats.frames_refused)
    );
    tail_stop.cancel();
    tailer.join().unwrap();

    // The faults landed inside the traffic window: frames were still captured after each ended, and after
    // the link healed from the last one.
    for w in [&hole, &delay, &reset, &burst] {
        assert!(
            w.captured.0 > 0 && w.captured.1 > w.captured.0 && w.captured.1 < total,
            "{} did not land inside the traffic window: {w:?} of {total} frames",
            w.name
        );
    }
    assert!(
        captured_at_heal < total,
        "the traffic ended before the link healed from the last fault ({captured_at_heal} of {total} frames captured)"
    );

    let (decisions, stored) = check_pipeline(dir.path(), "edge-t", &stats, total).await;
    assert!(unsettled.is_none(), "{}", unsettled.unwrap_or_default());
    // Beyond the shared oracle: verdicts are stored once each, and only for frames the edge decided.
    let decided = decisions.per_seq();
    assert!(
        stored.verdicts.values().all(|&n| n == 1),
        "a frame has more than one stored verdict"
    );
    let strangers: Vec<_> = stored
        .verdicts
        .keys()
        .filter(|(edge, seq)| edge != "edge-t" || !decided.contains_key(seq))
        .collect();
    assert!(
        strangers.is_empty(),
        "stored verdicts for frames the edge never decided: {strangers:?}"
    );
    for a in decisions.of("audit") {
        let seq = a["seq"].as_u64().unwrap();
        assert!(
            stored.verdicts.contains_key(&("edge-t".to_string(), seq)),
            "audit sample {seq} has no stored verdict"
        );
    }

    let events = &decisions.events;
    let during = |w: &Window| &events[w.lines.0.min(events.len())..w.lines.1.min(events.len())];
    eprintln!(
        "blackhole: local fallbacks during the faults: black hole {}, delay {}, resets {}, black hole while the backlog drains {}",
        local_fallbacks(during(&hole)),
        local_fallbacks(during(&delay)),
        local_fallbacks(during(&reset)),
        local_fallbacks(during(&burst)),
    );
    for w in [&hole, &burst] {
        // Without a local decision during the hole, the hole touched nothing this test checks.
        assert!(
            local_fallbacks(during(w)) > 0,
            "no suspect was decided locally during the {}: the test exercised nothing ({w:?})",
            w.name
        );
        // The hole mattered to the link, and the edge saw it: it gave up the dead connection and opened a
        // new one while the hole lasted (seen by the proxy, not reported by the edge).
        assert!(
            w.accepted.1 > w.accepted.0,
            "the edge never noticed the {} (keep-alive {KEEP_ALIVE:?}): no new connection while it lasted; link reported down after {:?}; {w:?}",
            w.name,
            w.first_link_down
        );
        assert!(
            w.first_link_down.is_some(),
            "the edge reconnected but never reported its link down during the {}: {w:?}",
            w.name
        );
    }

    // Every suspect decided by its deadline, as the log reports it (whether or not the outbox held it).
    let limit_us = (DEADLINE_MS + SLACK_MS) * 1000;
    let suspects: Vec<&Value> = decisions
        .decisions()
        .filter(|d| d["source"] == "cloud" || d["source"] == "local-fallback")
        .collect();
    let late: Vec<&&Value> = suspects
        .iter()
        .filter(|d| d["latency_us"].as_u64().unwrap() > limit_us)
        .collect();
    let worst_logged = suspects
        .iter()
        .filter_map(|d| d["latency_us"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        late.is_empty(),
        "{} of {} suspects decided later than {} ms after capture (log's latency_us): {late:?}",
        late.len(),
        suspects.len(),
        limit_us / 1000
    );

    // And as the test sees it: when its tail first saw the line, minus the capture time (carried by the line
    // or, failing that, stored by the cloud). A line is provably late if it was not yet there at a read
    // that began after its deadline plus slack; the upper bound (when it was first seen) is reported.
    let captured = capture_times(&dir.path().join("cloud.db")).await;
    let seen = seen.lock().unwrap();
    let (mut measured, mut worst_seen_us, mut provably_late) = (0, 0i64, Vec::new());
    for s in seen.iter().filter(|s| is_suspect(&s.line)) {
        let seq = s.line["seq"].as_u64().unwrap();
        let Some(capture) = s.line["capture_time_us"]
            .as_i64()
            .or_else(|| captured.get(&seq).copied())
        else {
            continue;
        };
        measured += 1;
        worst_seen_us = worst_seen_us.max(s.seen_us - capture);
        if s.after_us - capture > limit_us as i64 {
            provably_late.push((seq, (s.after_us - capture) / 1000, s.line.clone()));
        }
    }
    assert_eq!(
        measured,
        decisions.suspect_seqs().len(),
        "the tail saw every suspect's line and knows its capture time"
    );
    assert!(
        provably_late.is_empty(),
        "suspects whose decision line was not yet written {} ms after capture (seq, ms, line): {provably_late:?}",
        limit_us / 1000
    );

    let reconciled: BTreeSet<u64> = decisions
        .of("reconciliation")
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    eprintln!(
        "blackhole: {total} frames, {} decisions, {} suspects, {} local fallbacks, {} reconciled, {} verdicts stored ({} duplicate deliveries); worst suspect latency {:.1} ms in the log, ≤ {:.1} ms seen by the tail (limit {} ms)",
        decided.len(),
        suspects.len(),
        local_fallbacks(events),
        reconciled.len(),
        stored.verdicts.len(),
        stored.duplicate_deliveries(),
        worst_logged as f64 / 1000.0,
        worst_seen_us as f64 / 1000.0,
        limit_us / 1000
    );
    drop(proxy);
}
