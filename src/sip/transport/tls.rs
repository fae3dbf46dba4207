//! SIP over TLS: the server and client configurations, from PEM files.
//!
//! The server presents `tls_cert` (a chain: the node's certificate first)
//! with `tls_key`. Outgoing TLS connections verify the server against the
//! CA certificates in `tls_ca`; without `tls_ca`, against the CA
//! certificates that follow the node's own in `tls_cert`; with neither, the
//! node opens no TLS connection (and says so). The system's roots are not
//! used: a node's TLS peers are phones and nodes of its own deployment.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The TLS files of a node, as configured.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// A problem with a TLS file, naming the config key and the file.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {path}: {why}")]
pub struct TlsError {
    pub key: &'static str,
    pub path: String,
    pub why: String,
}

/// What the transports need for TLS: an acceptor for `--sips`, a connector
/// for outgoing connections (when there are roots to verify against).
#[derive(Clone)]
pub struct Tls {
    pub acceptor: Option<TlsAcceptor>,
    pub connector: Option<TlsConnector>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server", &self.acceptor.is_some())
            .field("client", &self.connector.is_some())
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn error(key: &'static str, path: &Path, why: impl ToString) -> TlsError {
    TlsError {
        key,
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The certificates in a PEM file; at least one.
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    // Read first so that a missing file says "No such file" plainly.
    let pem = std::fs::read(path).map_err(|e| error(key, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(key, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(error(key, path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| error("tls_key", path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        error(
            "tls_key",
            path,
            format!("no PEM private key in the file: {e}"),
        )
    })
}

impl Tls {
    /// Loads the files; `server` says whether a listener needs the certificate and key.
    pub fn load(files: &TlsFiles, server: bool) -> Result<Tls, TlsError> {
        let chain = match &files.cert {
            Some(path) => Some((path, read_certs("tls_cert", path)?)),
            None => None,
        };
        let acceptor = if server {
            let Some((cert_path, chain)) = &chain else {
                return Err(TlsError {
                    key: "tls_cert",
                    path: "(not set)".into(),
                    why: "`sips` needs a certificate (--tls-cert) and its key (--tls-key)".into(),
                });
            };
            let Some(key_path) = &files.key else {
                return Err(TlsError {
                    key: "tls_key",
                    path: "(not set)".into(),
                    why: "`sips` needs the certificate's private key (--tls-key)".into(),
                });
            };
            let key = read_key(key_path)?;
            let config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| error("tls_cert", cert_path, e))?
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key)
                .map_err(|e| {
                    error(
                        "tls_key",
                        key_path,
                        format!("does not fit the certificate: {e}"),
                    )
                })?;
            Some(TlsAcceptor::from(Arc::new(config)))
        } else {
            None
        };
        let roots = match (&files.ca, &chain) {
            (Some(path), _) => Some((path.clone(), "tls_ca", read_certs("tls_ca", path)?)),
            (None, Some((path, chain))) if chain.len() > 1 => {
                Some(((*path).clone(), "tls_cert", chain[1..].to_vec()))
            }
            _ => None,
        };
        let connector = match roots {
            Some((path, key, certs)) => {
                let mut store = RootCertStore::empty();
                for cert in certs {
                    store.add(cert).map_err(|e| {
                        error(key, &path, format!("not a usable CA certificate: {e}"))
                    })?;
                }
                let config = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| error(key, &path, e))?
                    .with_root_certificates(store)
                    .with_no_client_auth();
                Some(TlsConnector::from(Arc::new(config)))
            }
            None => None,
        };
        Ok(Tls {
            acceptor,
            connector,
        })
    }
}

/// The name an outgoing connection verifies: the peer's IP address (the
/// transports know addresses only; the certificate needs an IP SAN).
pub fn server_name(ip: IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(ip.into())
}
