//! The decision sink: one JSON object per line, to stdout, a file, or an MQTT topic.

use crate::config::SinkConfig;
use crate::decisions::SinkItem as Item;
use rumqttc::{AsyncClient, QoS};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Errors from the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink file cannot be opened or written.
    #[error("decision sink {path}: {source}; check the sink path and free disk space")]
    Io {
        /// Path or "stdout".
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
}

/// The sink stage.
pub struct Sink {
    /// Where lines go.
    pub cfg: SinkConfig,
    /// Events and barriers, from the decision stage.
    pub items: mpsc::Receiver<Item>,
    /// The MQTT client, for an MQTT sink.
    pub client: AsyncClient,
}

impl Sink {
    /// Writes events until the decision stage closes its side.
    pub async fn run(self) -> Result<(), SinkError> {
        let Sink {
            cfg,
            items: rx,
            client,
        } = self;
        run(cfg, rx, client).await
    }
}

async fn run(
    cfg: SinkConfig,
    mut rx: mpsc::Receiver<Item>,
    client: AsyncClient,
) -> Result<(), SinkError> {
    match cfg {
        SinkConfig::Stdout => write_lines(BufWriter::new(tokio::io::stdout()), "stdout", rx).await,
        SinkConfig::File { path } => {
            let name = path.display().to_string();
            let io = |source| SinkError::Io {
                path: name.clone(),
                source,
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await.map_err(io)?;
            }
            // After a crash the last line may be cut short: start on a fresh line so it stays one bad line.
            let ends_cleanly = last_byte(&path).await.is_none_or(|b| b == b'\n');
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(io)?;
            if !ends_cleanly {
                file.write_all(b"\n").await.map_err(io)?;
            }
            write_lines(BufWriter::new(file), &name, rx).await
        }
        SinkConfig::Mqtt { topic } => {
            // Best effort and never blocking: awaiting the client would stall line decisions while the broker
            // is away (and could wait on the event loop, which waits on this stage). Drops are logged.
            let mut dropped = 0u64;
            while let Some(item) = rx.recv().await {
                let Some(e) = item.into_event() else { continue };
                let line = serde_json::to_vec(&e).unwrap_or_default();
                if client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, false, line)
                    .is_err()
                {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(topic = %topic, dropped, "Decision sink topic unreachable; decisions not published there (the line must not rely on an MQTT sink during broker outages).");
                    }
                }
            }
            Ok(())
        }
        SinkConfig::Null => {
            while let Some(item) = rx.recv().await {
                let _ = item.into_event();
            }
            Ok(())
        }
    }
}

/// The last byte of a file, reading only that byte.
async fn last_byte(path: &std::path::Path) -> Option<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await.ok()?;
    f.seek(std::io::SeekFrom::End(-1)).await.ok()?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).await.ok()?;
    Some(b[0])
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut w: BufWriter<W>,
    name: &str,
    mut rx: mpsc::Receiver<Item>,
) -> Result<(), SinkError> {
    let io = |source| SinkError::Io {
        path: name.to_string(),
        source,
    };
    while let Some(item) = rx.recv().await {
        let Some(e) = item.into_event() else { continue };
        let mut line = serde_json::to_vec(&e).unwrap_or_default();
        line.push(b'\n');
        w.write_all(&line).await.map_err(io)?;
        // Every decision reaches the operating system before the next is taken: a crash of this process
        // loses at most the line being written (no fsync: a power loss may lose the last lines).
        w.flush().await.map_err(io)?;
    }
    w.flush().await.map_err(io)
}
