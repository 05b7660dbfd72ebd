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
//!
//! Other output kinds (`anomaly`, `detection`, `segmentation`), per-class `thresholds`, input options
//! (`resize`, `pad_value`, `channel_order`, `type`, `range`, `batch`), `[tiling]` and golden `region`s are
//! described on their fields below and, with one example per kind, in the README's "Model kinds".

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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

/// How a frame (or tile) is fitted to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Scale each axis independently to the input size (aspect ratio not kept).
    #[default]
    Stretch,
    /// Scale to fit inside the input keeping the aspect ratio, centre it, pad the rest with `pad_value`.
    Letterbox,
    /// Scale to cover the input keeping the aspect ratio, and cut the centre out.
    CenterCrop,
}

/// Channel order of a 3-channel input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (most exporters).
    #[default]
    Rgb,
    /// Blue, green, red (models trained on OpenCV-loaded images).
    Bgr,
}

/// Element type of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// 32-bit float.
    #[default]
    F32,
    /// 16-bit float (half-precision exports).
    F16,
    /// 8-bit unsigned pixels; the model normalizes itself (needs `range = "0-255"`, mean 0, std 1).
    U8,
}

/// The scale pixels are brought to before `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ValueRange {
    /// `pixel / 255`.
    #[default]
    #[serde(rename = "0-1")]
    Unit,
    /// The pixel value as is.
    #[serde(rename = "0-255")]
    Byte,
}

/// What the model input looks like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name.
    pub name: String,
    /// Tensor layout.
    pub layout: Layout,
    /// 1 (grey) or 3 (colour).
    pub channels: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Per-channel mean, applied after scaling pixels to `range`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
    /// How the frame is fitted to `width` × `height`.
    #[serde(default)]
    pub resize: Resize,
    /// Grey level of the letterbox padding (0–255).
    #[serde(default)]
    pub pad_value: u8,
    /// Channel order of a 3-channel input.
    #[serde(default)]
    pub channel_order: ChannelOrder,
    /// Element type of the input tensor.
    #[serde(default, rename = "type")]
    pub dtype: InputType,
    /// Pixel scale before normalization.
    #[serde(default)]
    pub range: ValueRange,
    /// Fixed batch size the model was exported with, or 0 when its batch dimension is dynamic.
    #[serde(default)]
    pub batch: u32,
}

impl InputSpec {
    /// A plain input spec (stretch, RGB order, f32, pixel / 255, dynamic batch); tests and tools start here.
    pub fn plain(name: &str, layout: Layout, channels: u32, width: u32, height: u32) -> Self {
        Self {
            name: name.into(),
            layout,
            channels,
            width,
            height,
            mean: vec![0.0; channels as usize],
            std: vec![1.0; channels as usize],
            resize: Resize::Stretch,
            pad_value: 0,
            channel_order: ChannelOrder::Rgb,
            dtype: InputType::F32,
            range: ValueRange::Unit,
            batch: 0,
        }
    }
}

/// How to read the model output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// One value per frame: the probability that the frame is defective.
    Sigmoid,
    /// One probability per class.
    Softmax,
    /// An anomaly model trained on good parts (PatchCore, PaDiM, EfficientAD...): an image score and/or an
    /// anomaly map.
    Anomaly,
    /// An object detector (YOLO-family layouts): boxes with class scores.
    Detection,
    /// A segmenter: a class per pixel.
    Segmentation,
}

/// Tensor layout of a detector's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectionLayout {
    /// `[N, 4 + C, boxes]`: centre x, centre y, width, height, then one score per class (YOLOv8 and later).
    Yolov8,
    /// `[N, boxes, 5 + C]`: centre x, centre y, width, height, objectness, then class scores (YOLOv5, v7).
    Yolov5,
    /// `[N, K, 6]`: x1, y1, x2, y2, score, class index, already suppressed (end-to-end exports).
    Nms,
}

/// The normalization an anomaly exporter applied to its raw scores (anomalib's min-max normalization):
/// `((raw - threshold) / (max - min)) + 0.5`, clipped to [0, 1], so the decision threshold becomes 0.5.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyNormalization {
    /// Smallest raw score seen in calibration.
    pub min: f32,
    /// Largest raw score seen in calibration.
    pub max: f32,
    /// Raw image-score threshold.
    pub image_threshold: f32,
    /// Raw per-pixel threshold for the map (defaults to `image_threshold`).
    #[serde(default)]
    pub pixel_threshold: Option<f32>,
}

impl AnomalyNormalization {
    /// Normalizes a raw value around `threshold`.
    pub fn apply(&self, raw: f32, threshold: f32) -> f32 {
        let span = (self.max - self.min).max(f32::EPSILON);
        (((raw - threshold) / span) + 0.5).clamp(0.0, 1.0)
    }
}

/// What the model output means.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output tensor name: the probabilities (sigmoid, softmax), the boxes (detection), the class map
    /// (segmentation) or the image score (anomaly; optional there when `map` is given).
    #[serde(default)]
    pub name: String,
    /// How to read the output.
    pub kind: OutputKind,
    /// Anomaly map output name (`[N,1,H,W]` or `[N,H,W]`), anomaly models only.
    #[serde(default)]
    pub map: Option<String>,
    /// Class names in output order. Sigmoid: the good and the defect label. Anomaly and detection: the defect
    /// classes only (the good label is `good`). Segmentation: every class, background included.
    pub classes: Vec<String>,
    /// Index of the good (background) class in `classes`: sigmoid, softmax and segmentation only.
    #[serde(default)]
    pub good_class: Option<usize>,
    /// Defect score at or above which a frame counts as defective (detection: box confidence; anomaly: the
    /// normalized score; segmentation: per-pixel class probability).
    pub threshold: f32,
    /// Per-class thresholds that override `threshold` for the named defect classes.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    /// Anomaly models: the exporter's normalization. Without it, raw scores must already lie in [0, 1].
    #[serde(default)]
    pub normalization: Option<AnomalyNormalization>,
    /// Detection models: the output layout.
    #[serde(default)]
    pub layout: Option<DetectionLayout>,
    /// Detection models: IoU above which a weaker box of the same class is suppressed.
    #[serde(default = "default_iou")]
    pub iou: f32,
    /// Segmentation and anomaly maps: the fewest pixels (of the output map) a defect region needs.
    #[serde(default = "default_min_area")]
    pub min_area: u32,
    /// Most regions reported per frame (the strongest are kept).
    #[serde(default = "default_max_regions")]
    pub max_regions: usize,
}

fn default_iou() -> f32 {
    0.45
}

fn default_min_area() -> u32 {
    1
}

fn default_max_regions() -> usize {
    32
}

impl OutputSpec {
    /// The threshold that applies to `class`.
    pub fn threshold_for(&self, class: &str) -> f32 {
        self.thresholds
            .get(class)
            .copied()
            .unwrap_or(self.threshold)
    }

    /// The label of a good frame.
    pub fn good_label(&self) -> &str {
        match self.good_class {
            Some(i) => &self.classes[i],
            None => "good",
        }
    }
}

/// A grid of tiles cut from each frame; all tiles of a frame run in one batch and the frame's score is the
/// worst tile's. Tiles keep thin defects at (or near) native resolution instead of squeezing the whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TilingSpec {
    /// Tiles across.
    pub cols: u32,
    /// Tiles down.
    pub rows: u32,
    /// Pixels of the frame that neighbouring tiles share, at least (so a defect on a seam is whole in one).
    #[serde(default)]
    pub overlap: u32,
}

/// A known sample the model must classify correctly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenSample {
    /// Image path relative to the manifest.
    pub file: PathBuf,
    /// `good`, `defect`, or a class name.
    pub expect: String,
    /// Where the defect must be found, `[x, y, width, height]` in frame pixels: some reported region must
    /// overlap it by at least `iou` (and be of the expected class, when `expect` names one).
    #[serde(default)]
    pub region: Option<[f32; 4]>,
    /// Least intersection-over-union with `region`.
    #[serde(default = "default_golden_iou")]
    pub iou: f32,
}

fn default_golden_iou() -> f32 {
    0.5
}

impl GoldenSample {
    /// Whether `score` is the answer this sample expects.
    pub fn matches(&self, score: &crate::runner::Score) -> bool {
        let label_ok = match self.expect.as_str() {
            "good" => !score.defective,
            "defect" => score.defective,
            class => score.label == class,
        };
        let region_ok = self.region.is_none_or(|[x, y, w, h]| {
            let want = crate::regions::Region::new(x, y, w, h, "", 0.0);
            score.regions.iter().any(|r| {
                let class_ok =
                    matches!(self.expect.as_str(), "good" | "defect") || r.class == self.expect;
                class_ok && r.iou(&want) >= self.iou
            })
        });
        label_ok && region_ok
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
    /// Optional tiling of each frame.
    #[serde(default)]
    pub tiling: Option<TilingSpec>,
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
        self.validate_input()?;
        self.validate_output()?;
        if let Some(t) = &self.tiling
            && (t.cols == 0 || t.rows == 0 || u64::from(t.cols) * u64::from(t.rows) > 1024)
        {
            return Err(self.field(
                "tiling",
                format!("is {}x{} tiles; use 1 to 1024 tiles in all", t.cols, t.rows),
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.field("sha256", "must be 64 hex digits"));
        }
        let o = &self.output;
        for g in &self.golden {
            let known = g.expect == "good" || g.expect == "defect" || o.classes.contains(&g.expect);
            if !known {
                return Err(self.field(
                    "golden.expect",
                    format!("{:?} is neither good, defect nor a class name", g.expect),
                ));
            }
            if g.region.is_some() && g.expect == "good" {
                return Err(self.field(
                    "golden.region",
                    "is set on a sample expected to be good; a region says where a defect is",
                ));
            }
        }
        Ok(())
    }

    fn validate_input(&self) -> Result<(), ManifestError> {
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
        let identity = i.mean.iter().all(|m| *m == 0.0) && i.std.iter().all(|s| *s == 1.0);
        if i.dtype == InputType::U8 && (i.range != ValueRange::Byte || !identity) {
            return Err(self.field(
                "input.type",
                "is \"u8\": the model takes raw pixels, so set range = \"0-255\", mean 0 and std 1",
            ));
        }
        if i.batch > 1024 {
            return Err(self.field("input.batch", "must be 0 (dynamic) or at most 1024"));
        }
        Ok(())
    }

    fn validate_output(&self) -> Result<(), ManifestError> {
        let o = &self.output;
        let needs_good = matches!(
            o.kind,
            OutputKind::Sigmoid | OutputKind::Softmax | OutputKind::Segmentation
        );
        let least = if needs_good { 2 } else { 1 };
        if o.classes.len() < least {
            return Err(self.field("output.classes", format!("needs at least {least} classes")));
        }
        if o.kind == OutputKind::Sigmoid && o.classes.len() != 2 {
            return Err(self.field(
                "output.classes",
                "a sigmoid model has exactly two classes (good, defect)",
            ));
        }
        match (needs_good, o.good_class) {
            (true, None) => {
                return Err(self.field(
                    "output.good_class",
                    "is missing: say which class is the good (background) one",
                ));
            }
            (true, Some(g)) if g >= o.classes.len() => {
                return Err(self.field(
                    "output.good_class",
                    format!("is {g}, but there are {} classes", o.classes.len()),
                ));
            }
            (false, Some(_)) => {
                return Err(self.field(
                    "output.good_class",
                    "is set, but anomaly and detection models list defect classes only",
                ));
            }
            _ => {}
        }
        if o.kind != OutputKind::Anomaly && o.name.is_empty() {
            return Err(self.field("output.name", "is missing"));
        }
        if o.kind == OutputKind::Anomaly && o.name.is_empty() && o.map.is_none() {
            return Err(self.field(
                "output.name/map",
                "an anomaly model needs a score output (`name`), a map output (`map`), or both",
            ));
        }
        if o.kind != OutputKind::Anomaly && o.map.is_some() {
            return Err(self.field("output.map", "is for anomaly models only"));
        }
        if o.kind != OutputKind::Anomaly && o.normalization.is_some() {
            return Err(self.field("output.normalization", "is for anomaly models only"));
        }
        if (o.kind == OutputKind::Detection) != o.layout.is_some() {
            return Err(self.field(
                "output.layout",
                "is required for detection models (\"yolov8\", \"yolov5\" or \"nms\") and for them only",
            ));
        }
        if let Some(n) = &o.normalization
            && n.max.partial_cmp(&n.min) != Some(std::cmp::Ordering::Greater)
        {
            return Err(self.field(
                "output.normalization",
                format!("max ({}) must be above min ({})", n.max, n.min),
            ));
        }
        if !(0.0..=1.0).contains(&o.threshold) {
            return Err(self.field("output.threshold", "must be within [0, 1]"));
        }
        for (class, t) in &o.thresholds {
            if !o.classes.contains(class) || o.good_class.is_some_and(|g| &o.classes[g] == class) {
                return Err(self.field(
                    "output.thresholds",
                    format!("names {class:?}, which is not a defect class of this model"),
                ));
            }
            if !(0.0..=1.0).contains(t) {
                return Err(self.field(
                    "output.thresholds",
                    format!("{class} = {t} is outside [0, 1]"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&o.iou) {
            return Err(self.field("output.iou", "must be within [0, 1]"));
        }
        if o.max_regions == 0 || o.max_regions > 1024 {
            return Err(self.field("output.max_regions", "must be between 1 and 1024"));
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
        self.output.good_label()
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
