//! Staged model rollouts: a bundle goes to one edge of a group, then a share of it, then all of it, and
//! moves on only while every edge it reached passes its gates. A failing gate, or too many failed edges,
//! sends every edge the rollout reached back to the bundle before, automatically and recorded.
//!
//! ```text
//!  operator: tierline-review rollout start <bundle> --group G ──► store: rollouts (running, stage 1)
//!  controller (one worker: the `rollouts` leader lease; every rollouts.interval):
//!    for each running rollout: plan::step(row, edges (heartbeats), bundle events (edges' reports), audit
//!      estimates) ──► targets: edge/<id> for a canary stage, edges/<G> for the last stage (fenced)
//!      ──► row: next stage / done / rolling-back (fenced, only if unchanged since read) + event
//!    for each rolling-back rollout: every target it set ──► the bundle before, as a rollback ──► rolled-back
//!  gates per edge: refused the bundle (its golden samples or shadow failed), not active within
//!  stage_timeout, forwarded share, decision latency p99, audit misses on the new version
//!  operator: pause · resume · abort (stop where it is) · rollback (every edge back)
//! ```
//!
//! An edge follows whichever of its own target and its group's changed last, so a later group-wide change
//! supersedes a canary, and a canary's rollback supersedes the group change before it. Every decision is in
//! the store; a new leader continues where the last one stopped.

pub mod plan;

use crate::audit;
use crate::stats::CloudStats;
use crate::store::{Lease, NewRollout, RegistryRule, RolloutRow, Store, StoreError};
use plan::{Observed, StageSize};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// Name of the rollout controller's lease.
pub const LEASE: &str = "rollouts";
/// The actor recorded for the controller's changes.
pub const ACTOR: &str = "rollout controller";

/// Settings of rollouts (`[rollouts]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Stages: a number of edges (`"1"`) or a share of the group (`"10%"`); the last always covers all.
    #[serde(default = "default_stages")]
    pub stages: Vec<String>,
    /// How long every edge of a stage serves the bundle, passing its gates, before the next stage.
    #[serde(default = "default_soak", with = "humantime_serde")]
    pub soak: Duration,
    /// How long an edge of a stage has to report the bundle active (downloaded, verified, golden samples,
    /// shadow); an online edge that does not counts as failed.
    #[serde(default = "default_stage_timeout", with = "humantime_serde")]
    pub stage_timeout: Duration,
    /// This many failed edges roll the rollout back.
    #[serde(default = "default_max_failed")]
    pub max_failed_edges: u32,
    /// Frames an edge must judge on the new bundle before its forwarded share is judged.
    #[serde(default = "default_min_frames")]
    pub min_frames: u64,
    /// The forwarded share on the new bundle may be at most this times the share before, … (both judged
    /// with 95 % confidence: the new share's Wilson lower bound against the old one's upper bound)
    #[serde(default = "default_forward_ratio")]
    pub max_forward_ratio: f64,
    /// … plus this (a share of frames).
    #[serde(default = "default_forward_slack")]
    pub forward_slack: f64,
    /// The decision latency p99 on the new bundle may be at most this times the p99 before, …
    #[serde(default = "default_latency_ratio")]
    pub max_latency_ratio: f64,
    /// … plus this.
    #[serde(default = "default_latency_slack", with = "humantime_serde")]
    pub latency_slack: Duration,
    /// Audit samples on the new bundle before its miss rate is judged.
    #[serde(default = "default_min_audits")]
    pub min_audits: u64,
    /// A miss rate whose Wilson 95 % lower bound is above this fails the edge.
    #[serde(default = "default_audit_miss_rate")]
    pub max_audit_miss_rate: f64,
    /// How often the controller looks.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The controller's lease time to live.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
}

fn default_stages() -> Vec<String> {
    vec!["1".into(), "10%".into(), "100%".into()]
}
fn default_soak() -> Duration {
    Duration::from_secs(600)
}
fn default_stage_timeout() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_failed() -> u32 {
    1
}
fn default_min_frames() -> u64 {
    1000
}
fn default_forward_ratio() -> f64 {
    1.5
}
fn default_forward_slack() -> f64 {
    0.02
}
fn default_latency_ratio() -> f64 {
    2.0
}
fn default_latency_slack() -> Duration {
    Duration::from_millis(50)
}
fn default_min_audits() -> u64 {
    50
}
fn default_audit_miss_rate() -> f64 {
    0.01
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(15)
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            stages: default_stages(),
            soak: default_soak(),
            stage_timeout: default_stage_timeout(),
            max_failed_edges: default_max_failed(),
            min_frames: default_min_frames(),
            max_forward_ratio: default_forward_ratio(),
            forward_slack: default_forward_slack(),
            max_latency_ratio: default_latency_ratio(),
            latency_slack: default_latency_slack(),
            min_audits: default_min_audits(),
            max_audit_miss_rate: default_audit_miss_rate(),
            interval: default_interval(),
            lease_ttl: default_lease_ttl(),
        }
    }
}

impl RolloutConfig {
    /// The stages, parsed; the error names the bad one.
    pub fn parsed_stages(&self) -> Result<Vec<StageSize>, String> {
        if self.stages.is_empty() {
            return Err("give at least one stage, e.g. [\"1\", \"10%\", \"100%\"]".into());
        }
        self.stages.iter().map(|s| s.parse()).collect()
    }

    /// Checks the section: (key, problem) of the first bad value.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.parsed_stages().map_err(|e| ("rollouts.stages", e))?;
        if self.max_failed_edges == 0 {
            return Err(("rollouts.max_failed_edges", "must be at least 1".into()));
        }
        if self.max_forward_ratio.is_nan()
            || self.max_forward_ratio < 1.0
            || !(0.0..=1.0).contains(&self.forward_slack)
        {
            return Err((
                "rollouts.max_forward_ratio",
                "must be at least 1, with forward_slack within [0, 1]".into(),
            ));
        }
        if self.max_latency_ratio.is_nan() || self.max_latency_ratio < 1.0 {
            return Err(("rollouts.max_latency_ratio", "must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.max_audit_miss_rate) {
            return Err((
                "rollouts.max_audit_miss_rate",
                "must be within [0, 1), e.g. 0.01".into(),
            ));
        }
        if self.interval < Duration::from_millis(100) || self.lease_ttl < self.interval * 2 {
            return Err((
                "rollouts.interval",
                "must be at least 100ms, and lease_ttl at least twice it".into(),
            ));
        }
        Ok(())
    }
}

/// Why an operator's rollout request was refused.
#[derive(Debug, Error)]
pub enum RolloutError {
    /// A rule of the registry.
    #[error(transparent)]
    Rule(#[from] RegistryRule),
    /// The request makes no sense as asked.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts a rollout of the bundle `bundle` (hash or unique prefix) to edge group `group`, for `actor`.
pub async fn start(
    store: &Store,
    cfg: &RolloutConfig,
    group: &str,
    bundle: &str,
    actor: &str,
    reason: &str,
) -> Result<RolloutRow, RolloutError> {
    crate::registry::check_target(&format!("edges/{group}"))
        .map_err(|e| RolloutError::Invalid(e.to_string()))?;
    let stages = cfg.parsed_stages().map_err(RolloutError::Invalid)?;
    let wanted = store.find_bundle(bundle).await??;
    let target = format!("edges/{group}");
    let current = store
        .model_targets()
        .await?
        .into_iter()
        .find(|t| t.target == target && t.name == wanted.name)
        .ok_or_else(|| {
            RolloutError::Invalid(format!(
                "{target} has no {} target yet, so there is nothing to roll back to: point it at the bundle \
                 its edges run now first (`tierline-review models target {target} <bundle>`)",
                wanted.name
            ))
        })?;
    let previous = store
        .bundle(&current.sha256)
        .await?
        .ok_or_else(|| RegistryRule::UnknownBundle(current.sha256.clone()))?;
    if previous.sha256 == wanted.sha256 {
        return Err(RolloutError::Invalid(format!(
            "{target} runs bundle {} already",
            wanted.sha256
        )));
    }
    if wanted.sequence <= previous.sequence {
        return Err(RolloutError::Invalid(format!(
            "{target} runs {} sequence {}; a rollout goes forward only (bundle {} has sequence {}); to go back \
             use `tierline-review models rollback`",
            previous.name, previous.sequence, wanted.sha256, wanted.sequence
        )));
    }
    let edges = store.list_edges().await?;
    let members = plan::members(&edges, group);
    // A rollback returns edges to the bundle the group runs now, and an edge honours a rollback only to a
    // bundle it served: every edge of the group that is online must serve it when the rollout starts.
    if let Some(e) = edges
        .iter()
        .find(|e| e.update_group == group && e.online && e.edge_model_version != previous.version)
    {
        return Err(RolloutError::Invalid(format!(
            "edge {} of group {group} serves {} {}, not {} as its target says: wait until the group has \
             converged on its target before rolling out (a rollback could not bring it back)",
            e.edge_id, previous.name, e.edge_model_version, previous.version
        )));
    }
    if members.is_empty() {
        return Err(RolloutError::Invalid(format!(
            "no edge has reported following group {group:?} (edges report it in their heartbeats when \
             updates.url is set); a rollout needs at least one"
        )));
    }
    let stages_json = serde_json::to_string(&stages).unwrap_or_else(|_| "[]".into());
    let members_json = serde_json::to_string(&members).unwrap_or_else(|_| "[]".into());
    let row = store
        .create_rollout(
            NewRollout {
                grp: group,
                name: &wanted.name,
                sha256: &wanted.sha256,
                version: &wanted.version,
                previous: &previous.sha256,
                previous_version: &previous.version,
                stages: &stages_json,
                members: &members_json,
                reason,
            },
            actor,
            tierline_shared::time::now_us(),
        )
        .await??;
    tracing::info!(
        rollout = row.id, group, bundle = %row.sha256, version = %row.version,
        previous = %row.previous_version, edges = members.len(), actor, "Rollout started."
    );
    Ok(row)
}

/// What an operator can do to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop advancing until resumed; gates are not judged meanwhile.
    Pause,
    /// Go on (stage timeouts count from now).
    Resume,
    /// Stop for good where it is: edges keep what they run.
    Abort,
    /// Send every edge the rollout reached back to the bundle before.
    Rollback,
}

impl std::str::FromStr for Control {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pause" => Control::Pause,
            "resume" => Control::Resume,
            "abort" => Control::Abort,
            "rollback" => Control::Rollback,
            other => {
                return Err(format!(
                    "unknown rollout action {other:?}: pause, resume, abort or rollback"
                ));
            }
        })
    }
}

/// Targets a running rollout's progress says it set that the store does not hold (a leader died between
/// recording a stage and setting its targets).
fn missing_targets(
    row: &RolloutRow,
    targets: &[crate::store::TargetRow],
) -> Vec<plan::TargetChange> {
    let progress = plan::Progress::parse(&row.progress);
    let holds = |target: &str| {
        targets
            .iter()
            .any(|t| t.target == target && t.name == row.name && t.sha256 == row.sha256)
    };
    let mut out: Vec<plan::TargetChange> = progress
        .edges
        .iter()
        .filter(|(id, p)| p.own_target && !holds(&format!("edge/{id}")))
        .map(|(id, p)| plan::TargetChange {
            target: format!("edge/{id}"),
            sha256: row.sha256.clone(),
            rollback: false,
            why: format!("rollout {} stage {} (canary)", row.id, p.stage + 1),
        })
        .collect();
    let group = format!("edges/{}", row.grp);
    if progress.group_targeted_us.is_some() && !holds(&group) {
        out.push(plan::TargetChange {
            target: group,
            sha256: row.sha256.clone(),
            rollback: false,
            why: format!("rollout {} last stage (every edge)", row.id),
        });
    }
    out
}

/// Applies an operator's `action` to rollout `id`.
pub async fn control(
    store: &Store,
    id: i64,
    action: Control,
    actor: &str,
    reason: &str,
) -> Result<RolloutRow, RolloutError> {
    for _ in 0..5 {
        let row = store
            .rollout(id)
            .await?
            .ok_or(RegistryRule::UnknownRollout(id))?;
        let refuse = |problem: &str| {
            Err(RolloutError::Rule(RegistryRule::RolloutState {
                id,
                state: row.state.clone(),
                problem: problem.into(),
            }))
        };
        let now = tierline_shared::time::now_us();
        let mut next = row.clone();
        let (event, new_state) = match (action, row.state.as_str()) {
            (Control::Pause, "running") => ("paused", "paused"),
            (Control::Resume, "paused") => ("resumed", "running"),
            (Control::Abort, "running" | "paused") => ("aborted", "aborted"),
            (Control::Rollback, "running" | "paused" | "aborted" | "done") => {
                ("rollback-requested", "rolling-back")
            }
            (Control::Pause, _) => return refuse("only a running rollout can be paused"),
            (Control::Resume, _) => return refuse("only a paused rollout can be resumed"),
            (Control::Abort, _) => {
                return refuse("only a running or paused rollout can be aborted");
            }
            (Control::Rollback, _) => return refuse("it is rolled back or rolling back already"),
        };
        if action == Control::Rollback && row.state == "done" {
            // Only while the group still runs this rollout's bundle: a later change is not undone.
            let group_target = store
                .model_targets()
                .await?
                .into_iter()
                .find(|t| t.target == format!("edges/{}", row.grp) && t.name == row.name);
            if group_target.is_none_or(|t| t.sha256 != row.sha256) {
                return refuse(
                    "the group's target has changed since it finished; roll back with `tierline-review \
                     models rollback` instead",
                );
            }
        }
        next.state = new_state.into();
        next.reason = format!("{event} by {actor}: {reason}");
        if action == Control::Resume {
            // Time paused does not count against the stage.
            let mut progress = plan::Progress::parse(&row.progress);
            for p in progress.edges.values_mut() {
                if p.active_us.is_none() && p.failed.is_none() {
                    // Reports made while paused still count (they match from targeted_us on).
                    p.timeout_from_us = Some(now);
                }
            }
            next.progress = progress.to_json();
            next.stage_started_us = now;
        }
        if store
            .update_rollout(None, &next, actor, event, reason, now)
            .await?
        {
            tracing::info!(
                rollout = id,
                action = event,
                actor,
                reason,
                "Rollout changed by an operator."
            );
            return Ok(store.rollout(id).await?.unwrap_or(next));
        }
    }
    Err(RolloutError::Invalid(format!(
        "rollout {id} kept changing while this request tried to apply; try again"
    )))
}

/// The controller: a candidate for the rollouts lease, stepping every unfinished rollout while it holds it.
pub struct Controller {
    /// The store.
    pub store: Store,
    /// Settings.
    pub config: RolloutConfig,
    /// This worker's id, the lease holder's name.
    pub holder: String,
    /// Counters.
    pub stats: Arc<CloudStats>,
}

impl Controller {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut held: Option<Lease> = None;
        loop {
            let now = tierline_shared::time::now_us();
            match self
                .store
                .try_acquire_lease(LEASE, &self.holder, self.config.lease_ttl, now)
                .await
            {
                Ok(Some(lease)) => {
                    if held.as_ref().map(|l| l.token) != Some(lease.token) {
                        tracing::info!(holder = %self.holder, token = lease.token, "Rollout controller lease taken.");
                    }
                    self.stats.rollout_leader.store(true, Ordering::Relaxed);
                    held = Some(lease);
                }
                Ok(None) => {
                    if held.take().is_some() {
                        tracing::warn!(holder = %self.holder, "Rollout controller lease lost to another worker.");
                    }
                    self.stats.rollout_leader.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Rollout controller lease could not be renewed.")
                }
            }
            if let Some(lease) = &held {
                match self.tick(lease).await {
                    Ok(()) => {}
                    Err(e @ StoreError::Fenced { .. }) => {
                        tracing::warn!(error = %e, "Rollout step refused; another worker leads now.");
                        held = None;
                        self.stats.rollout_leader.store(false, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "Rollout step failed; trying again."),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
        if let Some(lease) = held {
            let _ = self.store.release_lease(&lease).await;
            self.stats.rollout_leader.store(false, Ordering::Relaxed);
        }
    }

    /// Sets `changes` under the lease; a target a registry rule refuses is logged (the gates then see
    /// the edge not activate).
    async fn set_targets(
        &self,
        lease: &Lease,
        rollout: i64,
        changes: &[plan::TargetChange],
        now: i64,
    ) -> Result<(), StoreError> {
        for t in changes {
            if let Err(rule) = self
                .store
                .set_target_fenced(lease, &t.target, &t.sha256, t.rollback, ACTOR, &t.why, now)
                .await?
            {
                tracing::error!(rollout, target = %t.target, error = %rule, "Rollout could not set a target.");
            }
        }
        Ok(())
    }

    /// One look at every unfinished rollout.
    async fn tick(&self, lease: &Lease) -> Result<(), StoreError> {
        let rollouts = self.store.rollouts(true).await?;
        self.stats
            .rollouts_active
            .store(rollouts.len() as u64, Ordering::Relaxed);
        if rollouts.is_empty() {
            return Ok(());
        }
        let edges = self.store.list_edges().await?;
        for row in rollouts {
            let events = self
                .store
                .bundle_events(&row.sha256, row.created_us)
                .await?;
            let audits: Vec<audit::Estimate> = self
                .store
                .audit_counts(row.created_us)
                .await?
                .iter()
                .map(audit::Estimate::from_count)
                .collect();
            let now = tierline_shared::time::now_us();
            let step = plan::step(
                &row,
                &self.config,
                &Observed {
                    edges: &edges,
                    events: &events,
                    audits: &audits,
                    now_us: now,
                },
            );
            let (event, detail) = step.event.clone().unwrap_or_default();
            let targets = self.store.model_targets().await?;
            if row.state == "rolling-back" {
                // Rolling back: targets first (repeating them is harmless), then the row. Besides those the
                // step names, any target of the group or its members still naming the bundle goes back too.
                let mut changes = step.targets.clone();
                let members: Vec<String> = serde_json::from_str(&row.members).unwrap_or_default();
                for t in &targets {
                    let ours = t.target == format!("edges/{}", row.grp)
                        || t.target
                            .strip_prefix("edge/")
                            .is_some_and(|id| members.iter().any(|m| m == id));
                    if ours
                        && t.name == row.name
                        && t.sha256 == row.sha256
                        && !changes.iter().any(|c| c.target == t.target)
                    {
                        changes.push(plan::TargetChange {
                            target: t.target.clone(),
                            sha256: row.previous.clone(),
                            rollback: true,
                            why: format!("rollout {} rolled back: {}", row.id, row.reason),
                        });
                    }
                }
                self.set_targets(lease, row.id, &changes, now).await?;
                self.store
                    .update_rollout(Some(lease), &step.row, ACTOR, &event, &detail, now)
                    .await?;
            } else {
                let mut changes = step.targets.clone();
                if step.row.state == "running" {
                    for m in missing_targets(&step.row, &targets) {
                        if !changes.iter().any(|c| c.target == m.target) {
                            changes.push(m);
                        }
                    }
                }
                if step.row == row && changes.is_empty() {
                    continue;
                }
                // Going forward: the row first (with the rev check, so a pause or abort made meanwhile
                // wins and nothing is pushed), then the targets it records. A leader that dies in between
                // leaves targets the next step sets again (below).
                let written = self
                    .store
                    .update_rollout(Some(lease), &step.row, ACTOR, &event, &detail, now)
                    .await?;
                if !written {
                    continue;
                }
                self.set_targets(lease, row.id, &changes, now).await?;
            }
            if !event.is_empty() {
                match event.as_str() {
                    "gate-failed" | "rolled-back" => {
                        self.stats
                            .rollouts_rolled_back
                            .fetch_add(u64::from(event == "rolled-back"), Ordering::Relaxed);
                        tracing::error!(
                            rollout = row.id, group = %row.grp, bundle = %row.sha256, event = %event,
                            detail = %detail, "Rollout stopped by its gates; rolling every edge back."
                        )
                    }
                    _ => tracing::info!(
                        rollout = row.id, group = %row.grp, version = %row.version, event = %event,
                        detail = %detail, "Rollout moved on."
                    ),
                }
            }
        }
        Ok(())
    }
}
