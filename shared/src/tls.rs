//! TLS for MQTT connections, with rustls (ring provider): a CA to trust the broker, and optionally a client
//! certificate and key for brokers that authenticate clients by certificate.
//!
//! ```toml
//! [mqtt.tls]
//! ca = "/etc/tierline/tls/ca.pem"            # PEM, one or more CA certificates
//! cert = "/etc/tierline/tls/edge-01.pem"     # optional client certificate chain (PEM)
//! key = "/etc/tierline/tls/edge-01.key"      # its private key (PEM, PKCS#8, PKCS#1 or SEC1)
//! ```
//!
//! The broker's certificate must name the configured `mqtt.host` (DNS name or IP address).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// TLS settings of an MQTT connection (`[mqtt.tls]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) the broker's certificate must chain to.
    pub ca: PathBuf,
    /// PEM file with the client certificate chain (for certificate authentication).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM file with the client's private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Why the TLS settings are unusable.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("mqtt.tls.{field}: cannot use {path}: {problem}")]
    File {
        /// Which setting.
        field: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Only one of cert and key is set.
    #[error("mqtt.tls: set both cert and key for client certificates, or neither")]
    HalfIdentity,
    /// rustls refused the combination.
    #[error("mqtt.tls: {0}")]
    Rustls(String),
}

fn file_err(field: &'static str, path: &Path, problem: impl ToString) -> TlsError {
    TlsError::File {
        field,
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

impl TlsConfig {
    /// The rustls client configuration these settings describe.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        let cas = read_certs("ca", &self.ca)?;
        for ca in cas {
            roots.add(ca).map_err(|e| {
                file_err("ca", &self.ca, format!("not a usable CA certificate: {e}"))
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
        match (&self.cert, &self.key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = read_certs("cert", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| file_err("key", key, format!("no PEM private key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsError::Rustls(format!("client certificate and key: {e}")))
            }
            _ => Err(TlsError::HalfIdentity),
        }
    }
}

fn read_certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(field, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(field, path, e))?;
    if certs.is_empty() {
        return Err(file_err(field, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            ca: dir.path().join("nope.pem"),
            cert: None,
            key: None,
        };
        let e = missing.client_config().unwrap_err().to_string();
        assert!(e.contains("mqtt.tls.ca") && e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let e = TlsConfig {
            ca: empty,
            cert: None,
            key: None,
        }
        .client_config()
        .unwrap_err()
        .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
