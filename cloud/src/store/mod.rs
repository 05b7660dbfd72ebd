//! Cloud storage behind one interface with two sqlx backends: SQLite (the default, embedded) and PostgreSQL
//! (several workers sharing one database). The URL scheme picks the backend: `sqlite://…` or `postgres://…`.
//! Migrations live in `migrations/sqlite/` and `migrations/postgres/` and create the same tables.
//!
//! What the store holds, one file of this module per domain:
//! - `frames`: every frame received, one row per `(edge_id, incarnation, seq)` however often it was delivered, with its
//!   image bytes (or the key of its image object, `images` module) until retention clears them; listed for review by [`Store::list_frames`].
//! - `verdicts`: the cloud's verdict of each frame ([`Store::store`], [`Store::lookup`]).
//! - `reviews`: human labels, a history per frame ([`Store::submit_review`]).
//! - `review_claims`: the frame each reviewer has open in the console ([`Store::claim_next`]).
//! - `edges`: one row per edge, from its presence and heartbeats ([`Store::list_edges`]).
//! - `model_versions`: the model versions each tier has used ([`Store::model_versions`]).
//! - `model_bundles`, `model_targets`, `model_events`: the model registry (`bundles` module).
//! - audit samples per edge and prescreen version ([`Store::audit_counts`]), for the live miss-rate estimate.
//! - `leases`: leader leases of jobs that must run once ([`Store::try_acquire_lease`]).
//! - the `disagreements` view: frames whose edge decided locally against the later verdict.
//!
//! Contract (checked against both backends by `tests/tests/store_contract.rs`):
//! - Storing is idempotent: the key is `(edge_id, incarnation, seq)` (the incarnation names the edge outbox
//!   that numbered the frame), and there is exactly one verdict per key. A frame delivered again with the
//!   same image is counted in `frames.deliveries` and answered with the verdict already stored, never stored
//!   twice. One delivered under a stored key with another image is a different frame, stored beside it
//!   (`verdicts` module). Frame and verdict rows carry the SHA-256 of the image.
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

use sqlx::SqlitePool;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

/// Runs the same code against whichever pool is open.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// In transaction `$tx` of `$store`, under lease `$lease`: locks the lease row if its token is still the
/// lease's (the fence, `lease::CHECK_FENCE`), else returns [`StoreError::Fenced`] from the enclosing
/// function; `$op` names the operation in database errors.
macro_rules! hold_fence {
    ($store:expr, $tx:expr, $lease:expr, $op:expr) => {{
        let held = sqlx::query(super::lease::CHECK_FENCE)
            .bind(&$lease.name)
            .bind($lease.token)
            .execute(&mut *$tx)
            .await
            .map_err($store.err($op))?
            .rows_affected()
            == 1;
        if !held {
            return Err(StoreError::Fenced {
                name: $lease.name.clone(),
                token: $lease.token,
            });
        }
    }};
}

mod audits;
mod bundles;
mod claims;
mod edges;
mod frames;
mod images;
mod lease;
mod models;
mod retention;
mod reviews;
mod rollouts;
mod verdicts;

pub use audits::AuditCount;
pub use bundles::{BundleRow, ModelEvent, NewBundle, Published, RegistryRule, TargetRow};
pub use claims::{Claim, ClaimRow};
pub use edges::{CameraView, EdgeRow};
pub use frames::{FrameDetail, FrameFilter, FrameRow, LOW_CONFIDENCE, Urgency};
pub use images::{Images, ImagesError};
pub use lease::Lease;
pub use retention::{Pruned, RetentionPolicy};
pub use reviews::ReviewRow;
pub use rollouts::{NewRollout, RolloutRow};
pub use verdicts::Stored;

/// Errors from the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The image storage failed.
    #[error(transparent)]
    Images(#[from] ImagesError),
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

/// The cloud store.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: String,
    keep_images: bool,
    worker: String,
    images: Images,
}

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
            images: Images::Database,
        })
    }

    /// Keeps images in `images` (the default is the database itself).
    pub fn with_images(mut self, images: Images) -> Self {
        self.images = images;
        self
    }

    /// Where images are kept.
    pub fn images(&self) -> &Images {
        &self.images
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

    /// The statement that opens a transaction which reads before it writes: `BEGIN IMMEDIATE` on SQLite (a
    /// deferred transaction that read first cannot wait for the write lock and fails at once with "database
    /// is locked" when another connection wrote meanwhile; an immediate one waits up to the busy timeout),
    /// `BEGIN` on PostgreSQL.
    fn begin_write(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "BEGIN IMMEDIATE",
            Pool::Postgres(_) => "BEGIN",
        }
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

pub use tierline_shared::redact::redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_checked_and_refusals_hide_the_password() {
        assert_eq!(backend_of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgresql://h/d").unwrap(), Backend::Postgres);
        let e = backend_of("mysql://a:pw@h/d").unwrap_err().to_string();
        assert!(e.contains("mysql://a:***@h/d") && !e.contains("pw"), "{e}");
    }
}
