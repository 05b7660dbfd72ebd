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

use crate::order::{Ticket, TicketCounter};
use crate::stats::{self, CloudStats};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_shared::mqtt::{
    AsyncClient, Backoff, Event, EventLoop, Filter, MqttConfig, Packet, Publish, QoS,
    SubscribeReasonCode,
};
use tierline_shared::topics::{self, EdgeAddress, TopicKind};
use tierline_shared::wire::FrameEnvelope;
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

mod check;

pub use check::{Rejection, check};

/// The ingest stage: the only poller of the worker's MQTT event loop.
pub struct Ingest {
    /// The event loop.
    pub eventloop: EventLoop,
    /// Its client.
    pub client: AsyncClient,
    /// Connection settings.
    pub mqtt: MqttConfig,
    /// The shared-subscription group of the workers.
    pub group: String,
    /// Checked frames, to processing. Dropped on shutdown, which lets processing finish what is queued.
    pub jobs: mpsc::Sender<Job>,
    /// Rejected and presence messages, to the acknowledgement stage.
    pub acks: mpsc::Sender<(Ticket, Publish)>,
    /// Presence and heartbeat messages, to the presence stage.
    pub presence: mpsc::Sender<crate::presence::Update>,
    /// The current connection epoch, for the acknowledgement stage.
    pub connection: Arc<std::sync::atomic::AtomicU64>,
    /// Counters.
    pub stats: Arc<CloudStats>,
    /// Cancelled once the frames in hand are finished: then polling stops and the client disconnects.
    pub drained: CancellationToken,
}

impl Ingest {
    /// Polls the event loop until `stop`, then keeps polling (so verdicts and acks still go out) until
    /// `drained` is cancelled, then disconnects.
    pub async fn run(self, stop: CancellationToken) {
        let Ingest {
            mut eventloop,
            client,
            mqtt,
            group,
            jobs,
            acks,
            presence,
            connection,
            stats,
            drained,
        } = self;
        let filter = topics::shared_frames_filter(&group);
        let subscriptions = vec![
            Filter::new(filter.clone(), QoS::AtLeastOnce),
            // Heartbeats are recorded once per group; presence is retained, so every worker reads it directly.
            // A group name of their own: the embedded broker (rumqttd) keeps one cursor per group name, so a
            // second filter under the frames' group would never deliver (Mosquitto keys groups by filter too).
            Filter::new(
                format!(
                    "$share/{group}-heartbeats/{}",
                    topics::all_edges_filter(TopicKind::Heartbeat)
                ),
                QoS::AtMostOnce,
            ),
            Filter::new(
                topics::all_edges_filter(TopicKind::Presence),
                QoS::AtLeastOnce,
            ),
            // Model update steps: recorded once per group, like heartbeats, but each one counts.
            Filter::new(
                format!(
                    "$share/{group}-models/{}",
                    topics::all_edges_filter(TopicKind::Models)
                ),
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
                polled = tierline_shared::mqtt::poll(&mut eventloop) => polled,
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
                        .any(|c| !matches!(c, SubscribeReasonCode::Success(_)))
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
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(why) = tierline_shared::mqtt::refusal(&ack) {
                        stats::inc(&stats.verdicts_refused);
                        tracing::error!(
                            reason = why,
                            "Broker refused a verdict; its edge decides that frame locally at its deadline. Check the broker's ACL for this worker's login (deploy/mosquitto/acl)."
                        );
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Some(queue) = &jobs else {
                        // Shutting down: leave it unacknowledged; the broker or the edge delivers it again.
                        continue;
                    };
                    let ticket = tickets.take();
                    // MQTT topics are UTF-8 (the broker checks); anything else fails the topic check below.
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if let Ok((
                        addr,
                        kind @ (TopicKind::Presence | TopicKind::Heartbeat | TopicKind::Models),
                    )) = topics::parse(&topic)
                    {
                        let update = crate::presence::Update {
                            addr,
                            kind,
                            payload: p.payload.clone(),
                        };
                        if presence.try_send(update).is_err() {
                            tracing::debug!(topic = %topic, "Presence queue full; the next heartbeat corrects the edge row.");
                        }
                        // State, not a record: acknowledged in its turn right away.
                        let _ = acks.try_send((ticket, p));
                        continue;
                    }
                    stats::inc(&stats.frames_received);
                    stats.lag.received(ticket);
                    match check(&topic, &p.payload, mqtt.max_message_bytes) {
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
                            tracing::warn!(topic = %topic, bytes = p.payload.len(), reason = %reason, "Rejected a frame message; nothing stored.");
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
}

async fn reserve(jobs: Option<mpsc::Sender<Job>>) -> Option<mpsc::OwnedPermit<Job>> {
    jobs?.reserve_owned().await.ok()
}
