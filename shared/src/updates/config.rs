//! The `[updates]` section, shared by the edge and the cloud worker.

use crate::config::ConfigError;
use crate::topics;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Model updates (`[updates]` of an edge or a cloud worker): the machine follows what its group's target
/// names in the cloud's registry, verifying, checking and shadowing each bundle before it serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesConfig {
    /// The cloud's bundle server (`registry.listen`), e.g. `http://cloud.plant:9471`. Unset: no updates.
    #[serde(default)]
    pub url: Option<String>,
    /// The group whose target this machine follows: `edges/<group>` for an edge (default: its line),
    /// `workers/<group>` for a cloud worker (default: `default`).
    #[serde(default)]
    pub group: Option<String>,
    /// Public key files of the operators whose signed bundles are accepted; two while keys rotate.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Where bundles are kept: the one serving, the two before it, downloads in progress, and `state.json`.
    #[serde(default = "default_updates_dir")]
    pub dir: PathBuf,
    /// How often the target is checked.
    #[serde(default = "default_updates_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Live frames a new bundle judges beside the serving model before it is swapped in (rollbacks skip
    /// the shadow: they go back to a model that served before).
    #[serde(default = "default_shadow_frames")]
    pub shadow_frames: u64,
    /// Longest a shadow may wait for its frames; an idle line retries it at the next check.
    #[serde(default = "default_shadow_timeout", with = "humantime_serde")]
    pub shadow_timeout: Duration,
    /// Least share of shadow frames on which the new and the serving model agree (defective or not).
    #[serde(default = "default_min_agreement")]
    pub min_agreement: f64,
    /// Most suspects the new model may raise in shadow: `max_suspect_ratio` × the serving model's, plus 2 %
    /// of the shadow frames.
    #[serde(default = "default_max_suspect_ratio")]
    pub max_suspect_ratio: f64,
}

fn default_updates_dir() -> PathBuf {
    PathBuf::from("tierline-models")
}
fn default_updates_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_shadow_frames() -> u64 {
    200
}
fn default_shadow_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_min_agreement() -> f64 {
    0.95
}
fn default_max_suspect_ratio() -> f64 {
    2.0
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        Self {
            url: None,
            group: None,
            trusted_keys: Vec::new(),
            dir: default_updates_dir(),
            interval: default_updates_interval(),
            shadow_frames: default_shadow_frames(),
            shadow_timeout: default_shadow_timeout(),
            min_agreement: default_min_agreement(),
            max_suspect_ratio: default_max_suspect_ratio(),
        }
    }
}

impl UpdatesConfig {
    /// Checks the section; `default_group` is the group when none is set.
    pub fn validate(&self, default_group: &str) -> Result<(), ConfigError> {
        let field = |field: &str, problem: String| ConfigError::Field {
            field: field.into(),
            problem,
        };
        let Some(url) = &self.url else {
            return Ok(());
        };
        if !url.starts_with("http://") {
            return Err(field(
                "updates.url",
                format!(
                    "{url:?} is not an http:// URL of the cloud's bundle server (registry.listen); bundles are \
                     verified by signature, so plain HTTP is enough"
                ),
            ));
        }
        super::fetch::Server::parse(url).map_err(|e| field("updates.url", e.to_string()))?;
        if self.trusted_keys.is_empty() {
            return Err(field(
                "updates.trusted_keys",
                "is empty: list the operators' public key files (tierline-models keygen writes them), or \
                 remove updates.url"
                    .into(),
            ));
        }
        topics::validate_id("group", self.group.as_deref().unwrap_or(default_group))
            .map_err(|e| field("updates.group", e.to_string()))?;
        if self.shadow_frames == 0 {
            return Err(field("updates.shadow_frames", "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.min_agreement) {
            return Err(field(
                "updates.min_agreement",
                "must be within [0, 1]".into(),
            ));
        }
        if self.max_suspect_ratio.is_nan() || self.max_suspect_ratio < 1.0 {
            return Err(field(
                "updates.max_suspect_ratio",
                "must be at least 1".into(),
            ));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(field("updates.interval", "must be at least 100ms".into()));
        }
        Ok(())
    }

    /// The group this machine belongs to for updates.
    pub fn group<'a>(&'a self, default_group: &'a str) -> &'a str {
        self.group.as_deref().unwrap_or(default_group)
    }
}
