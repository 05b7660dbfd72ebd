//! The demo's broker: a private Mosquitto when it is installed (`scripts/setup` installs it), else an
//! in-process broker (rumqttd), so that one command shows the whole pipeline on a machine with nothing
//! installed. Plants run Mosquitto. The embedded broker leaves Nagle's algorithm on for its sockets, which
//! holds small verdicts back by tens of milliseconds on loopback: the demo says which broker it used.

use std::net::TcpListener;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors starting the embedded broker.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// No free port.
    #[error("cannot find a free local port for the embedded broker: {0}")]
    Port(std::io::Error),
    /// The configuration was refused.
    #[error("embedded broker configuration invalid: {0}")]
    Config(String),
    /// It did not start listening.
    #[error("embedded broker did not start listening on 127.0.0.1:{0} within 5 s")]
    NotListening(u16),
}

/// A running embedded broker. It lives until the process ends.
pub struct EmbeddedBroker {
    port: u16,
}

/// Finds a free TCP port on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbeddedBroker {
    /// Starts a broker on a free local port, accepting messages up to `max_payload` bytes.
    pub fn start(max_payload: usize) -> Result<Self, BrokerError> {
        let port = free_port().map_err(BrokerError::Port)?;
        let config = serde_json::json!({
            "id": 0,
            "router": {
                "max_connections": 1000,
                "max_outgoing_packet_count": 200,
                "max_segment_size": 256 * 1024 * 1024,
                "max_segment_count": 10,
            },
            // Both tiers speak MQTT 5.
            "v5": {
                "1": {
                    "name": "v5-1",
                    "listen": format!("127.0.0.1:{port}"),
                    "next_connection_delay_ms": 1,
                    "connections": {
                        "connection_timeout_ms": 60000,
                        "max_payload_size": max_payload + 4096,
                        "max_inflight_count": 100,
                        "dynamic_filters": true,
                    }
                }
            }
        });
        let config: rumqttd::Config =
            serde_json::from_value(config).map_err(|e| BrokerError::Config(e.to_string()))?;
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "Embedded broker stopped.");
                }
            })
            .map_err(BrokerError::Port)?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(5) {
                return Err(BrokerError::NotListening(port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { port })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A private Mosquitto started for the demo: its own process on a free local port, anonymous, no
/// persistence, `set_tcp_nodelay true` (so a small verdict is not held back by Nagle's algorithm, which the
/// embedded broker cannot switch off). Stopped when dropped.
pub struct LocalMosquitto {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Where `scripts/setup` (Debian's package) puts Mosquitto, then `$PATH`.
fn mosquitto_binary() -> Option<std::path::PathBuf> {
    let sbin = std::path::Path::new("/usr/sbin/mosquitto");
    if sbin.is_file() {
        return Some(sbin.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mosquitto"))
            .find(|p| p.is_file())
    })
}

impl LocalMosquitto {
    /// Starts Mosquitto if it is installed; `Ok(None)` when it is not.
    pub fn start(max_payload: usize) -> Result<Option<Self>, BrokerError> {
        let Some(binary) = mosquitto_binary() else {
            return Ok(None);
        };
        let port = free_port().map_err(BrokerError::Port)?;
        let dir = tempfile::tempdir().map_err(BrokerError::Port)?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n\
                 message_size_limit {}\nmax_inflight_messages 0\nmax_queued_messages 100000\nlog_dest none\n",
                max_payload + 4096
            ),
        )
        .map_err(BrokerError::Port)?;
        let child = std::process::Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(BrokerError::Port)?;
        let mut broker = Self {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(5)
                || broker.child.try_wait().ok().flatten().is_some()
            {
                return Err(BrokerError::NotListening(port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(broker))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for LocalMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
