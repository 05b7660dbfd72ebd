//! The MJPEG camera stream parser on arbitrary bytes in arbitrary chunks: never panics, never holds more
//! than one part's limit plus a chunk, and whatever it returns as a part body came from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tierline_edge::camera::multipart::{MAX_PART, Parser, Part};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut).max(1);
    let mut p = Parser::new("frame");
    for piece in rest.chunks(chunk) {
        p.feed(piece);
        while let Some(part) = p.next_part() {
            if let Part::Body(b) = part {
                assert!(b.len() <= rest.len());
            }
        }
        assert!(p.buffered() <= MAX_PART + chunk + rest.len().min(MAX_PART));
    }
});
