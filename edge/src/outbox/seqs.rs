//! Sequence numbers for accepted frames, handed out from durable reservations (see the spec in [`super`]).

use super::{Outbox, OutboxError};
use std::ops::Range;

/// Hands out sequence numbers from durable reservations.
pub struct SeqAllocator {
    outbox: Outbox,
    block: Range<u64>,
}

impl SeqAllocator {
    /// An allocator that reserves from `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            block: 0..0,
        }
    }

    /// The next sequence number.
    pub async fn next(&mut self) -> Result<u64, OutboxError> {
        if self.block.is_empty() {
            self.block = self.outbox.reserve_seqs().await?;
        }
        Ok(self.block.next().unwrap_or_default())
    }
}
