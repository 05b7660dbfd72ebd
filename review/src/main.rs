//! `tierline-review`: the review API from a terminal. Readable tables by default, `--json` for scripts.

mod args;
mod cmd;
mod conn;
mod error;
/// The labelled-folder format, shared with the cloud's console export (one source file, compiled here
/// without the rest of `tierline-shared`).
#[path = "../../shared/src/labels.rs"]
mod labels;
mod output;

/// Generated protobuf types and gRPC client of the review API.
#[allow(missing_docs, clippy::all)]
mod pb {
    tonic::include_proto!("tierline.review.v1");
}

use args::{Args, Command};
use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    error::exit_code(run(Args::parse()).await)
}

/// Connects to the review API (or the model registry), then runs the subcommand.
async fn run(args: Args) -> anyhow::Result<()> {
    let (server, token, ca) = (&args.server, args.token.as_deref(), args.ca_cert.as_deref());
    let review = || conn::connect(server, token, ca);
    match &args.command {
        Command::List(a) => cmd::list::run(&mut review().await?, a, args.json).await,
        Command::Show(a) => cmd::show::run(&mut review().await?, a, args.json).await,
        Command::Label(a) => cmd::label::run(&mut review().await?, a, args.json).await,
        Command::Edges => cmd::edges::run(&mut review().await?, args.json).await,
        Command::Export(a) => cmd::export::run(&mut review().await?, a, args.json).await,
        Command::Watch(a) => cmd::watch::run(&mut review().await?, a, args.json).await,
        Command::Recall(a) => cmd::recall::run(&mut review().await?, a, args.json).await,
        Command::Models(a) => {
            let mut client = conn::connect_models(server, token, ca).await?;
            cmd::models::run(&mut client, a, args.json).await
        }
        Command::Rollout(a) => {
            let mut client = conn::connect_models(server, token, ca).await?;
            cmd::rollout::run(&mut client, a, args.json).await
        }
    }
}
