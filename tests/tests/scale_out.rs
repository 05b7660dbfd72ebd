//! Scale-out on real parts: several `tierline-cloud` processes share one Mosquitto (shared subscription) and
//! one PostgreSQL database.
//!
//! - Three workers under load from an edge; one is killed with SIGKILL at a seeded random moment and
//!   restarted. Oracle: every forwarded frame ends with exactly one verdict row, every cloud decision the
//!   edge made matches the stored label, and nothing is left in the edge outbox.
//! - Leader lease: two workers are candidates for the retention job; the leader is killed with SIGKILL; the
//!   other takes over with a larger fencing token; a write with the old leader's token is refused.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use tierline_cloud::store::{Lease, RetentionPolicy, Store, StoreError};
use tierline_edge::stats::get;
use tierline_tests::pg::TestDb;
use tierline_tests::process::{self, Rng};
use tierline_tests::{Mosquitto, pipeline};

struct Worker {
    id: String,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Worker {
    fn start(dir: &Path, id: &str, toml: &str) -> Self {
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{id}.log"));
        let mut w = Self {
            id: id.into(),
            config,
            log,
            child: None,
        };
        w.restart();
        w
    }

    fn restart(&mut self) {
        self.child = Some(process::spawn_cloud(&self.config, &self.log));
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::kill9(&mut c);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Times the worker has logged `line`.
    fn logged(&self, line: &str) -> usize {
        self.log().matches(line).count()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::terminate(&mut c);
        }
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_postgres_survive_a_kill_9_with_one_verdict_per_frame() {
    let mut rng = Rng::from_env("scale-out");
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let db = TestDb::create("scale_out").await;
    let mut workers: Vec<Worker> = (1..=3)
        .map(|i| {
            let id = format!("w{i}");
            let toml = process::cloud_worker_toml(broker.port(), &id, &db.url, "");
            Worker::start(dir.path(), &id, &toml)
        })
        .collect();
    for w in &workers {
        wait_for(
            &format!("{} subscribed", w.id),
            Duration::from_secs(60),
            || w.logged("Subscribed; receiving frames.") >= 1,
        )
        .await;
    }
    // The edge: 2 cameras × 150 frames at 30 fps, 30 % defects; deadline long enough for a failover.
    let (cameras, frames) = (2u32, 150u64);
    let edge_cfg = pipeline::edge_config(
        broker.port(),
        dir.path(),
        &pipeline::synthetic_cameras(cameras, frames, 30.0, 0.3),
        "deadline = \"5s\"\naudit_rate = 0.1",
    );
    let outbox_cfg = edge_cfg.outbox.clone();
    let edge = pipeline::start_edge(edge_cfg);
    let total = u64::from(cameras) * frames;
    // Kill one worker while frames flow, then bring it back.
    tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
    let victim = rng.range(0, 3) as usize;
    let killed_at = Instant::now();
    workers[victim].kill9();
    eprintln!("scale-out: killed {} with SIGKILL", workers[victim].id);
    tokio::time::sleep(Duration::from_millis(rng.range(200, 1500))).await;
    workers[victim].restart();
    let restarted_after = killed_at.elapsed();
    let e = edge.stats.clone();
    pipeline::wait_until(
        "every frame decided and every forwarded frame acknowledged",
        Duration::from_secs(180),
        || {
            let forwarded = get(&e.frames_suspect) + get(&e.frames_audit);
            get(&e.frames_captured) == total
                && get(&e.decisions) + get(&e.frames_dropped) == total
                && get(&e.verdicts) >= forwarded
        },
        || {
            format!(
                "captured {} decisions {} suspects {} audits {} verdicts {}",
                get(&e.frames_captured),
                get(&e.decisions),
                get(&e.frames_suspect),
                get(&e.frames_audit),
                get(&e.verdicts)
            )
        },
    )
    .await;
    let edge_stats = edge.stats.clone();
    edge.stop().await.expect("edge stops cleanly");
    let stored = tierline_tests::oracle::Stored::read_postgres(&db.url).await;
    let (_, stored) = tierline_tests::oracle::check_pipeline_against(
        dir.path(),
        "edge-t",
        &edge_stats,
        total,
        stored,
    );
    assert!(
        stored.verdicts.values().all(|&n| n == 1),
        "exactly one verdict row per frame"
    );
    let backlog = tierline_edge::outbox::Outbox::open(&outbox_cfg)
        .await
        .unwrap()
        .backlog()
        .await
        .unwrap();
    assert_eq!(backlog.frames, 0, "every forwarded frame was answered");
    // How the load was shared, and how long frames waited around the kill.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let per_worker: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker_id, COUNT(*) FROM verdicts GROUP BY worker_id ORDER BY worker_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let latency: (i64, i64) = sqlx::query_as(
        "SELECT CAST(MAX(v.verdict_time_us - f.capture_time_us) AS BIGINT),
                CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY v.verdict_time_us - f.capture_time_us) AS BIGINT)
         FROM verdicts v JOIN frames f USING (edge_id, seq)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    let per_worker: BTreeMap<_, _> = per_worker.into_iter().collect();
    eprintln!(
        "scale-out: verdicts per worker {per_worker:?}; victim {} restarted after {restarted_after:?}; capture→verdict p50 {} ms, max {} ms; {} duplicate deliveries",
        workers[victim].id,
        latency.1 / 1000,
        latency.0 / 1000,
        stored.duplicate_deliveries()
    );
    assert!(
        per_worker.len() >= 2,
        "the shared subscription spread frames over workers: {per_worker:?}"
    );
    for w in &mut workers {
        w.kill9();
    }
}

/// The retention lease row; `None` also while the workers have not yet created the schema.
async fn lease_row(pool: &sqlx::PgPool) -> Option<(String, i64)> {
    sqlx::query_as("SELECT holder, token FROM leases WHERE name = 'retention'")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_its_fenced_write_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let db = TestDb::create("lease").await;
    let retention = "[retention]\nmax_age = \"1h\"\ninterval = \"200ms\"\nlease_ttl = \"4s\"\n";
    let mut workers: Vec<Worker> = ["a", "b"]
        .iter()
        .map(|id| {
            let toml = process::cloud_worker_toml(broker.port(), id, &db.url, retention);
            Worker::start(dir.path(), id, &toml)
        })
        .collect();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let started = Instant::now();
    let (leader, old_token) = loop {
        if let Some(row) = lease_row(&pool).await {
            break row;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no worker took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leader_ix = workers.iter().position(|w| w.id == leader).unwrap();
    let other = workers[1 - leader_ix].id.clone();
    // Wait until the leader has actually run a pass with its token, then kill it.
    wait_for(
        "the leader's first retention pass",
        Duration::from_secs(30),
        || workers[leader_ix].logged("Retention leader lease taken.") >= 1,
    )
    .await;
    let killed_at = Instant::now();
    workers[leader_ix].kill9();
    let (holder, new_token) = loop {
        let row = lease_row(&pool).await.unwrap();
        if row.0 != leader {
            break row;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "{other} never took over from {leader}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failover = killed_at.elapsed();
    assert_eq!(holder, other);
    assert!(
        new_token > old_token,
        "a new leader gets a larger token ({new_token} > {old_token})"
    );
    // The old leader, had it only paused, would now write with its old token: refused.
    let store = Store::open(&db.url, true).await.unwrap();
    let stale = Lease {
        name: "retention".into(),
        holder: leader.clone(),
        token: old_token,
        expires_us: i64::MAX,
    };
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    };
    let refused = store
        .prune_images(&stale, &policy, tierline_shared::time::now_us())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Fenced { token, .. } if token == old_token),
        "{refused}"
    );
    // The restarted old leader becomes a candidate again and does not take the lease from a live leader.
    workers[leader_ix].restart();
    wait_for(
        "the old leader to start again",
        Duration::from_secs(60),
        || workers[leader_ix].logged("Cloud worker starting.") >= 2,
    )
    .await;
    // Longer than a TTL passes while the old leader competes: the live leader keeps renewing.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let row = lease_row(&pool).await.unwrap();
        assert_eq!(
            row,
            (other.clone(), new_token),
            "the live leader keeps its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "lease: {leader} (token {old_token}) killed; {other} took over with token {new_token} after {failover:?} (TTL 4s)"
    );
    store.close().await;
    pool.close().await;
    for w in &mut workers {
        w.kill9();
    }
}
