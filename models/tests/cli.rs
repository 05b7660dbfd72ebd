//! `tierline-models eval` and `calibrate` on the committed labeled samples, checked against an independent
//! pass over the same images through the runtime's `ModelRunner`; `keygen`, `sign` and `verify` as an operator
//! uses them: a signed bundle verifies with the right key (or either of two during a rotation) and is
//! refused, with the reason named, when the key is not trusted or the bundle was altered; a model that fails
//! its golden samples is never signed.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::Command;
use tierline_shared::manifest::Manifest;
use tierline_shared::runner::{ModelRunner, RunnerConfig};
use tierline_tests::bundles::{prescreen_variant, with_threshold};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierline-models"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (label, edge score, cloud defective, cloud label, bytes) per sample, scored directly by the runtime.
fn direct_scores(edge_manifest: &Path) -> Vec<(String, f32, bool, String, u64)> {
    let edge = ModelRunner::start(
        Manifest::load(edge_manifest).unwrap(),
        RunnerConfig::default(),
    )
    .unwrap();
    let cloud = ModelRunner::start(
        Manifest::load(&models().join("full.toml")).unwrap(),
        RunnerConfig::default(),
    )
    .unwrap();
    let dir = models().join("samples");
    let csv = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    csv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split(',');
            let (file, label) = (f.next().unwrap(), f.next().unwrap());
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let n = bytes.len() as u64;
            let img = Bytes::from(bytes);
            let e = edge.score_blocking(img.clone()).unwrap();
            let c = cloud.score_blocking(img).unwrap();
            (label.to_string(), e.defect_score, c.defective, c.label, n)
        })
        .collect()
}

fn eval_json(dir: &Path, edge: &Path, extra: &[&str]) -> serde_json::Value {
    let cloud = models().join("full.toml");
    let mut args = vec![
        "eval",
        path(dir),
        "--edge",
        path(edge),
        "--cloud",
        path(&cloud),
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// A copy of the prescreen manifest, model and goldens that a test may rewrite.
fn prescreen_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = Manifest::load(&models().join("prescreen.toml")).unwrap();
    std::fs::copy(models().join(&m.file), dir.path().join(&m.file)).unwrap();
    std::fs::create_dir(dir.path().join("golden")).unwrap();
    for g in &m.golden {
        std::fs::copy(models().join(&g.file), dir.path().join(&g.file)).unwrap();
    }
    let path = dir.path().join("prescreen.toml");
    std::fs::copy(models().join("prescreen.toml"), &path).unwrap();
    (dir, path)
}

#[test]
fn eval_reports_what_the_runtime_decides() {
    let edge = models().join("prescreen.toml");
    let threshold = Manifest::load(&edge).unwrap().output.threshold;
    let direct = direct_scores(&edge);
    let r = eval_json(&models().join("samples"), &edge, &[]);

    let flagged: Vec<_> = direct.iter().filter(|d| d.2).collect();
    let caught = flagged.iter().filter(|d| d.1 >= threshold).count();
    assert_eq!(r["frames"], direct.len());
    assert_eq!(r["edge_recall_vs_cloud"]["total"], flagged.len());
    assert_eq!(r["edge_recall_vs_cloud"]["hits"], caught);
    let defective: Vec<_> = direct.iter().filter(|d| d.0 != "good").collect();
    assert_eq!(r["edge_recall_vs_truth"]["total"], defective.len());
    assert_eq!(
        r["edge_recall_vs_truth"]["hits"],
        defective.iter().filter(|d| d.1 >= threshold).count()
    );
    let fwd_bytes: u64 = direct
        .iter()
        .filter(|d| d.1 >= threshold)
        .map(|d| d.4)
        .sum();
    let all_bytes: u64 = direct.iter().map(|d| d.4).sum();
    let got = r["forwarded_bytes"].as_f64().unwrap();
    assert!(
        (got - fwd_bytes as f64 / all_bytes as f64).abs() < 1e-9,
        "{got}"
    );
    let cloud_ok = direct.iter().filter(|d| d.3 == d.0).count();
    let got = r["cloud_accuracy"].as_f64().unwrap();
    assert!((got - cloud_ok as f64 / direct.len() as f64).abs() < 1e-9);
    let cascade_ok = direct
        .iter()
        .filter(|d| {
            (if d.1 >= threshold {
                d.3.as_str()
            } else {
                "good"
            }) == d.0
        })
        .count();
    let got = r["cascade_accuracy"].as_f64().unwrap();
    assert!((got - cascade_ok as f64 / direct.len() as f64).abs() < 1e-9);
    let per_class: u64 = r["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["frames"].as_u64().unwrap())
        .sum();
    assert_eq!(per_class, direct.len() as u64);
}

#[test]
fn eval_table_names_the_numbers() {
    let (code, out, err) = run(&[
        "eval",
        path(&models().join("samples")),
        "--edge",
        path(&models().join("prescreen.toml")),
        "--cloud",
        path(&models().join("full.toml")),
        "--prevalence",
        "0.02",
    ]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "edge recall vs cloud flags",
        "forwarded",
        "cascade",
        "weighted to 2.00 %",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn calibrate_writes_a_threshold_that_keeps_every_cloud_flag() {
    let (_dir, manifest) = prescreen_copy();
    let (code, out, err) = run(&[
        "calibrate",
        path(&models().join("samples")),
        "--edge",
        path(&manifest),
        "--cloud",
        path(&models().join("full.toml")),
        "--target-recall",
        "1.0",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    let written = Manifest::load(&manifest).unwrap().output.threshold;
    assert_eq!(c["threshold"].as_f64().unwrap() as f32, written);
    // The independent oracle: every sample the cloud flags scores at or above the written threshold, and
    // the threshold is not needlessly low (within the 1e-6 rounding of the written value).
    let direct = direct_scores(&manifest);
    let lowest = direct
        .iter()
        .filter(|d| d.2)
        .map(|d| d.1)
        .fold(f32::MAX, f32::min);
    assert!(
        written <= lowest && lowest - written < 2e-6,
        "{written} vs {lowest}"
    );
    let r = eval_json(&models().join("samples"), &manifest, &[]);
    assert_eq!(r["edge_recall_vs_cloud"]["rate"], 1.0);
}

#[test]
fn calibrate_dry_run_leaves_the_manifest() {
    let (_dir, manifest) = prescreen_copy();
    let before = std::fs::read_to_string(&manifest).unwrap();
    let (code, out, err) = run(&[
        "calibrate",
        path(&models().join("samples")),
        "--edge",
        path(&manifest),
        "--cloud",
        path(&models().join("full.toml")),
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), before);
}

#[test]
fn folder_names_serve_as_labels() {
    let dir = tempfile::tempdir().unwrap();
    let samples = models().join("samples");
    let csv = std::fs::read_to_string(samples.join("labels.csv")).unwrap();
    let mut n = 0;
    for line in csv.lines().skip(1).filter(|l| !l.is_empty()) {
        let mut f = line.split(',');
        let (file, label) = (f.next().unwrap(), f.next().unwrap());
        std::fs::create_dir_all(dir.path().join(label)).unwrap();
        std::fs::copy(samples.join(file), dir.path().join(label).join(file)).unwrap();
        n += 1;
    }
    let r = eval_json(dir.path(), &models().join("prescreen.toml"), &[]);
    assert_eq!(r["frames"], n);
}

#[test]
fn unknown_label_and_bad_prevalence_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        models().join("samples/frame-00.jpg"),
        dir.path().join("a.jpg"),
    )
    .unwrap();
    std::fs::write(dir.path().join("labels.csv"), "file,label\na.jpg,rust\n").unwrap();
    let (code, _, err) = run(&[
        "eval",
        path(dir.path()),
        "--edge",
        path(&models().join("prescreen.toml")),
        "--cloud",
        path(&models().join("full.toml")),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("\"rust\"") && err.contains("not a class"),
        "{err}"
    );
    let (code, _, err) = run(&["eval", path(dir.path()), "--prevalence", "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("--prevalence"), "{err}");
}

#[test]
fn a_signed_bundle_verifies_only_with_a_trusted_key_and_only_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    for key in [&a, &b] {
        let (code, out, err) = run(&["keygen", path(key)]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // A key is never overwritten.
    let before = std::fs::read(&a).unwrap();
    let (code, _, err) = run(&["keygen", path(&a)]);
    assert_ne!(code, 0);
    assert!(err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), before);

    let out_dir = dir.path().join("bundles");
    let manifest = models().join("prescreen.toml");
    let (code, out, err) = run(&[
        "sign",
        path(&manifest),
        "--key",
        path(&a),
        "--sequence",
        "4",
        "--out",
        path(&out_dir),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let signed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bundle = PathBuf::from(signed["bundle"].as_str().unwrap());
    let sig = PathBuf::from(signed["signature"].as_str().unwrap());
    assert!(bundle.starts_with(&out_dir) && sig.starts_with(&out_dir));
    // The bundle is addressed by its own hash (an independent check with sha256sum).
    let sum = Command::new("sha256sum").arg(&bundle).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(sum.split_whitespace().next(), signed["sha256"].as_str());

    let pub_a = dir.path().join("a.key.pub");
    let pub_b = dir.path().join("b.key.pub");
    let (code, out, err) = run(&["verify", path(&bundle), "--trusted", path(&pub_a)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sequence 4") && out.contains("golden samples pass"),
        "{out}"
    );
    // Two trusted keys during a rotation: either order works.
    let (code, out, err) = run(&[
        "verify",
        path(&bundle),
        "--trusted",
        path(&pub_b),
        "--trusted",
        path(&pub_a),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Only the other key trusted: refused, naming the key that signed.
    let (code, _, err) = run(&["verify", path(&bundle), "--trusted", path(&pub_b)]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not trusted here") && err.contains(signed["key_id"].as_str().unwrap()),
        "{err}"
    );
    // One flipped byte in the archive: refused as not matching its statement.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let tampered = dir.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, _, err) = run(&[
        "verify",
        path(&tampered),
        "--signature",
        path(&sig),
        "--trusted",
        path(&pub_a),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("does not match its signed statement"), "{err}");
    // A cut-off download: refused as truncated.
    let cut = dir.path().join("cut.bundle");
    std::fs::write(&cut, &bytes[..mid]).unwrap();
    let (code, _, err) = run(&[
        "verify",
        path(&cut),
        "--signature",
        path(&sig),
        "--trusted",
        path(&pub_a),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_model_failing_its_golden_samples_is_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ops.key");
    assert_eq!(run(&["keygen", path(&key)]).0, 0);
    // A copy of the shipped prescreen whose threshold calls every frame defective: its good golden samples
    // fail.
    let manifest = prescreen_variant(dir.path(), "1.1.1", |t| with_threshold(t, "0.0"));
    let out_dir = dir.path().join("bundles");
    let (code, out, err) = run(&[
        "sign",
        path(&manifest),
        "--key",
        path(&key),
        "--sequence",
        "1",
        "--out",
        path(&out_dir),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("fails its golden samples"), "{err}");
    assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).unwrap().next().is_none());
}

/// Writes `n` synthetic 640×480 frames of the cast surface into `dir` (good ones when `defective` is false,
/// each with one defect otherwise), starting at stream index `from`; returns their truths.
fn cast_frames(dir: &Path, n: usize, seed: u64, defective: bool) -> Vec<String> {
    use tierline_edge::synth::{Surface, render};
    std::fs::create_dir_all(dir).unwrap();
    let mut truths = Vec::new();
    let mut i = 0;
    while truths.len() < n {
        let f = render(seed, i, 640, 480, if defective { 1.0 } else { 0.0 });
        i += 1;
        if f.surface != Surface::Cast {
            continue;
        }
        std::fs::write(dir.join(format!("f-{i:05}.jpg")), f.to_jpeg(90).unwrap()).unwrap();
        truths.push(f.truth.as_str().to_string());
    }
    truths
}

/// Share of the JPEG frames in `dir` the runner flags.
fn flagged_share(runner: &ModelRunner, dir: &Path) -> f64 {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    let flagged = files
        .iter()
        .filter(|f| {
            let img = Bytes::from(std::fs::read(f).unwrap());
            runner.score_blocking(img).unwrap().defective
        })
        .count();
    flagged as f64 / files.len() as f64
}

#[test]
fn fit_builds_an_anomaly_prescreen_from_good_frames_that_finds_defects() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    cast_frames(&good, 60, 7, false);
    let out = tmp.path().join("out");
    let trunk = models().join("prescreen-2.toml");
    let (code, stdout, err) = run(&[
        "fit",
        path(&good),
        "--trunk",
        path(&trunk),
        "--name",
        "anomaly-cast",
        "--out",
        path(&out),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["holdout_frames"], 18, "{report}");
    assert_eq!(report["fit_frames"], 42, "{report}");

    // The written manifest, loaded as the runtime loads it: an anomaly model with its golden frames.
    let manifest = Manifest::load(&out.join("anomaly-cast.toml")).unwrap();
    assert_eq!(
        manifest.output.kind,
        tierline_shared::manifest::OutputKind::Anomaly
    );
    assert!(manifest.tiling.is_some(), "the trunk's tiling carries over");
    let runner = ModelRunner::start(manifest, RunnerConfig::default()).unwrap();
    runner.check_golden_blocking().unwrap();

    // Frames it never saw, of the same surface (another stream): few good ones flagged, most defective ones.
    let fresh_good = tmp.path().join("fresh-good");
    let fresh_bad = tmp.path().join("fresh-bad");
    cast_frames(&fresh_good, 40, 8, false);
    let truths = cast_frames(&fresh_bad, 40, 9, true);
    assert!(truths.iter().all(|t| t != "good"));
    let (fa, recall) = (
        flagged_share(&runner, &fresh_good),
        flagged_share(&runner, &fresh_bad),
    );
    eprintln!("fresh good frames flagged {fa:.3}, fresh defective frames flagged {recall:.3}");
    assert!(fa <= 0.15, "flags {fa} of unseen good frames");
    assert!(
        recall >= fa + 0.4,
        "flags {recall} of defective frames against {fa} of good ones"
    );
}

#[test]
fn fit_refuses_too_few_frames_corrupt_frames_and_unknown_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let trunk = models().join("prescreen-2.toml");
    let out = tmp.path().join("out");
    // `fit <frames> --trunk <trunk> --out <out>` and `extra`; returns the error output of a failed run.
    let fail = |frames: &Path, extra: &[&str]| {
        let mut args = vec![
            "fit",
            path(frames),
            "--trunk",
            path(&trunk),
            "--out",
            path(&out),
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = run(&args);
        assert_ne!(code, 0, "{args:?} succeeded");
        err
    };
    let few = tmp.path().join("few");
    cast_frames(&few, 3, 7, false);
    let err = fail(&few, &["--name", "a"]);
    assert!(
        err.contains("holds 3 good frames") && err.contains("at least"),
        "{err}"
    );

    let corrupt = tmp.path().join("corrupt");
    cast_frames(&corrupt, 25, 7, false);
    std::fs::write(corrupt.join("f-00000-broken.jpg"), b"\xff\xd8 not a jpeg").unwrap();
    let err = fail(&corrupt, &["--name", "a"]);
    assert!(
        err.contains("f-00000-broken.jpg") && err.contains("remove it"),
        "{err}"
    );
    let err = fail(&corrupt, &["--name", "a", "--layer", "nope"]);
    assert!(err.contains("\"nope\"") && err.contains("relu"), "{err}");
    // A version that would name a file outside --out.
    let err = fail(&corrupt, &["--name", "a", "--version", "../../x"]);
    assert!(err.contains("--version"), "{err}");
    // A fit that is built but fails the runtime's check (a threshold among its typical good frames, so a
    // golden good frame is flagged) is not moved into --out.
    let clean = tmp.path().join("clean");
    cast_frames(&clean, 25, 7, false);
    let err = fail(&clean, &["--name", "a", "--target-false-alarms", "0.99"]);
    assert!(err.contains("golden") && err.contains("lower it"), "{err}");
    // Nothing was left behind in --out by the failed fits.
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // A name that would overwrite the trunk's own manifest.
    let (code, _, err) = run(&[
        "fit",
        path(&corrupt),
        "--trunk",
        path(&trunk),
        "--name",
        "prescreen-2",
        "--out",
        path(&models()),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("overwrite the trunk"), "{err}");
}
