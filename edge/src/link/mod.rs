//! The edge's MQTT session: connection state, presence (retained birth + last will), heartbeats, and
//! incoming verdicts.
//!
//! The session is persistent (MQTT 5 `clean_start = false` with a session expiry of [`SESSION_EXPIRY`],
//! client id `tierline-edge-<edge_id>`), so verdicts the cloud publishes while the edge is away wait at the
//! broker. The event loop is polled here and nowhere else; this task never awaits a full request channel (it
//! only uses `try_*` calls), which would deadlock.
//!
//! PUBACKs are matched to what was published ([`publisher`]): a frame the broker refuses (ACL denial,
//! quota) goes to the settle stage as a [`Refusal`], which decides it locally and drops the record instead
//! of sending it again forever; any other refused message is counted and logged.

use crate::stats::{self, EdgeStats};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_shared::mqtt::Event;
use tierline_shared::mqtt::{Backoff, EventLoop, MqttConfig, Packet, QoS};
use tierline_shared::topics::{self, EdgeAddress, TopicKind};
use tierline_shared::wire::{self, PresenceState, Verdict};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

mod presence;
pub mod publisher;

use presence::presence;
pub use presence::{Heartbeats, SESSION_EXPIRY, client_id, options};
pub use publisher::{PublishError, Publisher, Refusal, Tag, Tracker};

/// The link stage: the only poller of the MQTT event loop.
pub struct Link {
    /// The event loop.
    pub eventloop: EventLoop,
    /// Its publishing side.
    pub publisher: Publisher,
    /// Matches PUBACKs to what was published.
    pub tracker: Tracker,
    /// Frames the broker refused, to the settle stage.
    pub refusals: mpsc::Sender<Refusal>,
    /// This edge.
    pub addr: EdgeAddress,
    /// Connection settings.
    pub mqtt: MqttConfig,
    /// The model serving, announced in presence messages.
    pub model: std::sync::Arc<tierline_shared::serving::ServedModel>,
    /// Verdicts, to the settle stage.
    pub verdicts: mpsc::Sender<Verdict>,
    /// Whether the link is up, to the uplink.
    pub link: watch::Sender<bool>,
    /// Part triggers, to the cameras in trigger mode (the trigger topic is subscribed only when there are
    /// any).
    pub triggers: crate::camera::triggers::Triggers,
    /// The model targets this edge follows (none without model updates): their retained announcements
    /// (`tierline/targets/v1/<target>/<model>`) are subscribed, and each one wakes `wake_updates`.
    pub update_targets: Vec<String>,
    /// Wakes the updates stage.
    pub wake_updates: Arc<tokio::sync::Notify>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
}

impl Link {
    /// Polls the event loop until shutdown: tracks link state, announces presence, forwards verdicts.
    pub async fn run(self, shutdown: CancellationToken) {
        let Link {
            mut eventloop,
            publisher,
            tracker,
            refusals,
            addr,
            mqtt,
            model,
            verdicts,
            link,
            triggers,
            update_targets,
            wake_updates,
            stats,
        } = self;
        let target_filters: Vec<String> = update_targets
            .iter()
            .map(|t| topics::target_filter(t))
            .collect();
        let verdict_topic = addr.topic(TopicKind::Verdicts);
        let trigger_topic = addr.topic(TopicKind::Trigger);
        let mut backoff = Backoff::new(mqtt.reconnect_delay, Duration::from_secs(30));
        // Verdicts and refusals wait here while the settle stage is busy. This task never awaits the settle
        // stage: settling can wait on a PUBACK (the MQTT decision sink's barrier) that only this task's
        // polling can process. What waits is bounded by what this edge sent: each verdict and each
        // refusal answers one of its publishes, of which at most `outbox.max_in_flight` are out per resend.
        let mut verdict_queue: VecDeque<Verdict> = VecDeque::new();
        let mut refusal_queue: VecDeque<Refusal> = VecDeque::new();
        loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = verdicts.reserve(), if !verdict_queue.is_empty() => {
                    match (permit, verdict_queue.pop_front()) {
                        (Ok(p), Some(v)) => p.send(v),
                        _ => break,
                    }
                    continue;
                }
                permit = refusals.reserve(), if !refusal_queue.is_empty() => {
                    match (permit, refusal_queue.pop_front()) {
                        (Ok(p), Some(r)) => p.send(r),
                        _ => break,
                    }
                    continue;
                }
                polled = tierline_shared::mqtt::poll(&mut eventloop) => polled,
            };
            let client = publisher.client();
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff.reset();
                    stats::inc(&stats.link_connects);
                    let broker_max = ack.properties.as_ref().and_then(|p| p.max_packet_size);
                    tracker.broker_max(broker_max);
                    tracing::info!(
                        session_present = ack.session_present,
                        broker_max_packet = ?broker_max,
                        "Connected to the broker."
                    );
                    let _ = client.try_subscribe(verdict_topic.clone(), QoS::AtLeastOnce);
                    if triggers.any() {
                        let _ = client.try_subscribe(trigger_topic.clone(), QoS::AtLeastOnce);
                    }
                    for filter in &target_filters {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    let _ = publisher.publish(
                        &addr.topic(TopicKind::Presence),
                        QoS::AtLeastOnce,
                        true,
                        presence(&addr, PresenceState::Online, &model.manifest().version),
                        Tag::Other("presence"),
                    );
                    stats.link_up.store(true, Ordering::Relaxed);
                    stats.link_error.clear();
                    link.send_replace(true);
                }
                Ok(Event::Outgoing(out)) => tracker.announced(&out),
                Ok(Event::Incoming(Packet::PubAck(ack))) => match tracker.acked(&ack) {
                    Some((Tag::Frame(seq), why)) => {
                        stats::inc(&stats.frames_refused);
                        tracing::warn!(
                            seq,
                            reason = why,
                            action = "deciding the frame locally; it is not sent again",
                            "Broker refused a frame."
                        );
                        let refusal = Refusal {
                            seq,
                            reason: format!("the broker refused the frame: {why}"),
                        };
                        refusal_queue.push_back(refusal);
                    }
                    Some((tag, why)) => {
                        stats::inc(&stats.publishes_refused);
                        let message = match tag {
                            Tag::Line(_) => "decision line",
                            Tag::Other(what) => what,
                            Tag::Frame(_) => "frame",
                        };
                        tracing::warn!(
                            message,
                            reason = why,
                            "Broker refused a message; check its ACL for this edge's login (deploy/mosquitto/acl)."
                        );
                    }
                    None => {}
                },
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == verdict_topic.as_bytes() => {
                    match wire::decode::<Verdict>(&p.payload, mqtt.max_message_bytes) {
                        Ok(v) if v.edge_id == addr.edge_id() => {
                            stats::inc(&stats.verdicts);
                            tracing::debug!(seq = v.seq, label = %v.label, "Verdict received.");
                            verdict_queue.push_back(v);
                        }
                        Ok(v) => {
                            tracing::warn!(verdict_edge = %v.edge_id, seq = v.seq, "Ignoring a verdict addressed to another edge.")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Ignoring a malformed verdict.")
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == trigger_topic.as_bytes() => {
                    if let Ok(cameras) = triggers.fire_json(&p.payload, &stats) {
                        tracing::debug!(?cameras, "Part trigger received over MQTT.");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p)))
                    if p.topic.starts_with(topics::TARGETS_ROOT.as_bytes()) =>
                {
                    let topic = String::from_utf8_lossy(&p.topic);
                    match serde_json::from_slice::<tierline_shared::updates::fetch::TargetView>(
                        &p.payload,
                    ) {
                        Ok(t) => {
                            tracing::info!(
                                topic = %topic, target = %t.target, bundle = %t.sha256, rollback = t.rollback,
                                "Model target announced; checking it now."
                            );
                            wake_updates.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(topic = %topic, error = %e, "Ignoring a malformed model target announcement.")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let why = mqtt.explain(&e);
                    let was_up = link.send_replace(false);
                    if stats.link_error.set(why.clone()) || was_up {
                        tracing::warn!(
                            error = %why,
                            action = "deciding locally, keeping suspects in the outbox, reconnecting with backoff",
                            "Cloud link down."
                        );
                    }
                    stats.link_up.store(false, Ordering::Relaxed);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        // A clean disconnect does not fire the last will, so say goodbye explicitly.
        let _ = publisher.publish(
            &addr.topic(TopicKind::Presence),
            QoS::AtLeastOnce,
            true,
            presence(&addr, PresenceState::Offline, &model.manifest().version),
            Tag::Other("presence"),
        );
        tierline_shared::mqtt::disconnect(publisher.client(), &mut eventloop).await;
        stats.link_up.store(false, Ordering::Relaxed);
    }
}
