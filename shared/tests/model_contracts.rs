//! Every kind of model a manifest can describe, run on real ONNX Runtime: the fixture models of
//! `models/fixtures/own` (built by `models/tools/fixtures.py`) and two third-party models from the
//! rapidocr_onnxruntime wheel on PyPI (fetched by `scripts/setup`). Scores are compared with onnxruntime's in
//! Python after independent (or the publisher's own) preprocessing, `reference.json`, within 1e-4; planted
//! defects must be localised where they were planted; manifests that do not match their model are refused
//! with errors naming the tensor and both shapes.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use std::path::{Path, PathBuf};
use tierline_shared::manifest::Manifest;
use tierline_shared::regions::Region;
use tierline_shared::runner::{ModelRunner, RunnerConfig, RunnerError, Score};

const TOLERANCE: f32 = 1e-4;

fn fixtures(group: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures")
        .join(group)
}

fn start(path: &Path) -> ModelRunner {
    let m = Manifest::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let runner = ModelRunner::start(m, RunnerConfig::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    runner
        .check_golden_blocking()
        .unwrap_or_else(|e| panic!("golden samples of {}: {e}", path.display()));
    runner
}

fn score(runner: &ModelRunner, image: &Path) -> Score {
    let bytes = std::fs::read(image).unwrap();
    runner.score_blocking(Bytes::from(bytes)).unwrap()
}

fn reference(group: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures(group).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn boxes(v: &serde_json::Value) -> Vec<[f32; 4]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let b: Vec<f32> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}

fn rect(r: &Region) -> [f32; 4] {
    [r.x, r.y, r.w, r.h]
}

#[test]
fn own_fixtures_of_every_kind_match_the_python_reference() {
    let refs = reference("own");
    let mut checked = 0;
    let mut worst = 0.0f32;
    for (manifest, images) in refs.as_object().unwrap() {
        let runner = start(&fixtures("own").join(manifest));
        for (image, want) in images.as_object().unwrap() {
            let got = score(&runner, &fixtures("own").join(image));
            if let Some(s) = want.get("defect_score") {
                let s = s.as_f64().unwrap() as f32;
                worst = worst.max((got.defect_score - s).abs());
                assert!(
                    (got.defect_score - s).abs() <= TOLERANCE,
                    "{manifest} on {image}: Tierline {} vs onnxruntime {s}",
                    got.defect_score
                );
            }
            if let Some(b) = want.get("boxes") {
                let got_boxes: Vec<[f32; 4]> = got.regions.iter().map(rect).collect();
                assert_eq!(got_boxes, boxes(b), "{manifest} on {image}: regions");
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} fixture images were checked");
    eprintln!(
        "own fixtures: {checked} images, largest score difference from onnxruntime {worst:e}"
    );
}

#[test]
fn planted_defects_are_localised_where_they_were_planted() {
    let own = fixtures("own");
    // Anomaly: a bright 6x6 spot at (50, 20).
    let s = score(&start(&own.join("anomaly.toml")), &own.join("spot.png"));
    assert!(s.defective);
    let spot = Region::new(50.0, 20.0, 6.0, 6.0, "", 0.0);
    assert!(
        s.regions
            .iter()
            .any(|r| r.iou(&spot) > 0.0 && r.x <= 53.0 && r.x + r.w >= 53.0),
        "{:?}",
        s.regions
    );
    // Detection, both layouts, letterboxed: a bright 16x16 square at (48, 32) and a dark one at (96, 64).
    for layout in ["yolov8", "yolov5"] {
        let runner = start(&own.join(format!("detector-{layout}.toml")));
        let s = score(&runner, &own.join("det-spot.png"));
        assert_eq!(s.label, "spot", "{layout}");
        assert_eq!(s.regions.len(), 1, "{layout}: {:?}", s.regions);
        assert_eq!(rect(&s.regions[0]), [48.0, 32.0, 16.0, 16.0], "{layout}");
        let s = score(&runner, &own.join("det-hole.png"));
        assert_eq!(s.label, "hole", "{layout}");
        assert_eq!(rect(&s.regions[0]), [96.0, 64.0, 16.0, 16.0], "{layout}");
        let s = score(&runner, &own.join("det-good.png"));
        assert!(!s.defective && s.regions.is_empty(), "{layout}: {s:?}");
    }
    // Segmentation, from class scores and from the class-index output: the crack at (20, 8), 4x40.
    for variant in ["probs", "mask"] {
        let runner = start(&own.join(format!("segmenter-{variant}.toml")));
        let s = score(&runner, &own.join("seg-crack.png"));
        assert_eq!(s.label, "crack");
        assert_eq!(rect(&s.regions[0]), [20.0, 8.0, 4.0, 40.0], "{variant}");
    }
}

#[test]
fn u8_nhwc_bgr_fixed_batch_and_f16_inputs_run_in_batches() {
    let own = fixtures("own");
    for variant in ["u8", "f16"] {
        let runner = std::sync::Arc::new(start(&own.join(format!("classifier-{variant}.toml"))));
        // Several frames at once: a fixed batch of 1 must be fed one row at a time, padded or not.
        let images: Vec<Bytes> = ["blue.png", "grey.png", "blue.png", "grey.png", "blue.png"]
            .iter()
            .map(|f| Bytes::from(std::fs::read(own.join(f)).unwrap()))
            .collect();
        let handles: Vec<_> = images
            .into_iter()
            .map(|img| {
                let r = runner.clone();
                std::thread::spawn(move || r.score_blocking(img).unwrap())
            })
            .collect();
        let labels: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().unwrap().defective)
            .collect();
        assert_eq!(labels, vec![true, false, true, false, true], "{variant}");
    }
}

#[test]
fn third_party_models_match_the_publishers_reference() {
    let dir = fixtures("third-party");
    if !dir.join("ch_PP-OCRv4_det_infer.onnx").is_file() {
        panic!(
            "the third-party test models are missing from {}: run scripts/setup",
            dir.display()
        );
    }
    let refs = reference("third-party");
    let mut worst = 0.0f32;
    let det = start(&dir.join("text-detector.toml"));
    for (image, want) in refs["text-detector.toml"].as_object().unwrap() {
        let got = score(&det, &dir.join(image));
        let s = want["defect_score"].as_f64().unwrap() as f32;
        worst = worst.max((got.defect_score - s).abs());
        assert!(
            (got.defect_score - s).abs() <= TOLERANCE,
            "{image}: Tierline {} vs publisher {s}",
            got.defect_score
        );
        let got_boxes: Vec<[f32; 4]> = got.regions.iter().map(rect).collect();
        assert_eq!(got_boxes, boxes(&want["boxes"]), "{image}");
    }
    let cls = start(&dir.join("text-direction.toml"));
    for (image, want) in refs["text-direction.toml"].as_object().unwrap() {
        let got = score(&cls, &dir.join(image));
        for (k, want) in want["class_scores"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap() as f32;
            let have = got.class_scores[k].1;
            worst = worst.max((have - want).abs());
            assert!(
                (have - want).abs() <= TOLERANCE,
                "{image} class {k}: Tierline {have} vs publisher {want}"
            );
        }
    }
    eprintln!("third-party models: largest difference from the publisher's pipeline {worst:e}");
}

/// Starts the model under a manifest edited by `edit`, expecting a refusal.
fn refused(manifest: &str, edit: impl Fn(&str) -> String) -> String {
    let own = fixtures("own");
    let text = edit(&std::fs::read_to_string(own.join(manifest)).unwrap());
    let m = Manifest::parse(&text, &own.join(manifest)).unwrap();
    match ModelRunner::start(m, RunnerConfig::default()) {
        Ok(_) => panic!("a mismatched manifest was served"),
        Err(e) => {
            assert!(
                matches!(e, RunnerError::Shape(_) | RunnerError::Signature { .. }),
                "{e}"
            );
            e.to_string()
        }
    }
}

#[test]
fn a_manifest_that_does_not_match_its_model_is_refused_naming_both_shapes() {
    // Wrong input channel count.
    let msg = refused("anomaly.toml", |t| {
        t.replace("channels = 3", "channels = 1")
            .replace("mean = [0.0, 0.0, 0.0]", "mean = [0.0]")
            .replace("std = [1.0, 1.0, 1.0]", "std = [1.0]")
    });
    assert!(
        msg.contains("\"input.1\"")
            && msg.contains("[?, 3, 64, 96]")
            && msg.contains("[N, 1, 64, 96]"),
        "{msg}"
    );
    // Wrong output rank: a yolov5 reading of a yolov8 output.
    let msg = refused("detector-yolov8.toml", |t| {
        t.replace("layout = \"yolov8\"", "layout = \"yolov5\"")
    });
    assert!(
        msg.contains("\"output0\"") && msg.contains("[?, 6, 64]") && msg.contains("[N, N, 7]"),
        "{msg}"
    );
    // Wrong tensor name.
    let msg = refused("anomaly.toml", |t| {
        t.replace("map = \"/model/anomaly_map\"", "map = \"anomaly_map\"")
    });
    assert!(
        msg.contains("\"anomaly_map\"") && msg.contains("/model/anomaly_map"),
        "{msg}"
    );
    // Wrong input type.
    let msg = refused("classifier-u8.toml", |t| {
        t.replace("type = \"u8\"", "type = \"f32\"")
            .replace("range = \"0-255\"", "range = \"0-1\"")
    });
    assert!(msg.contains("Uint8") && msg.contains("Float32"), "{msg}");
}

/// A 1920x1080 grey frame with a dark scratch `width` pixels wide, 300 long, at x = 1200.
fn scratched_frame(width: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(1920, 1080, |x, y| {
        let noise = ((x * 7 + y * 13) % 5) as u8;
        if (1200..1200 + width).contains(&x) && (400..700).contains(&y) {
            image::Rgb([10, 10, 10])
        } else {
            image::Rgb([113 + noise; 3])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn tiles_catch_a_thin_scratch_that_the_stretched_frame_misses() {
    let own = fixtures("own");
    let text = std::fs::read_to_string(own.join("anomaly.toml")).unwrap();
    let whole = Manifest::parse(&text, &own.join("anomaly.toml")).unwrap();
    let tiled_text = text.replacen(
        "[[golden]]",
        "[tiling]\ncols = 20\nrows = 17\noverlap = 8\n\n[[golden]]",
        1,
    );
    let tiled = Manifest::parse(&tiled_text, &own.join("anomaly.toml")).unwrap();
    let whole = ModelRunner::start(whole, RunnerConfig::default()).unwrap();
    let tiled = ModelRunner::start(tiled, RunnerConfig::default()).unwrap();
    for width in [2, 3] {
        let frame = Bytes::from(scratched_frame(width));
        let w = whole.score_blocking(frame.clone()).unwrap();
        let t = tiled.score_blocking(frame).unwrap();
        assert!(
            !w.defective,
            "{width} px: the stretched frame should miss the scratch (score {})",
            w.defect_score
        );
        assert!(
            t.defective,
            "{width} px: the tiles missed the scratch (score {})",
            t.defect_score
        );
        let scratch = Region::new(1200.0, 400.0, width as f32, 300.0, "", 0.0);
        assert!(
            t.regions
                .iter()
                .any(|r| r.x <= 1201.0 && r.x + r.w >= 1200.0 && r.iou(&scratch) > 0.0),
            "{width} px: regions {:?}",
            t.regions
        );
        assert!(
            t.regions.iter().all(|r| r.x >= 1000.0 && r.x < 1400.0),
            "{width} px: a region away from the scratch: {:?}",
            t.regions
        );
    }
    let clean = Bytes::from(scratched_frame(0));
    assert!(!tiled.score_blocking(clean).unwrap().defective);
}
