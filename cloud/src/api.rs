//! The gRPC review API (`proto/tierline/review/v1/review.proto`), served with tonic next to the standard gRPC
//! health service and server reflection (so `grpcurl` works without the `.proto` file).
//!
//! - Authentication: when a token is configured, every review call must carry `authorization: Bearer
//!   <token>`; a missing or wrong token gets `UNAUTHENTICATED`. Tokens are compared as SHA-256 digests with a
//!   constant-time fold, so neither the content nor the length of the configured token leaks through timing.
//!   Health and reflection stay open: probes and tooling need them and they reveal no frame data.
//! - Health: `tierline.review.v1.Review` (and the server as a whole, service `""`) is SERVING while the
//!   database answers, NOT_SERVING otherwise; checked every 5 s.
//! - WatchVerdicts polls the database, so it shows verdicts stored by every worker sharing it. It re-reads a
//!   5 s window behind the newest verdict it has sent and drops ones it sent already, so a verdict whose
//!   storage committed up to 5 s after its verdict time is still shown. `ListFrames` is the complete record.

use crate::config::ApiConfig;
use crate::store::{FrameFilter, FrameRow, ReviewRow, Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use thiserror::Error;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Generated protobuf and gRPC types of the review API.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("tierline.review.v1");

    /// Encoded descriptors of the review API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("review_descriptor");
}

use pb::review_server::{Review, ReviewServer};

/// Fully qualified name of the review service (for health checks).
pub const SERVICE_NAME: &str = "tierline.review.v1.Review";

/// Most frames in one `ListFrames` page.
pub const MAX_PAGE: u32 = 1000;

/// How far behind its newest verdict `WatchVerdicts` looks again.
const WATCH_WINDOW_US: i64 = 5_000_000;

/// Errors that stop the API server.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The listen address cannot be bound.
    #[error(
        "review API cannot listen on {addr}: {source}; set api.listen to a free address or api.enabled = false"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS files are unusable.
    #[error("review API TLS: cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] tierline_shared::config::ConfigError),
    /// tonic failed.
    #[error("review API server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection descriptors are broken (a build problem).
    #[error("review API reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The review service over a store.
#[derive(Clone)]
pub struct ReviewService {
    store: Store,
    watch_poll: Duration,
}

impl ReviewService {
    /// A service answering from `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            watch_poll: Duration::from_millis(250),
        }
    }
}

/// Checks `authorization: Bearer <token>` against the configured token.
#[derive(Clone)]
pub struct BearerAuth {
    digest: Option<[u8; 32]>,
}

impl BearerAuth {
    /// Requires `token` (or nothing, when `None`).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            digest: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
    }

    /// Whether a request with this `authorization` header value may pass.
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(expected) = &self.digest else {
            return true;
        };
        let presented = header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        let got: [u8; 32] = Sha256::digest(presented).into();
        // Constant time: fold every byte difference, decide once.
        let diff = expected
            .iter()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        header.is_some() && diff == 0
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if self.admits(header) {
            Ok(request)
        } else if header.is_none() {
            Err(Status::unauthenticated(
                "missing authorization header; send `authorization: Bearer <token>` (tierline-review --token)",
            ))
        } else {
            Err(Status::unauthenticated(
                "the bearer token is not accepted; check api.token on the server",
            ))
        }
    }
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        other => {
            tracing::warn!(error = %other, "Review API call failed in the store.");
            Status::unavailable(other.to_string())
        }
    }
}

fn reason_name(reason: i32) -> &'static str {
    match reason {
        1 => "suspect",
        2 => "audit",
        _ => "unspecified",
    }
}

fn encoding_name(encoding: i32) -> &'static str {
    match encoding {
        1 => "jpeg",
        2 => "png",
        _ => "unspecified",
    }
}

/// The protobuf form of a stored frame.
pub fn summary(r: &FrameRow) -> pb::FrameSummary {
    pb::FrameSummary {
        edge_id: r.edge_id.clone(),
        seq: r.seq as u64,
        frame_id: r.frame_id.clone(),
        site: r.site.clone(),
        line: r.line.clone(),
        camera_id: r.camera_id.clone(),
        capture_time_us: r.capture_time_us,
        reason: reason_name(r.reason).into(),
        edge_score: r.edge_score as f32,
        edge_model_version: r.edge_model_version.clone(),
        edge_local_action: r.edge_local_action.clone(),
        label: r.label.clone(),
        defective: r.defective,
        defect_score: r.defect_score as f32,
        cloud_model_version: r.cloud_model_version.clone(),
        verdict_time_us: r.verdict_time_us,
        disagreement: r.disagreement,
        review_label: r.review_label.clone(),
        deliveries: r.deliveries.max(0) as u64,
        has_image: r.has_image,
    }
}

fn page_token(r: &FrameRow) -> String {
    format!("{}:{}:{}", r.capture_time_us, r.seq, r.edge_id)
}

fn parse_page_token(token: &str) -> Result<Option<(i64, String, u64)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Status::invalid_argument(format!(
            "page_token {token:?} was not issued by this server; pass next_page_token unchanged"
        ))
    };
    let mut parts = token.splitn(3, ':');
    let t = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let seq = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let edge = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    Ok(Some((t, edge.to_string(), seq)))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::FrameSummary, Status>> + Send>>;

#[tonic::async_trait]
impl Review for ReviewService {
    async fn list_frames(
        &self,
        request: Request<pb::ListFramesRequest>,
    ) -> Result<Response<pb::ListFramesResponse>, Status> {
        let r = request.into_inner();
        if r.page_size > MAX_PAGE {
            return Err(Status::invalid_argument(format!(
                "page_size {} is above the maximum {MAX_PAGE}",
                r.page_size
            )));
        }
        let limit = if r.page_size == 0 { 50 } else { r.page_size };
        let filter = FrameFilter {
            edge_id: r.edge_id,
            line: r.line,
            label: r.label,
            since_us: r.since_us,
            until_us: r.until_us,
            disagreement: r.disagreement,
            unreviewed: r.unreviewed,
            limit,
            after: parse_page_token(&r.page_token)?,
        };
        let rows = self.store.list_frames(&filter).await.map_err(status)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => page_token(last),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListFramesResponse {
            frames: rows.iter().map(summary).collect(),
            next_page_token,
        }))
    }

    async fn get_frame(
        &self,
        request: Request<pb::GetFrameRequest>,
    ) -> Result<Response<pb::GetFrameResponse>, Status> {
        let r = request.into_inner();
        let Some((row, image, reviews)) = self
            .store
            .get_frame(&r.edge_id, r.seq)
            .await
            .map_err(status)?
        else {
            return Err(status(StoreError::NotFound {
                edge_id: r.edge_id,
                seq: r.seq,
            }));
        };
        Ok(Response::new(pb::GetFrameResponse {
            frame: Some(summary(&row)),
            image: image.unwrap_or_default(),
            image_encoding: encoding_name(row.image_encoding).into(),
            scores: row
                .scores()
                .into_iter()
                .map(|c| pb::ClassProbability {
                    class_name: c.class_name,
                    probability: c.probability,
                })
                .collect(),
            reviews: reviews.into_iter().map(review_pb).collect(),
        }))
    }

    async fn submit_review(
        &self,
        request: Request<pb::SubmitReviewRequest>,
    ) -> Result<Response<pb::SubmitReviewResponse>, Status> {
        let r = request.into_inner();
        if r.label.trim().is_empty() || r.label.len() > 64 {
            return Err(Status::invalid_argument(
                "label must be 1 to 64 characters, e.g. \"good\" or \"scratch\"",
            ));
        }
        if r.reviewer.len() > 128 || r.note.len() > 4096 {
            return Err(Status::invalid_argument(
                "reviewer is limited to 128 bytes and note to 4096 bytes",
            ));
        }
        let review = ReviewRow {
            label: r.label.trim().to_string(),
            defective: r.defective,
            reviewer: r.reviewer,
            note: r.note,
            time_us: tierline_shared::time::now_us(),
        };
        self.store
            .submit_review(&r.edge_id, r.seq, &review)
            .await
            .map_err(status)?;
        tracing::info!(edge_id = %r.edge_id, seq = r.seq, label = %review.label, reviewer = %review.reviewer, "Human review recorded.");
        Ok(Response::new(pb::SubmitReviewResponse {
            review: Some(review_pb(review)),
        }))
    }

    type WatchVerdictsStream = WatchStream;

    async fn watch_verdicts(
        &self,
        request: Request<pb::WatchVerdictsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let r = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let store = self.store.clone();
        let poll = self.watch_poll;
        tokio::spawn(async move {
            let start = tierline_shared::time::now_us() - i64::from(r.backlog_seconds) * 1_000_000;
            let mut newest = start;
            // Sent keys with their verdict time; forgotten once they fall behind the window.
            let mut sent: HashMap<(String, i64), i64> = HashMap::new();
            loop {
                // Read from the window behind the newest sent verdict, in pages.
                let mut since = (newest - WATCH_WINDOW_US).max(start);
                loop {
                    let rows = match store.verdicts_since(since, &r.edge_id, 500).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    };
                    let full = rows.len() == 500;
                    for row in &rows {
                        since = since.max(row.verdict_time_us - 1);
                        let key = (row.edge_id.clone(), row.seq);
                        if sent.insert(key, row.verdict_time_us).is_none() {
                            newest = newest.max(row.verdict_time_us);
                            if tx.send(Ok(summary(row))).await.is_err() {
                                return;
                            }
                        }
                    }
                    if !full {
                        break;
                    }
                }
                let horizon = newest - WATCH_WINDOW_US;
                sent.retain(|_, t| *t >= horizon);
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        });
        let stream: WatchStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(Response::new(stream))
    }

    async fn list_edges(
        &self,
        _request: Request<pb::ListEdgesRequest>,
    ) -> Result<Response<pb::ListEdgesResponse>, Status> {
        let edges = self.store.list_edges().await.map_err(status)?;
        Ok(Response::new(pb::ListEdgesResponse {
            edges: edges
                .into_iter()
                .map(|e| pb::Edge {
                    edge_id: e.edge_id,
                    site: e.site,
                    line: e.line,
                    online: e.online,
                    last_seen_us: e.last_seen_us,
                    backlog_frames: e.backlog_frames.max(0) as u64,
                    oldest_backlog_age_ms: e.oldest_backlog_age_ms.max(0) as u64,
                    edge_model_version: e.edge_model_version,
                })
                .collect(),
        }))
    }
}

fn review_pb(r: ReviewRow) -> pb::HumanReview {
    pb::HumanReview {
        label: r.label,
        defective: r.defective,
        reviewer: r.reviewer,
        note: r.note,
        time_us: r.time_us,
    }
}

/// The review API stage: bound before any stage runs, so its address is known (useful with port 0).
pub struct ReviewApi {
    config: ApiConfig,
    store: Store,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl ReviewApi {
    /// Binds `config.listen`.
    pub async fn bind(config: ApiConfig, store: Store) -> Result<Self, ApiError> {
        // Checked before anything listens.
        config.bearer_token()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ApiError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(Self {
            config,
            store,
            listener,
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the review API, health and reflection until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ApiError> {
        serve(self.config, self.store, self.listener, self.addr, shutdown).await
    }
}

async fn serve(
    config: ApiConfig,
    store: Store,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let token = config.bearer_token()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut builder = tonic::transport::Server::builder();
    let tls = if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let read = |p: &std::path::PathBuf| {
            std::fs::read(p).map_err(|source| ApiError::TlsFile {
                path: p.display().to_string(),
                source,
            })
        };
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        true
    } else {
        false
    };
    // Health follows the database: a review API that cannot read it is not serving.
    let probe = {
        let store = store.clone();
        let shutdown = shutdown.clone();
        async move {
            loop {
                let serving = store.ping().await.is_ok();
                for service in [SERVICE_NAME, ""] {
                    let status = if serving {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status(service, status).await;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let probe = tokio::spawn(probe);
    tracing::info!(addr = %addr, tls, auth = token.is_some(), "Review API listening.");
    if token.is_none() {
        tracing::warn!(addr = %addr, "Review API runs without a token: anyone who can reach it can read frames and label them.");
    }
    let review = tonic::service::interceptor::InterceptedService::new(
        ReviewServer::new(ReviewService::new(store))
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(64 << 20),
        BearerAuth::new(token.as_deref()),
    );
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(review)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled(),
        )
        .await;
    probe.abort();
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let auth = BearerAuth::new(Some("s3cret"));
        assert!(auth.admits(Some(b"Bearer s3cret")));
        assert!(!auth.admits(Some(b"Bearer s3cre")));
        assert!(!auth.admits(Some(b"Bearer s3cret ")));
        assert!(!auth.admits(Some(b"s3cret")));
        assert!(!auth.admits(None));
        let open = BearerAuth::new(None);
        assert!(open.admits(None));
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_named() {
        assert_eq!(
            parse_page_token("17:4:edge-a.1").unwrap(),
            Some((17, "edge-a.1".to_string(), 4))
        );
        assert_eq!(parse_page_token("").unwrap(), None);
        let e = parse_page_token("x").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("next_page_token"));
    }
}
