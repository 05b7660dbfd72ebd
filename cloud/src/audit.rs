//! The live miss-rate estimate of each edge's prescreen, from audit samples: the random passed frames an edge
//! forwards (`decision.audit_rate`) and the cloud judges. Per edge and prescreen version, the share the cloud
//! finds defective is the prescreen's miss rate on passed frames, with a Wilson 95 % interval.
//!
//! ```text
//!  every audit.interval: store.audit_counts(now - audit.window) ─► estimates ─► metrics (labels edge,
//!  model_version), review API (AuditEstimates), and a warning when the lower bound is above the target
//! ```
//!
//! Every worker computes the same numbers from the shared store, so each exports them; alert on the maximum.

use crate::stats::CloudStats;
use crate::store::{AuditCount, Store};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tierline_shared::metrics::{self as m, Sample};
use tierline_shared::wilson;
use tokio_util::sync::CancellationToken;

/// Settings of the estimate (`[audit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Most share of passed frames the cloud may find defective; a lower bound above it is reported.
    #[serde(default = "default_target")]
    pub miss_rate_target: f64,
    /// Audit samples captured within this long count.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// How often the estimate is recomputed.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_target() -> f64 {
    0.01
}
fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            miss_rate_target: default_target(),
            window: default_window(),
            interval: default_interval(),
        }
    }
}

/// One edge and prescreen version's estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Edge id.
    pub edge_id: String,
    /// Prescreen version.
    pub model_version: String,
    /// Audit samples judged.
    pub audits: u64,
    /// Of those, judged defective by the cloud.
    pub misses: u64,
    /// Wilson 95 % lower bound of the miss rate.
    pub lower95: f64,
    /// Wilson 95 % upper bound of the miss rate.
    pub upper95: f64,
}

impl Estimate {
    /// The estimate from stored counts.
    pub fn from_count(c: &AuditCount) -> Self {
        let (audits, misses) = (c.audits.max(0) as u64, c.misses.max(0) as u64);
        let (lower95, upper95) = wilson::interval(misses, audits, wilson::Z95);
        Self {
            edge_id: c.edge_id.clone(),
            model_version: c.edge_model_version.clone(),
            audits,
            misses,
            lower95,
            upper95,
        }
    }

    /// The point estimate (0 without samples).
    pub fn rate(&self) -> f64 {
        if self.audits == 0 {
            0.0
        } else {
            self.misses as f64 / self.audits as f64
        }
    }
}

/// The estimates of audit samples captured within `window` before now.
pub async fn estimates(
    store: &Store,
    window: Duration,
) -> Result<Vec<Estimate>, crate::store::StoreError> {
    let since = tierline_shared::time::now_us()
        .saturating_sub(i64::try_from(window.as_micros()).unwrap_or(i64::MAX));
    Ok(store
        .audit_counts(since)
        .await?
        .iter()
        .map(Estimate::from_count)
        .collect())
}

/// The stage that keeps the estimates in the worker's stats.
pub struct AuditWatch {
    /// The store.
    pub store: Store,
    /// Settings.
    pub config: AuditConfig,
    /// Where the estimates go (exported as metrics).
    pub stats: Arc<CloudStats>,
}

impl AuditWatch {
    /// Recomputes every interval until `shutdown`. Never fails: a store error is logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match estimates(&self.store, self.config.window).await {
                Ok(list) => {
                    for e in list
                        .iter()
                        .filter(|e| e.lower95 > self.config.miss_rate_target)
                    {
                        tracing::warn!(
                            edge_id = %e.edge_id, model_version = %e.model_version, audits = e.audits,
                            misses = e.misses, lower95 = e.lower95, target = self.config.miss_rate_target,
                            "The prescreen passes more defective frames than the target allows (audit samples)."
                        );
                    }
                    let samples = samples(&list, self.config.miss_rate_target);
                    if let Ok(mut slot) = self.stats.audit.lock() {
                        *slot = samples;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Audit estimate not updated."),
            }
        }
    }
}

/// The metric samples of `list` (labels edge, model_version) and of the target.
pub fn samples(list: &[Estimate], target: f64) -> Vec<Sample> {
    let mut out = vec![Sample::gauge(&m::CLOUD_AUDIT_MISS_RATE_TARGET, target)];
    for e in list {
        let l = |sample: Sample| {
            sample
                .labelled("edge", &e.edge_id)
                .labelled("model_version", &e.model_version)
        };
        out.push(l(Sample::of(&m::CLOUD_AUDIT_SAMPLES, e.audits)));
        out.push(l(Sample::of(&m::CLOUD_AUDIT_MISSES, e.misses)));
        out.push(l(Sample::gauge(&m::CLOUD_AUDIT_MISS_RATE_LOWER, e.lower95)));
        out.push(l(Sample::gauge(&m::CLOUD_AUDIT_MISS_RATE_UPPER, e.upper95)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_exported_per_edge_and_version_with_their_bounds() {
        let count = |edge: &str, version: &str, audits, misses| AuditCount {
            edge_id: edge.into(),
            edge_model_version: version.into(),
            audits,
            misses,
        };
        let list: Vec<Estimate> = [count("e1", "1.1.0", 40, 2), count("e1", "1.2.0", 0, 0)]
            .iter()
            .map(Estimate::from_count)
            .collect();
        assert!((list[0].lower95 - 0.01382).abs() < 1e-4 && (list[0].rate() - 0.05).abs() < 1e-12);
        // No samples: nothing is known.
        assert_eq!(
            (list[1].lower95, list[1].upper95, list[1].rate()),
            (0.0, 1.0, 0.0)
        );
        let text = tierline_shared::metrics::render(samples(&list, 0.01));
        assert!(
            text.contains("tierline_cloud_audit_miss_rate_target 0.01"),
            "{text}"
        );
        assert!(
            text.contains("tierline_cloud_audit_samples{edge=\"e1\",model_version=\"1.1.0\"} 40"),
            "{text}"
        );
        assert!(
            text.contains("tierline_cloud_audit_misses{edge=\"e1\",model_version=\"1.2.0\"} 0"),
            "{text}"
        );
    }
}
