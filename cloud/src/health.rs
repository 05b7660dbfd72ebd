//! The cloud worker's readiness checks (besides the model's, which its supervisor owns) and its metrics.
//!
//! Every `every`, the watcher sets two required checks:
//! - `link`: connected to the broker and subscribed (a worker without its subscription takes no frames);
//! - `database`: the verdict store answers a trivial query within two seconds.

use crate::stats::{self, CloudStats};
use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_shared::admin::{self, Readiness};
use tierline_shared::metrics::{self as m, Sample};
use tokio_util::sync::CancellationToken;

/// Longest the database may take to answer the readiness query.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Name of the link check.
pub use tierline_shared::admin::LINK;
/// Name of the database check.
pub const DATABASE: &str = "database";

/// The health watcher stage.
pub struct HealthWatch {
    /// The store, pinged for the `database` check.
    pub store: Store,
    /// Counters and link state.
    pub stats: Arc<CloudStats>,
    /// The checks it sets.
    pub readiness: Arc<Readiness>,
    /// How often it checks.
    pub every: Duration,
}

impl HealthWatch {
    /// Refreshes the `link` and `database` checks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let max_age = self.every * 4 + DATABASE_TIMEOUT * 2;
        let mut ticker = admin::Ticker::new(self.every);
        while ticker.next(&shutdown).await {
            admin::set_link(
                &self.readiness,
                true,
                (
                    self.stats.link_up.load(Ordering::Relaxed),
                    self.stats.link_error.get(),
                ),
                "connected to the broker and subscribed",
                "retrying with backoff; this worker takes no frames",
                max_age,
            );
            let (ok, detail) = match tokio::time::timeout(DATABASE_TIMEOUT, self.store.ping()).await
            {
                Ok(Ok(())) => (true, "the verdict store answers".to_string()),
                Ok(Err(e)) => (false, format!("the verdict store fails: {e}")),
                Err(_) => (
                    false,
                    format!("the verdict store did not answer within {DATABASE_TIMEOUT:?}"),
                ),
            };
            self.readiness.set(DATABASE, true, ok, detail, max_age);
        }
    }
}

/// The worker's metric samples now.
pub fn samples(s: &CloudStats) -> Vec<Sample> {
    let c = |metric, v: &std::sync::atomic::AtomicU64| Sample::of(metric, stats::get(v));
    let mut out = audit_samples(s);
    out.extend([
        c(&m::CLOUD_FRAMES_RECEIVED, &s.frames_received),
        c(&m::CLOUD_VERDICTS_STORED, &s.verdicts_stored),
        c(&m::CLOUD_DUPLICATES, &s.duplicates),
        c(&m::CLOUD_IDENTITY_CONFLICTS, &s.identity_conflicts),
        c(&m::CLOUD_VERDICTS_PUBLISHED, &s.verdicts_published),
        c(&m::CLOUD_VERDICTS_REFUSED, &s.verdicts_refused),
        c(&m::CLOUD_UNREADABLE, &s.unreadable),
        c(&m::CLOUD_REJECTED_MALFORMED, &s.rejected_malformed),
        c(&m::CLOUD_REJECTED_FORGED, &s.rejected_forged),
        c(&m::CLOUD_FAILURES, &s.failures),
        Sample::of(
            &m::CLOUD_LINK_UP,
            u64::from(s.link_up.load(Ordering::Relaxed)),
        ),
        Sample::histogram(&m::CLOUD_INFERENCE_LATENCY, &s.inference_latency),
        Sample::histogram(&m::CLOUD_STORE_COMMIT, &s.store_commit),
        c(&m::CLOUD_STORE_TRANSACTIONS, &s.store_transactions),
        c(&m::CLOUD_PRESENCE_UPDATES, &s.presence_updates),
        Sample::of(
            &m::CLOUD_LEADER,
            u64::from(s.leader.load(Ordering::Relaxed)),
        ),
        Sample::of(&m::CLOUD_LEASE_TOKEN, s.lease_token.load(Ordering::Relaxed)),
        c(&m::CLOUD_IMAGES_PRUNED, &s.images_pruned),
        Sample::of(
            &m::CLOUD_ROLLOUT_LEADER,
            u64::from(s.rollout_leader.load(Ordering::Relaxed)),
        ),
        Sample::of(
            &m::CLOUD_ROLLOUTS_ACTIVE,
            s.rollouts_active.load(Ordering::Relaxed),
        ),
        c(&m::CLOUD_ROLLOUTS_ROLLED_BACK, &s.rollouts_rolled_back),
        c(&m::CLOUD_MODEL_UPDATES_APPLIED, &s.model_updates.applied),
        c(&m::CLOUD_MODEL_UPDATES_REJECTED, &s.model_updates.rejected),
        c(&m::CLOUD_MODEL_UPDATE_ERRORS, &s.model_updates.errors),
        Sample::of(&m::CLOUD_IN_FLIGHT, s.lag.in_flight() as u64),
        Sample::gauge(
            &m::CLOUD_OLDEST_UNPROCESSED,
            s.lag.oldest_age().as_secs_f64(),
        ),
    ]);
    out
}

/// The audit estimates' samples, as the audit stage last left them.
fn audit_samples(s: &CloudStats) -> Vec<Sample> {
    s.audit.lock().map(|a| a.clone()).unwrap_or_default()
}
