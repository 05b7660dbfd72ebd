//! `tierline-cloud`: the cloud worker binary. Parses arguments, loads the config, and runs
//! [`tierline_cloud::run`].

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tierline_cloud::{CloudConfig, CloudStats};

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
    /// Database URL, overriding `store.url`: sqlite://<path> or postgres://user@host:port/database.
    #[arg(long, env = "TIERLINE_DATABASE_URL")]
    database_url: Option<String>,
    /// Check the configuration and the model (checksum and golden samples), then exit.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tierline_shared::telemetry::init_logging("info");
    tierline_shared::service::main(
        "tierline-cloud",
        CloudConfig::load(Some(&args.config)).and_then(|mut c| {
            if let Some(url) = args.database_url {
                c.store.url = url;
                c.validate()?;
            }
            Ok(c)
        }),
        args.check,
        |config| async move {
            let r = tierline_cloud::app::load_model(&config).await?;
            let m = r.manifest();
            Ok::<_, tierline_cloud::app::CloudError>(format!(
                "configuration and model {} {} are OK",
                m.name, m.version
            ))
        },
        |config, shutdown| tierline_cloud::run(config, Arc::new(CloudStats::default()), shutdown),
    )
    .await
}
