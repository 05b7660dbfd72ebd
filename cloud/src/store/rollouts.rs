//! Staged model rollouts (`rollouts`): one row per rollout of a bundle to an edge group, changed by the
//! rollout controller (under its leader lease, fenced) and by operators (pause, resume, abort, roll back).
//!
//! Contract:
//! - At most one unfinished rollout (running, paused or rolling back) per group and model name.
//! - Every change bumps `rev` and is made only if `rev` is still the one the writer read, so a controller
//!   tick and an operator's pause never overwrite each other unseen; every change is a model event with the
//!   subject `rollout/<id>`.

use super::bundles::INSERT_EVENT;
use super::{Lease, Pool, RegistryRule, Store, StoreError};

/// A rollout.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RolloutRow {
    /// Its id.
    pub id: i64,
    /// The edge group.
    pub grp: String,
    /// Model name.
    pub name: String,
    /// The bundle rolled out.
    pub sha256: String,
    /// Its version.
    pub version: String,
    /// The bundle the group ran before (what a rollback returns to).
    pub previous: String,
    /// Its version.
    pub previous_version: String,
    /// `running`, `paused`, `rolling-back`, `done`, `rolled-back` or `aborted`.
    pub state: String,
    /// Index of the current stage.
    pub stage: i64,
    /// When the current stage began, µs.
    pub stage_started_us: i64,
    /// The stages, JSON (fixed at the start).
    pub stages: String,
    /// The group's edges at the start, JSON.
    pub members: String,
    /// What each edge did, JSON.
    pub progress: String,
    /// Why it is in its state (the last gate result or operator's reason).
    pub reason: String,
    /// Who started it.
    pub created_by: String,
    /// When, µs.
    pub created_us: i64,
    /// Last change, µs.
    pub updated_us: i64,
    /// Grows with every change.
    pub rev: i64,
}

impl RolloutRow {
    /// Whether it still acts (running, paused or rolling back).
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused" | "rolling-back")
    }
}

/// A rollout to start.
#[derive(Debug, Clone, Copy)]
pub struct NewRollout<'a> {
    /// Edge group.
    pub grp: &'a str,
    /// Model name.
    pub name: &'a str,
    /// The bundle.
    pub sha256: &'a str,
    /// Its version.
    pub version: &'a str,
    /// What the group runs now.
    pub previous: &'a str,
    /// Its version.
    pub previous_version: &'a str,
    /// Stages, JSON.
    pub stages: &'a str,
    /// Members, JSON.
    pub members: &'a str,
    /// Why.
    pub reason: &'a str,
}

const COLUMNS: &str = "id, grp, name, sha256, version, previous, previous_version, state, stage, \
     stage_started_us, stages, members, progress, reason, created_by, created_us, updated_us, rev";

impl Store {
    /// Starts a rollout (state `running`, stage 0) for `actor`; refused while another rollout of the model
    /// to the group is unfinished.
    pub async fn create_rollout(
        &self,
        r: NewRollout<'_>,
        actor: &str,
        now_us: i64,
    ) -> Result<Result<RolloutRow, RegistryRule>, StoreError> {
        let op = "start rollout";
        let sql = format!(
            "INSERT INTO rollouts (grp, name, sha256, version, previous, previous_version, state, stage,
               stage_started_us, stages, members, progress, reason, created_by, created_us, updated_us, rev)
             VALUES ($1, $2, $3, $4, $5, $6, 'running', 0, $7, $8, $9, '{{}}', $10, $11, $7, $7, 0)
             RETURNING {COLUMNS}"
        );
        on_pool!(self, |pool| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(self.err(op))?;
            let open: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM rollouts WHERE grp = $1 AND name = $2
                   AND state IN ('running', 'paused', 'rolling-back') LIMIT 1",
            )
            .bind(r.grp)
            .bind(r.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.err(op))?;
            if let Some(id) = open {
                return Ok(Err(RegistryRule::RolloutActive(id)));
            }
            let row: RolloutRow = sqlx::query_as(&sql)
                .bind(r.grp)
                .bind(r.name)
                .bind(r.sha256)
                .bind(r.version)
                .bind(r.previous)
                .bind(r.previous_version)
                .bind(now_us)
                .bind(r.stages)
                .bind(r.members)
                .bind(r.reason)
                .bind(actor)
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err(op))?;
            sqlx::query(INSERT_EVENT)
                .bind(now_us)
                .bind(actor)
                .bind(format!("rollout/{}", row.id))
                .bind(r.sha256)
                .bind("rollout-started")
                .bind(format!(
                    "{} {} -> {} on edges/{}: {}",
                    r.name, r.previous_version, r.version, r.grp, r.reason
                ))
                .execute(&mut *tx)
                .await
                .map_err(self.err(op))?;
            tx.commit().await.map_err(self.err(op))?;
            Ok(Ok(row))
        })
    }

    /// Rollouts, newest first; only the unfinished ones when `active_only`.
    pub async fn rollouts(&self, active_only: bool) -> Result<Vec<RolloutRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM rollouts
             WHERE ($1 = 0 OR state IN ('running', 'paused', 'rolling-back')) ORDER BY id DESC"
        );
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(i32::from(active_only))
            .fetch_all(pool)
            .await
            .map_err(self.err("list rollouts")))
    }

    /// One rollout.
    pub async fn rollout(&self, id: i64) -> Result<Option<RolloutRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM rollouts WHERE id = $1");
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(self.err("read rollout")))
    }

    /// Writes `row`'s state, stage, progress and reason if the stored `rev` is still `row.rev` (then bumped),
    /// recording `event` with `detail` by `actor`; under `fence` when given (the controller's lease).
    /// `Ok(false)`: someone changed it first; nothing written.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_rollout(
        &self,
        fence: Option<&Lease>,
        row: &RolloutRow,
        actor: &str,
        event: &str,
        detail: &str,
        now_us: i64,
    ) -> Result<bool, StoreError> {
        let op = "update rollout";
        on_pool!(self, |pool| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(self.err(op))?;
            if let Some(lease) = fence {
                hold_fence!(self, tx, lease, op);
            }
            let changed = sqlx::query(
                "UPDATE rollouts SET state = $1, stage = $2, stage_started_us = $3, progress = $4,
                   reason = $5, updated_us = $6, rev = rev + 1
                 WHERE id = $7 AND rev = $8",
            )
            .bind(&row.state)
            .bind(row.stage)
            .bind(row.stage_started_us)
            .bind(&row.progress)
            .bind(&row.reason)
            .bind(now_us)
            .bind(row.id)
            .bind(row.rev)
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?
            .rows_affected()
                == 1;
            if !changed {
                tx.rollback().await.map_err(self.err(op))?;
                return Ok(false);
            }
            if !event.is_empty() {
                sqlx::query(INSERT_EVENT)
                    .bind(now_us)
                    .bind(actor)
                    .bind(format!("rollout/{}", row.id))
                    .bind(&row.sha256)
                    .bind(event)
                    .bind(detail)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err(op))?;
            }
            tx.commit().await.map_err(self.err(op))?;
            Ok(true)
        })
    }
}

impl Store {
    /// Events about bundle `sha256` recorded at or after `since_us`, oldest first (what edges reported about
    /// it during a rollout).
    pub async fn bundle_events(
        &self,
        sha256: &str,
        since_us: i64,
    ) -> Result<Vec<super::ModelEvent>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, at_us, actor, subject, sha256, event, detail FROM model_events
             WHERE sha256 = $1 AND at_us >= $2 ORDER BY id"
        )
        .bind(sha256)
        .bind(since_us)
        .fetch_all(pool)
        .await
        .map_err(self.err("list bundle events")))
    }
}
