//! The demo's report against the synthetic ground truth: its escapes and false rejects must be what the
//! decision log says, and the truth in the log must be what the synthetic stream renders for each frame
//! (re-rendered here from the camera's seed and the frame's place in its stream).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

/// The two counts `against ground truth` reports: (escapes, defective, false rejects, good).
fn reported(stdout: &str) -> (u64, u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("against ground truth"))
        .unwrap_or_else(|| panic!("no ground-truth line in the report:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter(|w| !w.is_empty() && !w.contains('.'))
        .map(|w| w.parse().unwrap())
        .collect();
    // escapes E of D defective frames (..%) decided pass; false rejects F of G good frames (..%)
    (numbers[0], numbers[1], numbers[2], numbers[3])
}

#[test]
fn escapes_and_false_rejects_match_the_decision_log_and_the_rendered_truth() {
    let dir = tempfile::tempdir().unwrap();
    let defect_rate = 0.2;
    let out = Command::new(env!("CARGO_BIN_EXE_tierline-demo"))
        .args(["--frames", "240", "--fps", "40", "--defect-rate", "0.2"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (escapes, defects, false_rejects, goods) = reported(&stdout);
    // Frames dropped by backpressure get no decision and shift the stream positions; none are expected.
    let dropped: u64 = stdout
        .split("dropped by backpressure ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no backpressure count in the report:\n{stdout}"));

    // Decisions per camera in capture order (sequence numbers rise with capture on each camera).
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).unwrap();
    let mut by_camera: BTreeMap<String, Vec<(u64, String, String)>> = BTreeMap::new();
    for line in log.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["event"] != "decision" {
            continue;
        }
        by_camera
            .entry(e["camera_id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                e["seq"].as_u64().unwrap(),
                e["truth"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            ));
    }
    let (mut e, mut d, mut f, mut g) = (0, 0, 0, 0);
    for (camera, mut decisions) in by_camera {
        decisions.sort();
        let seed = 1000 + camera.trim_start_matches("cam-").parse::<u64>().unwrap();
        for (index, (_, truth, action)) in decisions.iter().enumerate() {
            if dropped == 0 {
                let rendered =
                    tierline_edge::synth::render(seed, index as u64, 640, 480, defect_rate);
                assert_eq!(
                    truth,
                    rendered.truth.as_str(),
                    "{camera} frame {index}: the log's truth is not what the stream renders"
                );
            }
            if truth == "good" {
                g += 1;
                f += u64::from(action == "reject");
            } else {
                d += 1;
                e += u64::from(action == "pass");
            }
        }
    }
    assert_eq!(d + g + dropped, 240, "every frame decided once");
    assert!(d > 20, "the run holds defects to judge ({d})");
    assert_eq!(
        (escapes, defects, false_rejects, goods),
        (e, d, f, g),
        "{stdout}"
    );
}
