//! The decision sink: one JSON object per line, to stdout, a file, or an MQTT topic.
//!
//! **Durability.** Events arrive in batches. The sink writes each batch and, when the batch holds a write
//! barrier ([`Item::Barrier`]), makes it durable before answering the barrier: a file is fsynced
//! (`fdatasync`, once for the whole batch), stdout is flushed. The outbox deletes a record only after such a
//! barrier, so a record never leaves the outbox before the line its verdict caused is on disk.
//!
//! **A failing target degrades; it never stops the edge.** When a write or sync fails (a full disk, an I/O
//! error), the lines stay in memory in order, the `sink` readiness check turns red with the cause, barriers
//! stay unanswered (so the outbox keeps every record whose line is not yet written), and the write is retried
//! every [`RETRY`]. Line decisions go on being taken meanwhile. When the target accepts writes again, the
//! held lines are written in order and the check turns green. At most [`MAX_HELD`] bytes are held; beyond
//! that the sink stops taking events, the decision stage waits, and the camera queues drop their oldest
//! frames (counted as dropped by backpressure) rather than this stage losing a decided frame's line.
//!
//! **MQTT sink.** Lines are published with QoS 1 to the configured topic (which must be writable by the
//! edge under the broker's ACL; see `deploy/mosquitto/acl`). A barrier is answered only when the broker has
//! acknowledged every line before it (its PUBACK, [`crate::link::publisher::Lines`]): while the broker is
//! away, the outbox keeps the records whose lines are not yet delivered, and lines the MQTT client refuses
//! (its queue is full) are held and retried like a failing file. A line the broker refuses (its ACL denies
//! the topic) is not delivered: the sink turns unready with the reason and answers no later barrier, so
//! every record from then on stays in the outbox until the ACL is fixed and the edge restarted.

use crate::config::SinkConfig;
use crate::decisions::SinkItem as Item;
use crate::link::Publisher;
use crate::link::publisher::Lines;
use crate::stats::{self, EdgeStats};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// How often a failing target is tried again.
pub const RETRY: Duration = Duration::from_millis(500);
/// Most bytes of lines held while the target fails.
pub const MAX_HELD: usize = 64 << 20;
/// Most items taken per batch.
const BATCH: usize = 256;

/// Errors from the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink file cannot be opened.
    #[error("decision sink {path}: {source}; check the sink path and its directory's permissions")]
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
    /// Where an MQTT sink publishes.
    pub publisher: Publisher,
    /// Counters and the sink's health.
    pub stats: Arc<EdgeStats>,
}

/// Where lines are written.
enum Target {
    Stdout(tokio::io::Stdout),
    /// A file, written with blocking calls on the blocking pool: `tokio::fs::File` writes behind and drops
    /// the bytes of a write that fails (a full disk), which would lose lines.
    File(Arc<std::fs::File>),
    Mqtt(Publisher, String, Arc<Lines>),
    Null,
}

impl Target {
    /// Writes as much of `bytes` (whole lines) as the target takes; returns how many bytes it took.
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::Stdout(o) => o.write(bytes).await,
            Target::File(f) => {
                let (f, bytes) = (f.clone(), bytes.to_vec());
                blocking(move || std::io::Write::write(&mut &*f, &bytes)).await
            }
            Target::Mqtt(client, topic, _) => {
                // One message per line. Never await the client: that could wait on the event loop, which may
                // wait on this stage.
                let len = bytes
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |i| i + 1);
                let body = bytes[..len].strip_suffix(b"\n").unwrap_or(&bytes[..len]);
                client
                    .publish_line(topic, body.to_vec())
                    .map(|_| len)
                    .map_err(|e| std::io::Error::other(format!("decision line not sent: {e}")))
            }
            Target::Null => Ok(bytes.len()),
        }
    }

    /// Makes what was written durable.
    async fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Target::Stdout(o) => o.flush().await,
            Target::File(f) => {
                let f = f.clone();
                blocking(move || f.sync_data()).await
            }
            Target::Mqtt(..) | Target::Null => Ok(()),
        }
    }

    /// Whether the first `lines` lines written are durable once [`Target::sync`] returned: always, except
    /// for MQTT, where they must also be acknowledged by the broker. An error if the broker refused one.
    fn durable(&self, lines: u64) -> std::io::Result<bool> {
        match self {
            Target::Mqtt(_, _, acks) => acks.acked_below(lines).map_err(std::io::Error::other),
            _ => Ok(true),
        }
    }

    /// Resolves when more lines may have become durable (an MQTT acknowledgement); never for other targets.
    async fn progress(&self) {
        match self {
            Target::Mqtt(_, _, acks) => acks.changed().await,
            _ => std::future::pending().await,
        }
    }
}

/// Runs blocking file I/O on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(op)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

impl Sink {
    /// Writes events until the decision stage closes its side and every held line is written (or, when the
    /// target still fails at shutdown, until one last attempt failed).
    pub async fn run(self) -> Result<(), SinkError> {
        let Sink {
            cfg,
            items: mut rx,
            publisher,
            stats,
        } = self;
        let (mut target, name) = open(cfg, publisher).await?;
        let mut held = Held::default();
        let mut open = true;
        let mut batch = Vec::with_capacity(BATCH);
        while open || !held.is_empty() {
            let failing = stats.sink_failing.load(Ordering::Relaxed);
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH), if open && held.bytes < MAX_HELD => {
                    if n == 0 {
                        open = false;
                    }
                    for item in batch.drain(..) {
                        match item {
                            Item::Event(e) => {
                                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                                line.push(b'\n');
                                held.push(line);
                            }
                            Item::Barrier(done) => held.barrier(done),
                        }
                    }
                }
                _ = tokio::time::sleep(RETRY), if failing || !open || held.bytes >= MAX_HELD => {}
                _ = target.progress(), if !held.barriers.is_empty() => {}
            }
            match held.drain(&mut target).await {
                Ok(()) => {
                    if stats.sink_failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(sink = %name, "Decision sink writes again; held lines written.");
                    }
                    stats.sink_error.clear();
                    if !open && held.buf.is_empty() {
                        // Every line is written. Barriers still waiting for the broker's acknowledgements
                        // stay unanswered (the link has closed): their records stay in the outbox.
                        break;
                    }
                }
                Err(e) => {
                    stats::inc(&stats.sink_errors);
                    stats.sink_failing.store(true, Ordering::Relaxed);
                    let why = format!("{name}: {e}");
                    if stats.sink_error.set(why.clone()) {
                        tracing::error!(
                            sink = %name,
                            error = %e,
                            held_bytes = held.bytes,
                            "Decision sink cannot write; holding lines in memory and retrying. Free disk space or fix the sink target; outbox records stay until their lines are written."
                        );
                    }
                    if !open {
                        // Shutting down with a target that still fails: the held lines are lost, but every
                        // outbox record whose line is among them stays (its barrier was never answered).
                        tracing::error!(sink = %name, bytes = held.bytes, "Decision sink still failing at shutdown; held lines not written.");
                        break;
                    }
                }
            }
            stats
                .sink_held_bytes
                .store(held.bytes as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Opens the target.
async fn open(cfg: SinkConfig, publisher: Publisher) -> Result<(Target, String), SinkError> {
    Ok(match cfg {
        SinkConfig::Stdout => (Target::Stdout(tokio::io::stdout()), "stdout".into()),
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
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(io)?;
            let mut file = file.into_std().await;
            if !ends_cleanly {
                // Best effort: on a full disk the next line starts after the cut one.
                let _ = std::io::Write::write_all(&mut file, b"\n");
            }
            (Target::File(Arc::new(file)), name)
        }
        SinkConfig::Mqtt { topic } => {
            let name = format!("mqtt topic {topic}");
            let acks = publisher.lines().clone();
            (Target::Mqtt(publisher, topic, acks), name)
        }
        SinkConfig::Null => (Target::Null, "null".into()),
    })
}

/// Bytes of lines not yet written, in order, and the barriers among them.
#[derive(Default)]
struct Held {
    /// Unwritten bytes: whole lines, the first possibly written in part already.
    buf: Vec<u8>,
    /// Barriers, each with the number of bytes and of lines pushed before it (counted from the start).
    barriers: VecDeque<(u64, u64, oneshot::Sender<()>)>,
    /// Bytes pushed so far, and bytes written so far.
    pushed: u64,
    written: u64,
    /// Lines pushed so far.
    lines: u64,
    /// Bytes held (`buf.len()`).
    bytes: usize,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.barriers.is_empty()
    }

    fn push(&mut self, line: Vec<u8>) {
        self.pushed += line.len() as u64;
        self.lines += 1;
        self.buf.extend_from_slice(&line);
        self.bytes = self.buf.len();
    }

    fn barrier(&mut self, done: oneshot::Sender<()>) {
        self.barriers.push_back((self.pushed, self.lines, done));
    }

    /// Writes every held byte, syncs if a barrier waits, and answers the barriers now covered.
    async fn drain(&mut self, target: &mut Target) -> std::io::Result<()> {
        let result = self.write_all(target).await;
        self.bytes = self.buf.len();
        result?;
        if self.barriers.is_empty() {
            return Ok(());
        }
        target.sync().await?;
        while let Some((before, lines, _)) = self.barriers.front() {
            if *before > self.written {
                break;
            }
            match target.durable(*lines) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // A line before these barriers will never be delivered: they can never be answered.
                    // Dropping them tells the settle stage to keep those records (see `crate::settle`).
                    self.barriers.clear();
                    return Err(e);
                }
            }
            if let Some((_, _, done)) = self.barriers.pop_front() {
                let _ = done.send(());
            }
        }
        Ok(())
    }

    async fn write_all(&mut self, target: &mut Target) -> std::io::Result<()> {
        let mut at = 0;
        let result = loop {
            if at == self.buf.len() {
                break Ok(());
            }
            match target.write(&self.buf[at..]).await {
                Ok(0) => {
                    break Err(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "the target took no bytes",
                    ));
                }
                Ok(n) => at += n,
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..at);
        self.written += at as u64;
        result
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
