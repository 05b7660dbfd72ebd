//! Smoke run of the benchmark harness: `--quick` sizes into a temporary directory. Checks that every
//! section is present and every number is finite and not negative, and that the key figures are positive.
//! It checks no timing: these machines are too noisy for thresholds. The peers section is left out: it
//! installs the Python peers with pip, which the tests never need.

use std::process::Command;

fn numbers(v: &serde_json::Value, path: &str, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            out.push((path.to_string(), n.as_f64().unwrap_or(f64::NAN)))
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                numbers(x, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                numbers(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn positive(v: &serde_json::Value, pointer: &str) {
    let x = v.pointer(pointer).and_then(serde_json::Value::as_f64);
    assert!(
        x.is_some_and(|x| x > 0.0 && x.is_finite()),
        "{pointer} should be a positive number, is {x:?}"
    );
}

#[test]
fn quick_run_writes_every_section() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_tierline-bench"))
        .arg("--quick")
        .arg("--only")
        .arg("edge,latency,outbox,recovery,cloud,memory")
        .arg("--out-dir")
        .arg(dir.path())
        .status()
        .expect("run tierline-bench");
    assert!(status.success(), "tierline-bench --quick failed: {status}");

    let text =
        std::fs::read_to_string(dir.path().join("benchmarks/results.json")).expect("results.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("results.json is JSON");
    for section in [
        "machine", "edge", "latency", "outbox", "recovery", "cloud", "memory",
    ] {
        assert!(v[section].is_object(), "section {section} missing: {text}");
    }
    let mut all = Vec::new();
    numbers(&v, "", &mut all);
    for (path, x) in &all {
        assert!(x.is_finite() && *x >= 0.0, "{path} = {x}");
    }
    for p in [
        "/machine/cores",
        "/machine/core_peak_gflops",
        "/machine/measured_peak_gflops",
        "/edge/rows/0/raw_ort_fps",
        "/edge/rows/0/bare_loop_fps",
        "/edge/rows/0/pipeline_fps",
        "/edge/rows/1/pipeline_fps",
        "/edge/model_flops",
        "/edge/decode_ms",
        "/latency/rows/0/latency/p99_ms",
        "/latency/rows/1/latency/p99_ms",
        "/outbox/rows/0/frames_per_s",
        "/outbox/rows/0/commit/p99_ms",
        "/outbox/disk_synced_mb_per_s",
        "/recovery/restart_first_publish_ms",
        "/recovery/drain_fps",
        "/cloud/rows/0/raw_ort_ips",
        "/cloud/rows/0/runner_ips",
        "/memory/empty_rss_mib",
        "/memory/queued_rss_peak_mib",
    ] {
        positive(&v, p);
    }
    assert_eq!(v["quick"], true);
    let md = std::fs::read_to_string(dir.path().join("benchmarks.md")).expect("benchmarks.md");
    for heading in [
        "## Machine",
        "## Targets",
        "## 1.",
        "## 2.",
        "## 3.",
        "## 4.",
        "## 5.",
        "## 6.",
    ] {
        assert!(md.contains(heading), "benchmarks.md lacks {heading}");
    }
    // The charts the report shows exist and are SVG.
    for chart in ["latency.svg", "batch.svg", "drain.svg"] {
        let path = dir.path().join("benchmarks").join(chart);
        let svg = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            svg.starts_with("<svg"),
            "{} is not an SVG chart",
            path.display()
        );
        assert!(
            md.contains(&format!("benchmarks/{chart}")),
            "benchmarks.md does not show {chart}"
        );
    }
}
