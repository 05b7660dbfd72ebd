//! The intake stage: accepts forwarded frames into the outbox with grouped commits (one fsync per batch), then registers them
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

/// The intake stage.
pub struct Intake {
    /// Where frames are kept.
    pub outbox: Outbox,
    /// Frames to forward, from the prescreen.
    pub frames: mpsc::Receiver<Forward>,
    /// Registrations, to the decision stage.
    pub decisions: mpsc::Sender<Input>,
    /// Wakes the uplink after each commit.
    pub uplink: Arc<Notify>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
    /// Most records per commit.
    pub commit_batch: usize,
}

impl Intake {
    /// Runs until the prescreen closes its side.
    pub async fn run(self) {
        let Intake {
            outbox,
            frames: mut rx,
            decisions,
            uplink,
            stats,
            commit_batch,
        } = self;
        let mut batch: Vec<Forward> = Vec::with_capacity(commit_batch);
        while rx.recv_many(&mut batch, commit_batch).await > 0 {
            // Register with the decision stage first: the deadline runs from capture whatever the disk does, and
            // a verdict (which can only follow the commit and the publish) never overtakes its registration.
            for f in &batch {
                let _ = decisions.send(Input::Forwarded(f.pending.clone())).await;
            }
            let records: Vec<Record> = batch.iter().map(|f| f.record.clone()).collect();
            let started = std::time::Instant::now();
            let appended = outbox.append(&records).await;
            stats.outbox_commit.observe(started.elapsed());
            match appended {
                Ok(evicted) => {
                    for e in &evicted {
                        tracing::warn!(seq = e.seq, reason = ?e.reason, score = e.score, "Outbox budget reached; evicted a frame by policy (audits first, then lowest scores).");
                    }
                    stats::add(&stats.evictions, evicted.len() as u64);
                    if !evicted.is_empty() {
                        let seqs = evicted.iter().map(|e| e.seq).collect();
                        let _ = decisions.send(Input::Unheld(seqs)).await;
                    }
                    for f in &batch {
                        if evicted.iter().any(|e| e.seq == f.record.seq) {
                            continue;
                        }
                        match f.record.reason {
                            ForwardReason::Audit => stats::inc(&stats.frames_audit),
                            _ => stats::inc(&stats.frames_suspect),
                        }
                        stats::add(&stats.bytes_forwarded, f.record.image.len() as u64);
                    }
                    uplink.notify_one();
                }
                Err(e) => {
                    // The frames cannot be kept: suspects still get their decision locally at the deadline.
                    tracing::error!(frames = batch.len(), error = %e, "Outbox refused frames; they are decided locally and not forwarded.");
                    stats::add(&stats.outbox_errors, batch.len() as u64);
                    let seqs = batch.iter().map(|f| f.record.seq).collect();
                    let _ = decisions.send(Input::Unheld(seqs)).await;
                }
            }
            batch.clear();
        }
    }
}
