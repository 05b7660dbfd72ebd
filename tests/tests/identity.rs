//! Frame identity survives loss of the edge outbox. An edge runs, its outbox is deleted (a replaced disk, a
//! restore, corruption recovery), and it runs again with another camera seed: its sequence numbers start
//! over, but every cloud decision of the second run must come from a verdict on that run's own image.
//!
//! Oracle, independent of the code under test: the test reads the second outbox's incarnation from its file,
//! hashes the images the cloud stored itself, and matches each cloud-sourced line of the second decision log
//! to the verdict row of that incarnation and seq: same label, a verdict made during the second run, on an
//! image whose SHA-256 (computed here) is the one the verdict names and is not an image of the first run.

#![allow(clippy::unwrap_used)]

use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tierline_edge::EdgeStats;
use tierline_edge::stats::get;
use tierline_tests::Mosquitto;
use tierline_tests::oracle::Decisions;
use tierline_tests::pipeline;

const FRAMES: u64 = 60;

fn camera(seed: u64) -> String {
    format!(
        "[[camera]]\nid = \"cam-0\"\nkind = \"synthetic\"\nseed = {seed}\nfps = 30.0\ndefect_rate = 0.5\nframes = {FRAMES}\n"
    )
}

/// Runs the edge until every frame is decided and every forwarded frame has its verdict at the edge.
async fn run_edge(
    port: u16,
    dir: &Path,
    seed: u64,
    cloud: &tierline_cloud::CloudStats,
) -> Arc<EdgeStats> {
    let cfg = pipeline::edge_config(
        port,
        dir,
        &camera(seed),
        "deadline = \"10s\"\naudit_rate = 0.1",
    );
    let edge = pipeline::start_edge(cfg);
    let e = edge.stats.clone();
    pipeline::wait_until(
        "every frame decided and every forwarded frame settled",
        Duration::from_secs(120),
        || {
            let forwarded = get(&e.frames_suspect) + get(&e.frames_audit);
            get(&e.frames_captured) == FRAMES
                && get(&e.decisions) + get(&e.frames_dropped) == FRAMES
                && get(&e.backlog_frames) == 0
                && get(&e.verdicts) >= forwarded
        },
        || pipeline::describe(&e, cloud),
    )
    .await;
    edge.stop().await.expect("edge stops cleanly");
    e
}

struct Row {
    incarnation: String,
    label: String,
    verdict_sha: Vec<u8>,
    image_sha: Option<Vec<u8>>,
    verdict_time_us: i64,
}

/// `(incarnation, seq, label, verdict image hash, stored image, image object key, verdict time)`.
type StoredRow = (String, i64, String, Vec<u8>, Option<Vec<u8>>, String, i64);

async fn stored_rows(db: &Path) -> Vec<(u64, Row)> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT f.incarnation, f.seq, v.label, v.image_sha256, f.image, f.image_ref, v.verdict_time_us
         FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(
            |(incarnation, seq, label, verdict_sha, image, image_ref, verdict_time_us)| {
                // An image kept as an object is a file of the store's default directory beside it.
                let image = image.or_else(|| {
                    (!image_ref.is_empty())
                        .then(|| db.with_file_name("tierline-images").join(&image_ref))
                        .and_then(|path| std::fs::read(path).ok())
                });
                (
                    seq as u64,
                    Row {
                        incarnation,
                        label,
                        verdict_sha,
                        image_sha: image.map(|i| sha2::Sha256::digest(&i).to_vec()),
                        verdict_time_us,
                    },
                )
            },
        )
        .collect()
}

/// The incarnation as the outbox file holds it.
async fn incarnation_of(outbox: &Path) -> String {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", outbox.display()))
        .await
        .unwrap();
    let v: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'incarnation'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    format!("{:016x}", v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_outbox_never_gets_old_frames_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let cloud = pipeline::start_cloud(pipeline::cloud_config(broker.port(), dir.path(), "w1"));
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();

    let first = run_edge(broker.port(), &edge_dir, 11, &cloud.stats).await;
    let first_incarnation = incarnation_of(&edge_dir.join("outbox.db")).await;
    for f in ["outbox.db", "outbox.db-wal", "outbox.db-shm"] {
        let _ = std::fs::remove_file(edge_dir.join(f));
    }
    std::fs::rename(
        edge_dir.join("decisions.jsonl"),
        dir.path().join("first.jsonl"),
    )
    .unwrap();
    let second_start = tierline_shared::time::now_us();
    let second = run_edge(broker.port(), &edge_dir, 4242, &cloud.stats).await;
    let second_incarnation = incarnation_of(&edge_dir.join("outbox.db")).await;
    let cloud_stats = cloud.stats.clone();
    cloud.stop().await.unwrap();
    assert_ne!(first_incarnation, second_incarnation);

    let rows = stored_rows(&dir.path().join("cloud.db")).await;
    let first_images: BTreeSet<Vec<u8>> = rows
        .iter()
        .filter(|(_, r)| r.verdict_time_us < second_start)
        .filter_map(|(_, r)| r.image_sha.clone())
        .collect();
    let second_rows: Vec<&(u64, Row)> = rows
        .iter()
        .filter(|(_, r)| r.verdict_time_us >= second_start)
        .collect();
    let first_log = Decisions::read(&dir.path().join("first.jsonl"));
    let first_seqs: BTreeSet<u64> = first_log.suspect_seqs();
    let log = Decisions::read(&edge_dir.join("decisions.jsonl"));
    let acted: Vec<_> = log
        .decisions()
        .filter(|d| d["source"] == "cloud")
        .chain(log.of("reconciliation"))
        .chain(log.of("audit"))
        .collect();
    assert!(!acted.is_empty(), "the second run acted on cloud verdicts");
    let reused = acted
        .iter()
        .filter(|l| first_seqs.contains(&l["seq"].as_u64().unwrap()))
        .count();
    assert!(
        reused > 0,
        "the second run must act on frames numbered with seqs the first run used (first {first_seqs:?})"
    );
    let by_seq: BTreeMap<u64, Vec<&Row>> = rows.iter().fold(BTreeMap::new(), |mut m, (s, r)| {
        m.entry(*s).or_insert_with(Vec::new).push(r);
        m
    });
    // First the line-by-line oracle, then the counts.
    for line in &acted {
        let seq = line["seq"].as_u64().unwrap();
        let label = line["cloud_label"].as_str();
        // The verdict this line acted on: one judged during the second run, on an image of the second run.
        let own = by_seq.get(&seq).into_iter().flatten().find(|r| {
            r.verdict_time_us >= second_start
                && Some(r.label.as_str()) == label
                && r.image_sha
                    .as_ref()
                    .is_some_and(|i| !first_images.contains(i))
        });
        assert!(
            own.is_some(),
            "acted on a verdict that was not made on this run's own image: {line}; stored for seq {seq}: {:?}",
            by_seq
                .get(&seq)
                .into_iter()
                .flatten()
                .map(|r| (&r.incarnation, &r.label, r.verdict_time_us >= second_start))
                .collect::<Vec<_>>()
        );
    }
    for (seq, r) in &second_rows {
        assert_eq!(
            r.image_sha.as_ref(),
            Some(&r.verdict_sha),
            "the verdict on seq {seq} names the image it judged"
        );
    }
    assert!(
        second_rows
            .iter()
            .all(|(_, r)| r.incarnation == second_incarnation),
        "the second run's frames are stored under its own outbox incarnation"
    );
    assert_eq!(
        second_rows.len() as u64,
        get(&second.frames_suspect) + get(&second.frames_audit),
        "every frame forwarded in the second run has its own verdict"
    );

    println!(
        "first run: {} forwarded; second run: {} forwarded, {} cloud-sourced lines on reused seqs of {}; cloud duplicates {}, verdicts mismatched at the edge {}",
        get(&first.frames_suspect) + get(&first.frames_audit),
        second_rows.len(),
        reused,
        acted.len(),
        get(&cloud_stats.duplicates),
        get(&second.verdicts_mismatched),
    );
}
