//! The decision stage: drives the [`Book`] with deadline timers and the inputs of the other stages, and
//! the recorder that writes provisional local decisions into the outbox.

use super::{Action, Book, Event, Input, SinkItem as Item, Source};
use crate::outbox::Outbox;
use crate::stats::{self, EdgeStats};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

/// The decision stage.
pub struct Decisions {
    /// Decision state.
    pub book: Book,
    /// Decisions to emit first: suspects a crash left undecided past their deadline (already recorded in the
    /// outbox, so their verdicts find them).
    pub at_start: Vec<Event>,
    /// From the prescreen, the intake and the settle stage.
    pub inputs: mpsc::Receiver<Input>,
    /// Events and barriers, to the sink.
    pub sink: mpsc::Sender<Item>,
    /// Provisional local decisions, to the recorder. Unbounded, so a slow disk never holds up a decision;
    /// it holds at most one entry per provisional decision not yet recorded.
    pub local: mpsc::UnboundedSender<(u64, Action)>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
}

impl Decisions {
    /// Runs until every input closes, then decides whatever is still waiting.
    pub async fn run(self, shutdown: CancellationToken) {
        let Decisions {
            mut book,
            at_start,
            mut inputs,
            sink,
            local,
            stats,
        } = self;
        for e in at_start {
            account(&stats, &e);
            if sink.send(Item::Event(e)).await.is_err() {
                return;
            }
        }
        let mut timers: DelayQueue<u64> = DelayQueue::new();
        let mut keys: HashMap<u64, delay_queue::Key> = HashMap::new();
        loop {
            let event = tokio::select! {
                // Not biased: under a flood of inputs (backlog verdicts after a partition) deadlines must still fire.
                input = inputs.recv() => match input {
                    None => break,
                    Some(Input::Captured(c)) => {
                        let deadline = book.deadline_of(c.captured_at);
                        let seq = c.seq;
                        book.captured(c);
                        let key = timers.insert_at(seq, tokio::time::Instant::from_std(deadline));
                        keys.insert(seq, key);
                        None
                    }
                    Some(Input::Immediate(e)) => {
                        if let Event::Decision { seq, .. } = &e
                            && let Some(key) = keys.remove(seq)
                        {
                            timers.remove(&key);
                        }
                        book.immediate(e)
                    }
                    Some(Input::Forwarded(p)) => {
                        let deadline = book.deadline_of(p.captured_at);
                        let seq = p.seq;
                        if book.insert(p) {
                            // The timer set at capture still runs to the same deadline.
                            keys.entry(seq).or_insert_with(|| {
                                timers.insert_at(seq, tokio::time::Instant::from_std(deadline))
                            });
                        } else if let Some(key) = keys.remove(&seq) {
                            timers.remove(&key);
                        }
                        None
                    }
                    Some(Input::Verdict(v, known)) => {
                        if let Some(key) = keys.remove(&v.seq) {
                            timers.remove(&key);
                        }
                        let e = book.verdict(&v, known.as_ref());
                        if e.is_none() {
                            tracing::debug!(seq = v.seq, "Verdict for a frame already settled or from before a restart.");
                        }
                        e
                    }
                    Some(Input::Unheld(seqs)) => {
                        for seq in seqs {
                            book.unheld(seq);
                        }
                        None
                    }
                    Some(Input::Refused(seq, reason)) => {
                        if let Some(key) = keys.remove(&seq) {
                            timers.remove(&key);
                        }
                        book.refused(seq, &reason)
                    }
                    Some(Input::Written(done)) => {
                        let _ = sink.send(Item::Barrier(done)).await;
                        None
                    }
                },
                // Only polled while timers exist: an empty DelayQueue would report completion.
                Some(expired) = futures_next(&mut timers), if !timers.is_empty() => {
                    let seq = expired.into_inner();
                    keys.remove(&seq);
                    book.expire(seq)
                }
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => None,
            };
            if let Some(e) = event {
                if let Event::Decision {
                    seq,
                    action,
                    provisional: true,
                    ..
                } = &e
                {
                    let _ = local.send((*seq, *action));
                }
                account(&stats, &e);
                if sink.send(Item::Event(e)).await.is_err() {
                    break;
                }
            }
        }
        for e in book.drain() {
            if let Event::Decision { seq, action, .. } = &e {
                let _ = local.send((*seq, *action));
            }
            account(&stats, &e);
            let _ = sink.send(Item::Event(e)).await;
        }
    }
}

/// Writes provisional local decisions into the outbox, batched.
pub struct LocalRecorder {
    /// Where the records are.
    pub outbox: Outbox,
    /// Provisional decisions, from the decision stage.
    pub decided: mpsc::UnboundedReceiver<(u64, Action)>,
}

impl LocalRecorder {
    /// Runs until the decision stage closes its side.
    pub async fn run(self) {
        let LocalRecorder {
            outbox,
            decided: mut rx,
        } = self;
        let mut batch = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, 64).await > 0 {
            if let Err(e) = outbox.record_local(&batch).await {
                tracing::error!(error = %e, frames = batch.len(), "Could not record local decisions in the outbox; a restart would not reconcile them.");
            }
            batch.clear();
        }
    }
}

async fn futures_next(q: &mut DelayQueue<u64>) -> Option<delay_queue::Expired<u64>> {
    std::future::poll_fn(|cx| q.poll_expired(cx)).await
}

fn account(stats: &EdgeStats, e: &Event) {
    match e {
        Event::Decision {
            source,
            latency_us,
            truth,
            action,
            ..
        } => {
            stats::inc(&stats.decisions);
            // Against the ground truth a synthetic camera knows; a quarantined frame is held, not passed.
            match *truth {
                Some("good") => {
                    stats::inc(&stats.truth_goods);
                    if *action == Action::Reject {
                        stats::inc(&stats.truth_false_rejects);
                    }
                }
                Some(_) => {
                    stats::inc(&stats.truth_defects);
                    if *action == Action::Pass {
                        stats::inc(&stats.truth_escapes);
                    }
                }
                None => {}
            }
            match source {
                Source::Cloud => {
                    stats::inc(&stats.decisions_cloud);
                    stats::record_decision(stats, *latency_us);
                }
                Source::LocalFallback => {
                    stats::inc(&stats.decisions_fallback);
                    stats::record_decision(stats, *latency_us);
                }
                Source::Unscored => {
                    stats::inc(&stats.decisions_unscored);
                    stats::record_decision(stats, *latency_us);
                }
                Source::Edge | Source::Unreadable => {}
            }
        }
        Event::Reconciliation { agree, .. } => {
            stats::inc(&stats.reconciliations);
            if !agree {
                stats::inc(&stats.disagreements);
            }
        }
        Event::Audit { miss, .. } => {
            if *miss {
                stats::inc(&stats.audit_misses);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(truth: Option<&'static str>, action: Action) -> Event {
        Event::Decision {
            seq: 1,
            frame_id: "f".into(),
            camera_id: "c".into(),
            action,
            source: Source::Edge,
            provisional: false,
            edge_score: 0.0,
            cloud_label: None,
            truth,
            latency_us: 0,
            capture_time_us: 0,
            provenance: Default::default(),
            detail: None,
            regions: Vec::new(),
        }
    }

    #[test]
    fn escapes_and_false_rejects_follow_the_ground_truth() {
        let stats = EdgeStats::default();
        for (truth, action) in [
            (Some("good"), Action::Pass),
            (Some("good"), Action::Reject),     // a false reject
            (Some("good"), Action::Quarantine), // held: neither
            (Some("scratch"), Action::Pass),    // an escape
            (Some("scratch"), Action::Reject),
            (Some("dent"), Action::Quarantine), // held, not passed
            (None, Action::Pass),               // no truth: not counted
        ] {
            account(&stats, &decision(truth, action));
        }
        assert_eq!(stats::get(&stats.decisions), 7);
        assert_eq!(stats::get(&stats.truth_goods), 3);
        assert_eq!(stats::get(&stats.truth_defects), 3);
        assert_eq!(stats::get(&stats.truth_false_rejects), 1);
        assert_eq!(stats::get(&stats.truth_escapes), 1);
    }
}
