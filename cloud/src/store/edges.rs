//! Edges: one row per edge, fed by its retained presence (birth / last will) and its heartbeats.

use super::{Pool, Store, StoreError};
use sqlx::FromRow;
use tierline_shared::wire::{self, Heartbeat, Presence};

/// An edge as the cloud knows it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct EdgeRow {
    /// Edge id.
    pub edge_id: String,
    /// Site.
    pub site: String,
    /// Line.
    pub line: String,
    /// ONLINE birth seen last (false after its last will).
    pub online: bool,
    /// Last time heard from, µs.
    pub last_seen_us: i64,
    /// Outbox backlog from the last heartbeat.
    pub backlog_frames: i64,
    /// Oldest outbox frame age from the last heartbeat, ms.
    pub oldest_backlog_age_ms: i64,
    /// Prescreen model version.
    pub edge_model_version: String,
    /// Frames the edge saw since its process started, from the last heartbeat.
    pub frames_seen: i64,
    /// Of those, frames it forwarded to the cloud.
    pub frames_forwarded: i64,
    /// Its cameras from the last heartbeat, JSON (see [`EdgeRow::cameras`]).
    pub cameras_json: String,
    /// The edge group it follows for model updates ('' when its updates are off).
    pub update_group: String,
    /// Its suspects' decision latency p99 over its last heartbeat's interval, µs.
    pub decision_p99_us: i64,
    /// How many decisions that p99 covers (0: none in that interval).
    pub decisions: i64,
}

/// A camera of an edge, from its last heartbeat.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CameraView {
    /// Camera id.
    pub id: String,
    /// Delivering frames in time.
    pub up: bool,
    /// Finished by design.
    pub ended: bool,
    /// Frames per second.
    pub fps: f64,
    /// Seconds since its last frame (negative: none yet).
    pub age_s: f64,
    /// Why it is down.
    pub error: String,
}

impl EdgeRow {
    /// Its cameras from the last heartbeat.
    pub fn cameras(&self) -> Vec<CameraView> {
        serde_json::from_str(&self.cameras_json).unwrap_or_default()
    }
}

fn cameras_json(h: &Heartbeat) -> String {
    let views: Vec<CameraView> = h
        .cameras
        .iter()
        .map(|c| CameraView {
            id: c.camera_id.clone(),
            up: c.up,
            ended: c.ended,
            fps: if c.fps.is_finite() { c.fps } else { 0.0 },
            age_s: if c.last_frame_age_s.is_finite() {
                c.last_frame_age_s
            } else {
                -1.0
            },
            error: c.error.chars().take(300).collect(),
        })
        .collect();
    serde_json::to_string(&views).unwrap_or_else(|_| "[]".into())
}

const UPSERT_PRESENCE: &str = "INSERT INTO edges (edge_id, site, line, online, last_seen_us, edge_model_version)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (edge_id) DO UPDATE SET site = excluded.site, line = excluded.line, online = excluded.online,
       last_seen_us = CASE WHEN excluded.last_seen_us > edges.last_seen_us THEN excluded.last_seen_us ELSE edges.last_seen_us END,
       edge_model_version = CASE WHEN excluded.edge_model_version != '' THEN excluded.edge_model_version ELSE edges.edge_model_version END";

const UPSERT_HEARTBEAT: &str = "INSERT INTO edges (edge_id, site, line, online, last_seen_us, backlog_frames, oldest_backlog_age_ms, edge_model_version, frames_seen, frames_forwarded, cameras_json, update_group, decision_p99_us, decisions)
     VALUES ($1, $2, $3, TRUE, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
     ON CONFLICT (edge_id) DO UPDATE SET
       frames_seen = excluded.frames_seen, frames_forwarded = excluded.frames_forwarded,
       cameras_json = excluded.cameras_json, update_group = excluded.update_group,
       decision_p99_us = excluded.decision_p99_us, decisions = excluded.decisions,
       last_seen_us = CASE WHEN excluded.last_seen_us > edges.last_seen_us THEN excluded.last_seen_us ELSE edges.last_seen_us END,
       backlog_frames = excluded.backlog_frames, oldest_backlog_age_ms = excluded.oldest_backlog_age_ms,
       edge_model_version = CASE WHEN excluded.edge_model_version != '' THEN excluded.edge_model_version ELSE edges.edge_model_version END";

impl Store {
    /// Records an edge's presence message (retained birth, or last will), received at `now_us`.
    pub async fn record_presence(&self, p: &Presence, now_us: i64) -> Result<(), StoreError> {
        let online = p.state() == wire::PresenceState::Online;
        // A birth tells when the edge was last there; a last will arrives late and tells nothing about it.
        let seen = if online { p.time_us.min(now_us) } else { 0 };
        on_pool!(self, |pool| sqlx::query(UPSERT_PRESENCE)
            .bind(&p.edge_id)
            .bind(&p.site)
            .bind(&p.line)
            .bind(online)
            .bind(seen)
            .bind(&p.edge_model_version)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.err("record presence"))?);
        Ok(())
    }

    /// Records an edge heartbeat from `site`/`line` (its topic), received at `now_us`.
    pub async fn record_heartbeat(
        &self,
        site: &str,
        line: &str,
        h: &Heartbeat,
        now_us: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(UPSERT_HEARTBEAT)
            .bind(&h.edge_id)
            .bind(site)
            .bind(line)
            .bind(now_us)
            .bind(i64::try_from(h.backlog_frames).unwrap_or(i64::MAX))
            .bind(i64::try_from(h.oldest_backlog_age_ms).unwrap_or(i64::MAX))
            .bind(&h.edge_model_version)
            .bind(i64::try_from(h.frames_seen).unwrap_or(i64::MAX))
            .bind(i64::try_from(h.frames_forwarded).unwrap_or(i64::MAX))
            .bind(cameras_json(h))
            .bind(h.update_group.chars().take(64).collect::<String>())
            .bind(i64::try_from(h.decision_p99_us).unwrap_or(i64::MAX))
            .bind(i64::try_from(h.decisions).unwrap_or(i64::MAX))
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.err("record heartbeat"))?);
        Ok(())
    }

    /// All known edges, by id.
    pub async fn list_edges(&self) -> Result<Vec<EdgeRow>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT edge_id, site, line, online, last_seen_us, backlog_frames, oldest_backlog_age_ms,
                    edge_model_version, frames_seen, frames_forwarded, cameras_json, update_group,
                    decision_p99_us, decisions FROM edges ORDER BY edge_id"
        )
        .fetch_all(pool)
        .await
        .map_err(self.err("list edges"))
        })
    }
}
