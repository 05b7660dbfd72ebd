//! `label`: records a human label for a frame.

use crate::conn::Client;
use crate::pb;
use serde_json::json;

/// Arguments of `label`.
#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// Edge id.
    edge: String,
    /// Frame sequence number.
    seq: u64,
    /// The label, e.g. good, scratch.
    label: String,
    /// The part is defective (default: good).
    #[arg(long)]
    defective: bool,
    /// Who reviewed. Optional: the server records the owner of the token; if this names someone else, the
    /// server refuses the call.
    #[arg(long)]
    reviewer: Option<String>,
    /// A note.
    #[arg(long, default_value = "")]
    note: String,
}

/// Submits the review and prints what the server recorded (one line, or one JSON document).
pub async fn run(client: &mut Client, args: &LabelArgs, json: bool) -> anyhow::Result<()> {
    let LabelArgs {
        edge,
        seq,
        label,
        defective,
        reviewer,
        note,
    } = args;
    let r = client
        .submit_review(pb::SubmitReviewRequest {
            edge_id: edge.clone(),
            seq: *seq,
            label: label.clone(),
            defective: *defective,
            reviewer: reviewer.clone().unwrap_or_default(),
            note: note.clone(),
        })
        .await?
        .into_inner();
    let review = r.review.unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({"edge_id": edge, "seq": seq, "label": review.label, "defective": review.defective, "reviewer": review.reviewer, "time_us": review.time_us})
        );
    } else {
        println!(
            "labelled {edge}/{seq} as {} (defective={}) by {}",
            review.label,
            review.defective,
            if review.reviewer.is_empty() {
                "-"
            } else {
                &review.reviewer
            }
        );
    }
    Ok(())
}
