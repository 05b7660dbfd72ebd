//! The checks every frame message passes before it is queued. Pure, unit-tested, and fuzzed (`fuzz/`).

use tierline_shared::topics::{self, EdgeAddress, TopicKind};
use tierline_shared::wire::{self, FrameEnvelope, WireError};

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
