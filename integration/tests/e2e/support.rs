//! Helpers shared by the test modules: connecting to the stand-in and to a host server proxy,
//! and checking refusals.

use std::net::SocketAddr;
use std::time::Duration;

use rds_auth_integration::harness::host_server::HostServer;
use rds_auth_integration::harness::pg::{PgConnectError, TlsConnector, connect};
use rds_auth_integration::harness::proxies::ProxyPki;
use rds_auth_integration::harness::{CertFiles, Listener, StandIn};
use tokio_postgres::error::SqlState;

/// How long a verdict may take to reach the container log.
pub(crate) const LOG_WAIT: Duration = Duration::from_secs(10);

/// The shared stand-in; a failure to start it fails the test with its hint and log.
pub(crate) async fn standin() -> &'static StandIn {
    match StandIn::shared().await {
        Ok(standin) => standin,
        Err(e) => panic!("{e}"),
    }
}

/// Connects to a listener of the stand-in over verified TLS (certificate name 127.0.0.1).
pub(crate) async fn connect_to(
    standin: &StandIn,
    listener: Listener,
    user: &str,
    dbname: &str,
    password: &str,
) -> Result<tokio_postgres::Client, PgConnectError> {
    connect_addr(standin, standin.addr(listener), user, dbname, password).await
}

pub(crate) async fn connect_addr(
    standin: &StandIn,
    addr: SocketAddr,
    user: &str,
    dbname: &str,
    password: &str,
) -> Result<tokio_postgres::Client, PgConnectError> {
    let roots = standin.roots().expect("the stand-in's CA file is readable");
    let tls = TlsConnector::new(roots, "127.0.0.1").expect("127.0.0.1 is a valid server name");
    let mut config = tokio_postgres::Config::new();
    config.user(user).dbname(dbname).password(password).connect_timeout(Duration::from_secs(10));
    connect(addr, tls, &config).await
}

/// `SELECT current_user` on a fresh connection.
pub(crate) async fn current_user(client: &tokio_postgres::Client) -> String {
    client.query_one("SELECT current_user::text", &[]).await.expect("SELECT current_user works").get(0)
}

/// Asserts that connecting failed exactly as RDS refuses a token: FATAL, SQLSTATE 28000,
/// `PAM authentication failed for user "<user>"`, from auth.c's auth_failed.
pub(crate) fn assert_pam_refusal(result: Result<tokio_postgres::Client, PgConnectError>, user: &str) {
    let Err(error) = result else { panic!("the login of {user:?} was accepted") };
    let Some(db) = error.db_error() else { panic!("no ErrorResponse from the server: {error}") };
    assert_eq!(db.severity(), "FATAL", "{db:?}");
    assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{db:?}");
    assert_eq!(db.message(), format!("PAM authentication failed for user \"{user}\""));
    assert_eq!(db.file(), Some("auth.c"), "{db:?}");
    assert_eq!(db.routine(), Some("auth_failed"), "{db:?}");
}

/// The shared topology: the stand-in on an internal network and a server proxy joining it.
pub(crate) async fn topology() -> &'static rds_auth_integration::harness::proxies::Topology {
    match rds_auth_integration::harness::proxies::Topology::shared().await {
        Ok(topology) => topology,
        Err(e) => panic!("{e}"),
    }
}

/// A raw session to a server proxy with a client certificate and a startup of our own making,
/// read up to ReadyForQuery. Returns the stream and the BackendKeyData the server proxy sent.
pub(crate) async fn raw_server_session(
    server: SocketAddr,
    identity: &rds_auth_integration::harness::CertFiles,
    params: &[(&str, &str)],
) -> (
    rds_auth_io::PgStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    rds_auth_codec::backend::BackendKeyData,
) {
    let mut stream = raw_server_connection(server, identity).await;
    let mut p = rds_auth_codec::Params::new();
    for (name, value) in params {
        p.push(name.as_bytes().to_vec(), value.as_bytes().to_vec()).expect("valid test parameters");
    }
    let startup = rds_auth_codec::StartupPacket::Startup(rds_auth_codec::startup::StartupMessage {
        version: rds_auth_codec::ProtocolVersion::V3_2,
        params: p,
    });
    stream.send(&startup.to_bytes()).await.expect("the server proxy takes the startup");
    let mut key = None;
    loop {
        match stream.read_backend(1 << 20).await.expect("the server proxy answers") {
            rds_auth_codec::backend::BackendMessage::BackendKeyData(k) => key = Some(k),
            rds_auth_codec::backend::BackendMessage::ReadyForQuery(_) => break,
            rds_auth_codec::backend::BackendMessage::ErrorResponse(fields) => panic!("refused: {fields:?}"),
            _ => {}
        }
    }
    (stream, key.expect("BackendKeyData before ReadyForQuery"))
}

/// Direct TLS with ALPN to a server proxy, presenting `identity`.
pub(crate) async fn raw_server_connection(
    server: SocketAddr,
    identity: &rds_auth_integration::harness::CertFiles,
) -> rds_auth_io::PgStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let topology = topology().await;
    let identity =
        rds_auth_io::tls::Identity::load(&identity.cert, &identity.key).expect("readable test certificates");
    let roots = topology.pki.pki.roots().expect("the proxies' CA");
    let config =
        rds_auth_io::tls::client_config(roots, Some(identity), &[rds_auth_io::tls::ALPN_POSTGRESQL], true)
            .expect("a valid TLS configuration");
    let tcp = tokio::net::TcpStream::connect(server).await.expect("the server proxy listens");
    let name = rustls::pki_types::ServerName::try_from(rds_auth_integration::harness::proxies::SERVER_NAME)
        .expect("a valid name");
    let tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("TLS with the server proxy");
    rds_auth_io::PgStream::new(tls)
}

/// Sends a CancelRequest to a server proxy as `identity` and waits for it to close.
pub(crate) async fn raw_cancel(
    server: SocketAddr,
    identity: &rds_auth_integration::harness::CertFiles,
    pid: u32,
    key: bytes::Bytes,
) {
    let mut stream = raw_server_connection(server, identity).await;
    let packet =
        rds_auth_codec::StartupPacket::CancelRequest(rds_auth_codec::startup::CancelRequest { pid, key });
    stream.send(&packet.to_bytes()).await.expect("the server proxy takes the cancel");
    // Never answered: the connection just closes.
    let closed = stream.fill_first().await;
    assert!(matches!(closed, Ok(false) | Err(_)), "a cancel got an answer");
}

/// How many statements with exactly this text are running, seen through `client`.
pub(crate) async fn running(client: &tokio_postgres::Client, query: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", &[&query])
        .await
        .expect("pg_stat_activity is readable")
        .get(0)
}

/// Waits until `query` runs (or stops running, with `present = false`), for at most 20 s.
pub(crate) async fn wait_running(
    client: &tokio_postgres::Client,
    query: &str,
    present: bool,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if (running(client, query).await > 0) == present {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{query:?} {} within 20 s", if present { "never started" } else { "still runs" });
}

/// Held by the tests that load the machine (hundreds of sessions, a slowloris), so they never
/// run at the same time and each measures alone.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Direct TLS with ALPN to a host server proxy, as `identity`.
pub(crate) async fn tls_to(
    server: &HostServer,
    pki: &ProxyPki,
    identity: &CertFiles,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let identity = rds_auth_io::tls::Identity::load(&identity.cert, &identity.key).unwrap();
    let config = rds_auth_io::tls::client_config(
        pki.pki.roots().unwrap(),
        Some(identity),
        &[rds_auth_io::tls::ALPN_POSTGRESQL],
        true,
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server.server_name()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap()
}
