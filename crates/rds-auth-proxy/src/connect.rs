//! `connect` and `token`: the commands that sign with AWS credentials.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use clap::Args;
use miette::{IntoDiagnostic, miette};
use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_cli::telemetry;
use rds_auth_client::{CancelRegistry, Listener, LocalSocket, Route, Shared, Target, TargetAuth};
use rds_auth_discovery::Discovery;
use rds_auth_io::certgen::CertAuthority;
use rds_auth_io::relay::RelayConfig;
use rds_auth_io::tls::{self, ALPN_POSTGRESQL, ClientAuth, Identity};
use rds_auth_startup::Secret;
use rds_auth_token::{TokenCache, TokenRequest};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::catalog::Entry;
use crate::config::{self, AuthSetting, Settings, UpstreamRoute};
use crate::{picker, usage_error, workspace};

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Targets to open listeners for, by name; without any, a picker opens on a terminal.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// The local port, overriding the target's local_port (one target only).
    #[arg(long)]
    port: Option<u16>,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The database endpoint name, exactly as RDS names it.
    #[arg(long)]
    host: String,
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// The database user the token is for.
    #[arg(long)]
    user: String,
    /// The region; taken from the endpoint name or aws.region when omitted.
    #[arg(long)]
    region: Option<String>,
    /// The account whose credentials sign (a key of `accounts`).
    #[arg(long, default_value = config::DEFAULT_ACCOUNT)]
    account: String,
}

/// A margin so a cached token is never presented with credentials about to expire.
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(60);

pub(crate) fn run(loaded: &Loaded<Settings>, args: &ConnectArgs) -> miette::Result<()> {
    let settings = &loaded.value;
    let local_tls = local_tls(loaded).unwrap_or_else(|e| usage_error(e));
    telemetry::init(settings.log.format, &settings.log.level).map_err(|e| miette!(e))?;
    if let Err(e) = rds_auth_cli::limits::raise_open_files() {
        warn!(error = %e, "cannot raise the open-file limit");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()?;
    runtime.block_on(async {
        let workspace = workspace::Workspace::new(loaded).await.unwrap_or_else(|e| usage_error(e));
        let (entries, cache) =
            workspace.catalog_for(loaded, &args.targets).await.unwrap_or_else(|e| usage_error(e));
        let chosen = choose(&entries, &args.targets).unwrap_or_else(|e| usage_error(e));
        if args.port.is_some() && chosen.len() > 1 {
            usage_error(ConfigError::general(
                "--port names one local port, but several targets were chosen",
                "give one target, or set local_port per target",
            ));
        }
        let passwords = chosen.iter().map(password_for).collect::<miette::Result<Vec<_>>>()?;
        let mut routes: BTreeMap<String, UpstreamRoute> = BTreeMap::new();
        let mut listeners = Vec::new();
        let socket_dir = socket_dir(settings)?;
        for (entry, password) in chosen.iter().zip(passwords) {
            if !routes.contains_key(&entry.upstream) {
                let route = config::upstream(loaded, &entry.upstream).unwrap_or_else(|e| usage_error(e));
                routes.insert(entry.upstream.clone(), route);
            }
            let target = Arc::new(build_target(&workspace, entry, &routes[&entry.upstream], password)?);
            let port = args.port.or(entry.local_port).unwrap_or(0);
            let tcp = bind_tcp(settings, &target.name, port).await?;
            let bound_port = match &tcp {
                Some(listener) => listener.local_addr().into_diagnostic()?.port(),
                None => port,
            };
            let unix_path = match &socket_dir {
                Some(dir) => Some(bind_unix(dir, &target.name, bound_port, &mut listeners, &target)?),
                None => None,
            };
            print_connection_help(
                &target,
                entry.user.as_deref(),
                settings,
                bound_port,
                unix_path.as_deref(),
                local_tls.is_some(),
            );
            if let Some(listener) = tcp {
                listeners.push(Listener { target: target.clone(), socket: LocalSocket::Tcp(listener) });
            }
        }
        // A stale cache served this start; refresh it for the next one, in the background.
        if workspace.discovery_enabled()
            && cache.as_ref().is_none_or(|c| c.age() > settings.discovery.cache_ttl)
        {
            let workspace = workspace.clone();
            tokio::spawn(async move { workspace.refresh_cache(false).await });
        }
        let shared = Arc::new(Shared {
            tokens: TokenCache::new(settings.proxy.token_reuse, CREDENTIAL_MARGIN),
            cancels: Arc::new(CancelRegistry::new()),
            local_tls,
            startup_timeout: settings.proxy.startup_timeout,
            handshake_timeout: settings.proxy.handshake_timeout,
            relay: RelayConfig::default(),
            drain_timeout: settings.proxy.drain_timeout,
        });
        rds_auth_client::run(listeners, shared, interrupted()).await.into_diagnostic()
    })
}

/// The named targets, or the picker's choice on a terminal, or an error listing the targets.
fn choose(entries: &[Entry], names: &[String]) -> Result<Vec<Entry>, ConfigError> {
    let available: Vec<&Entry> = entries.iter().filter(|e| e.is_target()).collect();
    let known = || available.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
    if names.is_empty() {
        if available.is_empty() {
            return Err(ConfigError::general(
                "there is no target to connect to",
                "add a [targets.<name>] section, or regions for discovery (see docs/configuration.md)",
            ));
        }
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Err(ConfigError::general(
                "no target given, and no terminal to pick one on",
                format!("run `rds-auth-proxy connect <TARGET>...`; targets: {}", known()),
            ));
        }
        return picker::pick(&available)
            .map_err(|e| ConfigError::general(e, "name the targets on the command line instead"));
    }
    names
        .iter()
        .map(|name| {
            entries.iter().find(|e| &e.name == name).cloned().ok_or_else(|| {
                ConfigError::general(format!("no target called {name:?}"), format!("targets: {}", known()))
            })
        })
        .map(|entry| {
            let entry = entry?;
            match &entry.excluded {
                Some(reason) => Err(ConfigError::general(
                    format!("{} cannot be connected to: {reason}", entry.name),
                    "see `rds-auth-proxy list --all`",
                )),
                None => Ok(entry),
            }
        })
        .collect()
}

/// The library's target for a catalog entry. Password-mode targets need `password`.
pub(crate) fn build_target(
    workspace: &workspace::Workspace,
    entry: &Entry,
    route: &UpstreamRoute,
    password: Option<Secret>,
) -> miette::Result<Target> {
    let endpoint = entry
        .endpoint()
        .ok_or_else(|| miette!("{} has an invalid endpoint {}", entry.name, entry.endpoint))?;
    let auth = match entry.auth {
        AuthSetting::Iam => TargetAuth::Iam,
        AuthSetting::Password => TargetAuth::Password(password.unwrap_or_else(|| Secret::new(Vec::new()))),
        AuthSetting::Passthrough => TargetAuth::Passthrough,
    };
    let (credentials, credentials_label) = workspace.credentials(&entry.account)?;
    Ok(Target {
        name: entry.name.clone(),
        endpoint,
        region: entry.region.clone(),
        database: entry.database.clone(),
        auth,
        route: match route {
            UpstreamRoute::ServerProxy(proxy) => Route::ServerProxy(proxy.clone()),
            UpstreamRoute::Direct(upstream) => Route::Direct(upstream.clone()),
        },
        credentials,
        credentials_label,
    })
}

async fn bind_tcp(
    settings: &Settings,
    name: &str,
    port: u16,
) -> miette::Result<Option<tokio::net::TcpListener>> {
    if !settings.proxy.tcp {
        return Ok(None);
    }
    let address = SocketAddr::new(settings.proxy.listen_address, port);
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        miette!(
            help = "choose another local_port for the target, or pass --port",
            "cannot listen on {address} for target {name}: {e}"
        )
    })?;
    Ok(Some(listener))
}

/// The Unix socket directory, made private to its owner.
fn socket_dir(settings: &Settings) -> miette::Result<Option<PathBuf>> {
    if !settings.proxy.unix_sockets {
        return Ok(None);
    }
    let dir = settings
        .proxy
        .unix_socket_dir
        .as_deref()
        .map(config::expand)
        .unwrap_or_else(config::default_socket_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| miette!("cannot create the socket directory {}: {e}", dir.display()))?;
    // Only its owner may open it: another user of the machine must not reach a listener
    // that carries your IAM identity. Setting the mode fails unless we own it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        miette!(
            help = "choose proxy.unix_socket_dir in a directory you own",
            "cannot make {} private: {e}",
            dir.display()
        )
    })?;
    Ok(Some(dir))
}

fn bind_unix(
    dir: &Path,
    name: &str,
    port: u16,
    listeners: &mut Vec<Listener>,
    target: &Arc<Target>,
) -> miette::Result<PathBuf> {
    let path = dir.join(format!(".s.PGSQL.{port}"));
    // A socket left by a proxy that did not exit cleanly.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| miette!("cannot listen on {} for target {name}: {e}", path.display()))?;
    listeners.push(Listener { target: target.clone(), socket: LocalSocket::Unix(listener, path.clone()) });
    Ok(path)
}

/// A password-mode target's password: from its environment variable, or asked for once.
fn password_for(entry: &Entry) -> miette::Result<Option<Secret>> {
    if entry.auth != AuthSetting::Password {
        return Ok(None);
    }
    if let Some(var) = &entry.password_env {
        return match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Some(Secret::new(value.into_bytes()))),
            _ => Err(miette!(
                help = format!("export {var}=..."),
                "the environment variable {var} holding the password of {} is not set",
                entry.name
            )),
        };
    }
    if !std::io::stdin().is_terminal() {
        return Err(miette!(
            help = "set password_env for the target, or run in a terminal",
            "target {} needs a password and there is no terminal to ask for it",
            entry.name
        ));
    }
    let password = inquire::Password::new(&format!("Password for {}:", entry.name))
        .without_confirmation()
        .prompt()
        .into_diagnostic()?;
    Ok(Some(Secret::new(password.into_bytes())))
}

/// The local TLS configuration, when enabled: the configured certificate, or one made now
/// for localhost with its CA written next to the configuration for `sslrootcert`.
fn local_tls(loaded: &Loaded<Settings>) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let settings = &loaded.value.proxy.local_tls;
    if !settings.enabled {
        return Ok(None);
    }
    let identity = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => Identity::load(&config::expand(cert), &config::expand(key))
            .map_err(|e| loaded.error_at("proxy.local_tls.cert", e.to_string(), ""))?,
        _ => {
            let year = Duration::from_secs(365 * 24 * 3600);
            let ca = CertAuthority::new("rds-auth-proxy local CA", year)
                .map_err(|e| ConfigError::general(e.to_string(), ""))?;
            let leaf = ca
                .issue_server(&["localhost", "127.0.0.1", "::1"], year)
                .map_err(|e| ConfigError::general(e.to_string(), ""))?;
            let ca_path = config::config_dir().join("local-ca.crt");
            let _ = std::fs::create_dir_all(config::config_dir());
            if let Err(e) = std::fs::write(&ca_path, ca.cert_pem()) {
                return Err(ConfigError::general(
                    format!("cannot write {}: {e}", ca_path.display()),
                    "check the permissions of the configuration directory",
                ));
            }
            let bad = |what: &str| ConfigError::general(format!("cannot load the generated {what}"), "");
            Identity {
                chain: vec![
                    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
                        .map_err(|_| bad("certificate"))?,
                ],
                key: PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).map_err(|_| bad("key"))?,
            }
        }
    };
    tls::server_config(identity, ClientAuth::None, &[ALPN_POSTGRESQL], false)
        .map(Some)
        .map_err(|e| loaded.error_at("proxy.local_tls.cert", e.to_string(), ""))
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    info!("shutting down: open sessions get a moment to finish");
}

/// What a person needs to connect: a psql line and a URI, for TCP and the Unix socket.
fn print_connection_help(
    target: &Target,
    user: Option<&str>,
    settings: &Settings,
    port: u16,
    unix: Option<&Path>,
    local_tls: bool,
) {
    let user = user.unwrap_or("<database user>");
    let database = target.database.as_deref().unwrap_or("postgres");
    let sslmode = if local_tls { "require" } else { "disable" };
    #[allow(clippy::print_stdout, reason = "telling the person how to connect is this command's job")]
    {
        println!("{} -> {} ({}, {})", target.name, target.endpoint, target.auth.name(), target.region);
        if settings.proxy.tcp {
            let host = settings.proxy.listen_address;
            println!("  psql \"host={host} port={port} dbname={database} user={user} sslmode={sslmode}\"");
            println!("  postgresql://{user}@{host}:{port}/{database}?sslmode={sslmode}");
        }
        if let Some(path) = unix {
            let dir = path.parent().map(|d| d.display().to_string()).unwrap_or_default();
            println!("  psql \"host={dir} port={port} dbname={database} user={user}\"");
        }
    }
}

pub(crate) fn token(loaded: &Loaded<Settings>, args: &TokenArgs) -> miette::Result<()> {
    let settings = &loaded.value;
    let region = args
        .region
        .clone()
        .or_else(|| config::region_of(&args.host))
        .or_else(|| settings.aws.region.clone())
        .ok_or_else(|| miette!(help = "pass --region", "cannot tell the region of {}", args.host))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().into_diagnostic()?;
    let credentials = runtime.block_on(async {
        let discovery =
            Discovery::new(config::discovery_config(loaded).unwrap_or_else(|e| usage_error(e))).await;
        let provider = discovery.credentials(&args.account).ok_or_else(|| {
            miette!(help = "add an [accounts.<name>] section", "no account called {:?}", args.account)
        })?;
        provider.provide_credentials().await.map_err(|e| {
            miette!(
                help = "configure AWS credentials (aws configure, aws sso login, or the AWS_* variables)",
                "no usable AWS credentials: {e}"
            )
        })
    })?;
    let request = TokenRequest { host: &args.host, port: args.port, user: &args.user, region: &region };
    let token = rds_auth_token::generate(&credentials, &request, SystemTime::now()).into_diagnostic()?;
    #[allow(clippy::print_stdout, reason = "printing the token is this command's job")]
    {
        println!("{}", token.expose());
    }
    Ok(())
}
