//! Presence (retained birth message and OFFLINE last will) and heartbeats of an edge.

use super::{Publisher, Tag};
use crate::outbox::Outbox;
use crate::stats::{self, EdgeStats};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_shared::mqtt::{LastWill, MqttConfig, MqttOptions, QoS};
use tierline_shared::topics::{EdgeAddress, TopicKind};
use tierline_shared::wire::{self, Heartbeat, Presence, PresenceState};
use tokio_util::sync::CancellationToken;

/// The MQTT client id of an edge.
pub fn client_id(edge_id: &str) -> String {
    format!("tierline-edge-{edge_id}")
}

pub(super) fn presence(addr: &EdgeAddress, state: PresenceState, model_version: &str) -> Vec<u8> {
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

/// How long the broker keeps an edge's session (its subscription and the verdicts queued for it) after the
/// edge went away: a week. An edge away longer still gets its verdicts: it sends its frames again and the
/// cloud answers from what it stored.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Client options for the edge: persistent session and an OFFLINE last will.
pub fn options(
    mqtt: &MqttConfig,
    addr: &EdgeAddress,
    model_version: &str,
) -> Result<MqttOptions, tierline_shared::tls::TlsError> {
    let mut o = mqtt.options(&client_id(addr.edge_id()))?;
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(SESSION_EXPIRY.as_secs() as u32));
    o.set_last_will(LastWill::new(
        addr.topic(TopicKind::Presence),
        presence(addr, PresenceState::Offline, model_version),
        QoS::AtLeastOnce,
        true,
        None,
    ));
    Ok(o)
}

/// Publishes a heartbeat every `every` while the link is up.
pub struct Heartbeats {
    /// Where heartbeats are published.
    pub publisher: Publisher,
    /// This edge.
    pub addr: EdgeAddress,
    /// The outbox, whose backlog each heartbeat reports.
    pub outbox: Outbox,
    /// The model serving, whose version each heartbeat carries.
    pub model: Arc<tierline_shared::serving::ServedModel>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
    /// Interval.
    pub every: Duration,
    /// The cameras, whose state each heartbeat reports.
    pub cameras: Vec<std::sync::Arc<crate::camera::CameraStatus>>,
    /// The edge group this edge follows for model updates ("" when updates are off).
    pub update_group: String,
}

impl Heartbeats {
    /// Runs until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let Heartbeats {
            publisher,
            addr,
            outbox,
            model,
            stats,
            every,
            cameras,
            update_group,
        } = self;
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
            let (decision_p99_us, decisions) =
                stats::take_p99_us(&stats.decision_latency_window_us);
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
                frames_forwarded: stats::get(&stats.frames_suspect)
                    + stats::get(&stats.frames_audit),
                edge_model_version: model.manifest().version.clone(),
                backlog_bytes: backlog.bytes,
                link_connects: stats::get(&stats.link_connects),
                publishes: stats::get(&stats.publishes),
                verdicts_received: stats::get(&stats.verdicts),
                evictions: stats::get(&stats.evictions),
                cameras: cameras.iter().map(|c| c.state()).collect(),
                update_group: update_group.clone(),
                decision_p99_us,
                decisions,
            };
            if let Ok(bytes) = wire::encode(&hb, usize::MAX) {
                let _ = publisher.publish(
                    &addr.topic(TopicKind::Heartbeat),
                    QoS::AtMostOnce,
                    false,
                    bytes,
                    Tag::Other("heartbeat"),
                );
            }
        }
    }
}
