//! MQTT connection settings shared by edge and cloud.

use serde::Deserialize;
use std::time::Duration;

/// Where the broker is and how to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Keep-alive interval; the broker declares the client gone after 1.5× this.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Largest message this client sends or accepts, in bytes (must match on edge and cloud and fit the
    /// broker's `max_packet_size`).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Optional user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Optional password.
    #[serde(default)]
    pub password: Option<String>,
    /// Delay before reconnecting after the connection drops (doubled up to 30 s, with jitter).
    #[serde(default = "default_reconnect_delay", with = "humantime_serde")]
    pub reconnect_delay: Duration,
    /// TLS (unset: plain TCP).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(10)
}
fn default_max_message_bytes() -> usize {
    crate::wire::DEFAULT_MAX_MESSAGE_BYTES
}
fn default_reconnect_delay() -> Duration {
    Duration::from_millis(250)
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            keep_alive: default_keep_alive(),
            max_message_bytes: default_max_message_bytes(),
            username: None,
            password: None,
            reconnect_delay: default_reconnect_delay(),
            tls: None,
        }
    }
}

impl MqttConfig {
    /// rumqttc options for a client with `client_id`. Incoming and outgoing packets may be as large as the
    /// message limit plus room for the topic and header. Fails only if the TLS files are unusable.
    pub fn options(&self, client_id: &str) -> Result<rumqttc::MqttOptions, crate::tls::TlsError> {
        let mut o = rumqttc::MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(self.keep_alive);
        let packet = self.max_message_bytes + 1024;
        o.set_max_packet_size(packet, packet);
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            o.set_credentials(u, p);
        }
        if let Some(tls) = &self.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                tls.client_config()?.into(),
            ));
        }
        Ok(o)
    }
}

impl MqttConfig {
    /// A connection error in words a person can act on: which broker, what failed, and what to check.
    pub fn explain(&self, error: &rumqttc::ConnectionError) -> String {
        use rumqttc::{ConnectReturnCode as Code, ConnectionError as E};
        let broker = format!("{}:{}", self.host, self.port);
        match error {
            E::Tls(e) => format!(
                "TLS handshake with broker {broker} failed: {e}; check that mqtt.tls.ca holds the CA that \
                 signed the broker's certificate and that the certificate names mqtt.host ({})",
                self.host
            ),
            E::ConnectionRefused(Code::BadUserNamePassword | Code::NotAuthorized) => format!(
                "broker {broker} refused the login{}: check mqtt.username and mqtt.password (or the client \
                 certificate) against the broker's password file",
                self.username
                    .as_ref()
                    .map(|u| format!(" as {u:?}"))
                    .unwrap_or_else(|| " (no credentials set)".into())
            ),
            E::ConnectionRefused(code) => {
                format!("broker {broker} refused the connection: {code:?}")
            }
            E::Io(e) => format!("cannot reach broker {broker}: {e}"),
            other => format!("connection to broker {broker} failed: {other}"),
        }
    }
}

/// The last connection error of a link, in words, for logs and readiness details.
#[derive(Debug, Default)]
pub struct LastError(std::sync::Mutex<Option<String>>);

impl LastError {
    /// Records `why`; returns whether it differs from the error before (worth logging again).
    pub fn set(&self, why: String) -> bool {
        match self.0.lock() {
            Ok(mut last) => {
                let changed = last.as_deref() != Some(why.as_str());
                *last = Some(why);
                changed
            }
            Err(_) => true,
        }
    }

    /// The link is up again.
    pub fn clear(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = None;
        }
    }

    /// The last error, if the link is down because of one.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|l| l.clone())
    }
}

/// Creates a client and its event loop with Nagle's algorithm off: verdicts and frames are latency-bound
/// (with Nagle and delayed ACKs every round trip waited ~40 ms on Linux).
pub fn client(
    options: rumqttc::MqttOptions,
    capacity: usize,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, capacity);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// Disconnects cleanly: queues DISCONNECT and polls the event loop until it is sent (at most 500 ms).
pub async fn disconnect(client: &rumqttc::AsyncClient, eventloop: &mut rumqttc::EventLoop) {
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

/// Exponential backoff with full jitter, for reconnects and retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// Backoff starting at `base`, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Self {
            base,
            max,
            attempt: 0,
            seed,
        }
    }

    /// The next delay: uniform in [cap/2, cap] where cap = min(max, base × 2^attempt).
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter does not need a cryptographic generator.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        cap.mul_f64(0.5 + 0.5 * frac)
    }

    /// Call after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
