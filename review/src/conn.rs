//! The connection to the review API: the channel (with TLS and a private CA for `https://` servers) and the
//! bearer token sent with every call.

use crate::error::Unreachable;
use crate::pb::models_client::ModelsClient as ModelsGrpc;
use crate::pb::review_client::ReviewClient;
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// A review API client that authenticates every call.
pub type Client = ReviewClient<InterceptedService<Channel, Auth>>;

/// A client of the model registry (`Models` service) that authenticates every call.
pub type ModelsClient = ModelsGrpc<InterceptedService<Channel, Auth>>;

/// Connects to `server` (5 s timeout). An `https://` server is verified with the PEM CA in `ca_cert` when
/// given. A server that cannot be reached is an [`Unreachable`] error.
pub async fn connect(
    server: &str,
    token: Option<&str>,
    ca_cert: Option<&Path>,
) -> anyhow::Result<Client> {
    let (channel, auth) = channel(server, token, ca_cert).await?;
    Ok(ReviewClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20))
}

/// Like [`connect`], for the model registry; bundles are sent in one message, so the request limit is
/// the registry's.
pub async fn connect_models(
    server: &str,
    token: Option<&str>,
    ca_cert: Option<&Path>,
) -> anyhow::Result<ModelsClient> {
    let (channel, auth) = channel(server, token, ca_cert).await?;
    Ok(ModelsGrpc::with_interceptor(channel, auth)
        .max_encoding_message_size(257 << 20)
        .max_decoding_message_size(4 << 20))
}

async fn channel(
    server: &str,
    token: Option<&str>,
    ca_cert: Option<&Path>,
) -> anyhow::Result<(Channel, Auth)> {
    let mut endpoint = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("--server {server:?} is not a URL like http://host:50051"))?
        .connect_timeout(Duration::from_secs(5));
    if server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read --ca-cert {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::Error::new(Unreachable(format!(
            "cannot reach the review API at {server}: {e}; is tierline-cloud running with [api] enabled?"
        )))
    })?;
    let header = match token {
        Some(t) => Some(
            MetadataValue::try_from(format!("Bearer {t}"))
                .context("--token contains characters not allowed in a header")?,
        ),
        None => None,
    };
    Ok((channel, Auth(header)))
}
