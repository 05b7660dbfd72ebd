//! The HTTP admin endpoint both binaries serve: liveness, readiness and metrics.
//!
//! - `GET /healthz`: liveness. 200 while every readiness check is still being refreshed by its task; 503
//!   when one has not been refreshed for longer than its limit (the task that checks it is stuck), which
//!   is what a supervisor should restart the process for. A process that is merely not ready stays live.
//! - `GET /readyz`: readiness. 200 when every required check passes, else 503. The JSON body lists every
//!   check with its state and detail, required or not.
//! - `GET /metrics`: Prometheus metrics in the OpenMetrics text format (see [`crate::metrics`]).
//!
//! Checks are pushed by the components that know the truth (the model supervisor, the outbox watcher,
//! the link), not computed per request, so a probe never waits on a database or a model.

use crate::metrics::{self, Sample};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where the admin endpoint listens (`[admin]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address; port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    /// Serve the endpoint at all.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// How often the process re-checks its disk, link and database for `/readyz`.
    #[serde(default = "default_check_every", with = "humantime_serde")]
    pub check_every: Duration,
}

fn default_enabled() -> bool {
    true
}
fn default_check_every() -> Duration {
    Duration::from_secs(5)
}

impl AdminConfig {
    /// Listening on `listen`.
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            enabled: true,
            check_every: default_check_every(),
        }
    }
}

/// The state of one readiness check.
#[derive(Debug, Clone)]
struct CheckState {
    ok: bool,
    required: bool,
    detail: String,
    updated: Instant,
    max_age: Duration,
}

/// One check as reported by `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckReport {
    /// Check name (`model`, `outbox`, `link`, `database`…).
    pub name: String,
    /// Whether it passes (a stale check does not).
    pub ok: bool,
    /// Whether readiness depends on it.
    pub required: bool,
    /// What was found, in words.
    pub detail: String,
    /// Seconds since it was last refreshed.
    pub age_seconds: f64,
}

/// The readiness report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReadinessReport {
    /// Every required check passes.
    pub ready: bool,
    /// No check is stale.
    pub live: bool,
    /// The checks that fail without making the process unready (a camera or the link down): the process
    /// runs degraded.
    pub degraded: Vec<String>,
    /// All checks, by name.
    pub checks: Vec<CheckReport>,
}

/// Readiness checks, set by the components that own them.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: RwLock<BTreeMap<&'static str, CheckState>>,
}

impl Readiness {
    /// Readiness with the checks `names` (name, required) declared up front and failing ("not checked
    /// yet"), so the process is not ready before every required check has passed once.
    pub fn expecting(names: &[(&'static str, bool)]) -> Self {
        let r = Self::default();
        if let Ok(mut checks) = r.checks.write() {
            for (name, required) in names {
                checks.insert(
                    name,
                    CheckState {
                        ok: false,
                        required: *required,
                        detail: "not checked yet".into(),
                        updated: Instant::now(),
                        max_age: Duration::MAX,
                    },
                );
            }
        }
        r
    }

    /// Records the outcome of check `name`. `max_age` is how long the outcome stays valid: a check not
    /// refreshed within it fails (its checker is stuck), which also fails liveness.
    pub fn set(
        &self,
        name: &'static str,
        required: bool,
        ok: bool,
        detail: impl Into<String>,
        max_age: Duration,
    ) {
        let state = CheckState {
            ok,
            required,
            detail: detail.into(),
            updated: Instant::now(),
            max_age,
        };
        if let Ok(mut checks) = self.checks.write() {
            let changed = checks.get(name).is_none_or(|c| c.ok != ok);
            if changed {
                if ok {
                    tracing::info!(check = name, detail = %state.detail, "Readiness check passes.");
                } else {
                    tracing::warn!(check = name, required, detail = %state.detail, "Readiness check fails.");
                }
            }
            checks.insert(name, state);
        }
    }

    /// The current report.
    pub fn report(&self) -> ReadinessReport {
        let now = Instant::now();
        let checks: Vec<CheckReport> = match self.checks.read() {
            Ok(checks) => checks
                .iter()
                .map(|(name, c)| {
                    let age = now.saturating_duration_since(c.updated);
                    let stale = age > c.max_age;
                    CheckReport {
                        name: (*name).to_string(),
                        ok: c.ok && !stale,
                        required: c.required,
                        detail: if stale {
                            format!(
                                "not refreshed for {:.1}s (limit {:.1}s): the task that checks it is stuck; last: {}",
                                age.as_secs_f64(),
                                c.max_age.as_secs_f64(),
                                c.detail
                            )
                        } else {
                            c.detail.clone()
                        },
                        age_seconds: age.as_secs_f64(),
                    }
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let live = checks
            .iter()
            .all(|c| c.age_seconds <= self.max_age_of(&c.name).as_secs_f64());
        // No checks yet means nothing has been verified: not ready.
        let ready = !checks.is_empty() && checks.iter().all(|c| c.ok || !c.required);
        let degraded = checks
            .iter()
            .filter(|c| !c.ok && !c.required)
            .map(|c| c.name.clone())
            .collect();
        ReadinessReport {
            ready,
            live,
            degraded,
            checks,
        }
    }

    fn max_age_of(&self, name: &str) -> Duration {
        self.checks
            .read()
            .ok()
            .and_then(|c| c.get(name).map(|c| c.max_age))
            .unwrap_or(Duration::MAX)
    }
}

/// Name of the MQTT link check, on both tiers.
pub const LINK: &str = "link";

/// Sets the `link` check from the link's state: up with `up_detail`, or down with the link's last error and
/// what the process does meanwhile (`while_down`).
pub fn set_link(
    readiness: &Readiness,
    required: bool,
    link: (bool, Option<String>),
    up_detail: &str,
    while_down: &str,
    max_age: Duration,
) {
    let (up, error) = link;
    let detail = if up {
        up_detail.to_string()
    } else {
        format!(
            "{}; {while_down}",
            error.unwrap_or_else(|| "not connected to the broker".into())
        )
    };
    readiness.set(LINK, required, up, detail, max_age);
}

/// The clock of every health watcher: ticks at once and then every period, until shutdown.
pub struct Ticker(tokio::time::Interval);

impl Ticker {
    /// Ticking every `every`.
    pub fn new(every: Duration) -> Self {
        Self(tokio::time::interval(every))
    }

    /// Waits for the next tick; `false` once `shutdown` is cancelled.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = self.0.tick() => true,
        }
    }
}

/// What the admin endpoint serves.
#[derive(Clone)]
pub struct Admin {
    /// Readiness checks.
    pub readiness: Arc<Readiness>,
    /// Produces the metric samples at each scrape.
    pub samples: Arc<dyn Fn() -> Vec<Sample> + Send + Sync>,
    /// Routes a binary adds to the admin endpoint (the edge's `POST /trigger`).
    pub extra: Option<Router>,
}

impl Admin {
    /// The metrics text a scrape returns now (with `tierline_ready`).
    pub fn metrics_text(&self) -> String {
        let mut samples = (self.samples)();
        samples.push(Sample::of(
            &metrics::READY,
            u64::from(self.readiness.report().ready),
        ));
        metrics::render(samples)
    }
}

/// Binds the admin endpoint's listener on `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen on admin address {addr}: {e}; set [admin] listen to a free address"
            ),
        )
    })
}

/// Serves the admin endpoint on a bound listener until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(admin.clone());
    let app = match admin.extra {
        Some(extra) => app.merge(extra),
        None => app,
    };
    tracing::info!(address = %local, "Admin endpoint listening (/healthz, /readyz, /metrics).");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn healthz(State(admin): State<Admin>) -> Response {
    let report = admin.readiness.report();
    let stale: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.age_seconds > admin.readiness.max_age_of(&c.name).as_secs_f64())
        .map(|c| c.name.as_str())
        .collect();
    if stale.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stuck: {}\n", stale.join(", ")),
        )
            .into_response()
    }
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let report = admin.readiness.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string_pretty(&report).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics_handler(State(admin): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        admin.metrics_text(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_required_check_and_at_least_one() {
        let r = Readiness::default();
        assert!(!r.report().ready, "no checks yet must not be ready");
        let long = Duration::from_secs(60);
        r.set("model", true, true, "golden samples pass", long);
        r.set("link", false, false, "broker unreachable", long);
        let rep = r.report();
        assert!(rep.ready, "{rep:?}");
        r.set("outbox", true, false, "disk full", long);
        assert!(!r.report().ready);
        r.set("outbox", true, true, "ok", long);
        assert!(r.report().ready);
    }

    #[test]
    fn a_stale_check_fails_readiness_and_liveness() {
        let r = Readiness::default();
        r.set("model", true, true, "fine", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let rep = r.report();
        assert!(!rep.ready && !rep.live, "{rep:?}");
        assert!(rep.checks[0].detail.contains("stuck"), "{rep:?}");
    }
}
