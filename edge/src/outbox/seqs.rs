//! Sequence numbers for accepted frames, handed out from durable reservations (see the spec in [`super`]).
//!
//! When a reservation cannot be written (a full or failing disk), frames still need numbers to be decided:
//! they get *volatile* numbers from [`VOLATILE_BASE`] up, unique within this run of the process but not
//! across restarts. A frame with a volatile number is never stored or forwarded; it is decided locally under
//! the offline policy. The allocator tries a durable reservation again for every frame until one succeeds.

use super::Outbox;
use std::ops::Range;

/// First volatile sequence number (2^62): far above any durable reservation.
pub const VOLATILE_BASE: u64 = 1 << 62;

/// Hands out sequence numbers from durable reservations.
pub struct SeqAllocator {
    outbox: Outbox,
    block: Range<u64>,
    volatile: u64,
    failing: bool,
}

impl SeqAllocator {
    /// An allocator that reserves from `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            block: 0..0,
            volatile: VOLATILE_BASE,
            failing: false,
        }
    }

    /// The next sequence number: durable when a reservation holds or can be made, else volatile.
    pub async fn next(&mut self) -> u64 {
        if self.block.is_empty() {
            match self.outbox.reserve_seqs().await {
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
                    self.volatile += 1;
                    return self.volatile - 1;
                }
            }
        }
        self.block.next().unwrap_or_default()
    }
}

/// Whether `seq` is a volatile number (see the module doc).
pub fn is_volatile(seq: u64) -> bool {
    seq >= VOLATILE_BASE
}
