//! Model manifests: a TOML file beside each ONNX model that says what the model expects and what its output
//! means, so the runtime stays model-agnostic.
//!
//! ```toml
//! name = "prescreen"
//! version = "1.1.0"
//! file = "prescreen-1.1.0.onnx"    # relative to the manifest
//! sha256 = "<hex>"                 # checked before the model is loaded
//! [input]
//! name = "image"
//! layout = "nchw"                  # or "nhwc"
//! channels = 1                     # 1 = grey, 3 = RGB
//! width = 64
//! height = 64
//! mean = [0.5]                     # per channel, after pixel / 255
//! std = [0.25]
//! [output]
//! name = "score"
//! kind = "sigmoid"                 # [N,1] defect probability; or "softmax": [N,C] class probabilities
//! classes = ["good", "defect"]
//! good_class = 0
//! threshold = 0.5                  # defect score at/above which a frame counts as defective
//! [[golden]]                       # known samples the model must classify correctly
//! file = "golden/good-0.png"
//! expect = "good"                  # "good", "defect" or a class name
//! ```

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors from reading or checking a manifest.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("cannot read model manifest {path}: {source}; check the `manifest` path in the config")]
    Read {
        /// Manifest path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML or has unknown or missing keys.
    #[error("model manifest {path} is invalid: {message}")]
    Parse {
        /// Manifest path.
        path: PathBuf,
        /// Parser message (names the key).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("model manifest {path}: field `{field}` {problem}")]
    Field {
        /// Manifest path.
        path: PathBuf,
        /// Field name.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The model file could not be read.
    #[error("cannot read model file {path} named by manifest {manifest}: {source}")]
    ModelRead {
        /// Model path.
        path: PathBuf,
        /// Manifest path.
        manifest: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The model file does not match the manifest's checksum.
    #[error(
        "model file {path} fails its checksum: manifest says sha256 {expected}, file has {actual}; the file is corrupt or not the model this manifest describes, so it was not loaded"
    )]
    Checksum {
        /// Model path.
        path: PathBuf,
        /// Checksum in the manifest.
        expected: String,
        /// Checksum of the file.
        actual: String,
    },
}

/// Tensor layout of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Batch, channels, height, width.
    Nchw,
    /// Batch, height, width, channels.
    Nhwc,
}

/// What the model input looks like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name.
    pub name: String,
    /// Tensor layout.
    pub layout: Layout,
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Per-channel mean, applied after scaling pixels to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
}

/// How to read the model output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// One value per frame: the probability that the frame is defective.
    Sigmoid,
    /// One probability per class.
    Softmax,
}

/// What the model output means.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output tensor name.
    pub name: String,
    /// Sigmoid score or softmax classes.
    pub kind: OutputKind,
    /// Class names in output order (for sigmoid: the good and the defect label).
    pub classes: Vec<String>,
    /// Index of the good class in `classes`.
    pub good_class: usize,
    /// Defect score at or above which a frame counts as defective.
    pub threshold: f32,
}

/// A known sample the model must classify correctly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenSample {
    /// Image path relative to the manifest.
    pub file: PathBuf,
    /// `good`, `defect`, or a class name.
    pub expect: String,
}

impl GoldenSample {
    /// Whether `score` is the answer this sample expects.
    pub fn matches(&self, score: &crate::runner::Score) -> bool {
        match self.expect.as_str() {
            "good" => !score.defective,
            "defect" => score.defective,
            class => score.label == class,
        }
    }
}

/// A parsed and checked model manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name (its role).
    pub name: String,
    /// Model version, reported with every score.
    pub version: String,
    /// Model file, relative to the manifest.
    pub file: PathBuf,
    /// Lowercase hex SHA-256 of the model file.
    pub sha256: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// Input spec.
    pub input: InputSpec,
    /// Output spec.
    pub output: OutputSpec,
    /// Golden samples.
    #[serde(default)]
    pub golden: Vec<GoldenSample>,
    /// Directory of the manifest (not part of the file).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Path of the manifest itself (not part of the file).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Manifest {
    /// Reads and validates a manifest. Does not touch the model file; see [`Manifest::read_verified_model`].
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` locates relative files and names the manifest in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let mut m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        m.path = path.to_path_buf();
        m.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        m.validate()?;
        Ok(m)
    }

    fn field(&self, field: &'static str, problem: impl Into<String>) -> ManifestError {
        ManifestError::Field {
            path: self.path.clone(),
            field,
            problem: problem.into(),
        }
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let i = &self.input;
        if !matches!(i.channels, 1 | 3) {
            return Err(self.field(
                "input.channels",
                format!("is {}, must be 1 or 3", i.channels),
            ));
        }
        if i.width == 0 || i.height == 0 || i.width > 4096 || i.height > 4096 {
            return Err(self.field("input.width/height", "must be between 1 and 4096"));
        }
        if i.mean.len() != i.channels as usize {
            return Err(self.field("input.mean", format!("needs {} values", i.channels)));
        }
        if i.std.len() != i.channels as usize || i.std.iter().any(|s| *s <= 0.0) {
            return Err(self.field("input.std", format!("needs {} positive values", i.channels)));
        }
        let o = &self.output;
        if o.classes.len() < 2 {
            return Err(self.field("output.classes", "needs at least two classes"));
        }
        if o.kind == OutputKind::Sigmoid && o.classes.len() != 2 {
            return Err(self.field(
                "output.classes",
                "a sigmoid model has exactly two classes (good, defect)",
            ));
        }
        if o.good_class >= o.classes.len() {
            return Err(self.field(
                "output.good_class",
                format!(
                    "is {}, but there are {} classes",
                    o.good_class,
                    o.classes.len()
                ),
            ));
        }
        if !(0.0..=1.0).contains(&o.threshold) {
            return Err(self.field("output.threshold", "must be within [0, 1]"));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.field("sha256", "must be 64 hex digits"));
        }
        for g in &self.golden {
            let known = g.expect == "good" || g.expect == "defect" || o.classes.contains(&g.expect);
            if !known {
                return Err(self.field(
                    "golden.expect",
                    format!("{:?} is neither good, defect nor a class name", g.expect),
                ));
            }
        }
        Ok(())
    }

    /// Path of the model file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Reads the model file and checks its SHA-256 against the manifest.
    pub fn read_verified_model(&self) -> Result<Vec<u8>, ManifestError> {
        let path = self.model_path();
        let bytes = std::fs::read(&path).map_err(|source| ManifestError::ModelRead {
            path: path.clone(),
            manifest: self.path.clone(),
            source,
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&self.sha256) {
            return Err(ManifestError::Checksum {
                path,
                expected: self.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The label of the good class.
    pub fn good_label(&self) -> &str {
        &self.output.classes[self.output.good_class]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "m"
version = "1"
file = "m.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[input]
name = "image"
layout = "nchw"
channels = 1
width = 8
height = 8
mean = [0.5]
std = [0.25]
[output]
name = "score"
kind = "sigmoid"
classes = ["good", "defect"]
good_class = 0
threshold = 0.5
"#;

    #[test]
    fn parses_a_good_manifest() {
        let m = Manifest::parse(GOOD, Path::new("/models/m.toml")).unwrap();
        assert_eq!(m.model_path(), Path::new("/models/m.onnx"));
        assert_eq!(m.good_label(), "good");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace("threshold = 0.5", "threshold = 0.5\nthreshhold = 0.4");
        let err = Manifest::parse(&text, Path::new("m.toml")).unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
    }

    #[test]
    fn inconsistent_normalization_is_named() {
        let text = GOOD.replace("channels = 1", "channels = 3");
        let err = Manifest::parse(&text, Path::new("m.toml")).unwrap_err();
        assert!(err.to_string().contains("input.mean"), "{err}");
    }

    #[test]
    fn checksum_mismatch_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"not the model").unwrap();
        let m = Manifest::parse(GOOD, &dir.path().join("m.toml")).unwrap();
        let err = m.read_verified_model().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ManifestError::Checksum { .. }));
        assert!(msg.contains("m.onnx") && msg.contains("checksum"), "{msg}");
    }

    #[test]
    fn missing_model_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::parse(GOOD, &dir.path().join("m.toml")).unwrap();
        let msg = m.read_verified_model().unwrap_err().to_string();
        assert!(msg.contains("m.onnx"), "{msg}");
    }
}
