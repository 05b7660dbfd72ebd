//! An in-process MQTT broker (rumqttd) for the zero-setup demo and tests. Plants run Mosquitto; this exists
//! so that one command can show the whole pipeline on a machine with nothing installed.

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
            "v4": {
                "1": {
                    "name": "v4-1",
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
