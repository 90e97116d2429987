//! Discovery as users meet it, against moto: `list` merging static and discovered targets,
//! the disk cache that lets `connect` start offline, a login through both proxies to a
//! discovered database (mapped to an RDS stand-in by the resolver override), and a server
//! proxy whose allowlist follows RDS while sessions are open.

use std::collections::HashMap;
use std::time::Duration;

use rds_auth_discovery::{AccountConfig, AccountCredentials, DiscoveryConfig, ProfileFiles, TagRules};
use rds_auth_integration::harness::moto::{ACCESS_KEY_ID, InstanceSpec, Moto, SECRET_ACCESS_KEY};
use rds_auth_integration::harness::proxies::{
    ClientCredentials, ClientOptions, ClientProxy, ClientTarget, InProcessOptions, InProcessServer, ProxyPki,
};
use rds_auth_integration::harness::{Listener, Psql, StandIn, StandInOptions, scratch_dir};
use rds_auth_server::{AuthModes, FollowConfig, Principals};

use crate::support::topology;

/// Client options that discover through `moto` in us-east-1. moto takes any keys, so the
/// stand-in's keys serve both discovery and the tokens.
fn discovering(
    topology: &rds_auth_integration::harness::proxies::Topology,
    moto: &Moto,
    targets: Vec<ClientTarget>,
) -> ClientOptions {
    let mut options = ClientOptions::new(topology, targets);
    options.extra_toml = format!(
        "[aws]\nregions = [\"us-east-1\"]\n\n[discovery]\nendpoint_url = \"{}\"\nallow_tags = [\"team=data*\"]\n",
        moto.endpoint_url()
    );
    options
}

async fn seed(moto: &Moto) {
    let rds = moto.rds("us-east-1");
    rds.create_instances(&[
        InstanceSpec::postgres("orders")
            .tag("team", "data-eng")
            .tag("rds-auth-proxy:local-port", "15999")
            .tag("rds-auth-proxy:db-name", "orders"),
        InstanceSpec::postgres("billing").tag("team", "data").iam(false),
        InstanceSpec::postgres("hr").tag("team", "people"),
        InstanceSpec::postgres("db").tag("team", "data"),
        InstanceSpec::postgres("shop").engine("mysql").tag("team", "data"),
    ])
    .await
    .unwrap();
}

fn json(output: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn names(entries: &[serde_json::Value]) -> Vec<&str> {
    entries.iter().map(|e| e["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn list_merges_static_and_discovered_targets_and_explains_the_rest() {
    let topology = topology().await;
    let moto = Moto::start().await.unwrap();
    seed(&moto).await;
    // A static target with a discovered name wins the clash.
    let options =
        discovering(topology, &moto, vec![ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam))]);
    let targets =
        json(&ClientProxy::run_once(&topology.standin, &options, &["list", "--json"]).await.unwrap());
    assert_eq!(names(&targets), ["db", "orders"]);
    assert_eq!(targets[0]["source"], "static");
    assert_eq!(targets[1]["source"], "discovered");
    assert_eq!(targets[1]["kind"], "instance");
    assert_eq!(targets[1]["local_port"], 15999);
    assert_eq!(targets[1]["database"], "orders");

    let all = json(
        &ClientProxy::run_once(&topology.standin, &options, &["list", "--json", "--all"]).await.unwrap(),
    );
    let reason = |name: &str| {
        all.iter().find(|e| e["name"] == name).map(|e| e["excluded"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(reason("billing").as_deref(), Some("IAM database authentication is off"));
    assert_eq!(reason("hr").as_deref(), Some("its tags do not match the tag rules"));
    assert_eq!(reason("shop"), None, "other engines are not listed at all");

    let table = ClientProxy::run_once(&topology.standin, &options, &["list", "--all"]).await.unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    eprintln!("rds-auth-proxy list --all:\n{table}");
    assert!(table.contains("NAME") && table.contains("NOT A TARGET BECAUSE"), "{table}");
    assert!(
        table.lines().any(|l| l.contains("orders") && l.contains("instance") && l.contains("15999")),
        "{table}"
    );
}

#[tokio::test]
async fn the_cache_starts_connect_offline_and_a_failed_discovery_never_blocks_static_targets() {
    let topology = topology().await;
    let moto = Moto::start().await.unwrap();
    seed(&moto).await;
    let mut options = discovering(
        topology,
        &moto,
        vec![ClientTarget::iam("static-db", topology.standin.endpoint(Listener::Pam))],
    );
    let cache_home = scratch_dir("cache-home").unwrap();
    options.env.push(("XDG_CACHE_HOME".into(), cache_home.display().to_string()));
    let listed =
        json(&ClientProxy::run_once(&topology.standin, &options, &["list", "--json"]).await.unwrap());
    assert!(names(&listed).contains(&"orders"));
    assert!(cache_home.join("rds-auth-proxy/targets.json").exists(), "list writes the cache");

    // AWS goes away. The cache still names `orders`, so connect starts at once.
    drop(moto);
    options.targets = vec![ClientTarget::iam("static-db", topology.standin.endpoint(Listener::Pam))];
    let offline =
        ClientProxy::start_named(&topology.standin, &options, &["orders", "static-db"]).await.unwrap();
    let output = Psql::local(offline.addr("static-db"), "iam_user")
        .run("SELECT 'static works offline'")
        .await
        .unwrap();
    assert!(output.success, "{}\n{}", output.stderr, offline.log());
    drop(offline);

    // No cache and no AWS: static targets still work, and the failure is reported.
    let mut fresh = options.clone();
    fresh.env.retain(|(name, _)| name != "XDG_CACHE_HOME");
    let proxy = ClientProxy::start(&topology.standin, &fresh).await.unwrap();
    let output = Psql::local(proxy.addr("static-db"), "iam_user").run("SELECT 1").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert!(proxy.log().contains("discovery failed in part"), "{}", proxy.log());
}

/// A stand-in whose endpoint is a moto-discovered name, and an in-process server proxy that
/// follows moto, mapping that name to the stand-in through its resolver override.
struct DiscoveredPath {
    moto: Moto,
    standin: StandIn,
    server: InProcessServer,
    pki: ProxyPki,
    host: String,
}

async fn discovered_path(name: &str) -> DiscoveredPath {
    let moto = Moto::start().await.unwrap();
    let rds = moto.rds("us-east-1");
    rds.create_instance(&InstanceSpec::postgres(name).tag("rds-auth-proxy", "enabled")).await.unwrap();
    let described = rds.client().describe_db_instances().db_instance_identifier(name).send().await.unwrap();
    let host = described.db_instances()[0].endpoint().and_then(|e| e.address()).unwrap().to_owned();
    let network = format!("rds-auth-db-{name}-{}", std::process::id());
    let standin = StandIn::start(StandInOptions::new().with_alias(&host).with_internal_network(&network))
        .await
        .unwrap();
    let pki = ProxyPki::new().unwrap();
    let dir = scratch_dir("server-aws").unwrap();
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        format!("[moto]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"),
    )
    .unwrap();
    let files = ProfileFiles { config: Some(dir.join("config")), credentials: Some(credentials) };
    std::fs::write(dir.join("config"), "[profile moto]\nregion = us-east-1\n").unwrap();
    let discovery = DiscoveryConfig {
        accounts: vec![AccountConfig {
            name: "default".into(),
            credentials: AccountCredentials::Profile("moto".into()),
            regions: vec!["us-east-1".into()],
        }],
        rules: TagRules::parse(&["rds-auth-proxy=enabled".into()], &[]).unwrap(),
        endpoint_url: Some(moto.endpoint_url().to_owned()),
    };
    let follow = FollowConfig {
        interval: Duration::from_millis(500),
        modes: AuthModes::IAM_ONLY,
        principals: Principals::ANYONE,
    };
    let server = InProcessServer::start(
        &pki,
        InProcessOptions {
            discovery: Some((discovery, files, follow)),
            ..InProcessOptions::new(
                Vec::new(),
                HashMap::from([(host.clone(), vec![standin.network_ip().unwrap()])]),
                standin.ca_pem_path().to_owned(),
            )
        },
    )
    .await
    .unwrap();
    DiscoveredPath { moto, standin, server, pki, host }
}

fn client_to(path: &DiscoveredPath) -> ClientOptions {
    let mut options = ClientOptions::to_server(&path.pki, path.server.addr(), Vec::new());
    options.credentials = ClientCredentials::StandIn(rds_auth_integration::harness::Signer::Static);
    options.extra_toml = format!(
        "[aws]\nregions = [\"us-east-1\"]\n\n[discovery]\nendpoint_url = \"{}\"\nallow_tags = [\"rds-auth-proxy=enabled\"]\n",
        path.moto.endpoint_url()
    );
    options
}

async fn wait_allowed(server: &InProcessServer, host: &str, allowed: bool) {
    let endpoint: rds_auth_startup::Endpoint = format!("{host}:5432").parse().unwrap();
    for _ in 0..100 {
        if server.allowlist().get(&endpoint).is_some() == allowed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{host} never became {}", if allowed { "allowed" } else { "disallowed" });
}

#[tokio::test]
async fn a_discovered_target_logs_in_through_both_proxies() {
    let path = discovered_path("pg-disc").await;
    wait_allowed(&path.server, &path.host, true).await;
    let proxy = ClientProxy::start_named(&path.standin, &client_to(&path), &["pg-disc"]).await.unwrap();
    let output = Psql::local(proxy.addr("pg-disc"), "iam_user").run("SELECT current_user").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert_eq!(output.stdout.trim(), "iam_user");
}

#[tokio::test]
async fn a_database_that_stops_matching_refuses_new_sessions_and_keeps_open_ones() {
    let path = discovered_path("pg-follow").await;
    wait_allowed(&path.server, &path.host, true).await;
    let proxy = ClientProxy::start_named(&path.standin, &client_to(&path), &["pg-follow"]).await.unwrap();
    let config = format!("host=127.0.0.1 port={} user=iam_user dbname=app", proxy.addr("pg-follow").port());
    let (open, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);

    // Someone removes the tag the server proxy's rules require.
    let rds = path.moto.rds("us-east-1");
    let arn = rds
        .client()
        .describe_db_instances()
        .db_instance_identifier("pg-follow")
        .send()
        .await
        .unwrap()
        .db_instances()[0]
        .db_instance_arn()
        .unwrap()
        .to_owned();
    rds.client()
        .remove_tags_from_resource()
        .resource_name(&arn)
        .tag_keys("rds-auth-proxy")
        .send()
        .await
        .unwrap();
    wait_allowed(&path.server, &path.host, false).await;

    let output = Psql::local(proxy.addr("pg-follow"), "iam_user").run("SELECT 1").await.unwrap();
    assert!(!output.success);
    assert!(
        output.stderr.contains(&format!("target {}:5432 is not allowed by the server proxy", path.host)),
        "{}",
        output.stderr
    );
    // The session that was open goes on.
    let row = open.query_one("SELECT 'still here'", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "still here");
}
