//! Counters the cloud worker keeps about itself, and its inference and store latencies. Frames in flight and
//! the age of the oldest unprocessed frame, the other autoscaler figures, are kept in [`crate::lag`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tierline_shared::metrics::Latency;

/// Live cloud figures. Counters only grow; gauges are marked as such.
#[derive(Debug, Default)]
pub struct CloudStats {
    /// Frame messages received (including duplicates and rejects).
    pub frames_received: AtomicU64,
    /// Verdicts stored for the first time.
    pub verdicts_stored: AtomicU64,
    /// Deliveries of frames that already had a verdict (answered from the store).
    pub duplicates: AtomicU64,
    /// Frames that arrived under the key of a stored frame with another image (stored as different frames).
    pub identity_conflicts: AtomicU64,
    /// Verdicts published (including re-publications).
    pub verdicts_published: AtomicU64,
    /// Verdicts the broker refused in its PUBACK (an ACL that does not let this worker write the topic).
    pub verdicts_refused: AtomicU64,
    /// Frames whose image could not be read (stored with an error verdict).
    pub unreadable: AtomicU64,
    /// Messages rejected: malformed, oversized, unknown protocol version.
    pub rejected_malformed: AtomicU64,
    /// Messages rejected because the envelope's edge does not match the topic.
    pub rejected_forged: AtomicU64,
    /// Frames without a verdict because inference or storage failed (the edge will resend them).
    pub failures: AtomicU64,
    /// Whether the worker is connected and subscribed.
    pub link_up: AtomicBool,
    /// Frames held without a verdict, for autoscaling.
    pub lag: crate::lag::Lag,
    /// The metric samples of the latest miss-rate estimates from audit samples, kept by `crate::audit`.
    pub audit: std::sync::Mutex<Vec<tierline_shared::metrics::Sample>>,
    /// Why the link is down, when it is.
    pub link_error: tierline_shared::mqtt::LastError,
    /// Presence and heartbeat messages recorded in the edges table.
    pub presence_updates: AtomicU64,
    /// Time each frame spent in inference (queueing for a batch plus the batch run).
    pub inference_latency: Latency,
    /// Time each group of verdicts took to store (one transaction).
    pub store_commit: Latency,
    /// Verdict store transactions: verdicts stored ÷ this is the mean group size.
    pub store_transactions: AtomicU64,
    /// Gauge: this worker holds the retention leader lease.
    pub leader: AtomicBool,
    /// Gauge: fencing token of the lease this worker holds (0 when none).
    pub lease_token: AtomicU64,
    /// Images removed by retention on this worker.
    pub images_pruned: AtomicU64,
    /// Gauge: this worker holds the rollout controller's lease.
    pub rollout_leader: AtomicBool,
    /// Gauge: unfinished rollouts (as the controller last saw them).
    pub rollouts_active: AtomicU64,
    /// Rollouts this worker rolled back (gates or an operator).
    pub rollouts_rolled_back: AtomicU64,
    /// Model updates of this worker: bundles applied and refused, checks failed for the network or the disk.
    pub model_updates: std::sync::Arc<tierline_shared::updates::UpdateCounters>,
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
