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
    /// The review console (web pages for reviewers); off unless `listen` is set.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The model registry: the keys bundles must be signed with, and the bundle server.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The live miss-rate estimate of the edges' prescreens from audit samples.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// Staged model rollouts to edge groups: stages, gates, and the controller's lease.
    #[serde(default)]
    pub rollouts: crate::rollout::RolloutConfig,
    /// Full-model updates from the registry: the worker follows target `workers/<group>`; off unless `url`
    /// is set.
    #[serde(default)]
    pub updates: tierline_shared::updates::UpdatesConfig,
}

/// The model registry (`crate::registry`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Public key files (`tierline-models keygen` writes them as `<key>.pub`) of the operators whose signed
    /// bundles are accepted; two while keys rotate. Empty: publishing is refused.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Listen address of the bundle server (plain HTTP downloads for edges and workers; bundles are
    /// verified by whoever downloads them). Unset: not served.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// The review console: web pages for the reviewers of `[[api.reviewers]]`, who sign in with their tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Listen address, e.g. `127.0.0.1:9470` (port 0: any free port, logged at start). Unset: no console.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// How long a sign-in lasts.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Serve on an address other than loopback. The console speaks plain HTTP: off by default, the worker
    /// refuses such an address instead; set it only behind a TLS-terminating proxy.
    #[serde(default)]
    pub insecure: bool,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Set it when a TLS-terminating proxy serves
    /// the console over HTTPS; leave it off for plain HTTP on loopback, where browsers would drop the cookie.
    #[serde(default)]
    pub secure_cookies: bool,
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: None,
            session_ttl: default_session_ttl(),
            insecure: false,
            secure_cookies: false,
        }
    }
}

impl ConsoleConfig {
    /// The address to serve on, checked: reviewers with their own tokens exist (they sign in with them), the
    /// session lasts at least a minute, and an address other than loopback is allowed only with `insecure`.
    pub fn validate(&self, credentials: &[Credential]) -> Result<SocketAddr, ConfigError> {
        let field = |field: &str, problem: String| ConfigError::Field {
            field: field.into(),
            problem,
        };
        let Some(listen) = self.listen else {
            return Err(field(
                "console.listen",
                "is not set; set it (e.g. 127.0.0.1:9470) to serve the review console".into(),
            ));
        };
        if !credentials
            .iter()
            .any(|c| c.reviewer != SHARED_TOKEN_REVIEWER)
        {
            return Err(field(
                "console.listen",
                "is set, but no reviewer has a token: reviewers sign in to the console with the token of \
                 their [[api.reviewers]] entry; add one per reviewer"
                    .into(),
            ));
        }
        if self.session_ttl < Duration::from_secs(60) {
            return Err(field("console.session_ttl", "must be at least 1m".into()));
        }
        if !listen.ip().is_loopback() && !self.insecure {
            return Err(field(
                "console.listen",
                format!(
                    "is {listen}, which other hosts can reach, but the console serves plain HTTP: tokens and \
                     session cookies would cross the network readable. Listen on loopback behind a \
                     TLS-terminating proxy and set console.insecure = true if that proxy is on another host"
                ),
            ));
        }
        Ok(listen)
    }
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
    NonZeroUsize::new(128).unwrap_or(NonZeroUsize::MIN)
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
    /// Keep frame images (otherwise only metadata and verdicts).
    #[serde(default = "default_keep_images")]
    pub keep_images: bool,
    /// Where kept images go: `"database"`, `"file:///absolute/dir"` or `"s3://bucket/prefix"` (S3 or a
    /// compatible server; credentials, region and endpoint from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`). Unset: a `tierline-images` directory beside
    /// a SQLite store, the database for PostgreSQL.
    #[serde(default)]
    pub images: Option<String>,
    /// Options of S3 storage over the environment's, as `object_store` names them, e.g.
    /// `{ aws_endpoint = "http://minio:9000", aws_allow_http = "true" }`. Keep secrets in the environment.
    #[serde(default)]
    pub image_options: std::collections::BTreeMap<String, String>,
}

impl StoreConfig {
    /// `image_options` as pairs.
    pub fn image_options(&self) -> Vec<(String, String)> {
        self.image_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `images`, or its default for `url`.
    pub fn images_setting(&self) -> String {
        self.images
            .clone()
            .unwrap_or_else(|| crate::store::Images::default_for(&self.url))
    }
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
            images: None,
            image_options: Default::default(),
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

/// The name reviews are recorded under when they come with the shared `api.token` (deprecated: it cannot
/// tell reviewers apart).
pub const SHARED_TOKEN_REVIEWER: &str = "api.token";

/// The name reviews are recorded under when the API has no tokens at all (loopback only, or
/// `api.insecure`).
pub const ANONYMOUS_REVIEWER: &str = "anonymous";

/// The gRPC review API (see `proto/tierline/review/v1/review.proto`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the API.
    #[serde(default = "default_api_enabled")]
    pub enabled: bool,
    /// Listen address (port 0: any free port, logged at start). An address other than loopback needs
    /// tokens and TLS, or `insecure = true`.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Deprecated: one bearer token shared by everyone (`authorization: Bearer <token>`); reviews made with
    /// it are recorded as [`SHARED_TOKEN_REVIEWER`]. Use `reviewers` instead. Prefer `token_file` or the
    /// environment (TIERLINE_CLOUD__API__TOKEN) over the file.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the shared bearer token (surrounding whitespace ignored). Deprecated like `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The reviewers, each with their own bearer token (`[[api.reviewers]]`). A call is made by the
    /// reviewer whose token it carries; reviews are recorded under that name.
    #[serde(default)]
    pub reviewers: Vec<ReviewerConfig>,
    /// Reviewers (by name) who are also operators: they may publish model bundles and point edges and
    /// workers at them (the `Models` service). Without any token on the API, every caller may.
    #[serde(default)]
    pub operators: Vec<String>,
    /// PEM certificate chain for TLS (with `tls_key`); unset: plain HTTP/2.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve on an address other than loopback without tokens or without TLS. Off by default: the worker
    /// refuses to start instead, because anyone on the network could read frames and label them, or read
    /// the tokens off the wire.
    #[serde(default)]
    pub insecure: bool,
}

/// One reviewer of the review API and their own bearer token: `token_file` (preferred) or `token`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewerConfig {
    /// Name recorded with this reviewer's reviews: 1 to 64 characters, letters, digits, space and `_ . - @`.
    pub name: String,
    /// The token, inline (prefer `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the token (surrounding whitespace ignored), e.g. a mounted Kubernetes Secret key.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for ReviewerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewerConfig")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// A bearer token and the reviewer it identifies, as read from the configuration.
#[derive(Clone)]
pub struct Credential {
    /// Who presents this token.
    pub reviewer: String,
    /// The token.
    pub token: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("reviewer", &self.reviewer)
            .field("token", &"***")
            .finish()
    }
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
            reviewers: Vec::new(),
            operators: Vec::new(),
            tls_cert: None,
            tls_key: None,
            insecure: false,
        }
    }
}

/// Reads a token file: its content without surrounding whitespace, which must not be empty.
fn read_token_file(field: &str, path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Field {
        field: field.into(),
        problem: format!("cannot read {}: {e}", path.display()),
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(ConfigError::Field {
            field: field.into(),
            problem: format!("{} is empty; put the token in it", path.display()),
        });
    }
    Ok(token)
}

fn valid_reviewer_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && name.trim() == name
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '.' | '-' | '@'))
}

impl ApiConfig {
    /// Whether calls must carry a token (any of `reviewers`, `token`, `token_file` is set).
    pub fn has_tokens(&self) -> bool {
        self.token.is_some() || self.token_file.is_some() || !self.reviewers.is_empty()
    }

    /// Whether TLS is configured (`tls_cert` and `tls_key`).
    pub fn has_tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// Whether `listen` is reachable from other hosts (not a loopback address).
    pub fn exposed(&self) -> bool {
        !self.listen.ip().to_canonical().is_loopback()
    }

    /// Checks the section without reading any file: token and TLS settings are complete and consistent,
    /// reviewer names are valid and distinct, and an address other than loopback has both tokens and TLS
    /// unless `insecure` is set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |field: &str, problem: String| ConfigError::Field {
            field: field.into(),
            problem,
        };
        if self.token.is_some() && self.token_file.is_some() {
            return Err(field(
                "api.token",
                "set either api.token or api.token_file, not both".into(),
            ));
        }
        if matches!(&self.token, Some(t) if t.trim().is_empty()) {
            return Err(field(
                "api.token",
                "is empty; set a token or remove the key".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.reviewers.iter().enumerate() {
            let at = |key: &str| format!("api.reviewers[{i}].{key}");
            if !valid_reviewer_name(&r.name) {
                return Err(field(
                    &at("name"),
                    format!(
                        "{:?} is not a reviewer name; use 1 to 64 characters: letters, digits, space and _ . - @",
                        r.name
                    ),
                ));
            }
            if r.name == SHARED_TOKEN_REVIEWER || r.name == ANONYMOUS_REVIEWER {
                return Err(field(
                    &at("name"),
                    format!(
                        "{:?} is reserved for reviews made without a reviewer's own token; choose another name",
                        r.name
                    ),
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(field(
                    &at("name"),
                    format!("{:?} is listed twice; give each reviewer one entry", r.name),
                ));
            }
            match (&r.token, &r.token_file) {
                (Some(_), Some(_)) => {
                    return Err(field(
                        &at("token"),
                        format!(
                            "set either token or token_file for reviewer {:?}, not both",
                            r.name
                        ),
                    ));
                }
                (None, None) => {
                    return Err(field(
                        &at("token_file"),
                        format!(
                            "reviewer {:?} has no token; set token_file (a file holding the token) or token",
                            r.name
                        ),
                    ));
                }
                (Some(t), None) if t.trim().is_empty() => {
                    return Err(field(
                        &at("token"),
                        format!("is empty for reviewer {:?}; set a token", r.name),
                    ));
                }
                _ => {}
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(field(
                "api.tls_cert",
                "TLS needs both api.tls_cert and api.tls_key".into(),
            ));
        }
        if self.enabled && self.exposed() && !self.insecure {
            let missing = match (self.has_tokens(), self.has_tls()) {
                (false, false) => Some("neither tokens nor TLS"),
                (false, true) => Some("no tokens"),
                (true, false) => Some("no TLS"),
                (true, true) => None,
            };
            if let Some(missing) = missing {
                return Err(field(
                    "api.listen",
                    format!(
                        "is {}, which other hosts can reach, but the review API has {missing}: anyone on the \
                         network could read frames and label them, or read the tokens off the wire. Give each \
                         reviewer a token ([[api.reviewers]] with name and token_file; the shared api.token or \
                         api.token_file also counts) and set api.tls_cert and api.tls_key, or listen on \
                         127.0.0.1; to accept this on a network you trust, set api.insecure = true",
                        self.listen
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The configured tokens with the reviewer each identifies, reading the token files: one per
    /// `[[api.reviewers]]` entry, and the shared `api.token`/`api.token_file` as [`SHARED_TOKEN_REVIEWER`].
    /// Empty: the API asks for no token. Two reviewers with the same token are an error (the token would
    /// not say who is calling).
    pub fn credentials(&self) -> Result<Vec<Credential>, ConfigError> {
        let mut out = Vec::new();
        for (i, r) in self.reviewers.iter().enumerate() {
            let token = match (&r.token, &r.token_file) {
                (_, Some(path)) => {
                    read_token_file(&format!("api.reviewers[{i}].token_file"), path)?
                }
                (Some(t), None) => t.trim().to_string(),
                (None, None) => {
                    return Err(ConfigError::Field {
                        field: format!("api.reviewers[{i}].token_file"),
                        problem: format!(
                            "reviewer {:?} has no token; set token_file (a file holding the token) or token",
                            r.name
                        ),
                    });
                }
            };
            out.push(Credential {
                reviewer: r.name.clone(),
                token,
            });
        }
        let shared = match (&self.token, &self.token_file) {
            (_, Some(path)) => Some(read_token_file("api.token_file", path)?),
            (Some(t), None) => Some(t.clone()),
            (None, None) => None,
        };
        if let Some(token) = shared {
            out.push(Credential {
                reviewer: SHARED_TOKEN_REVIEWER.into(),
                token,
            });
        }
        for (i, a) in out.iter().enumerate() {
            if let Some(b) = out[..i].iter().find(|b| b.token == a.token) {
                return Err(ConfigError::Field {
                    field: "api.reviewers".into(),
                    problem: format!(
                        "{:?} and {:?} have the same token, so a call with it cannot be attributed; give each \
                         reviewer their own token",
                        b.reviewer, a.reviewer
                    ),
                });
            }
        }
        Ok(out)
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
        self.mqtt.validate()?;
        self.updates.validate(crate::updates::DEFAULT_GROUP)?;
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
        self.api.validate()?;
        if !(0.0..1.0).contains(&self.audit.miss_rate_target) {
            return Err(field(
                "audit.miss_rate_target",
                "must be within [0, 1), e.g. 0.01".into(),
            ));
        }
        if self.audit.interval < Duration::from_secs(1) {
            return Err(field("audit.interval", "must be at least 1s".into()));
        }
        if let Err((key, problem)) = self.rollouts.check() {
            return Err(field(key, problem));
        }
        for (i, op) in self.api.operators.iter().enumerate() {
            if !self.api.reviewers.iter().any(|r| &r.name == op) {
                return Err(field(
                    &format!("api.operators[{i}]"),
                    format!(
                        "{op:?} is not the name of an [[api.reviewers]] entry; operators sign in with their \
                         reviewer token"
                    ),
                ));
            }
        }
        if self.console.listen.is_some() {
            self.console.validate(&self.api.credentials()?)?;
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
    fn operators_must_be_reviewers() {
        let base = "[model]\nmanifest = \"m\"\n[api]\noperators = [\"ana\"]\n";
        let err = parse(base).unwrap_err().to_string();
        assert!(
            err.contains("api.operators[0]") && err.contains("ana"),
            "{err}"
        );
        let ok = format!("{base}[[api.reviewers]]\nname = \"ana\"\ntoken = \"t\"\n");
        assert_eq!(parse(&ok).unwrap().api.operators, ["ana"]);
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
            "[model]\nmanifest = \"m\"\n[database]\nurl = \"postgres://postgres@127.0.0.1/test\"\n[api]\nlisten = \"0.0.0.0:6000\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[[api.reviewers]]\nname = \"ana\"\ntoken_file = \"/run/secrets/ana\"\n[retention]\nmax_age = \"7days\"\n",
        )
        .unwrap();
        assert_eq!(c.api.reviewers[0].name, "ana");
        assert!(c.store.url.starts_with("postgres://"));
        assert_eq!(c.api.listen.port(), 6000);
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(7 * 86400)));
        let err = parse("[model]\nmanifest = \"m\"\n[api]\ntls_cert = \"c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.tls_cert"), "{err}");
    }

    const MODEL: &str = "[model]\nmanifest = \"m\"\n";

    fn api_error(api: &str) -> String {
        parse(&format!("{MODEL}[api]\n{api}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_exposed_api_needs_tokens_and_tls_or_the_insecure_switch() {
        let tls = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        let reviewer = "[[api.reviewers]]\nname = \"ana\"\ntoken = \"t-ana\"\n";
        for (listen, more) in [
            ("0.0.0.0:50051", String::new()),
            ("0.0.0.0:50051", "token = \"shared\"\n".to_string()),
            ("10.1.2.3:50051", tls.to_string()),
            ("[::]:50051", reviewer.to_string()),
        ] {
            let err = api_error(&format!("listen = \"{listen}\"\n{more}"));
            for named in [
                "api.listen",
                "api.reviewers",
                "api.token",
                "api.tls_cert",
                "api.insecure = true",
                "127.0.0.1",
            ] {
                assert!(err.contains(named), "{listen} {more:?}: {err}");
            }
        }
        // Loopback needs neither; tokens and TLS together, or the explicit switch, open any address.
        for ok in [
            "listen = \"127.0.0.1:50051\"\n".to_string(),
            "listen = \"[::1]:50051\"\n".to_string(),
            format!("listen = \"0.0.0.0:50051\"\n{tls}token_file = \"/run/t\"\n"),
            "listen = \"0.0.0.0:50051\"\ninsecure = true\n".to_string(),
            "listen = \"0.0.0.0:50051\"\nenabled = false\n".to_string(),
            format!("listen = \"0.0.0.0:50051\"\n{tls}{reviewer}"),
        ] {
            parse(&format!("{MODEL}[api]\n{ok}")).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn reviewers_need_a_valid_unique_name_and_one_token() {
        let r = |name: &str, key: &str| format!("[[api.reviewers]]\nname = \"{name}\"\n{key}\n");
        let cases = [
            (r("", "token = \"a\""), "api.reviewers[0].name"),
            (r("ana\\n", "token = \"a\""), "api.reviewers[0].name"),
            (r("api.token", "token = \"a\""), "reserved"),
            (r("anonymous", "token = \"a\""), "reserved"),
            (
                format!("{}{}", r("ana", "token = \"a\""), r("ana", "token = \"b\"")),
                "api.reviewers[1].name",
            ),
            (r("ana", ""), "api.reviewers[0].token_file"),
            (r("ana", "token = \"a\"\ntoken_file = \"f\""), "not both"),
            (r("ana", "token = \" \""), "api.reviewers[0].token"),
        ];
        for (api, named) in cases {
            let err = api_error(&api);
            assert!(err.contains(named), "{api}: {err}");
        }
        parse(&format!(
            "{MODEL}[api]\n{}",
            r("Ana María-2", "token = \"a\"")
        ))
        .unwrap();
    }

    #[test]
    fn credentials_come_from_files_and_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            Some(p)
        };
        let reviewer = |name: &str, token_file: Option<PathBuf>| ReviewerConfig {
            name: name.into(),
            token: None,
            token_file,
        };
        let mut api = ApiConfig {
            reviewers: vec![
                reviewer("ana", file("ana", "t-ana\n")),
                reviewer("bo", file("bo", "  t-bo ")),
            ],
            token: Some("shared".into()),
            ..ApiConfig::default()
        };
        let got: Vec<_> = api
            .credentials()
            .unwrap()
            .into_iter()
            .map(|c| (c.reviewer, c.token))
            .collect();
        assert_eq!(
            got,
            [
                ("ana".to_string(), "t-ana".to_string()),
                ("bo".to_string(), "t-bo".to_string()),
                (SHARED_TOKEN_REVIEWER.to_string(), "shared".to_string()),
            ]
        );
        assert!(!format!("{:?}", api.credentials().unwrap()).contains("t-ana"));
        api.reviewers[1].token_file = file("bo", "t-ana");
        let err = api.credentials().unwrap_err().to_string();
        assert!(
            err.contains("\"ana\" and \"bo\" have the same token"),
            "{err}"
        );
        api.reviewers[1].token_file = file("bo", "\n");
        let err = api.credentials().unwrap_err().to_string();
        assert!(
            err.contains("api.reviewers[1].token_file") && err.contains("empty"),
            "{err}"
        );
        api.reviewers[1].token_file = Some(dir.path().join("missing"));
        let err = api.credentials().unwrap_err().to_string();
        assert!(
            err.contains("api.reviewers[1].token_file") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_store_is_named() {
        let err = parse("[model]\nmanifest = \"m\"\n[store]\nurl = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url"), "{err}");
    }

    #[test]
    fn the_console_needs_reviewers_and_loopback_unless_told_otherwise() {
        let reviewer = Credential {
            reviewer: "ana".into(),
            token: "t".into(),
        };
        let shared = Credential {
            reviewer: SHARED_TOKEN_REVIEWER.into(),
            token: "s".into(),
        };
        let console = |listen: &str, insecure: bool| ConsoleConfig {
            listen: Some(listen.parse().unwrap()),
            insecure,
            ..ConsoleConfig::default()
        };
        let loopback = console("127.0.0.1:9470", false);
        assert_eq!(
            loopback.validate(std::slice::from_ref(&reviewer)).unwrap(),
            "127.0.0.1:9470".parse().unwrap()
        );
        for creds in [&[][..], std::slice::from_ref(&shared)] {
            let err = loopback.validate(creds).unwrap_err().to_string();
            assert!(err.contains("[[api.reviewers]]"), "{err}");
        }
        let exposed = console("0.0.0.0:9470", false);
        let err = exposed
            .validate(std::slice::from_ref(&reviewer))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("console.listen") && err.contains("insecure"),
            "{err}"
        );
        assert!(
            console("0.0.0.0:9470", true)
                .validate(std::slice::from_ref(&reviewer))
                .is_ok()
        );
        let short = ConsoleConfig {
            session_ttl: Duration::from_secs(5),
            ..loopback
        };
        assert!(short.validate(&[reviewer]).is_err());
        assert!(ConsoleConfig::default().validate(&[]).is_err());
    }
}
