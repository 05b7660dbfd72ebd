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

/// Steps waiting for the store; beyond this many, a step is only logged.
const PENDING_STEPS: usize = 64;

/// A step for the store's model event log.
struct Step {
    at_us: i64,
    event: String,
    bundle: String,
    detail: String,
}

/// Writes update steps to the store's model event log, in order, from one task (off the update's path; the
/// log has every step in any case).
pub struct StoreReport {
    steps: tokio::sync::mpsc::Sender<Step>,
}

impl StoreReport {
    /// Starts the writer for worker `worker_id` (subject `worker/<worker id>`); it ends when the report is
    /// dropped and the steps in hand are written.
    pub fn start(store: Store, worker_id: String) -> Self {
        let (steps, mut rx) = tokio::sync::mpsc::channel::<Step>(PENDING_STEPS);
        tokio::spawn(async move {
            let subject = format!("worker/{worker_id}");
            while let Some(s) = rx.recv().await {
                if let Err(e) = store
                    .record_model_event(
                        &worker_id, &subject, &s.bundle, &s.event, &s.detail, s.at_us,
                    )
                    .await
                {
                    tracing::warn!(event = s.event, bundle = s.bundle, error = %e, "Model update step not recorded in the store.");
                }
            }
        });
        Self { steps }
    }
}

impl Report for StoreReport {
    fn step(&self, event: &str, bundle: &str, detail: &str, serving_version: &str) {
        let step = Step {
            at_us: tierline_shared::time::now_us(),
            event: event.to_string(),
            bundle: prefix(bundle, 64),
            detail: format!("{} [serving {serving_version}]", prefix(detail, 4000)),
        };
        if self.steps.try_send(step).is_err() {
            tracing::warn!(
                event,
                bundle,
                "Model update step not recorded in the store: too many are waiting."
            );
        }
    }
}
