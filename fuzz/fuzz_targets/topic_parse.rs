//! The topic parser on arbitrary strings: never panics, and every topic it accepts is exactly the topic
//! its parts format to (so no two spellings name the same edge). `cargo test` runs the same invariants as
//! property tests (`shared/src/topics.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tierline_shared::topics;

fuzz_target!(|data: &[u8]| {
    let Ok(topic) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((addr, kind)) = topics::parse(topic) {
        assert_eq!(addr.topic(kind), topic);
        for id in [addr.site(), addr.line(), addr.edge_id()] {
            assert!(!id.contains(['/', '+', '#']), "{topic}");
        }
    }
});
