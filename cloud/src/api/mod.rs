//! The gRPC review API (`proto/tierline/review/v1/review.proto`), served with tonic next to the standard gRPC
//! health service and server reflection (so `grpcurl` works without the `.proto` file).
//!
//! - Authentication: when tokens are configured, every review call must carry `authorization: Bearer
//!   <token>`; a missing or wrong token gets `UNAUTHENTICATED`. Tokens are compared as SHA-256 digests with a
//!   constant-time fold, against every configured token, so neither the content nor the length of a
//!   configured token leaks through timing. Health and reflection stay open: probes and tooling need them
//!   and they reveal no frame data.
//! - Identity: the token says who calls. Each `[[api.reviewers]]` entry has its own token, and a review is
//!   recorded under the name of the token's owner (the deprecated shared `api.token` records
//!   `api.token`; an API without tokens records `anonymous`). The `reviewer` field of a request may be left
//!   empty; if it names someone else than the token's owner the call is refused with `PERMISSION_DENIED`,
//!   so nobody can label under another reviewer's name and a client that believes otherwise finds out.
//! - Exposure: [`ReviewApi::bind`] refuses an address other than loopback without tokens and TLS unless
//!   `api.insecure` is set ([`ApiConfig::validate`]).
//! - Errors: store failures reach clients as a generic `UNAVAILABLE` text; the detail (which may name the
//!   database) goes to the log only.
//! - Health: `tierline.review.v1.Review` (and the server as a whole, service `""`) is SERVING while the
//!   database answers, NOT_SERVING otherwise; checked every 5 s.
//! - WatchVerdicts polls the database, so it shows verdicts stored by every worker sharing it. It re-reads a
//!   5 s window behind the newest verdict it has sent and drops ones it sent already, so a verdict whose
//!   storage committed up to 5 s after its verdict time is still shown. `ListFrames` is the complete record.

use crate::config::{ANONYMOUS_REVIEWER, ApiConfig, Credential};
use crate::store::{FrameFilter, FrameRow, ReviewRow, Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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

pub mod models;

use crate::audit::AuditConfig;
use crate::registry::{MAX_BUNDLE, Registry};
use models::ModelsService;
use pb::models_server::ModelsServer;
use pb::review_server::{Review, ReviewServer};
use tierline_shared::bundle::TrustedKeys;

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
    audit: AuditConfig,
}

impl ReviewService {
    /// A service answering from `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            watch_poll: Duration::from_millis(250),
            audit: AuditConfig::default(),
        }
    }

    /// The same service, estimating miss rates with `audit`'s window and target.
    pub fn with_audit(mut self, audit: AuditConfig) -> Self {
        self.audit = audit;
        self
    }
}

/// Who makes a review API call, as established by their bearer token. The authentication interceptor puts
/// it into every admitted request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewer(pub String);

/// Checks `authorization: Bearer <token>` against the configured tokens and names the caller.
#[derive(Clone)]
pub struct BearerAuth {
    /// SHA-256 digest of each token, with the reviewer it identifies. Empty: no authentication.
    tokens: Arc<[([u8; 32], String)]>,
}

impl BearerAuth {
    /// Requires one of `credentials` (or nothing, when empty: every caller is
    /// [`ANONYMOUS_REVIEWER`](crate::config::ANONYMOUS_REVIEWER)).
    pub fn new(credentials: &[Credential]) -> Self {
        Self {
            tokens: credentials
                .iter()
                .map(|c| {
                    (
                        Sha256::digest(c.token.as_bytes()).into(),
                        c.reviewer.clone(),
                    )
                })
                .collect(),
        }
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The reviewer a request with this `authorization` header value comes from, or `None` if it may not
    /// pass.
    pub fn identify(&self, header: Option<&[u8]>) -> Option<Reviewer> {
        if self.tokens.is_empty() {
            return Some(Reviewer(ANONYMOUS_REVIEWER.into()));
        }
        let presented = header?.strip_prefix(b"Bearer ")?;
        let got: [u8; 32] = Sha256::digest(presented).into();
        // Constant time: compare with every token, fold every byte difference, decide once per token.
        let mut found = None;
        for (expected, reviewer) in self.tokens.iter() {
            let diff = expected
                .iter()
                .zip(got.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(reviewer);
            }
        }
        found.map(|r| Reviewer(r.clone()))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let missing = header.is_none();
        match self.identify(header) {
            Some(reviewer) => {
                request.extensions_mut().insert(reviewer);
                Ok(request)
            }
            None if missing => Err(Status::unauthenticated(
                "missing authorization header; send `authorization: Bearer <your reviewer token>` (tierline-review --token)",
            )),
            None => Err(Status::unauthenticated(
                "the bearer token is not accepted; use the token the server's [[api.reviewers]] entry for you names",
            )),
        }
    }
}

/// A store failure as the client sees it. Only "not found" is specific; any other failure gets a fixed text,
/// because store errors carry the database's name, address and driver messages, which are for the log.
fn status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        other => {
            tracing::warn!(error = %other, "Review API call failed in the store.");
            Status::unavailable(
                "the verdict store is unavailable; try again later (the cause is in the cloud worker's log: \
                 \"Review API call failed in the store\")",
            )
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
        part_id: r.part_id.clone(),
        origin: r.origin.clone(),
        capture_clock: r.capture_clock.clone(),
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
            part_id: r.part_id,
            camera_id: r.camera_id,
            model_version: r.model_version,
            reviewed: r.reviewed,
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
            regions: row
                .regions()
                .into_iter()
                .map(|r| pb::Region {
                    x: r.x,
                    y: r.y,
                    width: r.width,
                    height: r.height,
                    class_name: r.class_name,
                    score: r.score,
                })
                .collect(),
        }))
    }

    async fn submit_review(
        &self,
        request: Request<pb::SubmitReviewRequest>,
    ) -> Result<Response<pb::SubmitReviewResponse>, Status> {
        let Some(reviewer) = request.extensions().get::<Reviewer>().cloned() else {
            return Err(Status::unauthenticated(
                "the call carries no reviewer identity; it must pass the review API's authentication",
            ));
        };
        let r = request.into_inner();
        if !r.reviewer.is_empty() && r.reviewer != reviewer.0 {
            return Err(Status::permission_denied(format!(
                "the request names reviewer {:?}, but its token belongs to {:?}; reviews are recorded under \
                 the token's owner: leave reviewer empty (tierline-review label without --reviewer) or use \
                 your own token",
                r.reviewer, reviewer.0
            )));
        }
        if r.label.trim().is_empty() || r.label.len() > 64 {
            return Err(Status::invalid_argument(
                "label must be 1 to 64 characters, e.g. \"good\" or \"scratch\"",
            ));
        }
        if r.note.len() > 4096 {
            return Err(Status::invalid_argument("note is limited to 4096 bytes"));
        }
        let review = ReviewRow {
            label: r.label.trim().to_string(),
            defective: r.defective,
            reviewer: reviewer.0,
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

    async fn audit_estimates(
        &self,
        request: Request<pb::AuditEstimatesRequest>,
    ) -> Result<Response<pb::AuditEstimatesResponse>, Status> {
        let r = request.into_inner();
        let window = if r.window_seconds == 0 {
            self.audit.window
        } else {
            Duration::from_secs(r.window_seconds)
        };
        let list = crate::audit::estimates(&self.store, window)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AuditEstimatesResponse {
            estimates: list
                .into_iter()
                .map(|e| pb::AuditEstimate {
                    miss_rate: e.rate(),
                    edge_id: e.edge_id,
                    model_version: e.model_version,
                    audits: e.audits,
                    misses: e.misses,
                    lower95: e.lower95,
                    upper95: e.upper95,
                })
                .collect(),
            miss_rate_target: self.audit.miss_rate_target,
            window_seconds: window.as_secs(),
        }))
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
    credentials: Vec<Credential>,
    store: Store,
    registry: Registry,
    audit: AuditConfig,
    rollouts: crate::rollout::RolloutConfig,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl ReviewApi {
    /// Checks `config` (an address other than loopback needs tokens and TLS, or `insecure`), reads the
    /// token files, and binds `config.listen`.
    pub async fn bind(config: ApiConfig, store: Store) -> Result<Self, ApiError> {
        // Checked before anything listens.
        config.validate()?;
        let credentials = config.credentials()?;
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
            credentials,
            registry: Registry::new(store.clone(), TrustedKeys::default()),
            audit: AuditConfig::default(),
            rollouts: crate::rollout::RolloutConfig::default(),
            store,
            listener,
            addr,
        })
    }

    /// Answers `AuditEstimates` with `audit`'s window and target (by default the defaults of `[audit]`).
    pub fn with_audit(mut self, audit: AuditConfig) -> Self {
        self.audit = audit;
        self
    }

    /// Starts rollouts with `rollouts`' stages (by default the defaults of `[rollouts]`).
    pub fn with_rollouts(mut self, rollouts: crate::rollout::RolloutConfig) -> Self {
        self.rollouts = rollouts;
        self
    }

    /// Serves the `Models` service over `registry` (by default one that trusts no signing key, so
    /// publishing is refused with the reason).
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the review API, health and reflection until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ApiError> {
        serve(self, shutdown).await
    }
}

async fn serve(api: ReviewApi, shutdown: CancellationToken) -> Result<(), ApiError> {
    let ReviewApi {
        config,
        credentials,
        store,
        registry,
        audit,
        rollouts,
        listener,
        addr,
    } = api;
    let auth = BearerAuth::new(&credentials);
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
    let reviewers: Vec<&str> = credentials.iter().map(|c| c.reviewer.as_str()).collect();
    tracing::info!(addr = %addr, tls, auth = auth.required(), reviewers = ?reviewers, "Review API listening.");
    if !auth.required() {
        tracing::warn!(addr = %addr, "Review API runs without tokens: anyone who can reach it can read frames and label them (as \"anonymous\"). Give each reviewer a token in [[api.reviewers]].");
    }
    if config.token.is_some() || config.token_file.is_some() {
        tracing::warn!(
            "api.token and api.token_file are deprecated: everyone with the shared token labels as \"{}\". Give each reviewer their own token in [[api.reviewers]].",
            crate::config::SHARED_TOKEN_REVIEWER
        );
    }
    if config.exposed() && !(auth.required() && tls) {
        tracing::warn!(addr = %addr, tls, auth = auth.required(), "Review API is reachable from other hosts without tokens or without TLS, because api.insecure = true.");
    }
    let review = tonic::service::interceptor::InterceptedService::new(
        ReviewServer::new(ReviewService::new(store).with_audit(audit))
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(64 << 20),
        auth.clone(),
    );
    // Operators only, when the API has tokens at all; bundles are large messages.
    let operators = auth
        .required()
        .then(|| config.operators.iter().cloned().collect());
    let models = tonic::service::interceptor::InterceptedService::new(
        ModelsServer::new(ModelsService::new(registry, operators).with_rollouts(rollouts))
            .max_decoding_message_size(MAX_BUNDLE as usize + (1 << 20))
            .max_encoding_message_size(4 << 20),
        auth.clone(),
    );
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(review)
        .add_service(models)
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

    fn credential(reviewer: &str, token: &str) -> Credential {
        Credential {
            reviewer: reviewer.into(),
            token: token.into(),
        }
    }

    #[test]
    fn bearer_tokens_must_match_exactly_and_name_their_owner() {
        let auth = BearerAuth::new(&[credential("ana", "s3cret"), credential("bo", "other")]);
        let who = |h: &[u8]| auth.identify(Some(h)).map(|r| r.0);
        assert_eq!(who(b"Bearer s3cret").as_deref(), Some("ana"));
        assert_eq!(who(b"Bearer other").as_deref(), Some("bo"));
        assert_eq!(who(b"Bearer s3cre"), None);
        assert_eq!(who(b"Bearer s3cret "), None);
        assert_eq!(who(b"s3cret"), None);
        assert_eq!(auth.identify(None), None);
        let open = BearerAuth::new(&[]);
        assert_eq!(
            open.identify(None),
            Some(Reviewer(ANONYMOUS_REVIEWER.into()))
        );
    }

    #[test]
    fn store_failures_do_not_show_the_database_to_clients() {
        let url =
            crate::store::redact("postgres://tierline:pw@db.internal:5432/tierline?password=pw");
        let failed = status(StoreError::Db {
            url: url.clone(),
            op: "list frames",
            source: sqlx::Error::Configuration(format!("bad URL {url}").into()),
        });
        assert_eq!(failed.code(), tonic::Code::Unavailable);
        for hidden in ["postgres", "db.internal", "tierline:", "5432", "bad URL"] {
            assert!(!failed.message().contains(hidden), "{}", failed.message());
        }
        let unsupported = status(StoreError::Unsupported("mysql://u@secret-host/db".into()));
        assert!(!unsupported.message().contains("secret-host"));
        let missing = status(StoreError::NotFound {
            edge_id: "edge-a".into(),
            seq: 4,
        });
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(missing.message().contains("edge-a/4"));
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
