//! The bundle server: plain HTTP downloads of published bundles for edges and workers.
//!
//! ```text
//!  GET /v1/bundles/<sha256>            the archive; `Range: bytes=a-b` (one range) answers 206 with that part
//!  GET /v1/bundles/<sha256>/statement  the operator's signed statement (JSON)
//!  GET /v1/targets                     what each target should run, with each bundle's signed statement
//! ```
//!
//! Nothing here needs a secret or grants one: bundles are public to the plant network and verified by the
//! downloader against the operator's key, so a tampered response is refused there.

use crate::store::{Store, StoreError};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Why the bundle server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address cannot be bound.
    #[error(
        "bundle server cannot listen on {addr}: {source}; set registry.listen to a free address, or remove it"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("bundle server: {0}")]
    Serve(std::io::Error),
}

/// The bundle server, bound and ready to serve.
pub struct BundleServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
}

impl BundleServer {
    /// Binds `listen` to serve the bundles of `store`.
    pub async fn bind(listen: SocketAddr, store: Store) -> Result<Self, ServerError> {
        let bind_err = |source| ServerError::Bind {
            addr: listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            addr,
            router: router(store, MAX_DOWNLOADS),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        tracing::info!(addr = %self.addr, "Bundle server listening: http://{}/v1/targets", self.addr);
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(ServerError::Serve)
    }
}

/// Bundle downloads served at once: each holds its range in memory (up to a whole bundle), so this bounds
/// the memory downloads take. Others are answered 503 with `Retry-After`, and edges try again at their next
/// check.
pub const MAX_DOWNLOADS: usize = 4;

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    store: Store,
    downloads: Arc<Semaphore>,
}

/// The bundle server's routes over `store`, serving at most `max_downloads` bundle downloads at once.
pub fn router(store: Store, max_downloads: usize) -> Router {
    let shared = Shared {
        store,
        downloads: Arc::new(Semaphore::new(max_downloads)),
    };
    Router::new()
        .route("/v1/bundles/{sha256}", get(bundle))
        .route("/v1/bundles/{sha256}/statement", get(statement))
        .route("/v1/targets", get(targets))
        .with_state(shared)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn unavailable(e: StoreError) -> Response {
    tracing::warn!(error = %e, "Bundle server request failed in the store.");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the registry's store is unavailable; retry later\n",
    )
}

fn valid_sha(sha: &str) -> bool {
    sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A requested byte range, inclusive, within a `size`-byte object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) `Range` header: the whole object.
    Whole,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// A range that starts past the end (416).
    Unsatisfiable,
}

/// Parses a `Range` header for one range of a `size`-byte object (RFC 9110 §14.1.2). Several ranges, or
/// units other than bytes, get the whole object, which the RFC allows.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => last.parse::<u64>().ok().map(|n| {
            if n == 0 {
                None
            } else {
                Some((size.saturating_sub(n), size.saturating_sub(1)))
            }
        }),
        (false, _) => first.parse::<u64>().ok().and_then(|start| {
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                last.parse::<u64>().ok()
            }?;
            (end >= start).then_some(Some((start, end.min(size.saturating_sub(1)))))
        }),
        (true, true) => None,
    };
    match parsed {
        None => ByteRange::Whole,
        Some(None) => ByteRange::Unsatisfiable,
        Some(Some((start, _))) if start >= size => ByteRange::Unsatisfiable,
        Some(Some((start, end))) => ByteRange::Part { start, end },
    }
}

async fn bundle(
    State(Shared { store, downloads }): State<Shared>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !valid_sha(&sha) {
        return text(
            StatusCode::BAD_REQUEST,
            "a bundle is named by the 64 lowercase hex digits of its SHA-256\n",
        );
    }
    let row = match store.bundle(&sha).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no bundle {sha} is published\n"),
            );
        }
        Err(e) => return unavailable(e),
    };
    let size = row.size.max(0) as u64;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, start, len) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, size),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    let Ok(_permit) = downloads.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{MAX_DOWNLOADS} bundle downloads are under way; retry shortly\n"),
        )
            .into_response();
    };
    let bytes = match store.bundle_bytes(&sha, start, len).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no bundle {sha} is published\n"),
            );
        }
        Err(e) => return unavailable(e),
    };
    let mut response = (status, bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

async fn statement(
    State(Shared { store, .. }): State<Shared>,
    Path(sha): Path<String>,
) -> Response {
    if !valid_sha(&sha) {
        return text(
            StatusCode::BAD_REQUEST,
            "a bundle is named by the 64 lowercase hex digits of its SHA-256\n",
        );
    }
    match store.bundle(&sha).await {
        Ok(Some(row)) => ([(header::CONTENT_TYPE, "application/json")], row.signed).into_response(),
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            format!("no bundle {sha} is published\n"),
        ),
        Err(e) => unavailable(e),
    }
}

/// One target as `/v1/targets` lists it and `tierline/targets/v1/<target>/<name>` announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetView {
    /// `edges/<group>`, `edge/<edge id>` or `workers/<group>`.
    pub target: String,
    /// Model name.
    pub name: String,
    /// The bundle to run.
    pub sha256: String,
    /// The bundle it ran before.
    pub previous: Option<String>,
    /// The last change was a rollback.
    pub rollback: bool,
    /// When the target last changed, µs: an edge follows the newer of its own target and its group's.
    pub changed_us: i64,
    /// The bundle's signed statement, so a downloader needs no second request to verify it.
    pub signed: String,
}

/// Every target with its bundle's signed statement.
pub async fn target_views(store: &Store) -> Result<Vec<TargetView>, StoreError> {
    let rows = store.model_targets().await?;
    let mut out = Vec::with_capacity(rows.len());
    for t in rows {
        let signed = store
            .bundle(&t.sha256)
            .await?
            .map(|r| r.signed)
            .unwrap_or_default();
        out.push(TargetView {
            target: t.target,
            name: t.name,
            sha256: t.sha256,
            previous: t.previous,
            rollback: t.rollback,
            changed_us: t.changed_us,
            signed,
        });
    }
    Ok(out)
}

async fn targets(State(Shared { store, .. }): State<Shared>) -> Response {
    let out = match target_views(&store).await {
        Ok(out) => out,
        Err(e) => return unavailable(e),
    };
    match serde_json::to_vec(&out) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn downloads_beyond_the_limit_are_told_to_retry() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = Store::open(&url, true).await.unwrap();
        let data = vec![7u8; 100];
        let sha = tierline_shared::bundle::archive::sha256_hex(&data);
        store
            .publish_bundle(
                crate::store::NewBundle {
                    sha256: &sha,
                    name: "prescreen",
                    version: "1",
                    sequence: 1,
                    key_id: "k",
                    signed: "{}",
                    data: &data,
                },
                "ops",
                1,
            )
            .await
            .unwrap()
            .unwrap();
        let get = |limit: usize| {
            let request = axum::http::Request::get(format!("/v1/bundles/{sha}"))
                .body(axum::body::Body::empty())
                .unwrap();
            router(store.clone(), limit).oneshot(request)
        };
        assert_eq!(get(1).await.unwrap().status(), StatusCode::OK);
        let busy = get(0).await.unwrap();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use ByteRange::*;
        let r = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Whole);
        assert_eq!(r("bytes=0-99"), Part { start: 0, end: 99 });
        assert_eq!(
            r("bytes=500-"),
            Part {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=900-5000"),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(r("bytes=-5000"), Part { start: 0, end: 999 });
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        // Malformed or several ranges: the whole object.
        for h in [
            "bytes=5-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=-",
        ] {
            assert_eq!(r(h), Whole, "{h}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
