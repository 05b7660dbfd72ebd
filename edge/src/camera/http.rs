//! A small HTTP/1.1 client for cameras (hyper): one connection per request or stream, credentials from the
//! URL, Basic or Digest answered when the camera asks (`http-auth`, as `retina` does for RTSP).

use super::source::SourceError;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use url::Url;

/// Where to send a camera request, and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    host: String,
    port: u16,
    path: String,
    user: Option<(String, String)>,
    /// The URL with its password hidden, for logs and `/readyz`.
    pub shown: String,
}

impl Target {
    /// Parses an `http://[user:password@]host[:port]/path` camera URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let shown = tierline_shared::redact::redact(url);
        let parsed =
            Url::parse(url).map_err(|e| format!("camera URL {shown:?} is invalid: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "camera URL {shown:?}: only http:// is supported for HTTP cameras (put a TLS-terminating proxy in front of an https-only camera)"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("camera URL {shown:?} has no host"))?
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let mut path = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path = format!("{path}?{q}");
        }
        let user = (!parsed.username().is_empty()).then(|| {
            let decode = |s: &str| {
                url::form_urlencoded::parse(s.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .next()
                    .unwrap_or_default()
            };
            (
                decode(parsed.username()),
                parsed.password().map(decode).unwrap_or_default(),
            )
        });
        Ok(Self {
            host,
            port,
            path,
            user,
            shown,
        })
    }

    /// Sends `GET`, answering one authentication challenge if the camera asks. Connect and response
    /// headers within `timeout`; the body is the caller's to read (and time).
    pub async fn get(&self, timeout: Duration) -> Result<Response<Incoming>, SourceError> {
        let first = tokio::time::timeout(timeout, self.send(None))
            .await
            .map_err(|_| self.timed_out(timeout))??;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let Some((user, password)) = &self.user else {
            return Err(SourceError::Auth(format!(
                "{} asks for credentials (HTTP 401) and the URL has none",
                self.shown
            )));
        };
        let challenge = first
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let mut client = http_auth::PasswordClient::try_from(challenge.as_str()).map_err(|e| {
            SourceError::Protocol(format!(
                "{}: cannot answer the camera's authentication challenge {challenge:?}: {e}",
                self.shown
            ))
        })?;
        let answer = client
            .respond(&http_auth::PasswordParams {
                username: user,
                password,
                uri: &self.path,
                method: "GET",
                body: Some(&[]),
            })
            .map_err(|e| SourceError::Protocol(format!("{}: {e}", self.shown)))?;
        let second = tokio::time::timeout(timeout, self.send(Some(answer)))
            .await
            .map_err(|_| self.timed_out(timeout))??;
        if second.status() == StatusCode::UNAUTHORIZED || second.status() == StatusCode::FORBIDDEN {
            return Err(SourceError::Auth(format!(
                "{} refused the credentials (HTTP {})",
                self.shown,
                second.status().as_u16()
            )));
        }
        Ok(second)
    }

    fn timed_out(&self, timeout: Duration) -> SourceError {
        SourceError::Connection(format!("{}: no answer within {timeout:?}", self.shown))
    }

    async fn send(&self, authorization: Option<String>) -> Result<Response<Incoming>, SourceError> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                SourceError::Connection(format!("cannot connect to {}: {e}", self.shown))
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SourceError::Connection(format!("{}: {e}", self.shown)))?;
        // The connection task ends when the response body is dropped or the camera closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::get(self.path.as_str())
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::USER_AGENT, "tierline-edge");
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        } else if let Some((user, password)) = &self.user {
            // Most cameras take Basic on the first request; Digest-only cameras answer 401 and get Digest.
            use base64::Engine;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            req = req.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| SourceError::Protocol(format!("{}: {e}", self.shown)))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| SourceError::Connection(format!("{}: {e}", self.shown)))
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub async fn read_body(
    mut body: Incoming,
    limit: usize,
    shown: &str,
) -> Result<Bytes, SourceError> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| SourceError::Connection(format!("{shown}: body broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(SourceError::Protocol(format!(
                    "{shown}: response larger than {limit} bytes; is this a camera snapshot URL?"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The `Content-Type` of a response, lower-cased.
pub fn content_type(resp: &Response<Incoming>) -> String {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}
