//! The skeleton both binaries share: a bad configuration exits with `EX_CONFIG` naming the problem,
//! `--check` loads the model and exits, otherwise the service runs until Ctrl-C or SIGTERM.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Exit code for usage and configuration errors (sysexits EX_CONFIG).
pub const EX_CONFIG: u8 = 78;

/// Runs a binary: `config` as loaded, then either `check` (with `--check`) or `run` with a shutdown token.
pub async fn main<C, CE, KE, RE, KF, RF>(
    name: &str,
    config: Result<C, CE>,
    check_only: bool,
    check: impl FnOnce(C) -> KF,
    run: impl FnOnce(C, CancellationToken) -> RF,
) -> ExitCode
where
    CE: Display,
    KE: Display,
    RE: Display,
    KF: Future<Output = Result<String, KE>>,
    RF: Future<Output = Result<(), RE>>,
{
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if check_only {
        return match check(config).await {
            Ok(ok) => {
                println!("{ok}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::telemetry::shutdown_signal().await;
        tracing::info!("Shutdown requested; draining.");
        on_signal.cancel();
    });
    match run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
