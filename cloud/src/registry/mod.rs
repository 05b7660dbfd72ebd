//! The model registry: where signed model bundles are published, what each edge group should run, and where
//! edges download bundles from.
//!
//! ```text
//!  operator: tierline-models sign ──► bundle + signed statement
//!     └─► tierline-review models publish ──► review API (operators only) ──► Registry::publish:
//!            statement signed by a trusted key? archive's size and hash as signed? manifest and model hash
//!            inside as named? ──► store: model_bundles (+ event)
//!     └─► tierline-review models target ──► Registry::set_target: no downgrade without --rollback
//!            ──► store: model_targets (+ event)
//!  edges ──► bundle server (`registry.listen`, HTTP): GET /v1/bundles/<sha256> (byte ranges, so a
//!            cut download resumes), /v1/bundles/<sha256>/statement, /v1/targets
//! ```
//!
//! The registry checks every bundle before storing it, but nobody downstream has to trust it: an edge
//! verifies the statement's signature and the archive's hash itself (`tierline_shared::bundle`), so a
//! compromised registry, store or network can withhold bundles but not substitute them. The rollback flag of
//! a target is not signed: an edge follows it only back to a bundle it served before.

pub mod announce;
pub mod server;

use crate::store::{BundleRow, NewBundle, Published, RegistryRule, Store, StoreError, TargetRow};
use std::sync::Arc;
use thiserror::Error;
use tierline_shared::bundle::{BundleError, SignedStatement, TrustedKeys, archive};

/// Largest bundle the registry takes: 256 MiB.
pub const MAX_BUNDLE: u64 = 256 << 20;

/// Why a registry request was refused.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The worker trusts no signing key, so it cannot check a bundle.
    #[error(
        "this cloud worker trusts no model signing key, so it cannot check bundles; list the operators' public \
         keys in registry.trusted_keys"
    )]
    NoTrustedKeys,
    /// The bundle is larger than [`MAX_BUNDLE`].
    #[error("the bundle is {size} bytes; the registry takes at most {MAX_BUNDLE}")]
    TooLarge {
        /// Its size.
        size: u64,
    },
    /// The bundle or its statement failed a check.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A registry rule refused it.
    #[error(transparent)]
    Rule(#[from] RegistryRule),
    /// The target name is not one the fleet uses.
    #[error(
        "target {0:?} is not `edges/<group>`, `edge/<edge id>` or `workers/<group>` (letters, digits, `_`, `-`, \
         `.`, up to 64)"
    )]
    BadTarget(String),
    /// Setting the target would run an older bundle without saying it is a rollback.
    #[error(
        "{target} runs {name} sequence {current}; bundle {bundle} has sequence {offered}: to go back to it, \
         roll back explicitly (--rollback), which edges accept only when it names the bundle"
    )]
    Downgrade {
        /// Target.
        target: String,
        /// Model name.
        name: String,
        /// The bundle asked for.
        bundle: String,
        /// Its sequence.
        offered: i64,
        /// The sequence the target runs.
        current: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registry over a store, checking bundles with the trusted keys.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    trusted: Arc<TrustedKeys>,
}

impl Registry {
    /// A registry over `store` that accepts bundles signed by `trusted`.
    pub fn new(store: Store, trusted: TrustedKeys) -> Self {
        Self {
            store,
            trusted: Arc::new(trusted),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks and stores a bundle published by `actor`: the statement must verify with a trusted key, the
    /// archive must be the one it signs, and the manifest inside must name the model the statement names
    /// with a model file matching its hash.
    pub async fn publish(
        &self,
        signed_json: &str,
        bytes: Vec<u8>,
        actor: &str,
    ) -> Result<(BundleRow, Published), RegistryError> {
        if self.trusted.is_empty() {
            return Err(RegistryError::NoTrustedKeys);
        }
        let size = bytes.len() as u64;
        if size > MAX_BUNDLE {
            return Err(RegistryError::TooLarge { size });
        }
        let signed = SignedStatement::parse(signed_json)?;
        let statement = signed.verify(&self.trusted)?;
        // The name becomes a topic level of the target announcements (`tierline/targets/v1/<target>/<name>`).
        tierline_shared::topics::validate_id("model name", &statement.name).map_err(|e| {
            BundleError::Malformed(format!(
                "model name {:?}: {e}; rename the model in its manifest",
                statement.name
            ))
        })?;
        // Unpacking writes files and hashes the model: off the async threads.
        let (statement, bytes) = tokio::task::spawn_blocking(move || {
            let scratch = tempfile::tempdir().map_err(|source| BundleError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
            archive::unpack(&bytes, &statement, &scratch.path().join("bundle"))?;
            Ok::<_, BundleError>((statement, bytes))
        })
        .await
        .map_err(|e| BundleError::Archive {
            bundle: "(publish)".into(),
            problem: format!("checking the bundle stopped: {e}"),
        })??;
        let sequence = i64::try_from(statement.sequence).unwrap_or(i64::MAX);
        let outcome = self
            .store
            .publish_bundle(
                NewBundle {
                    sha256: &statement.sha256,
                    name: &statement.name,
                    version: &statement.version,
                    sequence,
                    key_id: &signed.key_id,
                    signed: signed_json,
                    data: &bytes,
                },
                actor,
                tierline_shared::time::now_us(),
            )
            .await??;
        let row = self
            .store
            .bundle(&statement.sha256)
            .await?
            .ok_or_else(|| RegistryRule::UnknownBundle(statement.sha256.clone()))?;
        tracing::info!(
            bundle = %row.sha256, name = %row.name, version = %row.version, sequence = row.sequence,
            key_id = %row.key_id, actor, new = outcome == Published::New,
            "Model bundle published."
        );
        Ok((row, outcome))
    }

    /// Points `target` at the bundle whose hash starts with `bundle` for that bundle's model name. A bundle
    /// with a lower sequence than the one the target runs needs `rollback`.
    pub async fn set_target(
        &self,
        target: &str,
        bundle: &str,
        rollback: bool,
        actor: &str,
        reason: &str,
    ) -> Result<TargetRow, RegistryError> {
        check_target(target)?;
        let wanted = self.store.find_bundle(bundle).await??;
        let current = self
            .store
            .model_targets()
            .await?
            .into_iter()
            .find(|t| t.target == target && t.name == wanted.name);
        if let Some(current) = current
            && !rollback
            && let Some(running) = self.store.bundle(&current.sha256).await?
            && running.sequence > wanted.sequence
        {
            return Err(RegistryError::Downgrade {
                target: target.into(),
                name: wanted.name,
                bundle: wanted.sha256,
                offered: wanted.sequence,
                current: running.sequence,
            });
        }
        let row = self
            .store
            .set_target(
                target,
                &wanted.sha256,
                rollback,
                actor,
                reason,
                tierline_shared::time::now_us(),
            )
            .await??;
        tracing::info!(
            target, bundle = %row.sha256, previous = row.previous.as_deref().unwrap_or(""), rollback, actor,
            reason, "Model target set."
        );
        Ok(row)
    }
}

/// Checks a target name: `edges/<group>`, `edge/<edge id>` for one edge (a canary), or `workers/<group>` for
/// the cloud workers of a group (`updates.group`, default `default`).
pub fn check_target(target: &str) -> Result<(), RegistryError> {
    let ok = target
        .strip_prefix("edges/")
        .or_else(|| target.strip_prefix("edge/"))
        .or_else(|| target.strip_prefix("workers/"))
        .is_some_and(|g| {
            !g.is_empty()
                && g.len() <= 64
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadTarget(target.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_edge_groups() {
        for good in [
            "edges/line-3",
            "edges/plant_1.a",
            "edge/edge-7",
            "workers/default",
        ] {
            assert!(check_target(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "edges/",
            "edges/a/b",
            "edge/",
            "edge/a/b",
            "workers",
            "workers/",
            "edges/ x",
        ] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
    }
}
