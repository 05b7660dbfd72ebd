//! Model bundles for the rollout tests: copies of the shipped prescreen under another version, with their
//! manifest edited (a threshold that fails the golden samples, fewer golden samples), to pack and sign.

use std::path::{Path, PathBuf};

/// A copy of the shipped prescreen (manifest, model file, golden samples) in `dir` as `version`, its
/// manifest text passed through `edit`; returns the manifest's path.
pub fn prescreen_variant(dir: &Path, version: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let models = crate::pipeline::models_dir();
    let copy = dir.join(format!("variant-{version}"));
    std::fs::create_dir_all(copy.join("golden")).expect("variant directory");
    let text = std::fs::read_to_string(models.join("prescreen.toml")).expect("shipped manifest");
    let text = edit(text.replacen(
        "version = \"1.1.0\"",
        &format!("version = \"{version}\""),
        1,
    ));
    std::fs::write(copy.join("prescreen.toml"), text).expect("variant manifest");
    std::fs::copy(
        models.join("prescreen-1.1.0.onnx"),
        copy.join("prescreen-1.1.0.onnx"),
    )
    .expect("model file");
    for entry in std::fs::read_dir(models.join("golden")).expect("golden samples") {
        let entry = entry.expect("golden sample");
        std::fs::copy(entry.path(), copy.join("golden").join(entry.file_name()))
            .expect("golden sample copy");
    }
    copy.join("prescreen.toml")
}

/// The manifest text with its `threshold = …` line set to `value`.
pub fn with_threshold(text: String, value: &str) -> String {
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
