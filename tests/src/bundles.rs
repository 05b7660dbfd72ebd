//! Model bundles for the rollout tests: copies of the shipped prescreen or full model under another version, with their
//! manifest edited (a threshold that fails the golden samples, fewer golden samples), to pack and sign.

use std::path::{Path, PathBuf};

/// A copy of the shipped prescreen (manifest, model file, golden samples) in `dir` as `version`, its
/// manifest text passed through `edit`; returns the manifest's path.
pub fn prescreen_variant(dir: &Path, version: &str, edit: impl Fn(String) -> String) -> PathBuf {
    variant(
        dir,
        ("prescreen", "1.1.0", "prescreen-1.1.0.onnx"),
        version,
        edit,
    )
}

/// A copy of the shipped full model in `dir` as `version`, like [`prescreen_variant`].
pub fn full_variant(dir: &Path, version: &str, edit: impl Fn(String) -> String) -> PathBuf {
    variant(dir, ("full", "1.0.0", "full-1.0.0.onnx"), version, edit)
}

/// A copy of shipped model `name` (at `shipped` version, in `file`) as `version`.
fn variant(
    dir: &Path,
    (name, shipped, file): (&str, &str, &str),
    version: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let models = crate::pipeline::models_dir();
    let copy = dir.join(format!("variant-{name}-{version}"));
    std::fs::create_dir_all(copy.join("golden")).expect("variant directory");
    let manifest = format!("{name}.toml");
    let text = std::fs::read_to_string(models.join(&manifest)).expect("shipped manifest");
    let text = edit(text.replacen(
        &format!("version = \"{shipped}\""),
        &format!("version = \"{version}\""),
        1,
    ));
    std::fs::write(copy.join(&manifest), text).expect("variant manifest");
    std::fs::copy(models.join(file), copy.join(file)).expect("model file");
    for entry in std::fs::read_dir(models.join("golden")).expect("golden samples") {
        let entry = entry.expect("golden sample");
        std::fs::copy(entry.path(), copy.join("golden").join(entry.file_name()))
            .expect("golden sample copy");
    }
    copy.join(manifest)
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
