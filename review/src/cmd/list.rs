//! `list`: judged frames, newest first, filtered and paged.

use crate::conn::Client;
use crate::output::{FRAME_HEADER, frame_cells, frame_json, table};
use crate::pb;
use anyhow::bail;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Arguments of `list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this edge.
    #[arg(long)]
    edge: Option<String>,
    /// Only this production line.
    #[arg(long)]
    line: Option<String>,
    /// Only this cloud label.
    #[arg(long)]
    label: Option<String>,
    /// Only frames of this part.
    #[arg(long)]
    part: Option<String>,
    /// Only frames captured within this long ago, e.g. 1h, 30m, 2days.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only frames where the edge's local decision contradicts the cloud verdict.
    #[arg(long)]
    disagreement: bool,
    /// Only frames without a human review.
    #[arg(long)]
    unreviewed: bool,
    /// Frames per page (1-1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue from a previous page (printed at the end of a full page).
    #[arg(long)]
    page_token: Option<String>,
}

/// Microseconds since the Unix epoch, now.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Lists one page of frames as a table (with the token of the next page) or one JSON document.
pub async fn run(client: &mut Client, args: &ListArgs, json: bool) -> anyhow::Result<()> {
    if !(1..=1000).contains(&args.limit) {
        bail!("--limit must be between 1 and 1000");
    }
    let since_us = args.since.map_or(0, |d| now_us() - d.as_micros() as i64);
    let r = client
        .list_frames(pb::ListFramesRequest {
            edge_id: args.edge.clone().unwrap_or_default(),
            line: args.line.clone().unwrap_or_default(),
            label: args.label.clone().unwrap_or_default(),
            since_us,
            until_us: 0,
            disagreement: args.disagreement,
            unreviewed: args.unreviewed,
            page_size: args.limit,
            page_token: args.page_token.clone().unwrap_or_default(),
            part_id: args.part.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if json {
        println!(
            "{}",
            json!({
                "frames": r.frames.iter().map(frame_json).collect::<Vec<_>>(),
                "next_page_token": r.next_page_token,
            })
        );
    } else {
        let rows: Vec<_> = r.frames.iter().map(frame_cells).collect();
        table(&FRAME_HEADER, &rows);
        println!("{} frames", rows.len());
        if !r.next_page_token.is_empty() {
            println!("more: --page-token {}", r.next_page_token);
        }
    }
    Ok(())
}
