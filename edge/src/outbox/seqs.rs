//! Sequence numbers for accepted frames, handed out from durable reservations (see the spec in [`super`]).
//!
//! The next block is reserved in the background when half of the current one is used, so handing out a
//! number does not wait on the disk: a frame's registration (and so its deadline) never waits behind a busy
//! or locked database. When no reserved number is at hand (the reservation failed, or it is still waiting
//! for the database after [`WAIT`]), frames get *volatile* numbers from [`VOLATILE_BASE`] up, unique within
//! this run of the process but not across restarts. A frame with a volatile number is never stored or
//! forwarded; it is decided locally under the offline policy.

use super::{Outbox, OutboxError, SEQ_BLOCK};
use std::ops::Range;
use std::time::Duration;
use tokio::task::JoinHandle;

/// First volatile sequence number (2^62): far above any durable reservation.
pub const VOLATILE_BASE: u64 = 1 << 62;

/// Longest wait for a pending reservation before a volatile number is handed out (the first reservation,
/// at start, is awaited in full).
pub const WAIT: Duration = Duration::from_millis(20);

/// Hands out sequence numbers from durable reservations.
pub struct SeqAllocator {
    outbox: Outbox,
    block: Range<u64>,
    next: Option<JoinHandle<Result<Range<u64>, OutboxError>>>,
    started: bool,
    volatile: u64,
    failing: bool,
}

impl SeqAllocator {
    /// An allocator that reserves from `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            block: 0..0,
            next: None,
            started: false,
            volatile: VOLATILE_BASE,
            failing: false,
        }
    }

    fn reserve(&mut self) {
        if self.next.is_none() {
            let outbox = self.outbox.clone();
            self.next = Some(tokio::spawn(async move { outbox.reserve_seqs().await }));
        }
    }

    /// The next sequence number: durable when a reservation is at hand, else volatile.
    pub async fn next(&mut self) -> u64 {
        if self.block.is_empty() {
            self.reserve();
            if let Some(pending) = self.next.as_mut() {
                let wait = if self.started { WAIT } else { Duration::MAX };
                let result = match tokio::time::timeout(wait, pending).await {
                    // Still waiting for the database: keep it pending, number this frame volatile.
                    Err(_) => None,
                    Ok(Ok(r)) => Some(r),
                    Ok(Err(e)) => Some(Err(OutboxError::Task(e.to_string()))),
                };
                if let Some(result) = result {
                    self.next = None;
                    self.started = true;
                    match result {
                        Ok(block) => {
                            if std::mem::take(&mut self.failing) {
                                tracing::info!(
                                    "Sequence numbers reserved again; frames are forwarded again."
                                );
                            }
                            self.block = block;
                        }
                        Err(e) => {
                            if !std::mem::replace(&mut self.failing, true) {
                                tracing::error!(error = %e, "Cannot reserve sequence numbers in the outbox; frames are decided locally and not forwarded until it can.");
                            }
                        }
                    }
                }
            }
        }
        match self.block.next() {
            Some(seq) => {
                if self.block.end - seq <= SEQ_BLOCK / 2 {
                    self.reserve();
                }
                seq
            }
            None => {
                self.volatile += 1;
                self.volatile - 1
            }
        }
    }
}

/// Whether `seq` is a volatile number (see the module doc).
pub fn is_volatile(seq: u64) -> bool {
    seq >= VOLATILE_BASE
}
