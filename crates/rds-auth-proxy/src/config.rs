//! The client proxy's settings: the file format, and its conversion into the library's
//! targets, validated before any port is bound.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_cli::telemetry::LogFormat;
use rds_auth_client::ServerProxy;
use rds_auth_io::tls::{self, ALPN_POSTGRESQL, Identity};
use rds_auth_startup::Endpoint;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

pub(crate) const ENV_PREFIX: &str = "RDS_AUTH_PROXY_";

/// `~/.config/rds-auth-proxy/config.toml`, or under `$XDG_CONFIG_HOME` when it is set.
pub(crate) fn default_path() -> PathBuf {
    config_dir().join("config.toml")
}

pub(crate) fn config_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("rds-auth-proxy")
}

/// Expands a leading `~/`.
pub(crate) fn expand(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(rest))
            .unwrap_or_else(|| path.to_owned()),
        Err(_) => path.to_owned(),
    }
}

/// The whole file. Every key is documented in docs/configuration.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    pub(crate) proxy: ProxySettings,
    pub(crate) aws: AwsSettings,
    pub(crate) upstreams: BTreeMap<String, UpstreamSettings>,
    pub(crate) targets: BTreeMap<String, TargetSettings>,
    pub(crate) log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProxySettings {
    /// Where local listeners bind. Loopback by default: anyone who can reach a listener
    /// connects with your IAM identity.
    pub(crate) listen_address: IpAddr,
    #[serde(with = "humantime_serde")]
    pub(crate) startup_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) drain_timeout: Duration,
    /// Reuse a token while it is younger than this (tokens live 15 minutes).
    #[serde(with = "humantime_serde")]
    pub(crate) token_reuse: Duration,
    pub(crate) local_tls: LocalTls,
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            listen_address: IpAddr::from([127, 0, 0, 1]),
            startup_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
            token_reuse: Duration::from_secs(600),
            local_tls: LocalTls::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LocalTls {
    /// Offer TLS to local clients. Off by default: the hop is loopback and `N` avoids the
    /// retry paths drivers take when TLS fails.
    pub(crate) enabled: bool,
    /// A certificate and key to present; without them a certificate for localhost,
    /// 127.0.0.1 and ::1 is made at startup and its CA written next to the configuration.
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AwsSettings {
    /// The AWS profile that signs tokens; the standard credential chain when unset.
    pub(crate) profile: Option<String>,
    /// The region of targets that name none and whose endpoint does not tell.
    pub(crate) region: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSettings {
    /// The server proxy, `host:port`.
    pub(crate) address: String,
    /// The CA that signs the server proxy's certificate.
    pub(crate) ca: PathBuf,
    /// Your client certificate and key (mutual TLS).
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// The name on the server proxy's certificate; the host part of `address` by default.
    pub(crate) server_name: Option<String>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub(crate) connect_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuthSetting {
    #[default]
    Iam,
    Password,
    Passthrough,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetSettings {
    /// The database endpoint, `host:port`, exactly as RDS names it.
    pub(crate) endpoint: String,
    pub(crate) region: Option<String>,
    pub(crate) database: Option<String>,
    /// The database user shown in the printed psql line.
    pub(crate) user: Option<String>,
    /// A fixed local port, so GUI tools keep working across restarts.
    pub(crate) local_port: Option<u16>,
    #[serde(default)]
    pub(crate) auth: AuthSetting,
    /// In password mode, the environment variable holding the password; without it the
    /// password is asked for at startup.
    pub(crate) password_env: Option<String>,
    /// The server proxy that serves this database: a key of `upstreams`.
    #[serde(default = "default_upstream")]
    pub(crate) upstream: String,
}

fn default_upstream() -> String {
    "default".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Log {
    pub(crate) format: LogFormat,
    pub(crate) level: String,
}

impl Default for Log {
    fn default() -> Log {
        Log { format: LogFormat::Text, level: "info".into() }
    }
}

/// Flags that override the file and the environment; `None` overrides nothing.
#[derive(Debug, Default, Serialize)]
pub(crate) struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log: Option<LogFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) aws: Option<AwsFlags>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct LogFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) level: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct AwsFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) profile: Option<String>,
}

/// The region in an RDS endpoint name: `<id>.<hash>.<region>.rds.amazonaws.com`.
pub(crate) fn region_of(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let at = labels.iter().position(|l| *l == "rds")?;
    (at >= 1 && labels.get(at + 1) == Some(&"amazonaws")).then(|| labels[at - 1].to_owned())
}

/// A validated target, before credentials and routes are attached.
#[derive(Debug, Clone)]
pub(crate) struct TargetPlan {
    pub(crate) name: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) region: String,
    pub(crate) settings: TargetSettings,
}

/// Validates a target's settings.
pub(crate) fn plan_target(loaded: &Loaded<Settings>, name: &str) -> Result<TargetPlan, ConfigError> {
    let settings = &loaded.value;
    let target = settings.targets.get(name).ok_or_else(|| {
        let known: Vec<&str> = settings.targets.keys().map(String::as_str).collect();
        ConfigError::general(
            format!("no target called {name:?}"),
            if known.is_empty() {
                "add a [targets.<name>] section to the configuration (see docs/configuration.md)".to_owned()
            } else {
                format!("known targets: {}", known.join(", "))
            },
        )
    })?;
    let key = |k: &str| format!("targets.{name}.{k}");
    let endpoint = Endpoint::parse(target.endpoint.as_bytes()).map_err(|e| {
        loaded.error_at(
            &key("endpoint"),
            e.to_string(),
            "write the endpoint exactly as RDS names it, as host:port",
        )
    })?;
    let region = target
        .region
        .clone()
        .or_else(|| region_of(&endpoint.host()))
        .or_else(|| settings.aws.region.clone())
        .ok_or_else(|| {
            loaded.error_at(
                &key("endpoint"),
                "cannot tell the region from this endpoint",
                "set region for the target, or aws.region",
            )
        })?;
    if !settings.upstreams.contains_key(&target.upstream) {
        return Err(loaded.error_at(
            &key("upstream"),
            format!("no upstream called {:?}", target.upstream),
            "add an [upstreams.<name>] section with the server proxy's address and certificates",
        ));
    }
    if target.auth != AuthSetting::Password && target.password_env.is_some() {
        return Err(loaded.error_at(&key("password_env"), "only used with auth = \"password\"", ""));
    }
    Ok(TargetPlan { name: name.to_owned(), endpoint, region, settings: target.clone() })
}

/// Builds the TLS client of one server proxy.
pub(crate) fn server_proxy(loaded: &Loaded<Settings>, name: &str) -> Result<Arc<ServerProxy>, ConfigError> {
    let upstream = &loaded.value.upstreams[name];
    let key = |k: &str| format!("upstreams.{name}.{k}");
    let roots = tls::load_roots(&expand(&upstream.ca)).map_err(|e| {
        loaded.error_at(
            &key("ca"),
            e.to_string(),
            "point it at the CA that signs the server proxy's certificate",
        )
    })?;
    let identity = match (&upstream.cert, &upstream.key) {
        (Some(cert), Some(private_key)) => {
            Some(Identity::load(&expand(cert), &expand(private_key)).map_err(|e| {
                loaded.error_at(
                    &key("cert"),
                    e.to_string(),
                    "ask the server proxy's operators for a client certificate",
                )
            })?)
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(loaded.error_at(&key("cert"), "a certificate needs its key", "set key as well"));
        }
        (None, Some(_)) => {
            return Err(loaded.error_at(&key("key"), "a key needs its certificate", "set cert as well"));
        }
    };
    let host = upstream
        .address
        .rsplit_once(':')
        .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']').to_owned())
        .ok_or_else(|| loaded.error_at(&key("address"), "expected host:port", ""))?;
    let server_name = upstream.server_name.clone().unwrap_or(host);
    let server_name = ServerName::try_from(server_name)
        .map_err(|_| loaded.error_at(&key("server_name"), "not a DNS name or IP address", ""))?;
    let tls = tls::client_config(roots, identity, &[ALPN_POSTGRESQL], true)
        .map_err(|e| loaded.error_at(&key("cert"), e.to_string(), ""))?;
    Ok(Arc::new(ServerProxy {
        name: name.to_owned(),
        address: upstream.address.clone(),
        server_name,
        tls,
        connect_timeout: upstream.connect_timeout,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_from_endpoint() {
        assert_eq!(region_of("mydb.abc123.us-east-1.rds.amazonaws.com").as_deref(), Some("us-east-1"));
        assert_eq!(
            region_of("orders.cluster-ro-x.eu-west-1.rds.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("db.internal.example.com"), None);
    }
}
