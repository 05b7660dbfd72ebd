//! Review claims: the frame each reviewer has open in the console. A claimed frame is handed to nobody else
//! until its claim is released (a review, or the reviewer moving on to another frame) or expires.
//!
//! Taking the next frame is one transaction: the candidates are read in queue order, skipping frames another
//! reviewer holds (PostgreSQL also skips candidate rows another transaction has locked, `FOR UPDATE SKIP
//! LOCKED`; SQLite serializes writers with `BEGIN IMMEDIATE`), then claimed by a conditional upsert that
//! succeeds only when the frame is unclaimed, its claim expired, or it is already the reviewer's own. So even
//! two transactions that read the same candidate cannot both claim it.

use super::frames::FRAME_COLUMNS;
use super::frames::{FROM_FILTERED, bind_filter};
use super::{FrameFilter, FrameRow, Pool, Store, StoreError};

/// Who holds a frame, as [`Store::claim`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The reviewer holds it now (newly or again).
    Mine,
    /// Another reviewer holds it until `expires_us`.
    HeldBy {
        /// The other reviewer.
        reviewer: String,
        /// When the claim lapses, µs.
        expires_us: i64,
    },
}

/// Candidates read per attempt to claim the next frame (SQLite), and attempts (PostgreSQL).
const CANDIDATES: i64 = 16;

/// Claims `(edge_id, incarnation, seq)` for `reviewer` until `expires_us` unless another reviewer holds a
/// claim that has not expired at `now_us`; returns who holds it afterwards.
const UPSERT_CLAIM: &str = "INSERT INTO review_claims (edge_id, incarnation, seq, reviewer, expires_us)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (edge_id, incarnation, seq) DO UPDATE SET reviewer = excluded.reviewer, expires_us = excluded.expires_us
     WHERE review_claims.expires_us <= $6 OR review_claims.reviewer = excluded.reviewer
     RETURNING reviewer";

/// A reviewer holds one frame at a time: the claims it held on other frames end.
const RELEASE_OTHERS: &str = "DELETE FROM review_claims
     WHERE reviewer = $1 AND NOT (edge_id = $2 AND incarnation = $3 AND seq = $4)";

impl Store {
    /// Claims for `reviewer`, until `now_us + ttl_us`, the first frame of the review queue under `filter`
    /// (only frames nobody reviewed) that no other reviewer holds, and
    /// releases the reviewer's other claims. `None` when no such frame is left. The queue's order: the most
    /// urgent first ([`super::frames::Urgency`]), the newest first within each.
    pub async fn claim_next(
        &self,
        reviewer: &str,
        filter: &FrameFilter,
        now_us: i64,
        ttl_us: i64,
    ) -> Result<Option<FrameRow>, StoreError> {
        let filter = FrameFilter {
            unreviewed: true,
            ..filter.clone()
        };
        // PostgreSQL locks one candidate at a time, so a concurrent transaction skips only the frame being
        // claimed, not a whole page of them, and the queue's order holds across reviewers.
        let (begin, lock, batch) = match self.pool {
            Pool::Sqlite(_) => ("BEGIN IMMEDIATE", "", CANDIDATES),
            Pool::Postgres(_) => ("BEGIN", "FOR UPDATE OF f SKIP LOCKED", 1),
        };
        let sql = format!(
            "SELECT {FRAME_COLUMNS} {FROM_FILTERED}
               AND NOT EXISTS (SELECT 1 FROM review_claims c
                   WHERE c.edge_id = f.edge_id AND c.incarnation = f.incarnation AND c.seq = f.seq
                     AND c.expires_us > $12 AND c.reviewer != $13)
             ORDER BY urgency, f.capture_time_us DESC, f.edge_id DESC, f.seq DESC
             LIMIT $14 {lock}"
        );
        let op = "claim next frame";
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await.map_err(self.err(op))?;
            let mut claimed = None;
            // A candidate read before another reviewer's claim committed fails its upsert; the next read (a
            // new statement sees that claim) skips it.
            for _ in 0..CANDIDATES {
                let candidates: Vec<FrameRow> = bind_filter(sqlx::query_as(&sql), &filter)
                    .bind(now_us)
                    .bind(reviewer)
                    .bind(batch)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(self.err(op))?;
                if candidates.is_empty() {
                    break;
                }
                for row in candidates {
                    let holder: Option<String> = sqlx::query_scalar(UPSERT_CLAIM)
                        .bind(&row.edge_id)
                        .bind(&row.incarnation)
                        .bind(row.seq)
                        .bind(reviewer)
                        .bind(now_us.saturating_add(ttl_us))
                        .bind(now_us)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(self.err(op))?;
                    if holder.is_some() {
                        claimed = Some(row);
                        break;
                    }
                }
                if claimed.is_some() {
                    break;
                }
            }
            if let Some(row) = &claimed {
                sqlx::query(RELEASE_OTHERS)
                    .bind(reviewer)
                    .bind(&row.edge_id)
                    .bind(&row.incarnation)
                    .bind(row.seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err(op))?;
            }
            tx.commit().await.map_err(self.err(op))?;
            Ok(claimed)
        })
    }

    /// Claims the frame `row` names for `reviewer` until `now_us + ttl_us`, unless another reviewer holds it;
    /// on success the reviewer's other claims end.
    pub async fn claim(
        &self,
        reviewer: &str,
        row: &FrameRow,
        now_us: i64,
        ttl_us: i64,
    ) -> Result<Claim, StoreError> {
        let begin = match self.pool {
            Pool::Sqlite(_) => "BEGIN IMMEDIATE",
            Pool::Postgres(_) => "BEGIN",
        };
        let op = "claim frame";
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await.map_err(self.err(op))?;
            let holder: Option<String> = sqlx::query_scalar(UPSERT_CLAIM)
                .bind(&row.edge_id)
                .bind(&row.incarnation)
                .bind(row.seq)
                .bind(reviewer)
                .bind(now_us.saturating_add(ttl_us))
                .bind(now_us)
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err(op))?;
            let claim = if holder.is_some() {
                sqlx::query(RELEASE_OTHERS)
                    .bind(reviewer)
                    .bind(&row.edge_id)
                    .bind(&row.incarnation)
                    .bind(row.seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err(op))?;
                Claim::Mine
            } else {
                let (reviewer, expires_us): (String, i64) = sqlx::query_as(
                    "SELECT reviewer, expires_us FROM review_claims WHERE edge_id = $1 AND incarnation = $2 AND seq = $3",
                )
                .bind(&row.edge_id)
                .bind(&row.incarnation)
                .bind(row.seq)
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err(op))?;
                Claim::HeldBy {
                    reviewer,
                    expires_us,
                }
            };
            tx.commit().await.map_err(self.err(op))?;
            Ok(claim)
        })
    }

    /// Ends `reviewer`'s claim on the frame `row` names (after a review).
    pub async fn release(&self, reviewer: &str, row: &FrameRow) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
            "DELETE FROM review_claims WHERE edge_id = $1 AND incarnation = $2 AND seq = $3 AND reviewer = $4"
        )
        .bind(&row.edge_id)
        .bind(&row.incarnation)
        .bind(row.seq)
        .bind(reviewer)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(self.err("release claim"))
        })
    }
}

/// A live claim.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimRow {
    /// Edge id.
    pub edge_id: String,
    /// Outbox incarnation.
    pub incarnation: String,
    /// Sequence number.
    pub seq: i64,
    /// Who holds it.
    pub reviewer: String,
}

impl Store {
    /// The claims that have not expired at `now_us`.
    pub async fn claims(&self, now_us: i64) -> Result<Vec<ClaimRow>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT edge_id, incarnation, seq, reviewer FROM review_claims WHERE expires_us > $1"
        )
        .bind(now_us)
        .fetch_all(pool)
        .await
        .map_err(self.err("list claims")))
    }
}
