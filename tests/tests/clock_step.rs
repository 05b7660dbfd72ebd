//! The wall clock steps back an hour under a running edge (an NTP correction, an operator, a VM resumed from
//! an old snapshot) while frames flow and the cloud is away. Resend timers and deadlines run on the
//! monotonic clock, so nothing stalls: every suspect the edge forwarded, before and after the step, gets its
//! stored verdict within seconds once the cloud comes, and every frame still gets its decision.
//!
//! The edge runs as its own process under libfaketime (Debian's `faketime`, installed by `scripts/setup`),
//! which moves only `CLOCK_REALTIME` (`FAKETIME_DONT_FAKE_MONOTONIC=1`), read again from a file each second:
//! the test writes `-1h` into it mid-run. The decision log proves the step landed inside the edge: frames
//! captured after it carry capture times an hour back.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tierline_shared::time::now_us;
use tierline_tests::oracle::{Decisions, Stored};
use tierline_tests::{Mosquitto, pipeline, process};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const FRAMES: u64 = 80;

fn edge_toml(port: u16, dir: &Path) -> String {
    format!(
        "[edge]\nid = \"edge-c\"\nsite = \"plant\"\nline = \"l1\"\n[mqtt]\nport = {port}\nreconnect_delay = \"100ms\"\n\
         [model]\nmanifest = {:?}\n[decision]\ndeadline = \"300ms\"\naudit_rate = 0.0\n\
         [outbox]\npath = {:?}\nresend_after = \"1s\"\n[sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[camera]]\nid = \"cam-0\"\nkind = \"synthetic\"\nseed = 5\nfps = 10\ndefect_rate = 0.5\nframes = {FRAMES}\n",
        pipeline::models_dir().join("prescreen.toml"),
        dir.join("outbox.db"),
        dir.join("decisions.jsonl"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_back_stalls_no_resend_and_no_decision() {
    assert!(
        Path::new(LIBFAKETIME).is_file(),
        "{LIBFAKETIME} is missing: run scripts/setup (it installs Debian's faketime)"
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, edge_toml(broker.port(), dir.path())).unwrap();
    let log = dir.path().join("edge.log");
    let offset_path = offset.display().to_string();
    let mut edge = process::spawn_edge_with(
        &config,
        &log,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &offset_path),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let decisions = dir.path().join("decisions.jsonl");
    let lines = |path: &Path| Decisions::read(path).decisions().count() as u64;

    // Frames flow with no cloud: suspects are published, acknowledged by the broker, and wait in flight.
    let started = Instant::now();
    while lines(&decisions) < FRAMES / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the edge decided too little; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before_step: BTreeSet<u64> = process::outbox_seqs(&dir.path().join("outbox.db"))
        .await
        .into_iter()
        .collect();
    assert!(
        !before_step.is_empty(),
        "no suspect was held before the step"
    );
    // The step, while the camera still runs.
    std::fs::write(&offset, "-1h\n").unwrap();
    let stepped_at = now_us();
    eprintln!(
        "clock step: -1h written with {} suspects held",
        before_step.len()
    );

    while lines(&decisions) < FRAMES {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "frames stopped being decided after the step; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now the cloud comes. Resends are due a second after each send on the monotonic clock; a timer on the
    // wall clock would hold the records sent before the step for an hour.
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let came = Instant::now();
    let cloud_db = dir.path().join("cloud.db");
    loop {
        let held = process::outbox_seqs(&dir.path().join("outbox.db")).await;
        if held.is_empty() {
            break;
        }
        assert!(
            came.elapsed() < Duration::from_secs(20),
            "{} suspects still held {:?} after the cloud came (held before the step: {before_step:?}); edge log:\n{}",
            held.len(),
            came.elapsed(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_in = came.elapsed();
    process::terminate(&mut edge);
    cloud.stop().await.unwrap();

    // The oracle: the decision log and the cloud's store.
    let log_events = Decisions::read(&decisions);
    log_events.assert_one_decision_each(FRAMES);
    let stored = Stored::read(&cloud_db).await;
    let stored_seqs: BTreeSet<u64> = stored
        .verdicts
        .keys()
        .filter(|(e, _)| e == "edge-c")
        .map(|(_, s)| *s)
        .collect();
    let suspects = log_events.suspect_seqs();
    assert!(
        suspects.is_subset(&stored_seqs) && before_step.is_subset(&stored_seqs),
        "suspects without a stored verdict: {:?}",
        suspects.difference(&stored_seqs).collect::<Vec<_>>()
    );
    assert!(stored.verdicts.values().all(|n| *n == 1));
    // The step landed inside the edge: what it logged at shutdown is stamped an hour back. (Capture times
    // cannot show it: a camera's capture times never go backwards.)
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find_map(|l| log_time_us(l.trim_start()))
        .expect("the edge logged nothing");
    assert!(
        last < stepped_at - 3_000_000_000,
        "the edge's last log line is not stamped on the stepped clock: the step did not reach it\n{text}"
    );
    eprintln!(
        "clock step: {} suspects ({} held at the step) stored; drained {drained_in:?} after the cloud came; the edge's last log line is stamped {:.0} s behind the test's clock",
        suspects.len(),
        before_step.len(),
        (now_us() - last) as f64 / 1e6
    );
}

/// Microseconds since the epoch of a log line's leading `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` stamp.
fn log_time_us(line: &str) -> Option<i64> {
    let b = line.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| line.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1_000_000)
}
