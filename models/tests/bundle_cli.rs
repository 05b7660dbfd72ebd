//! `tierline-models keygen`, `sign` and `verify` as an operator uses them: a signed bundle verifies with the
//! right key (or either of two during a rotation) and is refused, with the reason named, when the key is not
//! trusted or the bundle was altered; a model that fails its golden samples is never signed.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_signed_bundle_verifies_only_with_a_trusted_key_and_only_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    for key in [&a, &b] {
        let (code, out, err) = run(&["keygen", s(key)]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // A key is never overwritten.
    let before = std::fs::read(&a).unwrap();
    let (code, _, err) = run(&["keygen", s(&a)]);
    assert_ne!(code, 0);
    assert!(err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), before);

    let out_dir = dir.path().join("bundles");
    let manifest = models().join("prescreen.toml");
    let (code, out, err) = run(&[
        "sign",
        s(&manifest),
        "--key",
        s(&a),
        "--sequence",
        "4",
        "--out",
        s(&out_dir),
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
    let (code, out, err) = run(&["verify", s(&bundle), "--trusted", s(&pub_a)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sequence 4") && out.contains("golden samples pass"),
        "{out}"
    );
    // Two trusted keys during a rotation: either order works.
    let (code, out, err) = run(&[
        "verify",
        s(&bundle),
        "--trusted",
        s(&pub_b),
        "--trusted",
        s(&pub_a),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Only the other key trusted: refused, naming the key that signed.
    let (code, _, err) = run(&["verify", s(&bundle), "--trusted", s(&pub_b)]);
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
        s(&tampered),
        "--signature",
        s(&sig),
        "--trusted",
        s(&pub_a),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("does not match its signed statement"), "{err}");
    // A cut-off download: refused as truncated.
    let cut = dir.path().join("cut.bundle");
    std::fs::write(&cut, &bytes[..mid]).unwrap();
    let (code, _, err) = run(&[
        "verify",
        s(&cut),
        "--signature",
        s(&sig),
        "--trusted",
        s(&pub_a),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_model_failing_its_golden_samples_is_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ops.key");
    assert_eq!(run(&["keygen", s(&key)]).0, 0);
    // A copy of the shipped prescreen whose threshold calls every frame defective: its good golden samples
    // fail.
    let copy = dir.path().join("model");
    std::fs::create_dir_all(copy.join("golden")).unwrap();
    let text = std::fs::read_to_string(models().join("prescreen.toml")).unwrap();
    let m: toml::Value = toml::from_str(&text).unwrap();
    std::fs::copy(
        models().join(m["file"].as_str().unwrap()),
        copy.join(m["file"].as_str().unwrap()),
    )
    .unwrap();
    for g in m["golden"].as_array().unwrap() {
        let f = g["file"].as_str().unwrap();
        std::fs::copy(models().join(f), copy.join(f)).unwrap();
    }
    let broken = with_threshold(&text, "0.0");
    std::fs::write(copy.join("prescreen.toml"), broken).unwrap();
    let out_dir = dir.path().join("bundles");
    let (code, out, err) = run(&[
        "sign",
        s(&copy.join("prescreen.toml")),
        "--key",
        s(&key),
        "--sequence",
        "1",
        "--out",
        s(&out_dir),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("fails its golden samples"), "{err}");
    assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).unwrap().next().is_none());
}

/// The manifest text with its `threshold = …` line replaced.
fn with_threshold(text: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("threshold") {
                format!("threshold = {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
