//! TLS configurations for every leg, all on one crypto provider (aws-lc-rs).
//!
//! rustls panics when two providers are compiled in and none is chosen, so every builder here
//! names the provider explicitly instead of relying on the process default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocol id of PostgreSQL over direct TLS (protocol.sgml, "SSL Session
/// Encryption").
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loading certificates or keys, or building a configuration from them, failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path} holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    fn config(e: impl fmt::Display) -> TlsError {
        TlsError::Config(e.to_string())
    }
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |e: &dyn fmt::Display| TlsError::File { path: path.to_owned(), reason: e.to_string() };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.to_owned(), what: "PEM certificate" });
    }
    Ok(certs)
}

/// Reads the private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::File { path: path.to_owned(), reason: e.to_string() })
}

/// A root store holding every certificate of a PEM bundle, such as the RDS global bundle,
/// which carries roots and intermediates.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    roots_from(load_certs(path)?)
}

pub fn roots_from(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::Config("no usable CA certificate".into()));
    }
    Ok(roots)
}

/// A server certificate and key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity { chain: load_certs(cert)?, key: load_key(key)? })
    }
}

/// How a server treats client certificates.
#[derive(Debug)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// A certificate chaining to these roots is required (mutual TLS).
    Required(RootCertStore),
}

/// A TLS server configuration. With `tls13_only`, older versions are refused.
pub fn server_config(
    identity: Identity,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
    tls13_only: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(tls13_only))
        .map_err(TlsError::config)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(TlsError::config)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(identity.chain, identity.key).map_err(TlsError::config)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A TLS client configuration that verifies the server against `roots`, optionally presenting
/// a client certificate.
pub fn client_config(
    roots: RootCertStore,
    client_identity: Option<Identity>,
    alpn: &[&[u8]],
    tls13_only: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(tls13_only))
        .map_err(TlsError::config)?
        .with_root_certificates(roots);
    let mut config = match client_identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain, identity.key).map_err(TlsError::config)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Resumption stays on (the default in-memory store); 0-RTT stays off: startup packets
    // carry credentials and must not be replayable.
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(tls13_only: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls13_only { TLS13_ONLY } else { rustls::ALL_VERSIONS }
}

/// Who a peer certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The whole subject, for example `CN=alice@corp, O=rds-auth-proxy`.
    pub subject: String,
    /// The subject's common name, when it has one.
    pub common_name: Option<String>,
}

impl PeerIdentity {
    /// Reads the identity from a DER certificate; `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject().to_string();
        let common_name =
            cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        Some(PeerIdentity { subject, common_name })
    }

    /// The short name for logs: the common name, or the whole subject without one.
    pub fn name(&self) -> &str {
        self.common_name.as_deref().unwrap_or(&self.subject)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
