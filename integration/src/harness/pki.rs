//! A test certificate authority whose certificates land in PEM files.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rds_auth_io::certgen::{CertAuthority, Issued};
use rustls::RootCertStore;

use crate::harness::{HarnessError, scratch_dir};

/// How long test certificates are valid: longer than any test run.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A certificate and key written to disk, and their PEM text.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: Issued,
}

/// A private CA and a scratch directory holding `ca.pem` and every certificate issued through
/// it. The directory is removed on drop.
#[derive(Debug)]
pub struct TestPki {
    ca: CertAuthority,
    dir: PathBuf,
    ca_pem: PathBuf,
}

impl TestPki {
    /// A fresh CA named `name`, with its certificate written to `<dir>/ca.pem`.
    pub fn new(name: &str) -> Result<TestPki, HarnessError> {
        let ca = CertAuthority::new(&format!("rds-auth-proxy test CA ({name})"), LIFETIME)?;
        let dir = scratch_dir(name)?;
        let ca_pem = dir.join("ca.pem");
        write(&ca_pem, ca.cert_pem(), 0o644)?;
        Ok(TestPki { ca, dir, ca_pem })
    }

    pub fn ca(&self) -> &CertAuthority {
        &self.ca
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, for `PGSSLROOTCERT` or a proxy's `ca` setting.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    /// A root store trusting only this CA.
    pub fn roots(&self) -> Result<RootCertStore, HarnessError> {
        Ok(rds_auth_io::tls::load_roots(&self.ca_pem)?)
    }

    /// A server certificate for `names` (IP addresses become IP SANs), written to
    /// `<stem>.crt` and `<stem>.key`.
    pub fn server(&self, stem: &str, names: &[&str]) -> Result<CertFiles, HarnessError> {
        self.write_pair(stem, self.ca.issue_server(names, LIFETIME)?)
    }

    /// A client certificate whose common name is `common_name`, written like [`TestPki::server`].
    pub fn client(&self, stem: &str, common_name: &str) -> Result<CertFiles, HarnessError> {
        self.write_pair(stem, self.ca.issue_client(common_name, LIFETIME)?)
    }

    fn write_pair(&self, stem: &str, pem: Issued) -> Result<CertFiles, HarnessError> {
        let cert = self.dir.join(format!("{stem}.crt"));
        let key = self.dir.join(format!("{stem}.key"));
        write(&cert, &pem.cert_pem, 0o644)?;
        write(&key, &pem.key_pem, 0o600)?;
        Ok(CertFiles { cert, key, pem })
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        // Leftovers live under target/ and go with `cargo clean`.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), HarnessError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(HarnessError::io(format!("cannot write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_certificates_that_chain_to_it() {
        let pki = TestPki::new("pki-unit").unwrap();
        let server = pki.server("db", &["db.test", "127.0.0.1"]).unwrap();
        let client = pki.client("alice", "alice@corp").unwrap();
        assert!(pki.ca_pem_path().is_file());
        assert_eq!(pki.roots().unwrap().len(), 1);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&server.key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert!(rds_auth_io::tls::Identity::load(&client.cert, &client.key).is_ok());
        let dir = pki.dir().to_owned();
        drop(pki);
        assert!(!dir.exists());
    }
}
