//! Settling a frame: verdict → decision → durable barrier → delete.
//!
//! The cloud's verdict is the application-level acknowledgement of a forwarded frame. This stage owns the
//! path that turns it into a forgotten outbox record, in this order:
//!
//! 1. read what the outbox remembers about each verdict's frame (its local decision, if the deadline passed
//!    first) — [`Outbox::lookup`];
//! 2. hand verdict and memory to the decision stage, which emits the decision, reconciliation or audit event;
//! 3. send a write barrier ([`Input::Written`]) through the decision stage to the sink, which answers it once
//!    every event before it has been written ([`crate::decisions::SinkItem::Barrier`]);
//! 4. only then delete the records — [`Outbox::ack`].
//!
//! A crash anywhere before step 4 leaves the record: the frame is sent again, the cloud answers from its
//! stored verdict, and the record (with any local decision it remembers) settles the frame after the restart.
//! The decision or reconciliation line may then appear twice; it is never lost.
//!
//! A verdict settles a record only if it names the record's outbox incarnation and image
//! ([`wire::verdict_matches`]). Anything else is a verdict for another frame that happens to share the seq
//! (an outbox that was lost and recreated, or restored from an old copy, while the cloud still holds the
//! earlier frame): it is refused, counted and logged, and the record stays until its own verdict comes.
//!
//! A frame the broker refused ([`Refusal`]: a PUBACK with a refusal reason, or too large for the broker) can
//! never get a verdict. It takes the same path without a verdict: the decision stage decides it locally with
//! the reason ([`Input::Refused`]), and after the barrier its record is deleted, so it is not sent forever.

use crate::decisions::Input;
use crate::link::Refusal;
use crate::outbox::{Acked, Outbox, OutboxError};
use crate::stats::{self, EdgeStats};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tierline_shared::wire::{self, Verdict};
use tokio::sync::{Notify, mpsc, oneshot};

/// Most verdicts settled per barrier.
const BATCH: usize = 64;

/// The settle stage.
pub struct Settle {
    /// Where the records are.
    pub outbox: Outbox,
    /// Verdicts, from the link stage.
    pub verdicts: mpsc::Receiver<Verdict>,
    /// Frames the broker refused, from the link and uplink stages.
    pub refusals: mpsc::Receiver<Refusal>,
    /// Verdicts and barriers, to the decision stage.
    pub decisions: mpsc::Sender<Input>,
    /// Woken after each acknowledgement (the uplink's window has room again).
    pub uplink: Arc<Notify>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
}

impl Settle {
    /// Runs until the link stage closes its side.
    pub async fn run(self) -> Result<(), OutboxError> {
        let Settle {
            outbox,
            verdicts: mut rx,
            mut refusals,
            decisions,
            uplink,
            stats,
        } = self;
        let mut batch = Vec::with_capacity(BATCH);
        let mut refused = Vec::with_capacity(BATCH);
        let mut refusals_open = true;
        loop {
            tokio::select! {
                // Refusals first: they are rare, and those already queued are settled before a shutdown.
                biased;
                n = refusals.recv_many(&mut refused, BATCH), if refusals_open => {
                    if n == 0 {
                        refusals_open = false;
                    } else if !settle_refused(&outbox, &mut refused, &decisions, &stats).await {
                        return Ok(());
                    } else {
                        uplink.notify_one();
                    }
                    continue;
                },
                n = rx.recv_many(&mut batch, BATCH) => if n == 0 {
                    break;
                },
            }
            // A repeated verdict in the same batch would settle the frame twice.
            let mut seen = HashSet::with_capacity(batch.len());
            batch.retain(|v: &Verdict| seen.insert(v.seq));
            let seqs: Vec<u64> = batch.iter().map(|v| v.seq).collect();
            let mut known: HashMap<u64, Acked> = retry("look up", &stats, || outbox.lookup(&seqs))
                .await
                .into_iter()
                .map(|a| (a.seq, a))
                .collect();
            let incarnation = outbox.incarnation();
            let mut seqs = seqs;
            batch.retain(|v| {
                let held = known.get(&v.seq).map_or(&[][..], |k| &k.image_sha256[..]);
                if wire::verdict_matches(v, incarnation, held) {
                    return true;
                }
                stats::inc(&stats.verdicts_mismatched);
                tracing::warn!(
                    seq = v.seq,
                    verdict_incarnation = %v.incarnation,
                    outbox_incarnation = %incarnation,
                    verdict_image = %hex::encode(&v.image_sha256),
                    held_image = %hex::encode(held),
                    "Verdict names another frame than the one held under its seq; refused. The record stays until its own verdict arrives."
                );
                known.remove(&v.seq);
                seqs.retain(|s| *s != v.seq);
                false
            });
            for v in batch.drain(..) {
                let known = known.remove(&v.seq);
                if decisions.send(Input::Verdict(v, known)).await.is_err() {
                    return Ok(());
                }
            }
            match barrier(&decisions).await {
                Written::Yes => {}
                Written::Never => {
                    tracing::warn!(
                        frames = seqs.len(),
                        "Decision sink cannot make these lines durable; the frames stay in the outbox."
                    );
                    continue;
                }
                Written::Stopped => {
                    // The decision stage stopped: keep the records; they settle after a restart.
                    tracing::warn!(
                        frames = seqs.len(),
                        "Decision stage stopped before writing; acknowledged frames stay in the outbox."
                    );
                    return Ok(());
                }
            }
            retry("delete", &stats, || outbox.ack(&seqs)).await;
            // Room in the in-flight window: the uplink sends the next records now, not at its next poll.
            uplink.notify_one();
        }
        Ok(())
    }
}

/// Decides refused frames locally, waits until the decisions are written, then deletes their records.
/// Returns `false` if the decision stage or the sink stopped (the records then stay).
async fn settle_refused(
    outbox: &Outbox,
    refused: &mut Vec<Refusal>,
    decisions: &mpsc::Sender<Input>,
    stats: &EdgeStats,
) -> bool {
    let seqs: Vec<u64> = refused.iter().map(|r| r.seq).collect();
    for r in refused.drain(..) {
        if decisions
            .send(Input::Refused(r.seq, r.reason))
            .await
            .is_err()
        {
            return false;
        }
    }
    match barrier(decisions).await {
        Written::Yes => {
            retry("delete", stats, || outbox.ack(&seqs)).await;
        }
        Written::Never => {
            tracing::warn!(
                frames = seqs.len(),
                "Decision sink cannot make these lines durable; the refused frames stay in the outbox."
            );
        }
        Written::Stopped => return false,
    }
    true
}

/// What became of a write barrier.
enum Written {
    /// Every line before it is durable.
    Yes,
    /// The sink dropped it: a line before it will never be durable (the sink failed for good, or stopped).
    Never,
    /// The decision stage is gone.
    Stopped,
}

/// Sends a write barrier through the decision stage and waits for the sink's answer.
async fn barrier(decisions: &mpsc::Sender<Input>) -> Written {
    let (done, written) = oneshot::channel();
    if decisions.send(Input::Written(done)).await.is_err() {
        return Written::Stopped;
    }
    match written.await {
        Ok(()) => Written::Yes,
        Err(_) => Written::Never,
    }
}

/// Runs an outbox operation until it succeeds, backing off from 100 ms to 2 s: a full or failing disk
/// delays settling (verdicts wait, records stay, line decisions go on), it does not stop the edge.
async fn retry<T, F, Fut>(what: &str, stats: &EdgeStats, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OutboxError>>,
{
    let mut wait = std::time::Duration::from_millis(100);
    let mut logged = false;
    loop {
        match op().await {
            Ok(v) => {
                if logged {
                    tracing::info!(op = what, "Outbox works again; settling resumes.");
                }
                return v;
            }
            Err(e) => {
                stats::inc(&stats.outbox_errors);
                if !logged {
                    tracing::error!(op = what, error = %e, "Outbox failed while settling verdicts; retrying. Records stay until it works.");
                    logged = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutboxConfig;
    use crate::outbox::Record;
    use tierline_shared::action::Action;
    use tierline_shared::wire::ForwardReason;
    use tierline_shared::wire::Verdict;

    async fn outbox_with(dir: &std::path::Path, seqs: &[u64]) -> Outbox {
        let cfg = OutboxConfig {
            path: dir.join("outbox.db"),
            ..OutboxConfig::default()
        };
        let ob = Outbox::open(&cfg).await.unwrap();
        let records: Vec<Record> = seqs
            .iter()
            .map(|&seq| Record {
                seq,
                frame_id: format!("e-{seq}"),
                camera_id: "cam".into(),
                capture_time_us: seq as i64,
                reason: ForwardReason::Suspect,
                score: 0.9,
                encoding: 1,
                image: vec![1; 16],
                attempts: 0,
                local_action: None,
                image_sha256: vec![seq as u8; 32],
                provenance: Default::default(),
                edge_label: String::new(),
            })
            .collect();
        ob.append(&records).await.unwrap();
        ob.record_local(&[(1, Action::Reject)]).await.unwrap();
        ob
    }

    fn verdict(seq: u64) -> Verdict {
        Verdict {
            seq,
            label: "good".into(),
            ..Verdict::default()
        }
    }

    /// Runs the settle stage on verdicts for `seqs`; the fake decision stage answers the write barrier only when
    /// `written` is true. Returns the verdicts it saw with what the outbox knew.
    async fn settle(ob: &Outbox, seqs: &[u64], written: bool) -> Vec<(u64, Option<Action>)> {
        let verdicts: Vec<Verdict> = seqs.iter().map(|&s| verdict(s)).collect();
        settle_verdicts(ob, verdicts, written, &Arc::default()).await
    }

    async fn settle_verdicts(
        ob: &Outbox,
        verdicts: Vec<Verdict>,
        written: bool,
        stats: &Arc<EdgeStats>,
    ) -> Vec<(u64, Option<Action>)> {
        settle_all(ob, verdicts, Vec::new(), written, stats).await
    }

    async fn settle_all(
        ob: &Outbox,
        verdicts: Vec<Verdict>,
        refused: Vec<Refusal>,
        written: bool,
        stats: &Arc<EdgeStats>,
    ) -> Vec<(u64, Option<Action>)> {
        let (verdict_tx, verdict_rx) = tokio::sync::mpsc::channel(16);
        let (refusal_tx, refusal_rx) = tokio::sync::mpsc::channel(16);
        let (decision_tx, mut decision_rx) = tokio::sync::mpsc::channel(16);
        for r in refused {
            refusal_tx.send(r).await.unwrap();
        }
        drop(refusal_tx);
        for v in verdicts {
            verdict_tx.send(v).await.unwrap();
        }
        drop(verdict_tx);
        let acks = tokio::spawn(
            Settle {
                outbox: ob.clone(),
                verdicts: verdict_rx,
                refusals: refusal_rx,
                decisions: decision_tx,
                uplink: Arc::new(Notify::new()),
                stats: stats.clone(),
            }
            .run(),
        );
        let mut seen = Vec::new();
        while let Some(input) = decision_rx.recv().await {
            match input {
                Input::Verdict(v, known) => seen.push((v.seq, known.and_then(|k| k.local_action))),
                Input::Refused(seq, _) => seen.push((seq, None)),
                Input::Written(done) if written => done.send(()).unwrap(),
                // The sink died before writing: the barrier is dropped unanswered.
                Input::Written(_) => break,
                other => panic!("unexpected input {other:?}"),
            }
        }
        drop(decision_rx);
        acks.await.unwrap().unwrap();
        seen
    }

    #[tokio::test]
    async fn records_stay_until_the_sink_wrote_what_their_verdicts_caused() {
        let dir = tempfile::tempdir().unwrap();
        let ob = outbox_with(dir.path(), &[1, 2]).await;
        // A repeated verdict in one batch settles the frame once; the local decision comes along.
        let seen = settle(&ob, &[1, 1, 2], false).await;
        assert_eq!(seen, vec![(1, Some(Action::Reject)), (2, None)]);
        assert_eq!(
            ob.lookup(&[1, 2]).await.unwrap().len(),
            2,
            "nothing is forgotten before the sink has written"
        );
        // After a restart the same verdicts come again and still find the local decision.
        let seen = settle(&ob, &[1, 2], true).await;
        assert_eq!(seen, vec![(1, Some(Action::Reject)), (2, None)]);
        assert!(ob.lookup(&[1, 2]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_refused_frame_is_decided_and_its_record_deleted_only_after_the_sink_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let ob = outbox_with(dir.path(), &[1, 2]).await;
        let refusal = |seq| Refusal {
            seq,
            reason: "the broker refused the frame: not authorized".into(),
        };
        let seen = settle_all(&ob, Vec::new(), vec![refusal(1)], false, &Arc::default()).await;
        assert_eq!(seen, vec![(1, None)]);
        assert_eq!(
            ob.lookup(&[1]).await.unwrap().len(),
            1,
            "kept until the decision is written"
        );
        let seen = settle_all(&ob, Vec::new(), vec![refusal(1)], true, &Arc::default()).await;
        assert_eq!(seen, vec![(1, None)]);
        assert!(ob.lookup(&[1]).await.unwrap().is_empty());
        assert_eq!(ob.lookup(&[2]).await.unwrap().len(), 1, "others stay");
    }

    #[tokio::test]
    async fn a_verdict_for_another_image_or_incarnation_never_settles_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let ob = outbox_with(dir.path(), &[1, 2, 3]).await;
        let stats = Arc::new(EdgeStats::default());
        let other_image = Verdict {
            incarnation: ob.incarnation().into(),
            image_sha256: vec![9; 32],
            ..verdict(1)
        };
        let other_outbox = Verdict {
            incarnation: "0123456789abcdef".into(),
            image_sha256: vec![2; 32],
            ..verdict(2)
        };
        let own = Verdict {
            incarnation: ob.incarnation().into(),
            image_sha256: vec![3; 32],
            ..verdict(3)
        };
        let seen = settle_verdicts(&ob, vec![other_image, other_outbox, own], true, &stats).await;
        assert_eq!(
            seen,
            vec![(3, None)],
            "only the verdict for the held image counts"
        );
        assert_eq!(stats::get(&stats.verdicts_mismatched), 2);
        let left: Vec<u64> = ob
            .lookup(&[1, 2, 3])
            .await
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect();
        assert_eq!(left, vec![1, 2], "refused verdicts leave their records");
    }
}
