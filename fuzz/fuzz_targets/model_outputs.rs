//! Model output decoding (every kind, through a real manifest from `models/fixtures`) on arbitrary shapes
//! and values: never panics, and every score it returns lies in [0, 1]. A model is outside input too: a
//! replaced file, or an exporter's surprise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tierline_shared::decode::{Tensor, decode};
use tierline_shared::manifest::Manifest;
use tierline_shared::preprocess::Geometry;

const MANIFESTS: [&str; 5] = [
    include_str!("../../models/fixtures/own/anomaly.toml"),
    include_str!("../../models/fixtures/own/detector-yolov8.toml"),
    include_str!("../../models/fixtures/own/detector-yolov5.toml"),
    include_str!("../../models/fixtures/own/segmenter-probs.toml"),
    include_str!("../../models/fixtures/own/classifier-u8.toml"),
];

fuzz_target!(|data: &[u8]| {
    let [which, rows, rank, d0, d1, d2, rest @ ..] = data else {
        return;
    };
    let Ok(m) = Manifest::parse(MANIFESTS[usize::from(*which) % 5], Path::new("m.toml")) else {
        return;
    };
    let rows = usize::from(*rows % 4) + 1;
    let dims = [i64::from(*d0 % 9), i64::from(*d1 % 9), i64::from(*d2 % 9)];
    let mut shape = vec![rows as i64];
    shape.extend_from_slice(&dims[..usize::from(*rank % 4)]);
    let values: Vec<f32> = rest
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let tensor = Tensor { shape, values };
    let g = Geometry::identity(8.0, 8.0);
    let outputs = vec![tensor.clone(), tensor];
    let geometries = vec![vec![g; rows]];
    if let Ok(scores) = decode(&m, &outputs, &geometries) {
        for s in scores {
            assert!((0.0..=1.0).contains(&s.defect_score), "{}", s.defect_score);
        }
    }
});
