//! A small private certificate authority: the server proxy's `gen-certs` command, the client
//! proxy's local TLS certificate, and every test use it.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// Issuing a certificate failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot issue a certificate: {0}")]
pub struct CertError(String);

fn cert_error(e: rcgen::Error) -> CertError {
    CertError(e.to_string())
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("key_pem", &"[redacted]").finish_non_exhaustive()
    }
}

/// A certificate authority that signs server and client certificates.
pub struct CertAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + lifetime;
}

impl CertAuthority {
    /// A new authority with a fresh ECDSA P-256 key, valid for `lifetime`.
    pub fn new(common_name: &str, lifetime: Duration) -> Result<CertAuthority, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "rds-auth-proxy");
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, lifetime);
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.self_signed(&key).map_err(cert_error)?;
        let key_pem = key.serialize_pem();
        Ok(CertAuthority { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// Loads an authority from its certificate and key, to issue more certificates later.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertAuthority, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_error)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(cert_error)?;
        Ok(CertAuthority { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for `names`; IP addresses become IP SANs, anything else a DNS SAN.
    pub fn issue_server(&self, names: &[&str], lifetime: Duration) -> Result<Issued, CertError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(cert_error)?;
        params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params, lifetime)
    }

    /// A client certificate whose subject common name is `common_name`: the identity the
    /// server proxy sees.
    pub fn issue_client(&self, common_name: &str, lifetime: Duration) -> Result<Issued, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "rds-auth-proxy");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params, lifetime)
    }

    fn issue(&self, mut params: CertificateParams, lifetime: Duration) -> Result<Issued, CertError> {
        validity(&mut params, lifetime);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::tls::PeerIdentity;

    #[test]
    fn client_certificates_carry_the_identity_and_chain_to_the_ca() {
        let ca = CertAuthority::new("test CA", Duration::from_secs(3600)).unwrap();
        let alice = ca.issue_client("alice@corp", Duration::from_secs(3600)).unwrap();
        let der = CertificateDer::from_pem_slice(alice.cert_pem.as_bytes()).unwrap();
        let identity = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(identity.name(), "alice@corp");
        let again = CertAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert!(again.issue_server(&["db.test", "127.0.0.1"], Duration::from_secs(60)).is_ok());
    }
}
