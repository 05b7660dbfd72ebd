//! Ingest: polls the MQTT event loop, checks every frame message, and queues the good ones for processing.
//!
//! Checks, in order: the topic follows the scheme; the payload is within the size limit, decodes, and speaks
//! a supported protocol version; the envelope's site, line and edge id match the topic (an edge may only
//! publish for itself). A rejected message is logged with its reason, counted, and acknowledged (so the
//! broker does not redeliver it); nothing is stored for it.
//!
//! Accepted messages are *not* acknowledged here: the processing stage acknowledges each one only after its
//! verdict is stored. This task never stops polling the event loop (that would starve keep-alives and drop
//! the connection): when the bounded processing queue is full, checked frames wait in a local overflow list.
//! That list is bounded by the broker's in-flight window, because the broker sends no more unacknowledged
//! QoS 1 messages than that (Mosquitto `max_inflight_messages`, default 20).
//!
//! Presence and heartbeat messages (see [`crate::presence`]) take their place in the acknowledgement order
//! like frames, are handed to the presence stage without waiting, and are acknowledged at once.

use crate::acks::{Ticket, TicketCounter};
use crate::stats::{self, CloudStats};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_shared::mqtt::{Backoff, MqttConfig};
use tierline_shared::topics::{self, EdgeAddress, TopicKind};
use tierline_shared::wire::{self, FrameEnvelope, WireError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A checked frame waiting for processing.
#[derive(Debug)]
pub struct Job {
    /// The MQTT message, to acknowledge once the verdict is stored.
    pub publish: Publish,
    /// Its place in the acknowledgement order.
    pub ticket: Ticket,
    /// Where it came from.
    pub addr: EdgeAddress,
    /// The decoded envelope.
    pub frame: FrameEnvelope,
}

/// Why a message was rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Topic, size, encoding or version problem.
    Malformed(String),
    /// The envelope claims another edge than the topic.
    Forged(String),
}

/// Checks one frame message. Pure.
pub fn check(
    topic: &str,
    payload: &[u8],
    max_bytes: usize,
) -> Result<(EdgeAddress, FrameEnvelope), Rejection> {
    let (addr, kind) = topics::parse(topic).map_err(|e| Rejection::Malformed(e.to_string()))?;
    if kind != TopicKind::Frames {
        return Err(Rejection::Malformed(format!(
            "topic {topic} does not carry frames"
        )));
    }
    let frame: FrameEnvelope = wire::decode(payload, max_bytes)
        .map_err(|e: WireError| Rejection::Malformed(e.to_string()))?;
    if frame.edge_id != addr.edge_id() || frame.site != addr.site() || frame.line != addr.line() {
        return Err(Rejection::Forged(format!(
            "envelope says {}/{}/{} but was published under {addr}",
            frame.site, frame.line, frame.edge_id
        )));
    }
    if frame.frame_id != wire::frame_id(&frame.edge_id, frame.seq) {
        return Err(Rejection::Malformed(format!(
            "frame_id {:?} does not match edge {} seq {}",
            frame.frame_id, frame.edge_id, frame.seq
        )));
    }
    Ok((addr, frame))
}

/// Polls the event loop until `stop`, then keeps polling (so verdicts and acks still go out) until
/// `drained` is cancelled, then disconnects.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mqtt: MqttConfig,
    group: String,
    jobs: mpsc::Sender<Job>,
    acks: mpsc::Sender<(Ticket, Publish)>,
    presence: mpsc::Sender<crate::presence::Update>,
    connection: Arc<std::sync::atomic::AtomicU64>,
    stats: Arc<CloudStats>,
    stop: CancellationToken,
    drained: CancellationToken,
) {
    let filter = topics::shared_frames_filter(&group);
    let subscriptions = vec![
        rumqttc::SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce),
        // Heartbeats are recorded once per group; presence is retained, so every worker reads it directly.
        rumqttc::SubscribeFilter::new(
            format!(
                "$share/{group}/{}",
                topics::all_edges_filter(TopicKind::Heartbeat)
            ),
            QoS::AtMostOnce,
        ),
        rumqttc::SubscribeFilter::new(
            topics::all_edges_filter(TopicKind::Presence),
            QoS::AtLeastOnce,
        ),
    ];
    let mut backoff = Backoff::new(mqtt.reconnect_delay, Duration::from_secs(30));
    // Dropped on `stop`, which lets the processing stage finish what is queued and end.
    let mut jobs = Some(jobs);
    let mut overflow: VecDeque<Job> = VecDeque::new();
    let mut tickets = TicketCounter::default();
    loop {
        let polled = tokio::select! {
            _ = drained.cancelled() => break,
            _ = stop.cancelled(), if jobs.is_some() => { jobs = None; overflow.clear(); continue }
            // Move waiting frames into the processing queue as room appears.
            permit = reserve(jobs.clone()), if !overflow.is_empty() => {
                match (permit, overflow.pop_front()) {
                    (Some(p), Some(job)) => {
                        p.send(job);
                    }
                    _ => break,
                }
                continue;
            }
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                let epoch = tickets.new_connection();
                connection.store(epoch, Ordering::Release);
                overflow.clear();
                stats.lag.forget_before(epoch);
                let _ = client.try_subscribe_many(subscriptions.clone());
                tracing::info!(filter = %filter, "Connected to the broker; subscribing.");
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    let why = format!(
                        "broker {}:{} refused the subscription {filter}: check the broker's ACL for this \
                         worker's login ({}); see deploy/mosquitto/acl",
                        mqtt.host,
                        mqtt.port,
                        mqtt.username.as_deref().unwrap_or("anonymous")
                    );
                    if stats.link_error.set(why.clone()) {
                        tracing::error!(error = %why, action = "retrying the subscription with backoff", "No frames can arrive.");
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                    let _ = client.try_subscribe_many(subscriptions.clone());
                    continue;
                }
                // Only now do frames reach this worker.
                stats.link_up.store(true, Ordering::Relaxed);
                stats.link_error.clear();
                tracing::info!(filter = %filter, "Subscribed; receiving frames.");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(queue) = &jobs else {
                    // Shutting down: leave it unacknowledged; the broker or the edge delivers it again.
                    continue;
                };
                let ticket = tickets.take();
                if let Ok((addr, kind @ (TopicKind::Presence | TopicKind::Heartbeat))) =
                    topics::parse(&p.topic)
                {
                    let update = crate::presence::Update {
                        addr,
                        kind,
                        payload: p.payload.clone(),
                    };
                    if presence.try_send(update).is_err() {
                        tracing::debug!(topic = %p.topic, "Presence queue full; the next heartbeat corrects the edge row.");
                    }
                    // State, not a record: acknowledged in its turn right away.
                    let _ = acks.try_send((ticket, p));
                    continue;
                }
                stats::inc(&stats.frames_received);
                stats.lag.received(ticket);
                match check(&p.topic, &p.payload, mqtt.max_message_bytes) {
                    Ok((addr, frame)) => {
                        let job = Job {
                            publish: p,
                            ticket,
                            addr,
                            frame,
                        };
                        if !overflow.is_empty() {
                            overflow.push_back(job);
                        } else {
                            match queue.try_send(job) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(job)) => {
                                    overflow.push_back(job)
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => break,
                            }
                        }
                    }
                    Err(rejection) => {
                        let (counter, reason) = match &rejection {
                            Rejection::Malformed(r) => (&stats.rejected_malformed, r),
                            Rejection::Forged(r) => (&stats.rejected_forged, r),
                        };
                        stats::inc(counter);
                        tracing::warn!(topic = %p.topic, bytes = p.payload.len(), reason = %reason, "Rejected a frame message; nothing stored.");
                        if acks.try_send((ticket, p)).is_err() {
                            tracing::error!(
                                "Acknowledgement queue full; the broker sends more than its in-flight window."
                            );
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let why = mqtt.explain(&e);
                let was_up = stats.link_up.swap(false, Ordering::Relaxed);
                if stats.link_error.set(why.clone()) || was_up {
                    tracing::warn!(error = %why, action = "reconnecting with backoff", "Broker connection lost.");
                }
                tokio::select! {
                    _ = drained.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    tierline_shared::mqtt::disconnect(&client, &mut eventloop).await;
    stats.link_up.store(false, Ordering::Relaxed);
}

async fn reserve(jobs: Option<mpsc::Sender<Job>>) -> Option<mpsc::OwnedPermit<Job>> {
    jobs?.reserve_owned().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(edge: &str) -> Vec<u8> {
        let f = FrameEnvelope {
            protocol_version: 1,
            edge_id: edge.into(),
            site: "s".into(),
            line: "l".into(),
            seq: 3,
            frame_id: wire::frame_id(edge, 3),
            image: vec![1],
            ..FrameEnvelope::default()
        };
        wire::encode(&f, 1 << 20).unwrap()
    }

    #[test]
    fn accepts_a_matching_envelope() {
        let (addr, f) = check("tierline/v1/s/l/e1/frames", &envelope("e1"), 1 << 20).unwrap();
        assert_eq!((addr.edge_id(), f.seq), ("e1", 3));
    }

    #[test]
    fn rejects_an_envelope_claiming_another_edge() {
        let r = check("tierline/v1/s/l/e1/frames", &envelope("e2"), 1 << 20).unwrap_err();
        assert!(matches!(r, Rejection::Forged(_)));
    }

    #[test]
    fn rejects_garbage_oversize_and_foreign_topics() {
        assert!(matches!(
            check("tierline/v1/s/l/e1/frames", b"\xff\xff\xff", 1 << 20),
            Err(Rejection::Malformed(_))
        ));
        assert!(
            matches!(check("tierline/v1/s/l/e1/frames", &envelope("e1"), 4), Err(Rejection::Malformed(m)) if m.contains("limit"))
        );
        assert!(matches!(
            check("tierline/v1/s/l/e1/verdicts", &envelope("e1"), 1 << 20),
            Err(Rejection::Malformed(_))
        ));
    }

    proptest::proptest! {
        // The invariant of the `ingest_check` fuzz target (fuzz/), run in CI: whatever passes the check was
        // published under the topic of the edge its envelope names.
        #[test]
        fn accepted_frames_match_their_topic(
            topic_edge in "e[12]",
            envelope_edge in "e[12]",
            site in "[sx]",
            cut in 0usize..64,
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        ) {
            let topic = format!("tierline/v1/{site}/l/{topic_edge}/frames");
            let mut payload = envelope(&envelope_edge);
            payload.truncate(payload.len().saturating_sub(cut % 4));
            payload.extend(noise);
            if let Ok((addr, f)) = check(&topic, &payload, 1 << 20) {
                proptest::prop_assert_eq!(f.edge_id.as_str(), addr.edge_id());
                proptest::prop_assert_eq!(f.site.as_str(), addr.site());
                proptest::prop_assert_eq!(f.line.as_str(), addr.line());
            }
        }
    }
}
