//! The storage contract (see the spec at the top of `cloud/src/store/mod.rs`), run against both backends: an
//! embedded SQLite file and a fresh database on the real PostgreSQL server (`TIERLINE_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Every case is one function over a `Store`; the `contract!`
//! macro runs it once per backend so a failure names the backend.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;
use tierline_cloud::store::{FrameFilter, RetentionPolicy, ReviewRow, Store, StoreError, Stored};
use tierline_shared::action::Action;
use tierline_shared::wire::{self, ClassScore, FrameEnvelope, Heartbeat, Presence, Verdict};
use tierline_tests::pg::TestDb;

async fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let store = Store::open(&url, true).await.unwrap();
    case(store.clone()).await;
    store.close().await;
}

async fn on_postgres<F, Fut>(tag: &str, case: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TestDb::create(tag).await;
    let store = Store::open(&db.url, true).await.unwrap();
    case(store.clone()).await;
    store.close().await;
    drop(db);
}

macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::on_sqlite(super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::on_postgres(stringify!($name), super::$name).await;
            }
        }
    };
}

fn frame(edge: &str, seq: u64, line: &str, capture_us: i64) -> FrameEnvelope {
    FrameEnvelope {
        protocol_version: 1,
        edge_id: edge.into(),
        seq,
        frame_id: wire::frame_id(edge, seq),
        site: "plant".into(),
        line: line.into(),
        camera_id: "cam-0".into(),
        capture_time_us: capture_us,
        reason: 1,
        edge_score: 0.7,
        edge_model_version: "pre-1".into(),
        encoding: 2,
        image: vec![seq as u8; 100],
        incarnation: "00000000000000a1".into(),
        image_sha256: wire::image_sha256(&[seq as u8; 100]),
        ..FrameEnvelope::default()
    }
}

/// `frame` from another outbox incarnation, or with another image.
fn variant(edge: &str, seq: u64, incarnation: &str, image: Vec<u8>) -> FrameEnvelope {
    FrameEnvelope {
        incarnation: incarnation.into(),
        image_sha256: wire::image_sha256(&image),
        image,
        ..frame(edge, seq, "l1", 10)
    }
}

fn verdict(edge: &str, seq: u64, label: &str) -> Verdict {
    Verdict {
        protocol_version: 1,
        edge_id: edge.into(),
        seq,
        frame_id: wire::frame_id(edge, seq),
        cloud_model_version: "full-1".into(),
        label: label.into(),
        defective: label != "good",
        defect_score: if label == "good" { 0.1 } else { 0.9 },
        scores: vec![ClassScore {
            class_name: label.into(),
            probability: 0.9,
        }],
        verdict_time_us: tierline_shared::time::now_us(),
        ..Verdict::default()
    }
}

contract!(storing_is_idempotent_and_counts_deliveries);
async fn storing_is_idempotent_and_counts_deliveries(s: Store) {
    assert!(matches!(
        s.store(&frame("e1", 1, "l1", 10), &verdict("e1", 1, "spot"))
            .await
            .unwrap(),
        Stored::New(_)
    ));
    match s
        .store(&frame("e1", 1, "l1", 10), &verdict("e1", 1, "good"))
        .await
        .unwrap()
    {
        Stored::Existing(v) => {
            assert_eq!(v.label, "spot");
            assert!(v.defective && v.redelivery);
            assert_eq!(v.scores[0].class_name, "spot");
            assert_eq!(v.cloud_model_version, "full-1");
        }
        other => panic!("{other:?}"),
    }
    let mut again = frame("e1", 1, "l1", 10);
    tierline_shared::action::set_local_action(&mut again, Some(Action::Reject));
    assert_eq!(s.lookup(&again).await.unwrap().unwrap().label, "spot");
    assert!(s.lookup(&frame("e1", 2, "l1", 10)).await.unwrap().is_none());
    assert_eq!(s.verdict_count().await.unwrap(), 1);
    let (row, image, _) = s.get_frame("e1", 1).await.unwrap().unwrap();
    assert_eq!(row.deliveries, 3, "store, store again, lookup");
    assert_eq!(row.edge_local_action, "reject");
    assert!(!row.disagreement, "a local reject of a spotted part agrees");
    assert_eq!(image.unwrap(), vec![1u8; 100]);
    let versions = s.model_versions().await.unwrap();
    assert!(
        versions.contains(&("cloud".into(), "full-1".into())),
        "{versions:?}"
    );
    assert!(
        versions.contains(&("edge".into(), "pre-1".into())),
        "{versions:?}"
    );
}

contract!(a_group_is_stored_as_the_frames_would_be_one_by_one);
async fn a_group_is_stored_as_the_frames_would_be_one_by_one(s: Store) {
    // One transaction: two new frames, the first one again (a repeated delivery in the same group) and a
    // frame under the first one's key with another image (a reused seq). Outcomes come back in order.
    let (a, b) = (frame("e1", 1, "l1", 10), frame("e1", 2, "l1", 10));
    let other = variant("e1", 1, "00000000000000a1", vec![7u8; 100]);
    let (va, vb, va2, vo) = (
        verdict("e1", 1, "spot"),
        verdict("e1", 2, "good"),
        verdict("e1", 1, "good"),
        verdict("e1", 1, "crack"),
    );
    let stored = s
        .store_many(&[(&a, &va), (&b, &vb), (&a, &va2), (&other, &vo)])
        .await
        .unwrap();
    assert_eq!(stored.len(), 4);
    assert!(
        matches!(&stored[0], Stored::New(v) if v.label == "spot"),
        "{stored:?}"
    );
    assert!(
        matches!(&stored[1], Stored::New(v) if v.label == "good"),
        "{stored:?}"
    );
    assert!(
        matches!(&stored[2], Stored::Existing(v) if v.label == "spot"),
        "the repeat gets the first verdict of its group: {stored:?}"
    );
    assert!(
        matches!(&stored[3], Stored::Conflict(v) if v.label == "crack" && v.image_sha256 == other.image_sha256),
        "another image under a stored key is another frame: {stored:?}"
    );
    assert_eq!(s.verdict_count().await.unwrap(), 3);
    // Each frame is found again by its own key and image.
    assert_eq!(s.lookup(&a).await.unwrap().unwrap().label, "spot");
    assert_eq!(s.lookup(&b).await.unwrap().unwrap().label, "good");
    assert_eq!(s.lookup(&other).await.unwrap().unwrap().label, "crack");
}

contract!(a_reused_seq_is_another_frame_never_a_duplicate);
async fn a_reused_seq_is_another_frame_never_a_duplicate(s: Store) {
    let first = frame("e1", 1, "l1", 10);
    s.store(&first, &verdict("e1", 1, "spot")).await.unwrap();
    // A recreated outbox numbers a new frame 1 again, under a new incarnation.
    let recreated = variant("e1", 1, "00000000000000b2", vec![7; 50]);
    assert!(
        s.lookup(&recreated).await.unwrap().is_none(),
        "another incarnation's frame 1 is not answered with the stored verdict"
    );
    match s
        .store(&recreated, &verdict("e1", 1, "good"))
        .await
        .unwrap()
    {
        Stored::New(v) => {
            assert_eq!(v.label, "good");
            assert_eq!(v.incarnation, "00000000000000b2");
            assert_eq!(v.image_sha256, wire::image_sha256(&[7; 50]));
        }
        other => panic!("{other:?}"),
    }
    // An outbox restored from an old copy numbers a new frame 1 again under the old incarnation.
    let restored = variant("e1", 1, "00000000000000a1", vec![8; 60]);
    assert!(s.lookup(&restored).await.unwrap().is_none());
    match s
        .store(&restored, &verdict("e1", 1, "crack"))
        .await
        .unwrap()
    {
        Stored::Conflict(v) => {
            assert_eq!(v.label, "crack");
            assert_eq!(
                v.incarnation, "00000000000000a1",
                "the wire incarnation is echoed"
            );
            assert_eq!(v.image_sha256, wire::image_sha256(&[8; 60]));
        }
        other => panic!("{other:?}"),
    }
    // Each of the three is answered with its own verdict when delivered again.
    for (f, label) in [(&first, "spot"), (&recreated, "good"), (&restored, "crack")] {
        let v = s.lookup(f).await.unwrap().expect("stored");
        assert_eq!(v.label, label);
        assert_eq!(
            v.image_sha256, f.image_sha256,
            "the verdict names its image"
        );
        assert_eq!(v.incarnation, f.incarnation);
        match s.store(f, &verdict("e1", 1, "stain")).await.unwrap() {
            Stored::Existing(v) => assert_eq!(v.label, label),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.verdict_count().await.unwrap(), 3);
}

contract!(concurrent_deliveries_store_one_verdict);
async fn concurrent_deliveries_store_one_verdict(s: Store) {
    // Eight workers judge the same frame at once (a QoS 1 duplicate reaching several workers).
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let label = format!("label-{i}");
                s.store(&frame("e1", 5, "l1", 10), &verdict("e1", 5, &label))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut labels = Vec::new();
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Stored::New(v) => {
                new += 1;
                labels.push(v.label)
            }
            Stored::Existing(v) => labels.push(v.label),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(new, 1, "exactly one delivery stores its verdict");
    assert!(
        labels.windows(2).all(|w| w[0] == w[1]),
        "every reply carries the stored verdict: {labels:?}"
    );
    assert_eq!(s.verdict_count().await.unwrap(), 1);
    let (row, _, _) = s.get_frame("e1", 5).await.unwrap().unwrap();
    assert_eq!(row.deliveries, 8);
}

async fn seed_frames(s: &Store) {
    // e1 on l1: seqs 1..=6, e2 on l2: seqs 1..=4; capture times interleaved.
    for seq in 1..=6u64 {
        let mut f = frame("e1", seq, "l1", 1_000 + seq as i64 * 10);
        if seq == 2 {
            f.edge_local_action = "reject".into(); // cloud says good below: disagreement
        }
        if seq == 3 {
            f.edge_local_action = "reject".into(); // cloud says scratch: agreement
        }
        let label = if seq % 2 == 0 { "good" } else { "scratch" };
        s.store(&f, &verdict("e1", seq, label)).await.unwrap();
    }
    for seq in 1..=4u64 {
        let mut f = frame("e2", seq, "l2", 1_005 + seq as i64 * 10);
        if seq == 4 {
            f.edge_local_action = "pass".into(); // cloud says scratch: disagreement
        }
        let label = if seq == 4 { "scratch" } else { "good" };
        s.store(&f, &verdict("e2", seq, label)).await.unwrap();
    }
}

fn keys(rows: &[tierline_cloud::store::FrameRow]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{}/{}", r.edge_id, r.seq))
        .collect()
}

contract!(frames_are_filtered_and_paged);
async fn frames_are_filtered_and_paged(s: Store) {
    seed_frames(&s).await;
    let all = FrameFilter {
        limit: 100,
        ..FrameFilter::default()
    };
    let rows = s.list_frames(&all).await.unwrap();
    assert_eq!(rows.len(), 10);
    assert!(
        rows.windows(2)
            .all(|w| w[0].capture_time_us >= w[1].capture_time_us),
        "newest first"
    );
    let q = |f: FrameFilter| {
        let s = s.clone();
        async move {
            keys(
                &s.list_frames(&FrameFilter { limit: 100, ..f })
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(
        q(FrameFilter {
            edge_id: "e2".into(),
            ..Default::default()
        })
        .await,
        ["e2/4", "e2/3", "e2/2", "e2/1"]
    );
    assert_eq!(
        q(FrameFilter {
            line: "l1".into(),
            label: "good".into(),
            ..Default::default()
        })
        .await,
        ["e1/6", "e1/4", "e1/2"]
    );
    assert_eq!(
        q(FrameFilter {
            disagreement: true,
            ..Default::default()
        })
        .await,
        ["e2/4", "e1/2"]
    );
    assert_eq!(
        q(FrameFilter {
            since_us: 1_030,
            until_us: 1_050,
            ..Default::default()
        })
        .await,
        ["e2/4", "e1/4", "e2/3", "e1/3"]
    );
    let review = ReviewRow {
        label: "good".into(),
        defective: false,
        reviewer: "ana".into(),
        note: String::new(),
        time_us: 1,
    };
    s.submit_review("e2", 4, &review).await.unwrap();
    let unreviewed = q(FrameFilter {
        unreviewed: true,
        disagreement: true,
        ..Default::default()
    })
    .await;
    assert_eq!(unreviewed, ["e1/2"]);
    let listed = s
        .list_frames(&FrameFilter {
            edge_id: "e2".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed[0].review_label, "good");
    // Paging with page size 3 visits every frame once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_frames(&FrameFilter {
                limit: 3,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(keys(&page));
        match page.last() {
            Some(last) if page.len() == 3 => {
                after = Some((last.capture_time_us, last.edge_id.clone(), last.seq as u64))
            }
            _ => break,
        }
    }
    assert_eq!(seen, keys(&rows));
}

contract!(reviews_are_kept_as_history);
async fn reviews_are_kept_as_history(s: Store) {
    s.store(&frame("e1", 1, "l1", 10), &verdict("e1", 1, "scratch"))
        .await
        .unwrap();
    for (i, label) in ["scratch", "good"].into_iter().enumerate() {
        let r = ReviewRow {
            label: label.into(),
            defective: label != "good",
            reviewer: format!("r{i}"),
            note: "looked twice".into(),
            time_us: 100 + i as i64,
        };
        s.submit_review("e1", 1, &r).await.unwrap();
    }
    let (row, _, reviews) = s.get_frame("e1", 1).await.unwrap().unwrap();
    assert_eq!(row.review_label, "good", "the latest review counts");
    assert_eq!(
        reviews.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        ["scratch", "good"]
    );
    let missing = s.submit_review("e1", 99, &reviews[0]).await.unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound { seq: 99, .. }),
        "{missing}"
    );
    assert!(s.get_frame("e1", 99).await.unwrap().is_none());
}

contract!(edges_follow_presence_and_heartbeats);
async fn edges_follow_presence_and_heartbeats(s: Store) {
    let birth = Presence {
        protocol_version: 1,
        edge_id: "e1".into(),
        state: wire::PresenceState::Online as i32,
        time_us: 5_000,
        edge_model_version: "pre-1".into(),
        site: "plant".into(),
        line: "l1".into(),
    };
    s.record_presence(&birth, 6_000).await.unwrap();
    let hb = Heartbeat {
        protocol_version: 1,
        edge_id: "e1".into(),
        time_us: 7_000,
        backlog_frames: 12,
        oldest_backlog_age_ms: 3_400,
        frames_seen: 1_000,
        frames_forwarded: 37,
        cameras: vec![wire::pb::CameraState {
            camera_id: "cam-0".into(),
            up: true,
            fps: 12.5,
            last_frame_age_s: 0.08,
            ..Default::default()
        }],
        ..Heartbeat::default()
    };
    s.record_heartbeat("plant", "l1", &hb, 8_000).await.unwrap();
    let e = &s.list_edges().await.unwrap()[0];
    assert!(e.online);
    assert_eq!(
        (e.last_seen_us, e.backlog_frames, e.oldest_backlog_age_ms),
        (8_000, 12, 3_400)
    );
    assert_eq!(
        e.edge_model_version, "pre-1",
        "an empty heartbeat version keeps the known one"
    );
    assert_eq!((e.frames_seen, e.frames_forwarded), (1_000, 37));
    let cams = e.cameras();
    assert_eq!(cams.len(), 1);
    assert_eq!(
        (cams[0].id.as_str(), cams[0].up, cams[0].fps),
        ("cam-0", true, 12.5)
    );
    let will = Presence {
        state: wire::PresenceState::Offline as i32,
        time_us: 1_000, // composed at connect time, long before it is sent
        ..birth.clone()
    };
    s.record_presence(&will, 30_000).await.unwrap();
    let e = &s.list_edges().await.unwrap()[0];
    assert!(!e.online);
    assert_eq!(e.last_seen_us, 8_000, "a last will does not move last-seen");
    // A heartbeat from an edge without a presence row creates it.
    let hb2 = Heartbeat {
        edge_id: "e2".into(),
        ..hb
    };
    s.record_heartbeat("plant", "l2", &hb2, 9_000)
        .await
        .unwrap();
    let edges = s.list_edges().await.unwrap();
    assert_eq!(edges.len(), 2);
    assert_eq!(
        (edges[1].edge_id.as_str(), edges[1].line.as_str()),
        ("e2", "l2")
    );
}

contract!(leases_fence_stale_leaders);
async fn leases_fence_stale_leaders(s: Store) {
    let ttl = Duration::from_secs(10);
    let a = s
        .try_acquire_lease("job", "a", ttl, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.try_acquire_lease("job", "b", ttl, 1_000_000)
            .await
            .unwrap()
            .is_none(),
        "a holds it"
    );
    let renewed = s
        .try_acquire_lease("job", "a", ttl, 5_000_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, a.token, "renewing keeps the token");
    // a stops renewing; after expiry b takes over with a larger token.
    let b = s
        .try_acquire_lease("job", "b", ttl, 16_000_000)
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token);
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(1)),
        max_bytes: None,
    };
    let stale = s
        .prune_images(&renewed, &policy, 17_000_000)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::Fenced { token, .. } if token == a.token),
        "{stale}"
    );
    assert!(s.prune_images(&b, &policy, 17_000_000).await.is_ok());
    // a comes back: refused while b's lease runs.
    assert!(
        s.try_acquire_lease("job", "a", ttl, 18_000_000)
            .await
            .unwrap()
            .is_none()
    );
    // b releases; a takes over at once, with a yet larger token.
    s.release_lease(&b).await.unwrap();
    let a2 = s
        .try_acquire_lease("job", "a", ttl, 19_000_000)
        .await
        .unwrap()
        .unwrap();
    assert!(a2.token > b.token);
    // Leases are per job.
    assert!(
        s.try_acquire_lease("other", "b", ttl, 19_000_000)
            .await
            .unwrap()
            .is_some()
    );
}

contract!(retention_clears_old_images_and_keeps_verdicts);
async fn retention_clears_old_images_and_keeps_verdicts(s: Store) {
    for seq in 1..=10u64 {
        s.store(
            &frame("e1", seq, "l1", seq as i64),
            &verdict("e1", seq, "good"),
        )
        .await
        .unwrap();
    }
    let lease = s
        .try_acquire_lease(
            "retention",
            "w1",
            Duration::from_secs(60),
            tierline_shared::time::now_us(),
        )
        .await
        .unwrap()
        .unwrap();
    // Nothing is older than an hour.
    let now = tierline_shared::time::now_us();
    let by_age = RetentionPolicy {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    };
    assert_eq!(
        s.prune_images(&lease, &by_age, now).await.unwrap().images,
        0
    );
    // A budget of 350 bytes keeps the newest three 100-byte images.
    let by_size = RetentionPolicy {
        max_age: None,
        max_bytes: Some(350),
    };
    let p = s.prune_images(&lease, &by_size, now).await.unwrap();
    assert_eq!((p.images, p.bytes), (7, 700));
    let rows = s
        .list_frames(&FrameFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let kept: Vec<u64> = rows
        .iter()
        .filter(|r| r.has_image)
        .map(|r| r.seq as u64)
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert_eq!(s.verdict_count().await.unwrap(), 10, "verdicts stay");
    let (_, image, _) = s.get_frame("e1", kept[0]).await.unwrap().unwrap();
    assert!(image.is_some());
    // Everything received before "an hour from now" ages out.
    let later = now + 2 * 3_600_000_000;
    let p = s
        .prune_images(&lease_at(&s, later).await, &by_age, later)
        .await
        .unwrap();
    assert_eq!(p.images, 3);
    let (row, image, _) = s.get_frame("e1", 10).await.unwrap().unwrap();
    assert!(image.is_none() && !row.has_image);
    assert_eq!(row.label, "good");
}

async fn lease_at(s: &Store, now: i64) -> tierline_cloud::store::Lease {
    s.try_acquire_lease("retention", "w1", Duration::from_secs(60), now)
        .await
        .unwrap()
        .unwrap()
}

contract!(watch_reads_verdicts_in_time_order);
async fn watch_reads_verdicts_in_time_order(s: Store) {
    for seq in 1..=5u64 {
        let mut v = verdict("e1", seq, "good");
        v.verdict_time_us = 1_000 * seq as i64;
        s.store(&frame("e1", seq, "l1", 1), &v).await.unwrap();
    }
    let rows = s.verdicts_since(2_000, "", 10).await.unwrap();
    assert_eq!(keys(&rows), ["e1/3", "e1/4", "e1/5"]);
    assert_eq!(s.verdicts_since(0, "e2", 10).await.unwrap().len(), 0);
    assert_eq!(s.verdicts_since(0, "", 2).await.unwrap().len(), 2);
}

contract!(frames_keep_where_they_came_from);
async fn frames_keep_where_they_came_from(s: Store) {
    // A frame taken on a part trigger from a stream timed by its sender reports, one from a file camera, and
    // one from an edge that predates the fields.
    let mut streamed = frame("e1", 1, "l1", 100);
    streamed.part_id = "P-2026-0042".into();
    streamed.origin = "rtsp://cam@10.0.0.7:554/main".into();
    streamed.capture_clock = wire::CaptureClock::Stream as i32;
    let mut filed = frame("e1", 2, "l1", 200);
    filed.origin = "/data/line-1/0002.png".into();
    let old = frame("e1", 3, "l1", 300);
    for f in [&streamed, &filed, &old] {
        s.store(f, &verdict("e1", f.seq, "spot")).await.unwrap();
    }
    // A delivery again changes nothing of it.
    s.store(&streamed, &verdict("e1", 1, "spot")).await.unwrap();

    let provenance = |r: &tierline_cloud::store::FrameRow| {
        (
            r.seq,
            r.part_id.clone(),
            r.origin.clone(),
            r.capture_clock.clone(),
        )
    };
    let expected = [
        (3, String::new(), String::new(), "arrival".to_string()),
        (
            2,
            String::new(),
            "/data/line-1/0002.png".into(),
            "arrival".into(),
        ),
        (
            1,
            "P-2026-0042".into(),
            "rtsp://cam@10.0.0.7:554/main".into(),
            "stream".into(),
        ),
    ];
    let rows = s
        .list_frames(&FrameFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.iter().map(provenance).collect::<Vec<_>>(), expected);
    let (row, _, _) = s.get_frame("e1", 1).await.unwrap().unwrap();
    assert_eq!(provenance(&row), expected[2]);
    let watched = s.verdicts_since(0, "e1", 10).await.unwrap();
    assert!(watched.iter().any(|r| provenance(r) == expected[2]));
    // The part filter.
    let of_part = s
        .list_frames(&FrameFilter {
            part_id: "P-2026-0042".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&of_part), ["e1/1"]);
    let none = s
        .list_frames(&FrameFilter {
            part_id: "P-0".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

contract!(verdict_regions_are_kept_and_answered_again);
async fn verdict_regions_are_kept_and_answered_again(s: Store) {
    let boxes = vec![
        wire::pb::Region {
            x: 1200.0,
            y: 400.0,
            width: 3.0,
            height: 300.0,
            class_name: "scratch".into(),
            score: 0.91,
        },
        wire::pb::Region {
            x: 10.5,
            y: 20.25,
            width: 8.0,
            height: 8.0,
            class_name: "spot".into(),
            score: 0.6,
        },
    ];
    let f = frame("e1", 1, "l1", 100);
    let mut v = verdict("e1", 1, "scratch");
    v.regions = boxes.clone();
    s.store(&f, &v).await.unwrap();
    // A frame judged by a whole-frame classifier has none.
    s.store(&frame("e1", 2, "l1", 200), &verdict("e1", 2, "good"))
        .await
        .unwrap();
    let again = s.lookup(&f).await.unwrap().expect("stored verdict");
    assert!(again.redelivery);
    assert_eq!(
        again.regions, boxes,
        "the verdict sent again names the regions"
    );
    let (row, _, _) = s.get_frame("e1", 1).await.unwrap().unwrap();
    assert_eq!(row.regions(), boxes);
    let (row, _, _) = s.get_frame("e1", 2).await.unwrap().unwrap();
    assert!(row.regions().is_empty());
}

contract!(frames_are_filtered_by_camera_model_and_review);
async fn frames_are_filtered_by_camera_model_and_review(s: Store) {
    for seq in 1..=4u64 {
        let mut f = frame("e1", seq, "l1", 1_000 + seq as i64);
        f.camera_id = format!("cam-{}", seq % 2);
        if seq == 4 {
            f.edge_model_version = "pre-2".into();
        }
        s.store(&f, &verdict("e1", seq, "scratch")).await.unwrap();
    }
    let review = ReviewRow {
        label: "good".into(),
        defective: false,
        reviewer: "ana".into(),
        note: String::new(),
        time_us: 1,
    };
    s.submit_review("e1", 3, &review).await.unwrap();
    let q = |f: FrameFilter| {
        let s = s.clone();
        async move {
            let rows = s
                .list_frames(&FrameFilter { limit: 100, ..f })
                .await
                .unwrap();
            rows.iter().map(|r| r.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        q(FrameFilter {
            camera_id: "cam-1".into(),
            ..Default::default()
        })
        .await,
        vec![3, 1]
    );
    assert_eq!(
        q(FrameFilter {
            model_version: "pre-2".into(),
            ..Default::default()
        })
        .await,
        vec![4]
    );
    assert_eq!(
        q(FrameFilter {
            model_version: "full-1".into(),
            ..Default::default()
        })
        .await,
        vec![4, 3, 2, 1],
        "the cloud model's version matches too"
    );
    assert_eq!(
        q(FrameFilter {
            reviewed: true,
            ..Default::default()
        })
        .await,
        vec![3]
    );
}

contract!(two_reviewers_claiming_from_one_queue_never_get_the_same_frame);
async fn two_reviewers_claiming_from_one_queue_never_get_the_same_frame(s: Store) {
    const FRAMES: u64 = 30;
    for seq in 1..=FRAMES {
        let mut f = frame("e1", seq, "l1", 1_000 + seq as i64);
        if seq % 5 == 0 {
            f.edge_local_action = "pass".into(); // cloud says scratch: a disagreement, served first
        }
        s.store(&f, &verdict("e1", seq, "scratch")).await.unwrap();
    }
    let now = tierline_shared::time::now_us();
    // Each reviewer takes the next free frame, holds it a moment (claimed), labels it and moves on.
    let reviewer = |name: &'static str| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(row) = s
                .claim_next(name, &FrameFilter::default(), now, 60_000_000)
                .await
                .unwrap()
            {
                got.push(row.seq as u64);
                tokio::task::yield_now().await;
                let review = ReviewRow {
                    label: "scratch".into(),
                    defective: true,
                    reviewer: name.into(),
                    note: String::new(),
                    time_us: now,
                };
                s.submit_review("e1", row.seq as u64, &review)
                    .await
                    .unwrap();
                s.release(name, &row).await.unwrap();
            }
            got
        })
    };
    let (a, b) = (reviewer("ana"), reviewer("ben"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    let served: std::collections::BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        served.len(),
        all.len(),
        "a frame served twice: ana {a:?}, ben {b:?}"
    );
    assert_eq!(served, (1..=FRAMES).collect(), "every frame served once");
    // Disagreements come first in each reviewer's own order.
    for got in [&a, &b] {
        let first_plain = got.iter().position(|s| s % 5 != 0).unwrap_or(got.len());
        assert!(
            got[first_plain..].iter().all(|s| s % 5 != 0),
            "a disagreement after a plain frame: {got:?}"
        );
    }
}

contract!(a_claim_keeps_a_frame_from_others_until_it_lapses_or_moves_on);
async fn a_claim_keeps_a_frame_from_others_until_it_lapses_or_moves_on(s: Store) {
    use tierline_cloud::store::Claim;
    for seq in 1..=2u64 {
        s.store(
            &frame("e1", seq, "l1", 1_000 + seq as i64),
            &verdict("e1", seq, "spot"),
        )
        .await
        .unwrap();
    }
    let row = |seq| {
        let s = s.clone();
        async move { s.get_frame("e1", seq).await.unwrap().unwrap().0 }
    };
    let (one, two) = (row(1).await, row(2).await);
    let t = 1_000_000;
    assert_eq!(s.claim("ana", &one, t, 100).await.unwrap(), Claim::Mine);
    assert_eq!(
        s.claim("ben", &one, t + 50, 100).await.unwrap(),
        Claim::HeldBy {
            reviewer: "ana".into(),
            expires_us: t + 100
        }
    );
    // ben is handed the other frame, not ana's.
    let next = s
        .claim_next("ben", &FrameFilter::default(), t + 50, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.seq, 2);
    assert_eq!(s.claims(t + 60).await.unwrap().len(), 2);
    // ana moves on to frame 2 while ben holds it: refused, and she keeps frame 1.
    assert!(matches!(
        s.claim("ana", &two, t + 60, 100).await.unwrap(),
        Claim::HeldBy { .. }
    ));
    // The claim lapses: ben may take frame 1, and his claim on frame 2 ends (one frame at a time).
    assert_eq!(
        s.claim("ben", &one, t + 100, 100).await.unwrap(),
        Claim::Mine
    );
    let live = s.claims(t + 150).await.unwrap();
    assert_eq!(
        live.iter()
            .map(|c| (c.reviewer.as_str(), c.seq))
            .collect::<Vec<_>>(),
        vec![("ben", 1)]
    );
    // Released after a review: free for anyone.
    s.release("ben", &one).await.unwrap();
    assert_eq!(
        s.claim("ana", &one, t + 150, 100).await.unwrap(),
        Claim::Mine
    );
}

/// Every file under `dir`, with its bytes.
fn files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
    out
}

contract!(images_kept_as_objects_are_named_by_their_rows_and_removed_by_retention);
async fn images_kept_as_objects_are_named_by_their_rows_and_removed_by_retention(s: Store) {
    use tierline_cloud::store::Images;
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    let s = s.with_images(Images::open(&url).unwrap());
    let image = |seq: u64| vec![seq as u8; 100];
    for seq in 1..=10u64 {
        s.store(
            &frame("e1", seq, "l1", seq as i64),
            &verdict("e1", seq, "good"),
        )
        .await
        .unwrap();
    }
    // A delivery again changes nothing on storage.
    s.store(&frame("e1", 3, "l1", 3), &verdict("e1", 3, "good"))
        .await
        .unwrap();
    // The oracle is the directory itself: one file per frame, holding its image.
    let mut on_disk = files(dir.path());
    on_disk.sort();
    assert_eq!(on_disk, (1..=10).map(image).collect::<Vec<_>>());
    for seq in [1, 10] {
        let (row, bytes, _) = s.get_frame("e1", seq).await.unwrap().unwrap();
        assert!(row.has_image);
        assert_eq!(bytes, Some(image(seq)));
    }
    let now = tierline_shared::time::now_us();
    let lease = lease_at(&s, now).await;
    let by_size = RetentionPolicy {
        max_age: None,
        max_bytes: Some(350),
    };
    let p = s.prune_images(&lease, &by_size, now).await.unwrap();
    assert_eq!((p.images, p.bytes), (7, 700));
    let mut left = files(dir.path());
    left.sort();
    assert_eq!(
        left,
        (8..=10).map(image).collect::<Vec<_>>(),
        "the newest three stay"
    );
    let (row, bytes, _) = s.get_frame("e1", 2).await.unwrap().unwrap();
    assert!(!row.has_image && bytes.is_none());
    assert_eq!(
        s.get_frame("e1", 9).await.unwrap().unwrap().1,
        Some(image(9))
    );
    let later = now + 2 * 3_600_000_000;
    let by_age = RetentionPolicy {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    };
    let p = s
        .prune_images(&lease_at(&s, later).await, &by_age, later)
        .await
        .unwrap();
    assert_eq!(p.images, 3);
    assert!(
        files(dir.path()).is_empty(),
        "retention removed every object"
    );
    assert_eq!(s.verdict_count().await.unwrap(), 10, "verdicts stay");
}

contract!(the_queue_serves_disagreements_then_audit_misses_then_unsure_verdicts);
async fn the_queue_serves_disagreements_then_audit_misses_then_unsure_verdicts(s: Store) {
    use tierline_cloud::store::Urgency;
    // seq 1: confident and agreed; 2: an audit miss; 3: unsure; 4: a disagreement; 5: an audit the cloud
    // passed (confident). Newer seqs are captured later.
    for seq in 1..=5u64 {
        let mut f = frame("e1", seq, "l1", 1_000 + seq as i64);
        let mut v = verdict("e1", seq, if seq == 5 { "good" } else { "scratch" });
        match seq {
            2 | 5 => f.reason = 2,
            3 => v.defect_score = 0.55,
            4 => f.edge_local_action = "pass".into(),
            _ => {}
        }
        s.store(&f, &v).await.unwrap();
    }
    let mut order = Vec::new();
    while let Some(row) = s
        .claim_next("ana", &FrameFilter::default(), 1, 1_000_000)
        .await
        .unwrap()
    {
        order.push((row.seq, row.urgency()));
        s.submit_review(
            "e1",
            row.seq as u64,
            &ReviewRow {
                label: "good".into(),
                defective: false,
                reviewer: "ana".into(),
                note: String::new(),
                time_us: 1,
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        order,
        [
            (4, Urgency::Disagreement),
            (2, Urgency::AuditMiss),
            (3, Urgency::LowConfidence),
            (5, Urgency::Other),
            (1, Urgency::Other),
        ]
    );
}

contract!(the_model_registry_keeps_bundles_once_and_records_every_target_change);
async fn the_model_registry_keeps_bundles_once_and_records_every_target_change(s: Store) {
    use tierline_cloud::store::{NewBundle, Published, RegistryRule};
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let bundle = |sha: &'static str, sequence: i64, data: &'static [u8]| NewBundle {
        sha256: sha,
        name: "prescreen",
        version: "1.0.0",
        sequence,
        key_id: "k1",
        signed: "{}",
        data,
    };
    let data: &'static [u8] = Box::leak(data.into_boxed_slice());
    let (a, b, c) = (
        "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111",
        "aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222",
        "cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333",
    );
    assert_eq!(
        s.publish_bundle(bundle(a, 1, data), "ops", 10)
            .await
            .unwrap(),
        Ok(Published::New)
    );
    // The same archive again changes nothing; another archive under a taken sequence is refused.
    assert_eq!(
        s.publish_bundle(bundle(a, 1, data), "ops", 11)
            .await
            .unwrap(),
        Ok(Published::Known)
    );
    // The same archive under another sequence is not a new bundle.
    assert!(matches!(
        s.publish_bundle(bundle(a, 9, data), "ops", 11)
            .await
            .unwrap(),
        Err(RegistryRule::AlreadyPublished { sequence: 1, .. })
    ));
    assert!(matches!(
        s.publish_bundle(bundle(b, 1, b"other"), "ops", 12)
            .await
            .unwrap(),
        Err(RegistryRule::SequenceTaken { sequence: 1, .. })
    ));
    assert_eq!(
        s.publish_bundle(bundle(b, 2, b"second"), "ops", 13)
            .await
            .unwrap(),
        Ok(Published::New)
    );
    assert_eq!(
        s.publish_bundle(bundle(c, 3, b"third"), "ops", 14)
            .await
            .unwrap(),
        Ok(Published::New)
    );
    let listed: Vec<_> = s
        .list_bundles()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sha256, r.sequence, r.size))
        .collect();
    assert_eq!(
        listed,
        [
            (c.into(), 3, 5),
            (b.into(), 2, 6),
            (a.into(), 1, data.len() as i64)
        ]
    );

    // Downloads by range return exactly the bytes published.
    let all = s.bundle_bytes(a, 0, u64::MAX).await.unwrap().unwrap();
    assert_eq!(all, data);
    let part = s.bundle_bytes(a, 1000, 777).await.unwrap().unwrap();
    assert_eq!(part, &data[1000..1777]);
    let tail = s.bundle_bytes(a, 4990, 100).await.unwrap().unwrap();
    assert_eq!(tail, &data[4990..]);
    assert!(
        s.bundle_bytes(a, 6000, 10)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert!(
        s.bundle_bytes(&"f".repeat(64), 0, 10)
            .await
            .unwrap()
            .is_none()
    );

    // Hash prefixes: unique, ambiguous, unknown.
    assert_eq!(s.find_bundle("cccc33").await.unwrap().unwrap().sha256, c);
    assert_eq!(s.find_bundle("AAAA1").await.unwrap().unwrap().sha256, a);
    assert!(matches!(
        s.find_bundle("aaaa").await.unwrap(),
        Err(RegistryRule::Ambiguous(_))
    ));
    assert!(matches!(
        s.find_bundle("dddd").await.unwrap(),
        Err(RegistryRule::UnknownBundle(_))
    ));
    assert!(matches!(
        s.find_bundle("x'; --").await.unwrap(),
        Err(RegistryRule::UnknownBundle(_))
    ));

    // Targets remember what they replaced; setting the same bundle again keeps that.
    let t = s
        .set_target("edges/line-3", a, false, "ops", "first", 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.sha256.as_str(), t.previous), (a, None));
    let t = s
        .set_target("edges/line-3", b, false, "ops", "upgrade", 21)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.sha256.as_str(), t.previous.as_deref()), (b, Some(a)));
    let t = s
        .set_target("edges/line-3", b, false, "ops", "again", 22)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.previous.as_deref(), Some(a));
    let t = s
        .set_target("edges/line-3", a, true, "controller", "gate failed", 23)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.previous.as_deref(), t.rollback), (Some(b), true));
    s.set_target("workers", c, false, "ops", "", 24)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        s.set_target("workers", &"e".repeat(64), false, "ops", "", 25)
            .await
            .unwrap(),
        Err(RegistryRule::UnknownBundle(_))
    ));
    let targets: Vec<_> = s
        .model_targets()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.target, t.sha256))
        .collect();
    assert_eq!(
        targets,
        [
            ("edges/line-3".into(), a.into()),
            ("workers".into(), c.into())
        ]
    );

    // Every change is an event, in order, with who asked and why.
    s.record_model_event(
        "edge-7",
        "edge-7",
        b,
        "rejected",
        "golden dent-0 failed",
        26,
    )
    .await
    .unwrap();
    let events: Vec<_> = s
        .model_events(Some("edges/line-3"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.event, e.detail))
        .collect();
    assert_eq!(
        events,
        [
            ("ops".into(), "targeted".into(), "first".into()),
            ("ops".into(), "targeted".into(), "upgrade".into()),
            ("ops".into(), "targeted".into(), "again".into()),
            (
                "controller".into(),
                "rolled-back".into(),
                "gate failed".into()
            ),
        ]
    );
    let all = s.model_events(None, 100).await.unwrap();
    assert_eq!(all.len(), 3 + 5 + 1);
    assert_eq!(all.first().unwrap().event, "published");
    let latest = s.model_events(None, 2).await.unwrap();
    assert_eq!(
        latest.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["targeted", "rejected"]
    );
}

contract!(audit_samples_are_counted_per_edge_and_prescreen_version);
async fn audit_samples_are_counted_per_edge_and_prescreen_version(s: Store) {
    use tierline_cloud::store::AuditCount;
    // (edge, seq, reason, prescreen version, cloud label, capture time)
    let frames = [
        ("e1", 1, 2, "pre-1", "good", 100),
        ("e1", 2, 2, "pre-1", "scratch", 110),
        ("e1", 3, 2, "pre-1", "good", 120),
        ("e1", 4, 1, "pre-1", "scratch", 130), // a suspect: not an audit sample
        ("e1", 5, 2, "pre-2", "dent", 140),
        ("e1", 6, 2, "pre-2", "good", 20), // before the window below
        ("e2", 1, 2, "pre-1", "good", 150),
    ];
    for (edge, seq, reason, version, label, capture) in frames {
        let mut f = frame(edge, seq, "l1", capture);
        f.reason = reason;
        f.edge_model_version = version.into();
        s.store(&f, &verdict(edge, seq, label)).await.unwrap();
    }
    let count = |edge: &str, version: &str, audits, misses| AuditCount {
        edge_id: edge.into(),
        edge_model_version: version.into(),
        audits,
        misses,
    };
    assert_eq!(
        s.audit_counts(50).await.unwrap(),
        [
            count("e1", "pre-1", 3, 1),
            count("e1", "pre-2", 1, 1),
            count("e2", "pre-1", 1, 0),
        ]
    );
    assert_eq!(
        s.audit_counts(0).await.unwrap()[1],
        count("e1", "pre-2", 2, 1)
    );
    assert!(s.audit_counts(1_000).await.unwrap().is_empty());
}
