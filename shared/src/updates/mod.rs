//! Model updates: a machine follows the bundle its registry target names, an edge (targets `edges/<group>`
//! and `edge/<edge id>`) and a cloud worker (`workers/<group>`) alike.
//!
//! ```text
//! every updates.interval:
//!   GET /v1/targets ─► of the targets followed, the one changed last, for the serving model's name
//!   ─► same bundle as serving? done
//!   ─► statement signed by a trusted key? names this bundle? sequence above the serving one, or a
//!      rollback naming it? ──no──► rejected (logged once per bundle; the serving model keeps serving)
//!   ─► download into staging (resumed by byte range after a cut) ─► size and hash as signed ─► unpack
//!      into bundles/<sha256>/ (plain files only) ─► load: model hash, golden samples
//!   ─► shadow (not for rollbacks): the next shadow_frames live frames judged by both models; agreement
//!      and suspect count against the gates ─► state.json: pending ─► swap ─► state.json: active
//!      (the two bundles before it stay on disk; older ones are removed)
//! ```
//!
//! Each step is logged with an `event` field (`downloaded`, `verified`, `golden-pass`, `shadowing`,
//! `active`, `rolled-back`, `rejected`) and the reason, counted ([`UpdateCounters`]) and handed to a
//! [`Report`]: an edge publishes it over MQTT, a cloud worker writes it to the registry's event log. A machine
//! cut off from the cloud keeps serving what it has and catches up when the link returns. A crash between the
//! records of a swap comes back on the model that served before it ([`state`]).

pub mod config;
pub mod fetch;
pub mod state;

pub use config::UpdatesConfig;

use crate::bundle::{
    BundleError, BundleStatement, SignedStatement, TrustedKeys, archive, check_sequence,
};
use crate::runner::{ModelRunner, RunnerConfig, RunnerError};
use crate::serving::ServedModel;
use crate::supervisor::crash_point;
use state::{Installed, State};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// Where each step of an update is reported besides the log (best effort: the log has them all).
pub trait Report: Send + Sync {
    /// Step `event` of `bundle` (its hash), with `detail`, while `serving_version` serves.
    fn step(&self, event: &str, bundle: &str, detail: &str, serving_version: &str);
}

/// What the updates have done, for metrics.
#[derive(Debug, Default)]
pub struct UpdateCounters {
    /// Bundles swapped in (updates and rollbacks).
    pub applied: AtomicU64,
    /// Bundles refused (signature, sequence, hash, contents, golden samples, shadow).
    pub rejected: AtomicU64,
    /// Checks that failed for a reason that is not the bundle's (network, disk), tried again.
    pub errors: AtomicU64,
}

/// Why a check of the target did not end with the target's bundle serving.
#[derive(Debug, Error)]
pub enum UpdateError {
    /// The bundle server could not be asked, or answered nonsense.
    #[error("model updates: {0}")]
    Fetch(String),
    /// A local file could not be read or written.
    #[error("model updates: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The installed-bundles record is unreadable or cannot be written.
    #[error("model updates: {path}: {problem}")]
    State {
        /// `state.json`.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The bundle failed a check: signature, sequence, hash, contents.
    #[error("model updates: {0}")]
    Bundle(#[from] BundleError),
    /// The bundle's model does not load or fails its golden samples.
    #[error("model updates: bundle {bundle}: {source}")]
    Model {
        /// Bundle hash.
        bundle: String,
        /// The load or golden failure.
        source: Box<RunnerError>,
    },
    /// The bundle judged the shadow frames unlike the serving model.
    #[error("model updates: bundle {bundle} failed its shadow: {reason}")]
    Shadow {
        /// Bundle hash.
        bundle: String,
        /// Which gate failed, with the numbers.
        reason: String,
    },
}

impl UpdateError {
    /// Whether the bundle itself is at fault (refused until the target changes), as opposed to the network
    /// or the disk (tried again at the next check).
    pub fn refuses_bundle(&self) -> bool {
        match self {
            // A disk that is full or unwritable is not the bundle's fault.
            Self::Bundle(BundleError::Io { .. }) => false,
            Self::Bundle(_) | Self::Model { .. } | Self::Shadow { .. } => true,
            _ => false,
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary (for bounded
/// report fields).
pub fn prefix(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Where bundle `sha256` is unpacked.
pub fn bundle_dir(dir: &Path, sha256: &str) -> PathBuf {
    dir.join("bundles").join(sha256)
}

/// The manifest to serve at start: the active bundle's, when updates are on and one is installed. A swap a
/// crash interrupted is dropped here (the bundle that served before it serves again).
pub fn startup_manifest(cfg: &UpdatesConfig) -> Result<Option<(PathBuf, Installed)>, UpdateError> {
    if cfg.url.is_none() {
        return Ok(None);
    }
    let mut state = State::load(&cfg.dir)?;
    if let Some(pending) = state.pending.take() {
        tracing::warn!(
            event = "interrupted", bundle = %pending.sha256, version = %pending.version,
            serving = state.active.as_ref().map_or("model.manifest", |a| a.version.as_str()),
            "A model swap was interrupted; serving the model that served before it and trying again later."
        );
        state.save(&cfg.dir)?;
    }
    Ok(state
        .active
        .map(|a| (bundle_dir(&cfg.dir, &a.sha256).join(archive::MANIFEST), a)))
}

/// Why the model to serve at start could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The installed-bundles record could not be read or written.
    #[error(transparent)]
    Updates(#[from] UpdateError),
    /// The configured model does not load or fails its golden samples.
    #[error(transparent)]
    Model(#[from] RunnerError),
}

/// Loads the model to serve at start and checks it against its golden samples: the bundle the registry last
/// made active when updates are on and one is installed (falling back to `manifest`, the configured one, if
/// it no longer loads), else `manifest`.
pub async fn load_serving(
    cfg: &UpdatesConfig,
    manifest: &Path,
    runner_config: RunnerConfig,
    probe: crate::serving::ProbeConfig,
) -> Result<Arc<ServedModel>, LoadError> {
    if let Some((bundle_manifest, installed)) = startup_manifest(cfg)? {
        match ServedModel::load(&bundle_manifest, runner_config.clone(), probe.clone()).await {
            Ok(model) => {
                tracing::info!(
                    bundle = %installed.sha256, version = %installed.version,
                    "Serving the model bundle the registry last made active."
                );
                return Ok(model);
            }
            Err(e) => {
                tracing::error!(
                    bundle = %installed.sha256, error = %e, fallback = %manifest.display(),
                    "The active model bundle does not load; serving the configured model instead."
                );
                forget_active(cfg)?;
            }
        }
    }
    Ok(ServedModel::load(manifest, runner_config, probe).await?)
}

/// Records that the active bundle no longer loads (the configured `model.manifest` serves instead), so the
/// next check installs the target again and sequences are compared with what actually serves.
pub fn forget_active(cfg: &UpdatesConfig) -> Result<(), UpdateError> {
    let mut state = State::load(&cfg.dir)?;
    if let Some(broken) = state.active.take() {
        state.save(&cfg.dir)?;
        // Unpacked again from a fresh download next time.
        let _ = std::fs::remove_dir_all(bundle_dir(&cfg.dir, &broken.sha256));
    }
    Ok(())
}

/// The updates stage.
pub struct Updates {
    /// Settings.
    pub cfg: UpdatesConfig,
    /// The targets followed (e.g. `edges/line-3` and `edge/e1`); of those naming the serving model, the one
    /// changed last wins, so a later group-wide change supersedes an earlier canary and a canary's rollback
    /// supersedes the group's change before it. On a tie the later one in this list wins.
    pub targets: Vec<String>,
    /// What runs the updates, for messages: `edge`, `worker`.
    pub role: &'static str,
    /// The model serving.
    pub model: Arc<ServedModel>,
    /// How candidate models are run (as the serving one).
    pub runner_config: RunnerConfig,
    /// Counters.
    pub counters: Arc<UpdateCounters>,
    /// Where the steps are reported.
    pub report: Arc<dyn Report>,
    /// Checks the targets now instead of at the next interval (an edge wakes it when the cloud announces
    /// a target change over MQTT).
    pub wake: Arc<tokio::sync::Notify>,
}

impl Updates {
    fn report(&self, event: &str, bundle: &str, detail: String) {
        self.report
            .step(event, bundle, &detail, &self.model.manifest().version);
    }

    /// Checks the target every interval until `shutdown`. Never fails: every problem is logged, counted and
    /// tried again (or, for a bad bundle, refused until the target names another).
    pub async fn run(self, shutdown: CancellationToken) {
        // Both are checked at start; a key file removed since only stops updates, and the stage waits for
        // shutdown like any other (ending early would stop the process).
        let trusted = match TrustedKeys::load(&self.cfg.trusted_keys) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "Model updates are off: the trusted keys cannot be read.");
                return shutdown.cancelled().await;
            }
        };
        let server = match self.cfg.url.as_deref().map(fetch::Server::parse) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::error!(error = %e, "Model updates are off.");
                return shutdown.cancelled().await;
            }
            None => return shutdown.cancelled().await,
        };
        // Refused instructions (bundle, rollback): not tried again until the target names something else.
        let mut refused: BTreeSet<(String, bool)> = BTreeSet::new();
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            let check = self.check(&server, &trusted, &refused);
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => {
                    self.model.stop_shadow();
                    return;
                }
                outcome = check => outcome,
            };
            match outcome {
                Ok(()) => {}
                Err((bundle, rollback, e)) if e.refuses_bundle() => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        event = "rejected", bundle = %bundle, targets = ?self.targets, error = %e,
                        serving = %self.model.manifest().version,
                        "Model bundle rejected; the serving model keeps serving."
                    );
                    self.report("rejected", &bundle, e.to_string());
                    refused.insert((bundle, rollback));
                }
                Err((bundle, _, e)) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        bundle = %bundle, targets = ?self.targets, error = %e,
                        "Model update check failed; trying again at the next check."
                    );
                }
            }
        }
    }

    /// One check of the target. On error, the bundle concerned ('' if none), whether the target asked for
    /// a rollback, and why.
    async fn check(
        &self,
        server: &fetch::Server,
        trusted: &TrustedKeys,
        refused: &BTreeSet<(String, bool)>,
    ) -> Result<(), (String, bool, UpdateError)> {
        let none = |e| (String::new(), false, e);
        let serving = self.model.manifest();
        let targets = server.targets().await.map_err(none)?;
        let Some(target) = pick_target(targets, &self.targets, &serving.name) else {
            return Ok(());
        };
        let state = self.load_state().await.map_err(none)?;
        if state
            .active
            .as_ref()
            .is_some_and(|a| a.sha256 == target.sha256)
            || refused.contains(&(target.sha256.clone(), target.rollback))
        {
            return Ok(());
        }
        let bundle = target.sha256.clone();
        let fail = |e: UpdateError| (bundle.clone(), target.rollback, e);
        let (statement, rollback) = self
            .verify(&target, trusted, &state, &serving.name)
            .map_err(fail)?;
        let manifest_path = self.install(server, &statement).await.map_err(fail)?;
        let runner = ModelRunner::load_checked(&manifest_path, self.runner_config.clone())
            .await
            .map_err(|source| {
                fail(UpdateError::Model {
                    bundle: bundle.clone(),
                    source: Box::new(source),
                })
            })?;
        self.report(
            "golden-pass",
            &bundle,
            format!("{} golden samples pass", runner.manifest().golden.len()),
        );
        tracing::info!(
            event = "golden-pass", bundle = %bundle, version = %statement.version,
            samples = runner.manifest().golden.len(), "Model bundle passes its golden samples."
        );
        if !rollback {
            self.shadow(&statement, runner.clone())
                .await
                .map_err(fail)?;
        }
        let new = Installed {
            sha256: statement.sha256.clone(),
            name: statement.name.clone(),
            version: statement.version.clone(),
            sequence: statement.sequence,
        };
        // Recorded before the swap: a crash from here on comes back on the model serving now.
        let mut pending = state.clone();
        pending.pending = Some(new.clone());
        self.save_state(pending).await.map_err(fail)?;
        crash_point("updates:pending");
        let before = serving.version.clone();
        self.model.activate(runner, &manifest_path).await;
        crash_point("updates:swapped");
        let now = state.activated(new);
        self.save_state(now).await.map_err(fail)?;
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        self.report(
            if rollback { "rolled-back" } else { "active" },
            &bundle,
            format!(
                "{before} -> {} (sequence {})",
                statement.version, statement.sequence
            ),
        );
        tracing::info!(
            event = if rollback { "rolled-back" } else { "active" },
            bundle = %bundle, from = %before, to = %statement.version, sequence = statement.sequence,
            targets = ?self.targets, "Model bundle now serving."
        );
        Ok(())
    }

    /// Verifies the target's statement: a trusted signature, the target's bundle, no downgrade.
    /// A rollback is honoured only to a bundle this edge served before (kept in `state.previous`): the
    /// registry's rollback flag is not signed, so it may only lead back to a model that already passed here.
    /// Returns the statement and whether this is such a rollback.
    fn verify(
        &self,
        target: &fetch::TargetView,
        trusted: &TrustedKeys,
        state: &State,
        serving: &str,
    ) -> Result<(BundleStatement, bool), UpdateError> {
        let statement = SignedStatement::parse(&target.signed)?.verify(trusted)?;
        if !statement.sha256.eq_ignore_ascii_case(&target.sha256) {
            return Err(BundleError::Mismatch {
                bundle: target.sha256.clone(),
                problem: format!("the target's statement signs bundle {}", statement.sha256),
            }
            .into());
        }
        if statement.name != serving {
            return Err(BundleError::Mismatch {
                bundle: target.sha256.clone(),
                problem: format!(
                    "it is a {} model and this {} serves {serving}",
                    statement.name, self.role
                ),
            }
            .into());
        }
        let rollback = target.rollback
            && state
                .previous
                .iter()
                .any(|p| p.sha256.eq_ignore_ascii_case(&target.sha256));
        check_sequence(
            &statement,
            state
                .active
                .as_ref()
                .map(|a| (a.sequence, a.sha256.as_str())),
            rollback.then_some(target.sha256.as_str()),
        )?;
        self.report(
            "verified",
            &statement.sha256,
            format!(
                "{} sequence {}, signed by key {}{}",
                statement.label(),
                statement.sequence,
                SignedStatement::parse(&target.signed)
                    .map(|s| s.key_id)
                    .unwrap_or_default(),
                if rollback { ", rollback" } else { "" }
            ),
        );
        tracing::info!(
            event = "verified", bundle = %statement.sha256, version = %statement.version,
            sequence = statement.sequence, rollback,
            "Model bundle statement verified."
        );
        Ok((statement, rollback))
    }

    /// Makes sure the bundle is unpacked under `bundles/<sha256>/` (downloading it unless it is there from
    /// before) and returns its manifest's path.
    async fn install(
        &self,
        server: &fetch::Server,
        statement: &BundleStatement,
    ) -> Result<PathBuf, UpdateError> {
        let dir = bundle_dir(&self.cfg.dir, &statement.sha256);
        let manifest = dir.join(archive::MANIFEST);
        if manifest.is_file() {
            return Ok(manifest);
        }
        let part = self
            .cfg
            .dir
            .join("staging")
            .join(format!("{}.part", statement.sha256));
        let bytes = server
            .download(&statement.sha256, statement.size, &part)
            .await?;
        crash_point("updates:downloaded");
        let staged = self.cfg.dir.join("staging").join(&statement.sha256);
        let statement_owned = statement.clone();
        let (staged2, dir2) = (staged.clone(), dir.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&staged2);
            let result = archive::unpack(&bytes, &statement_owned, &staged2);
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&staged2);
                return result.map(|_| ());
            }
            if let Some(parent) = dir2.parent() {
                std::fs::create_dir_all(parent).map_err(|source| BundleError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::rename(&staged2, &dir2).map_err(|source| BundleError::Io {
                path: dir2.clone(),
                source,
            })?;
            // The rename itself must survive a power loss before the swap is recorded.
            let bundles = dir2.parent().unwrap_or(&dir2);
            std::fs::File::open(bundles)
                .and_then(|d| d.sync_all())
                .map_err(|source| BundleError::Io {
                    path: bundles.to_path_buf(),
                    source,
                })
        })
        .await
        .map_err(|e| UpdateError::Fetch(format!("unpacking stopped: {e}")))?;
        // A refused archive is dropped with its partial download, so the next attempt starts clean.
        let _ = tokio::fs::remove_file(&part).await;
        unpacked?;
        crash_point("updates:unpacked");
        self.report(
            "downloaded",
            &statement.sha256,
            format!("{} bytes, hash as signed", statement.size),
        );
        tracing::info!(
            event = "downloaded", bundle = %statement.sha256, bytes = statement.size,
            "Model bundle downloaded, its hash checked and unpacked."
        );
        Ok(manifest)
    }

    /// Runs the candidate beside the serving model on live frames and checks the gates.
    async fn shadow(
        &self,
        statement: &BundleStatement,
        candidate: Arc<ModelRunner>,
    ) -> Result<(), UpdateError> {
        let frames = self.cfg.shadow_frames;
        self.report(
            "shadowing",
            &statement.sha256,
            format!("{frames} live frames beside the serving model"),
        );
        tracing::info!(
            event = "shadowing", bundle = %statement.sha256, version = %statement.version, frames,
            "Model bundle judging live frames in shadow."
        );
        let shadow = self.model.start_shadow(candidate, frames);
        let finished = tokio::time::timeout(self.cfg.shadow_timeout, shadow.finished()).await;
        self.model.stop_shadow();
        let r = shadow.report();
        if finished.is_err() {
            return Err(UpdateError::Fetch(format!(
                "bundle {}: only {} of {frames} shadow frames within {:?}; trying again at the next check",
                statement.sha256, r.frames, self.cfg.shadow_timeout
            )));
        }
        let allowed =
            self.cfg.max_suspect_ratio * r.serving_defective as f64 + 0.02 * r.frames as f64;
        let reason = if r.errors > 0 {
            Some(format!("it failed on {} of {} frames", r.errors, r.frames))
        } else if r.agreement() < self.cfg.min_agreement {
            Some(format!(
                "it agreed with the serving model on {:.1} % of {} frames (at least {:.1} % needed)",
                100.0 * r.agreement(),
                r.frames,
                100.0 * self.cfg.min_agreement
            ))
        } else if r.candidate_defective as f64 > allowed {
            Some(format!(
                "it would forward {} suspects where the serving model forwarded {} (at most {:.0} allowed)",
                r.candidate_defective, r.serving_defective, allowed
            ))
        } else {
            None
        };
        self.report(
            "shadowed",
            &statement.sha256,
            format!(
                "{} frames, {} agreed, suspects {} (serving) vs {} (new){}",
                r.frames,
                r.agreed,
                r.serving_defective,
                r.candidate_defective,
                reason
                    .as_deref()
                    .map_or(String::new(), |why| format!(": {why}"))
            ),
        );
        tracing::info!(
            event = "shadowed", bundle = %statement.sha256, frames = r.frames, agreed = r.agreed,
            serving_suspects = r.serving_defective, candidate_suspects = r.candidate_defective,
            passed = reason.is_none(), "Model bundle shadow finished."
        );
        match reason {
            Some(reason) => Err(UpdateError::Shadow {
                bundle: statement.sha256.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Reads `state.json` off the async threads.
    async fn load_state(&self) -> Result<State, UpdateError> {
        let dir = self.cfg.dir.clone();
        tokio::task::spawn_blocking(move || State::load(&dir))
            .await
            .map_err(|e| UpdateError::Fetch(format!("reading the update state stopped: {e}")))?
    }

    /// Replaces `state.json` (synced) and removes the bundles it no longer refers to, off the async threads.
    async fn save_state(&self, state: State) -> Result<(), UpdateError> {
        let dir = self.cfg.dir.clone();
        tokio::task::spawn_blocking(move || {
            state.save(&dir)?;
            if state.pending.is_none() {
                remove_unkept(&dir, &state);
            }
            Ok(())
        })
        .await
        .map_err(|e| UpdateError::Fetch(format!("writing the update state stopped: {e}")))?
    }
}

/// The target to follow for model `name`: of `followed`, the one changed last (on a tie, the later in
/// `followed`).
pub fn pick_target(
    targets: Vec<fetch::TargetView>,
    followed: &[String],
    name: &str,
) -> Option<fetch::TargetView> {
    targets
        .into_iter()
        .filter(|t| t.name == name)
        .filter_map(|t| {
            let rank = followed.iter().position(|f| *f == t.target)?;
            Some(((t.changed_us, rank), t))
        })
        .max_by_key(|(key, _)| *key)
        .map(|(_, t)| t)
}

/// Removes bundles `state` no longer refers to.
fn remove_unkept(dir: &Path, state: &State) {
    let kept = state.kept();
    let Ok(entries) = std::fs::read_dir(dir.join("bundles")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !kept.contains(&name.as_ref()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(target: &str, name: &str, sha: &str, changed_us: i64) -> fetch::TargetView {
        fetch::TargetView {
            target: target.into(),
            name: name.into(),
            sha256: sha.into(),
            rollback: false,
            changed_us,
            signed: String::new(),
        }
    }

    #[test]
    fn the_newer_of_the_edge_and_group_targets_wins() {
        let pick = |ts: Vec<fetch::TargetView>| {
            let followed = ["edges/line-3".to_string(), "edge/e1".to_string()];
            pick_target(ts, &followed, "prescreen").map(|t| t.sha256)
        };
        let group = t("edges/line-3", "prescreen", "g", 10);
        let canary = t("edge/e1", "prescreen", "c", 20);
        assert_eq!(pick(vec![group.clone(), canary.clone()]), Some("c".into()));
        let later_group = t("edges/line-3", "prescreen", "g2", 30);
        assert_eq!(pick(vec![canary.clone(), later_group]), Some("g2".into()));
        // Someone else's canary, another group and another model are not ours.
        let others = vec![
            t("edge/e2", "prescreen", "x", 50),
            t("edges/line-4", "prescreen", "y", 50),
            t("edge/e1", "full", "z", 50),
        ];
        assert_eq!(pick(others.clone()), None);
        let mut all = others;
        all.push(group);
        assert_eq!(pick(all), Some("g".into()));
    }
}
