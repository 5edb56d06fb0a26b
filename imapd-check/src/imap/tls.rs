//! TLS server configuration (rustls, ring provider): a PEM certificate
//! chain and a PEM private key (PKCS#8, PKCS#1 or SEC1). Both files are
//! checked (`stat`) at each new TLS session and re-read when either has
//! changed, so a renewed certificate is used without a restart; a pair
//! that fails to load keeps the previous one in use, with an error in the
//! log. TLS 1.2 and 1.3 only (rustls has nothing older).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::{FileStamp, HupSeen, file_stamp as stamp};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {0}: {1}")]
    Cert(String, String),
    #[error("TLS key {0}: {1}")]
    Key(String, String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

type Stamps = (Option<FileStamp>, Option<FileStamp>);

fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert(cert.display().to_string(), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(cert.display().to_string(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(
            cert.display().to_string(),
            "no CERTIFICATE block".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key(key.display().to_string(), e.to_string()))?;
    // ring, not aws-lc-rs: no cmake/C toolchain build in CI. Its provider
    // is marked deprecated only for lacking post-quantum key exchange;
    // X25519 and the NIST curves remain.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(cfg))
}

pub struct TlsSource {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Stamps, Arc<ServerConfig>)>,
    hup: HupSeen,
}

impl TlsSource {
    pub fn open(cert: &Path, key: &Path) -> Result<TlsSource, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let cfg = load(cert, key)?;
        Ok(TlsSource {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new((stamps, cfg)),
            hup: HupSeen::default(),
        })
    }

    /// The configuration for a new session, re-read if the files changed.
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let stamps = (stamp(&self.cert), stamp(&self.key));
        if self.hup.take() | (stamps != cur.0) {
            match load(&self.cert, &self.key) {
                Ok(cfg) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    cur.1 = cfg;
                }
                Err(e) => tracing::error!("{e}; keeping the previous certificate"),
            }
            cur.0 = stamps;
        }
        cur.1.clone()
    }

    /// A new server-side TLS session.
    pub fn session(&self) -> std::io::Result<rustls::ServerConnection> {
        rustls::ServerConnection::new(self.config()).map_err(std::io::Error::other)
    }
}
