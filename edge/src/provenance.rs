//! Where a frame came from: its part, its source and the clock of its capture time. Taken from the camera's
//! frame by the prescreen, it travels with the frame through the decision stage (every decision-log line
//! carries it), the outbox (so it survives a restart) and the wire.

use serde::{Serialize, Serializer};
use std::sync::Arc;
pub use tierline_shared::wire::CaptureClock;

/// Where a frame came from. In a decision-log line: `part_id` and `origin` (each left out when unknown) and
/// `capture_clock` (`arrival` or `stream`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The part the frame shows, for frames taken on a part trigger.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_text"
    )]
    pub part_id: Option<Arc<str>>,
    /// The file (file cameras) or stream URL, password removed (streams) the frame came from.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_text"
    )]
    pub origin: Option<Arc<str>>,
    /// Where the capture time came from.
    #[serde(rename = "capture_clock", serialize_with = "clock_name")]
    pub clock: CaptureClock,
}

impl Provenance {
    /// Provenance from stored or wire text: empty text is none.
    pub fn from_text(part_id: &str, origin: &str, clock: CaptureClock) -> Self {
        let text = |s: &str| (!s.is_empty()).then(|| Arc::from(s));
        Self {
            part_id: text(part_id),
            origin: text(origin),
            clock,
        }
    }

    /// The part id, empty when none (the wire's form).
    pub fn part_id_text(&self) -> &str {
        self.part_id.as_deref().unwrap_or_default()
    }

    /// The origin, empty when none (the wire's form).
    pub fn origin_text(&self) -> &str {
        self.origin.as_deref().unwrap_or_default()
    }
}

fn optional_text<S: Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    v.as_deref().serialize(s)
}

fn clock_name<S: Serializer>(c: &CaptureClock, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_left_out_and_the_clock_is_named() {
        let none = serde_json::to_value(Provenance::default()).unwrap();
        assert_eq!(none, serde_json::json!({"capture_clock": "arrival"}));
        let all = Provenance::from_text("P-1", "/data/a.png", CaptureClock::Stream);
        assert_eq!(
            serde_json::to_value(&all).unwrap(),
            serde_json::json!({"part_id": "P-1", "origin": "/data/a.png", "capture_clock": "stream"})
        );
        assert_eq!(
            Provenance::from_text("", "", CaptureClock::Arrival),
            Provenance::default()
        );
    }
}
