//! Edge presence: retained birth / last-will messages and heartbeats, recorded in the edges table; and the
//! steps of edges' model updates, recorded with the registry's events.
//!
//! Every worker subscribes to `tierline/v1/+/+/+/presence` directly (retained messages are not delivered
//! through shared subscriptions, and every worker must see the current state when it starts); heartbeats
//! arrive through the group's shared subscription, so each is recorded once. Presence updates are state,
//! not records: they are acknowledged on arrival, and a message dropped because the queue is full is counted
//! and the next heartbeat or presence message corrects the row.

use crate::stats::{self, CloudStats};
use crate::store::Store;
use bytes::Bytes;
use std::sync::Arc;
use tierline_shared::topics::{EdgeAddress, TopicKind};
use tierline_shared::wire::{self, Heartbeat, ModelEvent, Presence};
use tokio::sync::mpsc;

/// Room for presence messages waiting to be recorded.
pub const CHANNEL: usize = 256;

/// A presence or heartbeat message, its topic already parsed.
#[derive(Debug)]
pub struct Update {
    /// Where it was published.
    pub addr: EdgeAddress,
    /// Presence or heartbeat.
    pub kind: TopicKind,
    /// The payload.
    pub payload: Bytes,
}

/// A checked presence message.
#[derive(Debug, PartialEq)]
pub enum Checked {
    /// Birth or last will.
    Presence(Presence),
    /// Heartbeat.
    Heartbeat(Heartbeat),
    /// A step of a model update.
    ModelEvent(ModelEvent),
}

/// Decodes an update and checks that it names the edge of its topic. Pure.
pub fn check(u: &Update, max_bytes: usize) -> Result<Checked, String> {
    let (edge_id, checked) = match u.kind {
        TopicKind::Presence => {
            let p: Presence = wire::decode(&u.payload, max_bytes).map_err(|e| e.to_string())?;
            (p.edge_id.clone(), Checked::Presence(p))
        }
        TopicKind::Heartbeat => {
            let h: Heartbeat = wire::decode(&u.payload, max_bytes).map_err(|e| e.to_string())?;
            (h.edge_id.clone(), Checked::Heartbeat(h))
        }
        TopicKind::Models => {
            let e: ModelEvent = wire::decode(&u.payload, max_bytes).map_err(|e| e.to_string())?;
            (e.edge_id.clone(), Checked::ModelEvent(e))
        }
        other => return Err(format!("{other:?} is not a presence topic")),
    };
    if edge_id != u.addr.edge_id() {
        return Err(format!(
            "message names edge {edge_id:?} but was published under {}",
            u.addr
        ));
    }
    Ok(checked)
}

/// The presence stage: records edge presence and heartbeats in the store.
pub struct PresenceRecorder {
    /// The store.
    pub store: Store,
    /// Updates, from ingest.
    pub updates: mpsc::Receiver<Update>,
    /// Largest message.
    pub max_bytes: usize,
    /// Counters.
    pub stats: Arc<CloudStats>,
}

impl PresenceRecorder {
    /// Records updates until ingest closes its side.
    pub async fn run(self) {
        let PresenceRecorder {
            store,
            mut updates,
            max_bytes,
            stats,
        } = self;
        while let Some(u) = updates.recv().await {
            let now = tierline_shared::time::now_us();
            let result = match check(&u, max_bytes) {
                Ok(Checked::Presence(mut p)) => {
                    // The topic is authoritative for where the edge sits.
                    p.site = u.addr.site().into();
                    p.line = u.addr.line().into();
                    store.record_presence(&p, now).await
                }
                Ok(Checked::Heartbeat(h)) => {
                    store
                        .record_heartbeat(u.addr.site(), u.addr.line(), &h, now)
                        .await
                }
                // Recorded under the edge of the topic, which the broker's ACL ties to the edge's login.
                Ok(Checked::ModelEvent(e)) => {
                    let detail = if e.serving_version.is_empty() {
                        e.detail.clone()
                    } else {
                        format!("{} [serving {}]", e.detail, e.serving_version)
                    };
                    store
                        .record_model_event(
                            u.addr.edge_id(),
                            u.addr.edge_id(),
                            &e.sha256,
                            &e.event,
                            &detail,
                            now,
                        )
                        .await
                }
                Err(reason) => {
                    stats::inc(&stats.rejected_malformed);
                    tracing::warn!(edge = %u.addr, reason = %reason, "Rejected a presence message.");
                    continue;
                }
            };
            match result {
                Ok(()) => stats::inc(&stats.presence_updates),
                Err(e) => tracing::warn!(edge = %u.addr, error = %e, "Edge presence not recorded."),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_must_name_its_topic_edge() {
        let addr = EdgeAddress::new("s", "l", "e1").unwrap();
        let p = Presence {
            protocol_version: 1,
            edge_id: "e2".into(),
            ..Presence::default()
        };
        let u = Update {
            addr: addr.clone(),
            kind: TopicKind::Presence,
            payload: wire::encode(&p, 1024).unwrap().into(),
        };
        assert!(check(&u, 1024).unwrap_err().contains("e2"));
        let h = Heartbeat {
            protocol_version: 1,
            edge_id: "e1".into(),
            backlog_frames: 7,
            ..Heartbeat::default()
        };
        let u = Update {
            addr,
            kind: TopicKind::Heartbeat,
            payload: wire::encode(&h, 1024).unwrap().into(),
        };
        assert!(matches!(check(&u, 1024), Ok(Checked::Heartbeat(h)) if h.backlog_frames == 7));
    }

    #[test]
    fn model_events_must_name_their_topic_edge_and_have_an_event() {
        let addr = EdgeAddress::new("s", "l", "e1").unwrap();
        let event = |edge: &str, name: &str| Update {
            addr: addr.clone(),
            kind: TopicKind::Models,
            payload: wire::encode(
                &ModelEvent {
                    protocol_version: 1,
                    edge_id: edge.into(),
                    event: name.into(),
                    ..ModelEvent::default()
                },
                1024,
            )
            .unwrap()
            .into(),
        };
        assert!(
            matches!(check(&event("e1", "active"), 1024), Ok(Checked::ModelEvent(e)) if e.event == "active")
        );
        assert!(
            check(&event("e2", "active"), 1024)
                .unwrap_err()
                .contains("e2")
        );
        assert!(check(&event("e1", ""), 1024).is_err());
    }
}
