//! systemd integration for `Type=notify` units (see `deploy/systemd/`): tell systemd the process has
//! started (called once the model is loaded and the admin endpoint listens), keep its status line showing
//! readiness, and pet its watchdog only while the process is live by its own checks, so a wedged process is
//! killed and restarted. Readiness is not a start condition: a worker whose broker is down has started and
//! must not be restarted in a loop for it. Does nothing when not started by systemd (no `NOTIFY_SOCKET`).

use crate::admin::Readiness;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reports readiness and liveness to systemd until `shutdown`, then says the process is stopping.
pub async fn notify(readiness: Arc<Readiness>, shutdown: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        // Not under systemd: nothing to report, but the stage lives as long as the others.
        shutdown.cancelled().await;
        return;
    }
    let mut usec = 0u64;
    let watchdog =
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
    // Petting at a third of the timeout leaves two chances before systemd gives up on the process.
    let every = watchdog.map_or(Duration::from_secs(1), |w| {
        (w / 3).max(Duration::from_millis(100))
    });
    send(&[NotifyState::Ready]);
    let mut last_status = String::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let report = readiness.report();
        let status = if report.ready {
            "ready".to_string()
        } else {
            let failing: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.required && !c.ok)
                .map(|c| c.name.as_str())
                .collect();
            format!("not ready: {}", failing.join(", "))
        };
        if status != last_status {
            send(&[NotifyState::Status(&status)]);
            last_status = status;
        }
        if watchdog.is_some() {
            if report.live {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    action =
                        "stopped petting the systemd watchdog; systemd will restart the process",
                    "A health check went stale: the process is wedged."
                );
            }
        }
    }
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "Cannot notify systemd.");
    }
}
