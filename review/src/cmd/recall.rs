//! `recall`: the live miss-rate estimate of each edge's prescreen, per version, from audit samples (random
//! passed frames the cloud judged), with the Wilson 95 % interval and the server's target.

use crate::conn::Client;
use crate::output::table;
use crate::pb;
use serde_json::json;

/// Arguments of `recall`.
#[derive(clap::Args, Debug)]
pub struct RecallArgs {
    /// Count audit samples captured within this long (e.g. 24h, 7d; default: the server's audit.window).
    #[arg(long, value_parser = humantime::parse_duration)]
    window: Option<std::time::Duration>,
}

/// Prints the estimates as a table or one JSON document.
pub async fn run(client: &mut Client, args: &RecallArgs, json: bool) -> anyhow::Result<()> {
    let r = client
        .audit_estimates(pb::AuditEstimatesRequest {
            window_seconds: args.window.map_or(0, |w| w.as_secs().max(1)),
        })
        .await?
        .into_inner();
    let verdict = |e: &pb::AuditEstimate| {
        if e.lower95 > r.miss_rate_target {
            "above target"
        } else if e.upper95 <= r.miss_rate_target {
            "meets target"
        } else {
            "not yet known"
        }
    };
    if json {
        let estimates: Vec<_> = r
            .estimates
            .iter()
            .map(|e| {
                json!({"edge_id": e.edge_id, "model_version": e.model_version, "audits": e.audits,
                       "misses": e.misses, "miss_rate": e.miss_rate, "lower95": e.lower95,
                       "upper95": e.upper95, "verdict": verdict(e)})
            })
            .collect();
        println!(
            "{}",
            json!({"estimates": estimates, "miss_rate_target": r.miss_rate_target,
                   "window_seconds": r.window_seconds})
        );
    } else {
        let pct = |v: f64| format!("{:.2} %", 100.0 * v);
        let rows: Vec<_> = r
            .estimates
            .iter()
            .map(|e| {
                vec![
                    e.edge_id.clone(),
                    e.model_version.clone(),
                    e.audits.to_string(),
                    e.misses.to_string(),
                    pct(e.miss_rate),
                    format!("{} – {}", pct(e.lower95), pct(e.upper95)),
                    verdict(e).into(),
                ]
            })
            .collect();
        table(
            &[
                "EDGE",
                "PRESCREEN",
                "AUDITS",
                "MISSES",
                "MISS RATE",
                "95 % INTERVAL",
                "",
            ],
            &rows,
        );
        println!(
            "target: at most {} of passed frames defective; audit samples of the last {}",
            pct(r.miss_rate_target),
            humantime::format_duration(std::time::Duration::from_secs(r.window_seconds))
        );
    }
    Ok(())
}
