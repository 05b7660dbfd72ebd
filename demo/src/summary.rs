//! The live summary line and the final report of the demo.

use std::time::Duration;
use tierline_cloud::CloudStats;
use tierline_edge::EdgeStats;
use tierline_edge::stats::{get, percentiles_ms};

/// One snapshot of the pipeline, as a person reads it.
pub fn line(elapsed: Duration, edge: &EdgeStats, cloud: &CloudStats) -> String {
    let frames = get(&edge.frames_captured);
    let secs = elapsed.as_secs_f64().max(0.001);
    let forwarded = get(&edge.frames_suspect) + get(&edge.frames_audit);
    let pct = |n: u64, d: u64| {
        if d == 0 {
            0.0
        } else {
            100.0 * n as f64 / d as f64
        }
    };
    let (p50, p99, _, _) = percentiles_ms(&edge.decision_latency_us);
    let line = format!(
        "{:>5.1}s  frames {:>6} ({:>5.1}/s)  passed {:>6}  forwarded {:>5} ({:>4.1}%)  bytes saved {:>5.1}%  verdicts {:>5}  suspect decisions: cloud {:>5} fallback {:>4}  p50 {:>6.2} ms  p99 {:>6.2} ms  link {}",
        secs,
        frames,
        frames as f64 / secs,
        get(&edge.frames_passed),
        forwarded,
        pct(forwarded, frames),
        100.0 - pct(get(&edge.bytes_forwarded), get(&edge.bytes_captured)),
        get(&cloud.verdicts_stored),
        get(&edge.decisions_cloud),
        get(&edge.decisions_fallback),
        p50,
        p99,
        if edge.link_up.load(std::sync::atomic::Ordering::Relaxed) {
            "up"
        } else {
            "DOWN"
        },
    );
    let (defects, goods) = (get(&edge.truth_defects), get(&edge.truth_goods));
    if defects + goods == 0 {
        return line;
    }
    format!(
        "{line}  vs synthetic truth: escapes {}/{defects} false rejects {}/{goods}",
        get(&edge.truth_escapes),
        get(&edge.truth_false_rejects),
    )
}

/// Escapes and false rejects against the ground truth the synthetic cameras know, for the report.
fn against_truth(edge: &EdgeStats) -> String {
    let (defects, goods) = (get(&edge.truth_defects), get(&edge.truth_goods));
    if defects + goods == 0 {
        return "against ground truth     unknown (the cameras do not know which frames are defective)\n".into();
    }
    let (escapes, false_rejects) = (get(&edge.truth_escapes), get(&edge.truth_false_rejects));
    let pct = |n: u64, d: u64| {
        if d == 0 {
            0.0
        } else {
            100.0 * n as f64 / d as f64
        }
    };
    format!(
        "against ground truth     escapes {escapes} of {defects} defective frames ({:.1}%) decided pass; \
         false rejects {false_rejects} of {goods} good frames ({:.1}%) decided reject\n\
         {:25}(the synthetic cameras know which frames carry a defect; a quarantined frame is held, so it \
         is neither an escape nor a false reject; a real camera has no such truth)\n",
        pct(escapes, defects),
        pct(false_rejects, goods),
        ""
    )
}

/// The final report.
pub fn report(
    elapsed: Duration,
    edge: &EdgeStats,
    cloud: &CloudStats,
    stored_verdicts: u64,
) -> String {
    let frames = get(&edge.frames_captured);
    let suspects = get(&edge.frames_suspect);
    let audits = get(&edge.frames_audit);
    let forwarded = suspects + audits;
    let (p50, p99, max, n) = percentiles_ms(&edge.decision_latency_us);
    let saved_mb =
        (get(&edge.bytes_captured).saturating_sub(get(&edge.bytes_forwarded))) as f64 / 1e6;
    let every = if stored_verdicts == forwarded {
        "yes"
    } else {
        "NO"
    };
    format!(
        "\n== Tierline demo report ({:.1} s) ==\n\
         frames captured          {frames} ({:.1}/s), dropped by backpressure {}\n\
         passed at the edge       {}\n\
         forwarded to the cloud   {forwarded} ({:.1}%): {suspects} suspects + {audits} audit samples\n\
         bandwidth                {:.1}% of image bytes stayed on the edge ({saved_mb:.1} MB)\n\
         cloud verdicts stored    {stored_verdicts} (one per forwarded frame: {every}); duplicate deliveries answered from the store: {}\n\
         suspect line decisions   {} from cloud verdicts in time, {} by local fallback\n\
         decision latency         p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms over {n} suspects (capture → line decision)\n\
         reconciliations          {} late verdicts, {} disagreements\n\
         audit samples            {} prescreen misses found by the cloud\n\
         unreadable frames        {}\n\
         {}",
        elapsed.as_secs_f64(),
        frames as f64 / elapsed.as_secs_f64().max(0.001),
        get(&edge.frames_dropped),
        get(&edge.frames_passed),
        if frames == 0 {
            0.0
        } else {
            100.0 * forwarded as f64 / frames as f64
        },
        100.0
            - if get(&edge.bytes_captured) == 0 {
                0.0
            } else {
                100.0 * get(&edge.bytes_forwarded) as f64 / get(&edge.bytes_captured) as f64
            },
        get(&cloud.duplicates),
        get(&edge.decisions_cloud),
        get(&edge.decisions_fallback),
        get(&edge.reconciliations),
        get(&edge.disagreements),
        get(&edge.audit_misses),
        get(&edge.frames_unreadable),
        against_truth(edge),
    )
}
