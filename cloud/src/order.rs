//! The acknowledgement order: tickets taken on arrival, and the sequencer that releases finished messages
//! in that order. Pure: the acknowledgement stage ([`crate::acks`]) is the I/O around it.
//!
//! MQTT 3.1.1 (§4.6) requires a client to send PUBACKs in the order the PUBLISH packets arrived; strict
//! brokers disconnect a client that does not. Frames finish processing out of order (batching, concurrent
//! tasks), so every received QoS 1 message gets a ticket `(epoch, n)` on arrival and the sequencer releases
//! acknowledgements strictly by `n`, holding back the ones that finished early.
//!
//! The epoch changes on every new connection: packet ids of a previous connection mean nothing to the new
//! one (the session is clean), so tickets of an older epoch are dropped, never acknowledged.
//!
//! A message whose processing failed is still released in order (without a stored verdict): holding it
//! would stall every later acknowledgement. The edge's resend timer delivers that frame again.

use std::collections::BTreeMap;

/// Position of a received message in the acknowledgement order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket {
    /// Connection epoch.
    pub epoch: u64,
    /// Arrival number within the epoch, from 0.
    pub n: u64,
}

/// Hands out tickets in arrival order.
#[derive(Debug, Default)]
pub struct TicketCounter {
    epoch: u64,
    next: u64,
}

impl TicketCounter {
    /// Starts a new connection epoch and returns it.
    pub fn new_connection(&mut self) -> u64 {
        self.epoch += 1;
        self.next = 0;
        self.epoch
    }

    /// The ticket of the next received message.
    pub fn take(&mut self) -> Ticket {
        let t = Ticket {
            epoch: self.epoch,
            n: self.next,
        };
        self.next += 1;
        t
    }
}

/// Orders finished messages for acknowledgement. Pure.
#[derive(Debug)]
pub struct Sequencer<T> {
    epoch: u64,
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> Default for Sequencer<T> {
    fn default() -> Self {
        Self {
            epoch: 0,
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> Sequencer<T> {
    /// Records that `ticket` finished; returns the messages that may now be acknowledged, in order.
    pub fn finished(&mut self, ticket: Ticket, item: T) -> Vec<T> {
        if ticket.epoch < self.epoch {
            return Vec::new();
        }
        if ticket.epoch > self.epoch {
            self.epoch = ticket.epoch;
            self.next = 0;
            self.waiting.clear();
        }
        self.waiting.insert(ticket.n, item);
        let mut out = Vec::new();
        while let Some(item) = self.waiting.remove(&self.next) {
            out.push(item);
            self.next += 1;
        }
        out
    }

    /// The connection epoch the sequencer is releasing for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Messages held back.
    pub fn held(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(epoch: u64, n: u64) -> Ticket {
        Ticket { epoch, n }
    }

    #[test]
    fn releases_in_arrival_order() {
        let mut s = Sequencer::default();
        let mut c = TicketCounter::default();
        c.new_connection();
        let (a, b, d) = (c.take(), c.take(), c.take());
        assert!(s.finished(d, 'd').is_empty());
        assert!(s.finished(b, 'b').is_empty());
        assert_eq!(s.held(), 2);
        assert_eq!(s.finished(a, 'a'), vec!['a', 'b', 'd']);
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn a_new_connection_discards_the_old_epoch() {
        let mut s = Sequencer::default();
        assert!(s.finished(t(1, 1), 'x').is_empty());
        assert_eq!(s.finished(t(2, 0), 'y'), vec!['y']);
        assert!(
            s.finished(t(1, 0), 'z').is_empty(),
            "stale packet ids are never acknowledged"
        );
        assert_eq!(s.held(), 0);
    }
}
