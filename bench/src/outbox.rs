//! Measurement 3: durable enqueue into the edge outbox (`edge/src/outbox.rs`) with 50 KB frames under the
//! shipped sync policy (`sync = "full"`: every commit is fsynced).
//!
//! Two ways frames arrive: saturated (each commit holds `commit_batch` frames, as the intake stage groups
//! them when frames queue up) and one frame per commit (frames arriving one at a time). A frame counts as
//! enqueued when its commit returned.

use crate::common::{Percentiles, histogram, record};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tierline_edge::config::OutboxConfig;
use tierline_edge::outbox::{Outbox, Record};
use tierline_shared::wire::{ForwardReason, ImageEncoding};

/// Frame size of this measurement.
pub const FRAME_BYTES: usize = 50 * 1000;

/// One commit size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Frames per commit.
    pub frames_per_commit: usize,
    /// Frames enqueued.
    pub frames: u64,
    /// Durable enqueues per second.
    pub frames_per_s: f64,
    /// Image MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Latency of one commit.
    pub commit: Percentiles,
    /// Bytes this process caused to be written to storage per image byte enqueued (`write_bytes` of
    /// `/proc/self/io`; 0 when unreadable): the write amplification of the outbox.
    #[serde(default)]
    pub written_per_image_byte: f64,
}

/// Bytes this process has caused to be written to storage so far (`write_bytes` in `/proc/self/io`).
fn written_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// Results of measurement 3.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxResults {
    /// Sync policy.
    pub sync: String,
    /// Frame size, bytes.
    pub frame_bytes: usize,
    /// One row per commit size.
    pub rows: Vec<OutboxRow>,
    /// The disk's own synced write rate in the same directory, MB/s: the same bytes written in chunks of one
    /// batched commit, each followed by `fdatasync` (what `dd oflag=dsync bs=<chunk>` measures).
    #[serde(default)]
    pub disk_synced_mb_per_s: f64,
}

/// Writes `total` bytes into a new file under `dir` in `chunk`-byte writes, each followed by `fdatasync`;
/// returns MB/s.
fn disk_synced_rate(dir: &std::path::Path, chunk: usize, total: usize) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = dir.join("dsync.bin");
    let mut file = std::fs::File::create(&path)?;
    let block = crate::common::noise(chunk, 0x2545_F491_4F6C_DD1D);
    let started = Instant::now();
    let mut written = 0;
    while written < total {
        file.write_all(&block)?;
        file.sync_data()?;
        written += chunk;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / secs / 1e6)
}

fn frame(seq: u64, image: &[u8]) -> Record {
    Record {
        seq,
        frame_id: tierline_shared::wire::frame_id("edge-bench", seq),
        camera_id: "cam-0".into(),
        capture_time_us: tierline_shared::time::now_us(),
        reason: ForwardReason::Suspect,
        score: 0.9,
        encoding: ImageEncoding::Jpeg as i32,
        image: image.to_vec(),
        attempts: 0,
        local_action: None,
        image_sha256: tierline_shared::wire::image_sha256(image),
        provenance: Default::default(),
        edge_label: String::new(),
    }
}

/// Runs measurement 3 with `frames` frames at the batched commit size (a tenth as many one per commit).
pub async fn run(frames: u64) -> anyhow::Result<OutboxResults> {
    let defaults = OutboxConfig::default();
    let image = crate::common::noise(FRAME_BYTES, 0x9E37_79B9_7F4A_7C15);
    let mut rows = Vec::new();
    let disk = {
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let chunk = defaults.commit_batch.get() * FRAME_BYTES;
        disk_synced_rate(dir.path(), chunk, frames as usize * FRAME_BYTES)?
    };
    eprintln!("outbox: the disk's synced write rate: {disk:.1} MB/s");
    for (per_commit, total) in [
        (defaults.commit_batch.get(), frames),
        (1, (frames / 10).max(10)),
    ] {
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let outbox = Outbox::open(&OutboxConfig {
            path: dir.path().join("outbox.db"),
            max_bytes: tierline_shared::config::ByteSize(u64::MAX / 2),
            ..OutboxConfig::default()
        })
        .await?;
        let mut seqs = outbox.reserve_seqs().await?;
        let mut h = histogram();
        let mut done = 0u64;
        let written_before = written_bytes();
        let started = Instant::now();
        while done < total {
            let n = (per_commit as u64).min(total - done);
            let mut batch = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let seq = match seqs.next() {
                    Some(s) => s,
                    None => {
                        seqs = outbox.reserve_seqs().await?;
                        seqs.next().unwrap_or_default()
                    }
                };
                batch.push(frame(seq, &image));
            }
            let t = Instant::now();
            outbox.append(&batch).await?;
            record(&mut h, t.elapsed());
            done += n;
        }
        let secs = started.elapsed().as_secs_f64();
        outbox.close().await;
        let written = match (written_before, written_bytes()) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / (total as f64 * FRAME_BYTES as f64),
            _ => 0.0,
        };
        let row = OutboxRow {
            frames_per_commit: per_commit,
            frames: total,
            frames_per_s: total as f64 / secs,
            mb_per_s: (total as f64 * FRAME_BYTES as f64) / secs / 1e6,
            commit: Percentiles::from_us(&h),
            written_per_image_byte: written,
        };
        eprintln!(
            "outbox: {per_commit} per commit: {:.0} frames/s, {:.1} MB/s, commit p99 {:.2} ms, {:.2} bytes written per image byte",
            row.frames_per_s, row.mb_per_s, row.commit.p99_ms, row.written_per_image_byte
        );
        rows.push(row);
    }
    Ok(OutboxResults {
        sync: format!("{:?}", defaults.sync).to_lowercase(),
        frame_bytes: FRAME_BYTES,
        rows,
        disk_synced_mb_per_s: disk,
    })
}
