//! Query cancel through both proxies: psql's Ctrl-C, tokio-postgres, psycopg and asyncpg, with
//! one server-proxy replica and with two behind a round-robin front; stale, forged and
//! foreign keys dropped; vanished clients' statements cancelled; 50 cancels at once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rds_auth_codec::StartupPacket;
use rds_auth_codec::startup::CancelRequest;
use rds_auth_integration::harness::proxies::{
    ClientOptions, ClientProxy, ClientTarget, RoundRobin, Topology,
};
use rds_auth_integration::harness::{Listener, target_dir};
use rds_auth_io::PgStream;
use tokio::net::TcpStream;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::proxies::{connect, iam_proxy};
use crate::support::{raw_cancel, raw_server_session, running, topology, wait_running};

/// A query that runs a minute unless cancelled, named so concurrent tests tell theirs apart.
fn sleeper(name: &str) -> String {
    format!("SELECT pg_sleep(60) /* {name} */")
}

/// Runs `query` on `client` and returns its SQLSTATE once it ends.
async fn run_until_cancelled(client: &tokio_postgres::Client, query: &str) -> Option<SqlState> {
    client.batch_execute(query).await.err().and_then(|e| e.code().cloned())
}

async fn kill(pid: u32, signal: &str) {
    let status =
        tokio::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await;
    assert!(status.is_ok_and(|s| s.success()), "cannot send {signal} to {pid}");
}

#[tokio::test]
async fn psql_ctrl_c_cancels_through_both_proxies() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let watcher = connect(&proxy, "db", "iam_user", "app").await;
    let query = sleeper("psql ctrl-c");
    let addr = proxy.addr("db");
    let psql = tokio::process::Command::new("psql")
        .args(["-X", "-c", &query])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", "iam_user")
        .env("PGDATABASE", "app")
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_running(&watcher, &query, true).await;
    let started = Instant::now();
    // psql's SIGINT handler sends a CancelRequest, in plaintext, on a new connection.
    kill(psql.id().unwrap(), "INT").await;
    let output =
        tokio::time::timeout(Duration::from_secs(30), psql.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("canceling statement due to user request"), "{stderr}\n{}", proxy.log());
    eprintln!("psql Ctrl-C: cancelled in {:?}", started.elapsed());
    assert_eq!(running(&watcher, &query).await, 0);
}

#[tokio::test]
async fn tokio_postgres_cancel_token_cancels() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let client = connect(&proxy, "db", "iam_user", "app").await;
    let watcher = connect(&proxy, "db", "iam_user", "app").await;
    let query = sleeper("tokio-postgres");
    let token = client.cancel_token();
    let running_query = tokio::spawn({
        let query = query.clone();
        async move { run_until_cancelled(&client, &query).await }
    });
    wait_running(&watcher, &query, true).await;
    token.cancel_query(NoTls).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), running_query).await.unwrap().unwrap();
    assert_eq!(code, Some(SqlState::QUERY_CANCELED));
}

async fn python(driver: &str, proxy: &ClientProxy, target: &str) {
    let venv = target_dir().join("e2e-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `cargo xtask test`, which installs integration/python/requirements.txt",
        venv.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/cancel.py");
    let addr = proxy.addr(target);
    let output = tokio::process::Command::new(venv)
        .arg(script)
        .args([driver, "127.0.0.1", &addr.port().to_string(), "iam_user", "app"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{driver}: {stdout}{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        proxy.log()
    );
    eprintln!("{driver}: {}", stdout.trim());
}

#[tokio::test]
async fn psycopg_cancels() {
    let topology = topology().await;
    python("psycopg", &iam_proxy(topology).await, "db").await;
}

#[tokio::test]
async fn asyncpg_cancels() {
    let topology = topology().await;
    python("asyncpg", &iam_proxy(topology).await, "db").await;
}

/// A client proxy whose server proxy is the round-robin front over both replicas.
async fn replicated_proxy(topology: &Topology) -> ClientProxy {
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.server_addr = topology.front.addr();
    ClientProxy::start(&topology.standin, &options).await.unwrap()
}

#[tokio::test]
async fn cancels_land_on_the_other_replica() {
    let topology = topology().await;
    // A front of this test's own, so the order is known: connection 0 (the watcher) goes to
    // the first replica, then each session to the second and its cancel to the first. Every
    // cancel thus reaches a replica that never saw its session, and only the shared key
    // lets it through.
    let front = RoundRobin::start(vec![topology.server.addr(), topology.replica.addr()]).await.unwrap();
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.server_addr = front.addr();
    // Warm connections would take turns at the front ahead of the sessions and scramble the order.
    options.env.push(("RDS_AUTH_PROXY_UPSTREAMS__DEFAULT__WARM_CONNECTIONS".to_owned(), "0".to_owned()));
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let watcher = connect(&proxy, "db", "iam_user", "app").await;
    // Which replica holds a session, from the client address Postgres sees: the order above is
    // what makes every cancel cross replicas, so it is checked, not assumed.
    let replica_of = |ip: String| {
        if ip == topology.server.db_ip().to_string() {
            "first"
        } else if ip == topology.replica.db_ip().to_string() {
            "second"
        } else {
            panic!("a session from {ip}, neither replica")
        }
    };
    let client_ip = "SELECT host(inet_client_addr())";
    assert_eq!(replica_of(watcher.query_one(client_ip, &[]).await.unwrap().get(0)), "first");
    for round in 0..4 {
        let client = connect(&proxy, "db", "iam_user", "app").await;
        let replica = replica_of(client.query_one(client_ip, &[]).await.unwrap().get(0));
        assert_eq!(replica, "second", "round {round}: the session must be on the replica its cancel skips");
        let query = sleeper(&format!("replicas {round}"));
        let token = client.cancel_token();
        let running_query = tokio::spawn({
            let query = query.clone();
            async move { run_until_cancelled(&client, &query).await }
        });
        wait_running(&watcher, &query, true).await;
        token.cancel_query(NoTls).await.unwrap();
        let code = tokio::time::timeout(Duration::from_secs(30), running_query).await.unwrap().unwrap();
        assert_eq!(code, Some(SqlState::QUERY_CANCELED), "round {round}");
    }
}

#[tokio::test]
async fn psycopg_and_asyncpg_through_two_replicas() {
    let topology = topology().await;
    let proxy = replicated_proxy(topology).await;
    python("psycopg", &proxy, "db").await;
    python("asyncpg", &proxy, "db").await;
}

#[tokio::test]
async fn a_cancel_for_a_finished_session_touches_nothing() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let watcher = connect(&proxy, "db", "iam_user", "app").await;
    // The first session ends; its key must not cancel what runs afterwards.
    let finished = connect(&proxy, "db", "iam_user", "app").await;
    let stale = finished.cancel_token();
    drop(finished);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = connect(&proxy, "db", "iam_user", "app").await;
    let query = "SELECT pg_sleep(2) /* stale key */";
    let running_query = tokio::spawn(async move { client.batch_execute(query).await });
    wait_running(&watcher, query, true).await;
    stale.cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), running_query).await.unwrap().unwrap();
    assert!(result.is_ok(), "a stale key cancelled another session's query: {result:?}");
}

#[tokio::test]
async fn forged_and_foreign_keys_are_dropped_and_the_query_runs_on() {
    let topology = topology().await;
    let endpoint = topology.standin.endpoint(Listener::Pam);
    let token = topology
        .standin
        .token("iam_user", Listener::Pam, rds_auth_integration::harness::Signer::Static)
        .unwrap();
    // Alice's session, straight to the server proxy: its key is the sealed cancel token.
    let (mut session, key) = raw_server_session(
        topology.server.addr(),
        &topology.pki.alice,
        &[("user", "iam_user"), ("database", "app"), ("host", &endpoint), ("password", &token)],
    )
    .await;
    assert!(key.key.len() > 32, "the server proxy hands out a sealed key, not the database's");
    let query = "SELECT pg_sleep(60) /* foreign key */";
    let mut body = query.as_bytes().to_vec();
    body.push(0);
    session.send(&rds_auth_codec::frame::Frame::new(b'Q', body).to_bytes()).await.unwrap();
    let proxy = iam_proxy(topology).await;
    let watcher = connect(&proxy, "db", "iam_user", "app").await;
    wait_running(&watcher, query, true).await;

    // Bob presents Alice's key: he does not own the session.
    raw_cancel(topology.server.addr(), &topology.pki.bob, key.pid, key.key.clone()).await;
    // A forged key and an edited one open nothing.
    raw_cancel(topology.server.addr(), &topology.pki.alice, key.pid, vec![7u8; key.key.len()].into()).await;
    let mut edited = key.key.to_vec();
    edited[20] ^= 1;
    raw_cancel(topology.server.addr(), &topology.pki.alice, key.pid, edited.into()).await;
    // A forged 3.0 key at the client proxy finds no session.
    let mut tcp = PgStream::new(TcpStream::connect(proxy.addr("db")).await.unwrap());
    let forged = StartupPacket::CancelRequest(CancelRequest { pid: key.pid, key: vec![1, 2, 3, 4].into() });
    tcp.send(&forged.to_bytes()).await.unwrap();
    assert!(!tcp.fill_first().await.unwrap_or(false), "a cancel got an answer");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(running(&watcher, query).await, 1, "a refused cancel stopped the query");

    // The owner's cancel, on the other replica, works: the keys travel, the owner check holds.
    raw_cancel(topology.replica.addr(), &topology.pki.alice, key.pid, key.key.clone()).await;
    wait_running(&watcher, query, false).await;
    let log = topology.server.container().logs();
    assert!(log.contains("the caller does not own the session"), "{log}");
}

#[tokio::test]
async fn a_vanished_client_has_its_statement_cancelled() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let watcher = connect(&proxy, "db", "iam_user", "app").await;
    let query = sleeper("vanished client");
    let addr = proxy.addr("db");
    let psql = tokio::process::Command::new("psql")
        .args(["-X", "-c", &query])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", "iam_user")
        .env("PGDATABASE", "app")
        .env("PGSSLMODE", "disable")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_running(&watcher, &query, true).await;
    // SIGKILL: psql cannot send a cancel or a Terminate; its socket just closes.
    kill(psql.id().unwrap(), "KILL").await;
    let gone = wait_running(&watcher, &query, false).await;
    eprintln!("vanished client: statement gone from pg_stat_activity after {gone:?}");
}

#[tokio::test]
async fn fifty_sessions_cancelled_at_once_all_land() {
    let topology = topology().await;
    let proxy = replicated_proxy(topology).await;
    let watcher = connect(&proxy, "db", "iam_user", "app").await;
    let mut tokens = Vec::new();
    let mut queries = Vec::new();
    for i in 0..50 {
        let client = connect(&proxy, "db", "iam_user", "app").await;
        tokens.push(client.cancel_token());
        let query = sleeper(&format!("fifty {i}"));
        queries.push(tokio::spawn(async move { run_until_cancelled(&client, &query).await }));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let n: i64 = watcher
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60) /* fifty %' AND state = 'active'", &[])
            .await
            .unwrap()
            .get(0);
        if n == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancels =
        tokens.into_iter().map(|token| tokio::spawn(async move { token.cancel_query(NoTls).await }));
    for cancel in futures_util::future::join_all(cancels).await {
        cancel.unwrap().unwrap();
    }
    for query in queries {
        let code = tokio::time::timeout(Duration::from_secs(30), query).await.unwrap().unwrap();
        assert_eq!(code, Some(SqlState::QUERY_CANCELED));
    }
}
