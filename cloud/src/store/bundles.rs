//! The model registry: signed model bundles (`model_bundles`), what each target should run
//! (`model_targets`) and every change with who asked for it (`model_events`).
//!
//! The store keeps what it is given; checking signatures is the registry's job (`crate::registry`), done
//! before anything reaches these tables. Contract:
//! - A bundle is stored once under its SHA-256; publishing the same archive again changes nothing.
//! - A model name's sequence numbers are unique: another archive under a sequence already taken is refused.
//! - A target's change records the bundle it replaces (`previous`), and every change is an event.

use super::{Lease, Pool, Store, StoreError};

/// A published bundle, without its archive.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BundleRow {
    /// The archive's SHA-256.
    pub sha256: String,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Bundle sequence.
    pub sequence: i64,
    /// Archive size, bytes.
    pub size: i64,
    /// Id of the key that signed it.
    pub key_id: String,
    /// The signed statement (JSON envelope).
    pub signed: String,
    /// Who published it.
    pub published_by: String,
    /// When, µs.
    pub published_us: i64,
}

/// What a target should run for one model name.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TargetRow {
    /// `edges/<group>` (the store takes any name; the registry checks it).
    pub target: String,
    /// Model name.
    pub name: String,
    /// The bundle to run.
    pub sha256: String,
    /// The bundle it ran before the last change.
    pub previous: Option<String>,
    /// Whether the last change was a rollback (the bundle may have a lower sequence than the one before).
    pub rollback: bool,
    /// Who made the last change.
    pub changed_by: String,
    /// When, µs.
    pub changed_us: i64,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelEvent {
    /// Order of recording.
    pub id: i64,
    /// When, µs.
    pub at_us: i64,
    /// Who or what caused it (a reviewer, an edge id, the rollout controller).
    pub actor: String,
    /// What it concerns: a target, an edge, a worker.
    pub subject: String,
    /// The bundle concerned ('' if none).
    pub sha256: String,
    /// What happened: `published`, `targeted`, `rolled-back`, `downloaded`, `verified`, `active`, `rejected`, ….
    pub event: String,
    /// Why, or other detail.
    pub detail: String,
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The bundle is new.
    New,
    /// The same archive was published before; nothing changed.
    Known,
}

/// Errors of the registry's rules (beside database errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryRule {
    /// Another archive already holds this model name and sequence.
    #[error(
        "{name} sequence {sequence} is already bundle {existing}; sign the new bundle with a higher sequence"
    )]
    SequenceTaken {
        /// Model name.
        name: String,
        /// The sequence.
        sequence: i64,
        /// The bundle holding it.
        existing: String,
    },
    /// No bundle with this hash (or prefix) is published.
    #[error("no published bundle matches {0}; list them with `tierline-review models list`")]
    UnknownBundle(String),
    /// The archive is published already, under another sequence.
    #[error(
        "this archive is published already as {name} sequence {sequence}; a new sequence needs a changed bundle (another version in the manifest)"
    )]
    AlreadyPublished {
        /// Model name.
        name: String,
        /// Its sequence.
        sequence: i64,
    },
    /// A hash prefix matches several bundles.
    #[error("{0} matches several bundles; give more of the hash")]
    Ambiguous(String),
    /// Another rollout of this model to this group has not finished.
    #[error(
        "rollout {0} of this model to this group has not finished; wait for it, or pause, abort or roll it back \
         (`tierline-review rollout`)"
    )]
    RolloutActive(i64),
    /// No rollout has this id.
    #[error("no rollout {0}; list them with `tierline-review rollout list`")]
    UnknownRollout(i64),
    /// The rollout's state does not allow the change.
    #[error("rollout {id} is {state}: {problem}")]
    RolloutState {
        /// The rollout.
        id: i64,
        /// Its state.
        state: String,
        /// What cannot be done.
        problem: String,
    },
}

/// A bundle to store.
#[derive(Debug, Clone, Copy)]
pub struct NewBundle<'a> {
    /// The archive's SHA-256 (checked by the caller).
    pub sha256: &'a str,
    /// Model name.
    pub name: &'a str,
    /// Model version.
    pub version: &'a str,
    /// Bundle sequence.
    pub sequence: i64,
    /// Signing key id.
    pub key_id: &'a str,
    /// Signed statement envelope.
    pub signed: &'a str,
    /// The archive.
    pub data: &'a [u8],
}

const BUNDLE_COLUMNS: &str =
    "sha256, name, version, sequence, size, key_id, signed, published_by, published_us";

pub(super) const INSERT_EVENT: &str = "INSERT INTO model_events (at_us, actor, subject, sha256, event, detail) VALUES ($1, $2, $3, $4, $5, $6)";

impl Store {
    /// Stores a bundle published by `actor` at `now_us` (an event records it). Idempotent on the archive's
    /// hash; refused with [`RegistryRule::SequenceTaken`] when another archive holds the name and sequence.
    pub async fn publish_bundle(
        &self,
        b: NewBundle<'_>,
        actor: &str,
        now_us: i64,
    ) -> Result<Result<Published, RegistryRule>, StoreError> {
        let op = "publish bundle";
        on_pool!(self, |pool| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(self.err(op))?;
            let same: Option<(String, i64)> =
                sqlx::query_as("SELECT name, sequence FROM model_bundles WHERE sha256 = $1")
                    .bind(b.sha256)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(self.err(op))?;
            if let Some((name, sequence)) = same
                && sequence != b.sequence
            {
                return Ok(Err(RegistryRule::AlreadyPublished { name, sequence }));
            }
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT sha256 FROM model_bundles WHERE name = $1 AND sequence = $2",
            )
            .bind(b.name)
            .bind(b.sequence)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.err(op))?;
            match holder {
                Some(existing) if existing == b.sha256 => return Ok(Ok(Published::Known)),
                Some(existing) => {
                    return Ok(Err(RegistryRule::SequenceTaken {
                        name: b.name.into(),
                        sequence: b.sequence,
                        existing,
                    }));
                }
                None => {}
            }
            let inserted = sqlx::query(
                "INSERT INTO model_bundles
                   (sha256, name, version, sequence, size, key_id, signed, data, published_by, published_us)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT DO NOTHING",
            )
            .bind(b.sha256)
            .bind(b.name)
            .bind(b.version)
            .bind(b.sequence)
            .bind(b.data.len() as i64)
            .bind(b.key_id)
            .bind(b.signed)
            .bind(b.data)
            .bind(actor)
            .bind(now_us)
            .execute(&mut *tx)
            .await
            .map_err(self.err(op))?
            .rows_affected();
            if inserted == 0 {
                // A concurrent publisher stored it (or took the sequence) first: report what is there now.
                tx.rollback().await.map_err(self.err(op))?;
                let now = self.bundle(b.sha256).await?;
                return Ok(match now {
                    Some(_) => Ok(Published::Known),
                    None => Err(RegistryRule::SequenceTaken {
                        name: b.name.into(),
                        sequence: b.sequence,
                        existing: "(published concurrently)".into(),
                    }),
                });
            }
            sqlx::query(INSERT_EVENT)
                .bind(now_us)
                .bind(actor)
                .bind(b.name)
                .bind(b.sha256)
                .bind("published")
                .bind(format!("{} {} sequence {}", b.name, b.version, b.sequence))
                .execute(&mut *tx)
                .await
                .map_err(self.err(op))?;
            tx.commit().await.map_err(self.err(op))?;
            Ok(Ok(Published::New))
        })
    }

    /// The bundle with this exact hash.
    pub async fn bundle(&self, sha256: &str) -> Result<Option<BundleRow>, StoreError> {
        let sql = format!("SELECT {BUNDLE_COLUMNS} FROM model_bundles WHERE sha256 = $1");
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(sha256)
            .fetch_optional(pool)
            .await
            .map_err(self.err("read bundle")))
    }

    /// The one bundle whose hash starts with `prefix` (at least 8 hex digits are sensible).
    pub async fn find_bundle(
        &self,
        prefix: &str,
    ) -> Result<Result<BundleRow, RegistryRule>, StoreError> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Err(RegistryRule::UnknownBundle(prefix)));
        }
        let sql = format!(
            "SELECT {BUNDLE_COLUMNS} FROM model_bundles WHERE substr(sha256, 1, $1) = $2 LIMIT 2"
        );
        let rows: Vec<BundleRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(prefix.len() as i32)
            .bind(&prefix)
            .fetch_all(pool)
            .await
            .map_err(self.err("find bundle"))?);
        let mut rows = rows.into_iter();
        Ok(match (rows.next(), rows.next()) {
            (Some(row), None) => Ok(row),
            (None, _) => Err(RegistryRule::UnknownBundle(prefix)),
            (Some(_), Some(_)) => Err(RegistryRule::Ambiguous(prefix)),
        })
    }

    /// Published bundles, newest sequence first per name.
    pub async fn list_bundles(&self) -> Result<Vec<BundleRow>, StoreError> {
        let sql =
            format!("SELECT {BUNDLE_COLUMNS} FROM model_bundles ORDER BY name, sequence DESC");
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .fetch_all(pool)
            .await
            .map_err(self.err("list bundles")))
    }

    /// Up to `len` bytes of a bundle's archive from `start` (a download, resumable by range). `None` when no
    /// such bundle is published; empty past its end.
    pub async fn bundle_bytes(
        &self,
        sha256: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // substr counts from 1 on blobs in SQLite and on bytea in PostgreSQL alike, with 32-bit arguments in
        // PostgreSQL (bundles are limited to `crate::registry::MAX_BUNDLE`, 256 MiB).
        let from = i32::try_from(start.saturating_add(1)).unwrap_or(i32::MAX);
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT substr(data, $2, $3) FROM model_bundles WHERE sha256 = $1"
        )
        .bind(sha256)
        .bind(from)
        .bind(len)
        .fetch_optional(pool)
        .await
        .map_err(self.err("read bundle bytes")))
    }

    /// Sets what `target` should run for the bundle's model name, recording the bundle it replaces and an
    /// event (`targeted`, or `rolled-back` when `rollback`). Returns the new row.
    pub async fn set_target(
        &self,
        target: &str,
        sha256: &str,
        rollback: bool,
        actor: &str,
        detail: &str,
        now_us: i64,
    ) -> Result<Result<TargetRow, RegistryRule>, StoreError> {
        self.set_target_guarded(None, target, sha256, rollback, actor, detail, now_us)
            .await
    }

    /// [`Store::set_target`] for a leader: refused with [`StoreError::Fenced`] (nothing changed) unless
    /// `lease` is still held.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_target_fenced(
        &self,
        lease: &Lease,
        target: &str,
        sha256: &str,
        rollback: bool,
        actor: &str,
        detail: &str,
        now_us: i64,
    ) -> Result<Result<TargetRow, RegistryRule>, StoreError> {
        self.set_target_guarded(Some(lease), target, sha256, rollback, actor, detail, now_us)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn set_target_guarded(
        &self,
        fence: Option<&Lease>,
        target: &str,
        sha256: &str,
        rollback: bool,
        actor: &str,
        detail: &str,
        now_us: i64,
    ) -> Result<Result<TargetRow, RegistryRule>, StoreError> {
        let Some(bundle) = self.bundle(sha256).await? else {
            return Ok(Err(RegistryRule::UnknownBundle(sha256.into())));
        };
        let op = "set model target";
        on_pool!(self, |pool| {
            let mut tx = pool
                .begin_with(self.begin_write())
                .await
                .map_err(self.err(op))?;
            if let Some(lease) = fence {
                hold_fence!(self, tx, lease, op);
            }
            let row: TargetRow = sqlx::query_as(
                "INSERT INTO model_targets (target, name, sha256, previous, rollback, changed_by, changed_us)
                 VALUES ($1, $2, $3, NULL, $4, $5, $6)
                 ON CONFLICT (target, name) DO UPDATE SET
                   previous = CASE WHEN model_targets.sha256 = excluded.sha256
                                   THEN model_targets.previous ELSE model_targets.sha256 END,
                   sha256 = excluded.sha256, rollback = excluded.rollback,
                   changed_by = excluded.changed_by, changed_us = excluded.changed_us
                 RETURNING target, name, sha256, previous, rollback, changed_by, changed_us",
            )
            .bind(target)
            .bind(&bundle.name)
            .bind(sha256)
            .bind(rollback)
            .bind(actor)
            .bind(now_us)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.err(op))?;
            sqlx::query(INSERT_EVENT)
                .bind(now_us)
                .bind(actor)
                .bind(target)
                .bind(sha256)
                .bind(if rollback { "rolled-back" } else { "targeted" })
                .bind(detail)
                .execute(&mut *tx)
                .await
                .map_err(self.err(op))?;
            tx.commit().await.map_err(self.err(op))?;
            Ok(Ok(row))
        })
    }

    /// Every target and what it should run.
    pub async fn model_targets(&self) -> Result<Vec<TargetRow>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT target, name, sha256, previous, rollback, changed_by, changed_us
             FROM model_targets ORDER BY target, name"
        )
        .fetch_all(pool)
        .await
        .map_err(self.err("list model targets")))
    }

    /// Records an event reported by a machine or a controller.
    pub async fn record_model_event(
        &self,
        actor: &str,
        subject: &str,
        sha256: &str,
        event: &str,
        detail: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(INSERT_EVENT)
            .bind(now_us)
            .bind(actor)
            .bind(subject)
            .bind(sha256)
            .bind(event)
            .bind(detail)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.err("record model event")))
    }

    /// The latest `limit` events (of `subject` when given), oldest first.
    pub async fn model_events(
        &self,
        subject: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ModelEvent>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, at_us, actor, subject, sha256, event, detail FROM (
               SELECT id, at_us, actor, subject, sha256, event, detail FROM model_events
               WHERE ($1 IS NULL OR subject = $1) ORDER BY id DESC LIMIT $2) latest
             ORDER BY id"
        )
        .bind(subject)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(self.err("list model events")))
    }
}
