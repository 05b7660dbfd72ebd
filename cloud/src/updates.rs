//! Full-model updates on a cloud worker: the shared engine (`tierline_shared::updates`) follows the target
//! `workers/<group>` in the registry, downloading from a bundle server like an edge does, and each step is
//! written to the registry's event log (subject `worker/<worker id>`), where `tierline-review models events`
//! shows it beside the edges' steps.

use crate::store::Store;
use tierline_shared::updates::{Report, UpdatesConfig, prefix};

/// The group of a worker that sets no `updates.group`.
pub const DEFAULT_GROUP: &str = "default";

/// The target a worker follows.
pub fn target(cfg: &UpdatesConfig) -> String {
    format!("workers/{}", cfg.group(DEFAULT_GROUP))
}

/// Writes update steps to the store's model event log.
pub struct StoreReport {
    /// The store.
    pub store: Store,
    /// This worker's id.
    pub worker_id: String,
}

impl Report for StoreReport {
    fn step(&self, event: &str, bundle: &str, detail: &str, serving_version: &str) {
        let store = self.store.clone();
        let actor = self.worker_id.clone();
        let subject = format!("worker/{}", self.worker_id);
        let (event, bundle) = (event.to_string(), prefix(bundle, 64));
        let detail = format!("{} [serving {serving_version}]", prefix(detail, 4000));
        // Best effort and off the update's path: the log has every step in any case.
        tokio::spawn(async move {
            let now = tierline_shared::time::now_us();
            if let Err(e) = store
                .record_model_event(&actor, &subject, &bundle, &event, &detail, now)
                .await
            {
                tracing::warn!(event, bundle, error = %e, "Model update step not recorded in the store.");
            }
        });
    }
}
