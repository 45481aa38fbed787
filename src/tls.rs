//! TLS server settings from PEM files (a certificate chain and its key),
//! for listeners that serve HTTPS with a certificate the administrator
//! provides (the dashboard's `[admin] cert` and `key`). Neutral: it depends
//! on no other part of weerwal, so any listener can use it.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A PEM file that cannot be used, named.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct PemError {
    pub path: PathBuf,
    pub message: String,
}

/// A TLS acceptor for `cert` (PEM chain) and `key` (PEM private key),
/// HTTP/1.1 only, ring as the crypto provider.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, PemError> {
    let err = |path: &Path, message: String| PemError { path: path.to_path_buf(), message };
    let cert_pem = std::fs::read(cert).map_err(|e| err(cert, e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| err(key, e.to_string()))?;
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<_, _>>().map_err(|e| err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => err(key, "no private key in the file".into()),
        e => err(key, e.to_string()),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| err(key, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
