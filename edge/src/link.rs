//! The edge's MQTT session: connection state, presence (retained birth + last will), heartbeats, and
//! incoming verdicts.
//!
//! The session is persistent (`clean_session = false`, client id `tierline-edge-<edge_id>`), so verdicts the
//! cloud publishes while the edge is away wait at the broker. The event loop is polled here and nowhere
//! else; this task never awaits a full request channel (it only uses `try_*` calls), which would deadlock.

use crate::outbox::Outbox;
use crate::stats::{self, EdgeStats};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_shared::mqtt::{Backoff, MqttConfig};
use tierline_shared::topics::{EdgeAddress, TopicKind};
use tierline_shared::wire::{self, Heartbeat, Presence, PresenceState, Verdict};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The MQTT client id of an edge.
pub fn client_id(edge_id: &str) -> String {
    format!("tierline-edge-{edge_id}")
}

fn presence(addr: &EdgeAddress, state: PresenceState, model_version: &str) -> Vec<u8> {
    let p = Presence {
        protocol_version: wire::PROTOCOL_VERSION,
        edge_id: addr.edge_id().into(),
        state: state as i32,
        time_us: tierline_shared::time::now_us(),
        edge_model_version: model_version.into(),
        site: addr.site().into(),
        line: addr.line().into(),
    };
    wire::encode(&p, usize::MAX).unwrap_or_default()
}

/// Client options for the edge: persistent session and an OFFLINE last will.
pub fn options(
    mqtt: &MqttConfig,
    addr: &EdgeAddress,
    model_version: &str,
) -> Result<MqttOptions, tierline_shared::tls::TlsError> {
    let mut o = mqtt.options(&client_id(addr.edge_id()))?;
    o.set_clean_session(false);
    o.set_last_will(LastWill::new(
        addr.topic(TopicKind::Presence),
        presence(addr, PresenceState::Offline, model_version),
        QoS::AtLeastOnce,
        true,
    ));
    Ok(o)
}

/// Polls the event loop until shutdown: tracks link state, announces presence, forwards verdicts.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    addr: EdgeAddress,
    mqtt: MqttConfig,
    model_version: String,
    verdicts: mpsc::Sender<Verdict>,
    link: watch::Sender<bool>,
    stats: Arc<EdgeStats>,
    shutdown: CancellationToken,
) {
    let verdict_topic = addr.topic(TopicKind::Verdicts);
    let mut backoff = Backoff::new(mqtt.reconnect_delay, Duration::from_secs(30));
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                stats::inc(&stats.link_connects);
                tracing::info!(
                    edge_id = addr.edge_id(),
                    session_present = ack.session_present,
                    "Connected to the broker."
                );
                let _ = client.try_subscribe(verdict_topic.clone(), QoS::AtLeastOnce);
                let _ = client.try_publish(
                    addr.topic(TopicKind::Presence),
                    QoS::AtLeastOnce,
                    true,
                    presence(&addr, PresenceState::Online, &model_version),
                );
                stats.link_up.store(true, Ordering::Relaxed);
                stats.link_error.clear();
                link.send_replace(true);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == verdict_topic => {
                match wire::decode::<Verdict>(&p.payload, mqtt.max_message_bytes) {
                    Ok(v) if v.edge_id == addr.edge_id() => {
                        stats::inc(&stats.verdicts);
                        tracing::debug!(seq = v.seq, label = %v.label, "Verdict received.");
                        // Bounded: while the stage is busy the broker holds further verdicts.
                        if verdicts.send(v).await.is_err() {
                            break;
                        }
                    }
                    Ok(v) => {
                        tracing::warn!(edge_id = addr.edge_id(), verdict_edge = %v.edge_id, seq = v.seq, "Ignoring a verdict addressed to another edge.")
                    }
                    Err(e) => {
                        tracing::warn!(edge_id = addr.edge_id(), error = %e, "Ignoring a malformed verdict.")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let why = mqtt.explain(&e);
                let was_up = link.send_replace(false);
                if stats.link_error.set(why.clone()) || was_up {
                    tracing::warn!(
                        edge_id = addr.edge_id(), error = %why,
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
    let _ = client.try_publish(
        addr.topic(TopicKind::Presence),
        QoS::AtLeastOnce,
        true,
        presence(&addr, PresenceState::Offline, &model_version),
    );
    tierline_shared::mqtt::disconnect(&client, &mut eventloop).await;
    stats.link_up.store(false, Ordering::Relaxed);
}

/// Publishes a heartbeat every `every` until shutdown.
pub async fn heartbeats(
    client: AsyncClient,
    addr: EdgeAddress,
    outbox: Outbox,
    model_version: String,
    stats: Arc<EdgeStats>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !stats.link_up.load(Ordering::Relaxed) {
            continue;
        }
        let Ok(backlog) = outbox.backlog().await else {
            continue;
        };
        let now = tierline_shared::time::now_us();
        let hb = Heartbeat {
            protocol_version: wire::PROTOCOL_VERSION,
            edge_id: addr.edge_id().into(),
            time_us: now,
            backlog_frames: backlog.frames,
            oldest_backlog_age_ms: backlog
                .oldest_capture_us
                .map(|t| ((now - t).max(0) / 1000) as u64)
                .unwrap_or(0),
            frames_seen: stats::get(&stats.frames_captured),
            frames_forwarded: stats::get(&stats.frames_suspect) + stats::get(&stats.frames_audit),
            edge_model_version: model_version.clone(),
            backlog_bytes: backlog.bytes,
            link_connects: stats::get(&stats.link_connects),
            publishes: stats::get(&stats.publishes),
            verdicts_received: stats::get(&stats.verdicts),
            evictions: stats::get(&stats.evictions),
        };
        if let Ok(bytes) = wire::encode(&hb, usize::MAX) {
            let _ = client.try_publish(
                addr.topic(TopicKind::Heartbeat),
                QoS::AtMostOnce,
                false,
                bytes,
            );
        }
    }
}
