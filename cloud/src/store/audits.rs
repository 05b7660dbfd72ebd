//! Audit samples: random frames an edge's prescreen passed and forwarded anyway, so the cloud can judge
//! them. Counted per edge and per prescreen version, they estimate how often the prescreen passes a frame
//! the cloud finds defective (`crate::audit`).

use super::{Pool, Store, StoreError};

/// Audit samples of one edge and prescreen version, and how many the cloud found defective.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditCount {
    /// Edge id.
    pub edge_id: String,
    /// Prescreen version the edge reported with the frames.
    pub edge_model_version: String,
    /// Audit samples with a cloud verdict.
    pub audits: i64,
    /// Of those, the ones the cloud judged defective: frames the prescreen passed and should not have.
    pub misses: i64,
}

impl Store {
    /// Audit samples captured at or after `since_us`, per edge and prescreen version.
    pub async fn audit_counts(&self, since_us: i64) -> Result<Vec<AuditCount>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT f.edge_id, f.edge_model_version, COUNT(*) AS audits,
                    SUM(CASE WHEN v.defective THEN 1 ELSE 0 END) AS misses
             FROM frames f JOIN verdicts v
               ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq
             WHERE f.reason = 2 AND f.capture_time_us >= $1
             GROUP BY f.edge_id, f.edge_model_version
             ORDER BY f.edge_id, f.edge_model_version"
        )
        .bind(since_us)
        .fetch_all(pool)
        .await
        .map_err(self.err("count audit samples")))
    }
}
