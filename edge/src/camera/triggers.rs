//! Part triggers: a line controller says "part P is in front of the camera now", over MQTT (the edge's own
//! `…/trigger` topic) or HTTP (`POST /trigger` on the admin port), and each camera in trigger mode takes its
//! next frame for that part.
//!
//! The message is JSON: `{"part_id": "P-1042"}` triggers every camera in trigger mode;
//! `{"part_id": "P-1042", "camera": "cam-2"}` only that one. A part id is 1–128 printable characters.

use crate::stats::{self, EdgeStats};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::gate::Trigger;

/// Triggers waiting per camera before new ones are refused (a camera that cannot keep up with the line).
const QUEUE: usize = 256;

/// A trigger as sent by the line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerMessage {
    /// The part in front of the camera.
    pub part_id: String,
    /// Only this camera (default: every camera in trigger mode).
    #[serde(default)]
    pub camera: Option<String>,
}

/// Where triggers go: one queue per camera in trigger mode.
#[derive(Clone, Default)]
pub struct Triggers {
    cameras: BTreeMap<String, mpsc::Sender<Trigger>>,
}

impl Triggers {
    /// Registers a camera in trigger mode; its gate reads the returned queue.
    pub fn register(&mut self, camera: &str) -> mpsc::Receiver<Trigger> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.cameras.insert(camera.to_string(), tx);
        rx
    }

    /// Whether any camera runs in trigger mode.
    pub fn any(&self) -> bool {
        !self.cameras.is_empty()
    }

    /// Parses and hands out one trigger message. Returns the cameras it reached, or why it was refused.
    pub fn fire_json(&self, payload: &[u8], stats: &EdgeStats) -> Result<Vec<String>, String> {
        let r = serde_json::from_slice::<TriggerMessage>(payload)
            .map_err(|e| {
                format!(
                    "trigger is not valid JSON of the form {{\"part_id\": \"P-1\", \"camera\": \"cam-0\"}}: {e}"
                )
            })
            .and_then(|m| self.fire(&m));
        match &r {
            Ok(_) => stats::inc(&stats.triggers),
            Err(why) => {
                stats::inc(&stats.triggers_refused);
                tracing::warn!(problem = %why, "Part trigger refused.");
            }
        }
        r
    }

    /// Hands one trigger to its camera(s).
    pub fn fire(&self, m: &TriggerMessage) -> Result<Vec<String>, String> {
        validate_part_id(&m.part_id)?;
        let part_id: Arc<str> = m.part_id.as_str().into();
        let targets: Vec<(&String, &mpsc::Sender<Trigger>)> = match &m.camera {
            Some(c) => match self.cameras.get_key_value(c) {
                Some(t) => vec![t],
                None => {
                    return Err(format!(
                        "no camera {c:?} runs in trigger mode on this edge (trigger-mode cameras: {:?})",
                        self.cameras.keys().collect::<Vec<_>>()
                    ));
                }
            },
            None => self.cameras.iter().collect(),
        };
        if targets.is_empty() {
            return Err(
                "no camera on this edge runs in trigger mode (set mode = \"trigger\")".into(),
            );
        }
        let mut reached = Vec::new();
        for (camera, tx) in targets {
            tx.try_send(Trigger {
                part_id: part_id.clone(),
            })
            .map_err(|_| {
                format!("camera {camera:?} has {QUEUE} triggers waiting; part {part_id:?} refused")
            })?;
            reached.push(camera.clone());
        }
        Ok(reached)
    }
}

/// The admin endpoint's `POST /trigger`: 202 with the cameras reached, or 400 with the reason.
pub fn routes(triggers: Triggers, stats: Arc<EdgeStats>) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new().route(
        "/trigger",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (triggers, stats) = (triggers.clone(), stats.clone());
            async move {
                match triggers.fire_json(&body, &stats) {
                    Ok(cameras) => (
                        StatusCode::ACCEPTED,
                        format!("{}\n", serde_json::json!({ "cameras": cameras })),
                    ),
                    Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")),
                }
            }
        }),
    )
}

/// A part id is 1–128 characters, none of them control characters.
pub fn validate_part_id(p: &str) -> Result<(), String> {
    if p.is_empty() || p.chars().count() > 128 || p.chars().any(char::is_control) {
        return Err(format!(
            "part id {p:?} must be 1-128 characters without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_reach_their_cameras_and_bad_ones_are_refused_with_a_reason() {
        let stats = EdgeStats::default();
        let mut t = Triggers::default();
        let mut a = t.register("a");
        let mut b = t.register("b");
        assert_eq!(
            t.fire_json(br#"{"part_id":"P-1"}"#, &stats).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            t.fire_json(br#"{"part_id":"P-2","camera":"b"}"#, &stats)
                .unwrap(),
            vec!["b"]
        );
        assert_eq!(a.try_recv().unwrap().part_id.as_ref(), "P-1");
        assert!(a.try_recv().is_err());
        assert_eq!(b.try_recv().unwrap().part_id.as_ref(), "P-1");
        assert_eq!(b.try_recv().unwrap().part_id.as_ref(), "P-2");
        for bad in [
            &br#"{"part_id":""}"#[..],
            br#"{"part_id":"x","camera":"z"}"#,
            b"P-3",
            br#"{"part_id":"a\u0001"}"#,
            br#"{"part_id":"x","extra":1}"#,
        ] {
            assert!(
                t.fire_json(bad, &stats).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(stats::get(&stats.triggers), 2);
        assert_eq!(stats::get(&stats.triggers_refused), 5);
    }
}
