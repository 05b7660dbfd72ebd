//! The oracle: what the edge decided (its decision log) against what the cloud stored (its database).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The edge's decision log, parsed.
pub struct Decisions {
    /// Every line, in order.
    pub events: Vec<Value>,
    /// Lines that did not parse: a process killed mid-write leaves one cut-short line.
    pub torn_lines: usize,
}

impl Decisions {
    /// Reads a JSON-lines decision log.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut events = Vec::new();
        let mut torn_lines = 0;
        for l in text.lines().filter(|l| !l.is_empty()) {
            match serde_json::from_str(l) {
                Ok(v) => events.push(v),
                Err(_) => torn_lines += 1,
            }
        }
        Self { events, torn_lines }
    }

    /// Decision events only.
    pub fn decisions(&self) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(|e| e["event"] == "decision")
    }

    /// Events of a given kind.
    pub fn of(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(move |e| e["event"] == kind)
    }

    /// Decision count per seq.
    pub fn per_seq(&self) -> BTreeMap<u64, usize> {
        let mut m = BTreeMap::new();
        for d in self.decisions() {
            *m.entry(d["seq"].as_u64().expect("seq")).or_insert(0) += 1;
        }
        m
    }

    /// Checks that `frames` frames got exactly one decision line each.
    pub fn assert_one_decision_each(&self, frames: u64) {
        let per_seq = self.per_seq();
        assert!(
            per_seq.values().all(|&n| n == 1),
            "a frame was decided twice"
        );
        assert_eq!(
            per_seq.len() as u64,
            frames,
            "every frame taken has exactly one decision line"
        );
    }

    /// Seqs of suspects: decided by the cloud or by local fallback after being accepted.
    pub fn suspect_seqs(&self) -> BTreeSet<u64> {
        self.decisions()
            .filter(|d| {
                d["source"] == "cloud"
                    || (d["source"] == "local-fallback" && d.get("detail").is_none())
            })
            .map(|d| d["seq"].as_u64().expect("seq"))
            .collect()
    }
}

/// What the cloud stored.
pub struct Stored {
    /// Verdict rows per (edge_id, seq).
    pub verdicts: BTreeMap<(String, u64), u64>,
    /// Deliveries per (edge_id, seq), as counted by the cloud.
    pub deliveries: BTreeMap<(String, u64), u64>,
    /// Stored label per (edge_id, seq).
    pub labels: BTreeMap<(String, u64), String>,
}

/// Reads verdicts, deliveries and labels through any sqlx pool (the same SQL runs on both backends).
macro_rules! read_stored {
    ($pool:expr) => {{
        let pool = $pool;
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT edge_id, seq, COUNT(*) FROM verdicts GROUP BY edge_id, seq")
                .fetch_all(pool)
                .await
                .expect("verdicts");
        let verdicts = rows
            .into_iter()
            .map(|(e, s, n)| ((e, s as u64), n as u64))
            .collect();
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT edge_id, seq, deliveries FROM frames")
                .fetch_all(pool)
                .await
                .expect("frames");
        let deliveries = rows
            .into_iter()
            .map(|(e, s, n)| ((e, s as u64), n as u64))
            .collect();
        let rows: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT edge_id, seq, label FROM verdicts")
                .fetch_all(pool)
                .await
                .expect("labels");
        let labels = rows
            .into_iter()
            .map(|(e, s, l)| ((e, s as u64), l))
            .collect();
        Stored {
            verdicts,
            deliveries,
            labels,
        }
    }};
}

impl Stored {
    /// Reads the cloud's SQLite store.
    pub async fn read(db: &Path) -> Self {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .expect("open cloud db");
        let s = read_stored!(&pool);
        pool.close().await;
        s
    }

    /// Reads a cloud store on PostgreSQL.
    pub async fn read_postgres(url: &str) -> Self {
        let pool = sqlx::PgPool::connect(url).await.expect("open cloud db");
        let s = read_stored!(&pool);
        pool.close().await;
        s
    }

    /// Checks that every cloud decision, reconciliation and audit in the log acted on the verdict stored for
    /// that frame (the edge never acts on a verdict the cloud did not keep).
    pub fn check_labels(&self, edge_id: &str, log: &Decisions) {
        let acted = log
            .decisions()
            .filter(|d| d["source"] == "cloud")
            .chain(log.of("reconciliation"))
            .chain(log.of("audit"));
        for e in acted {
            let seq = e["seq"].as_u64().expect("seq");
            let stored = self.labels.get(&(edge_id.to_string(), seq));
            assert_eq!(
                stored.map(String::as_str),
                e["cloud_label"].as_str(),
                "edge acted on a label the cloud did not store: {e}"
            );
        }
    }

    /// Total deliveries beyond the first, over all frames.
    pub fn duplicate_deliveries(&self) -> u64 {
        self.deliveries.values().map(|n| n.saturating_sub(1)).sum()
    }
}

/// The end-to-end oracle for one edge: every frame taken got exactly one line decision; every provisional
/// decision was reconciled by its late verdict; every accepted frame has exactly one stored verdict; and a
/// decision taken on a cloud verdict follows that verdict. The trained models are not exact, so a good frame
/// may be rejected and a defect passed: those are counted and printed, not asserted. Returns what it saw.
pub async fn check_pipeline(
    dir: &Path,
    edge_id: &str,
    stats: &tierline_edge::EdgeStats,
    total: u64,
) -> (Decisions, Stored) {
    let stored = Stored::read(&dir.join("cloud.db")).await;
    check_pipeline_against(dir, edge_id, stats, total, stored)
}

/// [`check_pipeline`] against what the cloud stored wherever it stored it.
pub fn check_pipeline_against(
    dir: &Path,
    edge_id: &str,
    stats: &tierline_edge::EdgeStats,
    total: u64,
    stored: Stored,
) -> (Decisions, Stored) {
    use tierline_edge::stats::get;
    let log = Decisions::read(&dir.join("decisions.jsonl"));
    log.assert_one_decision_each(total - get(&stats.frames_dropped));
    let reconciled: BTreeSet<u64> = log
        .of("reconciliation")
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    for d in log.decisions().filter(|d| d["provisional"] == true) {
        let seq = d["seq"].as_u64().unwrap_or_default();
        assert!(
            reconciled.contains(&seq),
            "unreconciled provisional decision {d}"
        );
    }
    let forwarded = get(&stats.frames_suspect) + get(&stats.frames_audit);
    if stored.verdicts.len() as u64 != forwarded {
        // Name the frames: what the decision log says was forwarded against what the store holds.
        let mut logged: std::collections::BTreeSet<u64> = log.suspect_seqs().into_iter().collect();
        logged.extend(log.of("audit").filter_map(|a| a["seq"].as_u64()));
        let in_store: std::collections::BTreeSet<u64> = stored
            .verdicts
            .keys()
            .filter(|(e, _)| e == edge_id)
            .map(|(_, s)| *s)
            .collect();
        panic!(
            "one stored verdict per accepted frame: {} stored, {forwarded} forwarded ({} suspects, {} audit \
             samples; {} refused by the broker, {} evicted); in the log but not stored: {:?}; stored but not \
             in the log as suspect or audit: {:?}",
            stored.verdicts.len(),
            get(&stats.frames_suspect),
            get(&stats.frames_audit),
            get(&stats.frames_refused),
            get(&stats.evictions),
            logged.difference(&in_store).collect::<Vec<_>>(),
            in_store.difference(&logged).collect::<Vec<_>>(),
        );
    }
    stored.check_labels(edge_id, &log);
    for seq in log.suspect_seqs() {
        assert!(
            stored.verdicts.contains_key(&(edge_id.to_string(), seq)),
            "suspect {seq} has no stored verdict"
        );
    }
    let (mut good_rejected, mut defects_passed) = (0, 0);
    for d in log.decisions() {
        match d["truth"].as_str() {
            Some("good") if d["action"] != "pass" => good_rejected += 1,
            Some(t) if t != "good" && d["action"] == "pass" => defects_passed += 1,
            _ => {}
        }
        if d["source"] == "cloud" && d["action"] == "pass" {
            assert_eq!(
                d["cloud_label"], "good",
                "pass against a defect verdict: {d}"
            );
        }
    }
    eprintln!(
        "oracle: against ground truth, {good_rejected} good frames not passed, {defects_passed} defects passed"
    );
    assert!(
        get(&stats.frames_suspect) > 0,
        "the run must exercise suspects"
    );
    eprintln!(
        "oracle: {total} frames, {} suspects, {} audits, {} stored verdicts, {} duplicate deliveries, {} local fallbacks, {} reconciliations ({} disagreements)",
        get(&stats.frames_suspect),
        get(&stats.frames_audit),
        stored.verdicts.len(),
        stored.duplicate_deliveries(),
        get(&stats.decisions_fallback),
        get(&stats.reconciliations),
        get(&stats.disagreements),
    );
    (log, stored)
}
