//! Retention: clears the image bytes of old frames, by age and by a total byte budget (oldest first). Frame
//! rows and verdicts stay. Runs only under the current leader lease (see [`Lease`]). Images kept as objects
//! are deleted after the transaction that stopped naming them committed.

use super::lease::CHECK_FENCE;
use super::{Lease, Pool, Store, StoreError};
use std::time::Duration;

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

impl Store {
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
            let mut objects: Vec<String> = Vec::new();
            if let Some(cutoff) = cutoff {
                let (n, bytes): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(image_bytes), 0) AS BIGINT) FROM frames
                     WHERE (image IS NOT NULL OR image_ref != '') AND received_us < $1",
                )
                .bind(cutoff)
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err("retention"))?;
                let refs: Vec<String> = sqlx::query_scalar(
                    "SELECT image_ref FROM frames WHERE image_ref != '' AND received_us < $1",
                )
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await
                .map_err(self.err("retention"))?;
                objects.extend(refs);
                sqlx::query(
                    "UPDATE frames SET image = NULL, image_ref = '', image_pruned_us = $2
                     WHERE (image IS NOT NULL OR image_ref != '') AND received_us < $1",
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
                    "SELECT CAST(COALESCE(SUM(image_bytes), 0) AS BIGINT) FROM frames WHERE image IS NOT NULL OR image_ref != ''",
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err("retention"))?;
                let mut excess = (total as u64).saturating_sub(max_bytes);
                while excess > 0 {
                    let oldest: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
                        "SELECT edge_id, incarnation, seq, image_bytes, image_ref FROM frames
                         WHERE image IS NOT NULL OR image_ref != ''
                         ORDER BY received_us, edge_id, incarnation, seq LIMIT 256",
                    )
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(self.err("retention"))?;
                    if oldest.is_empty() {
                        break;
                    }
                    for (edge_id, incarnation, seq, bytes, image_ref) in oldest {
                        if excess == 0 {
                            break;
                        }
                        sqlx::query(
                            "UPDATE frames SET image = NULL, image_ref = '', image_pruned_us = $3 WHERE edge_id = $1 AND seq = $2 AND incarnation = $4",
                        )
                        .bind(&edge_id)
                        .bind(seq)
                        .bind(now_us)
                        .bind(&incarnation)
                        .execute(&mut *tx)
                        .await
                        .map_err(self.err("retention"))?;
                        if !image_ref.is_empty() {
                            objects.push(image_ref);
                        }
                        pruned.images += 1;
                        pruned.bytes += bytes as u64;
                        excess = excess.saturating_sub(bytes as u64);
                    }
                }
            }
            tx.commit().await.map_err(self.err("retention"))?;
            // No row names these objects any more: a failure here leaves unnamed objects, never a row
            // naming a missing one.
            if let Err(e) = self.images.delete(&objects).await {
                tracing::warn!(error = %e, "Retention could not delete every image object; the rest stay on storage unnamed.");
            }
            Ok(pruned)
        })
    }
}
