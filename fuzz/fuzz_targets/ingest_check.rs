//! The cloud's ingest check on an arbitrary topic and payload: never panics, and whatever it accepts was
//! published under the topic of the edge its envelope names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tierline_cloud::ingest;

fuzz_target!(|input: (&str, &[u8])| {
    let (topic, payload) = input;
    if let Ok((addr, frame)) = ingest::check(topic, payload, 4096) {
        assert_eq!(frame.edge_id, addr.edge_id());
        assert_eq!(frame.site, addr.site());
        assert_eq!(frame.line, addr.line());
    }
});
