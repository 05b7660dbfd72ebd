//! Cloud storage behind one interface with two sqlx backends: SQLite (the default, embedded) and PostgreSQL
//! (several workers sharing one database). The URL scheme picks the backend: `sqlite://…` or `postgres://…`.
//! Migrations live in `migrations/sqlite/` and `migrations/postgres/` and create the same tables.
//!
//! Contract (checked against both backends by `tests/tests/store_contract.rs`):
//! - Storing is idempotent: the key is `(edge_id, seq)`. A frame delivered again is counted in
//!   `frames.deliveries` and answered with the verdict already stored, never stored twice.
//! - Verdicts are never deleted. Retention ([`Store::prune_images`]) only clears old image bytes, by age and
//!   by a total byte budget (oldest first), and only under the current leader lease: the write is guarded by
//!   the lease's fencing token, so a leader that lost its lease cannot prune ([`StoreError::Fenced`]).
//! - Leases ([`Store::try_acquire_lease`]): one row per job; the `token` only grows. A holder renews its
//!   lease before it expires and keeps its token; anyone who takes an expired lease gets `token + 1`.
//!   Expiry uses the workers' clocks, so workers need synchronized clocks (NTP) and a TTL far above the skew;
//!   correctness does not rest on the clocks, because every guarded write checks the token.
//! - Edges: one row per edge, from its retained presence (birth / last will) and its heartbeats.
//! - Reviews: a history of human labels per frame; the latest counts.
//!
//! All SQL is written once with `$n` placeholders, which both backends accept, and run against whichever pool
//! is open (the `on_pool!` macro expands the same code for each).

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;
use tierline_shared::wire::{self, ClassScore, FrameEnvelope, Heartbeat, Presence, Verdict};

/// Errors from the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("verdict store {url} failed during {op}: {source}")]
    Db {
        /// Database URL (password removed).
        url: String,
        /// What was being done.
        op: &'static str,
        /// Database error.
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error(
        "verdict store {url} cannot be migrated: {source}; it may belong to a newer Tierline version"
    )]
    Migrate {
        /// Database URL (password removed).
        url: String,
        /// Migration error.
        source: sqlx::migrate::MigrateError,
    },
    /// The URL names no supported database.
    #[error(
        "database URL {0:?} is not supported; use sqlite://<path> or postgres://user@host:port/database"
    )]
    Unsupported(String),
    /// A guarded write came from a holder whose lease is gone.
    #[error(
        "lease {name} token {token} is no longer current (another worker took over); write refused"
    )]
    Fenced {
        /// Lease name.
        name: String,
        /// The stale token.
        token: i64,
    },
    /// The frame does not exist.
    #[error(
        "frame {edge_id}/{seq} is not stored; check the edge id and seq (tierline-review list)"
    )]
    NotFound {
        /// Edge id.
        edge_id: String,
        /// Sequence number.
        seq: u64,
    },
}

/// The outcome of storing a verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The verdict was stored now.
    New(Verdict),
    /// A verdict for this frame already existed; this is it.
    Existing(Verdict),
}

/// Which database a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool is open.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The cloud store.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: String,
    keep_images: bool,
    worker: String,
}

/// Filters and paging of [`Store::list_frames`].
#[derive(Debug, Clone, Default)]
pub struct FrameFilter {
    /// Only this edge (empty: all).
    pub edge_id: String,
    /// Only this line (empty: all).
    pub line: String,
    /// Only this cloud label (empty: all).
    pub label: String,
    /// Captured at or after (0: unbounded).
    pub since_us: i64,
    /// Captured before (0: unbounded).
    pub until_us: i64,
    /// Only frames where the edge's local action contradicts the cloud verdict.
    pub disagreement: bool,
    /// Only frames without a human review.
    pub unreviewed: bool,
    /// Page size (1..=1000).
    pub limit: u32,
    /// Continue after this frame: `(capture_time_us, edge_id, seq)` of the last row of the previous page.
    pub after: Option<(i64, String, u64)>,
}

/// One frame with its verdict, as listed for review.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct FrameRow {
    /// Edge id.
    pub edge_id: String,
    /// Per-edge sequence number.
    pub seq: i64,
    /// `<edge_id>-<seq>`.
    pub frame_id: String,
    /// Site.
    pub site: String,
    /// Production line.
    pub line: String,
    /// Camera.
    pub camera_id: String,
    /// Capture time, µs since the epoch.
    pub capture_time_us: i64,
    /// Wire `ForwardReason`.
    pub reason: i32,
    /// Prescreen score.
    pub edge_score: f64,
    /// Prescreen model version.
    pub edge_model_version: String,
    /// The edge's local decision when the verdict was late ("" otherwise).
    pub edge_local_action: String,
    /// Times the frame was delivered.
    pub deliveries: i64,
    /// Wire `ImageEncoding`.
    pub image_encoding: i32,
    /// Whether the image bytes are still stored.
    pub has_image: bool,
    /// Cloud label.
    pub label: String,
    /// Cloud: defective.
    pub defective: bool,
    /// Cloud defect score.
    pub defect_score: f64,
    /// Cloud model version.
    pub cloud_model_version: String,
    /// Verdict time, µs.
    pub verdict_time_us: i64,
    /// Class probabilities, JSON `[[class, p], …]`.
    pub scores_json: String,
    /// Local action contradicts the verdict.
    pub disagreement: bool,
    /// Latest human label ("" if none).
    pub review_label: String,
}

impl FrameRow {
    /// The class probabilities.
    pub fn scores(&self) -> Vec<ClassScore> {
        scores_from_json(&self.scores_json)
    }
}

/// A frame with its image bytes (`None` when pruned or not kept) and its reviews, oldest first.
pub type FrameDetail = (FrameRow, Option<Vec<u8>>, Vec<ReviewRow>);

/// A human review.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct ReviewRow {
    /// Label.
    pub label: String,
    /// Defective in the reviewer's judgement.
    pub defective: bool,
    /// Who.
    pub reviewer: String,
    /// Free text.
    pub note: String,
    /// When, µs.
    pub time_us: i64,
}

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
}

/// A held leader lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Job name.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// Fencing token: grows with every change of holder.
    pub token: i64,
    /// Expiry, µs since the epoch.
    pub expires_us: i64,
}

/// What the retention job removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Images received longer ago than this are removed.
    pub max_age: Option<Duration>,
    /// The oldest images are removed until the stored images total at most this many bytes.
    pub max_bytes: Option<u64>,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Images removed.
    pub images: u64,
    /// Bytes removed.
    pub bytes: u64,
}

#[derive(FromRow)]
struct VerdictRow {
    cloud_model_version: String,
    label: String,
    defective: bool,
    defect_score: f64,
    scores_json: String,
    error: String,
    verdict_time_us: i64,
    frame_id: String,
}

/// Columns of [`FrameRow`], over `frames f JOIN verdicts v`.
const FRAME_COLUMNS: &str = "f.edge_id, f.seq, f.frame_id, f.site, f.line, f.camera_id, f.capture_time_us,
    f.reason, f.edge_score, f.edge_model_version, f.edge_local_action, f.deliveries, f.image_encoding,
    f.image IS NOT NULL AS has_image, v.label, v.defective, v.defect_score, v.cloud_model_version,
    v.verdict_time_us, v.scores_json,
    (f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != v.defective)) AS disagreement,
    COALESCE((SELECT r.label FROM reviews r WHERE r.edge_id = f.edge_id AND r.seq = f.seq
              ORDER BY r.id DESC LIMIT 1), '') AS review_label";

const INSERT_FRAME: &str = "INSERT INTO frames (edge_id, seq, frame_id, site, line, camera_id, capture_time_us, reason, edge_score, edge_model_version, image_encoding, image, image_bytes, received_us, edge_local_action)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     ON CONFLICT (edge_id, seq) DO UPDATE SET deliveries = frames.deliveries + 1,
       edge_local_action = CASE WHEN excluded.edge_local_action != '' THEN excluded.edge_local_action ELSE frames.edge_local_action END";

const INSERT_VERDICT: &str = "INSERT INTO verdicts (edge_id, seq, cloud_model_version, label, defective, defect_score, scores_json, error, verdict_time_us, worker_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (edge_id, seq) DO NOTHING";

const SELECT_VERDICT: &str = "SELECT v.cloud_model_version, v.label, v.defective, v.defect_score, v.scores_json, v.error, v.verdict_time_us, f.frame_id
     FROM verdicts v JOIN frames f ON f.edge_id = v.edge_id AND f.seq = v.seq
     WHERE v.edge_id = $1 AND v.seq = $2";

const COUNT_DELIVERY: &str = "UPDATE frames SET deliveries = deliveries + 1,
     edge_local_action = CASE WHEN $1 != '' THEN $1 ELSE edge_local_action END
     WHERE edge_id = $2 AND seq = $3";

const INSERT_MODEL_VERSION: &str =
    "INSERT INTO model_versions (tier, version, first_seen_us) VALUES ($1, $2, $3)
     ON CONFLICT (tier, version) DO NOTHING";

/// Takes or renews a lease; returns the row only if `$2` holds it afterwards.
const ACQUIRE_LEASE: &str = "INSERT INTO leases (name, holder, token, expires_us) VALUES ($1, $2, 1, $3)
     ON CONFLICT (name) DO UPDATE SET
       token = CASE WHEN leases.holder = excluded.holder AND leases.expires_us > $4 THEN leases.token ELSE leases.token + 1 END,
       holder = excluded.holder,
       expires_us = excluded.expires_us
     WHERE leases.holder = excluded.holder OR leases.expires_us <= $4
     RETURNING token";

/// Locks the lease row for the rest of the transaction if `$2` is still its token (the fence).
const CHECK_FENCE: &str = "UPDATE leases SET token = token WHERE name = $1 AND token = $2";

const UPSERT_PRESENCE: &str = "INSERT INTO edges (edge_id, site, line, online, last_seen_us, edge_model_version)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (edge_id) DO UPDATE SET site = excluded.site, line = excluded.line, online = excluded.online,
       last_seen_us = CASE WHEN excluded.last_seen_us > edges.last_seen_us THEN excluded.last_seen_us ELSE edges.last_seen_us END,
       edge_model_version = CASE WHEN excluded.edge_model_version != '' THEN excluded.edge_model_version ELSE edges.edge_model_version END";

const UPSERT_HEARTBEAT: &str = "INSERT INTO edges (edge_id, site, line, online, last_seen_us, backlog_frames, oldest_backlog_age_ms, edge_model_version)
     VALUES ($1, $2, $3, TRUE, $4, $5, $6, $7)
     ON CONFLICT (edge_id) DO UPDATE SET
       last_seen_us = CASE WHEN excluded.last_seen_us > edges.last_seen_us THEN excluded.last_seen_us ELSE edges.last_seen_us END,
       backlog_frames = excluded.backlog_frames, oldest_backlog_age_ms = excluded.oldest_backlog_age_ms,
       edge_model_version = CASE WHEN excluded.edge_model_version != '' THEN excluded.edge_model_version ELSE edges.edge_model_version END";

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the store at `url`: `sqlite://…` or
    /// `postgres://…` (also `postgresql://…`).
    pub async fn open(url: &str, keep_images: bool) -> Result<Self, StoreError> {
        let shown = redact(url);
        let err = |op| {
            let url = shown.clone();
            move |source| StoreError::Db { url, op, source }
        };
        let migrate_err = |source| StoreError::Migrate {
            url: shown.clone(),
            source,
        };
        let pool = match backend_of(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(err("open"))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .map_err(err("open"))?;
                sqlx::migrate!("./migrations/sqlite")
                    .run(&pool)
                    .await
                    .map_err(migrate_err)?;
                Pool::Sqlite(pool)
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(err("open"))?;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(err("open"))?;
                // Concurrent first starts of several workers: the migrator takes an advisory lock.
                sqlx::migrate!("./migrations/postgres")
                    .run(&pool)
                    .await
                    .map_err(migrate_err)?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self {
            pool,
            url: shown,
            keep_images,
            worker: String::new(),
        })
    }

    /// Records `worker_id` with every verdict this handle stores.
    pub fn with_worker(mut self, worker_id: &str) -> Self {
        self.worker = worker_id.to_string();
        self
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL, with any password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
        let url = self.url.clone();
        move |source| StoreError::Db { url, op, source }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.err("ping")))
    }

    /// The stored verdict of `(edge_id, seq)`, counting this delivery.
    /// A non-empty `edge_local_action` (the edge decided locally meanwhile) is recorded too.
    pub async fn lookup(
        &self,
        edge_id: &str,
        seq: u64,
        edge_local_action: &str,
    ) -> Result<Option<Verdict>, StoreError> {
        let row: Option<VerdictRow> = on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(self.err("lookup"))?;
            // The write comes first: on SQLite a transaction that reads and then writes cannot wait for the
            // write lock (it fails at once with "database is locked" when another worker wrote meanwhile),
            // while one that starts by writing waits up to the busy timeout. A frame row exists exactly when
            // its verdict does (both are stored in one transaction).
            let counted = sqlx::query(COUNT_DELIVERY)
                .bind(edge_local_action)
                .bind(edge_id)
                .bind(seq as i64)
                .execute(&mut *tx)
                .await
                .map_err(self.err("lookup"))?
                .rows_affected()
                > 0;
            let found: Option<VerdictRow> = if counted {
                sqlx::query_as(SELECT_VERDICT)
                    .bind(edge_id)
                    .bind(seq as i64)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(self.err("lookup"))?
            } else {
                None
            };
            tx.commit().await.map_err(self.err("lookup"))?;
            found
        });
        Ok(row.map(|r| to_verdict(edge_id, seq, r)))
    }

    /// Stores the frame and its verdict unless a verdict for `(edge_id, seq)` exists already.
    pub async fn store(
        &self,
        frame: &FrameEnvelope,
        verdict: &Verdict,
    ) -> Result<Stored, StoreError> {
        let scores = serde_json::to_string(
            &verdict
                .scores
                .iter()
                .map(|c| (c.class_name.as_str(), c.probability))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        let image = self.keep_images.then_some(&frame.image);
        let image_bytes = image.map_or(0, |i| i.len() as i64);
        let now = tierline_shared::time::now_us();
        let existing: Option<VerdictRow> = on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(self.err("store"))?;
            sqlx::query(INSERT_FRAME)
                .bind(&frame.edge_id)
                .bind(frame.seq as i64)
                .bind(&frame.frame_id)
                .bind(&frame.site)
                .bind(&frame.line)
                .bind(&frame.camera_id)
                .bind(frame.capture_time_us)
                .bind(frame.reason)
                .bind(f64::from(frame.edge_score))
                .bind(&frame.edge_model_version)
                .bind(frame.encoding)
                .bind(image)
                .bind(image_bytes)
                .bind(now)
                .bind(&frame.edge_local_action)
                .execute(&mut *tx)
                .await
                .map_err(self.err("store"))?;
            let new = sqlx::query(INSERT_VERDICT)
                .bind(&verdict.edge_id)
                .bind(verdict.seq as i64)
                .bind(&verdict.cloud_model_version)
                .bind(&verdict.label)
                .bind(verdict.defective)
                .bind(f64::from(verdict.defect_score))
                .bind(scores.as_str())
                .bind(&verdict.error)
                .bind(verdict.verdict_time_us)
                .bind(&self.worker)
                .execute(&mut *tx)
                .await
                .map_err(self.err("store"))?
                .rows_affected()
                == 1;
            let existing = if new {
                for (tier, version) in [
                    ("cloud", &verdict.cloud_model_version),
                    ("edge", &frame.edge_model_version),
                ] {
                    if !version.is_empty() {
                        sqlx::query(INSERT_MODEL_VERSION)
                            .bind(tier)
                            .bind(version)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(self.err("store"))?;
                    }
                }
                None
            } else {
                sqlx::query_as(SELECT_VERDICT)
                    .bind(&verdict.edge_id)
                    .bind(verdict.seq as i64)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(self.err("store"))?
            };
            tx.commit().await.map_err(self.err("store"))?;
            existing
        });
        Ok(match existing {
            None => Stored::New(verdict.clone()),
            Some(r) => Stored::Existing(to_verdict(&verdict.edge_id, verdict.seq, r)),
        })
    }

    /// Number of stored verdicts.
    pub async fn verdict_count(&self) -> Result<u64, StoreError> {
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM verdicts"
        )
        .fetch_one(pool)
        .await
        .map_err(self.err("count"))?);
        Ok(n as u64)
    }

    /// Frames with verdicts, newest capture first, filtered and paged.
    pub async fn list_frames(&self, f: &FrameFilter) -> Result<Vec<FrameRow>, StoreError> {
        let sql = format!(
            "SELECT {FRAME_COLUMNS} FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.seq = f.seq
             WHERE ($1 = '' OR f.edge_id = $1) AND ($2 = '' OR f.line = $2) AND ($3 = '' OR v.label = $3)
               AND ($4 = 0 OR f.capture_time_us >= $4) AND ($5 = 0 OR f.capture_time_us < $5)
               AND (NOT $6 OR (f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != v.defective)))
               AND (NOT $7 OR NOT EXISTS (SELECT 1 FROM reviews r WHERE r.edge_id = f.edge_id AND r.seq = f.seq))
               AND (NOT $8 OR f.capture_time_us < $9
                    OR (f.capture_time_us = $9 AND (f.edge_id < $10 OR (f.edge_id = $10 AND f.seq < $11))))
             ORDER BY f.capture_time_us DESC, f.edge_id DESC, f.seq DESC
             LIMIT $12"
        );
        let (after_t, after_edge, after_seq) = f.after.clone().unwrap_or_default();
        let limit = i64::from(f.limit.clamp(1, 1000));
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(&f.edge_id)
            .bind(&f.line)
            .bind(&f.label)
            .bind(f.since_us)
            .bind(f.until_us)
            .bind(f.disagreement)
            .bind(f.unreviewed)
            .bind(f.after.is_some())
            .bind(after_t)
            .bind(after_edge.as_str())
            .bind(after_seq as i64)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(self.err("list frames")))
    }

    /// One frame with its verdict, its image bytes (`None` when pruned or not kept) and its reviews.
    pub async fn get_frame(
        &self,
        edge_id: &str,
        seq: u64,
    ) -> Result<Option<FrameDetail>, StoreError> {
        let sql = format!(
            "SELECT {FRAME_COLUMNS} FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.seq = f.seq
             WHERE f.edge_id = $1 AND f.seq = $2"
        );
        on_pool!(self, |pool| {
            let row: Option<FrameRow> = sqlx::query_as(&sql)
                .bind(edge_id)
                .bind(seq as i64)
                .fetch_optional(pool)
                .await
                .map_err(self.err("get frame"))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let image: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT image FROM frames WHERE edge_id = $1 AND seq = $2")
                    .bind(edge_id)
                    .bind(seq as i64)
                    .fetch_one(pool)
                    .await
                    .map_err(self.err("get frame"))?;
            let reviews: Vec<ReviewRow> = sqlx::query_as(
                "SELECT label, defective, reviewer, note, time_us FROM reviews
                 WHERE edge_id = $1 AND seq = $2 ORDER BY id",
            )
            .bind(edge_id)
            .bind(seq as i64)
            .fetch_all(pool)
            .await
            .map_err(self.err("get frame"))?;
            Ok(Some((row, image, reviews)))
        })
    }

    /// Records a human review of a stored frame.
    pub async fn submit_review(
        &self,
        edge_id: &str,
        seq: u64,
        review: &ReviewRow,
    ) -> Result<(), StoreError> {
        let exists: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT seq FROM verdicts WHERE edge_id = $1 AND seq = $2"
        )
        .bind(edge_id)
        .bind(seq as i64)
        .fetch_optional(pool)
        .await
        .map_err(self.err("submit review"))?);
        if exists.is_none() {
            return Err(StoreError::NotFound {
                edge_id: edge_id.into(),
                seq,
            });
        }
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO reviews (edge_id, seq, label, defective, reviewer, note, time_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(edge_id)
        .bind(seq as i64)
        .bind(&review.label)
        .bind(review.defective)
        .bind(&review.reviewer)
        .bind(&review.note)
        .bind(review.time_us)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(self.err("submit review"))?);
        Ok(())
    }

    /// Verdicts stored with `verdict_time_us > since_us`, oldest first, at most `limit`.
    pub async fn verdicts_since(
        &self,
        since_us: i64,
        edge_id: &str,
        limit: u32,
    ) -> Result<Vec<FrameRow>, StoreError> {
        let sql = format!(
            "SELECT {FRAME_COLUMNS} FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.seq = f.seq
             WHERE v.verdict_time_us > $1 AND ($2 = '' OR v.edge_id = $2)
             ORDER BY v.verdict_time_us, v.edge_id, v.seq LIMIT $3"
        );
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(since_us)
            .bind(edge_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(self.err("watch verdicts")))
    }

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
                    edge_model_version FROM edges ORDER BY edge_id"
        )
        .fetch_all(pool)
        .await
        .map_err(self.err("list edges"))
        })
    }

    /// Model versions seen per tier (`edge` or `cloud`), in first-seen order.
    pub async fn model_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT tier, version FROM model_versions ORDER BY first_seen_us, tier, version"
        )
        .fetch_all(pool)
        .await
        .map_err(self.err("model versions")))
    }

    /// Takes the lease `name` for `holder` until `now_us + ttl`, or renews it if `holder` has it.
    /// `None` when someone else holds an unexpired lease.
    pub async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now_us: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let expires_us = now_us.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let token: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(ACQUIRE_LEASE)
            .bind(name)
            .bind(holder)
            .bind(expires_us)
            .bind(now_us)
            .fetch_optional(pool)
            .await
            .map_err(self.err("acquire lease"))?);
        Ok(token.map(|token| Lease {
            name: name.into(),
            holder: holder.into(),
            token,
            expires_us,
        }))
    }

    /// Gives a lease up early (if it is still ours), so another worker can take it without waiting.
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE leases SET expires_us = 0 WHERE name = $1 AND token = $2"
        )
        .bind(&lease.name)
        .bind(lease.token)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(self.err("release lease"))?);
        Ok(())
    }

    /// Retention: clears image bytes of frames received before `now_us - max_age`, then of the oldest frames
    /// until the stored images fit `max_bytes`. Frames and verdicts stay. Runs only while `lease` is current:
    /// the lease row is locked and its token checked in the same transaction, so a worker that lost the lease
    /// gets [`StoreError::Fenced`] and changes nothing.
    pub async fn prune_images(
        &self,
        lease: &Lease,
        policy: &RetentionPolicy,
        now_us: i64,
    ) -> Result<Pruned, StoreError> {
        let fenced = || StoreError::Fenced {
            name: lease.name.clone(),
            token: lease.token,
        };
        let cutoff = policy
            .max_age
            .map(|age| now_us.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)));
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(self.err("retention"))?;
            let current = sqlx::query(CHECK_FENCE)
                .bind(&lease.name)
                .bind(lease.token)
                .execute(&mut *tx)
                .await
                .map_err(self.err("retention"))?
                .rows_affected()
                == 1;
            if !current {
                return Err(fenced());
            }
            let mut pruned = Pruned::default();
            if let Some(cutoff) = cutoff {
                let (n, bytes): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(image_bytes), 0) AS BIGINT) FROM frames
                     WHERE image IS NOT NULL AND received_us < $1",
                )
                .bind(cutoff)
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err("retention"))?;
                sqlx::query(
                    "UPDATE frames SET image = NULL, image_pruned_us = $2
                     WHERE image IS NOT NULL AND received_us < $1",
                )
                .bind(cutoff)
                .bind(now_us)
                .execute(&mut *tx)
                .await
                .map_err(self.err("retention"))?;
                pruned.images += n as u64;
                pruned.bytes += bytes as u64;
            }
            if let Some(max_bytes) = policy.max_bytes {
                let total: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(image_bytes), 0) AS BIGINT) FROM frames WHERE image IS NOT NULL",
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err("retention"))?;
                let mut excess = (total as u64).saturating_sub(max_bytes);
                while excess > 0 {
                    let oldest: Vec<(String, i64, i64)> = sqlx::query_as(
                        "SELECT edge_id, seq, image_bytes FROM frames WHERE image IS NOT NULL
                         ORDER BY received_us, edge_id, seq LIMIT 256",
                    )
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(self.err("retention"))?;
                    if oldest.is_empty() {
                        break;
                    }
                    for (edge_id, seq, bytes) in oldest {
                        if excess == 0 {
                            break;
                        }
                        sqlx::query(
                            "UPDATE frames SET image = NULL, image_pruned_us = $3 WHERE edge_id = $1 AND seq = $2",
                        )
                        .bind(&edge_id)
                        .bind(seq)
                        .bind(now_us)
                        .execute(&mut *tx)
                        .await
                        .map_err(self.err("retention"))?;
                        pruned.images += 1;
                        pruned.bytes += bytes as u64;
                        excess = excess.saturating_sub(bytes as u64);
                    }
                }
            }
            tx.commit().await.map_err(self.err("retention"))?;
            Ok(pruned)
        })
    }

    /// Closes the store.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

/// The backend a URL names.
pub fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::Unsupported(redact(url)))
    }
}

/// `url` with the password of its user info replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

fn scores_from_json(json: &str) -> Vec<ClassScore> {
    let scores: Vec<(String, f32)> = serde_json::from_str(json).unwrap_or_default();
    scores
        .into_iter()
        .map(|(class_name, probability)| ClassScore {
            class_name,
            probability,
        })
        .collect()
}

fn to_verdict(edge_id: &str, seq: u64, r: VerdictRow) -> Verdict {
    Verdict {
        protocol_version: wire::PROTOCOL_VERSION,
        edge_id: edge_id.into(),
        seq,
        frame_id: r.frame_id,
        cloud_model_version: r.cloud_model_version,
        scores: scores_from_json(&r.scores_json),
        label: r.label,
        defective: r.defective,
        defect_score: r.defect_score as f32,
        verdict_time_us: r.verdict_time_us,
        error: r.error,
        redelivery: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_schemes_checked() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/t"),
            "postgres://u:***@db:5432/t"
        );
        assert_eq!(redact("postgres://u@db/t"), "postgres://u@db/t");
        assert_eq!(backend_of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgresql://h/d").unwrap(), Backend::Postgres);
        let e = backend_of("mysql://a:pw@h/d").unwrap_err().to_string();
        assert!(e.contains("mysql://a:***@h/d") && !e.contains("pw"), "{e}");
    }
}
