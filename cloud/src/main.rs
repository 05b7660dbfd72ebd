//! `tierline-cloud`: the cloud worker binary. Parses arguments, loads the config, and runs
//! [`tierline_cloud::run`].

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tierline_cloud::{CloudConfig, CloudStats};
use tokio_util::sync::CancellationToken;

/// Tierline cloud worker: judge forwarded frames with the full model, store one verdict per frame, reply.
///
/// Configuration comes from a TOML file (see deploy/cloud.example.toml); any value can be overridden with
/// TIERLINE_CLOUD__<SECTION>__<KEY>=value, e.g. TIERLINE_CLOUD__STORE__URL=sqlite:///var/lib/tierline/cloud.db.
/// Run several workers with the same `group` to split the load. Logging follows RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(name = "tierline-cloud", version)]
struct Args {
    /// Path of the cloud configuration file (TOML).
    #[arg(short, long, env = "TIERLINE_CLOUD_CONFIG")]
    config: PathBuf,
    /// Check the configuration and the model (checksum and golden samples), then exit.
    #[arg(long)]
    check: bool,
}

/// Exit code for usage and configuration errors (sysexits EX_CONFIG).
const EX_CONFIG: u8 = 78;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tierline_shared::telemetry::init_logging("info");
    let config = match CloudConfig::load(Some(&args.config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tierline-cloud: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.check {
        return match tierline_cloud::app::load_model(&config).await {
            Ok(r) => {
                println!(
                    "configuration and model {} {} are OK",
                    r.manifest().name,
                    r.manifest().version
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tierline-cloud: {e}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tierline_shared::telemetry::shutdown_signal().await;
        tracing::info!("Shutdown requested; finishing frames in flight.");
        on_signal.cancel();
    });
    match tierline_cloud::run(config, Arc::new(CloudStats::default()), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierline-cloud: {e}");
            ExitCode::FAILURE
        }
    }
}
