//! Counters and latency histograms the edge keeps about itself, for the live summary, heartbeats and tests.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tierline_shared::metrics::Latency;
use tierline_shared::updates::UpdateCounters;

/// Live edge figures. All counters only grow.
#[derive(Debug)]
pub struct EdgeStats {
    /// Frames delivered by cameras.
    pub frames_captured: AtomicU64,
    /// Frames dropped because the prescreen fell behind (oldest first).
    pub frames_dropped: AtomicU64,
    /// Encoded bytes delivered by cameras.
    pub bytes_captured: AtomicU64,
    /// Frames taken while the model was too far behind to score them: decided at their deadline under the
    /// offline policy.
    pub frames_unscored: AtomicU64,
    /// Model updates: bundles applied and refused, checks failed for the network or the disk.
    pub model_updates: Arc<UpdateCounters>,
    /// Frames the prescreen could not read.
    pub frames_unreadable: AtomicU64,
    /// Part triggers received and handed to a camera.
    pub triggers: AtomicU64,
    /// Part triggers refused.
    pub triggers_refused: AtomicU64,
    /// Frames passed locally (not forwarded, or forwarded only as audit).
    pub frames_passed: AtomicU64,
    /// Frames accepted into the outbox as suspects.
    pub frames_suspect: AtomicU64,
    /// Passed frames accepted into the outbox as audit samples.
    pub frames_audit: AtomicU64,
    /// Bytes accepted into the outbox.
    pub bytes_forwarded: AtomicU64,
    /// Publishes handed to the MQTT client (including resends).
    pub publishes: AtomicU64,
    /// Verdicts received for frames in this edge.
    pub verdicts: AtomicU64,
    /// Line decisions emitted, of every kind (one per frame).
    pub decisions: AtomicU64,
    /// Suspect decisions taken from a cloud verdict within the deadline.
    pub decisions_cloud: AtomicU64,
    /// Suspect decisions taken locally because the deadline passed.
    pub decisions_fallback: AtomicU64,
    /// Frames decided at their deadline before the prescreen scored them.
    pub decisions_unscored: AtomicU64,
    /// Late verdicts matched to a provisional decision.
    pub reconciliations: AtomicU64,
    /// Reconciliations where the cloud disagreed with the local decision.
    pub disagreements: AtomicU64,
    /// Audit samples the cloud found defective (prescreen misses).
    pub audit_misses: AtomicU64,
    /// Line decisions on frames whose ground truth is known (synthetic cameras) and is a defect.
    pub truth_defects: AtomicU64,
    /// Line decisions on frames whose ground truth is known and is good.
    pub truth_goods: AtomicU64,
    /// Escapes against ground truth: defective frames decided `pass`.
    pub truth_escapes: AtomicU64,
    /// False rejects against ground truth: good frames decided `reject`.
    pub truth_false_rejects: AtomicU64,
    /// Records evicted from the outbox to stay within budget.
    pub evictions: AtomicU64,
    /// Frames the broker refused (a PUBACK refusal, or larger than its maximum packet size): decided
    /// locally and dropped from the outbox.
    pub frames_refused: AtomicU64,
    /// Other messages (decision lines, presence, heartbeats) the broker refused in its PUBACK.
    pub publishes_refused: AtomicU64,
    /// Frames that could not be written to the outbox.
    pub outbox_errors: AtomicU64,
    /// Verdicts refused because they name another outbox incarnation or another image than the record held
    /// under their seq.
    pub verdicts_mismatched: AtomicU64,
    /// Whether the decision sink's last write or sync failed (it holds lines and retries).
    pub sink_failing: AtomicBool,
    /// Why the decision sink fails, while it does.
    pub sink_error: tierline_shared::mqtt::LastError,
    /// Failed decision-sink write attempts.
    pub sink_errors: AtomicU64,
    /// Bytes of decision lines held in memory, not yet written.
    pub sink_held_bytes: AtomicU64,
    /// MQTT connections established (1 + reconnects).
    pub link_connects: AtomicU64,
    /// Whether the MQTT link is up.
    pub link_up: AtomicBool,
    /// Why the link is down, when it is.
    pub link_error: tierline_shared::mqtt::LastError,
    /// Frames in the outbox at the last health check.
    pub backlog_frames: AtomicU64,
    /// Image bytes in the outbox at the last health check.
    pub backlog_bytes: AtomicU64,
    /// Capture time (µs since the epoch) of the oldest outbox frame at the last health check; 0 if empty.
    pub backlog_oldest_us: AtomicU64,
    /// Free bytes on the outbox's file system at the last health check.
    pub disk_free: AtomicU64,
    /// Capture → line decision for suspects, µs, for the live summary's quantiles.
    pub decision_latency_us: Mutex<Histogram<u64>>,
    /// The same since the last heartbeat (each heartbeat reports its p99 and resets it).
    pub decision_latency_window_us: Mutex<Histogram<u64>>,
    /// Capture → line decision for suspects, exported as a Prometheus histogram.
    pub decision_latency: Latency,
    /// Outbox commit time per group of forwarded frames.
    pub outbox_commit: Latency,
}

impl Default for EdgeStats {
    fn default() -> Self {
        // Bounds 1 µs ..= 1 h at 3 significant digits are valid constants.
        #[allow(clippy::unwrap_used)]
        let hist = || Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap());
        Self {
            frames_captured: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            bytes_captured: AtomicU64::new(0),
            frames_unreadable: AtomicU64::new(0),
            triggers: AtomicU64::new(0),
            triggers_refused: AtomicU64::new(0),
            frames_unscored: AtomicU64::new(0),
            model_updates: Arc::default(),
            decisions_unscored: AtomicU64::new(0),
            frames_passed: AtomicU64::new(0),
            frames_suspect: AtomicU64::new(0),
            frames_audit: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            verdicts: AtomicU64::new(0),
            decisions: AtomicU64::new(0),
            decisions_cloud: AtomicU64::new(0),
            decisions_fallback: AtomicU64::new(0),
            reconciliations: AtomicU64::new(0),
            disagreements: AtomicU64::new(0),
            audit_misses: AtomicU64::new(0),
            truth_defects: AtomicU64::new(0),
            truth_goods: AtomicU64::new(0),
            truth_escapes: AtomicU64::new(0),
            truth_false_rejects: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            frames_refused: AtomicU64::new(0),
            publishes_refused: AtomicU64::new(0),
            outbox_errors: AtomicU64::new(0),
            verdicts_mismatched: AtomicU64::new(0),
            sink_failing: AtomicBool::new(false),
            sink_error: Default::default(),
            sink_errors: AtomicU64::new(0),
            sink_held_bytes: AtomicU64::new(0),
            link_connects: AtomicU64::new(0),
            link_up: AtomicBool::new(false),
            link_error: Default::default(),
            backlog_frames: AtomicU64::new(0),
            backlog_bytes: AtomicU64::new(0),
            backlog_oldest_us: AtomicU64::new(0),
            disk_free: AtomicU64::new(0),
            decision_latency_us: hist(),
            decision_latency_window_us: hist(),
            decision_latency: Latency::default(),
            outbox_commit: Latency::default(),
        }
    }
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Records a suspect's decision latency in µs, for the summary and the exported histogram.
pub fn record_decision(stats: &EdgeStats, us: u64) {
    record(&stats.decision_latency_us, us);
    record(&stats.decision_latency_window_us, us);
    stats
        .decision_latency
        .observe(std::time::Duration::from_micros(us));
}

/// Records a latency in µs.
pub fn record(h: &Mutex<Histogram<u64>>, us: u64) {
    if let Ok(mut h) = h.lock() {
        h.saturating_record(us.max(1));
    }
}

/// The p99 in µs and the count of a histogram, which is then emptied.
pub fn take_p99_us(h: &Mutex<Histogram<u64>>) -> (u64, u64) {
    match h.lock() {
        Ok(mut h) => {
            let out = if h.is_empty() {
                (0, 0)
            } else {
                (h.value_at_quantile(0.99), h.len())
            };
            h.reset();
            out
        }
        Err(_) => (0, 0),
    }
}

/// p50, p99 and max of a histogram in milliseconds (zeros when empty).
pub fn percentiles_ms(h: &Mutex<Histogram<u64>>) -> (f64, f64, f64, u64) {
    match h.lock() {
        Ok(h) if !h.is_empty() => (
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.len(),
        ),
        _ => (0.0, 0.0, 0.0, 0),
    }
}
