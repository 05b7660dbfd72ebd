//! Command-line arguments: the options every subcommand takes, and the subcommands (their own arguments
//! are defined next to them in [`crate::cmd`]).

use crate::cmd::{export, label, list, models, recall, rollout, show, watch};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Review frames judged by the Tierline cloud: list, show, label, and watch verdicts; list edges; publish
/// and roll out model bundles (operators).
///
/// Exit codes: 0 success, 1 the server refused or failed the call, 2 bad arguments, 3 the server is
/// unreachable.
#[derive(Parser, Debug)]
#[command(name = "tierline-review", version)]
pub struct Args {
    /// Review API address.
    #[arg(
        long,
        env = "TIERLINE_REVIEW_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Your reviewer token (the one the server's api.reviewers entry for you names); reviews are recorded
    /// under its owner. Prefer the environment variable.
    #[arg(
        long,
        env = "TIERLINE_REVIEW_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// PEM CA certificate to verify the server with (for https:// servers with a private CA).
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Print JSON (one document; `watch` prints one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List judged frames, newest first.
    List(list::ListArgs),
    /// Show one frame: verdict, scores, reviews; optionally save its image.
    Show(show::ShowArgs),
    /// Record a human label for a frame.
    Label(label::LabelArgs),
    /// List edges with presence, backlog and last-seen time.
    Edges,
    /// Write the reviewed frames as a labelled folder (images + labels.csv) for tierline-models.
    Export(export::ExportArgs),
    /// Print verdicts as they are stored, until interrupted.
    Watch(watch::WatchArgs),
    /// The prescreen's live miss rate per edge and version, from audit samples, against the target.
    Recall(recall::RecallArgs),
    /// The model registry (operators): publish signed bundles, point targets at them, roll back, events.
    Models(models::ModelsArgs),
    /// Staged model rollouts to an edge group (operators): start, list, pause, resume, abort, roll back.
    Rollout(rollout::RolloutArgs),
}
