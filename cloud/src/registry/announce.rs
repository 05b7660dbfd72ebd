//! Announces every model target as a retained MQTT message (`tierline/targets/v1/<target>/<model name>`,
//! JSON of [`TargetView`], carrying the bundle's signed statement), so an edge learns of a change as soon as
//! it is made, and at once when it connects, instead of at its next poll of the bundle server.
//!
//! The message only names the bundle: an edge that receives it checks the bundle server's targets and goes
//! through every verification as after a poll, so a stale or forged announcement can at most wake it early.
//! Every worker announces (retained messages with the same content replace each other); a worker that read
//! the targets before a change and publishes after another worker announced it is corrected at its next look.
//! After each new broker connection, and every [`REFRESH`] in any case, everything is announced again, so a
//! broker that lost its retained messages gets them back. A change of a `workers/...` target also wakes this
//! worker's own model updates.

use super::server::{TargetView, target_views};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tierline_shared::mqtt::{AsyncClient, QoS};
use tierline_shared::topics::target_topic;
use tokio_util::sync::CancellationToken;

/// How often every target is announced again even without a change.
pub const REFRESH: Duration = Duration::from_secs(300);

/// The announcing stage.
pub struct Announcer {
    /// Where the targets are.
    pub store: Store,
    /// The worker's MQTT client.
    pub client: AsyncClient,
    /// The worker's broker connection epoch (it changes on every new connection).
    pub connection: Arc<AtomicU64>,
    /// How often the targets are read.
    pub every: Duration,
    /// Woken when a `workers/...` target changes (this worker's model updates).
    pub wake_workers: Arc<tokio::sync::Notify>,
}

impl Announcer {
    /// Reads the targets every `every` and publishes those that changed since this worker last did, until
    /// `shutdown`. A failed read or publish is logged and tried again.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut announced: BTreeMap<(String, String), TargetView> = BTreeMap::new();
        let mut epoch = self.connection.load(Ordering::Relaxed);
        let mut refreshed = Instant::now();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now_epoch = self.connection.load(Ordering::Relaxed);
            if now_epoch != epoch || refreshed.elapsed() >= REFRESH {
                announced.clear();
                epoch = now_epoch;
                refreshed = Instant::now();
            }
            let views = match target_views(&self.store).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "Model targets not read for announcing.");
                    continue;
                }
            };
            for view in views {
                let key = (view.target.clone(), view.name.clone());
                if announced.get(&key) == Some(&view) {
                    continue;
                }
                if view.target.starts_with("workers/") {
                    self.wake_workers.notify_one();
                }
                let Ok(body) = serde_json::to_vec(&view) else {
                    continue;
                };
                let topic = target_topic(&view.target, &view.name);
                // Not awaited into a full request queue: verdicts and acks share it; tried again next look.
                match self
                    .client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, true, body)
                {
                    Ok(()) => {
                        tracing::info!(
                            topic, bundle = %view.sha256, rollback = view.rollback,
                            "Model target announced."
                        );
                        announced.insert(key, view);
                    }
                    Err(e) => {
                        tracing::debug!(topic, error = %e, "Model target not announced; trying again.")
                    }
                }
            }
        }
    }
}
