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

/// What both binaries run beside their flow: the model supervisor (golden probes, watchdog, hot reload)
/// reporting the `model` check, the admin endpoint (`/healthz`, `/readyz`, `/metrics`) and systemd
/// notification. Built (the admin listener bound) before any stage runs, so its address is known to callers.
pub struct Skeleton {
    model: std::sync::Arc<crate::serving::ServedModel>,
    readiness: std::sync::Arc<crate::admin::Readiness>,
    admin: Option<(tokio::net::TcpListener, std::net::SocketAddr)>,
    samples: Samples,
    routes: Option<axum::Router>,
}

/// Produces a binary's metric samples at each scrape (the model's are added by the skeleton).
pub type Samples = std::sync::Arc<dyn Fn() -> Vec<crate::metrics::Sample> + Send + Sync>;

impl Skeleton {
    /// Declares the readiness `checks` (name, required) besides the model's, and binds the admin listener
    /// when the endpoint is enabled.
    pub async fn bind(
        model: std::sync::Arc<crate::serving::ServedModel>,
        checks: &[(&'static str, bool)],
        admin: &crate::admin::AdminConfig,
        samples: Samples,
    ) -> std::io::Result<Self> {
        let mut all = vec![(crate::serving::CHECK, true)];
        all.extend_from_slice(checks);
        let readiness = std::sync::Arc::new(crate::admin::Readiness::expecting(&all));
        let admin = if admin.enabled {
            let listener = crate::admin::bind(admin.listen).await?;
            let addr = listener.local_addr()?;
            Some((listener, addr))
        } else {
            None
        };
        Ok(Self {
            model,
            readiness,
            admin,
            samples,
            routes: None,
        })
    }

    /// Adds routes to the admin endpoint.
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.routes = Some(routes);
        self
    }

    /// The readiness checks, for the stages that report them.
    pub fn readiness(&self) -> std::sync::Arc<crate::admin::Readiness> {
        self.readiness.clone()
    }

    /// Where the admin endpoint listens, if it is enabled.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }

    /// Spawns the model supervisor and systemd notification (stopped by `stop`) and the admin endpoint
    /// (stopped by `admin_stop`, so it answers until the binary has drained).
    pub fn spawn(
        self,
        sup: &mut crate::supervisor::Supervisor,
        stop: &CancellationToken,
        admin_stop: &CancellationToken,
    ) {
        use crate::supervisor::Ends;
        sup.spawn(
            "model supervisor",
            Ends::OnShutdown,
            self.model
                .clone()
                .supervise(self.readiness.clone(), stop.clone()),
        );
        sup.spawn(
            "systemd notify",
            Ends::OnShutdown,
            crate::systemd::notify(self.readiness.clone(), stop.clone()),
        );
        if let Some((listener, _)) = self.admin {
            let (model, own) = (self.model, self.samples);
            let samples: Samples = std::sync::Arc::new(move || {
                let mut s = own();
                s.extend(model.samples());
                s
            });
            let admin = crate::admin::Admin {
                readiness: self.readiness,
                samples,
                extra: self.routes,
            };
            sup.spawn(
                "admin endpoint",
                Ends::OnShutdown,
                crate::admin::serve(listener, admin, admin_stop.clone()),
            );
        }
    }
}
