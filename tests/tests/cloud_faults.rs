//! Faults of the cloud tier under load, on real parts: Mosquitto, `tierline-cloud` worker processes and a
//! PostgreSQL server owned by the test ([`PgServer`]: `initdb`/`pg_ctl` on a free port).
//!
//! - **Worker kill -9 mid-batch.** Two workers share the store behind a shared subscription; an edge with
//!   synthetic cameras sends many suspects. The server's commits take 100 ms to become durable (a slow
//!   disk), so a worker has frames mid-commit. While frames flow, one worker is killed with SIGKILL at a
//!   moment when it holds frames (its `/metrics`) and one of its verdict transactions is committing (its
//!   session in `pg_stat_activity`), and restarted, several times. Frames committed by a killed worker that never sent their verdict come back
//!   by the edge's resend and must be answered from the store.
//! - **PostgreSQL restarted mid-run.** While frames flow, the server is restarted (`pg_ctl restart -m
//!   fast`), then its postmaster is killed with SIGKILL and started again (crash recovery). The workers do
//!   not exit on store failures (a failed frame is counted and resent by the edge), so a worker that exits
//!   is a failure; it is restarted as systemd would (`Restart=always`) so that the oracle still runs, and
//!   counted.
//!
//! The oracle, for both: every frame taken got exactly one line decision; the set of frames the edge
//! accepted (suspects and audits, from its decision log) equals the set of frames with a stored verdict,
//! with exactly one verdict row each; every decision the edge took on a cloud verdict carries the stored
//! label; nothing is left in the edge outbox. The kill test also asserts that the re-answer-from-store path
//! ran (duplicate deliveries > 0), and both assert that their faults landed while the cameras produced.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tierline_edge::EdgeStats;
use tierline_edge::stats::get;
use tierline_tests::oracle::{self, Decisions, Stored};
use tierline_tests::pgserver::PgServer;
use tierline_tests::process::{self, Rng};
use tierline_tests::{Mosquitto, http, pipeline};

const EDGE: &str = "edge-t";
const STORED: &str = "tierline_cloud_verdicts_stored_total";
const DUPLICATES: &str = "tierline_cloud_duplicates_total";
const IN_FLIGHT: &str = "tierline_cloud_in_flight_frames";

/// A server whose commits wait 100 ms before their WAL flush (`commit_delay` needs `fsync`; with
/// `commit_siblings = 0` every commit waits), as on a slow network disk. A client that dies meanwhile leaves
/// a committed transaction it never heard about.
const SLOW_COMMITS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("commit_delay", "100000"),
    ("commit_siblings", "0"),
];

/// One SIGKILL of a worker.
#[derive(Debug)]
struct Kill {
    worker: String,
    /// Wall clock of the kill.
    at_us: i64,
    /// Frames captured by then.
    frame: u64,
    /// Its stored-verdict count at the last scrape before the kill.
    stored: u64,
    /// Frames it held at that scrape.
    in_flight: u64,
    /// Its sessions committing then.
    committing: i64,
}

/// A `tierline-cloud` process with a fixed admin port, so its `/metrics` can be read across restarts.
struct Worker {
    id: String,
    config: PathBuf,
    log: PathBuf,
    admin: SocketAddr,
    child: Option<Child>,
    starts: usize,
    /// Exits nobody asked for (seen by [`Worker::supervise`]).
    unexpected_exits: Vec<String>,
}

impl Worker {
    fn start(dir: &Path, id: &str, broker: u16, db_url: &str) -> Self {
        let port = tierline_demo::broker::free_port().unwrap();
        // Its sessions carry its id, so the test can see what it does in the database.
        let url = format!("{db_url}?application_name={id}");
        let toml = process::cloud_worker_toml(broker, id, &url, "");
        let any = "listen = \"127.0.0.1:0\"";
        assert_eq!(
            toml.matches(any).count(),
            1,
            "one listener in the worker config: {toml}"
        );
        let toml = toml.replace(any, &format!("listen = \"127.0.0.1:{port}\""));
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(&config, toml).unwrap();
        let mut w = Self {
            id: id.into(),
            config,
            log: dir.join(format!("{id}.log")),
            admin: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            starts: 0,
            unexpected_exits: Vec::new(),
        };
        w.restart();
        w
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.id);
        self.child = Some(process::spawn_cloud(&self.config, &self.log));
        self.starts += 1;
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::kill9(&mut c);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Restarts the worker if it exited by itself, as systemd's `Restart=always` would; remembers the exit.
    fn supervise(&mut self) {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status,
            _ => return,
        };
        self.child = None;
        eprintln!(
            "{}: exited by itself ({exited}); restarting it as systemd would",
            self.id
        );
        self.unexpected_exits.push(exited.to_string());
        self.restart();
    }

    /// Waits until the current process has subscribed (one "Subscribed" line per start, at least).
    async fn wait_subscribed(&self, timeout: Duration) {
        let started = Instant::now();
        while self.log().matches("Subscribed; receiving frames.").count() < self.starts {
            assert!(
                started.elapsed() < timeout,
                "{} not subscribed after {timeout:?}; log:\n{}",
                self.id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The worker's metrics now; empty while it does not answer.
    async fn metrics(&self) -> Metrics {
        match tokio::time::timeout(Duration::from_secs(2), http::get(self.admin, "/metrics")).await
        {
            Ok(Ok((200, body))) => Metrics::parse(&body),
            _ => Metrics::default(),
        }
    }

    /// Whether `/readyz` answers 200 (broker link and database checks pass).
    async fn ready(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), http::get(self.admin, "/readyz")).await,
            Ok(Ok((200, _)))
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::terminate(&mut c);
        }
    }
}

/// Samples of one `/metrics` answer, by name.
#[derive(Debug, Default, Clone)]
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or_default() as u64
    }

    fn answered(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Cloud counters summed over workers' process lifetimes (counters restart at 0 with each process).
#[derive(Debug, Default)]
struct CloudCounts {
    received: u64,
    stored: u64,
    duplicates: u64,
    failures: u64,
}

impl CloudCounts {
    fn add(&mut self, m: &Metrics) {
        self.received += m.get("tierline_cloud_frames_received_total");
        self.stored += m.get(STORED);
        self.duplicates += m.get(DUPLICATES);
        self.failures += m.get("tierline_cloud_failures_total");
    }
}

fn edge_describe(e: &EdgeStats) -> String {
    format!(
        "captured {} dropped {} decisions {} suspects {} audits {} verdicts {} fallbacks {} backlog {}",
        get(&e.frames_captured),
        get(&e.frames_dropped),
        get(&e.decisions),
        get(&e.frames_suspect),
        get(&e.frames_audit),
        get(&e.verdicts),
        get(&e.decisions_fallback),
        get(&e.backlog_frames),
    )
}

/// Waits until every frame is decided and every forwarded frame answered, restarting workers that exit.
async fn drain(e: &Arc<EdgeStats>, total: u64, workers: &mut [Worker], timeout: Duration) {
    let started = Instant::now();
    loop {
        let forwarded = get(&e.frames_suspect) + get(&e.frames_audit);
        if get(&e.frames_captured) == total
            && get(&e.decisions) + get(&e.frames_dropped) == total
            && get(&e.verdicts) >= forwarded
        {
            return;
        }
        for w in workers.iter_mut() {
            w.supervise();
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for every frame decided and answered; edge: {}",
            edge_describe(e)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The oracle shared by both tests (see the module comment). Returns the stored view.
async fn check(
    dir: &Path,
    edge_stats: &EdgeStats,
    total: u64,
    outbox: &tierline_edge::config::OutboxConfig,
    db_url: &str,
) -> (Decisions, Stored) {
    let stored = Stored::read_postgres(db_url).await;
    let (log, stored) = oracle::check_pipeline_against(dir, EDGE, edge_stats, total, stored);
    let multiple: Vec<_> = stored.verdicts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        multiple.is_empty(),
        "frames with more than one verdict row: {multiple:?}"
    );
    // Sets, not counts: the frames the edge accepted are exactly the frames with a stored verdict.
    let mut accepted: BTreeSet<u64> = log.suspect_seqs();
    accepted.extend(log.of("audit").filter_map(|a| a["seq"].as_u64()));
    let with_verdict: BTreeSet<u64> = stored
        .verdicts
        .keys()
        .map(|(edge, seq)| {
            assert_eq!(edge, EDGE, "a verdict for an edge that never ran");
            *seq
        })
        .collect();
    let lost: Vec<_> = accepted.difference(&with_verdict).collect();
    let unknown: Vec<_> = with_verdict.difference(&accepted).collect();
    assert!(
        lost.is_empty() && unknown.is_empty(),
        "accepted frames without a stored verdict: {lost:?}; stored verdicts for frames the edge did not \
         record as accepted: {unknown:?}"
    );
    // Every suspect got exactly one line decision (check_pipeline_against: no frame decided twice).
    let per_seq = log.per_seq();
    for seq in log.suspect_seqs() {
        assert_eq!(
            per_seq.get(&seq),
            Some(&1),
            "suspect {seq}: one line decision"
        );
    }
    assert_eq!(log.torn_lines, 0, "torn decision lines");
    let backlog = tierline_edge::outbox::Outbox::open(outbox)
        .await
        .unwrap()
        .backlog()
        .await
        .unwrap();
    assert_eq!(backlog.frames, 0, "frames left in the edge outbox");
    (log, stored)
}

/// Per-worker verdict rows in the store.
async fn verdicts_per_worker(db_url: &str) -> BTreeMap<String, i64> {
    let pool = sqlx::PgPool::connect(db_url).await.unwrap();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker_id, COUNT(*) FROM verdicts GROUP BY worker_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().collect()
}

/// Sessions of `worker` executing `COMMIT` now (with [`SLOW_COMMITS`] a write transaction spends 100 ms
/// there; PostgreSQL 15 reports no wait event for the delay); 0 when the query fails.
async fn committing(admin: &sqlx::PgPool, worker: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' \
         AND upper(btrim(query)) = 'COMMIT'",
    )
    .bind(worker)
    .fetch_one(admin)
    .await
    .unwrap_or(0)
}

/// Frames delivered more than once: (seq, worker that judged it, verdict time, deliveries).
async fn redelivered(db_url: &str) -> Vec<(i64, String, i64, i64)> {
    let pool = sqlx::PgPool::connect(db_url).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT v.seq, v.worker_id, v.verdict_time_us, f.deliveries \
         FROM verdicts v JOIN frames f USING (edge_id, seq) WHERE f.deliveries > 1 ORDER BY v.seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// Runs a blocking [`PgServer`] operation off the runtime's worker threads (the edge runs on them).
async fn on_server<T: Send + 'static>(
    pg: PgServer,
    f: impl FnOnce(&mut PgServer) -> T + Send + 'static,
) -> (PgServer, T) {
    tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        let t = f(&mut pg);
        (pg, t)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_no_verdict_and_its_frames_are_answered_from_the_store() {
    let test_started = Instant::now();
    let mut rng = Rng::from_env("cloud kill -9");
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    // Commits take 100 ms to become durable (a slow disk): a worker killed then has frames whose verdict
    // is committed but was never sent, which the edge's resend must get from the store.
    let pg = tokio::task::spawn_blocking(|| PgServer::start_with(SLOW_COMMITS))
        .await
        .unwrap();
    let db_url = pg.url();
    let mut workers: Vec<Worker> = ["w1", "w2"]
        .iter()
        .map(|id| Worker::start(dir.path(), id, broker.port(), &db_url))
        .collect();
    for w in &workers {
        w.wait_subscribed(Duration::from_secs(60)).await;
    }
    let admin = sqlx::PgPool::connect(&db_url).await.unwrap();
    let ready_after = test_started.elapsed();
    // 2 cameras × 450 frames at 40 fps (11 s of traffic), 60 % defects: many suspects.
    let (cameras, frames) = (2u32, 450u64);
    let edge_cfg = pipeline::edge_config(
        broker.port(),
        dir.path(),
        &pipeline::synthetic_cameras(cameras, frames, 40.0, 0.6),
        "deadline = \"5s\"\naudit_rate = 0.1",
    );
    let outbox_cfg = edge_cfg.outbox.clone();
    let edge = pipeline::start_edge(edge_cfg);
    let total = u64::from(cameras) * frames;
    let e = edge.stats.clone();

    // Kill a worker right after its stored-verdict count moved while it held frames, restart it; repeat
    // while the cameras produce.
    let mut cloud = CloudCounts::default();
    let mut kills: Vec<Kill> = Vec::new();
    tokio::time::sleep(Duration::from_millis(rng.range(500, 1500))).await;
    while kills.len() < 6 && get(&e.frames_captured) < total * 9 / 10 {
        for w in workers.iter_mut() {
            w.supervise();
        }
        let victim = rng.range(0, 2) as usize;
        let w = &mut workers[victim];
        // At a moment when it holds frames and one of its verdict transactions is committing (its session
        // executes COMMIT): the kill then leaves a committed verdict that was never sent.
        let watch = Instant::now();
        let caught = loop {
            let (now, committing) = tokio::join!(w.metrics(), committing(&admin, &w.id));
            if committing > 0 && now.get(IN_FLIGHT) > 0 {
                break Some((now, committing));
            }
            if watch.elapsed() > Duration::from_secs(8) || get(&e.frames_captured) >= total {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let Some((last, committing)) = caught else {
            eprintln!(
                "cloud kill -9: {} never had frames in flight while committing; trying again",
                w.id
            );
            continue;
        };
        w.kill9();
        let kill = Kill {
            worker: w.id.clone(),
            at_us: tierline_shared::time::now_us(),
            frame: get(&e.frames_captured),
            stored: last.get(STORED),
            in_flight: last.get(IN_FLIGHT),
            committing,
        };
        assert!(
            kill.frame < total,
            "the kill landed after the cameras stopped"
        );
        cloud.add(&last);
        eprintln!(
            "cloud kill -9: killed {} at {:?} (frame {}/{total}) after {} verdicts stored, with {} frames in flight and {} transactions committing",
            kill.worker,
            test_started.elapsed(),
            kill.frame,
            kill.stored,
            kill.in_flight,
            kill.committing,
        );
        kills.push(kill);
        tokio::time::sleep(Duration::from_millis(rng.range(100, 800))).await;
        w.restart();
        w.wait_subscribed(Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(rng.range(500, 2000))).await;
    }
    assert!(
        kills.len() >= 3,
        "only {} kills with frames in flight landed while the cameras produced: {kills:?}",
        kills.len()
    );

    drain(&e, total, &mut workers, Duration::from_secs(60)).await;
    for w in &workers {
        cloud.add(&w.metrics().await);
    }
    admin.close().await;
    let edge_stats = edge.stats.clone();
    edge.stop().await.expect("edge stops cleanly");
    let (_, stored) = check(dir.path(), &edge_stats, total, &outbox_cfg, &db_url).await;
    let per_worker = verdicts_per_worker(&db_url).await;
    // Redelivered frames whose verdict a worker stored shortly before it was killed: the kill left them
    // without an answer and the edge's resend was answered from the store.
    let redelivered = redelivered(&db_url).await;
    // Each to the first kill of the worker that judged it, at most 3 s after its verdict.
    let mut per_kill = vec![0usize; kills.len()];
    for (_, worker, time, _) in &redelivered {
        if let Some(i) = kills
            .iter()
            .position(|k| &k.worker == worker && (*time..=time + 3_000_000).contains(&k.at_us))
        {
            per_kill[i] += 1;
        }
    }
    let after_kill: usize = per_kill.iter().sum();
    let unexpected: Vec<_> = workers
        .iter()
        .flat_map(|w| w.unexpected_exits.iter().map(move |x| (&w.id, x)))
        .collect();
    eprintln!(
        "cloud kill -9: {total} frames, {} forwarded ({} suspects, {} audits), {} stored verdicts {per_worker:?}, \
         {} duplicate deliveries (store) over {} frames, {after_kill} of them judged by a worker in the 3 s before it was killed (per kill {per_kill:?}); \
         {} kills {kills:?}, {} local fallbacks, {} reconciliations; \
         cloud metrics (summed over processes, last scrape before each kill): received {} stored {} duplicates {} failures {}; \
         workers ready after {ready_after:?}, test took {:?}",
        get(&edge_stats.frames_suspect) + get(&edge_stats.frames_audit),
        get(&edge_stats.frames_suspect),
        get(&edge_stats.frames_audit),
        stored.verdicts.len(),
        stored.duplicate_deliveries(),
        redelivered.len(),
        kills.len(),
        get(&edge_stats.decisions_fallback),
        get(&edge_stats.reconciliations),
        cloud.received,
        cloud.stored,
        cloud.duplicates,
        cloud.failures,
        test_started.elapsed(),
    );
    assert!(
        unexpected.is_empty(),
        "workers exited by themselves: {unexpected:?}"
    );
    assert!(
        stored.duplicate_deliveries() > 0,
        "the run never answered a redelivered frame from the store"
    );
    assert!(
        after_kill > 0,
        "no redelivered frame had been judged by a worker just before its kill: the kills never caught a \
         committed verdict in flight"
    );
    drop(workers);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_crashed_mid_run_loses_no_verdict_and_no_worker() {
    let test_started = Instant::now();
    let mut rng = Rng::from_env("postgres restart");
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let db_url = pg.url();
    let mut workers: Vec<Worker> = ["p1", "p2"]
        .iter()
        .map(|id| Worker::start(dir.path(), id, broker.port(), &db_url))
        .collect();
    for w in &workers {
        w.wait_subscribed(Duration::from_secs(60)).await;
    }
    let ready_after = test_started.elapsed();
    let (cameras, frames) = (2u32, 300u64);
    let edge_cfg = pipeline::edge_config(
        broker.port(),
        dir.path(),
        &pipeline::synthetic_cameras(cameras, frames, 25.0, 0.5),
        "deadline = \"5s\"\naudit_rate = 0.1",
    );
    let outbox_cfg = edge_cfg.outbox.clone();
    let edge = pipeline::start_edge(edge_cfg);
    let total = u64::from(cameras) * frames;
    let e = edge.stats.clone();

    // Sleeps while supervising the workers.
    async fn pause(workers: &mut [Worker], d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            for w in workers.iter_mut() {
                w.supervise();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Fault 1: pg_ctl restart -m fast (clients disconnected, in-flight transactions aborted).
    pause(&mut workers, Duration::from_millis(rng.range(1500, 3000))).await;
    let at = get(&e.frames_captured);
    let t = Instant::now();
    let (pg, ()) = on_server(pg, PgServer::restart).await;
    let restart_took = t.elapsed();
    assert!(at < total, "the restart landed after the cameras stopped");
    eprintln!(
        "postgres restart: pg_ctl restart at frame {at}/{total} ({:?}), took {restart_took:?}",
        test_started.elapsed()
    );

    // Fault 2: SIGKILL the postmaster, leave the server down a while, start it (crash recovery).
    pause(&mut workers, Duration::from_millis(rng.range(1500, 3000))).await;
    let at2 = get(&e.frames_captured);
    let t = Instant::now();
    let (pg, orphans_killed) = on_server(pg, PgServer::kill9).await;
    assert!(at2 < total, "the kill landed after the cameras stopped");
    let down = Duration::from_millis(rng.range(1000, 3000));
    pause(&mut workers, down).await;
    let (pg, ()) = on_server(pg, PgServer::start_again).await;
    let crash_took = t.elapsed();
    assert!(
        get(&e.frames_captured) < total,
        "the server came back only after the cameras stopped; the run did not flow through the crash"
    );
    eprintln!(
        "postgres restart: postmaster SIGKILLed at frame {at2}/{total} ({:?}; {orphans_killed} orphaned backends needed a SIGKILL), \
         down {down:?}, accepting again after {crash_took:?}",
        test_started.elapsed() - crash_took
    );
    assert!(
        pg.log().contains("database system was interrupted")
            || pg.log().contains("automatic recovery in progress")
            || pg.log().contains("not properly shut down"),
        "the server did not go through crash recovery; log:\n{}",
        pg.log()
    );

    drain(&e, total, &mut workers, Duration::from_secs(60)).await;
    // Both workers are alive and ready again: connected to the broker and the database answers.
    let started = Instant::now();
    for w in &mut workers {
        while !w.ready().await {
            w.supervise();
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{} not ready again after the database came back; /readyz: {:?}",
                w.id,
                http::get(w.admin, "/readyz").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut cloud = CloudCounts::default();
    for w in &workers {
        cloud.add(&w.metrics().await);
    }
    let answered = all_answer(&workers).await;
    let edge_stats = edge.stats.clone();
    edge.stop().await.expect("edge stops cleanly");
    let (_, stored) = check(dir.path(), &edge_stats, total, &outbox_cfg, &db_url).await;
    let per_worker = verdicts_per_worker(&db_url).await;
    let restarts: usize = workers.iter().map(|w| w.unexpected_exits.len()).sum();
    eprintln!(
        "postgres restart: {total} frames, {} forwarded ({} suspects, {} audits), {} stored verdicts {per_worker:?}, \
         {} duplicate deliveries (store), {} local fallbacks, {} reconciliations, {restarts} worker restarts; \
         cloud metrics: received {} stored {} duplicates {} store/inference failures {}; \
         workers ready after {ready_after:?}, test took {:?}",
        get(&edge_stats.frames_suspect) + get(&edge_stats.frames_audit),
        get(&edge_stats.frames_suspect),
        get(&edge_stats.frames_audit),
        stored.verdicts.len(),
        stored.duplicate_deliveries(),
        get(&edge_stats.decisions_fallback),
        get(&edge_stats.reconciliations),
        cloud.received,
        cloud.stored,
        cloud.duplicates,
        cloud.failures,
        test_started.elapsed(),
    );
    assert!(answered, "a worker's /metrics did not answer");
    let exits: Vec<_> = workers
        .iter()
        .flat_map(|w| w.unexpected_exits.iter().map(move |x| (&w.id, x)))
        .collect();
    assert!(
        exits.is_empty(),
        "workers exited while PostgreSQL restarted (restarted by the test as systemd would): {exits:?}"
    );
    drop(workers);
    drop(pg);
}

/// Whether every worker's `/metrics` answers.
async fn all_answer(workers: &[Worker]) -> bool {
    for w in workers {
        if !w.metrics().await.answered() {
            return false;
        }
    }
    true
}
