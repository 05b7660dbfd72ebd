//! MQTT connection settings shared by edge and cloud, and the MQTT 5 client types both tiers use.
//!
//! Both tiers speak MQTT 5: the broker's PUBACK carries a reason code, so a message it refuses (ACL denial,
//! quota) is known as refused instead of looking delivered, and its CONNACK states the largest packet it
//! takes, so a message too large for it is refused before it is sent.

use serde::Deserialize;
use std::time::Duration;

pub use rumqttc::Outgoing;
pub use rumqttc::v5::mqttbytes::QoS;
pub use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Filter, LastWill, Packet, PubAck, PubAckReason, Publish,
    SubscribeReasonCode,
};
pub use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};

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

/// The shortest keep-alive the MQTT client takes.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

impl MqttConfig {
    /// Checks values that parsing cannot: the keep-alive is 5 s to 65535 s (the MQTT client refuses less,
    /// the protocol more).
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.keep_alive < MIN_KEEP_ALIVE || self.keep_alive > Duration::from_secs(65_535) {
            return Err(crate::config::ConfigError::Field {
                field: "mqtt.keep_alive".into(),
                problem: format!(
                    "is {:?}; use 5s to 65535s (a dead link is noticed within about twice this)",
                    self.keep_alive
                ),
            });
        }
        Ok(())
    }

    /// MQTT 5 options for a client with `client_id`. Incoming packets may be as large as the message limit
    /// plus room for the topic and header (the broker is told so in CONNECT); outgoing packets are limited
    /// by what the broker states in CONNACK. Fails only if the TLS files are unusable.
    pub fn options(&self, client_id: &str) -> Result<MqttOptions, crate::tls::TlsError> {
        let mut o = MqttOptions::new(client_id, &self.host, self.port);
        // Clamped as well as validated: the client panics on less than 5 s.
        o.set_keep_alive(
            self.keep_alive
                .clamp(MIN_KEEP_ALIVE, Duration::from_secs(65_535)),
        );
        let packet = u32::try_from(self.max_message_bytes + 1024).unwrap_or(u32::MAX);
        o.set_max_packet_size(Some(packet));
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
    pub fn explain(&self, error: &ConnectionError) -> String {
        use {ConnectReturnCode as Code, ConnectionError as E};
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
pub fn client(options: MqttOptions, capacity: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options, capacity);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.options.set_network_options(net);
    (client, eventloop)
}

/// Polls the event loop, noticing a connection that makes no progress. The event loop yields an event at
/// least every keep-alive (it pings whatever the traffic), so a poll that takes longer than the keep-alive
/// plus 2 s is stuck: a write into a path that drops everything blocks once the socket buffers are full,
/// and the MQTT 5 client sets no timeout on it (the kernel would give up only after many minutes). The
/// connection is then dropped (its unacknowledged messages kept for the next one) and an error returned,
/// so the caller reconnects as after any other failure.
pub async fn poll(eventloop: &mut EventLoop) -> Result<Event, ConnectionError> {
    let budget = eventloop.options.keep_alive() + Duration::from_secs(2);
    match tokio::time::timeout(budget, eventloop.poll()).await {
        Ok(polled) => polled,
        Err(_) => {
            eventloop.clean();
            Err(ConnectionError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no progress for {budget:?} (a write is blocked: the path to the broker drops packets); reconnecting"
                ),
            )))
        }
    }
}

/// Disconnects cleanly: queues DISCONNECT and polls the event loop until it is sent (at most 500 ms).
pub async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

/// Why the broker refused a message it acknowledged, or `None` if it took it. "No matching subscribers"
/// counts as taken: the broker had no one to give it to at that moment, which the sender's resend timer
/// covers; it is not a verdict on the message.
pub fn refusal(ack: &PubAck) -> Option<&'static str> {
    match ack.reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
        PubAckReason::NotAuthorized => {
            Some("not authorized (the broker's ACL denies this topic to this login)")
        }
        PubAckReason::TopicNameInvalid => Some("topic name invalid"),
        PubAckReason::QuotaExceeded => Some("quota exceeded"),
        PubAckReason::PayloadFormatInvalid => Some("payload format invalid"),
        PubAckReason::PacketIdentifierInUse => Some("packet identifier in use"),
        PubAckReason::ImplementationSpecificError => Some("implementation-specific error"),
        PubAckReason::UnspecifiedError => Some("unspecified error"),
    }
}

/// The size on the wire of a PUBLISH of `payload_len` bytes on `topic` (QoS 1, no properties), to compare
/// with the largest packet the broker takes.
pub fn publish_size(topic: &str, payload_len: usize) -> usize {
    // Fixed header (1 byte + up to 4 bytes of remaining length), topic length and topic, packet id, and
    // one byte of (empty) properties length.
    let remaining = 2 + topic.len() + 2 + 1 + payload_len;
    1 + match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    } + remaining
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
    fn publish_size_matches_the_encoder() {
        for len in [0usize, 1, 100, 127, 16_000, 16_383, 200_000, 3_000_000] {
            let topic = "tierline/v1/plant-1/line-3/edge-a/frames";
            let p = Publish::new(topic, QoS::AtLeastOnce, vec![0u8; len], None);
            let mut buf = bytes::BytesMut::new();
            let mut p = p;
            p.pkid = 1;
            p.write(&mut buf).unwrap();
            assert_eq!(publish_size(topic, len), buf.len(), "payload {len}");
        }
    }

    #[test]
    fn a_keep_alive_the_client_would_refuse_is_a_config_error() {
        let mut c = MqttConfig::default();
        assert!(c.validate().is_ok());
        c.keep_alive = Duration::from_secs(1);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("mqtt.keep_alive") && e.contains("5s"), "{e}");
        // Options never panic, validated or not.
        assert_eq!(c.options("x").unwrap().keep_alive(), MIN_KEEP_ALIVE);
    }

    #[test]
    fn only_refusals_are_refusals() {
        let mut ack = PubAck::new(1, None);
        assert_eq!(refusal(&ack), None);
        ack.reason = PubAckReason::NoMatchingSubscribers;
        assert_eq!(refusal(&ack), None);
        ack.reason = PubAckReason::NotAuthorized;
        assert!(refusal(&ack).unwrap().contains("ACL"));
    }

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
