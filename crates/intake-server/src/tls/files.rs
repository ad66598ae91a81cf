//! Certificate files named on the command line, and what a node builds from
//! them: the rustls server configuration, the check that tells a peer's
//! certificate from a client's, and the client side of peer connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The node's TLS files (PEM). All paths are read again on every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain and key the port presents to clients
    /// (`--tls-cert`, `--tls-key`).
    pub server: Option<(PathBuf, PathBuf)>,
    /// Mutual TLS between nodes (`--peer-ca`, `--peer-cert`, `--peer-key`).
    pub peer: Option<PeerFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFiles {
    /// The cluster CA: it signs every node's peer certificate.
    pub ca: PathBuf,
    /// This node's certificate, for both ends of peer connections (it needs
    /// the serverAuth and clientAuth uses if it restricts them).
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key in it ({reason})")]
    NoKey { path: String, reason: String },
    #[error("{path}: not a usable CA certificate: {reason}")]
    BadCa { path: String, reason: String },
    #[error("certificate {cert} with key {key}: {reason}")]
    BadPair {
        cert: String,
        key: String,
        reason: String,
    },
}

impl TlsFiles {
    /// Whether the port speaks TLS at all.
    pub fn enabled(&self) -> bool {
        self.server.is_some() || self.peer.is_some()
    }

    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some((c, k)) = &self.server {
            out.extend([c.clone(), k.clone()]);
        }
        if let Some(p) = &self.peer {
            out.extend([p.ca.clone(), p.cert.clone(), p.key.clone()]);
        }
        out
    }
}

/// Everything built from one reading of the files.
pub struct TlsState {
    /// What a new connection's handshake uses.
    pub server: Arc<rustls::ServerConfig>,
    /// The same certificate for the HTTP door (`--api`): HTTP/1.1, and no
    /// client certificate asked for (a browser would offer its user a
    /// choice of certificates for nothing).
    pub https: Arc<rustls::ServerConfig>,
    /// Verifies a presented certificate against the cluster CA alone: the
    /// test of "this connection is a peer".
    pub peer_check: Option<Arc<dyn ClientCertVerifier>>,
    /// How this node connects to its peers.
    pub peer_client: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("mutual", &self.peer_check.is_some())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::NoKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A verifier that accepts certificates the CA in `ca` signed; with
/// `optional`, also connections that present none.
fn ca_verifier(ca: &Path, optional: bool) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::BadCa {
        path: ca.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in certs(ca, &read(ca)?)? {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|e| bad(e.to_string()))
}

impl TlsState {
    /// Reads the files and builds the configurations; `Ok(None)` when TLS
    /// is off. Any unreadable or mismatched file is an error naming it.
    pub fn load(files: &TlsFiles) -> Result<Option<TlsState>, TlsError> {
        let (cert_path, key_path) = match (&files.server, &files.peer) {
            (Some((c, k)), _) => (c, k),
            (None, Some(p)) => (&p.cert, &p.key),
            (None, None) => return Ok(None),
        };
        let chain = certs(cert_path, &read(cert_path)?)?;
        let private = key(key_path, &read(key_path)?)?;
        let (verifier, peer_check, peer_client) = match &files.peer {
            Some(p) => {
                let ca_pem = read(&p.ca)?;
                let cert_pem = read(&p.cert)?;
                let key_pem = read(&p.key)?;
                // Parsed here so a broken file fails the load, not a later dial.
                certs(&p.cert, &cert_pem)?;
                key(&p.key, &key_pem)?;
                let client = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .identity(Identity::from_pem(cert_pem, key_pem));
                (
                    ca_verifier(&p.ca, true)?,
                    Some(ca_verifier(&p.ca, false)?),
                    Some(client),
                )
            }
            None => (WebPkiClientVerifier::no_client_auth(), None, None),
        };
        let bad_pair = |e: rustls::Error| TlsError::BadPair {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
            reason: e.to_string(),
        };
        let builder = || {
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(bad_pair)
        };
        let mut https = builder()?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), private.clone_key())
            .map_err(bad_pair)?;
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut server = builder()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private)
            .map_err(bad_pair)?;
        // gRPC is HTTP/2 only; tonic's client insists on it.
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(TlsState {
            server: Arc::new(server),
            https: Arc::new(https),
            peer_check,
            peer_client,
        }))
    }

    /// Whether the certificates a connection presented make it a peer:
    /// they chain to the cluster CA (rustls checked that already when one was
    /// presented; this tells the cluster CA from any other trusted root).
    pub fn is_peer(&self, presented: Option<&[CertificateDer<'static>]>) -> bool {
        let (Some(check), Some([end, rest @ ..])) = (&self.peer_check, presented) else {
            return false;
        };
        check.verify_client_cert(end, rest, UnixTime::now()).is_ok()
    }
}
