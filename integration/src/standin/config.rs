//! The stand-in's configuration file. The harness writes it with [`Config::to_toml`]; every
//! subcommand reads it with [`Config::load`].
//!
//! ```toml
//! region = "us-east-1"
//! log_path = "/standin/verify.log"
//!
//! [endpoint]
//! host = "pg.rds.test"   # the name tokens must be signed for
//! pam_port = 5432        # Postgres itself, checked through PAM
//! front_port = 5433      # the TLS front
//!
//! [tls]
//! cert = "/standin/server.crt"
//! key = "/standin/server.key"
//!
//! [lifeline]
//! port = 5439
//! first_contact_secs = 120
//!
//! [credentials]          # access key id = secret access key
//! AKIDSTANDIN = "..."
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::standin::{Policy, StandinError};

/// The whole configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The region tokens must be signed for.
    pub region: String,
    /// Where each verdict is appended, one line per login attempt.
    pub log_path: PathBuf,
    pub endpoint: EndpointConfig,
    pub tls: TlsFiles,
    pub lifeline: LifelineConfig,
    /// Access key id to secret access key: the only keys whose tokens are accepted.
    pub credentials: BTreeMap<String, String>,
}

/// The endpoint tokens must name, and the two ports that answer for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub host: String,
    pub pam_port: u16,
    pub front_port: u16,
}

/// The server certificate and key, the same files Postgres uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The port the test process holds a connection to, and how long the container waits for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifelineConfig {
    pub port: u16,
    pub first_contact_secs: u64,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("region", &self.region)
            .field("log_path", &self.log_path)
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls)
            .field("lifeline", &self.lifeline)
            .field("access_key_ids", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, StandinError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| StandinError::ReadConfig { path: path.to_owned(), source })?;
        Config::parse(&text).map_err(|message| StandinError::ParseConfig { path: path.to_owned(), message })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.credentials.is_empty() {
            return Err("no [credentials]: no token could ever be accepted".into());
        }
        if config.endpoint.pam_port == config.endpoint.front_port {
            return Err("endpoint.pam_port and endpoint.front_port must differ".into());
        }
        Ok(config)
    }

    pub fn to_toml(&self) -> Result<String, StandinError> {
        toml::to_string(self).map_err(|e| StandinError::WriteConfig(e.to_string()))
    }

    /// What a token presented on `port` (the PAM port or the front's) must satisfy.
    pub fn policy(&self, port: u16) -> Policy {
        Policy {
            host: self.endpoint.host.clone(),
            port,
            region: self.region.clone(),
            secrets: self.credentials.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_secrets() {
        let config = Config {
            region: "us-east-1".into(),
            log_path: "/standin/verify.log".into(),
            endpoint: EndpointConfig { host: "pg.rds.test".into(), pam_port: 5432, front_port: 5433 },
            tls: TlsFiles { cert: "/standin/server.crt".into(), key: "/standin/server.key".into() },
            lifeline: LifelineConfig { port: 5439, first_contact_secs: 120 },
            credentials: [("AKIDSTANDIN".to_owned(), "s3cr3t".to_owned())].into(),
        };
        let text = config.to_toml().unwrap();
        let again = Config::parse(&text).unwrap();
        assert_eq!(again.credentials, config.credentials);
        assert_eq!(again.endpoint.front_port, 5433);
        assert!(!format!("{again:?}").contains("s3cr3t"));
        assert!(Config::parse(&text.replace("front_port = 5433", "front_port = 5432")).is_err());
        assert!(Config::parse(&format!("{text}\nsurprise = 1\n")).is_err());
    }
}
