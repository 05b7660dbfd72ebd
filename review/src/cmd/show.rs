//! `show`: one frame with its verdict, class scores, the regions the cloud model found and reviews; optionally saves its image.

use crate::conn::Client;
use crate::output::{frame_json, or_dash, table, time};
use crate::pb;
use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Edge id.
    edge: String,
    /// Frame sequence number.
    seq: u64,
    /// Write the image to this file.
    #[arg(long)]
    image_out: Option<PathBuf>,
}

/// Prints the frame as tables (fields, class probabilities, reviews) or one JSON document.
pub async fn run(client: &mut Client, args: &ShowArgs, json: bool) -> anyhow::Result<()> {
    let ShowArgs {
        edge,
        seq,
        image_out,
    } = args;
    let r = client
        .get_frame(pb::GetFrameRequest {
            edge_id: edge.clone(),
            seq: *seq,
        })
        .await?
        .into_inner();
    let f = r.frame.unwrap_or_default();
    if let Some(path) = image_out {
        if r.image.is_empty() {
            bail!(
                "frame {edge}/{seq} has no stored image (retention removed it or images are not kept)"
            );
        }
        std::fs::write(path, &r.image)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        let mut v = frame_json(&f);
        v["image_encoding"] = json!(r.image_encoding);
        v["image_bytes"] = json!(r.image.len());
        v["scores"] = json!(
            r.scores
                .iter()
                .map(|s| json!({"class": s.class_name, "probability": s.probability}))
                .collect::<Vec<_>>()
        );
        v["regions"] = json!(
            r.regions
                .iter()
                .map(|g| json!({"x": g.x, "y": g.y, "width": g.width, "height": g.height, "class": g.class_name, "score": g.score}))
                .collect::<Vec<_>>()
        );
        v["reviews"] = json!(
            r.reviews
                .iter()
                .map(|x| json!({"label": x.label, "defective": x.defective, "reviewer": x.reviewer, "note": x.note, "time_us": x.time_us}))
                .collect::<Vec<_>>()
        );
        println!("{v}");
        return Ok(());
    }
    let rows = vec![
        vec!["frame".into(), f.frame_id.clone()],
        vec![
            "where".into(),
            format!("{}/{} camera {}", f.site, f.line, f.camera_id),
        ],
        vec![
            "captured".into(),
            format!(
                "{} ({} clock)",
                time(f.capture_time_us),
                or_dash(&f.capture_clock)
            ),
        ],
        vec!["part".into(), or_dash(&f.part_id)],
        vec!["origin".into(), or_dash(&f.origin)],
        vec![
            "edge".into(),
            format!(
                "{} score {:.3} (model {})",
                f.reason, f.edge_score, f.edge_model_version
            ),
        ],
        vec![
            "edge local action".into(),
            if f.edge_local_action.is_empty() {
                "- (waited for the cloud)".into()
            } else {
                f.edge_local_action.clone()
            },
        ],
        vec![
            "cloud verdict".into(),
            format!(
                "{} defective={} score {:.3} (model {}) at {}",
                f.label,
                f.defective,
                f.defect_score,
                f.cloud_model_version,
                time(f.verdict_time_us)
            ),
        ],
        vec!["disagreement".into(), f.disagreement.to_string()],
        vec!["deliveries".into(), f.deliveries.to_string()],
        vec![
            "image".into(),
            if r.image.is_empty() {
                "not stored".into()
            } else {
                format!("{} bytes {}", r.image.len(), r.image_encoding)
            },
        ],
    ];
    table(&["FIELD", "VALUE"], &rows);
    println!();
    let scores: Vec<_> = r
        .scores
        .iter()
        .map(|s| vec![s.class_name.clone(), format!("{:.4}", s.probability)])
        .collect();
    table(&["CLASS", "PROBABILITY"], &scores);
    if !r.regions.is_empty() {
        println!();
        let regions: Vec<_> = r
            .regions
            .iter()
            .map(|g| {
                vec![
                    g.class_name.clone(),
                    format!("{:.3}", g.score),
                    format!("{:.0},{:.0}", g.x, g.y),
                    format!("{:.0}x{:.0}", g.width, g.height),
                ]
            })
            .collect();
        table(&["REGION CLASS", "SCORE", "AT (X,Y)", "SIZE"], &regions);
    }
    if !r.reviews.is_empty() {
        println!();
        let reviews: Vec<_> = r
            .reviews
            .iter()
            .map(|x| {
                vec![
                    time(x.time_us),
                    x.reviewer.clone(),
                    x.label.clone(),
                    x.defective.to_string(),
                    x.note.clone(),
                ]
            })
            .collect();
        table(&["REVIEWED", "BY", "LABEL", "DEFECTIVE", "NOTE"], &reviews);
    }
    Ok(())
}
