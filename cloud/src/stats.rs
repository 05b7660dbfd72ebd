//! Counters the cloud worker keeps about itself, including the figures an autoscaler needs: frames in
//! flight, the age of the oldest unprocessed frame, and inference (batch) latency.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Live cloud figures. Counters only grow; gauges are marked as such.
#[derive(Debug, Default)]
pub struct CloudStats {
    /// Frame messages received (including duplicates and rejects).
    pub frames_received: AtomicU64,
    /// Verdicts stored for the first time.
    pub verdicts_stored: AtomicU64,
    /// Deliveries of frames that already had a verdict (answered from the store).
    pub duplicates: AtomicU64,
    /// Verdicts published (including re-publications).
    pub verdicts_published: AtomicU64,
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
    /// Why the link is down, when it is.
    pub link_error: tierline_shared::mqtt::LastError,
    /// Where the admin endpoint listens, once it does.
    pub admin_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Presence and heartbeat messages recorded in the edges table.
    pub presence_updates: AtomicU64,
    /// Inference calls finished (one per frame scored).
    pub inferences: AtomicU64,
    /// Total time frames spent in inference (queueing for a batch plus the batch run), µs.
    pub inference_us_total: AtomicU64,
    /// Gauge: this worker holds the retention leader lease.
    pub leader: AtomicBool,
    /// Gauge: fencing token of the lease this worker holds (0 when none).
    pub lease_token: AtomicU64,
    /// Images removed by retention on this worker.
    pub images_pruned: AtomicU64,
    /// Where the review API listens, once it does.
    pub api_addr: OnceLock<SocketAddr>,
    /// Frames accepted and not yet finished: id → capture time (µs).
    in_flight: Mutex<BTreeMap<u64, i64>>,
    next_flight: AtomicU64,
}

/// A frame counted in flight until this is dropped.
pub struct InFlight {
    stats: Arc<CloudStats>,
    id: u64,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InFlight({})", self.id)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.stats.in_flight.lock() {
            m.remove(&self.id);
        }
    }
}

impl CloudStats {
    /// Counts a frame captured at `capture_time_us` as in flight until the guard drops.
    pub fn start_frame(self: &Arc<Self>, capture_time_us: i64) -> InFlight {
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.in_flight.lock() {
            m.insert(id, capture_time_us);
        }
        InFlight {
            stats: self.clone(),
            id,
        }
    }

    /// Gauge: frames accepted and not finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.lock().map_or(0, |m| m.len() as u64)
    }

    /// Gauge: age of the oldest unfinished frame since its capture at the edge, µs (0 when none). This
    /// includes the time the frame waited in the edge outbox and at the broker.
    pub fn oldest_unprocessed_age_us(&self, now_us: i64) -> u64 {
        self.in_flight
            .lock()
            .ok()
            .and_then(|m| m.values().min().copied())
            .map_or(0, |t| now_us.saturating_sub(t).max(0) as u64)
    }

    /// Records one inference of `us` microseconds.
    pub fn record_inference(&self, us: u64) {
        inc(&self.inferences);
        self.inference_us_total.fetch_add(us, Ordering::Relaxed);
    }
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_frames_are_counted_until_done() {
        let s = Arc::new(CloudStats::default());
        assert_eq!(s.oldest_unprocessed_age_us(1_000), 0);
        let a = s.start_frame(100);
        let b = s.start_frame(400);
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.oldest_unprocessed_age_us(1_000), 900);
        drop(a);
        assert_eq!(s.oldest_unprocessed_age_us(1_000), 600);
        drop(b);
        assert_eq!(s.in_flight(), 0);
    }
}
