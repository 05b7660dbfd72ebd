//! `watch`: verdicts as they are stored, until interrupted.

use crate::conn::Client;
use crate::output::{FRAME_HEADER, frame_cells, frame_json, table};
use crate::pb;

/// Arguments of `watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Only this edge.
    #[arg(long)]
    edge: Option<String>,
    /// Also print verdicts of the last N seconds.
    #[arg(long, default_value_t = 0)]
    backlog: u32,
}

/// Prints each verdict as it arrives: a row under the frame table's header (cells two spaces apart, not
/// aligned, since later rows are not known), or one JSON object per line.
pub async fn run(client: &mut Client, args: &WatchArgs, json: bool) -> anyhow::Result<()> {
    let mut stream = client
        .watch_verdicts(pb::WatchVerdictsRequest {
            edge_id: args.edge.clone().unwrap_or_default(),
            backlog_seconds: args.backlog,
        })
        .await?
        .into_inner();
    if !json {
        table(&FRAME_HEADER, &[]);
    }
    while let Some(f) = stream.message().await? {
        if json {
            println!("{}", frame_json(&f));
        } else {
            println!("{}", frame_cells(&f).join("  "));
        }
    }
    Ok(())
}
