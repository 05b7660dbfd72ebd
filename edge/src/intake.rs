//! Accepts forwarded frames into the outbox with grouped commits (one fsync per batch), then registers them
//! with the decision stage and wakes the uplink. A frame is published only after its commit returned.

use crate::decisions::{Input, Pending};
use crate::outbox::{Outbox, Record};
use crate::stats::{self, EdgeStats};
use std::sync::Arc;
use tierline_shared::wire::ForwardReason;
use tokio::sync::{Notify, mpsc};

/// A frame to forward.
#[derive(Debug)]
pub struct Forward {
    /// What the outbox stores.
    pub record: Record,
    /// What the decision stage tracks.
    pub pending: Pending,
}

/// Runs until `rx` closes.
pub async fn run(
    outbox: Outbox,
    mut rx: mpsc::Receiver<Forward>,
    decisions: mpsc::Sender<Input>,
    uplink: Arc<Notify>,
    stats: Arc<EdgeStats>,
    commit_batch: usize,
) {
    let mut batch: Vec<Forward> = Vec::with_capacity(commit_batch);
    while rx.recv_many(&mut batch, commit_batch).await > 0 {
        let records: Vec<Record> = batch.iter().map(|f| f.record.clone()).collect();
        let stored = match outbox.append(&records).await {
            Ok(evicted) => {
                for e in &evicted {
                    tracing::warn!(seq = e.seq, reason = ?e.reason, score = e.score, "Outbox budget reached; evicted a frame by policy (audits first, then lowest scores).");
                }
                stats::add(&stats.evictions, evicted.len() as u64);
                for f in &batch {
                    match f.record.reason {
                        ForwardReason::Audit => stats::inc(&stats.frames_audit),
                        _ => stats::inc(&stats.frames_suspect),
                    }
                    stats::add(&stats.bytes_forwarded, f.record.image.len() as u64);
                }
                uplink.notify_one();
                if let Some(f) = batch.first() {
                    tracing::debug!(
                        frames = batch.len(),
                        age_us = f.pending.captured_at.elapsed().as_micros() as u64,
                        "Outbox commit done."
                    );
                }
                true
            }
            Err(e) => {
                // The frames cannot be kept: suspects still get their decision locally at the deadline.
                tracing::error!(frames = batch.len(), error = %e, "Outbox refused frames; they are decided locally and not forwarded.");
                stats::add(&stats.outbox_errors, batch.len() as u64);
                false
            }
        };
        for f in batch.drain(..) {
            if stored || !f.pending.audit {
                let _ = decisions.send(Input::Forwarded(f.pending)).await;
            }
        }
    }
}
