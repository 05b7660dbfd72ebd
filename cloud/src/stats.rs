//! Counters the cloud worker keeps about itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live cloud figures. All counters only grow.
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
}

/// Adds one to a counter.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
