//! Reviews: human labels of stored frames, kept as a history per frame; the latest counts (it is the
//! `review_label` of a [`FrameRow`](super::FrameRow)).

use super::{Pool, Store, StoreError};
use sqlx::FromRow;

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

impl Store {
    /// Records a human review of a stored frame (when several outbox incarnations numbered a frame `seq`, of
    /// the one received last, as [`Store::get_frame`] shows it).
    pub async fn submit_review(
        &self,
        edge_id: &str,
        seq: u64,
        review: &ReviewRow,
    ) -> Result<(), StoreError> {
        let incarnation: Option<String> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT f.incarnation FROM frames f JOIN verdicts v
               ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq
             WHERE f.edge_id = $1 AND f.seq = $2 ORDER BY f.received_us DESC LIMIT 1"
        )
        .bind(edge_id)
        .bind(seq as i64)
        .fetch_optional(pool)
        .await
        .map_err(self.err("submit review"))?);
        let Some(incarnation) = incarnation else {
            return Err(StoreError::NotFound {
                edge_id: edge_id.into(),
                seq,
            });
        };
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO reviews (edge_id, seq, label, defective, reviewer, note, time_us, incarnation)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )
        .bind(edge_id)
        .bind(seq as i64)
        .bind(&review.label)
        .bind(review.defective)
        .bind(&review.reviewer)
        .bind(&review.note)
        .bind(review.time_us)
        .bind(&incarnation)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(self.err("submit review"))?
        });
        Ok(())
    }
}
