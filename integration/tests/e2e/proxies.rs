//! The whole path, as users take it: a client on the laptop, the client proxy on loopback, the
//! server proxy in a container that alone reaches the database's network, and the RDS
//! stand-in checking IAM tokens.

use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use rds_auth_integration::harness::proxies::{
    ClientOptions, ClientProxy, ClientTarget, SERVER_NAME, Topology,
};
use rds_auth_integration::harness::{Container, ContainerSpec, Listener, Psql, Signer};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::support::topology;

/// A client proxy with one IAM target at the stand-in's PAM listener, as alice.
pub(crate) async fn iam_proxy(topology: &Topology) -> ClientProxy {
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    ClientProxy::start(&topology.standin, &ClientOptions::new(topology, vec![target])).await.unwrap()
}

/// tokio-postgres through a client proxy, without TLS, as the proxy's printed line suggests.
pub(crate) async fn connect(
    proxy: &ClientProxy,
    target: &str,
    user: &str,
    dbname: &str,
) -> tokio_postgres::Client {
    let addr = proxy.addr(target);
    let config =
        format!("host=127.0.0.1 port={} user={user} dbname={dbname} connect_timeout=10", addr.port());
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await.unwrap_or_else(|e| {
        panic!("connecting through the proxies failed: {e:?}\nclient proxy log:\n{}", proxy.log())
    });
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn the_database_is_reachable_only_through_the_proxies() {
    let topology = topology().await;
    let standin_ip = topology.standin.network_ip().expect("the stand-in has an address");
    // A probe on the edge network, where the server proxy listens: it can reach the server
    // proxy, and neither the database's name nor its address.
    let probe = format!(
        "nc -z -w 2 {SERVER_NAME} 5432 && echo proxy=open || echo proxy=closed; \
         nc -z -w 2 pg.rds.test 5432 && echo byname=open || echo byname=closed; \
         nc -z -w 2 {standin_ip} 5432 && echo byaddr=open || echo byaddr=closed; \
         echo PROBE DONE; sleep 60"
    );
    let container = Container::start(
        ContainerSpec::new("rds-auth-proxy-test/base:bookworm")
            .with_name_prefix("rds-auth-probe")
            .with_cmd(&["/bin/sh", "-c", &probe])
            .with_network(&topology.edge_network, &[])
            .with_ready_line("PROBE DONE")
            .with_auto_remove(),
    )
    .await
    .unwrap();
    let log = container.logs();
    assert!(
        log.contains("proxy=open"),
        "the probe cannot reach the server proxy, so it proves nothing:\n{log}"
    );
    assert!(log.contains("byname=closed"), "{log}");
    assert!(log.contains("byaddr=closed"), "{log}");

    let proxy = iam_proxy(topology).await;
    let output = Psql::local(proxy.addr("db"), "iam_user")
        .dbname("demo")
        .run("SELECT current_user || ' ' || count(*) FROM greetings")
        .await
        .unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert_eq!(output.stdout.trim(), "iam_user 4");
}

#[tokio::test]
async fn simple_and_extended_queries() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let client = connect(&proxy, "db", "iam_user", "app").await;
    let rows = client.simple_query("SELECT 1; SELECT 'two'").await.unwrap();
    assert_eq!(rows.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count(), 2);
    let statement = client.prepare("SELECT $1::int + $2::int, current_user::text").await.unwrap();
    for i in 0..50 {
        let row = client.query_one(&statement, &[&i, &1]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
        assert_eq!(row.get::<_, String>(1), "iam_user");
    }
    // A transaction, and an error that must not end the session.
    let err = client.batch_execute("BEGIN; SELECT 1/0;").await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(client.query_one("SELECT 42", &[]).await.unwrap().get::<_, i32>(0), 42);
}

#[tokio::test]
async fn copy_200_mb_both_ways_keeps_every_byte() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let client = connect(&proxy, "db", "iam_user", "app").await;
    client.batch_execute("DROP TABLE IF EXISTS copy_test; CREATE TABLE copy_test (line text)").await.unwrap();

    // 200 MB of varied lines, hashed as they are sent.
    let line_len = 1000;
    let lines = 200 * 1024 * 1024 / (line_len + 1);
    let mut sent = digest::Context::new(&digest::SHA256);
    let sink = client.copy_in("COPY copy_test FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut chunk = Vec::with_capacity(1 << 20);
    for i in 0..lines {
        let seed = format!("{i:010}-");
        let mut line = seed.repeat(line_len / seed.len() + 1);
        line.truncate(line_len);
        line.push('\n');
        sent.update(line.as_bytes());
        chunk.extend_from_slice(line.as_bytes());
        if chunk.len() >= 1 << 20 {
            sink.send(Bytes::from(std::mem::take(&mut chunk))).await.unwrap();
        }
    }
    sink.send(Bytes::from(chunk)).await.unwrap();
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, lines as u64);

    let mut received = digest::Context::new(&digest::SHA256);
    let mut total = 0usize;
    let stream = client.copy_out("COPY copy_test TO STDOUT").await.unwrap();
    futures_util::pin_mut!(stream);
    while let Some(chunk) = stream.try_next().await.unwrap() {
        total += chunk.len();
        received.update(&chunk);
    }
    assert_eq!(total, lines * (line_len + 1));
    assert_eq!(sent.finish().as_ref(), received.finish().as_ref(), "COPY TO STDOUT returned other bytes");
    client.batch_execute("DROP TABLE copy_test").await.unwrap();
}

#[tokio::test]
async fn listen_notify_carries_the_real_backend_pid() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let addr = proxy.addr("db");
    let config = format!("host=127.0.0.1 port={} user=iam_user dbname=app", addr.port());
    let (client, mut connection) = tokio_postgres::connect(&config, NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.process_id(), n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    client.batch_execute("LISTEN chan; NOTIFY chan, 'hello'").await.unwrap();
    let (notifier, channel, payload) =
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    // Applications ignore their own notifications by comparing this pid with their own.
    assert_eq!(notifier, pid);
    assert_eq!((channel.as_str(), payload.as_str()), ("chan", "hello"));
}

#[tokio::test]
async fn a_50_mb_bytea_round_trips() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let client = connect(&proxy, "db", "iam_user", "app").await;
    let value: Vec<u8> =
        (0..50 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    client.batch_execute("DROP TABLE IF EXISTS blobs; CREATE TABLE blobs (b bytea)").await.unwrap();
    client.execute("INSERT INTO blobs VALUES ($1)", &[&value]).await.unwrap();
    let back: Vec<u8> = client.query_one("SELECT b FROM blobs", &[]).await.unwrap().get(0);
    assert_eq!(back.len(), value.len());
    assert!(back == value, "the bytea came back changed");
    client.batch_execute("DROP TABLE blobs").await.unwrap();
}

#[tokio::test]
async fn lo_import_goes_through_function_calls() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let file = proxy.dir().join("large-object.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    // psql's \lo_import uses libpq's large-object API, which sends FunctionCall messages.
    let output = Psql::local(proxy.addr("db"), "iam_user")
        .dbname("app")
        .run(&format!("\\lo_import {}", file.display()))
        .await
        .unwrap();
    assert!(output.success, "{}", output.stderr);
    let oid: u32 = output.stdout.trim().trim_start_matches("lo_import ").parse().unwrap();
    let client = connect(&proxy, "db", "iam_user", "app").await;
    let row = client.query_one("SELECT length(lo_get($1)), sha256(lo_get($1))", &[&oid]).await.unwrap();
    client.execute("SELECT lo_unlink($1)", &[&oid]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), data.len() as i32);
    assert_eq!(row.get::<_, Vec<u8>>(1), digest::digest(&digest::SHA256, &data).as_ref());
}

#[tokio::test]
async fn sslmodes_and_gssencmode_toward_the_client_proxy() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    for sslmode in ["disable", "prefer", "allow"] {
        let output =
            Psql::local(proxy.addr("db"), "iam_user").sslmode(sslmode).run("SELECT 'ok'").await.unwrap();
        assert!(output.success, "sslmode={sslmode}: {}", output.stderr);
    }
    let output = Psql::local(proxy.addr("db"), "iam_user")
        .env("PGGSSENCMODE", "prefer")
        .run("SELECT 'ok'")
        .await
        .unwrap();
    assert!(output.success, "gssencmode=prefer: {}", output.stderr);
    // Without local TLS, require fails in libpq itself, with a message that says why.
    let output = Psql::local(proxy.addr("db"), "iam_user").sslmode("require").run("SELECT 1").await.unwrap();
    assert!(!output.success);
    assert!(output.stderr.contains("server does not support SSL"), "{}", output.stderr);

    // With local TLS on, require works, and verify-full with the CA the proxy wrote.
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.local_tls = true;
    let tls_proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let output = Psql::local(tls_proxy.addr("db"), "iam_user")
        .sslmode("require")
        .run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    assert!(output.success, "{}\n{}", output.stderr, tls_proxy.log());
    // The database side is TLS anyway: the server proxy always verifies RDS.
    assert_eq!(output.stdout.trim(), "t");
    let local_ca = tls_proxy.dir().join("xdg/rds-auth-proxy/local-ca.crt");
    let output = Psql::local(tls_proxy.addr("db"), "iam_user")
        .sslmode("verify-full")
        .root_cert(local_ca)
        .run("SELECT 'verified'")
        .await
        .unwrap();
    assert!(output.success, "{}", output.stderr);
}

#[tokio::test]
async fn scram_in_passthrough_and_password_modes() {
    let topology = topology().await;
    let endpoint = topology.standin.endpoint(Listener::Pam);
    let targets = vec![
        ClientTarget::iam("pass", &endpoint).with_auth("passthrough"),
        ClientTarget::iam("scram", &endpoint).with_password("scram-secret"),
        ClientTarget::iam("md5", &endpoint).with_password("md5-secret"),
        ClientTarget::iam("clear", &endpoint).with_password("clear-secret"),
    ];
    let proxy = ClientProxy::start(&topology.standin, &ClientOptions::new(topology, targets)).await.unwrap();

    // Passthrough: the client does SCRAM with the database itself, through both proxies.
    let output = Psql::local(proxy.addr("pass"), "scram_user")
        .password("scram-secret")
        .run("SELECT current_user")
        .await
        .unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert_eq!(output.stdout.trim(), "scram_user");
    let output =
        Psql::local(proxy.addr("pass"), "scram_user").password("wrong").run("SELECT 1").await.unwrap();
    assert!(
        output.stderr.contains("password authentication failed for user \"scram_user\""),
        "{}",
        output.stderr
    );
    // channel_binding=require cannot work through a proxy; libpq says so itself.
    let output = Psql::local(proxy.addr("pass"), "scram_user")
        .password("scram-secret")
        .env("PGCHANNELBINDING", "require")
        .run("SELECT 1")
        .await
        .unwrap();
    assert!(!output.success);
    assert!(output.stderr.contains("channel binding"), "{}", output.stderr);

    // Password mode: the server proxy answers SCRAM (with channel binding), MD5 and cleartext.
    for (target, user) in [("scram", "scram_user"), ("md5", "md5_user"), ("clear", "password_user")] {
        let output = Psql::local(proxy.addr(target), user).run("SELECT current_user").await.unwrap();
        assert!(output.success, "{target}: {}\n{}", output.stderr, proxy.log());
        assert_eq!(output.stdout.trim(), user);
    }
}

#[tokio::test]
async fn session_credentials_make_long_tokens_that_still_work() {
    let topology = topology().await;
    // Tokens signed with a session token are over 1 000 bytes: too long for pam_exec, so the
    // target is the stand-in's front, which checks them in full.
    let target = ClientTarget::iam("front", topology.standin.endpoint(Listener::Front));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.credentials = rds_auth_integration::harness::proxies::ClientCredentials::StandIn(Signer::Session);
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let output = Psql::local(proxy.addr("front"), "app_reader").run("SELECT current_user").await.unwrap();
    assert!(output.success, "{}\n{}", output.stderr, proxy.log());
    assert_eq!(output.stdout.trim(), "app_reader");
}
