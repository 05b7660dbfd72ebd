//! Builders that run a cloud worker and an edge in-process against a broker, on a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tierline_cloud::{CloudConfig, CloudStats};
use tierline_edge::{EdgeConfig, EdgeStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The committed models.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A cloud worker config for a broker on `port`, storing in `dir/cloud.db`, review API on any free port.
pub fn cloud_config(port: u16, dir: &Path, worker: &str) -> CloudConfig {
    let text = format!(
        "[cloud]\nworker_id = \"{worker}\"\n[mqtt]\nport = {port}\n[model]\nmanifest = {:?}\n[store]\nurl = \"sqlite://{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        models_dir().join("full.toml"),
        dir.join("cloud.db").display()
    );
    toml::from_str(&text).expect("cloud config")
}

/// An edge config for a broker on `port` in `dir`, with `cameras` as `[[camera]]` TOML and `extra` TOML
/// appended (sections that are not set here).
pub fn edge_config(port: u16, dir: &Path, cameras: &str, decision: &str) -> EdgeConfig {
    toml::from_str(&edge_toml(port, dir, cameras, decision)).expect("edge config")
}

/// The TOML text of [`edge_config`], for an edge run as a process; its admin endpoint listens on any free
/// port (`listen = "127.0.0.1:0"`, the last key before `cameras`).
pub fn edge_toml(port: u16, dir: &Path, cameras: &str, decision: &str) -> String {
    format!(
        "[edge]\nid = \"edge-t\"\nsite = \"plant\"\nline = \"l1\"\n[mqtt]\nport = {port}\nreconnect_delay = \"100ms\"\n\
         [model]\nmanifest = {:?}\n[decision]\n{decision}\n[outbox]\npath = {:?}\nresend_after = \"2s\"\n\
         [sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{cameras}",
        models_dir().join("prescreen.toml"),
        dir.join("outbox.db"),
        dir.join("decisions.jsonl"),
    )
}

/// `n` synthetic cameras of `frames` frames each.
pub fn synthetic_cameras(n: u32, frames: u64, fps: f64, defect_rate: f64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[camera]]\nid = \"cam-{i}\"\nkind = \"synthetic\"\nseed = {}\nfps = {fps}\ndefect_rate = {defect_rate}\nframes = {frames}\n",
                7 + i
            )
        })
        .collect()
}

/// A running in-process component.
pub struct Running<S> {
    /// Its counters.
    pub stats: Arc<S>,
    /// Where its admin endpoint listens, once it does.
    pub admin_addr: Arc<OnceLock<SocketAddr>>,
    /// Where its review API listens (cloud workers), once it does.
    pub api_addr: Arc<OnceLock<SocketAddr>>,
    /// Where its bundle server listens (cloud workers with `registry.listen`), once it does.
    pub bundles_addr: Arc<OnceLock<SocketAddr>>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl<S> Running<S> {
    /// Whether it has ended (by itself: nothing asked it to stop).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks it to stop and waits for it, returning its result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// Starts a cloud worker.
pub fn start_cloud(config: CloudConfig) -> Running<CloudStats> {
    tierline_shared::telemetry::init_logging("warn");
    let stats = Arc::new(CloudStats::default());
    let stop = CancellationToken::new();
    let (admin_addr, api_addr) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let bundles_addr = Arc::new(OnceLock::new());
    let task = tokio::spawn({
        let (stats, stop) = (stats.clone(), stop.clone());
        let (admin, api, bundles) = (admin_addr.clone(), api_addr.clone(), bundles_addr.clone());
        async move {
            let app = tierline_cloud::App::build(config, stats).await?;
            if let Some(a) = app.admin_addr() {
                let _ = admin.set(a);
            }
            if let Some(a) = app.api_addr() {
                let _ = api.set(a);
            }
            if let Some(a) = app.bundles_addr() {
                let _ = bundles.set(a);
            }
            Ok(app.run(stop).await?)
        }
    });
    Running {
        stats,
        admin_addr,
        api_addr,
        bundles_addr,
        stop,
        task,
    }
}

/// Starts an edge.
pub fn start_edge(config: EdgeConfig) -> Running<EdgeStats> {
    let stats = Arc::new(EdgeStats::default());
    let stop = CancellationToken::new();
    let admin_addr = Arc::new(OnceLock::new());
    let task = tokio::spawn({
        let (stats, stop, admin) = (stats.clone(), stop.clone(), admin_addr.clone());
        async move {
            let app = tierline_edge::App::build(config, stats).await?;
            if let Some(a) = app.admin_addr() {
                let _ = admin.set(a);
            }
            Ok(app.run(stop).await?)
        }
    });
    Running {
        stats,
        admin_addr,
        api_addr: Arc::new(OnceLock::new()),
        bundles_addr: Arc::new(OnceLock::new()),
        stop,
        task,
    }
}

/// Waits until `done` holds, polling every 50 ms; after `timeout` panics with `what` and the `state` then.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    state: impl Fn() -> String,
) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; state: {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a cloud worker is connected to its broker and subscribed (`what` names the wait in a failure).
pub async fn wait_subscribed(cloud: &CloudStats, what: &str, timeout: Duration) {
    wait_until(
        what,
        timeout,
        || cloud.link_up.load(std::sync::atomic::Ordering::Relaxed),
        || format!("{:?}", cloud.link_error.get()),
    )
    .await;
}

/// Counters of an edge and a cloud worker, for failure messages.
pub fn describe(e: &EdgeStats, c: &CloudStats) -> String {
    use tierline_edge::stats::get;
    format!(
        "edge: captured {} dropped {} decisions {} suspects {} audits {} publishes {} verdicts {} fallback {} link {}; cloud: received {} stored {} duplicates {} published {} failures {} rejected {}",
        get(&e.frames_captured),
        get(&e.frames_dropped),
        get(&e.decisions),
        get(&e.frames_suspect),
        get(&e.frames_audit),
        get(&e.publishes),
        get(&e.verdicts),
        get(&e.decisions_fallback),
        e.link_up.load(std::sync::atomic::Ordering::Relaxed),
        get(&c.frames_received),
        get(&c.verdicts_stored),
        get(&c.duplicates),
        get(&c.verdicts_published),
        get(&c.failures),
        get(&c.rejected_malformed) + get(&c.rejected_forged),
    )
}

/// Subscribes as `client_id` to `filter` on the broker at `port` (messages up to 8 MiB) and hands every
/// message that decodes as `M` to `each`, until the returned task is aborted. Returns once subscribed.
pub async fn read_messages<M, F>(
    port: u16,
    client_id: &str,
    filter: &str,
    mut each: F,
) -> JoinHandle<()>
where
    M: prost::Message + Default + 'static,
    F: FnMut(M) + Send + 'static,
{
    use tierline_shared::mqtt::{Event, MqttConfig, Packet, QoS};
    let mqtt = MqttConfig {
        port,
        max_message_bytes: 8 << 20,
        ..Default::default()
    };
    let (sub, mut events) =
        tierline_shared::mqtt::client(mqtt.options(client_id).expect("reader options"), 64);
    sub.subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("reader subscribes");
    tokio::spawn(async move {
        let _client = sub;
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev
                && let Ok(m) = M::decode(&p.payload[..])
            {
                each(m);
            }
        }
    })
}
