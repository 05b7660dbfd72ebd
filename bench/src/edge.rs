//! Measurement 1: edge pipeline throughput on 720p JPEG frames, against bare loops on the same model.
//!
//! Three figures per thread count, each on the prescreen model of `models/prescreen.toml`:
//! - **raw ONNX Runtime**: a loop of `session.run` on one pre-decoded, pre-normalized image (batch 1), one
//!   session per thread. The model alone.
//! - **bare loop, same work**: decode → resize → normalize (the shared preprocessor) → `session.run` →
//!   threshold, in a plain loop per thread with no queue, task or channel. What the pipeline's work costs.
//! - **edge pipeline**: the edge's own stages: frames handed in as a camera hands them (encoded bytes in a
//!   bounded queue), the prescreen stage with the model runner (`threads` workers, the edge's default
//!   batch), routing, grouped durable commits of suspects and audit samples to a real outbox, and the
//!   decision stage. Timed from the first frame handed in until the last is routed.
//!
//! The pipeline's target is ≥ 97 % of the bare loop's throughput (the same work), and the per-stage times
//! show where a frame's time goes.

use crate::common::{self, load_model, raw_session, run_raw};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tierline_edge::EdgeStats;
use tierline_edge::camera::CapturedFrame;
use tierline_edge::config::{DecisionConfig, OutboxConfig};
use tierline_edge::decisions::stage::{Decisions, LocalRecorder};
use tierline_edge::decisions::{Book, OfflineRules};
use tierline_edge::intake::Intake;
use tierline_edge::outbox::{Outbox, SeqAllocator};
use tierline_edge::prescreen::{self, Prescreen};
use tierline_shared::preprocess::Preprocessor;
use tierline_shared::runner::RunnerConfig;
use tierline_shared::wire::ImageEncoding;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Frame size of this measurement.
pub const WIDTH: u32 = 1280;
/// Frame height of this measurement.
pub const HEIGHT: u32 = 720;

/// Throughput at one thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRow {
    /// Inference threads (sessions).
    pub threads: usize,
    /// Bare `session.run` loop on pre-decoded input, images/s.
    pub raw_ort_fps: f64,
    /// Decode + resize + normalize + `session.run` in a plain loop, frames/s.
    pub bare_loop_fps: f64,
    /// The edge's pipeline stages, frames/s.
    pub pipeline_fps: f64,
    /// `pipeline_fps / bare_loop_fps`.
    pub pipeline_vs_bare: f64,
    /// `pipeline_fps / raw_ort_fps`.
    pub pipeline_vs_raw: f64,
    /// Share of the pipeline's frames the prescreen forwarded (each one a durable outbox commit the bare
    /// loop does not do).
    #[serde(default)]
    pub forwarded_share: f64,
}

/// Results of measurement 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeResults {
    /// Model name and version.
    pub model: String,
    /// Frame width × height.
    pub frame: String,
    /// Mean JPEG size, bytes.
    pub jpeg_bytes_mean: f64,
    /// Frames per configuration.
    pub frames: u64,
    /// Per-frame time of JPEG decode (single thread), ms.
    pub decode_ms: f64,
    /// Per-frame time of resize + normalize after decode (single thread), ms.
    pub resize_normalize_ms: f64,
    /// Per-frame time of a DCT-scaled decode to 1/4 size (`jpeg-decoder`, single thread), ms: the decode the
    /// model's input size would allow, skipping most of the inverse DCT.
    #[serde(default)]
    pub scaled_decode_ms: f64,
    /// The same decoder at 1/8 size, where each 8×8 block is reduced to its DC coefficient, ms: what is left is
    /// entropy decoding, which no scaling removes.
    #[serde(default)]
    pub entropy_floor_ms: f64,
    /// The same decoder at full size, ms (the scaled times are comparable with this, not with `decode_ms`).
    #[serde(default)]
    pub scaled_decoder_full_ms: f64,
    /// Per-frame time of `session.run` at batch 1 (single thread), ms.
    pub model_ms: f64,
    /// One row per thread count.
    pub rows: Vec<EdgeRow>,
    /// Model FLOPs per image.
    pub model_flops: f64,
    /// Operators in the model graph.
    pub model_operators: Vec<String>,
    /// Model GFLOP/s in the raw single-thread loop.
    pub model_gflops: f64,
    /// Estimated FP32 peak of one core, GFLOP/s.
    pub core_peak_gflops: f64,
    /// `model_gflops / core_peak_gflops`.
    pub fraction_of_peak: f64,
}

/// Audit sampling of the pipeline run: with the prescreen's suspects (about 1 % of these frames) it forwards
/// about 10 % of all frames, each a durable outbox commit the bare loop does not make. The measured share is
/// reported next to the result.
const AUDIT_RATE: f64 = 0.09;

/// Runs measurement 1 with `frames` frames per configuration.
pub async fn run(models: &Path, frames: u64, core_peak_gflops: f64) -> anyhow::Result<EdgeResults> {
    let (manifest, model) = load_model(models, "prescreen.toml")?;
    let flops = crate::flops::count(&model).context("counting the prescreen model's FLOPs")?;
    eprintln!("edge: rendering 720p frames");
    let jpegs = common::jpeg_frames(16, WIDTH, HEIGHT, 0.05)?;
    let jpeg_bytes_mean = jpegs.iter().map(|j| j.len() as f64).sum::<f64>() / jpegs.len() as f64;

    // Per-stage times, single thread.
    let mut pre = Preprocessor::new(manifest.input.clone());
    let mut tensor = vec![0.0f32; pre.tensor_len()];
    let reps = (frames / 4).clamp(8, 400);
    let started = Instant::now();
    for i in 0..reps {
        let img = image::load_from_memory(&jpegs[i as usize % jpegs.len()])?;
        let pixels = if manifest.input.channels == 1 {
            img.into_luma8().into_raw()
        } else {
            img.into_rgb8().into_raw()
        };
        std::hint::black_box(pixels);
    }
    let decode_ms = started.elapsed().as_secs_f64() * 1000.0 / reps as f64;
    let scaled = |factor: u16| -> anyhow::Result<f64> {
        let started = Instant::now();
        for i in 0..reps {
            let mut d = jpeg_decoder::Decoder::new(&jpegs[i as usize % jpegs.len()][..]);
            d.scale(WIDTH as u16 / factor, HEIGHT as u16 / factor)?;
            std::hint::black_box(d.decode()?);
        }
        Ok(started.elapsed().as_secs_f64() * 1000.0 / reps as f64)
    };
    let scaled_decoder_full_ms = scaled(1)?;
    let scaled_decode_ms = scaled(4)?;
    let entropy_floor_ms = scaled(8)?;
    let started = Instant::now();
    for i in 0..reps {
        pre.run(&jpegs[i as usize % jpegs.len()], &mut tensor)?;
    }
    let preprocess_ms = started.elapsed().as_secs_f64() * 1000.0 / reps as f64;

    let mut rows = Vec::new();
    let mut model_ms = 0.0;
    for threads in [1usize, 2] {
        let raw = raw_loop(&manifest, &model, &tensor, threads, frames * 4)?;
        if threads == 1 {
            model_ms = 1000.0 / raw;
        }
        let bare = bare_loop(&manifest, &model, &jpegs, threads, frames)?;
        let (pipe, forwarded_share) = pipeline(models, &manifest, &jpegs, threads, frames).await?;
        eprintln!(
            "edge: {threads} thread(s): raw {raw:.0}/s, bare loop {bare:.1}/s, pipeline {pipe:.1}/s ({:.0} % forwarded)",
            forwarded_share * 100.0
        );
        rows.push(EdgeRow {
            threads,
            raw_ort_fps: raw,
            bare_loop_fps: bare,
            pipeline_fps: pipe,
            pipeline_vs_bare: pipe / bare,
            pipeline_vs_raw: pipe / raw,
            forwarded_share,
        });
    }
    let raw1 = rows.first().map_or(0.0, |r| r.raw_ort_fps);
    let model_gflops = flops.flops_per_image * raw1 / 1e9;
    Ok(EdgeResults {
        model: format!("{} {}", manifest.name, manifest.version),
        frame: format!("{WIDTH}x{HEIGHT} grey JPEG q90"),
        jpeg_bytes_mean,
        frames,
        decode_ms,
        resize_normalize_ms: (preprocess_ms - decode_ms).max(0.0),
        scaled_decode_ms,
        entropy_floor_ms,
        scaled_decoder_full_ms,
        model_ms,
        rows,
        model_flops: flops.flops_per_image,
        model_operators: flops.operators,
        model_gflops,
        core_peak_gflops,
        fraction_of_peak: if core_peak_gflops > 0.0 {
            model_gflops / core_peak_gflops
        } else {
            0.0
        },
    })
}

/// Runs `work(thread, state)` on `threads` threads after each has set up its state, and returns the wall
/// time from the first thread starting its work to the last finishing.
fn timed_threads<S: Send>(
    threads: usize,
    setup: impl Fn() -> anyhow::Result<S> + Sync,
    work: impl Fn(usize, &mut S) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Duration> {
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = barrier.clone();
                let (setup, work) = (&setup, &work);
                scope.spawn(move || {
                    let state = setup();
                    barrier.wait();
                    let mut state = state?;
                    let start = Instant::now();
                    work(t, &mut state)?;
                    anyhow::Ok((start, Instant::now()))
                })
            })
            .collect();
        let mut span: Option<(Instant, Instant)> = None;
        for h in handles {
            let (start, end) = h
                .join()
                .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
            span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
        }
        let (start, end) = span.ok_or_else(|| anyhow::anyhow!("no benchmark threads"))?;
        Ok((end - start).max(Duration::from_nanos(1)))
    })
}

/// Bare `session.run` loop on one pre-decoded image, `total` runs split over `threads` sessions.
pub fn raw_loop(
    m: &tierline_shared::manifest::Manifest,
    model: &[u8],
    tensor: &[f32],
    threads: usize,
    total: u64,
) -> anyhow::Result<f64> {
    let per = total.div_ceil(threads as u64);
    let wall = timed_threads(
        threads,
        || {
            let mut s = raw_session(model)?;
            run_raw(&mut s, m, 1, tensor)?; // warm-up
            Ok(s)
        },
        |_, s| {
            for _ in 0..per {
                std::hint::black_box(run_raw(s, m, 1, tensor)?);
            }
            Ok(())
        },
    )?;
    Ok((per * threads as u64) as f64 / wall.as_secs_f64())
}

/// Decode + preprocess + `session.run` + threshold in a plain loop per thread.
fn bare_loop(
    m: &tierline_shared::manifest::Manifest,
    model: &[u8],
    jpegs: &[bytes::Bytes],
    threads: usize,
    total: u64,
) -> anyhow::Result<f64> {
    let per = total.div_ceil(threads as u64);
    let threshold = m.output.threshold;
    let wall = timed_threads(
        threads,
        || {
            let s = raw_session(model)?;
            let pre = Preprocessor::new(m.input.clone());
            let buf = vec![0.0f32; pre.tensor_len()];
            Ok((s, pre, buf))
        },
        |t, (s, pre, buf)| {
            let mut suspects = 0u64;
            for i in 0..per {
                let jpeg = &jpegs[(i as usize * threads + t) % jpegs.len()];
                pre.run(jpeg, buf)?;
                let out = run_raw(s, m, 1, buf)?;
                let scores = tierline_shared::runner::interpret(m, &out, 1)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                suspects += u64::from(scores[0].defect_score >= threshold);
            }
            std::hint::black_box(suspects);
            Ok(())
        },
    )?;
    Ok((per * threads as u64) as f64 / wall.as_secs_f64())
}

/// The edge's own stages on `total` frames; frames/s from the first frame handed in until the last routed.
async fn pipeline(
    models: &Path,
    m: &tierline_shared::manifest::Manifest,
    jpegs: &[bytes::Bytes],
    threads: usize,
    total: u64,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let defaults: tierline_edge::config::ModelConfig =
        serde_json::from_value(serde_json::json!({ "manifest": models.join("prescreen.toml") }))?;
    let max_batch = defaults.max_batch;
    // The edge serves its model through the supervisor wrapper; the supervisor itself is not started here
    // (its probes would compete with the measurement).
    let runner = tierline_shared::serving::ServedModel::load(
        &m.path,
        RunnerConfig {
            threads: std::num::NonZeroUsize::new(threads).context("threads")?,
            max_batch,
            ..RunnerConfig::default()
        },
        tierline_shared::serving::ProbeConfig::default(),
    )
    .await?;
    for j in jpegs.iter().take(4) {
        runner.score(j.clone()).await?; // warm-up
    }
    let outbox_cfg = OutboxConfig {
        path: dir.path().join("outbox.db"),
        ..OutboxConfig::default()
    };
    let outbox = Outbox::open(&outbox_cfg).await?;
    let stats = Arc::new(EdgeStats::default());
    let stop = CancellationToken::new();
    let concurrency = 2 * max_batch.get() * threads;
    let (frames_tx, frames_rx) = flume::bounded::<CapturedFrame>(concurrency);
    let (intake_tx, intake_rx) = mpsc::channel(256);
    let (decision_tx, decision_rx) = mpsc::channel(1024);
    let (sink_tx, mut sink_rx) = mpsc::channel(1024);
    let (local_tx, local_rx) = mpsc::unbounded_channel();
    let decision = DecisionConfig::default();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        Intake {
            outbox: outbox.clone(),
            frames: intake_rx,
            decisions: decision_tx.clone(),
            uplink: Arc::new(Notify::new()),
            stats: stats.clone(),
            commit_batch: outbox_cfg.commit_batch.get(),
        }
        .run(),
    );
    tasks.spawn(
        Decisions {
            book: Book::new(OfflineRules::from_config(&decision), decision.deadline),
            at_start: Vec::new(),
            inputs: decision_rx,
            sink: sink_tx,
            local: local_tx,
            stats: stats.clone(),
        }
        .run(stop.clone()),
    );
    tasks.spawn(async move { while sink_rx.recv().await.is_some() {} });
    tasks.spawn(
        LocalRecorder {
            outbox: outbox.clone(),
            decided: local_rx,
        }
        .run(),
    );
    let settings = prescreen::PrescreenSettings {
        edge_id: "edge-bench".into(),
        threshold: None,
        audit_rate: AUDIT_RATE,
        audit_seed: decision.audit_seed,
        concurrency,
        max_image_bytes: tierline_shared::wire::DEFAULT_MAX_MESSAGE_BYTES,
    };
    let jpegs = jpegs.to_vec();
    let camera: Arc<str> = Arc::from("cam-0");
    // The producer keeps a few batches' worth of frames ahead of scoring and no more: a camera faster than
    // the model would make the prescreen decide the surplus without scoring it (`frames_unscored`), which is
    // not the work the bare loop does.
    let ahead = 2 * concurrency as u64;
    let progress = stats.clone();
    let scored = move || {
        use tierline_edge::stats::get;
        // Passes include audit samples; suspects are counted once committed.
        get(&progress.frames_passed)
            + get(&progress.frames_suspect)
            + get(&progress.frames_unreadable)
    };
    let started = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..total {
            while i >= scored() + ahead {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let frame = CapturedFrame {
                camera_id: camera.clone(),
                captured_at: Instant::now(),
                capture_time_us: tierline_shared::time::now_us(),
                image: jpegs[i as usize % jpegs.len()].clone(),
                encoding: ImageEncoding::Jpeg,
                truth: None,
                origin: None,
                part_id: None,
                clock: tierline_edge::camera::CaptureClock::Arrival,
            };
            if frames_tx.send_async(frame).await.is_err() {
                break;
            }
        }
    });
    Prescreen {
        settings,
        model: runner,
        seqs: SeqAllocator::new(outbox.clone()),
        frames: frames_rx,
        intake: intake_tx,
        decisions: decision_tx,
        stats: stats.clone(),
    }
    .run(stop.clone())
    .await?;
    let elapsed = started.elapsed();
    producer.await?;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    outbox.close().await;
    anyhow::ensure!(
        tierline_edge::stats::get(&stats.frames_unreadable) == 0,
        "the prescreen could not read some benchmark frames"
    );
    anyhow::ensure!(
        tierline_edge::stats::get(&stats.frames_unscored) == 0,
        "the prescreen left {} frames unscored: the measurement offered more than it scores",
        tierline_edge::stats::get(&stats.frames_unscored)
    );
    let forwarded = tierline_edge::stats::get(&stats.frames_suspect)
        + tierline_edge::stats::get(&stats.frames_audit);
    Ok((
        total as f64 / elapsed.as_secs_f64(),
        forwarded as f64 / total.max(1) as f64,
    ))
}
