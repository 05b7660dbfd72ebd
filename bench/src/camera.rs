//! Measurement 8: cameras. 1080p H.264 and MJPEG at 30 fps from the local RTSP server
//! (`tests/camera/rtsp_server.py`, pre-encoded so the server costs little), into the real edge binary pinned
//! to one core (`taskset -c 0`; the server runs on the other). Per stream count: 1, 2, … until more than 1 %
//! of the frames the server sent get no line decision in the window. Beside it, FFmpeg decoding the same
//! stream on the same core (`ffmpeg -benchmark … -f null -`): decode alone, the baseline of the ratio.
//!
//! The oracle is the decision log (frames captured in the window that got a decision, per second, against
//! the 30 per second each stream sends)
//! and `/proc/<pid>/stat` (the edge's CPU time), not the edge's own counters.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Stream rate, frames per second.
const FPS: f64 = 30.0;

/// One run: `streams` cameras on one core.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraRow {
    /// `h264` or `mjpeg`.
    pub codec: String,
    /// Streams at once.
    pub streams: u32,
    /// Frames per second the streams send together.
    pub sent_fps: f64,
    /// Frames per second with a line decision.
    pub decided_fps: f64,
    /// Frames without a decision, %.
    pub lost_pct: f64,
    /// The edge's CPU use, in cores (at most 1: it is pinned to one).
    pub edge_cores: f64,
    /// Edge CPU per decided frame, ms (decode, colour conversion and JPEG encoding for H.264, prescreen,
    /// decision).
    pub cpu_ms_per_frame: f64,
}

/// FFmpeg decoding one stream on one core.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// `h264` or `mjpeg`.
    pub codec: String,
    /// Frames decoded.
    pub frames: u64,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
    /// Frames per CPU second: decode alone.
    pub fps_per_core: f64,
}

/// Results of measurement 8.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraResults {
    /// Frame size.
    pub size: String,
    /// Seconds each run counts over.
    pub window_s: f64,
    /// Every run.
    pub rows: Vec<CameraRow>,
    /// FFmpeg per codec.
    pub baselines: Vec<Baseline>,
}

impl CameraResults {
    /// Most streams of `codec` one core sustained with under 1 % lost.
    pub fn sustained(&self, codec: &str) -> u32 {
        self.rows
            .iter()
            .filter(|r| r.codec == codec && r.lost_pct < 1.0)
            .map(|r| r.streams)
            .max()
            .unwrap_or(0)
    }
}

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(root: &Path, frames: &Path, pre_encode: u32) -> anyhow::Result<Server> {
    let mut child = Command::new("taskset")
        .args(["-c", "1", "/usr/bin/python3"])
        .arg(root.join("tests/camera/rtsp_server.py"))
        .args([
            "--frames",
            &frames.display().to_string(),
            "--fps",
            "30",
            "--port",
            "0",
        ])
        .args(["--pre-encode", &pre_encode.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tests/camera/rtsp_server.py (scripts/setup installs GStreamer)")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("RTSP server did not start: {line:?}"))?;
    Ok(Server(child, port))
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

fn decision_lines(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"event\":\"decision\""))
                .count() as u64
        })
        .unwrap_or(0)
}

/// Runs the edge binary on core 0 with `streams` cameras on `url`; counts over `window`.
fn run_edge(
    edge_bin: &Path,
    root: &Path,
    dir: &Path,
    broker: u16,
    url: &str,
    streams: u32,
    window: Duration,
) -> anyhow::Result<(f64, f64)> {
    let run = dir.join(format!("run-{}", streams));
    std::fs::create_dir_all(&run)?;
    let cameras: String = (0..streams)
        .map(|i| {
            format!("[[camera]]\nid = \"cam-{i}\"\nkind = \"rtsp\"\nurl = \"{url}\"\nfps = 30\n")
        })
        .collect();
    let config = format!(
        "[edge]\nid = \"bench\"\n[mqtt]\nport = {broker}\n[model]\nmanifest = {:?}\nthreads = 1\n\
         [decision]\ndeadline = \"1s\"\naudit_rate = 0.0\n[outbox]\npath = {:?}\n\
         [sink]\nkind = \"file\"\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n{cameras}",
        root.join("models/prescreen.toml"),
        run.join("outbox.db"),
        run.join("decisions.jsonl"),
    );
    let cfg = run.join("edge.toml");
    std::fs::write(&cfg, config)?;
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(edge_bin)
        .arg("--config")
        .arg(&cfg)
        .current_dir(root)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", edge_bin.display()))?;
    let pid = child.id();
    let log = run.join("decisions.jsonl");
    // Warm-up: every stream playing and the queue in its steady state.
    std::thread::sleep(Duration::from_secs(5));
    let (d0, c0, t0) = (decision_lines(&log), cpu_seconds(pid), Instant::now());
    std::thread::sleep(window);
    let (d1, c1, secs) = (
        decision_lines(&log),
        cpu_seconds(pid),
        t0.elapsed().as_secs_f64(),
    );
    let _ = child.kill();
    let _ = child.wait();
    if d1 <= d0 {
        bail!("the edge decided nothing in {secs:.1} s with {streams} streams of {url}");
    }
    Ok(((d1 - d0) as f64 / secs, (c1 - c0) / secs))
}

fn ffmpeg_baseline(codec: &str, url: &str, secs: u32) -> anyhow::Result<Baseline> {
    let out = Command::new("taskset")
        .args([
            "-c",
            "0",
            "ffmpeg",
            "-hide_banner",
            "-benchmark",
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
        ])
        .args(["-t", &secs.to_string(), "-f", "null", "-"])
        .output()
        .context("running ffmpeg (scripts/setup installs it)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let grab = |key: &str| -> Option<f64> {
        let at = err.rfind(key)? + key.len();
        let rest = err[at..].trim_start();
        let num: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        num.parse().ok()
    };
    let frames = grab("frame=").context("ffmpeg printed no frame count")? as u64;
    let cpu_s = grab("utime=").unwrap_or(0.0) + grab("stime=").unwrap_or(0.0);
    if cpu_s <= 0.0 {
        bail!("ffmpeg printed no CPU time: {err}");
    }
    Ok(Baseline {
        codec: codec.into(),
        frames,
        cpu_s,
        fps_per_core: frames as f64 / cpu_s,
    })
}

/// Runs measurement 8. `window` is each run's counting time; `max_streams` bounds the search.
pub fn run(window: Duration, max_streams: u32) -> anyhow::Result<CameraResults> {
    let root = crate::repo_root();
    let edge_bin: PathBuf = std::env::current_exe()?
        .parent()
        .context("bench binary has no directory")?
        .join("tierline-edge");
    if !edge_bin.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build --release -p tierline-edge`",
            edge_bin.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    // 1080p synthetic surfaces (10 % with a defect), as baseline 4:2:0 JPEGs so the MJPEG mount sends them
    // as they are.
    let raw = tmp.path().join("raw");
    tierline_tests::camera::write_frames(&raw, 30, 21, 0.1, 1920, 1080);
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames)?;
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(raw.join("frame-%05d.jpg"))
        .args(["-pix_fmt", "yuvj420p", "-huffman", "default", "-q:v", "3"])
        .arg(frames.join("frame-%05d.jpg"))
        .status()
        .context("running ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg could not convert the frames");
    }
    let server = start_server(&root, &frames, 4)?;
    let broker = tierline_tests::Mosquitto::start(tmp.path());
    let mut rows = Vec::new();
    let mut baselines = Vec::new();
    for codec in ["h264", "mjpeg"] {
        let url = format!("rtsp://127.0.0.1:{}/{codec}", server.1);
        baselines.push(ffmpeg_baseline(
            codec,
            &url,
            window.as_secs().max(4) as u32,
        )?);
        for streams in 1..=max_streams {
            let (decided_fps, cores) = run_edge(
                &edge_bin,
                &root,
                tmp.path(),
                broker.port(),
                &url,
                streams,
                window,
            )?;
            let sent_fps = FPS * f64::from(streams);
            let lost_pct = (100.0 * (1.0 - decided_fps / sent_fps)).max(0.0);
            eprintln!(
                "camera: {codec} × {streams}: {decided_fps:.1} of {sent_fps:.0} frames/s decided ({lost_pct:.2} % lost), edge {:.0} % of a core",
                cores * 100.0
            );
            rows.push(CameraRow {
                codec: codec.into(),
                streams,
                sent_fps,
                decided_fps,
                lost_pct,
                edge_cores: cores,
                cpu_ms_per_frame: 1000.0 * cores / decided_fps,
            });
            if lost_pct >= 1.0 {
                break;
            }
        }
    }
    Ok(CameraResults {
        size: "1920x1080".into(),
        window_s: window.as_secs_f64(),
        rows,
        baselines,
    })
}
