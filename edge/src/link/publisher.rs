//! Every publish of the edge goes through [`Publisher`], so that a PUBACK can be traced back to what was
//! published and a broker's refusal reaches the frame it refused.
//!
//! rumqttc does not say which request a packet id belongs to. It does process requests in the order they
//! enter its channel, and announces each as `Outgoing::Publish(pkid)` (or `Outgoing::AwaitAck(pkid)` when
//! the id is still taken) in that order. So each publish pushes its [`Tag`] onto a queue under the same lock
//! as its request enters the channel, and the link stage, the only poller of the event loop, pops the queue
//! as the announcements come ([`Tracker::announced`]) and looks the tag up again when the PUBACK comes
//! ([`Tracker::acked`]). Publishes that rumqttc sends again after a reconnect keep their packet id and are
//! recognised as such.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tierline_shared::mqtt::{AsyncClient, Outgoing, PubAck, QoS};

/// What a publish carried, for the handling of its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// The frame record `seq` of the outbox.
    Frame(u64),
    /// Decision line number `n` of the MQTT sink ([`Lines`]).
    Line(u64),
    /// Anything else (decision lines, presence, heartbeats): a refusal is counted and logged.
    Other(&'static str),
}

/// A broker's refusal of a frame: the record cannot be delivered as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The outbox record.
    pub seq: u64,
    /// Why, in words.
    pub reason: String,
}

/// Why a publish was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker would refuse it: larger than the largest packet it takes (stated in its CONNACK).
    #[error(
        "a {size}-byte message is larger than the broker's maximum packet size ({max} bytes): raise \
         max_packet_size in mosquitto.conf or lower mqtt.max_message_bytes"
    )]
    TooLarge {
        /// Its size on the wire.
        size: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The client's request queue is full (the event loop is behind) or the client is gone.
    #[error("MQTT client refused the message: {0}")]
    Client(String),
}

/// What the broker has acknowledged of the MQTT decision sink's lines, numbered from 0 in publish order.
#[derive(Debug, Default)]
pub struct Lines {
    state: Mutex<LinesState>,
    acked: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct LinesState {
    next: u64,
    outstanding: std::collections::BTreeSet<u64>,
    refused: Option<(u64, &'static str)>,
}

impl Lines {
    /// Whether every line numbered below `n` was acknowledged by the broker. An error once the broker
    /// refused one of them (it stays an error: that line is not delivered, so what it recorded must stay
    /// where it is).
    pub fn acked_below(&self, n: u64) -> Result<bool, String> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((line, why)) = s.refused
            && line < n
        {
            return Err(format!("the broker refused decision line {line}: {why}"));
        }
        Ok(s.outstanding.range(..n).next().is_none())
    }

    /// Resolves after the next acknowledgement (or one that came since the last call).
    pub async fn changed(&self) {
        self.acked.notified().await
    }

    fn done(&self, n: u64, refused: Option<&'static str>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.outstanding.remove(&n);
        if let Some(why) = refused
            && s.refused.is_none()
        {
            s.refused = Some((n, why));
        }
        drop(s);
        self.acked.notify_one();
    }
}

#[derive(Debug, Default)]
struct Order {
    /// Tags of requests in the channel, not yet announced.
    queued: VecDeque<Tag>,
    /// Tags of announced QoS 1 publishes, by packet id, until their PUBACK.
    in_flight: HashMap<u16, Tag>,
    /// A publish announced as waiting for its packet id to be freed.
    collided: Option<(u16, Tag)>,
}

/// The publishing side, cloned by every stage that publishes.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    order: Arc<Mutex<Order>>,
    broker_max: Arc<AtomicU32>,
    lines: Arc<Lines>,
}

/// The link stage's side: matches announcements and PUBACKs to tags.
pub struct Tracker {
    order: Arc<Mutex<Order>>,
    broker_max: Arc<AtomicU32>,
    lines: Arc<Lines>,
}

/// A publisher and its tracker over `client`.
pub fn publisher(client: AsyncClient) -> (Publisher, Tracker) {
    let order = Arc::new(Mutex::new(Order::default()));
    let broker_max = Arc::new(AtomicU32::new(u32::MAX));
    let lines = Arc::new(Lines::default());
    (
        Publisher {
            client,
            order: order.clone(),
            broker_max: broker_max.clone(),
            lines: lines.clone(),
        },
        Tracker {
            order,
            broker_max,
            lines,
        },
    )
}

impl Publisher {
    /// Queues a publish without waiting. Fails if the broker would refuse it for its size, or if the client's
    /// queue is full.
    pub fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        tag: Tag,
    ) -> Result<(), PublishError> {
        let max = self.broker_max.load(Ordering::Relaxed);
        let size = tierline_shared::mqtt::publish_size(topic, payload.len());
        if size > max as usize {
            return Err(PublishError::TooLarge { size, max });
        }
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.queued.push_back(tag);
        self.client
            .try_publish(topic, qos, retain, payload)
            .map_err(|e| {
                order.queued.pop_back();
                PublishError::Client(e.to_string())
            })
    }

    /// Publishes the next decision line (QoS 1) and returns its number in [`Publisher::lines`].
    pub fn publish_line(&self, topic: &str, line: Vec<u8>) -> Result<u64, PublishError> {
        let mut lines = self.lines.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = lines.next;
        self.publish(topic, QoS::AtLeastOnce, false, line, Tag::Line(n))?;
        lines.next += 1;
        lines.outstanding.insert(n);
        Ok(n)
    }

    /// What the broker acknowledged of the decision lines.
    pub fn lines(&self) -> &Arc<Lines> {
        &self.lines
    }

    /// The MQTT client, for what is not a publish (subscriptions, disconnect).
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }
}

impl Tracker {
    /// The broker's CONNACK stated the largest packet it takes (`None`: no limit stated).
    pub fn broker_max(&self, max: Option<u32>) {
        self.broker_max
            .store(max.unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// An event of the loop: a publish was written (`Outgoing::Publish`) or is waiting for its packet id
    /// (`Outgoing::AwaitAck`).
    pub fn announced(&self, event: &Outgoing) {
        let mut o = self.order.lock().unwrap_or_else(|p| p.into_inner());
        match *event {
            Outgoing::Publish(0) => {
                o.queued.pop_front();
            }
            Outgoing::Publish(pkid) => {
                if o.in_flight.contains_key(&pkid) {
                    // Sent again after a reconnect, with the id it had.
                    return;
                }
                let tag = match o.collided.take() {
                    Some((id, tag)) if id == pkid => Some(tag),
                    other => {
                        o.collided = other;
                        o.queued.pop_front()
                    }
                };
                if let Some(tag) = tag {
                    o.in_flight.insert(pkid, tag);
                }
            }
            Outgoing::AwaitAck(pkid) => {
                if let Some(tag) = o.queued.pop_front() {
                    o.collided = Some((pkid, tag));
                }
            }
            _ => {}
        }
    }

    /// A PUBACK: what it acknowledged, and the broker's refusal if it refused it. A decision line's
    /// acknowledgement is also recorded in [`Lines`].
    pub fn acked(&self, ack: &PubAck) -> Option<(Tag, &'static str)> {
        let tag = self
            .order
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight
            .remove(&ack.pkid)?;
        let refused = tierline_shared::mqtt::refusal(ack);
        if let Tag::Line(n) = tag {
            self.lines.done(n, refused);
        }
        refused.map(|why| (tag, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierline_shared::mqtt::{MqttOptions, PubAckReason};

    fn setup() -> (Publisher, Tracker, tierline_shared::mqtt::EventLoop) {
        let (client, eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 16);
        let (p, t) = publisher(client);
        (p, t, eventloop)
    }

    fn ack(pkid: u16, reason: PubAckReason) -> PubAck {
        let mut a = PubAck::new(pkid, None);
        a.reason = reason;
        a
    }

    #[test]
    fn acknowledgements_find_their_tags_through_collisions_and_resends() {
        let (p, t, _ev) = setup();
        for tag in [
            Tag::Frame(1),
            Tag::Other("heartbeat"),
            Tag::Frame(2),
            Tag::Frame(3),
        ] {
            let qos = if tag == Tag::Other("heartbeat") {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            p.publish("t/x", qos, false, vec![1], tag).unwrap();
        }
        t.announced(&Outgoing::Publish(1)); // frame 1
        t.announced(&Outgoing::Publish(0)); // the QoS 0 heartbeat
        t.announced(&Outgoing::Publish(2)); // frame 2
        t.announced(&Outgoing::AwaitAck(1)); // frame 3 waits for id 1
        // A reconnect sends frame 2 again under its id: nothing moves.
        t.announced(&Outgoing::Publish(2));
        assert_eq!(t.acked(&ack(1, PubAckReason::Success)), None);
        t.announced(&Outgoing::Publish(1)); // frame 3 goes out under id 1
        assert_eq!(
            t.acked(&ack(1, PubAckReason::NotAuthorized)).map(|r| r.0),
            Some(Tag::Frame(3))
        );
        assert_eq!(
            t.acked(&ack(2, PubAckReason::QuotaExceeded)).map(|r| r.0),
            Some(Tag::Frame(2))
        );
        // Unknown ids are ignored.
        assert_eq!(t.acked(&ack(9, PubAckReason::NotAuthorized)), None);
    }

    #[test]
    fn decision_lines_count_as_delivered_only_once_acknowledged() {
        let (p, t, _ev) = setup();
        assert_eq!(p.publish_line("t/d", b"a".to_vec()).unwrap(), 0);
        assert_eq!(p.publish_line("t/d", b"b".to_vec()).unwrap(), 1);
        assert_eq!(p.publish_line("t/d", b"c".to_vec()).unwrap(), 2);
        for id in 1..=3 {
            t.announced(&Outgoing::Publish(id));
        }
        let lines = p.lines();
        assert_eq!(lines.acked_below(0), Ok(true));
        assert_eq!(lines.acked_below(1), Ok(false));
        // Acknowledged out of order: line 1 alone does not cover line 0.
        t.acked(&ack(2, PubAckReason::Success));
        assert_eq!(lines.acked_below(2), Ok(false));
        t.acked(&ack(1, PubAckReason::Success));
        assert_eq!(lines.acked_below(2), Ok(true));
        assert_eq!(lines.acked_below(3), Ok(false));
        // A refused line is an error for every barrier after it, for good.
        assert!(t.acked(&ack(3, PubAckReason::NotAuthorized)).is_some());
        assert_eq!(lines.acked_below(2), Ok(true));
        assert!(lines.acked_below(3).unwrap_err().contains("not authorized"));
        assert!(lines.acked_below(3).is_err());
    }

    #[test]
    fn a_message_too_large_for_the_broker_is_refused_before_it_is_queued() {
        let (p, t, _ev) = setup();
        t.broker_max(Some(1000));
        let e = p
            .publish("t/x", QoS::AtLeastOnce, false, vec![0; 2000], Tag::Frame(7))
            .unwrap_err();
        assert!(matches!(e, PublishError::TooLarge { max: 1000, .. }), "{e}");
        assert!(e.to_string().contains("max_packet_size"));
        p.publish("t/x", QoS::AtLeastOnce, false, vec![0; 900], Tag::Frame(8))
            .unwrap();
        t.announced(&Outgoing::Publish(1));
        assert_eq!(
            t.acked(&ack(1, PubAckReason::NotAuthorized)).map(|r| r.0),
            Some(Tag::Frame(8))
        );
    }
}
