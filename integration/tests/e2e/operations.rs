//! Running the server proxy: health endpoints, metrics, audit lines, signals, reloads, limits,
//! PROXY protocol and callers' IAM identities. The server proxy runs as a host process here,
//! so its health port, signals, files and memory are within reach.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rds_auth_integration::harness::host_server::{HostServer, HostServerOptions};
use rds_auth_integration::harness::moto::Moto;
use rds_auth_integration::harness::proxies::{
    AllowedTarget, ClientOptions, ClientProxy, ClientTarget, ProxyPki,
};
use rds_auth_integration::harness::{Listener, Psql, StandIn};
use tokio::io::AsyncWriteExt;

use crate::support::standin;

/// A host server proxy allowing the stand-in's PAM listener in IAM and password mode.
async fn server(standin: &StandIn, pki: &ProxyPki, extra_toml: &str) -> HostServer {
    let mut options = HostServerOptions::new(vec![AllowedTarget::new(
        standin.endpoint(Listener::Pam),
        &["iam", "password"],
    )]);
    options.extra_toml = extra_toml.to_owned();
    options.json_logs = true;
    HostServer::start(standin, pki, &options).await.unwrap()
}

/// A client proxy with one IAM target, `db`, through `server`.
async fn client(standin: &StandIn, pki: &ProxyPki, server: &HostServer) -> ClientProxy {
    let target = ClientTarget::iam("db", standin.endpoint(Listener::Pam));
    let options = ClientOptions::to_server(pki, server.addr(), vec![target]);
    ClientProxy::start(standin, &options).await.unwrap()
}

async fn select_one(proxy: &ClientProxy) -> Result<(), String> {
    let output = Psql::local(proxy.addr("db"), "iam_user").dbname("app").run("SELECT 1").await.unwrap();
    if output.success { Ok(()) } else { Err(output.stderr) }
}

/// The JSON audit lines of a server proxy's log (events are flattened: fields at the top).
fn audit_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["audit"] == serde_json::Value::Bool(true))
        .collect()
}

#[tokio::test]
async fn health_metrics_and_audit_follow_a_session() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = server(standin, &pki, "").await;
    for (path, status, body) in [
        ("/startup", 200, "started"),
        ("/liveness", 200, "alive"),
        ("/readiness", 200, "ready"),
        ("/nothing", 404, "not found"),
    ] {
        let (got, text) = server.get(path).await.unwrap();
        assert_eq!((got, text.trim_end().starts_with(body)), (status, true), "{path}: {got} {text}");
    }
    let proxy = client(standin, &pki, &server).await;
    select_one(&proxy).await.unwrap();
    // psql has its answer before the server proxy is done with the session (the Terminate, the
    // last counts): read the metrics once it is.
    wait_for_metric(&server, "rds_auth_proxy_sessions_open", 0.0).await;
    let (status, metrics) = server.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let value = |series: &str| rds_auth_integration::harness::host_server::metric_value(&metrics, series);
    assert_eq!(
        value("rds_auth_proxy_connections_total{result=\"accepted\",reason=\"ready\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(value("rds_auth_proxy_handshake_own_seconds_count"), Some(1.0), "{metrics}");
    assert_eq!(value("rds_auth_proxy_upstream_connect_seconds_count"), Some(1.0), "{metrics}");
    assert!(value("rds_auth_proxy_bytes_total{direction=\"to_db\"}").is_some_and(|b| b > 0.0), "{metrics}");
    assert!(value("rds_auth_proxy_bytes_total{direction=\"from_db\"}").is_some_and(|b| b > 0.0), "{metrics}");
    let own = value("rds_auth_proxy_handshake_own_seconds_sum").unwrap();
    eprintln!("the proxy's own handshake time (debug build): {:.3} ms", own * 1000.0);
    assert!(own > 0.0 && own < 1.0, "{own}");

    // One audit line, with every field, and no secret.
    let started = Instant::now();
    let lines = loop {
        let lines = audit_lines(&server.log());
        if !lines.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), 1, "{}", server.log());
    let fields = &lines[0];
    assert_eq!(fields["outcome"], "ended");
    assert_eq!(fields["client.subject"].as_str().map(|s| s.contains("alice@corp")), Some(true), "{fields}");
    assert_eq!(fields["aws.access_key_id"], rds_auth_integration::harness::STATIC_ACCESS_KEY_ID);
    assert_eq!(fields["db.user"], "iam_user");
    assert_eq!(fields["db.name"], "app");
    assert_eq!(fields["db.target"], standin.endpoint(Listener::Pam));
    assert_eq!(fields["app.name"], "rds-auth-e2e");
    assert_eq!(fields["auth.mode"], "iam");
    assert!(fields["client.addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{fields}");
    assert!(fields["bytes.to_db"].as_u64().is_some_and(|b| b > 0), "{fields}");
    assert!(fields["bytes.from_db"].as_u64().is_some_and(|b| b > 0), "{fields}");
    assert!(fields["duration_ms"].as_u64().is_some(), "{fields}");
    assert_eq!(fields["conn.id"].as_str().map(str::len), Some(32), "{fields}");
    let log = server.log();
    assert!(!log.contains("X-Amz-Signature"), "a token reached the log");
    assert!(
        !log.contains(standin.credentials(rds_auth_integration::harness::Signer::Static).secret_access_key())
    );
}

#[tokio::test]
async fn sigterm_fails_readiness_keeps_accepting_then_drains_with_57p01() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let mut server = server(standin, &pki, "[shutdown]\nmin_delay = \"2s\"\nmax_delay = \"3s\"\n").await;
    let proxy = client(standin, &pki, &server).await;
    let session = crate::proxies::connect(&proxy, "db", "iam_user", "app").await;
    session.simple_query("SELECT 1").await.unwrap();

    server.signal("TERM").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = server.get("/readiness").await.unwrap();
    assert_eq!((status, body.trim()), (503, "draining"));
    assert_eq!(server.get("/liveness").await.unwrap().0, 200);
    // Within the min delay, load balancers may still send new sessions: they are served.
    select_one(&proxy).await.expect("a session during the min delay is served");
    assert_eq!(server.metric("rds_auth_proxy_draining").await, Some(1.0));

    // After it, the listener is closed, and the open session goes on until the max delay.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(tokio::net::TcpStream::connect(server.addr()).await.is_err(), "the listener is still open");
    session.simple_query("SELECT 2").await.expect("an open session goes on while draining");
    // A statement still running at the max delay gets the FATAL (an idle session gets it too,
    // but tokio-postgres reports an unsolicited error through its connection task, not a
    // query), and the proxy cancels the statement behind it.
    let error = tokio::time::timeout(Duration::from_secs(10), session.simple_query("SELECT pg_sleep(30)"))
        .await
        .expect("the session was ended at the max delay")
        .expect_err("the statement was cut short");
    let db = error.as_db_error().unwrap_or_else(|| panic!("not a database error: {error:?}"));
    assert_eq!(db.code().code(), "57P01", "{db:?}");
    let status = server.wait(Duration::from_secs(15)).await.expect("the server proxy exited");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sighup_reloads_targets_and_certificates_and_keeps_sessions() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = server(standin, &pki, "").await;
    let pam = ClientTarget::iam("db", standin.endpoint(Listener::Pam));
    let front = ClientTarget::iam("front", standin.endpoint(Listener::Front));
    let proxy = ClientProxy::start(standin, &ClientOptions::to_server(&pki, server.addr(), vec![pam, front]))
        .await
        .unwrap();
    let session = crate::proxies::connect(&proxy, "db", "iam_user", "app").await;
    let front_output = || async {
        Psql::local(proxy.addr("front"), "iam_user").dbname("app").run("SELECT 1").await.unwrap()
    };
    assert!(front_output().await.stderr.contains("is not allowed by the server proxy"));
    let before = served_certificate(&server, &pki).await;

    // Swap the allowed target, and the certificate for a new one from the same CA.
    let config = server.dir().join("server.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let renewed = pki.pki.server("renewed", &["proxy.test", "localhost", "127.0.0.1"]).unwrap();
    let text = text
        .replace(&standin.endpoint(Listener::Pam), &standin.endpoint(Listener::Front))
        .replace(&pki.server.cert.display().to_string(), &renewed.cert.display().to_string())
        .replace(&pki.server.key.display().to_string(), &renewed.key.display().to_string());
    std::fs::write(&config, &text).unwrap();
    server.signal("HUP").await;
    wait_for_metric(&server, "rds_auth_proxy_reloads_total{outcome=\"applied\"}", 1.0).await;

    let after = served_certificate(&server, &pki).await;
    assert_ne!(before, after, "the listener still serves the old certificate");
    assert_eq!(after, std::fs::read(&renewed.cert).map(|pem| pem_der(&pem)).unwrap());
    let output = front_output().await;
    assert!(output.success, "{}", output.stderr);
    let refused = select_one(&proxy).await.unwrap_err();
    assert!(refused.contains("is not allowed by the server proxy"), "{refused}");
    session.simple_query("SELECT 1").await.expect("an open session survives the reload");

    // A broken file changes nothing.
    std::fs::write(&config, "[listen\n").unwrap();
    server.signal("HUP").await;
    wait_for_metric(&server, "rds_auth_proxy_reloads_total{outcome=\"failed\"}", 1.0).await;
    assert!(front_output().await.success, "{}", server.log());
}

async fn wait_for_metric(server: &HostServer, series: &str, value: f64) {
    let started = Instant::now();
    while server.metric(series).await != Some(value) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{series} never reached {value}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The DER of the first certificate in a PEM file.
fn pem_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap().to_vec()
}

/// The certificate the server proxy presents now.
async fn served_certificate(server: &HostServer, pki: &ProxyPki) -> Vec<u8> {
    let tls = crate::support::tls_to(server, pki, &pki.alice).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn max_connections_and_the_per_caller_rate_answer_53300() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let capped = server(standin, &pki, "[limits]\nmax_connections = 2\n").await;
    let proxy = client(standin, &pki, &capped).await;
    let first = crate::proxies::connect(&proxy, "db", "iam_user", "app").await;
    let second = crate::proxies::connect(&proxy, "db", "iam_user", "app").await;
    let refused = select_one(&proxy).await.unwrap_err();
    assert!(refused.contains("FATAL:  sorry, too many clients already"), "{refused}");
    assert!(refused.contains("HINT:  retry in a moment"), "{refused}");
    assert_eq!(
        capped
            .metric("rds_auth_proxy_connections_total{result=\"refused\",reason=\"max_connections\"}")
            .await,
        Some(1.0)
    );
    drop(first);
    let started = Instant::now();
    while select_one(&proxy).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "a freed place was not reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.simple_query("SELECT 1").await.unwrap();

    // Five new sessions a second with a burst of three, per caller.
    let limited = server(standin, &pki, "[limits]\nper_caller_per_second = 1\nper_caller_burst = 3\n").await;
    let proxy = client(standin, &pki, &limited).await;
    for _ in 0..3 {
        select_one(&proxy).await.unwrap();
    }
    let refused = select_one(&proxy).await.unwrap_err();
    assert!(refused.contains("too many new connections from"), "{refused}");
    assert!(refused.contains("alice@corp"), "the caller is named by its certificate: {refused}");
}

/// A TCP front that lets the first `allowed` connections through to `backend` and closes
/// every later one at once; it counts them all.
async fn gate(backend: std::net::SocketAddr, allowed: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if counted.fetch_add(1, Ordering::SeqCst) >= allowed {
                continue;
            }
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn sessions_start_on_warm_connections_and_unused_ones_close_cleanly() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = server(standin, &pki, "").await;
    // Three connections get through: the first session's, and the two warm ones opened after
    // it (warm_connections = 2 by default). Nothing after that does.
    let (front, connections) = gate(server.addr(), 3).await;
    let target = ClientTarget::iam("db", standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::to_server(&pki, front, vec![target.clone()]);
    options.server_addr = front;
    let proxy = ClientProxy::start(standin, &options).await.unwrap();
    select_one(&proxy).await.unwrap();
    let started = Instant::now();
    while connections.load(Ordering::SeqCst) < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "the warm connections were not opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two more sessions get through the closed front: each on a warm connection.
    select_one(&proxy).await.unwrap();
    select_one(&proxy).await.unwrap();
    let refused = select_one(&proxy).await.unwrap_err();
    assert!(refused.contains("server proxy"), "{refused}");

    // Unused warm connections close with a TLS close_notify after warm_idle (5 s), which the
    // server proxy counts apart from clients that vanished.
    let direct = ClientProxy::start(standin, &ClientOptions::to_server(&pki, server.addr(), vec![target]))
        .await
        .unwrap();
    select_one(&direct).await.unwrap();
    wait_for_metric(&server, "rds_auth_proxy_connections_total{result=\"unused\",reason=\"unused\"}", 2.0)
        .await;
    assert_eq!(
        server.metric("rds_auth_proxy_connections_total{result=\"refused\",reason=\"peer_left\"}").await,
        None
    );
}

/// `doctor` logs in through the whole path, and leaves no warm connection behind to be cut
/// off when it exits: the server proxy sees its probe and its login, nothing more.
#[tokio::test]
async fn doctor_logs_in_and_opens_no_warm_connections() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = server(standin, &pki, "").await;
    let mut target = ClientTarget::iam("db", standin.endpoint(Listener::Pam));
    target.user = Some("iam_user".to_owned());
    target.database = Some("app".to_owned());
    let options = ClientOptions::to_server(&pki, server.addr(), vec![target]);
    let output = ClientProxy::run_once(standin, &options, &["doctor", "db"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("✓ login"), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    wait_for_metric(&server, "rds_auth_proxy_connections_total{result=\"accepted\",reason=\"ready\"}", 1.0)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exposition = server.get("/metrics").await.unwrap().1;
    let connections: f64 = exposition
        .lines()
        .filter(|line| line.starts_with("rds_auth_proxy_connections_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(connections, 2.0, "the probe and the login only:\n{exposition}");
}

#[tokio::test]
async fn proxy_protocol_v2_puts_the_real_client_in_the_audit_line() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let mut options =
        HostServerOptions::new(vec![AllowedTarget::new(standin.endpoint(Listener::Pam), &["iam"])]);
    options.json_logs = true;
    options.listen_toml = "proxy_protocol = true\n".to_owned();
    let server = HostServer::start(standin, &pki, &options).await.unwrap();
    // A load balancer in front that announces 203.0.113.7:4242 as the client.
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb_addr = lb.local_addr().unwrap();
    let backend = server.addr();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = lb.accept().await {
            tokio::spawn(async move {
                let source: std::net::SocketAddr = "203.0.113.7:4242".parse().unwrap();
                let header = ppp::v2::Builder::with_addresses(
                    ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                    ppp::v2::Protocol::Stream,
                    (source, backend),
                )
                .build()
                .unwrap();
                let mut outbound = tokio::net::TcpStream::connect(backend).await.unwrap();
                outbound.write_all(&header).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let target = ClientTarget::iam("db", standin.endpoint(Listener::Pam));
    let behind = ClientProxy::start(standin, &ClientOptions::to_server(&pki, lb_addr, vec![target.clone()]))
        .await
        .unwrap();
    select_one(&behind).await.unwrap();
    // Without the header, the connection is closed.
    let direct = ClientProxy::start(standin, &ClientOptions::to_server(&pki, server.addr(), vec![target]))
        .await
        .unwrap();
    assert!(select_one(&direct).await.is_err());
    assert_eq!(
        server.metric("rds_auth_proxy_connections_total{result=\"refused\",reason=\"proxy_protocol\"}").await,
        Some(1.0)
    );
    let started = Instant::now();
    let line = loop {
        if let Some(line) = audit_lines(&server.log()).pop() {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["client.addr"], "203.0.113.7:4242", "{line}");
}

/// moto's STS says who signed a GetCallerIdentity; the server proxy learns the ARN from it,
/// writes it in the audit line, and enforces the targets' principal rules with it.
#[tokio::test]
async fn callers_are_identified_through_sts_and_held_to_principal_rules() {
    let standin = standin().await;
    let moto = Moto::start().await.unwrap();
    let pki = ProxyPki::new().unwrap();
    let pam = standin.endpoint(Listener::Pam);
    let front = standin.endpoint(Listener::Front);
    let mut options = HostServerOptions::new(Vec::new());
    options.json_logs = true;
    options.extra_toml = format!(
        "[identity]\nsts_endpoint = \"{url}\"\nrequired = true\n\n\
         [[targets]]\nendpoint = \"{pam}\"\nauth = [\"iam\"]\nprincipals = [\"arn:aws:sts::123456789012:user/moto\"]\n\n\
         [[targets]]\nendpoint = \"{front}\"\nauth = [\"iam\"]\nprincipals = [\"arn:aws:iam::*:role/dba-*\"]\n",
        url = moto.endpoint_url()
    );
    let server = HostServer::start(standin, &pki, &options).await.unwrap();
    let targets = vec![ClientTarget::iam("db", pam.clone()), ClientTarget::iam("front", front.clone())];
    let mut client_options = ClientOptions::to_server(&pki, server.addr(), targets);
    client_options.upstream_toml = Some(format!(
        "[upstreams.default]\naddress = \"{}\"\nca = \"{}\"\nserver_name = \"proxy.test\"\ncert = \"{}\"\nkey = \"{}\"\nsts_endpoint = \"{}\"\n",
        server.addr(),
        pki.pki.ca_pem_path().display(),
        pki.alice.cert.display(),
        pki.alice.key.display(),
        moto.endpoint_url(),
    ));
    let proxy = ClientProxy::start(standin, &client_options).await.unwrap();
    select_one(&proxy).await.unwrap_or_else(|e| panic!("{e}\n{}\n{}", server.log(), moto.log()));
    select_one(&proxy).await.unwrap();
    let refused = Psql::local(proxy.addr("front"), "iam_user").dbname("app").run("SELECT 1").await.unwrap();
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("FATAL:  arn:aws:sts::123456789012:user/moto may not reach target"),
        "{}",
        refused.stderr
    );
    // STS was asked once; the proof was reused, and its answer cached.
    assert_eq!(server.metric("rds_auth_proxy_identity_lookups_total{outcome=\"verified\"}").await, Some(1.0));
    assert_eq!(server.metric("rds_auth_proxy_identity_lookups_total{outcome=\"cached\"}").await, Some(2.0));
    let line = audit_lines(&server.log()).into_iter().find(|l| l["outcome"] == "ended").unwrap();
    assert_eq!(line["aws.arn"], "arn:aws:sts::123456789012:user/moto", "{line}");

    // A client that sends no proof is refused where proofs are required.
    let mut no_identity = client_options.clone();
    no_identity.upstream_toml = client_options.upstream_toml.map(|t| format!("{t}identity = false\n"));
    let proxy = ClientProxy::start(standin, &no_identity).await.unwrap();
    let refused = select_one(&proxy).await.unwrap_err();
    assert!(refused.contains("requires proof of the caller's IAM identity"), "{refused}");
}
