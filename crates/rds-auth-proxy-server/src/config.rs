//! The server proxy's settings: the file format, and its conversion into the library's
//! `ServerConfig`, which validates every value before any port is bound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_cli::telemetry::LogFormat;
use rds_auth_discovery::{AccountConfig, AccountCredentials, DiscoveryConfig, TagRules};
use rds_auth_io::relay::RelayConfig;
use rds_auth_io::tls::{self, ALPN_POSTGRESQL, ClientAuth, Identity};
use rds_auth_server::{
    AuthMode, AuthModes, CancelKeys, CancelState, FollowConfig, IdentityConfig, IdentityVerifier,
    LimitsConfig, Principals, ServerConfig, ServerSettings, ShutdownConfig, StsEndpoint, TargetRule,
};
use rds_auth_startup::Endpoint;
use rds_auth_upstream::{Resolver, UpstreamConfig};
use serde::{Deserialize, Serialize};

pub(crate) const DEFAULT_PATH: &str = "/etc/rds-auth-proxy/server.toml";
pub(crate) const ENV_PREFIX: &str = "RDS_AUTH_SERVER_";

/// The whole file. Every key is documented in docs/configuration.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    pub(crate) listen: Listen,
    pub(crate) upstream: Upstream,
    pub(crate) targets: Vec<TargetSetting>,
    pub(crate) limits: Limits,
    pub(crate) shutdown: ShutdownSettings,
    pub(crate) health: HealthSettings,
    pub(crate) identity: IdentitySettings,
    pub(crate) cancel: CancelSettings,
    pub(crate) discovery: DiscoverySettings,
    pub(crate) log: Log,
}

/// What SIGTERM does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ShutdownSettings {
    /// How long to keep accepting after readiness fails, for load-balancer deregistration.
    #[serde(with = "humantime_serde")]
    pub(crate) min_delay: Duration,
    /// How long open sessions may go on after the listener closes.
    #[serde(with = "humantime_serde")]
    pub(crate) max_delay: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> ShutdownSettings {
        ShutdownSettings { min_delay: Duration::ZERO, max_delay: Duration::from_secs(30) }
    }
}

/// The health and metrics HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthSettings {
    pub(crate) enabled: bool,
    pub(crate) address: String,
}

impl Default for HealthSettings {
    fn default() -> HealthSettings {
        HealthSettings { enabled: true, address: "127.0.0.1:9090".into() }
    }
}

/// Callers' IAM identities from presigned sts:GetCallerIdentity requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IdentitySettings {
    /// Verify the proofs client proxies send.
    pub(crate) verify: bool,
    /// Refuse sessions without a proof.
    pub(crate) required: bool,
    /// A fixed STS endpoint (an STS VPC endpoint); the regional endpoint of the caller's
    /// region by default. `http://` only for loopback test doubles.
    pub(crate) sts_endpoint: Option<String>,
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Duration,
}

impl Default for IdentitySettings {
    fn default() -> IdentitySettings {
        IdentitySettings {
            verify: true,
            required: false,
            sts_endpoint: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Targets from RDS, added to the static ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DiscoverySettings {
    /// Regions of the server's own account (its IRSA role or instance profile).
    pub(crate) regions: Vec<String>,
    /// More accounts, each reached by assuming a role.
    pub(crate) accounts: BTreeMap<String, DiscoveryAccount>,
    /// Every pattern must match a database's tags: `key=value`, `key=glob*`, or `key`.
    pub(crate) allow_tags: Vec<String>,
    /// No pattern may match.
    pub(crate) block_tags: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub(crate) refresh_interval: Duration,
    /// The auth modes discovered targets accept.
    pub(crate) auth: Vec<AuthModeSetting>,
    /// Another RDS API endpoint (a VPC endpoint, or a test double).
    pub(crate) endpoint_url: Option<String>,
    /// Who may reach discovered targets; anyone the listener admits when unset.
    pub(crate) principals: Option<Vec<String>>,
}

impl Default for DiscoverySettings {
    fn default() -> DiscoverySettings {
        DiscoverySettings {
            regions: Vec::new(),
            accounts: BTreeMap::new(),
            allow_tags: Vec::new(),
            block_tags: Vec::new(),
            refresh_interval: Duration::from_secs(60),
            auth: vec![AuthModeSetting::Iam],
            endpoint_url: None,
            principals: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DiscoveryAccount {
    pub(crate) role_arn: Option<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) profile: Option<String>,
    pub(crate) regions: Vec<String>,
}

/// Discovery and what discovered targets accept, when any region is configured.
pub(crate) struct DiscoveryPlan {
    pub(crate) config: DiscoveryConfig,
    pub(crate) follow: FollowConfig,
}

pub(crate) fn discovery(loaded: &Loaded<Settings>) -> Result<Option<DiscoveryPlan>, ConfigError> {
    let settings = &loaded.value.discovery;
    let mut accounts = Vec::new();
    if !settings.regions.is_empty() {
        accounts.push(AccountConfig {
            name: "default".into(),
            credentials: AccountCredentials::Default,
            regions: settings.regions.clone(),
        });
    }
    for (name, account) in &settings.accounts {
        let credentials = match (&account.role_arn, &account.profile) {
            (Some(role_arn), profile) => AccountCredentials::AssumeRole {
                role_arn: role_arn.clone(),
                external_id: account.external_id.clone(),
                session_name: "rds-auth-proxy-server".into(),
                source_profile: profile.clone(),
            },
            (None, Some(profile)) => AccountCredentials::Profile(profile.clone()),
            (None, None) => AccountCredentials::Default,
        };
        if account.regions.is_empty() {
            return Err(loaded.error_at(
                &format!("discovery.accounts.{name}.regions"),
                "no regions to search",
                "list the account's regions",
            ));
        }
        accounts.push(AccountConfig { name: name.clone(), credentials, regions: account.regions.clone() });
    }
    if accounts.is_empty() {
        return Ok(None);
    }
    let rules = TagRules::parse(&settings.allow_tags, &settings.block_tags).map_err(|e| {
        loaded.error_at("discovery.allow_tags", e.to_string(), "write tags as key=value, key=glob* or key")
    })?;
    if settings.auth.is_empty() {
        return Err(loaded.error_at("discovery.auth", "no auth mode", "use [\"iam\"]"));
    }
    let modes = AuthModes::from_modes(&settings.auth.iter().map(|m| mode(*m)).collect::<Vec<_>>());
    let principals = principals(loaded, "discovery.principals", settings.principals.as_deref())?;
    Ok(Some(DiscoveryPlan {
        config: DiscoveryConfig { accounts, rules, endpoint_url: settings.endpoint_url.clone() },
        follow: FollowConfig { interval: settings.refresh_interval, modes, principals },
    }))
}

fn principals(
    loaded: &Loaded<Settings>,
    key: &str,
    patterns: Option<&[String]>,
) -> Result<Principals, ConfigError> {
    let Some(patterns) = patterns else { return Ok(Principals::ANYONE) };
    if !loaded.value.identity.verify {
        return Err(loaded.error_at(
            key,
            "principals need the callers' identities, and identity.verify is off",
            "set identity.verify = true, or remove the principals",
        ));
    }
    Principals::only(patterns).map_err(|e| {
        loaded.error_at(
            key,
            e.to_string(),
            "write ARN patterns such as arn:aws:iam::123456789012:role/Analyst",
        )
    })
}

fn mode(setting: AuthModeSetting) -> AuthMode {
    match setting {
        AuthModeSetting::Iam => AuthMode::Iam,
        AuthModeSetting::Password => AuthMode::Password,
        AuthModeSetting::Passthrough => AuthMode::Passthrough,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CancelSettings {
    /// Files holding 32-byte keys as 64 hex digits, shared by every replica. The first seals
    /// cancel keys; all of them open, so a key is rotated by adding the new one first.
    pub(crate) key_files: Vec<PathBuf>,
    /// Cancels allowed per session and second, and the burst above that.
    pub(crate) per_second: u32,
    pub(crate) burst: u32,
}

impl Default for CancelSettings {
    fn default() -> CancelSettings {
        CancelSettings { key_files: Vec::new(), per_second: 10, burst: 20 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TlsMode {
    /// TLS is required: direct TLS or SSLRequest then TLS.
    Required,
    /// Plaintext only, for a deployment reached solely through a port-forward.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientAuthSetting {
    /// A client certificate signed by `client_ca` is required (mutual TLS).
    Required,
    /// No client certificate is asked for.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Listen {
    pub(crate) address: String,
    pub(crate) tls: TlsMode,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) client_auth: ClientAuthSetting,
    pub(crate) client_ca: Option<PathBuf>,
    pub(crate) tls13_only: bool,
    /// Every connection opens with a PROXY protocol v2 header (behind an NLB).
    pub(crate) proxy_protocol: bool,
}

impl Default for Listen {
    fn default() -> Listen {
        Listen {
            address: "0.0.0.0:5432".into(),
            tls: TlsMode::Required,
            cert: None,
            key: None,
            client_auth: ClientAuthSetting::Required,
            client_ca: None,
            tls13_only: false,
            proxy_protocol: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Upstream {
    pub(crate) ca_file: PathBuf,
    #[serde(with = "humantime_serde")]
    pub(crate) connect_timeout: Duration,
    pub(crate) connect_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub(crate) auth_timeout: Duration,
    pub(crate) resolve: BTreeMap<String, Vec<IpAddr>>,
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            ca_file: "/etc/rds-auth-proxy/rds-global-bundle.pem".into(),
            connect_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            auth_timeout: Duration::from_secs(30),
            resolve: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuthModeSetting {
    Iam,
    Password,
    Passthrough,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetSetting {
    pub(crate) endpoint: String,
    #[serde(default = "default_auth")]
    pub(crate) auth: Vec<AuthModeSetting>,
    /// Who may reach it; anyone the listener admits when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) principals: Option<Vec<String>>,
}

fn default_auth() -> Vec<AuthModeSetting> {
    vec![AuthModeSetting::Iam]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    #[serde(with = "humantime_serde")]
    pub(crate) startup_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_startup_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub(crate) token_clock_skew: Duration,
    pub(crate) max_connections: usize,
    pub(crate) per_caller_per_second: u32,
    pub(crate) per_caller_burst: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        let defaults = LimitsConfig::DEFAULT;
        Limits {
            startup_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(60),
            max_startup_bytes: 32 * 1024,
            token_clock_skew: Duration::from_secs(300),
            max_connections: defaults.max_connections,
            per_caller_per_second: defaults.per_caller_per_second.get(),
            per_caller_burst: defaults.per_caller_burst.get(),
        }
    }
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
    pub(crate) listen: Option<ListenFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log: Option<LogFlags>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct ListenFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct LogFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) level: Option<String>,
}

/// What the binary runs: the listener's address, the health server's, the library
/// configuration, and discovery when it is configured.
pub(crate) struct Built {
    pub(crate) listen: SocketAddr,
    pub(crate) health: Option<SocketAddr>,
    pub(crate) config: ServerConfig,
    pub(crate) discovery: Option<DiscoveryPlan>,
}

/// What SIGHUP reloads: the listener's certificates and the static targets.
pub(crate) struct Reloadable {
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) targets: Vec<TargetRule>,
}

/// Validates the settings and builds everything the binary runs, before any port is bound.
pub(crate) fn build(loaded: &Loaded<Settings>) -> Result<Built, ConfigError> {
    let settings = &loaded.value;
    let listen: SocketAddr = settings.listen.address.parse().map_err(|_| {
        loaded.error_at("listen.address", "expected an address:port such as 0.0.0.0:5432", "")
    })?;
    let health = health_address(loaded)?;
    let Reloadable { tls, targets } = reloadable(loaded)?;
    let roots = tls::load_roots(&settings.upstream.ca_file).map_err(|e| {
        loaded.error_at(
            "upstream.ca_file",
            e.to_string(),
            "point it at the RDS global bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem) or your database CA",
        )
    })?;
    let upstream_tls = tls::client_config(roots, None, &[], false)
        .map_err(|e| loaded.error_at("upstream.ca_file", e.to_string(), ""))?;
    let discovery = discovery(loaded)?;
    if settings.limits.max_startup_bytes < ServerConfig::MIN_STARTUP_LEN {
        return Err(loaded.error_at(
            "limits.max_startup_bytes",
            format!(
                "must be at least {} to hold a token with a session token",
                ServerConfig::MIN_STARTUP_LEN
            ),
            "",
        ));
    }
    if settings.upstream.connect_attempts == 0 {
        return Err(loaded.error_at("upstream.connect_attempts", "must be at least 1", ""));
    }
    let positive = |key: &str, value: u32| {
        NonZeroU32::new(value).ok_or_else(|| loaded.error_at(key, "must be at least 1", ""))
    };
    if settings.limits.max_connections == 0 {
        return Err(loaded.error_at("limits.max_connections", "must be at least 1", ""));
    }
    let limits = LimitsConfig {
        max_connections: settings.limits.max_connections,
        per_caller_per_second: positive(
            "limits.per_caller_per_second",
            settings.limits.per_caller_per_second,
        )?,
        per_caller_burst: positive("limits.per_caller_burst", settings.limits.per_caller_burst)?,
    };
    let cancel = cancel_state(loaded)?;
    let identity = identity(loaded)?;
    let resolve: HashMap<String, Vec<IpAddr>> = settings.upstream.resolve.clone().into_iter().collect();
    let config = ServerConfig::new(ServerSettings {
        require_client_cert: tls.is_some() && settings.listen.client_auth == ClientAuthSetting::Required,
        tls,
        targets,
        upstream: UpstreamConfig {
            tls: upstream_tls,
            resolver: Resolver::new(resolve),
            connect_timeout: settings.upstream.connect_timeout,
            connect_attempts: settings.upstream.connect_attempts,
            auth_timeout: settings.upstream.auth_timeout,
        },
        startup_timeout: settings.limits.startup_timeout,
        handshake_timeout: settings.limits.handshake_timeout,
        max_startup_len: settings.limits.max_startup_bytes,
        token_clock_skew: settings.limits.token_clock_skew,
        relay: RelayConfig::default(),
        shutdown: ShutdownConfig {
            min_delay: settings.shutdown.min_delay,
            max_delay: settings.shutdown.max_delay,
        },
        proxy_protocol: settings.listen.proxy_protocol,
        limits,
        cancel,
        identity,
    });
    Ok(Built { listen, health, config, discovery })
}

fn health_address(loaded: &Loaded<Settings>) -> Result<Option<SocketAddr>, ConfigError> {
    let health = &loaded.value.health;
    if !health.enabled {
        return Ok(None);
    }
    let address = health.address.parse().map_err(|_| {
        loaded.error_at(
            "health.address",
            "expected an address:port such as 127.0.0.1:9090",
            "use 0.0.0.0:9090 where kubelet or a load balancer probes the pod address",
        )
    })?;
    Ok(Some(address))
}

/// The listener's TLS configuration and the static targets: everything SIGHUP reloads.
pub(crate) fn reloadable(loaded: &Loaded<Settings>) -> Result<Reloadable, ConfigError> {
    let settings = &loaded.value;
    let tls = match settings.listen.tls {
        TlsMode::Disabled => None,
        TlsMode::Required => Some(listener_tls(loaded)?),
    };
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    for (i, target) in settings.targets.iter().enumerate() {
        let endpoint = Endpoint::parse(target.endpoint.as_bytes()).map_err(|e| {
            loaded.error_at(
                &format!("targets.{i}.endpoint"),
                e.to_string(),
                "write the exact endpoint name and port, as host:port",
            )
        })?;
        if !seen.insert(endpoint.clone()) {
            return Err(loaded.error_at(
                &format!("targets.{i}.endpoint"),
                "listed twice",
                "list each target once",
            ));
        }
        if target.auth.is_empty() {
            return Err(loaded.error_at(
                &format!("targets.{i}.auth"),
                "no auth mode",
                "use [\"iam\"], [\"password\"] or [\"passthrough\"]",
            ));
        }
        let modes: Vec<AuthMode> = target.auth.iter().map(|m| mode(*m)).collect();
        let principals =
            principals(loaded, &format!("targets.{i}.principals"), target.principals.as_deref())?;
        targets.push(TargetRule {
            endpoint,
            modes: AuthModes::from_modes(&modes),
            source: "static".into(),
            principals,
        });
    }
    Ok(Reloadable { tls, targets })
}

fn identity(loaded: &Loaded<Settings>) -> Result<Option<IdentityVerifier>, ConfigError> {
    let settings = &loaded.value.identity;
    if !settings.verify {
        if settings.required {
            return Err(loaded.error_at(
                "identity.required",
                "identities cannot be required when identity.verify is off",
                "set identity.verify = true",
            ));
        }
        return Ok(None);
    }
    let endpoint = match &settings.sts_endpoint {
        None => StsEndpoint::Regional,
        Some(url) => sts_endpoint(url).ok_or_else(|| {
            loaded.error_at(
                "identity.sts_endpoint",
                "expected https://host[:port], or http://127.0.0.1:port for a local test double",
                "use the same endpoint as the client proxies' upstreams.<name>.sts_endpoint",
            )
        })?,
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() && endpoint == StsEndpoint::Regional {
        return Err(loaded.error_at(
            "identity.verify",
            "no system CA certificates to verify STS with",
            "install ca-certificates in the image, or set identity.verify = false",
        ));
    }
    let tls = tls::client_config(roots, None, &[], false)
        .map_err(|e| loaded.error_at("identity.verify", e.to_string(), ""))?;
    Ok(Some(IdentityVerifier::new(IdentityConfig {
        required: settings.required,
        endpoint,
        tls,
        timeout: settings.timeout,
        clock_skew: loaded.value.limits.token_clock_skew,
    })))
}

/// `https://host[:port]`, or `http://` to a loopback address.
fn sts_endpoint(url: &str) -> Option<StsEndpoint> {
    let (https, rest) = match url.split_once("://")? {
        ("https", rest) => (true, rest),
        ("http", rest) => (false, rest),
        _ => return None,
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    if !https && !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return None;
    }
    Some(StsEndpoint::Fixed { https, host, port })
}

/// The cancel keys from their files; without any, a key of this process only, with which
/// cancels work only when they reach the replica that served the session.
fn cancel_state(loaded: &Loaded<Settings>) -> Result<Arc<CancelState>, ConfigError> {
    let settings = &loaded.value.cancel;
    let mut secrets = Vec::new();
    for (i, path) in settings.key_files.iter().enumerate() {
        let key = format!("cancel.key_files.{i}");
        let text = std::fs::read_to_string(path)
            .map_err(|e| loaded.error_at(&key, format!("cannot read {}: {e}", path.display()), ""))?;
        secrets.push(CancelKeys::parse_hex(&text).map_err(|e| {
            loaded.error_at(
                &key,
                e.to_string(),
                "create one with `openssl rand -hex 32`, or gen-certs writes cancel.key",
            )
        })?);
    }
    let keys = if secrets.is_empty() {
        CancelKeys::random()
    } else {
        CancelKeys::new(&secrets).map_err(|e| loaded.error_at("cancel.key_files", e.to_string(), ""))?
    };
    let positive = |key: &str, value: u32| {
        NonZeroU32::new(value).ok_or_else(|| loaded.error_at(key, "must be at least 1", ""))
    };
    Ok(CancelState::new(
        keys,
        positive("cancel.per_second", settings.per_second)?,
        positive("cancel.burst", settings.burst)?,
    ))
}

fn listener_tls(loaded: &Loaded<Settings>) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let listen = &loaded.value.listen;
    let required = |key: &str| {
        loaded.error_at(
            key,
            "required when listen.tls = \"required\"",
            "create certificates with `rds-auth-proxy-server gen-certs --out DIR`",
        )
    };
    let cert = listen.cert.as_ref().ok_or_else(|| required("listen.cert"))?;
    let key = listen.key.as_ref().ok_or_else(|| required("listen.key"))?;
    let chain = tls::load_certs(cert).map_err(|e| loaded.error_at("listen.cert", e.to_string(), ""))?;
    let key = tls::load_key(key).map_err(|e| loaded.error_at("listen.key", e.to_string(), ""))?;
    let client_auth = match listen.client_auth {
        ClientAuthSetting::None => ClientAuth::None,
        ClientAuthSetting::Required => {
            let ca = listen.client_ca.as_ref().ok_or_else(|| {
                loaded.error_at(
                    "listen.client_ca",
                    "required when listen.client_auth = \"required\"",
                    "point it at the CA that signs the client proxies' certificates",
                )
            })?;
            ClientAuth::Required(
                tls::load_roots(ca).map_err(|e| loaded.error_at("listen.client_ca", e.to_string(), ""))?,
            )
        }
    };
    tls::server_config(Identity { chain, key }, client_auth, &[ALPN_POSTGRESQL], listen.tls13_only).map_err(
        |e| loaded.error_at("listen.cert", e.to_string(), "the certificate and key must belong together"),
    )
}

/// Keys SIGHUP applies: the listener's certificate files and the targets. The files' contents
/// are reread even when their paths stay the same.
const RELOADABLE: &[&str] = &["listen.cert", "listen.key", "listen.client_ca", "targets"];

/// The keys that differ between two configurations but take effect only after a restart.
pub(crate) fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    diff("", &old, &new, &mut changed);
    changed.retain(|key| !RELOADABLE.iter().any(|r| key == r || key.starts_with(&format!("{r}."))));
    changed
}

fn diff(prefix: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                diff(&path, a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (a, b) if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;

    #[test]
    fn only_keys_that_need_a_restart_are_reported() {
        let old = Settings::default();
        let mut new = old.clone();
        new.listen.cert = Some("/new/server.crt".into());
        new.targets.push(TargetSetting {
            endpoint: "db.example.com:5432".into(),
            auth: default_auth(),
            principals: None,
        });
        assert!(restart_only_changes(&old, &new).is_empty());
        new.limits.max_connections = 10;
        new.listen.address = "0.0.0.0:6432".into();
        assert_eq!(restart_only_changes(&old, &new), ["limits.max_connections", "listen.address"]);
    }

    #[test]
    fn sts_endpoints() {
        assert_eq!(
            sts_endpoint("https://sts.eu-west-1.amazonaws.com"),
            Some(StsEndpoint::Fixed { https: true, host: "sts.eu-west-1.amazonaws.com".into(), port: 443 })
        );
        assert_eq!(
            sts_endpoint("http://127.0.0.1:5000/"),
            Some(StsEndpoint::Fixed { https: false, host: "127.0.0.1".into(), port: 5000 })
        );
        assert_eq!(
            sts_endpoint("http://[::1]:5000"),
            Some(StsEndpoint::Fixed { https: false, host: "::1".into(), port: 5000 })
        );
        for bad in ["http://sts.example.com", "sts.example.com", "https://a/b", "ftp://a", "https://u@a"] {
            assert_eq!(sts_endpoint(bad), None, "{bad}");
        }
    }
}
