//! `tierline-review`: the review API from a terminal. Readable tables by default, `--json` for scripts.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tierline_cloud::api::pb::{self, review_client::ReviewClient};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Review frames judged by the Tierline cloud: list, show, label, and watch verdicts; list edges.
///
/// Exit codes: 0 success, 1 the server refused or failed the call, 2 bad arguments, 3 the server is
/// unreachable.
#[derive(Parser, Debug)]
#[command(name = "tierline-review", version)]
struct Args {
    /// Review API address.
    #[arg(
        long,
        env = "TIERLINE_REVIEW_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Bearer token (the server's api.token). Prefer the environment variable.
    #[arg(
        long,
        env = "TIERLINE_REVIEW_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// PEM CA certificate to verify the server with (for https:// servers with a private CA).
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// Print JSON (one document; `watch` prints one JSON object per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List judged frames, newest first.
    List {
        /// Only this edge.
        #[arg(long)]
        edge: Option<String>,
        /// Only this production line.
        #[arg(long)]
        line: Option<String>,
        /// Only this cloud label.
        #[arg(long)]
        label: Option<String>,
        /// Only frames captured within this long ago, e.g. 1h, 30m, 2days.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Only frames where the edge's local decision contradicts the cloud verdict.
        #[arg(long)]
        disagreement: bool,
        /// Only frames without a human review.
        #[arg(long)]
        unreviewed: bool,
        /// Frames per page (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue from a previous page (printed at the end of a full page).
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one frame: verdict, scores, reviews; optionally save its image.
    Show {
        /// Edge id.
        edge: String,
        /// Frame sequence number.
        seq: u64,
        /// Write the image to this file.
        #[arg(long)]
        image_out: Option<PathBuf>,
    },
    /// Record a human label for a frame.
    Label {
        /// Edge id.
        edge: String,
        /// Frame sequence number.
        seq: u64,
        /// The label, e.g. good, scratch.
        label: String,
        /// The part is defective (default: good).
        #[arg(long)]
        defective: bool,
        /// Who reviewed (default: $USER).
        #[arg(long, env = "USER")]
        reviewer: Option<String>,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List edges with presence, backlog and last-seen time.
    Edges,
    /// Print verdicts as they are stored, until interrupted.
    Watch {
        /// Only this edge.
        #[arg(long)]
        edge: Option<String>,
        /// Also print verdicts of the last N seconds.
        #[arg(long, default_value_t = 0)]
        backlog: u32,
    },
}

fn time(us: i64) -> String {
    if us <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_micros(us as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn ago(us: i64) -> String {
    if us <= 0 {
        return "never".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let secs = ((now - us).max(0) / 1_000_000) as u64;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

/// Prints rows as a table with a header, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, &w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn frame_json(f: &pb::FrameSummary) -> Value {
    json!({
        "edge_id": f.edge_id, "seq": f.seq, "frame_id": f.frame_id, "site": f.site, "line": f.line,
        "camera_id": f.camera_id, "capture_time_us": f.capture_time_us, "reason": f.reason,
        "edge_score": f.edge_score, "edge_model_version": f.edge_model_version,
        "edge_local_action": f.edge_local_action, "label": f.label, "defective": f.defective,
        "defect_score": f.defect_score, "cloud_model_version": f.cloud_model_version,
        "verdict_time_us": f.verdict_time_us, "disagreement": f.disagreement,
        "review_label": f.review_label, "deliveries": f.deliveries, "has_image": f.has_image,
    })
}

fn frame_cells(f: &pb::FrameSummary) -> Vec<String> {
    vec![
        f.edge_id.clone(),
        f.seq.to_string(),
        time(f.capture_time_us),
        f.line.clone(),
        f.reason.clone(),
        format!("{:.2}", f.edge_score),
        f.label.clone(),
        format!("{:.2}", f.defect_score),
        if f.edge_local_action.is_empty() {
            "-".into()
        } else {
            f.edge_local_action.clone()
        },
        if f.disagreement { "yes" } else { "" }.into(),
        if f.review_label.is_empty() {
            "-".into()
        } else {
            f.review_label.clone()
        },
    ]
}

const FRAME_HEADER: [&str; 11] = [
    "EDGE", "SEQ", "CAPTURED", "LINE", "REASON", "EDGE", "LABEL", "DEFECT", "LOCAL", "DISAGREE",
    "REVIEW",
];

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

type Client = ReviewClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

async fn connect(args: &Args) -> anyhow::Result<Client> {
    let mut endpoint = Endpoint::from_shared(args.server.clone())
        .with_context(|| {
            format!(
                "--server {:?} is not a URL like http://host:50051",
                args.server
            )
        })?
        .connect_timeout(Duration::from_secs(5));
    if args.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read --ca-cert {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::Error::new(Unreachable(format!(
            "cannot reach the review API at {}: {e}; is tierline-cloud running with [api] enabled?",
            args.server
        )))
    })?;
    let header = match &args.token {
        Some(t) => Some(
            MetadataValue::try_from(format!("Bearer {t}"))
                .context("--token contains characters not allowed in a header")?,
        ),
        None => None,
    };
    Ok(ReviewClient::with_interceptor(channel, Auth(header)).max_decoding_message_size(64 << 20))
}

#[derive(Debug)]
struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut client = connect(&args).await?;
    match &args.command {
        Command::List {
            edge,
            line,
            label,
            since,
            disagreement,
            unreviewed,
            limit,
            page_token,
        } => {
            if !(1..=1000).contains(limit) {
                bail!("--limit must be between 1 and 1000");
            }
            let since_us = since.map_or(0, |d| {
                tierline_shared::time::now_us() - d.as_micros() as i64
            });
            let r = client
                .list_frames(pb::ListFramesRequest {
                    edge_id: edge.clone().unwrap_or_default(),
                    line: line.clone().unwrap_or_default(),
                    label: label.clone().unwrap_or_default(),
                    since_us,
                    until_us: 0,
                    disagreement: *disagreement,
                    unreviewed: *unreviewed,
                    page_size: *limit,
                    page_token: page_token.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            if args.json {
                println!(
                    "{}",
                    json!({
                        "frames": r.frames.iter().map(frame_json).collect::<Vec<_>>(),
                        "next_page_token": r.next_page_token,
                    })
                );
            } else {
                let rows: Vec<_> = r.frames.iter().map(frame_cells).collect();
                table(&FRAME_HEADER, &rows);
                println!("{} frames", rows.len());
                if !r.next_page_token.is_empty() {
                    println!("more: --page-token {}", r.next_page_token);
                }
            }
        }
        Command::Show {
            edge,
            seq,
            image_out,
        } => {
            let r = client
                .get_frame(pb::GetFrameRequest {
                    edge_id: edge.clone(),
                    seq: *seq,
                })
                .await?
                .into_inner();
            let f = r.frame.unwrap_or_default();
            if let Some(path) = image_out {
                if r.image.is_empty() {
                    bail!(
                        "frame {edge}/{seq} has no stored image (retention removed it or images are not kept)"
                    );
                }
                std::fs::write(path, &r.image)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if args.json {
                let mut v = frame_json(&f);
                v["image_encoding"] = json!(r.image_encoding);
                v["image_bytes"] = json!(r.image.len());
                v["scores"] = json!(
                    r.scores
                        .iter()
                        .map(|s| json!({"class": s.class_name, "probability": s.probability}))
                        .collect::<Vec<_>>()
                );
                v["reviews"] = json!(
                    r.reviews
                        .iter()
                        .map(|x| json!({"label": x.label, "defective": x.defective, "reviewer": x.reviewer, "note": x.note, "time_us": x.time_us}))
                        .collect::<Vec<_>>()
                );
                println!("{v}");
            } else {
                let rows = vec![
                    vec!["frame".into(), f.frame_id.clone()],
                    vec![
                        "where".into(),
                        format!("{}/{} camera {}", f.site, f.line, f.camera_id),
                    ],
                    vec!["captured".into(), time(f.capture_time_us)],
                    vec![
                        "edge".into(),
                        format!(
                            "{} score {:.3} (model {})",
                            f.reason, f.edge_score, f.edge_model_version
                        ),
                    ],
                    vec![
                        "edge local action".into(),
                        if f.edge_local_action.is_empty() {
                            "- (waited for the cloud)".into()
                        } else {
                            f.edge_local_action.clone()
                        },
                    ],
                    vec![
                        "cloud verdict".into(),
                        format!(
                            "{} defective={} score {:.3} (model {}) at {}",
                            f.label,
                            f.defective,
                            f.defect_score,
                            f.cloud_model_version,
                            time(f.verdict_time_us)
                        ),
                    ],
                    vec!["disagreement".into(), f.disagreement.to_string()],
                    vec!["deliveries".into(), f.deliveries.to_string()],
                    vec![
                        "image".into(),
                        if r.image.is_empty() {
                            "not stored".into()
                        } else {
                            format!("{} bytes {}", r.image.len(), r.image_encoding)
                        },
                    ],
                ];
                table(&["FIELD", "VALUE"], &rows);
                println!();
                let scores: Vec<_> = r
                    .scores
                    .iter()
                    .map(|s| vec![s.class_name.clone(), format!("{:.4}", s.probability)])
                    .collect();
                table(&["CLASS", "PROBABILITY"], &scores);
                if !r.reviews.is_empty() {
                    println!();
                    let reviews: Vec<_> = r
                        .reviews
                        .iter()
                        .map(|x| {
                            vec![
                                time(x.time_us),
                                x.reviewer.clone(),
                                x.label.clone(),
                                x.defective.to_string(),
                                x.note.clone(),
                            ]
                        })
                        .collect();
                    table(&["REVIEWED", "BY", "LABEL", "DEFECTIVE", "NOTE"], &reviews);
                }
            }
        }
        Command::Label {
            edge,
            seq,
            label,
            defective,
            reviewer,
            note,
        } => {
            let r = client
                .submit_review(pb::SubmitReviewRequest {
                    edge_id: edge.clone(),
                    seq: *seq,
                    label: label.clone(),
                    defective: *defective,
                    reviewer: reviewer.clone().unwrap_or_default(),
                    note: note.clone(),
                })
                .await?
                .into_inner();
            let review = r.review.unwrap_or_default();
            if args.json {
                println!(
                    "{}",
                    json!({"edge_id": edge, "seq": seq, "label": review.label, "defective": review.defective, "reviewer": review.reviewer, "time_us": review.time_us})
                );
            } else {
                println!(
                    "labelled {edge}/{seq} as {} (defective={}) by {}",
                    review.label,
                    review.defective,
                    if review.reviewer.is_empty() {
                        "-"
                    } else {
                        &review.reviewer
                    }
                );
            }
        }
        Command::Edges => {
            let r = client
                .list_edges(pb::ListEdgesRequest {})
                .await?
                .into_inner();
            if args.json {
                let edges: Vec<_> = r
                    .edges
                    .iter()
                    .map(|e| {
                        json!({"edge_id": e.edge_id, "site": e.site, "line": e.line, "online": e.online,
                               "last_seen_us": e.last_seen_us, "backlog_frames": e.backlog_frames,
                               "oldest_backlog_age_ms": e.oldest_backlog_age_ms,
                               "edge_model_version": e.edge_model_version})
                    })
                    .collect();
                println!("{}", json!({ "edges": edges }));
            } else {
                let rows: Vec<_> = r
                    .edges
                    .iter()
                    .map(|e| {
                        vec![
                            e.edge_id.clone(),
                            e.site.clone(),
                            e.line.clone(),
                            if e.online { "online" } else { "offline" }.into(),
                            ago(e.last_seen_us),
                            e.backlog_frames.to_string(),
                            format!("{:.1}s", e.oldest_backlog_age_ms as f64 / 1000.0),
                            e.edge_model_version.clone(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "EDGE",
                        "SITE",
                        "LINE",
                        "STATE",
                        "LAST SEEN",
                        "BACKLOG",
                        "OLDEST",
                        "MODEL",
                    ],
                    &rows,
                );
            }
        }
        Command::Watch { edge, backlog } => {
            let mut stream = client
                .watch_verdicts(pb::WatchVerdictsRequest {
                    edge_id: edge.clone().unwrap_or_default(),
                    backlog_seconds: *backlog,
                })
                .await?
                .into_inner();
            if !args.json {
                table(&FRAME_HEADER, &[]);
            }
            while let Some(f) = stream.message().await? {
                if args.json {
                    println!("{}", frame_json(&f));
                } else {
                    println!("{}", frame_cells(&f).join("  "));
                }
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                let hint = match status.code() {
                    tonic::Code::Unauthenticated => {
                        " (pass --token or set TIERLINE_REVIEW_TOKEN to the server's api.token)"
                    }
                    tonic::Code::NotFound => " (list frames with: tierline-review list)",
                    _ => "",
                };
                eprintln!("error: {:?}: {}{hint}", status.code(), status.message());
                ExitCode::from(1)
            } else if e.downcast_ref::<Unreachable>().is_some() {
                eprintln!("error: {e:#}");
                ExitCode::from(3)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    }
}
