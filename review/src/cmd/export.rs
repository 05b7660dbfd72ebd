//! `export`: the reviewed frames as a labelled folder (one image per frame and a `labels.csv`), the format
//! `tierline-models eval` and `calibrate` read, as the review console's export writes it.

use crate::conn::Client;
use crate::labels::{HEADER, Labelled};
use crate::pb;
use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Folder to write (created if missing; it must not hold a labels.csv already).
    dir: PathBuf,
    /// Only this edge.
    #[arg(long)]
    edge: Option<String>,
    /// Only this production line.
    #[arg(long)]
    line: Option<String>,
    /// Only this camera.
    #[arg(long)]
    camera: Option<String>,
    /// Only this cloud label.
    #[arg(long)]
    label: Option<String>,
    /// Only frames judged by this model version (prescreen or cloud model).
    #[arg(long)]
    model_version: Option<String>,
}

/// Frames listed per call.
const PAGE: u32 = 500;

/// Writes every reviewed frame the filters select; frames whose image retention removed are skipped and
/// counted.
pub async fn run(client: &mut Client, args: &ExportArgs, json: bool) -> anyhow::Result<()> {
    let csv_path = args.dir.join("labels.csv");
    if csv_path.exists() {
        bail!(
            "{} already exists; export into an empty folder so labels of two exports never mix",
            csv_path.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut csv = format!("{HEADER}\n");
    let (mut written, mut without_image) = (0usize, 0usize);
    let mut page_token = String::new();
    loop {
        let page = client
            .list_frames(pb::ListFramesRequest {
                edge_id: args.edge.clone().unwrap_or_default(),
                line: args.line.clone().unwrap_or_default(),
                label: args.label.clone().unwrap_or_default(),
                camera_id: args.camera.clone().unwrap_or_default(),
                model_version: args.model_version.clone().unwrap_or_default(),
                reviewed: true,
                page_size: PAGE,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for f in &page.frames {
            let r = client
                .get_frame(pb::GetFrameRequest {
                    edge_id: f.edge_id.clone(),
                    seq: f.seq,
                })
                .await?
                .into_inner();
            let (Some(frame), Some(review)) = (r.frame, r.reviews.last()) else {
                continue;
            };
            if r.image.is_empty() {
                without_image += 1;
                continue;
            }
            let entry = Labelled {
                edge_id: &frame.edge_id,
                incarnation: "",
                seq: frame.seq,
                camera_id: &frame.camera_id,
                label: &review.label,
                cloud_label: &frame.label,
                reviewer: &review.reviewer,
                png: r.image_encoding == "png",
            };
            let path = args.dir.join(entry.file_name());
            std::fs::write(&path, &r.image)
                .with_context(|| format!("cannot write {}", path.display()))?;
            csv.push_str(&entry.csv_line());
            csv.push('\n');
            written += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    if json {
        println!(
            "{}",
            json!({"dir": args.dir, "frames": written, "skipped_without_image": without_image})
        );
    } else {
        println!(
            "{written} reviewed frames written to {} ({without_image} skipped: image no longer stored)",
            args.dir.display()
        );
    }
    Ok(())
}
