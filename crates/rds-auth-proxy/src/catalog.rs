//! The targets a user can connect to: the static ones of the configuration merged with the
//! databases discovery found, and the disk cache that makes `connect` start at once, even
//! offline.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rds_auth_cli::config::{ConfigError, Loaded};
use rds_auth_discovery::{DiscoveredTarget, DiscoveryReport, Exclusion, TargetKind};
use rds_auth_startup::Endpoint;
use serde::{Deserialize, Serialize};

use crate::config::{self, AuthSetting, Settings};

/// Where a target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    Static,
    Discovered,
}

/// One target, whatever its source.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) source: Source,
    pub(crate) kind: String,
    pub(crate) engine: String,
    pub(crate) engine_version: String,
    pub(crate) endpoint: String,
    pub(crate) region: String,
    pub(crate) account: String,
    pub(crate) iam: bool,
    pub(crate) local_port: Option<u16>,
    pub(crate) upstream: String,
    pub(crate) database: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) auth: AuthSetting,
    pub(crate) password_env: Option<String>,
    /// Why discovery does not offer it; such entries appear only in `list --all`.
    pub(crate) excluded: Option<String>,
}

impl Entry {
    pub(crate) fn is_target(&self) -> bool {
        self.excluded.is_none()
    }

    pub(crate) fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint.parse().ok()
    }
}

fn kind_name(kind: &TargetKind) -> &'static str {
    match kind {
        TargetKind::Instance => "instance",
        TargetKind::ClusterWriter => "cluster-writer",
        TargetKind::ClusterReader => "cluster-reader",
        TargetKind::ClusterCustom => "custom",
    }
}

fn exclusion(excluded: &Exclusion) -> String {
    match excluded {
        Exclusion::IamDisabled => "IAM database authentication is off".to_owned(),
        Exclusion::TagRules => "its tags do not match the tag rules".to_owned(),
        Exclusion::NotAvailable { status } => format!("its status is {status}"),
    }
}

/// Static targets, validated, then the discovered ones; on a name clash the static one wins.
pub(crate) fn build(
    loaded: &Loaded<Settings>,
    discovered: &[DiscoveredTarget],
) -> Result<Vec<Entry>, ConfigError> {
    let settings = &loaded.value;
    let mut entries = Vec::new();
    for (name, target) in &settings.targets {
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
            .or_else(|| config::region_of(&endpoint.host()))
            .or_else(|| settings.aws.region.clone())
            .ok_or_else(|| {
                loaded.error_at(
                    &key("endpoint"),
                    "cannot tell the region from this endpoint",
                    "set region for the target, or aws.region",
                )
            })?;
        if target.auth != AuthSetting::Password && target.password_env.is_some() {
            return Err(loaded.error_at(&key("password_env"), "only used with auth = \"password\"", ""));
        }
        if target.account != config::DEFAULT_ACCOUNT && !settings.accounts.contains_key(&target.account) {
            return Err(loaded.error_at(
                &key("account"),
                format!("no account called {:?}", target.account),
                "add an [accounts.<name>] section",
            ));
        }
        entries.push(Entry {
            name: name.clone(),
            source: Source::Static,
            kind: "static".to_owned(),
            engine: String::new(),
            engine_version: String::new(),
            endpoint: endpoint.to_string(),
            region,
            account: target.account.clone(),
            iam: target.auth == AuthSetting::Iam,
            local_port: target.local_port,
            upstream: target.upstream.clone(),
            database: target.database.clone(),
            user: target.user.clone(),
            auth: target.auth,
            password_env: target.password_env.clone(),
            excluded: None,
        });
    }
    for found in discovered {
        if settings.targets.contains_key(&found.name) {
            continue;
        }
        entries.push(Entry {
            name: found.name.clone(),
            source: Source::Discovered,
            kind: kind_name(&found.kind).to_owned(),
            engine: found.engine.clone(),
            engine_version: found.engine_version.clone(),
            endpoint: format!("{}:{}", found.host, found.port),
            region: found.region.clone(),
            account: found.account.clone(),
            iam: found.iam_enabled,
            local_port: found.local_port,
            upstream: found.upstream.clone().unwrap_or_else(|| settings.discovery.default_upstream.clone()),
            database: found.database.clone(),
            user: None,
            auth: AuthSetting::Iam,
            password_env: None,
            excluded: found.excluded.as_ref().map(exclusion),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Discovered targets as last seen, with when and for which configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cache {
    pub(crate) version: u32,
    /// Unix seconds.
    pub(crate) fetched_at: u64,
    /// The discovery configuration it was made with; another configuration ignores it.
    pub(crate) fingerprint: String,
    pub(crate) targets: Vec<DiscoveredTarget>,
    /// Accounts and regions that failed, as `account/region: reason`.
    pub(crate) failures: Vec<String>,
}

const CACHE_VERSION: u32 = 1;

pub(crate) fn cache_path() -> PathBuf {
    config::cache_dir().join("targets.json")
}

/// Identifies a discovery configuration: accounts, regions, rules and endpoint.
pub(crate) fn fingerprint(settings: &Settings) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        settings.accounts,
        settings.aws,
        settings.discovery.allow_tags,
        settings.discovery.block_tags,
        settings.discovery.endpoint_url
    );
    // FNV-1a: a stable fingerprint, not a security boundary.
    let hash = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

impl Cache {
    pub(crate) fn from_report(settings: &Settings, report: &DiscoveryReport) -> Cache {
        Cache {
            version: CACHE_VERSION,
            fetched_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
            fingerprint: fingerprint(settings),
            targets: report.targets.clone(),
            failures: report
                .failures
                .iter()
                .map(|f| format!("{}/{}: {}", f.account, f.region, f.error))
                .collect(),
        }
    }

    /// The cache for this configuration, if there is one.
    pub(crate) fn load(settings: &Settings) -> Option<Cache> {
        let text = std::fs::read_to_string(cache_path()).ok()?;
        let cache: Cache = serde_json::from_str(&text).ok()?;
        (cache.version == CACHE_VERSION && cache.fingerprint == fingerprint(settings)).then_some(cache)
    }

    /// Writes the cache atomically (a temporary file, then a rename).
    pub(crate) fn store(&self) -> std::io::Result<()> {
        let path = cache_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&temporary, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(temporary, path)
    }

    pub(crate) fn age(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        Duration::from_secs(now.saturating_sub(self.fetched_at))
    }
}
