//! Every refusal the proxies produce reaches the client as a FATAL ErrorResponse with a real
//! SQLSTATE and a hint, and arrives before anything is opened that should not be.

use std::time::{Duration, SystemTime};

use rds_auth_codec::backend::BackendMessage;
use rds_auth_codec::error_fields::code;
use rds_auth_codec::startup::StartupMessage;
use rds_auth_codec::{ErrorFields, Params, ProtocolVersion, StartupPacket};
use rds_auth_integration::harness::proxies::{
    ClientCredentials, ClientOptions, ClientProxy, ClientTarget, SERVER_NAME, UNCERTIFIED_ALIAS,
};
use rds_auth_integration::harness::{Listener, Psql, Signer, TestPki};
use rds_auth_io::PgStream;
use rds_auth_io::tls::{self, ALPN_POSTGRESQL, Identity};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::topology;

/// Connects with psql and returns its stderr, asserting that it failed.
async fn refused(proxy: &ClientProxy, target: &str, user: &str) -> String {
    let output = Psql::local(proxy.addr(target), user).run("SELECT 1").await.unwrap();
    assert!(!output.success, "the connection was accepted");
    output.stderr
}

/// The ErrorResponse the client proxy sends for `target`, read with our own client.
async fn error_for(proxy: &ClientProxy, target: &str, user: &str) -> ErrorFields {
    let mut params = Params::new();
    params.push(&b"user"[..], user.as_bytes().to_vec()).unwrap();
    let startup = StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_0, params });
    let mut stream = PgStream::new(TcpStream::connect(proxy.addr(target)).await.unwrap());
    stream.send(&startup.to_bytes()).await.unwrap();
    first_error(&mut stream).await
}

async fn first_error<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut PgStream<S>,
) -> ErrorFields {
    loop {
        match stream.read_backend(1 << 20).await.expect("an ErrorResponse before the close") {
            BackendMessage::ErrorResponse(fields) => return fields,
            BackendMessage::ReadyForQuery(_) => panic!("the session was accepted"),
            _ => {}
        }
    }
}

fn assert_fields(fields: &ErrorFields, sqlstate: &str, message: &str) {
    assert_eq!(fields.severity().map(|s| s.as_ref()), Some(&b"FATAL"[..]), "{fields:?}");
    assert_eq!(fields.sqlstate().map(|s| s.to_string()).as_deref(), Some(sqlstate), "{fields:?}");
    assert!(fields.message().contains(message), "{:?} does not contain {message:?}", fields.message());
    assert!(fields.get(code::HINT).is_some_and(|h| !h.is_empty()), "no hint: {fields:?}");
}

#[tokio::test]
async fn a_target_off_the_allowlist_is_refused_with_28000() {
    let topology = topology().await;
    // Another port of an allowed host is another target.
    let targets = vec![
        ClientTarget::iam("other-port", "pg.rds.test:5999"),
        ClientTarget::iam("elsewhere", "169.254.169.254:80"),
    ];
    let proxy = ClientProxy::start(&topology.standin, &ClientOptions::new(topology, targets)).await.unwrap();
    let fields = error_for(&proxy, "other-port", "iam_user").await;
    assert_fields(&fields, "28000", "target pg.rds.test:5999 is not allowed by the server proxy");
    assert!(fields.get(code::DETAIL).is_some_and(|d| d.starts_with(b"rule:")), "{fields:?}");
    let fields = error_for(&proxy, "elsewhere", "iam_user").await;
    assert_fields(&fields, "28000", "target 169.254.169.254:80 is not allowed");
    let stderr = refused(&proxy, "other-port", "iam_user").await;
    assert!(
        stderr.contains("FATAL:  target pg.rds.test:5999 is not allowed by the server proxy"),
        "{stderr}"
    );
    assert!(stderr.contains("HINT:"), "{stderr}");
}

#[tokio::test]
async fn a_forged_token_fails_at_the_database_with_rds_error_and_our_hint() {
    let topology = topology().await;
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    // The stand-in's access key with the wrong secret: a validly shaped, forged signature.
    options.credentials = ClientCredentials::Custom {
        access_key_id: "AKIDSTANDIN".into(),
        secret: "not/the/right/secret/at/all/0123456789ab".into(),
    };
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let fields = error_for(&proxy, "db", "iam_user").await;
    assert_fields(&fields, "28000", "PAM authentication failed for user \"iam_user\"");
    assert_eq!(
        fields.get(code::ROUTINE).map(|r| r.as_ref()),
        Some(&b"auth_failed"[..]),
        "RDS's own fields are kept"
    );
    assert!(fields.get(code::HINT).unwrap().starts_with(b"RDS answers every failed IAM login"), "{fields:?}");
}

/// A raw session to the server proxy, as alice, with a startup of our own making.
async fn server_session(params: &[(&str, &str)]) -> ErrorFields {
    let topology = topology().await;
    let pki = &topology.pki;
    let identity = Identity::load(&pki.alice.cert, &pki.alice.key).unwrap();
    let config =
        tls::client_config(pki.pki.roots().unwrap(), Some(identity), &[ALPN_POSTGRESQL], true).unwrap();
    let tcp = TcpStream::connect(topology.server.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let mut p = Params::new();
    for (name, value) in params {
        p.push(name.as_bytes().to_vec(), value.as_bytes().to_vec()).unwrap();
    }
    let startup = StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_2, params: p });
    let mut stream = PgStream::new(tls);
    stream.send(&startup.to_bytes()).await.unwrap();
    first_error(&mut stream).await
}

#[tokio::test]
async fn the_server_proxy_checks_tokens_before_the_database_sees_them() {
    let topology = topology().await;
    let standin = &topology.standin;
    let endpoint = standin.endpoint(Listener::Pam);
    let expired = standin
        .token_at("iam_user", Listener::Pam, Signer::Static, SystemTime::now() - Duration::from_secs(20 * 60))
        .unwrap();
    let fields = server_session(&[("user", "iam_user"), ("host", &endpoint), ("password", &expired)]).await;
    assert_fields(&fields, "28000", "the IAM token expired");
    assert!(fields.get(code::DETAIL).is_some_and(|d| d.starts_with(b"token signed at")), "{fields:?}");
    assert!(fields.get(code::HINT).unwrap().starts_with(b"check the clock"), "{fields:?}");

    let future = standin
        .token_at("iam_user", Listener::Pam, Signer::Static, SystemTime::now() + Duration::from_secs(30 * 60))
        .unwrap();
    let fields = server_session(&[("user", "iam_user"), ("host", &endpoint), ("password", &future)]).await;
    assert_fields(&fields, "28000", "the IAM token is not valid yet");

    let for_bob = standin.token("bob", Listener::Pam, Signer::Static).unwrap();
    let fields = server_session(&[("user", "iam_user"), ("host", &endpoint), ("password", &for_bob)]).await;
    assert_fields(&fields, "28000", "signed for user \"bob\", but the session's user is \"iam_user\"");

    let for_front = standin.token("iam_user", Listener::Front, Signer::Static).unwrap();
    let fields = server_session(&[("user", "iam_user"), ("host", &endpoint), ("password", &for_front)]).await;
    assert_fields(
        &fields,
        "28000",
        "the IAM token was signed for pg.rds.test:5433, but the target is pg.rds.test:5432",
    );

    // The front accepts IAM only: a password there is refused by configuration.
    let front = standin.endpoint(Listener::Front);
    let fields = server_session(&[("user", "iam_user"), ("host", &front), ("password", "hunter2")]).await;
    assert_fields(&fields, "28000", "is not a readable IAM token");

    // A client that sends a second target is refused, not routed.
    let fields =
        server_session(&[("user", "iam_user"), ("host", &endpoint), ("host", "169.254.169.254:80")]).await;
    assert_fields(&fields, "08P01", "startup parameter \"host\" was sent more than once");
}

#[tokio::test]
async fn tls_failures_toward_either_side_are_08001() {
    let topology = topology().await;
    // The client proxy trusts another CA than the one that signed the server proxy.
    let other = TestPki::new("other-ca").unwrap();
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.server_ca = other.ca_pem_path().to_owned();
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let fields = error_for(&proxy, "db", "iam_user").await;
    assert_fields(&fields, "08001", "TLS with the server proxy default failed");

    // No client certificate: the server proxy requires one.
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.identity = None;
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let fields = error_for(&proxy, "db", "iam_user").await;
    assert_fields(&fields, "08001", "the server proxy default refused the client certificate");

    // The database's certificate does not carry the name the target uses.
    let targets = vec![
        ClientTarget::iam("alias", format!("{UNCERTIFIED_ALIAS}:5432")),
        ClientTarget::iam("nobody", format!("{}:6543", topology.standin.alias())),
    ];
    let proxy = ClientProxy::start(&topology.standin, &ClientOptions::new(topology, targets)).await.unwrap();
    let fields = error_for(&proxy, "alias", "iam_user").await;
    assert_fields(&fields, "08001", "TLS with the database failed");
    // Allowed, but nothing listens there.
    let fields = error_for(&proxy, "nobody", "iam_user").await;
    assert_fields(&fields, "08001", "cannot connect to the database");
}

#[tokio::test]
async fn plaintext_to_the_server_proxy_is_refused() {
    let topology = topology().await;
    let output = Psql::local(topology.server.addr(), "iam_user").run("SELECT 1").await.unwrap();
    assert!(!output.success);
    assert!(
        output.stderr.contains("FATAL:  the server proxy accepts only TLS connections"),
        "{}",
        output.stderr
    );
}

#[tokio::test]
async fn oversize_and_garbage_startups_get_their_sqlstate() {
    let topology = topology().await;
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let proxy =
        ClientProxy::start(&topology.standin, &ClientOptions::new(topology, vec![target])).await.unwrap();
    let cases: [(Vec<u8>, &str, &str); 4] = [
        // A startup packet of 20 000 bytes: over PostgreSQL's 10 000.
        ([&20_004u32.to_be_bytes()[..], &[0, 3, 0, 0]].concat(), "54000", "exceeds the limit of 10000 bytes"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "54000", "exceeds the limit"),
        (vec![0, 0, 0, 5, 1], "08P01", "invalid length of startup packet"),
        (vec![0, 0, 0, 8, 0, 4, 0, 0], "0A000", "unsupported frontend protocol 4.0"),
    ];
    for (bytes, sqlstate, message) in cases {
        let mut tcp = TcpStream::connect(proxy.addr("db")).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let mut stream = PgStream::new(tcp);
        let fields = first_error(&mut stream).await;
        assert_fields(&fields, sqlstate, message);
    }
}
