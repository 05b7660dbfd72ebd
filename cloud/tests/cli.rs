//! The `tierline-cloud` binary refuses bad configuration and model files with exit code 78 and a message that
//! names the key or the file.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(config: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierline-cloud"))
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

#[test]
fn missing_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(models().join("full.toml")).unwrap();
    std::fs::write(dir.path().join("full.toml"), manifest).unwrap();
    let cfg = dir.path().join("cloud.toml");
    std::fs::write(
        &cfg,
        format!("[model]\nmanifest = {:?}\n", dir.path().join("full.toml")),
    )
    .unwrap();
    let (code, err) = run(&cfg, &["--check"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("full-1.0.0.onnx") && err.contains("cannot read model file"),
        "{err}"
    );
}

#[test]
fn good_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cloud.toml");
    std::fs::write(
        &cfg,
        format!("[model]\nmanifest = {:?}\n", models().join("full.toml")),
    )
    .unwrap();
    let (code, err) = run(&cfg, &["--check"]);
    assert_eq!(code, 0, "{err}");
}
