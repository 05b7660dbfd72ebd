//! Publishes due outbox records to the cloud, keeping at most `max_in_flight` sent and unacknowledged.
//!
//! Rounds run when woken (a commit by the intake, an acknowledgement by the settle stage, a reconnect) and at
//! least every 100 ms for resend timers; the send state they read is in memory (see the outbox spec), so a
//! round costs one read of each picked record and no write.
//!
//! Order: each round fills half the free window with the newest due records and half with the oldest, so
//! live suspects are not stuck behind a backlog and the backlog still drains. A sent record becomes due
//! again after `resend_after × 2^(attempts)` (capped at 8×, ±20 % jitter) unless its verdict deletes it.
//! Publishing returning `Ok` means only that the MQTT client queued the message; nothing is deleted here.
//! A record larger than the broker's maximum packet size is not sent: it goes to the settle stage as a
//! [`Refusal`], like a frame the broker refused in its PUBACK.

use crate::config::OutboxConfig;
use crate::link::{PublishError, Publisher, Refusal, Tag};
use crate::outbox::{Outbox, OutboxError, Record};
use crate::stats::{self, EdgeStats};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tierline_shared::mqtt::QoS;
use tierline_shared::topics::{EdgeAddress, TopicKind};
use tierline_shared::wire::{self, FrameEnvelope};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How often due records are checked without a wake-up.
const POLL: Duration = Duration::from_millis(100);
/// How long a round waits when the MQTT client's queue is full.
const BACKED_UP: Duration = Duration::from_millis(5);
/// How soon a failed round is tried again.
pub const RETRY: Duration = Duration::from_millis(500);

/// Builds the wire envelope of a record held by the outbox of `incarnation`.
pub fn envelope(
    addr: &EdgeAddress,
    model_version: &str,
    incarnation: &str,
    r: &Record,
) -> FrameEnvelope {
    let mut envelope = FrameEnvelope {
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
        incarnation: incarnation.into(),
        image_sha256: r.image_sha256.clone(),
        part_id: r.provenance.part_id_text().into(),
        origin: r.provenance.origin_text().into(),
        capture_clock: r.provenance.clock as i32,
        ..FrameEnvelope::default()
    };
    tierline_shared::action::set_local_action(&mut envelope, r.local_action);
    envelope
}

/// The uplink stage.
pub struct Uplink {
    /// Where the records wait.
    pub outbox: Outbox,
    /// Where frames are published (the event loop is polled by the link stage).
    pub publisher: Publisher,
    /// Records the broker would refuse, to the settle stage.
    pub refusals: mpsc::Sender<Refusal>,
    /// This edge.
    pub addr: EdgeAddress,
    /// The model serving (its version goes with each frame published).
    pub model: Arc<tierline_shared::serving::ServedModel>,
    /// Window and resend settings.
    pub cfg: OutboxConfig,
    /// Largest message the wire accepts.
    pub max_message_bytes: usize,
    /// Whether the link is up, from the link stage.
    pub link: watch::Receiver<bool>,
    /// Woken by the intake after each commit and by the settle stage after each acknowledgement.
    pub wake: Arc<Notify>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
}

impl Uplink {
    /// Runs until shutdown. An outbox that fails (a full or failing disk) does not stop it: the failure is
    /// counted and logged, and the round is tried again after [`RETRY`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), OutboxError> {
        let topic = self.addr.topic(TopicKind::Frames);
        let mut rng = rand::rngs::SmallRng::from_os_rng();
        let mut link = self.link.clone();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(if failing { RETRY } else { POLL }) => {}
                changed = link.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if *link.borrow_and_update() {
                        // Whatever was in flight when the link dropped may be gone: send it again now.
                        self.outbox.resend_all();
                    }
                }
            }
            if !*link.borrow() {
                continue;
            }
            match self.round(&topic, &mut rng, &shutdown).await {
                Ok(Round::Continue) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("Outbox readable again; forwarding resumes.");
                    }
                }
                Ok(Round::ClientGone) => return Ok(()),
                Err(e) => {
                    stats::inc(&self.stats.outbox_errors);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::error!(error = %e, "Outbox failed while forwarding; retrying. Frames are still decided locally at their deadline.");
                    }
                }
            }
        }
    }

    /// Publishes what is due and fits the window.
    async fn round(
        &self,
        topic: &str,
        rng: &mut rand::rngs::SmallRng,
        shutdown: &CancellationToken,
    ) -> Result<Round, OutboxError> {
        let (outbox, cfg) = (&self.outbox, &self.cfg);
        // Due times are monotonic and reset at every open (see the outbox spec): a wall-clock step cannot
        // make records look in flight.
        let now = tierline_shared::time::mono_us();
        let room = cfg
            .max_in_flight
            .get()
            .saturating_sub(outbox.in_flight(now));
        if room == 0 {
            return Ok(Round::Continue);
        }
        let due = outbox.due(now, room.div_ceil(2), room / 2).await?;
        let mut sent = Vec::with_capacity(due.len());
        let mut result = Round::Continue;
        let mut backed_up = false;
        for r in &due {
            let bytes = match wire::encode(
                &envelope(
                    &self.addr,
                    &self.model.manifest().version,
                    outbox.incarnation(),
                    r,
                ),
                self.max_message_bytes,
            ) {
                Ok(b) => b,
                Err(e) => {
                    // Cannot happen for records accepted under the same limit; if the limit was lowered since,
                    // retrying forever would block nothing but fill logs, so back off hard.
                    tracing::error!(seq = r.seq, error = %e, "Outbox record cannot be sent under the current size limit.");
                    sent.push((r.seq, now + 3_600_000_000));
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                break;
            }
            match self
                .publisher
                .publish(topic, QoS::AtLeastOnce, false, bytes, Tag::Frame(r.seq))
            {
                Ok(()) => {}
                Err(e @ PublishError::TooLarge { .. }) => {
                    stats::inc(&self.stats.frames_refused);
                    tracing::warn!(seq = r.seq, error = %e, action = "deciding the frame locally; it is not sent", "Frame too large for the broker.");
                    let refusal = Refusal {
                        seq: r.seq,
                        reason: e.to_string(),
                    };
                    // Not due again while the settle stage drops it.
                    sent.push((r.seq, now + 3_600_000_000));
                    if self.refusals.send(refusal).await.is_err() {
                        result = Round::ClientGone;
                        break;
                    }
                    continue;
                }
                Err(PublishError::Client(_)) if self.refusals.is_closed() => {
                    result = Round::ClientGone;
                    break;
                }
                Err(PublishError::Client(_)) => {
                    // The client's queue is full: the rest stays due and goes in a later round.
                    backed_up = true;
                    break;
                }
            }
            stats::inc(&self.stats.publishes);
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
        outbox.mark_sent(&sent);
        if backed_up {
            // Give the link stage time to drain the client's queue, then go on.
            tokio::time::sleep(BACKED_UP).await;
            self.wake.notify_one();
        } else if result == Round::Continue && due.len() == room.div_ceil(2) + room / 2 {
            // The window was filled and more may be due: go round again without waiting for a wake-up.
            self.wake.notify_one();
        }
        Ok(result)
    }
}

/// How a round ended.
#[derive(PartialEq)]
enum Round {
    /// Go on.
    Continue,
    /// The link or settle stage is gone (shutdown).
    ClientGone,
}
