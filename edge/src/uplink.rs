//! Publishes due outbox records to the cloud, keeping at most `max_in_flight` sent and unacknowledged.
//!
//! Order: each round fills half the free window with the newest due records and half with the oldest, so
//! live suspects are not stuck behind a backlog and the backlog still drains. A sent record becomes due
//! again after `resend_after × 2^(attempts)` (capped at 8×, ±20 % jitter) unless its verdict deletes it.
//! Publishing returning `Ok` means only that the MQTT client queued the message; nothing is deleted here.

use crate::config::OutboxConfig;
use crate::outbox::{Outbox, OutboxError, Record};
use crate::stats::{self, EdgeStats};
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, QoS};
use std::sync::Arc;
use std::time::Duration;
use tierline_shared::topics::{EdgeAddress, TopicKind};
use tierline_shared::wire::{self, FrameEnvelope};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// How often due records are checked without a wake-up.
const POLL: Duration = Duration::from_millis(100);

/// Builds the wire envelope of a record.
pub fn envelope(addr: &EdgeAddress, model_version: &str, r: &Record) -> FrameEnvelope {
    FrameEnvelope {
        protocol_version: wire::PROTOCOL_VERSION,
        edge_id: addr.edge_id().into(),
        camera_id: r.camera_id.clone(),
        seq: r.seq,
        frame_id: r.frame_id.clone(),
        capture_time_us: r.capture_time_us,
        edge_model_version: model_version.into(),
        edge_score: r.score.clamp(0.0, 1.0),
        reason: r.reason as i32,
        encoding: r.encoding,
        image: r.image.clone(),
        site: addr.site().into(),
        line: addr.line().into(),
        edge_local_action: r.local_action.clone().unwrap_or_default(),
    }
}

/// Runs until shutdown.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    outbox: Outbox,
    client: AsyncClient,
    addr: EdgeAddress,
    model_version: String,
    cfg: OutboxConfig,
    max_message_bytes: usize,
    mut link: watch::Receiver<bool>,
    wake: Arc<Notify>,
    stats: Arc<EdgeStats>,
    shutdown: CancellationToken,
) -> Result<(), OutboxError> {
    let topic = addr.topic(TopicKind::Frames);
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            changed = link.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if *link.borrow_and_update() {
                    // Whatever was in flight when the link dropped may be gone: send it again now.
                    outbox.resend_all().await?;
                }
            }
        }
        if !*link.borrow() {
            continue;
        }
        let now = tierline_shared::time::now_us();
        let room = cfg
            .max_in_flight
            .get()
            .saturating_sub(outbox.in_flight(now).await?);
        if room == 0 {
            continue;
        }
        let due = outbox.due(now, room.div_ceil(2), room / 2).await?;
        let mut sent = Vec::with_capacity(due.len());
        for r in &due {
            let bytes = match wire::encode(&envelope(&addr, &model_version, r), max_message_bytes) {
                Ok(b) => b,
                Err(e) => {
                    // Cannot happen for records accepted under the same limit; if the limit was lowered since,
                    // retrying forever would block nothing but fill logs, so back off hard.
                    tracing::error!(seq = r.seq, error = %e, "Outbox record cannot be sent under the current size limit.");
                    sent.push((r.seq, now + 3_600_000_000));
                    continue;
                }
            };
            let publish = client.publish(topic.clone(), QoS::AtLeastOnce, false, bytes);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                res = publish => if res.is_err() { return Ok(()) },
            }
            stats::inc(&stats.publishes);
            tracing::debug!(
                seq = r.seq,
                attempt = r.attempts + 1,
                age_us = tierline_shared::time::now_us() - r.capture_time_us,
                "Frame published."
            );
            let factor = 1u32 << r.attempts.min(3);
            let jitter = rng.random_range(0.8..1.2);
            let wait = cfg.resend_after.saturating_mul(factor).mul_f64(jitter);
            sent.push((
                r.seq,
                now + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2),
            ));
        }
        if !sent.is_empty() {
            outbox.mark_sent(&sent).await?;
        }
    }
}

/// Passes verdicts on to the decision stage with what the outbox remembers about each frame, and deletes the
/// records once the events the verdicts caused are written. Runs until `rx` closes.
///
/// A crash before the deletion leaves the record: the frame is sent again, the cloud answers from its stored
/// verdict, and the record (with any local decision it remembers) settles the frame after the restart. The
/// decision or reconciliation line may then appear twice; it is never lost.
pub async fn acknowledge(
    outbox: Outbox,
    mut rx: tokio::sync::mpsc::Receiver<tierline_shared::wire::Verdict>,
    decisions: tokio::sync::mpsc::Sender<crate::decisions::Input>,
) -> Result<(), OutboxError> {
    use crate::decisions::Input;
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        // A repeated verdict in the same batch would settle the frame twice.
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        batch.retain(|v| seen.insert(v.seq));
        let seqs: Vec<u64> = batch.iter().map(|v| v.seq).collect();
        let mut known: std::collections::HashMap<u64, crate::outbox::Acked> = outbox
            .lookup(&seqs)
            .await?
            .into_iter()
            .map(|a| (a.seq, a))
            .collect();
        for v in batch.drain(..) {
            let known = known.remove(&v.seq);
            if decisions.send(Input::Verdict(v, known)).await.is_err() {
                return Ok(());
            }
        }
        let (done, written) = tokio::sync::oneshot::channel();
        if decisions.send(Input::Written(done)).await.is_err() || written.await.is_err() {
            // The decision stage or the sink stopped: keep the records; they settle after a restart.
            tracing::warn!(
                frames = seqs.len(),
                "Decision sink stopped before writing; acknowledged frames stay in the outbox."
            );
            return Ok(());
        }
        outbox.ack(&seqs).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::Input;
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
            })
            .collect();
        ob.append(&records).await.unwrap();
        ob.record_local(&[(1, "reject")]).await.unwrap();
        ob
    }

    fn verdict(seq: u64) -> Verdict {
        Verdict {
            seq,
            label: "good".into(),
            ..Verdict::default()
        }
    }

    /// Runs `acknowledge` on verdicts for `seqs`; the fake decision stage answers the write barrier only when
    /// `written` is true. Returns the verdicts it saw with what the outbox knew.
    async fn settle(ob: &Outbox, seqs: &[u64], written: bool) -> Vec<(u64, Option<String>)> {
        let (verdict_tx, verdict_rx) = tokio::sync::mpsc::channel(16);
        let (decision_tx, mut decision_rx) = tokio::sync::mpsc::channel(16);
        for &s in seqs {
            verdict_tx.send(verdict(s)).await.unwrap();
        }
        drop(verdict_tx);
        let acks = tokio::spawn(acknowledge(ob.clone(), verdict_rx, decision_tx));
        let mut seen = Vec::new();
        while let Some(input) = decision_rx.recv().await {
            match input {
                Input::Verdict(v, known) => seen.push((v.seq, known.and_then(|k| k.local_action))),
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
        assert_eq!(seen, vec![(1, Some("reject".into())), (2, None)]);
        assert_eq!(
            ob.lookup(&[1, 2]).await.unwrap().len(),
            2,
            "nothing is forgotten before the sink has written"
        );
        // After a restart the same verdicts come again and still find the local decision.
        let seen = settle(&ob, &[1, 2], true).await;
        assert_eq!(seen, vec![(1, Some("reject".into())), (2, None)]);
        assert!(ob.lookup(&[1, 2]).await.unwrap().is_empty());
    }
}
