//! The `tierline-edge` binary refuses bad configuration and model files with exit code 78 and a message that
//! names the key or the file.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(config: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierline-edge"))
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
fn unknown_config_key_is_named_and_exits_with_config_code() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[edge]\nid = \"e\"\n[model]\nmanifest = {:?}\nthreshhold = 0.3\n[[camera]]\nid = \"c\"\nkind = \"synthetic\"\n",
            models().join("prescreen.toml")
        ),
    )
    .unwrap();
    let (code, err) = run(&cfg, &["--check"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("threshhold") && err.contains("edge.toml"),
        "{err}"
    );
}

#[test]
fn model_failing_its_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        models().join("prescreen.toml"),
        dir.path().join("prescreen.toml"),
    )
    .unwrap();
    let mut onnx = std::fs::read(models().join("prescreen-1.1.0.onnx")).unwrap();
    onnx.truncate(onnx.len() - 8);
    std::fs::write(dir.path().join("prescreen-1.1.0.onnx"), onnx).unwrap();
    let cfg = dir.path().join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[edge]\nid = \"e\"\n[model]\nmanifest = {:?}\n[[camera]]\nid = \"c\"\nkind = \"synthetic\"\n",
            dir.path().join("prescreen.toml")
        ),
    )
    .unwrap();
    let (code, err) = run(&cfg, &["--check"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("prescreen-1.1.0.onnx") && err.contains("fails its checksum"),
        "{err}"
    );
}
