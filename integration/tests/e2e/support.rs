//! Helpers shared by the test modules: connecting to the stand-in and checking refusals.

use std::net::SocketAddr;
use std::time::Duration;

use rds_auth_integration::harness::pg::{PgConnectError, TlsConnector, connect};
use rds_auth_integration::harness::{Listener, StandIn};
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
