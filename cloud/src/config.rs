//! Cloud configuration: a TOML file (see `deploy/cloud.example.toml`) with `TIERLINE_CLOUD__<SECTION>__<KEY>`
//! environment overrides. Unknown keys are errors.

use serde::Deserialize;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;
use tierline_shared::admin::AdminConfig;
use tierline_shared::config::ConfigError;
use tierline_shared::mqtt::MqttConfig;
use tierline_shared::serving::ProbeConfig;
use tierline_shared::topics;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "TIERLINE_CLOUD";

/// Everything the cloud worker needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// Who this worker is.
    #[serde(default)]
    pub cloud: WorkerConfig,
    /// Broker connection.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The full model.
    pub model: ModelConfig,
    /// Where verdicts are stored.
    #[serde(default)]
    pub store: StoreConfig,
    /// HTTP admin endpoint (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
}

/// The cloud worker's admin endpoint listens on 127.0.0.1:9465 unless configured otherwise.
pub fn default_admin() -> AdminConfig {
    AdminConfig::on(std::net::SocketAddr::from(([127, 0, 0, 1], 9465)))
}

/// Identity of this worker and its group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Worker id, unique among workers (MQTT client id `tierline-cloud-<id>`).
    #[serde(default = "default_worker")]
    pub worker_id: String,
    /// Shared-subscription group: workers in one group split the frames between them.
    #[serde(default = "default_group")]
    pub group: String,
    /// Frames processed concurrently by this worker (also bounds what it holds unacknowledged).
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
}

fn default_worker() -> String {
    "cloud-1".into()
}
fn default_group() -> String {
    "tierline-cloud".into()
}
fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN)
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: default_worker(),
            group: default_group(),
            concurrency: default_concurrency(),
        }
    }
}

/// The full model and its batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Path of the model manifest (TOML).
    pub manifest: PathBuf,
    /// Inference threads (each with its own session).
    #[serde(default = "default_threads")]
    pub threads: NonZeroUsize,
    /// Most frames per inference call.
    #[serde(default = "default_batch")]
    pub max_batch: NonZeroUsize,
    /// How long a worker waits to fill a batch.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Golden-sample probes, watchdog and hot reload.
    #[serde(default)]
    pub probe: ProbeConfig,
}

fn default_threads() -> NonZeroUsize {
    NonZeroUsize::MIN
}
fn default_batch() -> NonZeroUsize {
    NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN)
}
fn default_wait() -> Duration {
    Duration::from_millis(2)
}

/// Verdict storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Database URL: `sqlite://path/to/file.db`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Keep frame images in the database (otherwise only metadata and verdicts).
    #[serde(default = "default_keep_images")]
    pub keep_images: bool,
}

fn default_url() -> String {
    "sqlite://tierline-cloud.db".into()
}
fn default_keep_images() -> bool {
    true
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            keep_images: default_keep_images(),
        }
    }
}

impl CloudConfig {
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
        topics::validate_id("worker_id", &self.cloud.worker_id)
            .map_err(|e| field("cloud.worker_id", e.to_string()))?;
        topics::validate_id("group", &self.cloud.group)
            .map_err(|e| field("cloud.group", e.to_string()))?;
        if self.model.probe.interval.is_zero() {
            return Err(field("model.probe.interval", "must be positive".into()));
        }
        if let Some(tls) = &self.mqtt.tls {
            tls.client_config()
                .map_err(|e| field("mqtt.tls", e.to_string()))?;
        }
        if !self.store.url.starts_with("sqlite:") {
            return Err(field(
                "store.url",
                format!("{:?} is not supported; use sqlite://<path>", self.store.url),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CloudConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cloud.toml");
        std::fs::write(&p, text).unwrap();
        let c: CloudConfig = tierline_shared::config::load_with_vars(Some(&p), ENV_PREFIX, &[])?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[model]\nmanifest = \"models/full.toml\"\n").unwrap();
        assert_eq!(c.cloud.group, "tierline-cloud");
        assert_eq!(c.model.max_wait, Duration::from_millis(2));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[model]\nmanifest = \"m\"\nmax_batchh = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_batchh"), "{err}");
    }

    #[test]
    fn unsupported_store_is_named() {
        let err = parse("[model]\nmanifest = \"m\"\n[store]\nurl = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url"), "{err}");
    }
}
