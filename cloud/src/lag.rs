//! What an autoscaler needs from a worker: how many frames it holds without a verdict, and how long the
//! oldest of them has waited. A frame counts from its arrival (MQTT PUBLISH) until its acknowledgement is
//! released (verdict stored, or rejected).

use crate::order::Ticket;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Frames received and not yet finished, by ticket.
#[derive(Debug, Default)]
pub struct Lag {
    pending: Mutex<BTreeMap<Ticket, Instant>>,
}

impl Lag {
    /// A frame arrived.
    pub fn received(&self, ticket: Ticket) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(ticket, Instant::now());
        }
    }

    /// A frame is finished (its acknowledgement is released or it was dropped).
    pub fn finished(&self, ticket: Ticket) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&ticket);
        }
    }

    /// A new connection started epoch `epoch`: frames of older connections that were still queued are
    /// dropped (the broker delivers them again), so they no longer count.
    pub fn forget_before(&self, epoch: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|t, _| t.epoch >= epoch);
        }
    }

    /// Frames held now.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// How long the oldest held frame has waited (zero when none is held).
    pub fn oldest_age(&self) -> Duration {
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.values().min().map(|t| t.elapsed()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_held_frames_and_their_age() {
        let lag = Lag::default();
        let t = |epoch, n| Ticket { epoch, n };
        assert_eq!((lag.in_flight(), lag.oldest_age()), (0, Duration::ZERO));
        lag.received(t(1, 0));
        lag.received(t(1, 1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(lag.in_flight(), 2);
        assert!(lag.oldest_age() >= Duration::from_millis(5));
        lag.finished(t(1, 1));
        assert_eq!(lag.in_flight(), 1);
        lag.received(t(2, 0));
        lag.forget_before(2);
        assert_eq!(lag.in_flight(), 1);
        lag.finished(t(2, 0));
        assert_eq!((lag.in_flight(), lag.oldest_age()), (0, Duration::ZERO));
    }
}
