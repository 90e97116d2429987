//! The client proxy's settings: the file format, and its conversion into the library's
//! targets, validated before any port is bound.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_cli::telemetry::LogFormat;
use rds_auth_client::{
    IdentitySigning, ProxyAddress, ServerProxy, Tunnel, TunnelPort, TunnelSpec, WarmPool, WarmSettings,
};
use rds_auth_discovery::{AccountConfig, AccountCredentials, DiscoveryConfig, TagRules};
use rds_auth_io::tls::{self, ALPN_POSTGRESQL, Identity};
use rds_auth_upstream::{Resolver, UpstreamConfig};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

pub(crate) const ENV_PREFIX: &str = "RDS_AUTH_PROXY_";
/// The account that signs tokens unless a target names another.
pub(crate) const DEFAULT_ACCOUNT: &str = "default";
/// The upstream targets use unless they or their tags name another.
pub(crate) const DEFAULT_UPSTREAM: &str = "default";

/// `~/.config/rds-auth-proxy/config.toml`, or under `$XDG_CONFIG_HOME` when it is set.
pub(crate) fn default_path() -> PathBuf {
    config_dir().join("config.toml")
}

pub(crate) fn config_dir() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config").join("rds-auth-proxy")
}

/// `~/.cache/rds-auth-proxy`, or under `$XDG_CACHE_HOME`.
pub(crate) fn cache_dir() -> PathBuf {
    xdg_dir("XDG_CACHE_HOME", ".cache").join("rds-auth-proxy")
}

/// Where Unix sockets go by default: `$XDG_RUNTIME_DIR/rds-auth-proxy` (private to the user
/// on most systems), else `~/.local/state/rds-auth-proxy/sockets`.
pub(crate) fn default_socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(runtime) => runtime.join("rds-auth-proxy"),
        None => xdg_dir("XDG_STATE_HOME", ".local/state").join("rds-auth-proxy/sockets"),
    }
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
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
    pub(crate) accounts: BTreeMap<String, AccountSettings>,
    pub(crate) discovery: DiscoverySettings,
    /// Fixed addresses for endpoint names, for split DNS and direct mode.
    pub(crate) resolve: BTreeMap<String, Vec<IpAddr>>,
    pub(crate) upstreams: BTreeMap<String, UpstreamSettings>,
    pub(crate) targets: BTreeMap<String, TargetSettings>,
    pub(crate) log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProxySettings {
    /// Where TCP listeners bind. Loopback by default: anyone who can reach a listener
    /// connects with your IAM identity.
    pub(crate) listen_address: IpAddr,
    /// Open TCP listeners.
    pub(crate) tcp: bool,
    /// Also open a Unix socket per target, `.s.PGSQL.<port>` in a directory only you can open.
    pub(crate) unix_sockets: bool,
    /// The directory of the Unix sockets.
    pub(crate) unix_socket_dir: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub(crate) startup_timeout: Duration,
    /// Bounds everything from a client's StartupMessage to ReadyForQuery.
    #[serde(with = "humantime_serde")]
    pub(crate) handshake_timeout: Duration,
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
            tcp: true,
            unix_sockets: false,
            unix_socket_dir: None,
            startup_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(60),
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
    /// The AWS profile of the default account; the standard credential chain when unset.
    pub(crate) profile: Option<String>,
    /// The region of targets that name none and whose endpoint does not tell.
    pub(crate) region: Option<String>,
    /// The regions discovery searches in the default account.
    pub(crate) regions: Vec<String>,
}

/// An AWS account: how to get its credentials, and where its databases are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AccountSettings {
    pub(crate) profile: Option<String>,
    /// A role to assume, on top of `profile` or the default chain.
    pub(crate) role_arn: Option<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) regions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DiscoverySettings {
    /// Every pattern must match a database's tags: `key=value`, `key=glob*`, or `key`.
    pub(crate) allow_tags: Vec<String>,
    /// No pattern may match.
    pub(crate) block_tags: Vec<String>,
    /// How long discovered targets are used without asking AWS again; a stale cache is still
    /// used at once, and refreshed in the background.
    #[serde(with = "humantime_serde")]
    pub(crate) cache_ttl: Duration,
    /// The upstream of discovered databases without an `rds-auth-proxy:upstream` tag.
    pub(crate) default_upstream: String,
    /// Another RDS API endpoint (a test double such as moto).
    pub(crate) endpoint_url: Option<String>,
}

impl Default for DiscoverySettings {
    fn default() -> DiscoverySettings {
        DiscoverySettings {
            allow_tags: Vec::new(),
            block_tags: Vec::new(),
            cache_ttl: Duration::from_secs(600),
            default_upstream: DEFAULT_UPSTREAM.to_owned(),
            endpoint_url: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum UpstreamKind {
    /// A server proxy.
    #[default]
    ServerProxy,
    /// The database itself, for laptops that reach it (over a VPN, say).
    Direct,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSettings {
    #[serde(default)]
    pub(crate) kind: UpstreamKind,
    /// The server proxy, `host:port`; not used with a tunnel or in direct mode.
    pub(crate) address: Option<String>,
    /// Server proxy: the CA that signs its certificate. Direct: the CA bundle that verifies
    /// databases (the RDS global bundle).
    pub(crate) ca: PathBuf,
    /// Your client certificate and key (mutual TLS with a server proxy).
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// The name on the server proxy's certificate; the host part of `address` by default.
    pub(crate) server_name: Option<String>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub(crate) connect_timeout: Duration,
    /// How to reach a server proxy that is not directly reachable.
    pub(crate) tunnel: Option<TunnelSettings>,
    /// Send the server proxy a presigned sts:GetCallerIdentity, so it knows the caller's IAM
    /// identity (audit, per-role target rules).
    #[serde(default = "default_identity")]
    pub(crate) identity: bool,
    /// The STS endpoint the identity proof is signed for, when the server proxy uses a fixed
    /// one (an STS VPC endpoint); the regional endpoint of the target's region by default.
    pub(crate) sts_endpoint: Option<String>,
    /// Connections to the server proxy kept handshaked for the next session, topped up after
    /// each session; 0 turns this off.
    #[serde(default = "default_warm_connections")]
    pub(crate) warm_connections: usize,
    /// How long a warm connection waits for a session before it is closed; below the server
    /// proxy's `limits.startup_timeout` (15 s by default).
    #[serde(default = "default_warm_idle", with = "humantime_serde")]
    pub(crate) warm_idle: Duration,
}

fn default_identity() -> bool {
    true
}

fn default_warm_connections() -> usize {
    WarmSettings::default().size
}

fn default_warm_idle() -> Duration {
    WarmSettings::default().idle
}

/// The most warm connections a server proxy gets: they hold its connection slots.
const MAX_WARM_CONNECTIONS: usize = 16;

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub(crate) enum TunnelSettings {
    /// `kubectl port-forward` to a Service or Deployment; KUBECONFIG is honoured.
    Kubectl {
        /// `svc/<name>` or `deployment/<name>`.
        resource: String,
        #[serde(default = "default_remote_port")]
        remote_port: u16,
        namespace: Option<String>,
        context: Option<String>,
        kubeconfig: Option<String>,
        #[serde(default = "default_kubectl")]
        kubectl: String,
    },
    /// Any command that opens `local_port` on 127.0.0.1 and keeps it open while it runs.
    Command { command: Vec<String>, local_port: u16 },
}

fn default_remote_port() -> u16 {
    5432
}

fn default_kubectl() -> String {
    "kubectl".to_owned()
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
    /// The server proxy (or direct upstream) that serves this database: a key of `upstreams`.
    #[serde(default = "default_upstream")]
    pub(crate) upstream: String,
    /// The account whose credentials sign this database's tokens: a key of `accounts`.
    #[serde(default = "default_account")]
    pub(crate) account: String,
}

fn default_upstream() -> String {
    DEFAULT_UPSTREAM.to_owned()
}

fn default_account() -> String {
    DEFAULT_ACCOUNT.to_owned()
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

/// The accounts, the implicit `default` one included, with their regions.
pub(crate) fn accounts(settings: &Settings) -> Vec<AccountConfig> {
    let mut accounts: BTreeMap<String, AccountSettings> = settings.accounts.clone();
    let default = accounts.entry(DEFAULT_ACCOUNT.to_owned()).or_default();
    if default.profile.is_none() {
        default.profile.clone_from(&settings.aws.profile);
    }
    if default.regions.is_empty() {
        default.regions.clone_from(&settings.aws.regions);
    }
    accounts
        .into_iter()
        .map(|(name, account)| {
            let credentials = match (&account.role_arn, &account.profile) {
                (Some(role_arn), source_profile) => AccountCredentials::AssumeRole {
                    role_arn: role_arn.clone(),
                    external_id: account.external_id.clone(),
                    session_name: "rds-auth-proxy".to_owned(),
                    source_profile: source_profile.clone(),
                },
                (None, Some(profile)) => AccountCredentials::Profile(profile.clone()),
                (None, None) => AccountCredentials::Default,
            };
            AccountConfig { name, credentials, regions: account.regions }
        })
        .collect()
}

/// Discovery's configuration: every account, and the tag rules.
pub(crate) fn discovery_config(loaded: &Loaded<Settings>) -> Result<DiscoveryConfig, ConfigError> {
    let settings = &loaded.value;
    let rules =
        TagRules::parse(&settings.discovery.allow_tags, &settings.discovery.block_tags).map_err(|e| {
            loaded.error_at(
                "discovery.allow_tags",
                e.to_string(),
                "write tags as key=value, key=glob* or key",
            )
        })?;
    Ok(DiscoveryConfig {
        accounts: accounts(settings),
        rules,
        endpoint_url: settings.discovery.endpoint_url.clone(),
    })
}

/// Whether any account has regions to search.
pub(crate) fn discovery_enabled(settings: &Settings) -> bool {
    accounts(settings).iter().any(|a| !a.regions.is_empty())
}

/// The resolver overrides.
pub(crate) fn resolver(settings: &Settings) -> Resolver {
    Resolver::new(settings.resolve.clone().into_iter().collect::<HashMap<_, _>>())
}

/// One upstream, built.
#[derive(Debug, Clone)]
pub(crate) enum UpstreamRoute {
    ServerProxy(Arc<ServerProxy>),
    Direct(Arc<UpstreamConfig>),
}

/// Builds an upstream: a server proxy (with its tunnel started, which needs a runtime) or a
/// direct route to databases.
pub(crate) fn upstream(loaded: &Loaded<Settings>, name: &str) -> Result<UpstreamRoute, ConfigError> {
    let Some(upstream) = loaded.value.upstreams.get(name) else {
        let known: Vec<&str> = loaded.value.upstreams.keys().map(String::as_str).collect();
        return Err(ConfigError::general(
            format!("no upstream called {name:?}"),
            format!(
                "add an [upstreams.{name}] section with the server proxy's address and certificates{}",
                if known.is_empty() {
                    String::new()
                } else {
                    format!("; known upstreams: {}", known.join(", "))
                }
            ),
        ));
    };
    let key = |k: &str| format!("upstreams.{name}.{k}");
    let roots = tls::load_roots(&expand(&upstream.ca)).map_err(|e| {
        let help = match upstream.kind {
            UpstreamKind::ServerProxy => "point it at the CA that signs the server proxy's certificate",
            UpstreamKind::Direct => "point it at the RDS global bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem)",
        };
        loaded.error_at(&key("ca"), e.to_string(), help)
    })?;
    if upstream.kind == UpstreamKind::Direct {
        let tls = tls::client_config(roots, None, &[], false)
            .map_err(|e| loaded.error_at(&key("ca"), e.to_string(), ""))?;
        return Ok(UpstreamRoute::Direct(Arc::new(UpstreamConfig {
            tls,
            resolver: resolver(&loaded.value),
            connect_timeout: upstream.connect_timeout,
            connect_attempts: 3,
            auth_timeout: Duration::from_secs(30),
        })));
    }
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
    let (address, default_name) = match (&upstream.tunnel, &upstream.address) {
        (Some(tunnel), _) => (ProxyAddress::Tunnel(Arc::new(Tunnel::spawn(tunnel_spec(name, tunnel)))), None),
        (None, Some(address)) => {
            let host = address
                .rsplit_once(':')
                .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']').to_owned())
                .ok_or_else(|| loaded.error_at(&key("address"), "expected host:port", ""))?;
            (ProxyAddress::Fixed(address.clone()), Some(host))
        }
        (None, None) => {
            return Err(loaded.error_at(
                &key("address"),
                "a server proxy needs an address or a tunnel",
                "set address = \"host:port\"",
            ));
        }
    };
    let server_name = upstream.server_name.clone().or(default_name).ok_or_else(|| {
        loaded.error_at(
            &key("server_name"),
            "required with a tunnel: the name on the server proxy's certificate",
            "",
        )
    })?;
    let server_name = ServerName::try_from(server_name)
        .map_err(|_| loaded.error_at(&key("server_name"), "not a DNS name or IP address", ""))?;
    if upstream.warm_connections > MAX_WARM_CONNECTIONS {
        return Err(loaded.error_at(
            &key("warm_connections"),
            format!(
                "at most {MAX_WARM_CONNECTIONS}: warm connections hold the server proxy's connection slots"
            ),
            "2 covers sessions opened one after another; 0 turns warm connections off",
        ));
    }
    if upstream.warm_connections > 0
        && !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&upstream.warm_idle)
    {
        return Err(loaded.error_at(
            &key("warm_idle"),
            "must be between 100ms and 60s",
            "keep it below the server proxy's limits.startup_timeout (15s by default), which closes idle connections",
        ));
    }
    let warm = WarmSettings { size: upstream.warm_connections, idle: upstream.warm_idle };
    let tls = tls::client_config(roots, identity, &[ALPN_POSTGRESQL], true)
        .map_err(|e| loaded.error_at(&key("cert"), e.to_string(), ""))?;
    let identity = if upstream.identity {
        let sts_host = match &upstream.sts_endpoint {
            None => None,
            Some(url) => Some(sts_authority(url).ok_or_else(|| {
                loaded.error_at(
                    &key("sts_endpoint"),
                    "expected a URL such as https://sts.eu-west-1.amazonaws.com",
                    "use the same endpoint as the server proxy's identity.sts_endpoint",
                )
            })?),
        };
        Some(IdentitySigning { sts_host })
    } else {
        None
    };
    Ok(UpstreamRoute::ServerProxy(Arc::new(ServerProxy {
        name: name.to_owned(),
        address,
        server_name,
        tls,
        connect_timeout: upstream.connect_timeout,
        identity,
        warm: WarmPool::new(warm),
    })))
}

/// The host, and the port unless it is the scheme's default, of an STS endpoint URL: what
/// SigV4 signs as the `host` header.
pub(crate) fn sts_authority(url: &str) -> Option<String> {
    let (default_port, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (443, rest)
    } else {
        (80, url.strip_prefix("http://")?)
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (address, rest) = v6.split_once(']')?;
            (format!("[{address}]"), rest.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        },
    };
    match port.map(str::parse::<u16>) {
        None => Some(host),
        Some(Ok(port)) if port == default_port => Some(host),
        Some(Ok(port)) => Some(format!("{host}:{port}")),
        Some(Err(_)) => None,
    }
}

fn tunnel_spec(name: &str, tunnel: &TunnelSettings) -> TunnelSpec {
    match tunnel {
        TunnelSettings::Kubectl { resource, remote_port, namespace, context, kubeconfig, kubectl } => {
            TunnelSpec::kubectl(
                name,
                resource,
                *remote_port,
                namespace.as_deref(),
                context.as_deref(),
                kubeconfig.as_deref(),
                kubectl,
            )
        }
        TunnelSettings::Command { command, local_port } => TunnelSpec {
            name: name.to_owned(),
            program: command.first().cloned().unwrap_or_default(),
            args: command.iter().skip(1).cloned().collect(),
            port: TunnelPort::Fixed(*local_port),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_endpoints_become_the_signed_host() {
        assert_eq!(
            sts_authority("https://sts.eu-west-1.amazonaws.com").as_deref(),
            Some("sts.eu-west-1.amazonaws.com")
        );
        assert_eq!(sts_authority("https://sts.example.com:443/").as_deref(), Some("sts.example.com"));
        assert_eq!(sts_authority("http://127.0.0.1:5000").as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(sts_authority("http://[::1]:5000").as_deref(), Some("[::1]:5000"));
        assert_eq!(sts_authority("https://[fd00::1]").as_deref(), Some("[fd00::1]"));
        for bad in ["sts.example.com", "https://", "https://a/b", "https://a:x", "ftp://a"] {
            assert_eq!(sts_authority(bad), None, "{bad}");
        }
    }

    /// Out-of-range warm settings are refused with the key and the file named; the defaults
    /// give a pool of two.
    #[test]
    fn warm_settings_are_checked_and_name_their_key() {
        let dir = std::env::temp_dir().join(format!("rds-auth-warm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = rds_auth_io::certgen::CertAuthority::new("test CA", Duration::from_secs(3600)).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        let load = |extra: &str| {
            let path = dir.join("config.toml");
            let text = format!(
                "[upstreams.default]\naddress = \"proxy.example.com:5432\"\nca = {:?}\n{extra}\n",
                ca_path.display().to_string()
            );
            std::fs::write(&path, text).unwrap();
            let flags = BTreeMap::<String, String>::new();
            rds_auth_cli::config::load::<Settings, _>(&path, true, ENV_PREFIX, &flags).unwrap()
        };
        for (line, key) in [
            ("warm_connections = 17", "upstreams.default.warm_connections"),
            ("warm_idle = \"90s\"", "upstreams.default.warm_idle"),
            ("warm_idle = \"10ms\"", "upstreams.default.warm_idle"),
        ] {
            let Err(error) = upstream(&load(line), "default") else { panic!("{line} was accepted") };
            assert!(error.message().starts_with(&format!("invalid `{key}` in ")), "{}", error.message());
        }
        let Ok(UpstreamRoute::ServerProxy(proxy)) = upstream(&load(""), "default") else {
            panic!("the defaults were refused")
        };
        assert_eq!(proxy.warm.settings(), WarmSettings::default());
        assert_eq!(WarmSettings::default().size, 2);
        let Ok(UpstreamRoute::ServerProxy(proxy)) = upstream(&load("warm_connections = 0"), "default") else {
            panic!("0 was refused")
        };
        assert_eq!(proxy.warm.settings().size, 0);
    }

    #[test]
    fn region_from_endpoint() {
        assert_eq!(region_of("mydb.abc123.us-east-1.rds.amazonaws.com").as_deref(), Some("us-east-1"));
        assert_eq!(
            region_of("orders.cluster-ro-x.eu-west-1.rds.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("db.internal.example.com"), None);
    }

    #[test]
    fn the_default_account_takes_the_aws_section() {
        let settings = Settings {
            aws: AwsSettings { profile: Some("dev".into()), region: None, regions: vec!["us-east-1".into()] },
            accounts: BTreeMap::from([(
                "prod".into(),
                AccountSettings {
                    role_arn: Some("arn:aws:iam::1:role/r".into()),
                    regions: vec!["eu-west-1".into()],
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        let accounts = accounts(&settings);
        assert_eq!(accounts.len(), 2);
        assert_eq!(accounts[0].name, "default");
        assert_eq!(accounts[0].credentials, AccountCredentials::Profile("dev".into()));
        assert!(matches!(accounts[1].credentials, AccountCredentials::AssumeRole { .. }));
        assert!(discovery_enabled(&settings));
    }
}
