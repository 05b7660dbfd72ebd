//! What the line does with a part: the one type the decision log, the edge's outbox, the wire and the cloud's
//! store share. Text forms (`pass`, `reject`, `quarantine`) are what the decision log and the databases hold;
//! on the wire it is the `LineAction` enum, with the text kept for peers that predate it.

use crate::wire::{FrameEnvelope, LineAction};
use serde::{Deserialize, Serialize};

/// What the line does with a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Pass,
    /// Take it off the line.
    Reject,
    /// Let it through but hold it for review.
    Quarantine,
}

impl Action {
    /// The text form, as the decision log, the outbox and the store write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Reject => "reject",
            Action::Quarantine => "quarantine",
        }
    }

    /// From the text form; `None` for anything else (including the empty text of "no action").
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pass" => Action::Pass,
            "reject" => Action::Reject,
            "quarantine" => Action::Quarantine,
            _ => return None,
        })
    }

    /// The wire form.
    pub fn to_wire(self) -> LineAction {
        match self {
            Action::Pass => LineAction::Pass,
            Action::Reject => LineAction::Reject,
            Action::Quarantine => LineAction::Quarantine,
        }
    }

    /// From the wire form; `None` when unspecified.
    pub fn from_wire(a: LineAction) -> Option<Self> {
        match a {
            LineAction::Unspecified => None,
            LineAction::Pass => Some(Action::Pass),
            LineAction::Reject => Some(Action::Reject),
            LineAction::Quarantine => Some(Action::Quarantine),
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The local action a frame envelope carries: the typed field, or, from an edge that predates it, the text.
pub fn local_action(f: &FrameEnvelope) -> Option<Action> {
    LineAction::try_from(f.local_action)
        .ok()
        .and_then(Action::from_wire)
        .or_else(|| Action::parse(&f.edge_local_action))
}

/// Sets both forms of the local action on an envelope (the text for peers that predate the typed field).
pub fn set_local_action(f: &mut FrameEnvelope, action: Option<Action>) {
    f.local_action = action.map_or(LineAction::Unspecified, Action::to_wire) as i32;
    f.edge_local_action = action.map(Action::as_str).unwrap_or_default().into();
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn text_and_wire_forms_round_trip() {
        for a in [Action::Pass, Action::Reject, Action::Quarantine] {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(Action::from_wire(a.to_wire()), Some(a));
        }
        assert_eq!(Action::parse(""), None);
        assert_eq!(Action::from_wire(LineAction::Unspecified), None);
    }

    #[test]
    fn an_old_edge_text_still_decodes_and_a_new_edge_writes_both() {
        // An edge that predates field 15 sends only the text.
        let old = FrameEnvelope {
            edge_local_action: "quarantine".into(),
            ..FrameEnvelope::default()
        };
        let back = FrameEnvelope::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(local_action(&back), Some(Action::Quarantine));
        // A new edge writes both; the typed field wins.
        let mut new = FrameEnvelope::default();
        set_local_action(&mut new, Some(Action::Reject));
        assert_eq!(new.edge_local_action, "reject");
        assert_eq!(local_action(&new), Some(Action::Reject));
        set_local_action(&mut new, None);
        assert_eq!(
            (local_action(&new), new.edge_local_action.as_str()),
            (None, "")
        );
    }
}
