//! The wire contract between edge and cloud: protobuf messages (see `proto/tierline/v1/wire.proto`), the protocol
//! version, and a size limit that is checked before anything is sent and before anything is decoded.

use prost::Message;
use thiserror::Error;

/// Messages generated from `proto/tierline/v1/wire.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tierline.v1.rs"));
}

pub use pb::{
    CaptureClock, ClassScore, ForwardReason, FrameEnvelope, Heartbeat, ImageEncoding, LineAction,
    ModelEvent, Presence, Verdict, presence::State as PresenceState,
};

impl From<&crate::regions::Region> for pb::Region {
    fn from(r: &crate::regions::Region) -> Self {
        Self {
            x: r.x,
            y: r.y,
            width: r.w,
            height: r.h,
            class_name: r.class.clone(),
            score: r.score,
        }
    }
}

impl From<&pb::Region> for crate::regions::Region {
    fn from(r: &pb::Region) -> Self {
        Self::new(r.x, r.y, r.width, r.height, &r.class_name, r.score)
    }
}

/// The protocol major version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Protocol major versions this build accepts from peers.
pub const SUPPORTED_PROTOCOL_VERSIONS: std::ops::RangeInclusive<u32> = 1..=1;

/// Default limit for one encoded message (4 MiB): a 1080p JPEG fits several times over.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Errors from encoding or decoding wire messages.
#[derive(Debug, Error)]
pub enum WireError {
    /// The encoded message is larger than the configured limit.
    #[error(
        "{kind} message is {len} bytes, over the {limit}-byte limit; lower the camera resolution or JPEG quality, or raise `max_message_bytes` on both edge and cloud (and the broker's max_packet_size)"
    )]
    TooLarge {
        /// Which message.
        kind: &'static str,
        /// Encoded length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("malformed {kind} message ({len} bytes): {source}")]
    Malformed {
        /// Which message.
        kind: &'static str,
        /// Payload length.
        len: usize,
        /// Decoder error.
        source: prost::DecodeError,
    },
    /// The peer speaks a protocol major version this build does not know.
    #[error(
        "{kind} message uses protocol version {version}, this build supports {min}..={max}; upgrade the older side"
    )]
    UnsupportedVersion {
        /// Which message.
        kind: &'static str,
        /// Version found in the message.
        version: u32,
        /// Lowest supported version.
        min: u32,
        /// Highest supported version.
        max: u32,
    },
    /// A required field is missing or out of range.
    #[error("invalid {kind} message: {reason}")]
    Invalid {
        /// Which message.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A wire message: knows its name and its protocol version field.
pub trait WireMessage: Message + Default + Sized {
    /// Human-readable message name used in errors.
    const KIND: &'static str;
    /// The message's protocol version field.
    fn protocol_version(&self) -> u32;
    /// Checks required fields after decoding.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

impl WireMessage for FrameEnvelope {
    const KIND: &'static str = "frame";
    fn protocol_version(&self) -> u32 {
        self.protocol_version
    }
    fn validate(&self) -> Result<(), String> {
        if self.edge_id.is_empty() {
            return Err("edge_id is empty".into());
        }
        if self.image.is_empty() {
            return Err("image is empty".into());
        }
        if !(0.0..=1.0).contains(&self.edge_score) {
            return Err(format!("edge_score {} is outside [0, 1]", self.edge_score));
        }
        check_identity(&self.incarnation, &self.image_sha256)?;
        if !self.image_sha256.is_empty() && self.image_sha256 != image_sha256(&self.image) {
            return Err(
                "image_sha256 is not the SHA-256 of the image (corrupted or altered)".into(),
            );
        }
        Ok(())
    }
}

impl WireMessage for Verdict {
    const KIND: &'static str = "verdict";
    fn protocol_version(&self) -> u32 {
        self.protocol_version
    }
    fn validate(&self) -> Result<(), String> {
        if self.edge_id.is_empty() {
            return Err("edge_id is empty".into());
        }
        check_identity(&self.incarnation, &self.image_sha256)
    }
}

/// Longest outbox incarnation accepted on the wire.
const MAX_INCARNATION_LEN: usize = 64;

fn check_identity(incarnation: &str, image_sha256: &[u8]) -> Result<(), String> {
    if incarnation.len() > MAX_INCARNATION_LEN {
        return Err(format!(
            "incarnation is {} bytes long (at most {MAX_INCARNATION_LEN})",
            incarnation.len()
        ));
    }
    if !image_sha256.is_empty() && image_sha256.len() != 32 {
        return Err(format!(
            "image_sha256 is {} bytes long (a SHA-256 has 32)",
            image_sha256.len()
        ));
    }
    Ok(())
}

impl WireMessage for Presence {
    const KIND: &'static str = "presence";
    fn protocol_version(&self) -> u32 {
        self.protocol_version
    }
}

impl WireMessage for Heartbeat {
    const KIND: &'static str = "heartbeat";
    fn protocol_version(&self) -> u32 {
        self.protocol_version
    }
}

impl WireMessage for ModelEvent {
    const KIND: &'static str = "model event";
    fn protocol_version(&self) -> u32 {
        self.protocol_version
    }
    fn validate(&self) -> Result<(), String> {
        if self.event.is_empty() || self.event.len() > 32 {
            return Err("event must be 1 to 32 characters".into());
        }
        if self.detail.len() > 4096 || self.sha256.len() > 64 || self.serving_version.len() > 128 {
            return Err("detail, sha256 or serving_version is too long".into());
        }
        Ok(())
    }
}

/// Encodes `msg`, refusing to produce more than `limit` bytes.
pub fn encode<M: WireMessage>(msg: &M, limit: usize) -> Result<Vec<u8>, WireError> {
    let len = msg.encoded_len();
    if len > limit {
        return Err(WireError::TooLarge {
            kind: M::KIND,
            len,
            limit,
        });
    }
    Ok(msg.encode_to_vec())
}

/// Decodes a message, checking the size limit first, then the protocol version and required fields.
pub fn decode<M: WireMessage>(bytes: &[u8], limit: usize) -> Result<M, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            kind: M::KIND,
            len: bytes.len(),
            limit,
        });
    }
    let msg = M::decode(bytes).map_err(|source| WireError::Malformed {
        kind: M::KIND,
        len: bytes.len(),
        source,
    })?;
    let version = msg.protocol_version();
    if !SUPPORTED_PROTOCOL_VERSIONS.contains(&version) {
        return Err(WireError::UnsupportedVersion {
            kind: M::KIND,
            version,
            min: *SUPPORTED_PROTOCOL_VERSIONS.start(),
            max: *SUPPORTED_PROTOCOL_VERSIONS.end(),
        });
    }
    msg.validate().map_err(|reason| WireError::Invalid {
        kind: M::KIND,
        reason,
    })?;
    Ok(msg)
}

impl CaptureClock {
    /// The name used in decision logs, the cloud store and the review API: `arrival` or `stream`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Arrival => "arrival",
            Self::Stream => "stream",
        }
    }

    /// The clock a [`CaptureClock::name`] stands for; anything else (empty, unknown) is the arrival clock,
    /// the only one edges that predate the field had.
    pub fn from_name(name: &str) -> Self {
        match name {
            "stream" => Self::Stream,
            _ => Self::Arrival,
        }
    }
}

/// The id of a frame: `<edge_id>-<seq>`. Unique within one outbox incarnation; with the incarnation
/// (`FrameEnvelope::incarnation`) it is unique for good.
pub fn frame_id(edge_id: &str, seq: u64) -> String {
    format!("{edge_id}-{seq}")
}

/// SHA-256 of an encoded image, as carried in `FrameEnvelope::image_sha256` and `Verdict::image_sha256`.
pub fn image_sha256(image: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(image).to_vec()
}

/// Whether a verdict may settle the frame held under its key: it names the same outbox incarnation and the
/// same image. An empty field on either side (a peer that predates them) is not a contradiction.
pub fn verdict_matches(verdict: &Verdict, incarnation: &str, image_sha256: &[u8]) -> bool {
    let same = |a: &[u8], b: &[u8]| a.is_empty() || b.is_empty() || a == b;
    same(verdict.incarnation.as_bytes(), incarnation.as_bytes())
        && same(&verdict.image_sha256, image_sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope(image: Vec<u8>) -> FrameEnvelope {
        FrameEnvelope {
            protocol_version: PROTOCOL_VERSION,
            edge_id: "edge-1".into(),
            camera_id: "cam-0".into(),
            seq: 7,
            frame_id: frame_id("edge-1", 7),
            capture_time_us: 1_700_000_000_000_000,
            edge_model_version: "0.1.0".into(),
            edge_score: 0.8,
            reason: ForwardReason::Suspect as i32,
            encoding: ImageEncoding::Jpeg as i32,
            site: "plant".into(),
            line: "l1".into(),
            edge_local_action: String::new(),
            local_action: 0,
            incarnation: "00000000000000a1".into(),
            image_sha256: image_sha256(&image),
            image,
            part_id: String::new(),
            origin: String::new(),
            capture_clock: CaptureClock::Arrival as i32,
        }
    }

    /// A `FrameEnvelope` as edges wrote it before fields 18–20 (part, origin, capture clock).
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldFrameEnvelope {
        #[prost(uint32, tag = "1")]
        protocol_version: u32,
        #[prost(string, tag = "2")]
        edge_id: String,
        #[prost(uint64, tag = "4")]
        seq: u64,
        #[prost(int64, tag = "6")]
        capture_time_us: i64,
        #[prost(bytes = "vec", tag = "11")]
        image: Vec<u8>,
        #[prost(string, tag = "16")]
        incarnation: String,
        #[prost(bytes = "vec", tag = "17")]
        image_sha256: Vec<u8>,
    }

    #[test]
    fn an_old_envelope_without_provenance_decodes_as_unknown_part_and_arrival_clock() {
        let image = vec![1, 2, 3];
        let old = OldFrameEnvelope {
            protocol_version: PROTOCOL_VERSION,
            edge_id: "edge-1".into(),
            seq: 7,
            capture_time_us: 1_700_000_000_000_000,
            image_sha256: image_sha256(&image),
            image,
            incarnation: "00000000000000a1".into(),
        };
        let msg: FrameEnvelope = decode(&old.encode_to_vec(), DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert_eq!((msg.seq, msg.capture_time_us), (7, 1_700_000_000_000_000));
        assert_eq!(msg.part_id, "");
        assert_eq!(msg.origin, "");
        assert_eq!(msg.capture_clock(), CaptureClock::Arrival);
        assert_eq!(msg.capture_clock().name(), "arrival");
    }

    #[test]
    fn provenance_round_trips_and_an_old_peer_still_reads_the_rest() {
        let mut msg = envelope(vec![4, 5, 6]);
        msg.part_id = "P-2026-0042".into();
        msg.origin = "rtsp://cam@10.0.0.7:554/main".into();
        msg.capture_clock = CaptureClock::Stream as i32;
        let bytes = encode(&msg, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        let back: FrameEnvelope = decode(&bytes, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.capture_clock().name(), "stream");
        // A cloud that predates fields 18-20 skips them and reads everything else.
        let old = OldFrameEnvelope::decode(bytes.as_slice()).unwrap();
        assert_eq!((old.seq, old.image), (7, vec![4, 5, 6]));
        for c in [CaptureClock::Arrival, CaptureClock::Stream] {
            assert_eq!(CaptureClock::from_name(c.name()), c);
        }
        assert_eq!(CaptureClock::from_name(""), CaptureClock::Arrival);
    }

    #[test]
    fn an_image_hash_that_does_not_match_is_refused() {
        let mut e = envelope(vec![1, 2, 3]);
        e.image_sha256 = image_sha256(&[1, 2, 4]);
        let bytes = e.encode_to_vec();
        let err = decode::<FrameEnvelope>(&bytes, DEFAULT_MAX_MESSAGE_BYTES).unwrap_err();
        assert!(err.to_string().contains("image_sha256"), "{err}");
        e.image_sha256 = vec![0; 5];
        let err =
            decode::<FrameEnvelope>(&e.encode_to_vec(), DEFAULT_MAX_MESSAGE_BYTES).unwrap_err();
        assert!(err.to_string().contains("32"), "{err}");
        // An edge that predates the field sends none.
        e.image_sha256.clear();
        assert!(decode::<FrameEnvelope>(&e.encode_to_vec(), DEFAULT_MAX_MESSAGE_BYTES).is_ok());
    }

    #[test]
    fn a_verdict_matches_only_its_own_frame() {
        let v = Verdict {
            incarnation: "a".into(),
            image_sha256: vec![1; 32],
            ..Verdict::default()
        };
        assert!(verdict_matches(&v, "a", &[1; 32]));
        assert!(!verdict_matches(&v, "b", &[1; 32]), "another outbox");
        assert!(!verdict_matches(&v, "a", &[2; 32]), "another image");
        assert!(
            verdict_matches(&Verdict::default(), "a", &[1; 32]),
            "an older cloud echoes nothing"
        );
    }

    #[test]
    fn oversized_message_is_refused_before_sending() {
        let err = encode(&envelope(vec![0; 2000]), 1000).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { len, limit: 1000, .. } if len > 2000));
        assert!(err.to_string().contains("max_message_bytes"));
    }

    #[test]
    fn oversized_payload_is_refused_before_decoding() {
        let err = decode::<FrameEnvelope>(&[0u8; 50], 10).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { len: 50, .. }));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let err = decode::<FrameEnvelope>(&[0xff, 0xff, 0xff, 0xff], 1024).unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err}");
    }

    #[test]
    fn unknown_major_version_is_rejected() {
        let mut msg = envelope(vec![1, 2, 3]);
        msg.protocol_version = 2;
        let bytes = msg.encode_to_vec();
        let err = decode::<FrameEnvelope>(&bytes, 1024).unwrap_err();
        assert!(matches!(
            err,
            WireError::UnsupportedVersion { version: 2, .. }
        ));
    }

    #[test]
    fn missing_required_fields_are_invalid() {
        let bytes = envelope(vec![]).encode_to_vec();
        let err = decode::<FrameEnvelope>(&bytes, 1024).unwrap_err();
        assert!(err.to_string().contains("image is empty"), "{err}");
    }

    #[test]
    fn unknown_fields_from_a_newer_peer_are_ignored() {
        // Field 99 (varint 5) appended: a newer minor revision's addition must not break this build.
        let mut bytes = envelope(vec![9]).encode_to_vec();
        bytes.extend_from_slice(&[0x98, 0x06, 0x05]);
        let msg = decode::<FrameEnvelope>(&bytes, 1024).unwrap();
        assert_eq!(msg.seq, 7);
    }

    proptest! {
        #[test]
        fn envelope_round_trips(
            edge in "[a-z0-9-]{1,16}",
            seq in any::<u64>(),
            score in 0.0f32..=1.0,
            image in proptest::collection::vec(any::<u8>(), 1..512),
            t in any::<i64>(),
            audit in any::<bool>(),
        ) {
            let mut msg = envelope(image);
            msg.edge_id = edge.clone();
            msg.seq = seq;
            msg.frame_id = frame_id(&edge, seq);
            msg.edge_score = score;
            msg.capture_time_us = t;
            msg.reason = if audit { ForwardReason::Audit } else { ForwardReason::Suspect } as i32;
            msg.edge_local_action = if audit { String::new() } else { "reject".into() };
            let bytes = encode(&msg, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
            let back: FrameEnvelope = decode(&bytes, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn verdict_round_trips(seq in any::<u64>(), p in 0.0f32..=1.0, label in "[a-z]{1,10}") {
            let msg = Verdict {
                protocol_version: PROTOCOL_VERSION,
                edge_id: "e".into(),
                seq,
                frame_id: frame_id("e", seq),
                cloud_model_version: "1".into(),
                scores: vec![ClassScore { class_name: label.clone(), probability: p }],
                label,
                defective: p > 0.5,
                defect_score: p,
                verdict_time_us: 1,
                error: String::new(),
                redelivery: false,
                incarnation: "00000000000000a1".into(),
                image_sha256: vec![7; 32],
                regions: vec![pb::Region { x: 1.5, y: 2.0, width: 30.0, height: 4.0, class_name: "scratch".into(), score: p }],
            };
            let back: Verdict = decode(&encode(&msg, 1 << 20).unwrap(), 1 << 20).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<FrameEnvelope>(&bytes, 1024);
            let _ = decode::<Verdict>(&bytes, 1024);
        }

        // The invariants of the `wire_decode` fuzz target (fuzz/), run in CI: whatever the decoder
        // accepts re-encodes stably, and nothing over the limit is accepted.
        #[test]
        fn accepted_messages_re_encode_stably(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                // Valid envelopes with random corruption, to get past the first bytes.
                (proptest::collection::vec(any::<u8>(), 1..64), any::<usize>(), any::<u8>()).prop_map(|(img, at, b)| {
                    let mut v = encode(&envelope(img), 1 << 20).unwrap();
                    let i = at % v.len();
                    v[i] ^= b;
                    v
                }),
            ],
            limit in 0usize..400,
        ) {
            fn check<M: WireMessage>(bytes: &[u8], limit: usize) -> Result<(), TestCaseError> {
                if let Ok(msg) = decode::<M>(bytes, limit) {
                    prop_assert!(bytes.len() <= limit);
                    let once = encode(&msg, usize::MAX).unwrap();
                    let back: M = decode(&once, usize::MAX).unwrap();
                    prop_assert_eq!(encode(&back, usize::MAX).unwrap(), once);
                }
                Ok(())
            }
            check::<FrameEnvelope>(&bytes, limit)?;
            check::<Verdict>(&bytes, limit)?;
            check::<Heartbeat>(&bytes, limit)?;
            check::<Presence>(&bytes, limit)?;
        }
    }
}
