//! The model manifest parser on arbitrary text: never panics, and a manifest it accepts stays within the
//! limits its validation promises (a bounded number of tiles, known golden labels), so nothing downstream
//! allocates without bound on a hostile `[tiling]` or `[input]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tierline_shared::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::parse(text, Path::new("/models/fuzz.toml")) {
        if let Some(t) = &m.tiling {
            assert!(t.cols >= 1 && t.rows >= 1);
            assert!(u64::from(t.cols) * u64::from(t.rows) <= 1024, "{text}");
        }
        assert_eq!(m.sha256.len(), 64);
        assert_eq!(m.dir, Path::new("/models"));
    }
});
