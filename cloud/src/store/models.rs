//! Model versions: which versions of the edge prescreen and of the cloud model have judged frames, recorded
//! when a new verdict is stored ([`Store::store`]).

use super::{Pool, Store, StoreError};

/// Records a model version of a tier (`$1`: `edge` or `cloud`) first seen at `$3`; a known one is kept.
pub(super) const INSERT_MODEL_VERSION: &str =
    "INSERT INTO model_versions (tier, version, first_seen_us) VALUES ($1, $2, $3)
     ON CONFLICT (tier, version) DO NOTHING";

impl Store {
    /// Model versions seen per tier (`edge` or `cloud`), in first-seen order.
    pub async fn model_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT tier, version FROM model_versions ORDER BY first_seen_us, tier, version"
        )
        .fetch_all(pool)
        .await
        .map_err(self.err("model versions")))
    }
}
