//! `connect` and `token`: the commands that sign with AWS credentials.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use clap::Args;
use miette::{IntoDiagnostic, miette};
use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_cli::telemetry;
use rds_auth_client::{CancelRegistry, Listener, Route, Shared, Target, TargetAuth};
use rds_auth_io::certgen::CertAuthority;
use rds_auth_io::relay::RelayConfig;
use rds_auth_io::tls::{self, ALPN_POSTGRESQL, ClientAuth, Identity};
use rds_auth_startup::Secret;
use rds_auth_token::{TokenCache, TokenRequest};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::config::{self, AuthSetting, Settings, TargetPlan};
use crate::usage_error;

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Targets to open listeners for, by name.
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
}

/// A margin so a cached token is never presented with less than five minutes to live.
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(60);

pub(crate) fn run(loaded: &Loaded<Settings>, args: &ConnectArgs) -> miette::Result<()> {
    let settings = &loaded.value;
    let plans = choose_targets(loaded, args).unwrap_or_else(|e| usage_error(e));
    if args.port.is_some() && plans.len() > 1 {
        usage_error(ConfigError::general(
            "--port names one local port, but several targets were given",
            "give one target, or set local_port per target",
        ));
    }
    let mut proxies = BTreeMap::new();
    for plan in &plans {
        if !proxies.contains_key(&plan.settings.upstream) {
            let proxy =
                config::server_proxy(loaded, &plan.settings.upstream).unwrap_or_else(|e| usage_error(e));
            proxies.insert(plan.settings.upstream.clone(), proxy);
        }
    }
    let local_tls = local_tls(loaded).unwrap_or_else(|e| usage_error(e));
    let passwords = plans.iter().map(password_for).collect::<miette::Result<Vec<_>>>()?;
    telemetry::init(settings.log.format, &settings.log.level).map_err(|e| miette!(e))?;
    if let Err(e) = rds_auth_cli::limits::raise_open_files() {
        warn!(error = %e, "cannot raise the open-file limit");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()?;
    runtime.block_on(async {
        let credentials = credentials_provider(settings.aws.profile.as_deref()).await;
        let label = settings
            .aws
            .profile
            .clone()
            .map_or_else(|| "the default AWS credential chain".to_owned(), |p| format!("profile {p}"));
        let mut listeners = Vec::new();
        for (plan, password) in plans.iter().zip(passwords) {
            let auth = match plan.settings.auth {
                AuthSetting::Iam => TargetAuth::Iam,
                AuthSetting::Password => {
                    TargetAuth::Password(password.unwrap_or_else(|| Secret::new(Vec::new())))
                }
                AuthSetting::Passthrough => TargetAuth::Passthrough,
            };
            let target = Arc::new(Target {
                name: plan.name.clone(),
                endpoint: plan.endpoint.clone(),
                region: plan.region.clone(),
                database: plan.settings.database.clone(),
                auth,
                route: Route::ServerProxy(proxies[&plan.settings.upstream].clone()),
                credentials: credentials.clone(),
                credentials_label: label.clone(),
            });
            let port = args.port.or(plan.settings.local_port).unwrap_or(0);
            let address = SocketAddr::new(settings.proxy.listen_address, port);
            let socket = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                miette!(
                    help = "choose another local_port for the target, or pass --port",
                    "cannot listen on {address} for target {}: {e}",
                    plan.name
                )
            })?;
            let bound = socket.local_addr().into_diagnostic()?;
            print_connection_help(&target, plan.settings.user.as_deref(), bound, local_tls.is_some());
            listeners.push(Listener { target, socket });
        }
        let shared = Arc::new(Shared {
            tokens: TokenCache::new(settings.proxy.token_reuse, CREDENTIAL_MARGIN),
            cancels: Arc::new(CancelRegistry::new()),
            local_tls,
            startup_timeout: settings.proxy.startup_timeout,
            relay: RelayConfig::default(),
            drain_timeout: settings.proxy.drain_timeout,
        });
        rds_auth_client::run(listeners, shared, interrupted()).await.into_diagnostic()
    })
}

/// The targets named on the command line, or an error that lists the known ones.
fn choose_targets(loaded: &Loaded<Settings>, args: &ConnectArgs) -> Result<Vec<TargetPlan>, ConfigError> {
    if args.targets.is_empty() {
        let known: Vec<&str> = loaded.value.targets.keys().map(String::as_str).collect();
        return Err(ConfigError::general(
            "no target given",
            if known.is_empty() {
                "add a [targets.<name>] section to the configuration (see docs/configuration.md)".to_owned()
            } else {
                format!("run `rds-auth-proxy connect <TARGET>...`; known targets: {}", known.join(", "))
            },
        ));
    }
    args.targets.iter().map(|name| config::plan_target(loaded, name)).collect()
}

/// A password-mode target's password: from its environment variable, or asked for once.
fn password_for(plan: &TargetPlan) -> miette::Result<Option<Secret>> {
    if plan.settings.auth != AuthSetting::Password {
        return Ok(None);
    }
    if let Some(var) = &plan.settings.password_env {
        return match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Some(Secret::new(value.into_bytes()))),
            _ => Err(miette!(
                help = format!("export {var}=..."),
                "the environment variable {var} holding the password of {} is not set",
                plan.name
            )),
        };
    }
    if !std::io::stdin().is_terminal() {
        return Err(miette!(
            help = "set password_env for the target, or run in a terminal",
            "target {} needs a password and there is no terminal to ask for it",
            plan.name
        ));
    }
    let password = inquire::Password::new(&format!("Password for {}:", plan.name))
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
            let ca = CertAuthority::new("rds-auth-proxy local CA", Duration::from_secs(365 * 24 * 3600))
                .map_err(|e| ConfigError::general(e.to_string(), ""))?;
            let leaf = ca
                .issue_server(&["localhost", "127.0.0.1", "::1"], Duration::from_secs(365 * 24 * 3600))
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

async fn credentials_provider(profile: Option<&str>) -> SharedCredentialsProvider {
    // Tokens carry each target's own region; naming one here only stops the SDK from asking
    // the instance metadata service for a region a laptop does not have.
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(aws_config::Region::new("us-east-1"));
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    let sdk = loader.load().await;
    sdk.credentials_provider().unwrap_or_else(|| SharedCredentialsProvider::new(NoCredentials))
}

/// Used when the credential chain is empty, so the error names the fix at connect time.
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no AWS credential provider is configured",
            ),
        ))
    }
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

/// What a person needs to connect: a psql line and a URI.
fn print_connection_help(target: &Target, user: Option<&str>, bound: SocketAddr, local_tls: bool) {
    let user = user.unwrap_or("<database user>");
    let database = target.database.as_deref().unwrap_or("postgres");
    let host = bound.ip();
    let port = bound.port();
    let sslmode = if local_tls { "require" } else { "disable" };
    #[allow(clippy::print_stdout, reason = "telling the person how to connect is this command's job")]
    {
        println!("{} -> {} ({}, {})", target.name, target.endpoint, target.auth.name(), target.region);
        println!("  psql \"host={host} port={port} dbname={database} user={user} sslmode={sslmode}\"");
        println!("  postgresql://{user}@{host}:{port}/{database}?sslmode={sslmode}");
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
        credentials_provider(settings.aws.profile.as_deref()).await.provide_credentials().await
    });
    let credentials = credentials.map_err(|e| {
        miette!(
            help = "configure AWS credentials (aws configure, aws sso login, or the AWS_* variables)",
            "no usable AWS credentials: {e}"
        )
    })?;
    let request = TokenRequest { host: &args.host, port: args.port, user: &args.user, region: &region };
    let token = rds_auth_token::generate(&credentials, &request, SystemTime::now()).into_diagnostic()?;
    #[allow(clippy::print_stdout, reason = "printing the token is this command's job")]
    {
        println!("{}", token.expose());
    }
    Ok(())
}
