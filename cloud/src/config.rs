//! Cloud configuration: a TOML file (see `deploy/cloud.example.toml`) with `TIERLINE_CLOUD__<SECTION>__<KEY>`
//! environment overrides. Unknown keys are errors.

use serde::Deserialize;
use std::net::SocketAddr;
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
    /// Where verdicts are stored (the section may also be called `[database]`).
    #[serde(default, alias = "database")]
    pub store: StoreConfig,
    /// Image retention, run by one worker at a time under a leader lease.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The gRPC review API.
    #[serde(default)]
    pub api: ApiConfig,
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
    /// Database URL: `sqlite://path/to/file.db` or `postgres://user@host:port/database`.
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

/// Image retention. Frames' metadata and verdicts are never removed; image bytes are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Remove images received longer ago than this (unset: keep by age).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Remove the oldest images while all stored images total more than this many bytes (unset: no limit).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// How often the leader runs retention.
    #[serde(default = "default_retention_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Leader lease time to live; the leader renews it every third of this. A crashed leader's job moves to
    /// another worker within about this long.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
}

fn default_retention_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(15)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: None,
            max_bytes: None,
            interval: default_retention_interval(),
            lease_ttl: default_lease_ttl(),
        }
    }
}

/// The gRPC review API (see `proto/tierline/review/v1/review.proto`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the API.
    #[serde(default = "default_api_enabled")]
    pub enabled: bool,
    /// Listen address (port 0: any free port, logged at start).
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Bearer token every call must carry (`authorization: Bearer <token>`). Prefer `token_file` or the
    /// environment (TIERLINE_CLOUD__API__TOKEN). Unset with no `token_file`: no authentication.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the bearer token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain for TLS (with `tls_key`); unset: plain HTTP/2.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_api_enabled() -> bool {
    true
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: default_api_enabled(),
            listen: default_api_listen(),
            token: None,
            token_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ApiConfig {
    /// The configured bearer token, reading `token_file` if set.
    pub fn bearer_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Field {
                field: "api.token_file".into(),
                problem: format!("cannot read {}: {e}", path.display()),
            })?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(ConfigError::Field {
                    field: "api.token_file".into(),
                    problem: format!("{} is empty; put the token in it", path.display()),
                });
            }
            return Ok(Some(token));
        }
        Ok(self.token.clone())
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
        crate::store::backend_of(&self.store.url).map_err(|e| field("store.url", e.to_string()))?;
        if self.retention.lease_ttl < Duration::from_secs(1) {
            return Err(field(
                "retention.lease_ttl",
                "must be at least 1s (the leader renews every third of it)".into(),
            ));
        }
        if self.api.token.is_some() && self.api.token_file.is_some() {
            return Err(field(
                "api.token",
                "set either api.token or api.token_file, not both".into(),
            ));
        }
        if matches!(&self.api.token, Some(t) if t.trim().is_empty()) {
            return Err(field(
                "api.token",
                "is empty; set a token or remove the key".into(),
            ));
        }
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return Err(field(
                "api.tls_cert",
                "TLS needs both api.tls_cert and api.tls_key".into(),
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
    fn postgres_database_section_and_api_are_accepted() {
        let c = parse(
            "[model]\nmanifest = \"m\"\n[database]\nurl = \"postgres://postgres@127.0.0.1/test\"\n[api]\nlisten = \"0.0.0.0:6000\"\ntoken = \"t\"\n[retention]\nmax_age = \"7days\"\n",
        )
        .unwrap();
        assert!(c.store.url.starts_with("postgres://"));
        assert_eq!(c.api.listen.port(), 6000);
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(7 * 86400)));
        let err = parse("[model]\nmanifest = \"m\"\n[api]\ntls_cert = \"c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.tls_cert"), "{err}");
    }

    #[test]
    fn unsupported_store_is_named() {
        let err = parse("[model]\nmanifest = \"m\"\n[store]\nurl = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url"), "{err}");
    }
}
