//! The server proxy under load, under a slowloris, and under faults: a backend killed
//! mid-query, a replica killed mid-session, an unreachable database, a database that refuses
//! TLS, and a rolling restart under load. The heavy tests take a process-wide lock so they
//! never overlap; each prints the figures the closing notes quote.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rds_auth_integration::harness::host_server::{HealthFront, HostServer, HostServerOptions};
use rds_auth_integration::harness::proxies::{
    AllowedTarget, ClientOptions, ClientProxy, ClientTarget, ProxyPki, Topology,
};
use rds_auth_integration::harness::{Listener, Psql, StandIn};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::support::{HEAVY, standin};

fn options(standin: &StandIn, extra_toml: &str) -> HostServerOptions {
    let mut options = HostServerOptions::new(vec![AllowedTarget::new(
        standin.endpoint(Listener::Pam),
        &["iam", "password"],
    )]);
    options.extra_toml = extra_toml.to_owned();
    options
}

fn iam_target(standin: &StandIn) -> ClientTarget {
    ClientTarget::iam("db", standin.endpoint(Listener::Pam))
}

/// pgbench through a client proxy's `db` listener, as iam_user on database `app`.
async fn pgbench(proxy: &ClientProxy, args: &[&str]) -> std::process::Output {
    let addr = proxy.addr("db");
    Command::new("pgbench")
        .args(args)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", "iam_user")
        .env("PGDATABASE", "app")
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "30")
        .output()
        .await
        .expect("pgbench runs (postgresql-client-15)")
}

fn text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// pgbench's tables, made once per stand-in through the proxies.
async fn pgbench_tables(proxy: &ClientProxy) {
    static MADE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    MADE.get_or_init(|| async {
        let output = pgbench(proxy, &["-i", "-s", "1", "-q", "-n"]).await;
        assert!(output.status.success(), "pgbench -i failed:\n{}", text(&output));
    })
    .await;
}

/// Waits until the server proxy reports no open session.
async fn wait_idle(server: &HostServer) {
    let started = Instant::now();
    while server.metric("rds_auth_proxy_sessions_open").await != Some(0.0) {
        assert!(started.elapsed() < Duration::from_secs(30), "sessions never closed:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn five_hundred_sessions_of_pgbench_for_a_minute_without_an_error_or_a_leak() {
    let _heavy = HEAVY.lock().await;
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    // pgbench opens its 500 sessions at once, past the per-caller limit's default burst.
    let limits = "[limits]\nper_caller_per_second = 10000\nper_caller_burst = 10000\n";
    let server = HostServer::start(standin, &pki, &options(standin, limits)).await.unwrap();
    let proxy = ClientProxy::start(
        standin,
        &ClientOptions::to_server(&pki, server.addr(), vec![iam_target(standin)]),
    )
    .await
    .unwrap();
    pgbench_tables(&proxy).await;
    // A warm-up at the same concurrency, so one-time allocations (TLS, metrics, the runtime's
    // workers) and the allocator's high-water mark for 500 sessions are in the baseline: what
    // the comparison finds afterwards is what the minute of load leaked, not what malloc keeps.
    // Two rounds: glibc hands new threads (the blocking pool's, for name lookups) arenas of
    // their own, and the second burst of 500 connects still grows the footprint once.
    for _ in 0..2 {
        let warm = pgbench(&proxy, &["-n", "-S", "-c", "500", "-j", "2", "-T", "10"]).await;
        assert!(warm.status.success(), "{}", text(&warm));
        wait_idle(&server).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fds_before, rss_before) = (server.open_files().unwrap(), server.rss_kib().unwrap());

    let started = Instant::now();
    let run = pgbench(&proxy, &["-n", "-S", "-c", "500", "-j", "2", "-T", "60"]).await;
    let output = text(&run);
    eprintln!("pgbench -c 500 -T 60 through both proxies ({:.0?}):\n{output}", started.elapsed());
    assert!(run.status.success(), "{output}\n{}", proxy.log());
    assert!(output.contains("number of clients: 500"), "{output}");
    assert!(output.contains("number of failed transactions: 0 "), "{output}");
    assert!(!output.contains("aborted"), "{output}");

    wait_idle(&server).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fds_after, rss_after) = (server.open_files().unwrap(), server.rss_kib().unwrap());
    eprintln!(
        "server proxy: open files {fds_before} -> {fds_after}; RSS {rss_before} KiB -> {rss_after} KiB ({:+.1} %)",
        (rss_after as f64 / rss_before as f64 - 1.0) * 100.0
    );
    assert!(fds_after as f64 <= fds_before as f64 * 1.05, "open files grew: {fds_before} -> {fds_after}");
    assert!(rss_after as f64 <= rss_before as f64 * 1.05, "RSS grew: {rss_before} -> {rss_after} KiB");
}

#[tokio::test]
async fn a_thousand_sessions_fit_under_a_users_default_open_file_limits() {
    let _heavy = HEAVY.lock().await;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    // macOS gives a shell 256 files; Linux desktops 1 024, under hard limits of several
    // thousand at least. Both proxies start with the macOS soft limit.
    let limits = (256, 8192);
    // 1 000 sessions from one certificate in a few seconds is past the per-caller rate limit's
    // default burst (300), which is the point of that limit; this test is about files.
    let mut server_options =
        options(standin, "[limits]\nper_caller_per_second = 10000\nper_caller_burst = 10000\n");
    server_options.nofile = Some(limits);
    let server = HostServer::start(standin, &pki, &server_options).await.unwrap();
    let target = ClientTarget::iam("db", standin.endpoint(Listener::Pam)).with_password("clear-secret");
    let mut client_options = ClientOptions::to_server(&pki, server.addr(), vec![target]);
    client_options.nofile = Some(limits);
    client_options.log_level = "info".into();
    let proxy = ClientProxy::start(standin, &client_options).await.unwrap();
    let rss_idle = server.rss_kib().unwrap();

    let port = proxy.addr("db").port();
    let mut sessions = Vec::new();
    let started = Instant::now();
    for chunk in 0..10 {
        let opened = futures_util::future::join_all((0..100).map(|_| async move {
            let config =
                format!("host=127.0.0.1 port={port} user=password_user dbname=app connect_timeout=60");
            tokio_postgres::connect(&config, tokio_postgres::NoTls).await
        }))
        .await;
        for (i, result) in opened.into_iter().enumerate() {
            let (client, connection) = result.unwrap_or_else(|e| {
                panic!("session {} failed: {e}\n{}\n{}", chunk * 100 + i, proxy.log(), server.log())
            });
            tokio::spawn(connection);
            sessions.push(client);
        }
    }
    let opened_in = started.elapsed();
    for client in &sessions {
        client.simple_query("SELECT 1").await.unwrap();
    }
    assert_eq!(server.metric("rds_auth_proxy_sessions_open").await, Some(1000.0));
    let rss_busy = server.rss_kib().unwrap();
    eprintln!(
        "1000 sessions under nofile {limits:?}: opened in {opened_in:.1?}; server proxy RSS {rss_idle} KiB idle, \
         {rss_busy} KiB with 1000 sessions ({:.1} KiB per session, debug build); open files {}",
        (rss_busy - rss_idle) as f64 / 1000.0,
        server.open_files().unwrap()
    );
    drop(sessions);
    wait_idle(&server).await;
}

#[tokio::test]
async fn a_thousand_stalled_connections_are_closed_at_the_startup_timeout_while_others_are_served() {
    let _heavy = HEAVY.lock().await;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = HostServer::start(standin, &pki, &options(standin, "[limits]\nstartup_timeout = \"3s\"\n"))
        .await
        .unwrap();
    let proxy = ClientProxy::start(
        standin,
        &ClientOptions::to_server(&pki, server.addr(), vec![iam_target(standin)]),
    )
    .await
    .unwrap();
    // Half send nothing; half send a TLS record header and stop, as a slow client would.
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        if i % 2 == 1 {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        }
        stalled.push(tcp);
    }
    let opened = Instant::now();
    let output = Psql::local(proxy.addr("db"), "iam_user").dbname("app").run("SELECT 1").await.unwrap();
    assert!(output.success, "a client was not served during the slowloris: {}", output.stderr);
    eprintln!("a session during the slowloris took {:.0?}", opened.elapsed());

    let closed = futures_util::future::join_all(stalled.iter_mut().map(|tcp| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut byte)).await;
        (read.is_ok(), opened.elapsed())
    }))
    .await;
    let still_open = closed.iter().filter(|(closed, _)| !closed).count();
    let last = closed.iter().map(|(_, at)| *at).max().unwrap_or_default();
    eprintln!(
        "1000 stalled connections: all closed {last:.1?} after the last was opened (startup timeout 3 s)"
    );
    assert_eq!(still_open, 0, "connections outlived the startup timeout");
    let timeouts = server
        .metric("rds_auth_proxy_connections_total{result=\"refused\",reason=\"startup_timeout\"}")
        .await;
    assert_eq!(timeouts, Some(1000.0));
    // And the proxy still serves.
    let output = Psql::local(proxy.addr("db"), "iam_user").dbname("app").run("SELECT 1").await.unwrap();
    assert!(output.success, "{}", output.stderr);
}

#[tokio::test]
async fn a_backend_killed_mid_query_errors_that_session_and_the_proxies_live_on() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = HostServer::start(standin, &pki, &options(standin, "")).await.unwrap();
    let proxy = ClientProxy::start(
        standin,
        &ClientOptions::to_server(&pki, server.addr(), vec![iam_target(standin)]),
    )
    .await
    .unwrap();
    let victim = crate::proxies::connect(&proxy, "db", "iam_user", "app").await;
    let pid: i32 = victim.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let query = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(60)").await.map(|_| ()) });
    let killer = crate::proxies::connect(&proxy, "db", "iam_user", "app").await;
    crate::support::wait_running(&killer, "SELECT pg_sleep(60)", true).await;
    killer.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), query).await.unwrap().unwrap().unwrap_err();
    let db = error.as_db_error().unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(db.code().code(), "57P01", "{db:?}");
    assert_eq!(server.get("/liveness").await.unwrap().0, 200);
    killer.simple_query("SELECT 1").await.expect("other sessions go on");
    let output = Psql::local(proxy.addr("db"), "iam_user").dbname("app").run("SELECT 1").await.unwrap();
    assert!(output.success, "{}", output.stderr);
}

#[tokio::test]
async fn an_unreachable_database_is_08001_within_the_connect_timeout() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    // An address on the stand-in's network where nothing lives: connects time out or fail
    // with no route, and never leave the test's network.
    let ip = match standin.network_ip().unwrap() {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            std::net::IpAddr::from([a, b, c, 250])
        }
        v6 => v6,
    };
    let mut server_options = options(standin, "");
    server_options.targets.push(AllowedTarget::new("blackhole.rds.test:5432", &["iam"]));
    server_options.resolve.push(("blackhole.rds.test".into(), ip));
    let server = HostServer::start(standin, &pki, &server_options).await.unwrap();
    let target = ClientTarget::iam("db", "blackhole.rds.test:5432");
    let proxy = ClientProxy::start(standin, &ClientOptions::to_server(&pki, server.addr(), vec![target]))
        .await
        .unwrap();
    let started = Instant::now();
    let output = Psql::local(proxy.addr("db"), "iam_user").run("SELECT 1").await.unwrap();
    let took = started.elapsed();
    eprintln!("an unreachable database was refused after {took:.1?} (connect_timeout 2 s, 2 attempts)");
    assert!(!output.success);
    assert!(output.stderr.contains("FATAL:  cannot connect to the database"), "{}", output.stderr);
    // Two attempts of at most 2 s and a 100 ms backoff, and the time psql itself takes.
    assert!(took < Duration::from_secs(9), "{took:?}");
    assert_eq!(server.get("/liveness").await.unwrap().0, 200);
}

#[tokio::test]
async fn a_database_that_refuses_tls_fails_closed() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    // A "database" that answers SSLRequest with N, and would then take plaintext.
    let plaintext = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = plaintext.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let after_no = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = plaintext.accept().await {
            let after_no = after_no.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if tcp.read_exact(&mut request).await.is_ok() {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, b"N").await;
                    let mut rest = [0u8; 1];
                    if let Ok(n) = tcp.read(&mut rest).await
                        && n > 0
                    {
                        after_no.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let endpoint = format!("plaintext.rds.test:{port}");
    let mut server_options = options(standin, "");
    server_options.targets.push(AllowedTarget::new(&endpoint, &["iam"]));
    server_options.resolve.push(("plaintext.rds.test".into(), std::net::IpAddr::from([127, 0, 0, 1])));
    let server = HostServer::start(standin, &pki, &server_options).await.unwrap();
    let proxy = ClientProxy::start(
        standin,
        &ClientOptions::to_server(&pki, server.addr(), vec![ClientTarget::iam("db", endpoint)]),
    )
    .await
    .unwrap();
    let output = Psql::local(proxy.addr("db"), "iam_user").run("SELECT 1").await.unwrap();
    assert!(!output.success);
    assert!(output.stderr.contains("FATAL:  the database refused TLS"), "{}", output.stderr);
    assert!(output.stderr.contains("HINT:  IAM authentication needs TLS"), "{}", output.stderr);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "bytes were sent after the database said N"
    );
}

#[tokio::test]
async fn a_replica_killed_mid_session_costs_only_its_sessions() {
    let topology = Topology::start("replica-kill", "info").await.unwrap();
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(&topology, vec![target]);
    options.server_addr = topology.front.addr();
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    // The front alternates, but warm connections are opened ahead of sessions, so which replica
    // a session lands on is learnt from the client address Postgres sees.
    let replica_ip = topology.replica.db_ip().to_string();
    let (mut on_replica, mut elsewhere) = (Vec::new(), Vec::new());
    for _ in 0..12 {
        let session = crate::proxies::connect(&proxy, "db", "iam_user", "app").await;
        let row = session.query_one("SELECT host(inet_client_addr())", &[]).await.unwrap();
        if row.get::<_, String>(0) == replica_ip {
            on_replica.push(session);
        } else {
            elsewhere.push(session);
        }
        if !on_replica.is_empty() && !elsewhere.is_empty() {
            break;
        }
    }
    assert!(
        !on_replica.is_empty() && !elsewhere.is_empty(),
        "12 sessions did not cover both replicas: {} on the replica, {} elsewhere",
        on_replica.len(),
        elsewhere.len()
    );
    topology.replica.container().signal("KILL").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for session in &on_replica {
        assert!(session.simple_query("SELECT 1").await.is_err(), "a session on the killed replica went on");
    }
    for session in &elsewhere {
        let result = session.simple_query("SELECT 1").await;
        assert!(result.is_ok(), "a session on the surviving replica ended: {result:?}");
    }
    for _ in 0..6 {
        let output = Psql::local(proxy.addr("db"), "iam_user").dbname("app").run("SELECT 1").await.unwrap();
        assert!(output.success, "a new session failed after a replica was killed: {}", output.stderr);
    }
}

#[tokio::test]
async fn a_rolling_restart_under_pgbench_drops_no_session() {
    let _heavy = HEAVY.lock().await;
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let drain = "[shutdown]\nmin_delay = \"1s\"\nmax_delay = \"10s\"\n";
    let a = HostServer::start(standin, &pki, &options(standin, drain)).await.unwrap();
    let b = HostServer::start(standin, &pki, &options(standin, drain)).await.unwrap();
    let front = HealthFront::start().await.unwrap();
    front.set_backends(&[&a, &b]);
    let mut client = ClientOptions::to_server(&pki, front.addr(), vec![iam_target(standin)]);
    client.log_level = "info".into();
    let proxy = ClientProxy::start(standin, &client).await.unwrap();
    pgbench_tables(&proxy).await;
    let load = {
        let addr: SocketAddr = proxy.addr("db");
        tokio::spawn(async move {
            Command::new("pgbench")
                .args(["-n", "-S", "-C", "-c", "4", "-j", "2", "-T", "20"])
                .env("PGHOST", "127.0.0.1")
                .env("PGPORT", addr.port().to_string())
                .env("PGUSER", "iam_user")
                .env("PGDATABASE", "app")
                .env("PGSSLMODE", "disable")
                .output()
                .await
                .unwrap()
        })
    };
    // Replace each replica in turn: SIGTERM, wait for it to go, start its successor.
    let mut survivors = vec![b];
    let mut replaced = Vec::new();
    for mut old in [a] {
        tokio::time::sleep(Duration::from_secs(4)).await;
        old.signal("TERM").await;
        let new = HostServer::start(standin, &pki, &options(standin, drain)).await.unwrap();
        front.set_backends(&[&old, &survivors[0], &new]);
        assert!(old.wait(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", old.log());
        front.set_backends(&[&survivors[0], &new]);
        replaced.push(new);
    }
    let mut old = survivors.remove(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    old.signal("TERM").await;
    let new = HostServer::start(standin, &pki, &options(standin, drain)).await.unwrap();
    front.set_backends(&[&old, &replaced[0], &new]);
    assert!(old.wait(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", old.log());
    front.set_backends(&[&replaced[0], &new]);

    let run = load.await.unwrap();
    let output = text(&run);
    eprintln!("pgbench -C across a rolling restart of both replicas:\n{output}");
    assert!(run.status.success(), "{output}\n{}", proxy.log());
    assert!(output.contains("number of failed transactions: 0 "), "{output}");
    assert!(!output.contains("aborted"), "{output}");
}
