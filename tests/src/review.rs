//! A review API on a seeded SQLite store, for the API's own tests and the review CLI's. Two reviewers have
//! their own tokens ([`REVIEWER`] with [`TOKEN`], read from a file, and [`OTHER_REVIEWER`] with
//! [`OTHER_TOKEN`]); the deprecated shared token [`SHARED_TOKEN`] is set too.

use std::net::SocketAddr;
use tierline_cloud::config::{ApiConfig, ReviewerConfig};
use tierline_cloud::store::Store;
use tierline_shared::wire::{self, ClassScore, FrameEnvelope, Presence, Verdict};
use tokio_util::sync::CancellationToken;

/// The bearer token of [`REVIEWER`]; the token the CLI's tests use.
pub const TOKEN: &str = "s3cret-token";

/// The reviewer [`TOKEN`] belongs to.
pub const REVIEWER: &str = "bo";

/// Another reviewer's token.
pub const OTHER_TOKEN: &str = "ana-s3cret";

/// The reviewer [`OTHER_TOKEN`] belongs to.
pub const OTHER_REVIEWER: &str = "ana";

/// The deprecated shared token (`api.token`); its reviews are recorded as `api.token`.
pub const SHARED_TOKEN: &str = "shared-s3cret";

/// A review API serving a seeded store, stopped when dropped.
pub struct ReviewServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its store.
    pub store: Store,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for ReviewServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A stored frame of `edge` (a 5-byte PNG-looking image), with the local action `local`.
pub fn frame(edge: &str, seq: u64, capture_us: i64, local: &str) -> FrameEnvelope {
    FrameEnvelope {
        protocol_version: 1,
        edge_id: edge.into(),
        seq,
        frame_id: wire::frame_id(edge, seq),
        site: "plant".into(),
        line: "l1".into(),
        camera_id: "cam-0".into(),
        capture_time_us: capture_us,
        reason: 1,
        edge_score: 0.8,
        edge_model_version: "pre-1".into(),
        encoding: 2,
        image: vec![0x89, b'P', b'N', b'G', seq as u8],
        edge_local_action: local.into(),
        ..FrameEnvelope::default()
    }
}

/// A verdict labelling frame `seq` of `edge`.
pub fn verdict(edge: &str, seq: u64, label: &str) -> Verdict {
    Verdict {
        protocol_version: 1,
        edge_id: edge.into(),
        seq,
        frame_id: wire::frame_id(edge, seq),
        cloud_model_version: "full-1".into(),
        label: label.into(),
        defective: label != "good",
        defect_score: 0.5,
        scores: vec![ClassScore {
            class_name: label.into(),
            probability: 0.75,
        }],
        verdict_time_us: tierline_shared::time::now_us(),
        ..Verdict::default()
    }
}

/// Starts a review API on a seeded SQLite store: edge-a seqs 1..=5 (seq 2 rejected locally but good: a
/// disagreement), one edge online.
pub async fn start() -> ReviewServer {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let store = Store::open(&url, true).await.expect("test store");
    for seq in 1..=5u64 {
        let local = if seq == 2 { "reject" } else { "" };
        let label = if seq % 2 == 0 { "good" } else { "scratch" };
        store
            .store(
                &frame("edge-a", seq, 1_000_000 * seq as i64, local),
                &verdict("edge-a", seq, label),
            )
            .await
            .expect("seed a verdict");
    }
    let p = Presence {
        protocol_version: 1,
        edge_id: "edge-a".into(),
        state: wire::PresenceState::Online as i32,
        time_us: tierline_shared::time::now_us(),
        edge_model_version: "pre-1".into(),
        site: "plant".into(),
        line: "l1".into(),
    };
    store
        .record_presence(&p, tierline_shared::time::now_us())
        .await
        .expect("seed presence");
    let token_file = dir.path().join("bo.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    let config = ApiConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        reviewers: vec![
            ReviewerConfig {
                name: REVIEWER.into(),
                token: None,
                token_file: Some(token_file),
            },
            ReviewerConfig {
                name: OTHER_REVIEWER.into(),
                token: Some(OTHER_TOKEN.into()),
                token_file: None,
            },
        ],
        token: Some(SHARED_TOKEN.into()),
        ..ApiConfig::default()
    };
    let stop = CancellationToken::new();
    let api = tierline_cloud::api::ReviewApi::bind(config, store.clone())
        .await
        .expect("review API listens");
    let addr = api.addr();
    tokio::spawn(api.run(stop.clone()));
    ReviewServer {
        addr,
        store,
        stop,
        _dir: dir,
    }
}

/// A review API with a model registry trusting `trusted`, and the bundle server, over an empty SQLite store;
/// stopped when dropped. [`OTHER_REVIEWER`] is an operator, [`REVIEWER`] is not.
pub struct RegistryServer {
    /// Where the review API (with the `Models` service) listens.
    pub api: SocketAddr,
    /// Where the bundle server listens.
    pub bundles: SocketAddr,
    /// Its store.
    pub store: Store,
    /// The store's URL, for a cloud worker sharing it.
    pub url: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a [`RegistryServer`].
pub async fn start_registry(trusted: tierline_shared::bundle::TrustedKeys) -> RegistryServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let store = Store::open(&url, true).await.expect("open store");
    let config = ApiConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        reviewers: vec![
            ReviewerConfig {
                name: REVIEWER.into(),
                token: Some(TOKEN.into()),
                token_file: None,
            },
            ReviewerConfig {
                name: OTHER_REVIEWER.into(),
                token: Some(OTHER_TOKEN.into()),
                token_file: None,
            },
        ],
        operators: vec![OTHER_REVIEWER.into()],
        ..ApiConfig::default()
    };
    let stop = CancellationToken::new();
    let registry = tierline_cloud::registry::Registry::new(store.clone(), trusted);
    let api = tierline_cloud::api::ReviewApi::bind(config, store.clone())
        .await
        .expect("review API listens")
        .with_registry(registry);
    let bundles = tierline_cloud::registry::server::BundleServer::bind(
        ([127, 0, 0, 1], 0).into(),
        store.clone(),
    )
    .await
    .expect("bundle server listens");
    let (api_addr, bundles_addr) = (api.addr(), bundles.addr());
    tokio::spawn(api.run(stop.clone()));
    tokio::spawn(bundles.run(stop.clone()));
    RegistryServer {
        api: api_addr,
        bundles: bundles_addr,
        store,
        url,
        stop,
        _dir: dir,
    }
}
