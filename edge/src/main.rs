//! `tierline-edge`: the edge binary. Parses arguments, loads the config, and runs [`tierline_edge::run`].

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tierline_edge::{EdgeConfig, EdgeStats};
use tokio_util::sync::CancellationToken;

/// Tierline edge: prescreen camera frames, forward suspects to the cloud, decide every frame in time.
///
/// Configuration comes from a TOML file (see deploy/edge.example.toml); any value can be overridden with
/// TIERLINE_EDGE__<SECTION>__<KEY>=value, e.g. TIERLINE_EDGE__MQTT__HOST=broker.plant.local.
/// Logging follows RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(name = "tierline-edge", version)]
struct Args {
    /// Path of the edge configuration file (TOML).
    #[arg(short, long, env = "TIERLINE_EDGE_CONFIG")]
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
    let config = match EdgeConfig::load(Some(&args.config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tierline-edge: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.check {
        return match tierline_edge::app::load_model(&config).await {
            Ok(r) => {
                println!(
                    "configuration and model {} {} are OK",
                    r.manifest().name,
                    r.manifest().version
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tierline-edge: {e}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tierline_shared::telemetry::shutdown_signal().await;
        tracing::info!("Shutdown requested; draining.");
        on_signal.cancel();
    });
    match tierline_edge::run(config, Arc::new(EdgeStats::default()), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierline-edge: {e}");
            ExitCode::FAILURE
        }
    }
}
