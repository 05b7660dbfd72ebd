//! The wire decoder on arbitrary bytes: never panics, respects its size limit, and whatever it accepts
//! re-encodes to bytes that decode to the same encoding (compared as bytes: NaN scores are not equal to
//! themselves). `cargo test` runs the same invariants as property tests (`shared/src/wire.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tierline_shared::wire::{self, FrameEnvelope, Heartbeat, Presence, Verdict, WireMessage};

const LIMIT: usize = 4096;

fn round_trip<M: WireMessage>(data: &[u8]) {
    if let Ok(msg) = wire::decode::<M>(data, LIMIT) {
        assert!(data.len() <= LIMIT, "accepted {} bytes over the limit", data.len());
        let bytes = wire::encode(&msg, usize::MAX).expect("re-encode");
        let back: M = wire::decode(&bytes, usize::MAX).expect("decode what was encoded");
        assert_eq!(wire::encode(&back, usize::MAX).expect("encode again"), bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<FrameEnvelope>(data);
    round_trip::<Verdict>(data);
    round_trip::<Heartbeat>(data);
    round_trip::<Presence>(data);
});
