//! Edge configuration: a TOML file (see `deploy/edge.example.toml`) with `TIERLINE_EDGE__<SECTION>__<KEY>`
//! environment overrides. Unknown keys are errors; every field has a documented default.

use serde::Deserialize;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;
use tierline_shared::admin::AdminConfig;
use tierline_shared::config::{ByteSize, ConfigError};
use tierline_shared::mqtt::MqttConfig;
use tierline_shared::serving::ProbeConfig;
use tierline_shared::topics::{self, EdgeAddress};
pub use tierline_shared::updates::UpdatesConfig;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "TIERLINE_EDGE";

/// Everything the edge needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Who this edge is.
    pub edge: Identity,
    /// Broker connection.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Prescreen model.
    pub model: ModelConfig,
    /// Camera sources.
    #[serde(rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    /// Decision policy.
    #[serde(default)]
    pub decision: DecisionConfig,
    /// Durable outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Where decisions go.
    #[serde(default)]
    pub sink: SinkConfig,
    /// HTTP admin endpoint (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    /// Model updates from the fleet's registry; off unless `url` is set.
    #[serde(default)]
    pub updates: UpdatesConfig,
}

/// The edge's admin endpoint listens on 127.0.0.1:9464 unless configured otherwise.
pub fn default_admin() -> AdminConfig {
    AdminConfig::on(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
}

/// Identity and placement of the edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Edge id, unique in the plant; one topic level (`[A-Za-z0-9_.-]`, ≤ 64, not `.` or `..`).
    pub id: String,
    /// Site (plant) id.
    #[serde(default = "default_site")]
    pub site: String,
    /// Production line id.
    #[serde(default = "default_line")]
    pub line: String,
}

fn default_site() -> String {
    "site".into()
}
fn default_line() -> String {
    "line".into()
}

/// The prescreen model and how to run it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Path of the model manifest (TOML); relative paths are relative to the working directory.
    pub manifest: PathBuf,
    /// Suspect threshold on the defect score; defaults to the manifest's `output.threshold`.
    #[serde(default)]
    pub suspect_threshold: Option<f32>,
    /// Inference threads (each with its own session).
    #[serde(default = "default_threads")]
    pub threads: NonZeroUsize,
    /// Most frames per inference call.
    #[serde(default = "default_batch")]
    pub max_batch: NonZeroUsize,
    /// Golden-sample probes, watchdog and hot reload.
    #[serde(default)]
    pub probe: ProbeConfig,
}

fn default_threads() -> NonZeroUsize {
    NonZeroUsize::MIN
}
fn default_batch() -> NonZeroUsize {
    NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN)
}

/// One camera source.
///
/// No `deny_unknown_fields` here: serde cannot combine it with `flatten`. Unknown keys are still rejected,
/// by the `deny_unknown_fields` of the flattened [`SourceConfig`] variant that receives every key not
/// consumed here.
#[derive(Debug, Clone, Deserialize)]
pub struct CameraConfig {
    /// Camera id (one topic level).
    pub id: String,
    /// Frames per second this camera delivers: the rate of synthetic and file cameras and of snapshots,
    /// and for streams the most frames per second kept (a 30 fps stream with `fps = 10` is judged on every
    /// third frame; the others are not decoded where the codec allows).
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Stop after this many frames (unset: run until shut down).
    #[serde(default)]
    pub frames: Option<u64>,
    /// `continuous` (frames at `fps`) or `trigger` (one frame per part trigger, carrying its part id).
    #[serde(default)]
    pub mode: CameraMode,
    /// Crop rectangle applied before the model (unset: the whole frame).
    #[serde(default)]
    pub roi: Option<Roi>,
    /// A stream that sends no frame for this long is stalled and reconnected.
    #[serde(default = "default_no_frame_timeout", with = "humantime_serde")]
    pub no_frame_timeout: Duration,
    /// Time allowed to connect to a network camera (and, for snapshots, to fetch one).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles (with jitter) up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// JPEG quality of frames the edge encodes itself (decoded H.264, ROI crops), 1-100.
    #[serde(default = "default_encode_quality")]
    pub encode_quality: u8,
    /// Where frames come from.
    #[serde(flatten)]
    pub source: SourceConfig,
}

fn default_fps() -> f64 {
    30.0
}
fn default_no_frame_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_encode_quality() -> u8 {
    90
}

/// Pixel formats the edge asks a V4L2 device for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum V4l2Format {
    /// Motion JPEG (most USB cameras above 640x480): frames pass on as JPEG.
    #[default]
    Mjpeg,
    /// YUYV 4:2:2: converted to RGB for the frames kept.
    Yuyv,
}

/// A crop rectangle in the camera's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roi {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Which RTP transport to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// RTP interleaved on the RTSP TCP connection (works through NAT and firewalls; the default).
    #[default]
    Tcp,
    /// RTP over UDP (LAN only: no reorder buffer).
    Udp,
}

/// How a camera takes frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraMode {
    /// Frames at the camera's `fps`.
    #[default]
    Continuous,
    /// One frame per part trigger (MQTT `…/trigger` or `POST /trigger` on the admin port).
    Trigger,
}

/// Kinds of camera sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// Deterministic synthetic surfaces with defects (see `models/SYNTHETIC.md`).
    Synthetic {
        /// RNG seed; the same seed gives the same frames.
        #[serde(default = "default_seed")]
        seed: u64,
        /// Fraction of frames with a defect.
        #[serde(default = "default_defect_rate")]
        defect_rate: f64,
        /// Frame width in pixels.
        #[serde(default = "default_width")]
        width: NonZeroU32,
        /// Frame height in pixels.
        #[serde(default = "default_height")]
        height: NonZeroU32,
        /// JPEG quality 1–100.
        #[serde(default = "default_quality")]
        jpeg_quality: u8,
    },
    /// Image files: a directory (every .jpg/.jpeg/.png in name order) or a glob pattern.
    Files {
        /// Directory or glob pattern, e.g. `/data/line1/*.jpg`.
        path: String,
        /// Start again at the first file after the last.
        #[serde(default, rename = "loop")]
        repeat: bool,
    },
    /// An RTSP camera streaming H.264 or MJPEG: `rtsp://user:password@host:554/path`.
    Rtsp {
        /// Stream URL; credentials in the URL are used for Basic or Digest auth and hidden in logs.
        url: String,
        /// `tcp` (interleaved, the default) or `udp` (LAN only).
        #[serde(default)]
        transport: RtspTransport,
    },
    /// An HTTP MJPEG camera (`multipart/x-mixed-replace`).
    Mjpeg {
        /// Stream URL, `http://user:password@host/path`.
        url: String,
    },
    /// An HTTP snapshot camera: one `GET` per frame (at `fps`, or per part trigger).
    Snapshot {
        /// Snapshot URL, e.g. `http://host/snapshot.jpg`.
        url: String,
    },
    /// A V4L2 device (USB or CSI camera on Linux); needs an edge built with the `v4l2` feature.
    V4l2 {
        /// Device path.
        #[serde(default = "default_v4l2_device")]
        device: String,
        /// Requested frame width.
        #[serde(default = "default_v4l2_width")]
        width: u32,
        /// Requested frame height.
        #[serde(default = "default_v4l2_height")]
        height: u32,
        /// `mjpeg` (default) or `yuyv`.
        #[serde(default)]
        format: V4l2Format,
    },
}

fn default_v4l2_device() -> String {
    "/dev/video0".into()
}
fn default_v4l2_width() -> u32 {
    1280
}
fn default_v4l2_height() -> u32 {
    720
}

fn default_seed() -> u64 {
    1
}
fn default_defect_rate() -> f64 {
    0.05
}
fn default_width() -> NonZeroU32 {
    NonZeroU32::new(640).unwrap_or(NonZeroU32::MIN)
}
fn default_height() -> NonZeroU32 {
    NonZeroU32::new(480).unwrap_or(NonZeroU32::MIN)
}
fn default_quality() -> u8 {
    90
}

/// What the edge does while the cloud is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OfflinePolicy {
    /// Fail safe: a suspect without a cloud verdict is rejected.
    Reject,
    /// Let the part pass but flag it for quarantine until the cloud verdict is in.
    PassAndQuarantine,
}

/// How frames are decided.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// Time from capture by which every frame gets a line decision.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub deadline: Duration,
    /// Local decision for a suspect whose verdict missed the deadline.
    #[serde(default = "default_policy")]
    pub offline_policy: OfflinePolicy,
    /// Fraction of passed frames forwarded as audit samples.
    #[serde(default = "default_audit_rate")]
    pub audit_rate: f64,
    /// Seed for audit sampling.
    #[serde(default = "default_seed")]
    pub audit_seed: u64,
    /// Offline policies by prescreen score band: the first band whose `below` exceeds the score applies;
    /// scores above every band use `offline_policy`.
    #[serde(default, rename = "score_band")]
    pub score_bands: Vec<ScoreBand>,
    /// Offline policies by the prescreen's defect class, checked before the score bands. Only for a
    /// prescreen with classes (softmax, detection, segmentation); the names must be its defect classes.
    #[serde(default, rename = "class_policy")]
    pub class_policies: Vec<ClassPolicy>,
}

impl DecisionConfig {
    /// Checks the per-class offline policies against the prescreen model: it must have classes, and every
    /// rule must name one of its defect classes.
    pub fn check_classes(
        &self,
        manifest: &tierline_shared::manifest::Manifest,
    ) -> Result<(), ConfigError> {
        use tierline_shared::manifest::OutputKind;
        let Some(first) = self.class_policies.first() else {
            return Ok(());
        };
        let o = &manifest.output;
        let defect_classes: Vec<&str> = o
            .classes
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != o.good_class)
            .map(|(_, c)| c.as_str())
            .collect();
        let field = |problem: String| ConfigError::Field {
            field: "decision.class_policy".into(),
            problem,
        };
        if matches!(o.kind, OutputKind::Sigmoid | OutputKind::Anomaly) {
            return Err(field(format!(
                "names class {:?}, but the prescreen {} {} is a {:?} model with no defect classes to key on; use [[decision.score_band]] instead",
                first.class, manifest.name, manifest.version, o.kind
            )));
        }
        for p in &self.class_policies {
            if !defect_classes.contains(&p.class.as_str()) {
                return Err(field(format!(
                    "names class {:?}, which the prescreen {} {} does not have; its defect classes are {defect_classes:?}",
                    p.class, manifest.name, manifest.version
                )));
            }
        }
        Ok(())
    }
}

/// An offline policy for the suspects a prescreen with classes puts in one class, e.g. always reject a
/// crack, quarantine a stain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPolicy {
    /// A defect class of the prescreen model.
    pub class: String,
    /// Policy for suspects of that class.
    pub policy: OfflinePolicy,
}

/// A prescreen score band with its own offline policy, e.g. quarantine rather than reject the weak suspects.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreBand {
    /// Upper bound (exclusive) of the band's scores.
    pub below: f32,
    /// Policy for suspects in the band.
    pub policy: OfflinePolicy,
}

fn default_deadline() -> Duration {
    Duration::from_millis(500)
}
fn default_policy() -> OfflinePolicy {
    OfflinePolicy::Reject
}
fn default_audit_rate() -> f64 {
    0.01
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            deadline: default_deadline(),
            offline_policy: default_policy(),
            audit_rate: default_audit_rate(),
            audit_seed: default_seed(),
            score_bands: Vec::new(),
            class_policies: Vec::new(),
        }
    }
}

/// How often the outbox forces its writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// fsync every committed batch (survives power loss).
    Full,
    /// fsync at WAL checkpoints only (survives process crashes, may lose the last batches on power loss).
    Normal,
}

/// The durable outbox of forwarded frames.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// SQLite database file.
    #[serde(default = "default_outbox_path")]
    pub path: PathBuf,
    /// Disk budget for stored frames.
    #[serde(default = "default_budget")]
    pub max_bytes: ByteSize,
    /// When writes reach the disk.
    #[serde(default = "default_sync")]
    pub sync: SyncPolicy,
    /// Resend a frame when no verdict arrived this long after sending it (doubles per attempt, capped).
    #[serde(default = "default_resend", with = "humantime_serde")]
    pub resend_after: Duration,
    /// Most frames sent and not yet acknowledged.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: NonZeroUsize,
    /// Most frames per commit.
    #[serde(default = "default_commit_batch")]
    pub commit_batch: NonZeroUsize,
}

fn default_outbox_path() -> PathBuf {
    "tierline-outbox.db".into()
}
fn default_budget() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_sync() -> SyncPolicy {
    SyncPolicy::Full
}
fn default_resend() -> Duration {
    Duration::from_secs(5)
}
fn default_in_flight() -> NonZeroUsize {
    NonZeroUsize::new(128).unwrap_or(NonZeroUsize::MIN)
}
fn default_commit_batch() -> NonZeroUsize {
    NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN)
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            path: default_outbox_path(),
            max_bytes: default_budget(),
            sync: default_sync(),
            resend_after: default_resend(),
            max_in_flight: default_in_flight(),
            commit_batch: default_commit_batch(),
        }
    }
}

/// Where line decisions are written, as JSON lines.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// Standard output.
    #[default]
    Stdout,
    /// Appended to a file.
    File {
        /// File path.
        path: PathBuf,
    },
    /// Published on an MQTT topic (QoS 1).
    Mqtt {
        /// Topic.
        topic: String,
    },
    /// Discarded (counted only).
    Null,
}

impl EdgeConfig {
    /// Loads the configuration from `path` plus environment overrides, and validates it.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let c: Self = tierline_shared::config::load(path, ENV_PREFIX)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that parsing cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |field: &str, problem: String| ConfigError::Field {
            field: field.into(),
            problem,
        };
        self.address().map_err(|e| field("edge", e.to_string()))?;
        self.updates.validate(&self.edge.line)?;
        self.mqtt.validate()?;
        if self.cameras.is_empty() {
            return Err(field("camera", "needs at least one [[camera]]".into()));
        }
        let mut ids = std::collections::HashSet::new();
        for c in &self.cameras {
            topics::validate_id("camera id", &c.id)
                .map_err(|e| field("camera.id", e.to_string()))?;
            if !ids.insert(&c.id) {
                return Err(field("camera.id", format!("{:?} is used twice", c.id)));
            }
            if !(c.fps > 0.0 && c.fps <= 10_000.0) {
                return Err(field(
                    "camera.fps",
                    format!("is {}, must be in (0, 10000]", c.fps),
                ));
            }
            if !(1..=100).contains(&c.encode_quality) {
                return Err(field("camera.encode_quality", "must be 1..=100".into()));
            }
            if c.no_frame_timeout < Duration::from_millis(100) {
                return Err(field(
                    "camera.no_frame_timeout",
                    "must be at least 100ms (slow cameras and long GOPs need seconds)".into(),
                ));
            }
            if c.reconnect_min.is_zero() || c.reconnect_max < c.reconnect_min {
                return Err(field(
                    "camera.reconnect_min",
                    "must be above zero and at most reconnect_max".into(),
                ));
            }
            if c.roi.is_some_and(|r| r.width == 0 || r.height == 0) {
                return Err(field(
                    "camera.roi",
                    "width and height must be above zero".into(),
                ));
            }
            if let SourceConfig::Synthetic {
                defect_rate,
                jpeg_quality,
                ..
            } = &c.source
            {
                if !(0.0..=1.0).contains(defect_rate) {
                    return Err(field("camera.defect_rate", "must be within [0, 1]".into()));
                }
                if !(1..=100).contains(jpeg_quality) {
                    return Err(field("camera.jpeg_quality", "must be 1..=100".into()));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.decision.audit_rate) {
            return Err(field("decision.audit_rate", "must be within [0, 1]".into()));
        }
        let mut previous = 0.0f32;
        for band in &self.decision.score_bands {
            if !(band.below > previous && band.below <= 1.0) {
                return Err(field(
                    "decision.score_band.below",
                    format!(
                        "{} must be above the previous band ({previous}) and at most 1",
                        band.below
                    ),
                ));
            }
            previous = band.below;
        }
        if self.model.probe.interval.is_zero() {
            return Err(field("model.probe.interval", "must be positive".into()));
        }
        if let Some(tls) = &self.mqtt.tls {
            tls.client_config()
                .map_err(|e| field("mqtt.tls", e.to_string()))?;
        }
        if self.decision.deadline.is_zero() {
            return Err(field("decision.deadline", "must be positive".into()));
        }
        if let Some(t) = self.model.suspect_threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(field(
                "model.suspect_threshold",
                "must be within [0, 1]".into(),
            ));
        }
        Ok(())
    }

    /// The edge's validated topic address.
    pub fn address(&self) -> Result<EdgeAddress, topics::TopicError> {
        EdgeAddress::new(&self.edge.site, &self.edge.line, &self.edge.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[edge]
id = "edge-1"
[model]
manifest = "models/prescreen.toml"
[[camera]]
id = "cam-0"
kind = "synthetic"
"#;

    fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("edge.toml");
        std::fs::write(&p, text).unwrap();
        let c: EdgeConfig = tierline_shared::config::load_with_vars(Some(&p), ENV_PREFIX, &[])?;
        c.validate()?;
        Ok(c)
    }

    fn fixture(name: &str) -> tierline_shared::manifest::Manifest {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/fixtures/own")
            .join(name);
        tierline_shared::manifest::Manifest::load(&path).unwrap()
    }

    #[test]
    fn class_policies_must_name_a_defect_class_of_a_prescreen_with_classes() {
        let c = parse(&format!(
            "{MINIMAL}\n[[decision.class_policy]]\nclass = \"hole\"\npolicy = \"reject\"\n"
        ))
        .unwrap();
        c.decision
            .check_classes(&fixture("detector-yolov8.toml"))
            .unwrap();
        let err = c
            .decision
            .check_classes(&fixture("segmenter-probs.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"hole\"") && err.contains("[\"crack\"]"),
            "{err}"
        );
        let err = c
            .decision
            .check_classes(&fixture("anomaly.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("score_band"), "{err}");
        // No class policies: any prescreen will do.
        parse(MINIMAL)
            .unwrap()
            .decision
            .check_classes(&fixture("anomaly.toml"))
            .unwrap();
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.decision.offline_policy, OfflinePolicy::Reject);
        assert_eq!(c.outbox.sync, SyncPolicy::Full);
        assert!(matches!(
            c.cameras[0].source,
            SourceConfig::Synthetic { seed: 1, .. }
        ));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{MINIMAL}\n[decision]\ndeadlin = \"1s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("deadlin"), "{err}");
    }

    #[test]
    fn unknown_camera_key_is_named() {
        let err = parse(&MINIMAL.replace("kind = \"synthetic\"", "kind = \"synthetic\"\nsed = 3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sed"), "{err}");
    }

    #[test]
    fn bad_edge_id_is_named() {
        let err = parse(&MINIMAL.replace("edge-1", "edge/1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("edge_id") && err.contains("edge/1"), "{err}");
    }

    #[test]
    fn score_bands_parse_and_must_increase() {
        let c = parse(&format!(
            "{MINIMAL}\n[[decision.score_band]]\nbelow = 0.7\npolicy = \"pass-and-quarantine\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.decision.score_bands[0].policy,
            OfflinePolicy::PassAndQuarantine
        );
        let err = parse(&format!(
            "{MINIMAL}\n[[decision.score_band]]\nbelow = 0.7\npolicy = \"reject\"\n[[decision.score_band]]\nbelow = 0.5\npolicy = \"reject\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("score_band"), "{err}");
    }

    #[test]
    fn offline_policy_parses() {
        let c = parse(&format!(
            "{MINIMAL}\n[decision]\noffline_policy = \"pass-and-quarantine\"\n"
        ))
        .unwrap();
        assert_eq!(c.decision.offline_policy, OfflinePolicy::PassAndQuarantine);
    }
}
