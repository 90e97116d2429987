//! `doctor [TARGET]`: one line per check, ✓ or ✗, and for each ✗ what to do about it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::date_time::{DateTime, Format};
use clap::Args;
use miette::IntoDiagnostic;
use rds_auth_cli::config::Loaded;
use rds_auth_client::{CancelRegistry, Shared, WarmPool, WarmSettings, check_login, check_server_proxy};
use rds_auth_io::relay::RelayConfig;
use rds_auth_token::{TokenCache, TokenRequest};

use crate::config::{self, Settings, UpstreamRoute};
use crate::workspace::Workspace;
use crate::{catalog, usage_error};

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// A target to check the whole path to: server proxy, token and a test login.
    #[arg(value_name = "TARGET")]
    target: Option<String>,
    /// The database user of the test login; the target's `user` by default.
    #[arg(long)]
    user: Option<String>,
}

/// Clocks further apart than this make tokens look expired or not yet valid.
const SKEW_WARNING: Duration = Duration::from_secs(60);

struct Report {
    failures: usize,
}

impl Report {
    #[allow(clippy::print_stdout, reason = "the report is this command's output")]
    fn ok(&mut self, check: &str, detail: impl AsRef<str>) {
        println!("✓ {check}: {}", detail.as_ref());
    }

    #[allow(clippy::print_stdout, reason = "the report is this command's output")]
    fn fail(&mut self, check: &str, detail: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failures += 1;
        println!("✗ {check}: {}", detail.as_ref());
        println!("    fix: {}", fix.as_ref());
    }
}

pub(crate) fn run(loaded: &Loaded<Settings>, args: &DoctorArgs) -> miette::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()?;
    let failures = runtime.block_on(check(loaded, args));
    if failures > 0 {
        return Err(miette::miette!("{failures} check(s) failed"));
    }
    Ok(())
}

async fn check(loaded: &Loaded<Settings>, args: &DoctorArgs) -> usize {
    let mut report = Report { failures: 0 };
    let settings = &loaded.value;
    let file = loaded
        .file()
        .map_or_else(|| "no configuration file, defaults only".to_owned(), |p| p.display().to_string());
    let workspace = match Workspace::new(loaded).await {
        Ok(workspace) => workspace,
        Err(e) => {
            report.fail("config", format!("{file}: {e}"), "see docs/configuration.md");
            return report.failures;
        }
    };
    report.ok(
        "config",
        format!(
            "{file}: {} static target(s), {} upstream(s), {} account(s)",
            settings.targets.len(),
            settings.upstreams.len(),
            config::accounts(settings).len()
        ),
    );

    // Credentials and clock, per account.
    for account in config::accounts(settings) {
        credentials(&mut report, &workspace, settings, &account.name).await;
    }

    // Discovery permissions.
    if workspace.discovery_enabled() {
        let discovered = workspace.discovery().discover().await;
        let targets = discovered.targets.iter().filter(|t| t.is_target()).count();
        if discovered.failures.is_empty() {
            report.ok(
                "discovery",
                format!("{targets} target(s) of {} database(s) found", discovered.targets.len()),
            );
        }
        for failure in &discovered.failures {
            report.fail(
                "discovery",
                format!("{} in {}: {}", failure.account, failure.region, failure.error),
                "allow rds:DescribeDBInstances, rds:DescribeDBClusters and rds:DescribeDBClusterEndpoints to this identity",
            );
        }
    } else {
        report.ok("discovery", "off (no regions configured); static targets only");
    }

    let Some(name) = &args.target else {
        report
            .ok("target", "none named; `rds-auth-proxy doctor TARGET` also checks the path to one database");
        return report.failures;
    };
    let entries = match workspace.catalog_for(loaded, std::slice::from_ref(name)).await {
        Ok((entries, _)) => entries,
        Err(e) => usage_error(e),
    };
    let Some(entry) = entries.into_iter().find(|e| &e.name == name) else {
        report.fail("target", format!("no target called {name:?}"), "run `rds-auth-proxy list --all`");
        return report.failures;
    };
    if let Some(reason) = &entry.excluded {
        report.fail(
            "target",
            format!("{name}: {reason}"),
            "enable IAM database authentication on it, or adjust discovery's tag rules",
        );
        return report.failures;
    }
    target_path(&mut report, loaded, &workspace, &entry, args.user.clone().or(entry.user.clone())).await;
    report.failures
}

async fn credentials(report: &mut Report, workspace: &Workspace, settings: &Settings, account: &str) {
    let check = format!("AWS credentials ({account})");
    let Ok((provider, label)) = workspace.credentials(account) else { return };
    let credentials = match provider.provide_credentials().await {
        Ok(credentials) => credentials,
        Err(e) => {
            report.fail(
                &check,
                format!("{label}: {e}"),
                "log in (aws sso login --profile NAME), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            );
            return;
        }
    };
    let expiry = match credentials.expiry() {
        Some(expiry) => match expiry.duration_since(SystemTime::now()) {
            Ok(left) => format!("temporary, expire in {}", humanize(left)),
            Err(_) => "expired".to_owned(),
        },
        None => "long-term keys".to_owned(),
    };
    let mut sts = aws_sdk_sts::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(
            settings.aws.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
        ))
        .credentials_provider(provider);
    if let Some(endpoint) = &settings.discovery.endpoint_url {
        sts = sts.endpoint_url(endpoint);
    }
    let date = Arc::new(Mutex::new(None));
    let client = aws_sdk_sts::Client::from_conf(sts.build());
    let identity =
        client.get_caller_identity().customize().interceptor(ServerDate(date.clone())).send().await;
    match identity {
        Ok(identity) => report.ok(
            &check,
            format!(
                "{} (account {}), {label}, {expiry}",
                identity.arn().unwrap_or("?"),
                identity.account().unwrap_or("?")
            ),
        ),
        Err(e) => {
            report.fail(
                &check,
                format!(
                    "{label}: sts:GetCallerIdentity failed: {}",
                    aws_sdk_sts::error::DisplayErrorContext(&e)
                ),
                "refresh the credentials; run `aws sts get-caller-identity` to compare",
            );
            return;
        }
    }
    let server_time = date.lock().ok().and_then(|d| *d);
    match server_time {
        Some(server) => {
            let now = SystemTime::now();
            let skew = now.duration_since(server).or_else(|_| server.duration_since(now)).unwrap_or_default();
            if skew > SKEW_WARNING {
                report.fail(
                    "clock",
                    format!("{} off from AWS", humanize(skew)),
                    "enable NTP: tokens are checked against AWS's time",
                );
            } else {
                report.ok("clock", format!("within {} of AWS", humanize(skew.max(Duration::from_secs(1)))));
            }
        }
        None => report.ok("clock", "AWS sent no Date header to compare with"),
    }
}

/// Captures the Date header of AWS's answer, to measure clock skew.
#[derive(Debug)]
struct ServerDate(Arc<Mutex<Option<SystemTime>>>);

impl Intercept for ServerDate {
    fn name(&self) -> &'static str {
        "ServerDate"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| DateTime::from_str(d, Format::HttpDate).ok());
        if let (Some(date), Ok(mut slot)) = (date, self.0.lock()) {
            *slot = SystemTime::try_from(date).ok();
        }
        Ok(())
    }
}

async fn target_path(
    report: &mut Report,
    loaded: &Loaded<Settings>,
    workspace: &Workspace,
    entry: &catalog::Entry,
    user: Option<String>,
) {
    let mut route = match config::upstream(loaded, &entry.upstream) {
        Ok(route) => route,
        Err(e) => {
            report.fail("upstream", e.to_string(), "see docs/configuration.md");
            return;
        }
    };
    // doctor exits right after its login: warm connections would only be cut off at exit.
    if let UpstreamRoute::ServerProxy(proxy) = &mut route
        && let Some(proxy) = Arc::get_mut(proxy)
    {
        proxy.warm = WarmPool::new(WarmSettings::OFF);
    }
    match &route {
        UpstreamRoute::ServerProxy(proxy) => match check_server_proxy(proxy).await {
            Ok(check) => report.ok(
                "server proxy",
                format!(
                    "{} at {}: {}, ALPN {}, certificate verified",
                    proxy.name,
                    proxy.address,
                    check.tls_version,
                    check.alpn.unwrap_or_else(|| "none".into())
                ),
            ),
            Err(e) => report.fail(
                "server proxy",
                format!("{} at {}: {e}", proxy.name, proxy.address),
                e.to_error_fields()
                    .get(b'H')
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                    .unwrap_or_default(),
            ),
        },
        UpstreamRoute::Direct(_) => report.ok("upstream", "direct: the laptop reaches the database itself"),
    }
    let Some(endpoint) = entry.endpoint() else { return };
    let Ok((provider, label)) = workspace.credentials(&entry.account) else { return };
    let user_for_token = user.clone().unwrap_or_else(|| "doctor".to_owned());
    match provider.provide_credentials().await {
        Ok(credentials) => {
            let host = endpoint.host();
            let request = TokenRequest {
                host: &host,
                port: endpoint.port(),
                user: &user_for_token,
                region: &entry.region,
            };
            match rds_auth_token::generate(&credentials, &request, SystemTime::now()) {
                Ok(token) => report.ok(
                    "token",
                    format!(
                        "signed a {}-byte token for {user_for_token}@{endpoint} ({}) with {label}",
                        token.expose().len(),
                        entry.region
                    ),
                ),
                Err(e) => report.fail("token", e.to_string(), "check the credentials"),
            }
        }
        Err(e) => report.fail("token", format!("no credentials: {e}"), "log in, then run doctor again"),
    }
    let Some(user) = user else {
        report.ok("login", "skipped: pass --user, or set user for the target");
        return;
    };
    let password = entry
        .password_env
        .as_ref()
        .and_then(|var| std::env::var(var).ok())
        .map(|p| rds_auth_startup::Secret::new(p.into_bytes()));
    let target = match crate::connect::build_target(workspace, entry, &route, password) {
        Ok(target) => Arc::new(target),
        Err(e) => {
            report.fail("login", e.to_string(), "");
            return;
        }
    };
    let shared = Arc::new(Shared {
        tokens: TokenCache::new(Duration::from_secs(600), Duration::from_secs(60)),
        cancels: Arc::new(CancelRegistry::new()),
        local_tls: None,
        startup_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(60),
        relay: RelayConfig::default(),
        drain_timeout: Duration::from_secs(1),
    });
    match check_login(target, shared, &user, entry.database.as_deref()).await {
        Ok(login) => report.ok(
            "login",
            format!(
                "{user} logged in to {} (PostgreSQL {}, backend pid {})",
                entry.name,
                login.server_version.unwrap_or_else(|| "?".into()),
                login.backend_pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            ),
        ),
        Err(fields) => {
            let sqlstate = fields.sqlstate().map(|s| s.to_string()).unwrap_or_default();
            let hint = fields
                .get(b'H')
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .unwrap_or_else(|| "see the server proxy's log for this session".to_owned());
            report.fail("login", format!("{sqlstate} {}", fields.message()), hint);
        }
    }
}

fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}
