//! `edges`: the edges with presence, backlog and last-seen time.

use crate::conn::Client;
use crate::output::{ago, table};
use crate::pb;
use serde_json::json;

/// Prints the edges as a table or one JSON document.
pub async fn run(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let r = client
        .list_edges(pb::ListEdgesRequest {})
        .await?
        .into_inner();
    if json {
        let edges: Vec<_> = r
            .edges
            .iter()
            .map(|e| {
                json!({"edge_id": e.edge_id, "site": e.site, "line": e.line, "online": e.online,
                       "last_seen_us": e.last_seen_us, "backlog_frames": e.backlog_frames,
                       "oldest_backlog_age_ms": e.oldest_backlog_age_ms,
                       "edge_model_version": e.edge_model_version})
            })
            .collect();
        println!("{}", json!({ "edges": edges }));
    } else {
        let rows: Vec<_> = r
            .edges
            .iter()
            .map(|e| {
                vec![
                    e.edge_id.clone(),
                    e.site.clone(),
                    e.line.clone(),
                    if e.online { "online" } else { "offline" }.into(),
                    ago(e.last_seen_us),
                    e.backlog_frames.to_string(),
                    format!("{:.1}s", e.oldest_backlog_age_ms as f64 / 1000.0),
                    e.edge_model_version.clone(),
                ]
            })
            .collect();
        table(
            &[
                "EDGE",
                "SITE",
                "LINE",
                "STATE",
                "LAST SEEN",
                "BACKLOG",
                "OLDEST",
                "MODEL",
            ],
            &rows,
        );
    }
    Ok(())
}
