//! The MQTT topic scheme. Pure: no I/O.
//!
//! ```text
//! tierline/v1/<site>/<line>/<edge_id>/frames      edge → cloud   FrameEnvelope, QoS 1
//! tierline/v1/<site>/<line>/<edge_id>/verdicts    cloud → edge   Verdict, QoS 1
//! tierline/v1/<site>/<line>/<edge_id>/presence    edge → all     Presence, QoS 1, retained (birth + last will)
//! tierline/v1/<site>/<line>/<edge_id>/heartbeat   edge → cloud   Heartbeat, QoS 0
//! ```
//!
//! Every edge publishes only under its own prefix `tierline/v1/<site>/<line>/<edge_id>/`, which is what broker
//! ACLs key on; the cloud additionally checks that a frame's envelope names the same edge as its topic. Cloud
//! workers subscribe through the shared subscription `$share/<group>/tierline/v1/+/+/+/frames` so several
//! processes split the load.
//!
//! Site, line and edge ids are single topic levels: 1 to 64 characters from `[A-Za-z0-9_.-]`, other than
//! `.` and `..`.

use std::fmt;
use thiserror::Error;

/// Root of every Tierline topic, including the protocol major version.
pub const ROOT: &str = "tierline/v1";

/// Maximum length of one id level.
pub const MAX_ID_LEN: usize = 64;

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// Forwarded frames, edge → cloud.
    Frames,
    /// Verdicts, cloud → edge.
    Verdicts,
    /// Retained presence (birth / last will).
    Presence,
    /// Periodic heartbeats.
    Heartbeat,
    /// Part triggers, line controller → edge.
    Trigger,
    /// Steps of model updates, edge → cloud.
    Models,
}

impl TopicKind {
    fn as_str(self) -> &'static str {
        match self {
            TopicKind::Frames => "frames",
            TopicKind::Verdicts => "verdicts",
            TopicKind::Presence => "presence",
            TopicKind::Heartbeat => "heartbeat",
            TopicKind::Trigger => "trigger",
            TopicKind::Models => "models",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "frames" => TopicKind::Frames,
            "verdicts" => TopicKind::Verdicts,
            "presence" => TopicKind::Presence,
            "heartbeat" => TopicKind::Heartbeat,
            "trigger" => TopicKind::Trigger,
            "models" => TopicKind::Models,
            _ => return None,
        })
    }
}

/// Errors from ids and topics.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TopicError {
    /// An id is not usable as a topic level.
    #[error(
        "{what} {value:?} is not a valid id: use 1 to {MAX_ID_LEN} characters from A-Z a-z 0-9 _ . -, other than . and .."
    )]
    InvalidId {
        /// Which id (site, line, edge id).
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// A topic does not follow the scheme.
    #[error(
        "topic {0:?} does not match tierline/v1/<site>/<line>/<edge_id>/<frames|verdicts|presence|heartbeat>"
    )]
    Unrecognized(String),
}

/// Checks that `value` can be one topic level.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), TopicError> {
    // "." and ".." would be path steps in every URL that carries the id (the review console's frame links).
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TopicError::InvalidId {
            what,
            value: value.to_string(),
        })
    }
}

/// Where an edge sits: site, line and edge id, all validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeAddress {
    site: String,
    line: String,
    edge_id: String,
}

impl EdgeAddress {
    /// Builds an address, validating each level.
    pub fn new(site: &str, line: &str, edge_id: &str) -> Result<Self, TopicError> {
        validate_id("site", site)?;
        validate_id("line", line)?;
        validate_id("edge_id", edge_id)?;
        Ok(Self {
            site: site.into(),
            line: line.into(),
            edge_id: edge_id.into(),
        })
    }

    /// The site id.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The line id.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The edge id.
    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// The topic of the given kind for this edge.
    pub fn topic(&self, kind: TopicKind) -> String {
        format!(
            "{ROOT}/{}/{}/{}/{}",
            self.site,
            self.line,
            self.edge_id,
            kind.as_str()
        )
    }
}

impl fmt::Display for EdgeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.site, self.line, self.edge_id)
    }
}

/// Parses a concrete topic into the edge address and kind.
pub fn parse(topic: &str) -> Result<(EdgeAddress, TopicKind), TopicError> {
    let unrecognized = || TopicError::Unrecognized(topic.chars().take(200).collect());
    let rest = topic
        .strip_prefix(ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(unrecognized)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [site, line, edge, kind] = parts.as_slice() else {
        return Err(unrecognized());
    };
    let kind = TopicKind::parse(kind).ok_or_else(unrecognized)?;
    let addr = EdgeAddress::new(site, line, edge)?;
    Ok((addr, kind))
}

/// The filter matching one kind of topic from every edge.
pub fn all_edges_filter(kind: TopicKind) -> String {
    format!("{ROOT}/+/+/+/{}", kind.as_str())
}

/// Root of the retained model-target announcements, outside the edges' tree (which edges may write to):
/// `tierline/targets/v1/<target>/<model name>`, e.g. `tierline/targets/v1/edges/line-3/prescreen`.
pub const TARGETS_ROOT: &str = "tierline/targets/v1";

/// Where the cloud announces what `target` (`edges/<group>`, `edge/<edge id>`, `workers/<group>`) should run
/// for model `name`.
pub fn target_topic(target: &str, name: &str) -> String {
    format!("{TARGETS_ROOT}/{target}/{name}")
}

/// The filter matching the announcements of `target` for every model.
pub fn target_filter(target: &str) -> String {
    format!("{TARGETS_ROOT}/{target}/+")
}

/// The shared-subscription filter through which cloud workers in `group` split the frames.
pub fn shared_frames_filter(group: &str) -> String {
    format!("$share/{group}/{}", all_edges_filter(TopicKind::Frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses() {
        let a = EdgeAddress::new("plant-7", "line_2", "edge.a").unwrap();
        let t = a.topic(TopicKind::Frames);
        assert_eq!(t, "tierline/v1/plant-7/line_2/edge.a/frames");
        assert_eq!(parse(&t).unwrap(), (a, TopicKind::Frames));
    }

    #[test]
    fn rejects_wildcards_and_separators_in_ids() {
        for bad in ["", "a/b", "+", "#", "a b", ".", "..", &"x".repeat(65)] {
            assert!(EdgeAddress::new("s", "l", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_foreign_topics() {
        for t in [
            "tierline/v2/s/l/e/frames",
            "tierline/v1/s/l/e/other",
            "tierline/v1/s/l/frames",
            "tierline/v1/s/l/e/x/frames",
            "x/tierline/v1/s/l/e/frames",
        ] {
            assert!(parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn shared_filter_has_group_prefix() {
        assert_eq!(
            shared_frames_filter("cloud"),
            "$share/cloud/tierline/v1/+/+/+/frames"
        );
    }

    proptest! {
        // The invariants of the `topic_parse` fuzz target (fuzz/), run in CI: an accepted topic is exactly
        // what its parts format to, and no part holds a separator or a wildcard.
        #[test]
        fn accepted_topics_are_canonical(
            s in prop_oneof![
                ".{0,120}",
                "tierline/v1/[a-z+#/.]{0,6}/[a-z+#/]{0,6}/[a-zA-Z0-9_.+#/-]{0,8}/(frames|verdicts|presence|heartbeat|x)",
            ]
        ) {
            if let Ok((addr, kind)) = parse(&s) {
                prop_assert_eq!(addr.topic(kind), s.clone());
                for id in [addr.site(), addr.line(), addr.edge_id()] {
                    prop_assert!(!id.contains(['/', '+', '#']), "{}", s);
                }
            }
        }

        #[test]
        fn valid_addresses_round_trip(site in "[A-Za-z0-9_.-]{1,64}", line in "[a-z0-9]{1,8}", edge in "[a-z0-9-]{1,20}") {
            prop_assume!(site != "." && site != "..");
            let a = EdgeAddress::new(&site, &line, &edge).unwrap();
            for k in [TopicKind::Frames, TopicKind::Verdicts, TopicKind::Presence, TopicKind::Heartbeat] {
                prop_assert_eq!(parse(&a.topic(k)).unwrap(), (a.clone(), k));
            }
        }
    }
}
