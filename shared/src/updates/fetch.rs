//! Talking to the cloud's bundle server over HTTP/1.1 (hyper): the targets, and bundle downloads that resume
//! where a cut-off one stopped (`Range: bytes=<have>-`).

use super::UpdateError;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest wait for a connection and the response headers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while a body arrives.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest targets document read.
const MAX_TARGETS: usize = 4 << 20;

/// One target as the bundle server lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetView {
    /// `edges/<group>`, `edge/<edge id>` or `workers/<group>`.
    pub target: String,
    /// Model name.
    pub name: String,
    /// The bundle to run.
    pub sha256: String,
    /// The last change was a rollback.
    pub rollback: bool,
    /// When the target last changed, µs (0 from a registry that does not say).
    #[serde(default)]
    pub changed_us: i64,
    /// The bundle's signed statement.
    pub signed: String,
}

/// The bundle server at `base` (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Server {
    host: String,
    port: u16,
    shown: String,
}

impl Server {
    /// Parses `http://host[:port][/]`.
    pub fn parse(base: &str) -> Result<Self, UpdateError> {
        let bad = |problem: &str| UpdateError::Fetch(format!("updates.url {base:?}: {problem}"));
        let url = url::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" {
            return Err(bad("only http:// is supported"));
        }
        Ok(Self {
            host: url.host_str().ok_or_else(|| bad("no host"))?.to_string(),
            port: url.port_or_known_default().unwrap_or(80),
            shown: format!(
                "http://{}:{}",
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(80)
            ),
        })
    }

    async fn get(
        &self,
        path: &str,
        range_from: Option<u64>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, UpdateError> {
        let what = format!("{}{path}", self.shown);
        let send = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| UpdateError::Fetch(format!("cannot connect to {what}: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| UpdateError::Fetch(format!("{what}: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = Request::get(path)
                .header(header::HOST, format!("{}:{}", self.host, self.port))
                .header(header::USER_AGENT, "tierline-updates");
            if let Some(from) = range_from {
                req = req.header(header::RANGE, format!("bytes={from}-"));
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| UpdateError::Fetch(format!("{what}: {e}")))?;
            sender
                .send_request(req)
                .await
                .map_err(|e| UpdateError::Fetch(format!("{what}: {e}")))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, send)
            .await
            .map_err(|_| {
                UpdateError::Fetch(format!("{what}: no answer within {CONNECT_TIMEOUT:?}"))
            })?
    }

    /// The targets the registry lists.
    pub async fn targets(&self) -> Result<Vec<TargetView>, UpdateError> {
        let resp = self.get("/v1/targets", None).await?;
        if resp.status() != StatusCode::OK {
            return Err(UpdateError::Fetch(format!(
                "{}/v1/targets answered HTTP {}",
                self.shown,
                resp.status().as_u16()
            )));
        }
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(frame) = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| UpdateError::Fetch(format!("{}/v1/targets stalled", self.shown)))?
        {
            let frame =
                frame.map_err(|e| UpdateError::Fetch(format!("{}/v1/targets: {e}", self.shown)))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > MAX_TARGETS {
                    return Err(UpdateError::Fetch(format!(
                        "{}/v1/targets is larger than {MAX_TARGETS} bytes",
                        self.shown
                    )));
                }
                out.extend_from_slice(&data);
            }
        }
        serde_json::from_slice(&out).map_err(|e| {
            UpdateError::Fetch(format!(
                "{}/v1/targets is not the registry's target list: {e}",
                self.shown
            ))
        })
    }

    /// Downloads bundle `sha256` of `size` bytes into `part`, continuing from what `part` already holds,
    /// and returns the whole archive. The caller checks it against the signed statement.
    pub async fn download(
        &self,
        sha256: &str,
        size: u64,
        part: &Path,
    ) -> Result<Vec<u8>, UpdateError> {
        let io = |e: std::io::Error| UpdateError::Io {
            path: part.to_path_buf(),
            source: e,
        };
        if let Some(parent) = part.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let mut have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if have > size {
            have = 0;
        }
        let path = format!("/v1/bundles/{sha256}");
        if have < size {
            let resp = self.get(&path, (have > 0).then_some(have)).await?;
            let append = match resp.status() {
                StatusCode::PARTIAL_CONTENT => true,
                StatusCode::OK => false,
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    tokio::fs::remove_file(part).await.map_err(io)?;
                    return Err(UpdateError::Fetch(format!(
                        "{}{path}: the partial download does not fit the bundle; starting over at the next check",
                        self.shown
                    )));
                }
                other => {
                    return Err(UpdateError::Fetch(format!(
                        "{}{path} answered HTTP {}",
                        self.shown,
                        other.as_u16()
                    )));
                }
            };
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(part)
                .await
                .map_err(io)?;
            let mut body = resp.into_body();
            let mut written = if append { have } else { 0 };
            loop {
                let next = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
                    .await
                    .map_err(|_| UpdateError::Fetch(format!("{}{path} stalled", self.shown)));
                let frame = match next {
                    Ok(Some(Ok(frame))) => frame,
                    Ok(None) => break,
                    // What arrived is kept: the next attempt resumes after it.
                    Ok(Some(Err(e))) => {
                        file.sync_all().await.map_err(io)?;
                        return Err(UpdateError::Fetch(format!("{}{path}: {e}", self.shown)));
                    }
                    Err(e) => {
                        file.sync_all().await.map_err(io)?;
                        return Err(e);
                    }
                };
                if let Ok(data) = frame.into_data() {
                    written += data.len() as u64;
                    if written > size {
                        drop(file);
                        tokio::fs::remove_file(part).await.map_err(io)?;
                        return Err(UpdateError::Fetch(format!(
                            "{}{path} sent more than the {size} bytes its statement names",
                            self.shown
                        )));
                    }
                    file.write_all(&data).await.map_err(io)?;
                }
            }
            file.sync_all().await.map_err(io)?;
        }
        tokio::fs::read(part).await.map_err(io)
    }
}
