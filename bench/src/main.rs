//! `tierline-bench`: runs the benchmark harness and writes `docs/benchmarks.md` and
//! `docs/benchmarks/results.json`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tierline_bench::{ALL, Options, Section};

/// Measures Tierline on this machine against raw ONNX Runtime and the machine's limits.
///
/// Runs all nine measurements (about 9 minutes on 2 cores) unless --only names some; results of sections
/// not run are kept from the previous run.
#[derive(Parser, Debug)]
#[command(name = "tierline-bench", version)]
struct Args {
    /// Run only these sections, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
    /// Tiny sizes: checks the harness end to end in well under a minute; the numbers mean nothing.
    #[arg(long)]
    quick: bool,
    /// Measure nothing: rewrite benchmarks.md from the existing benchmarks/results.json.
    #[arg(long)]
    render: bool,
    /// Directory that receives benchmarks.md and benchmarks/results.json.
    #[arg(long, default_value_os_t = tierline_bench::repo_root().join("docs"))]
    out_dir: PathBuf,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Runs an edge exactly as `tierline-edge --config <file>` does (used by the memory and recovery
    /// measurements, which need the edge in its own process).
    #[command(hide = true)]
    EdgeProcess {
        /// Edge configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Mode::EdgeProcess { config }) = args.mode {
        return tierline_bench::recovery::edge_process(config).await;
    }
    tierline_shared::telemetry::init_logging("warn");
    let only = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        args.only
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let opts = Options {
        only,
        quick: args.quick,
        out_dir: args.out_dir,
        render_only: args.render,
    };
    match tierline_bench::run(opts, command).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierline-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
