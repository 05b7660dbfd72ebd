//! `tierline-edge`: the edge binary. Parses arguments, loads the config, and runs [`tierline_edge::run`].

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tierline_edge::{EdgeConfig, EdgeStats};

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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tierline_shared::telemetry::init_logging("info");
    tierline_shared::service::main(
        "tierline-edge",
        EdgeConfig::load(Some(&args.config)),
        args.check,
        |config| async move {
            let r = tierline_edge::app::load_model(&config).await?;
            let m = r.manifest();
            Ok::<_, tierline_edge::app::EdgeError>(format!(
                "configuration and model {} {} are OK",
                m.name, m.version
            ))
        },
        |config, shutdown| tierline_edge::run(config, Arc::new(EdgeStats::default()), shutdown),
    )
    .await
}
