//! The outbox's send state, in memory: which held records are in flight and when each is due again.
//!
//! Due times are on the monotonic clock and mean nothing after a restart (every held record is due at open),
//! so they are never written to the database: the uplink's rounds read and change only this index, and the
//! database is read only for the records it picks. The index holds every held seq (a few tens of bytes each:
//! about 5 MB for 100,000 queued frames).

use std::collections::{BTreeMap, BTreeSet};

/// Send state of one held record.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Monotonic µs at which it is due again; 0 = due now (never sent, or its timer expired).
    due_us: i64,
    /// Sends since the outbox was opened.
    attempts: u32,
}

/// Every held seq with its send state.
#[derive(Debug, Default)]
pub(super) struct Hot {
    held: BTreeMap<u64, Slot>,
    /// Records in flight, by (due time, seq).
    sent: BTreeSet<(i64, u64)>,
}

impl Hot {
    /// A newly held record, due now.
    pub(super) fn insert(&mut self, seq: u64) {
        self.held.entry(seq).or_default();
    }

    /// A record that left the outbox (acknowledged or evicted).
    pub(super) fn remove(&mut self, seq: u64) {
        if let Some(slot) = self.held.remove(&seq)
            && slot.due_us != 0
        {
            self.sent.remove(&(slot.due_us, seq));
        }
    }

    /// Makes records whose timer expired by `now_us` due again.
    fn expire(&mut self, now_us: i64) {
        while let Some(&(due, seq)) = self.sent.first() {
            if due > now_us {
                break;
            }
            self.sent.pop_first();
            if let Some(slot) = self.held.get_mut(&seq) {
                slot.due_us = 0;
            }
        }
    }

    /// Records sent and waiting for their verdict at `now_us`.
    pub(super) fn in_flight(&mut self, now_us: i64) -> usize {
        self.expire(now_us);
        self.sent.len()
    }

    /// Up to `newest` of the most recent due records, then up to `oldest` of the oldest, as (seq, attempts).
    pub(super) fn due(&mut self, now_us: i64, newest: usize, oldest: usize) -> Vec<(u64, u32)> {
        self.expire(now_us);
        let is_due =
            |(seq, slot): (&u64, &Slot)| (slot.due_us == 0).then_some((*seq, slot.attempts));
        let mut out: Vec<(u64, u32)> = self
            .held
            .iter()
            .rev()
            .filter_map(is_due)
            .take(newest)
            .collect();
        let lowest_newest = out.last().map_or(u64::MAX, |(s, _)| *s);
        out.extend(
            self.held
                .iter()
                .filter_map(is_due)
                .take_while(|(s, _)| *s < lowest_newest)
                .take(oldest),
        );
        out
    }

    /// Records that `seq` was sent and is due again at `due_us` (monotonic, > 0).
    pub(super) fn mark_sent(&mut self, seq: u64, due_us: i64) {
        let Some(slot) = self.held.get_mut(&seq) else {
            return;
        };
        if slot.due_us != 0 {
            self.sent.remove(&(slot.due_us, seq));
        }
        slot.due_us = due_us.max(1);
        slot.attempts = slot.attempts.saturating_add(1);
        self.sent.insert((slot.due_us, seq));
    }

    /// Makes every record due now (after a reconnect).
    pub(super) fn resend_all(&mut self) {
        for (_, seq) in std::mem::take(&mut self.sent) {
            if let Some(slot) = self.held.get_mut(&seq) {
                slot.due_us = 0;
            }
        }
    }

    /// Number of held records.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(v: Vec<(u64, u32)>) -> Vec<u64> {
        v.into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn newest_first_then_oldest_without_repeats() {
        let mut h = Hot::default();
        (1..=10).for_each(|s| h.insert(s));
        assert_eq!(seqs(h.due(0, 2, 3)), vec![10, 9, 1, 2, 3]);
        // Fewer held than asked for: each once.
        let mut h = Hot::default();
        (1..=3).for_each(|s| h.insert(s));
        assert_eq!(seqs(h.due(0, 2, 5)), vec![3, 2, 1]);
    }

    #[test]
    fn sent_records_wait_for_their_timer_and_count_as_in_flight() {
        let mut h = Hot::default();
        (1..=4).for_each(|s| h.insert(s));
        h.mark_sent(4, 100);
        h.mark_sent(3, 200);
        assert_eq!(h.in_flight(50), 2);
        assert_eq!(seqs(h.due(50, 10, 0)), vec![2, 1]);
        assert_eq!(h.in_flight(100), 1, "seq 4's timer expired at 100");
        let due = h.due(150, 1, 0);
        assert_eq!(due, vec![(4, 1)], "due again, with its attempt counted");
        h.remove(3);
        assert_eq!(
            h.in_flight(150),
            0,
            "an acknowledged record is not in flight"
        );
        h.mark_sent(1, 300);
        h.resend_all();
        assert_eq!(h.in_flight(0), 0);
        assert_eq!(seqs(h.due(0, 10, 0)), vec![4, 2, 1]);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn marking_an_unknown_or_removed_record_changes_nothing() {
        let mut h = Hot::default();
        h.insert(1);
        h.remove(1);
        h.mark_sent(1, 10);
        assert_eq!(h.in_flight(0), 0);
        assert!(h.due(0, 5, 5).is_empty());
    }
}
