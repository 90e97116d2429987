//! Hostile input: a corpus of truncated, oversize, duplicated and out-of-order startup
//! sequences sent to both proxies, each answered with its SQLSTATE or closed, never a panic or
//! a hang; and a scripted attempt to use the server proxy as an open relay into the VPC.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rds_auth_codec::backend::BackendMessage;
use rds_auth_integration::harness::host_server::{HostServer, HostServerOptions};
use rds_auth_integration::harness::proxies::{
    AllowedTarget, ClientOptions, ClientProxy, ClientTarget, ProxyPki,
};
use rds_auth_integration::harness::{Listener, StandIn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::{standin, tls_to};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f];
const GSS_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 0xd2, 0x16, 0x30];

/// A StartupMessage of protocol `major.minor` with `params`, its length as given or true.
fn startup(major: u16, minor: u16, params: &[(&str, &str)], length: Option<u32>) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(major);
    body.put_u16(minor);
    for (name, value) in params {
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_slice(value.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = Vec::new();
    out.extend_from_slice(&length.unwrap_or(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// How a proxy answered one hostile sequence.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// An ErrorResponse with this SQLSTATE, then the close.
    Error(String),
    /// Closed without a word.
    Closed,
    /// A one-byte answer to an encryption request, then the close.
    Answered(u8),
    /// A login that succeeded, then an ErrorResponse with this SQLSTATE for the bytes that
    /// followed the StartupMessage, then the close.
    ErrorAfterLogin(String),
}

/// Sends `bytes`, then reads whatever comes until the close, for at most `limit`.
async fn verdict<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> Verdict {
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the proxy neither answered nor closed within {limit:?} after {bytes:02x?}");
    let mut rest: &[u8] = &received;
    if let [b @ (b'N' | b'S' | b'G'), tail @ ..] = rest
        && (tail.is_empty() || tail[0] == b'E')
    {
        if tail.is_empty() {
            return Verdict::Answered(*b);
        }
        rest = tail;
    }
    // A TLS alert record and nothing else: the TLS layer refused the bytes without a
    // Postgres word, which is a close.
    if rest.is_empty() || (rest.len() == 7 && rest[..3] == [0x15, 0x03, 0x03]) {
        return Verdict::Closed;
    }
    let mut buffer = BytesMut::from(rest);
    let mut logged_in = false;
    loop {
        let frame = rds_auth_codec::frame::Frame::decode(&mut buffer, 1 << 20);
        match frame.map(|f| f.map(BackendMessage::parse)) {
            Ok(Some(Ok(BackendMessage::ErrorResponse(fields)))) => {
                let code =
                    fields.get(b'C').map(|c| String::from_utf8_lossy(c).into_owned()).unwrap_or_default();
                break if logged_in { Verdict::ErrorAfterLogin(code) } else { Verdict::Error(code) };
            }
            Ok(Some(Ok(
                BackendMessage::Authentication(rds_auth_codec::backend::Authentication::Ok)
                | BackendMessage::ParameterStatus { .. }
                | BackendMessage::BackendKeyData(_)
                | BackendMessage::ReadyForQuery(_),
            ))) => logged_in = true,
            // A newer minor version is negotiated down before the startup is judged.
            Ok(Some(Ok(BackendMessage::NegotiateProtocolVersion { .. }))) => {}
            other => panic!("unexpected answer {other:?} to {bytes:02x?}: {received:02x?}"),
        }
    }
}

/// The corpus: each sequence, and what a proxy that speaks plaintext to its clients must do.
fn corpus() -> Vec<(&'static str, Vec<u8>, Verdict)> {
    let good = startup(3, 0, &[("user", "iam_user"), ("database", "app")], None);
    let error = |code: &str| Verdict::Error(code.to_owned());
    vec![
        ("nothing, then the close", Vec::new(), Verdict::Closed),
        ("a truncated length", vec![0, 0], Verdict::Closed),
        ("a startup cut short", good[..good.len() / 2].to_vec(), Verdict::Closed),
        ("a length below the header", vec![0, 0, 0, 4], error("08P01")),
        ("a length of 2^31", startup(3, 0, &[("user", "u")], Some(1 << 31)), error("54000")),
        ("a length of 4 GiB - 1", startup(3, 0, &[("user", "u")], Some(u32::MAX)), error("54000")),
        ("a length longer than the bytes sent", startup(3, 0, &[("user", "u")], Some(200)), Verdict::Closed),
        ("protocol 2.0", startup(2, 0, &[("user", "u")], None), error("0A000")),
        ("protocol 4.0", startup(4, 0, &[("user", "u")], None), error("0A000")),
        ("protocol 3.9999 with no user", startup(3, 9999, &[("database", "app")], None), error("28000")),
        ("no user", startup(3, 0, &[("database", "app")], None), error("28000")),
        ("a duplicated user", startup(3, 0, &[("user", "a"), ("user", "b")], None), error("08P01")),
        (
            "a reserved parameter",
            startup(3, 0, &[("user", "u"), ("host", "10.0.0.1:5432")], None),
            error("08P01"),
        ),
        ("replication", startup(3, 0, &[("user", "u"), ("replication", "database")], None), error("0A000")),
        (
            "a parameter without its value",
            [&[0, 0, 0, 13, 0, 3, 0, 0][..], b"user\0"].concat(),
            error("08P01"),
        ),
        ("a query before any startup", [&b"Q\0\0\0\x0dSELECT 1\0"[..]].concat(), error("54000")),
        ("a Terminate before any startup", b"X\0\0\0\x04".to_vec(), error("54000")),
        ("SSLRequest twice", [SSL_REQUEST, SSL_REQUEST].concat(), Verdict::Closed),
        ("GSSENCRequest twice", [GSS_REQUEST, GSS_REQUEST].concat(), Verdict::Closed),
        (
            "GSSENCRequest then SSLRequest then startup",
            [&GSS_REQUEST[..], &SSL_REQUEST, &good].concat(),
            Verdict::Closed,
        ),
        (
            "a cancel with a 2-byte key",
            vec![0, 0, 0, 14, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0],
            Verdict::Closed,
        ),
        (
            "a cancel with a 300-byte key",
            [&[0, 0, 1, 0x38, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 1][..], &[7; 300]].concat(),
            Verdict::Closed,
        ),
        (
            // The bytes after a StartupMessage are the session's first messages, whatever
            // they look like: the login goes ahead, and the database refuses message type 0.
            "a cancel after a startup",
            [&good[..], &[0, 0, 0, 16, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 1, 2, 3, 4]].concat(),
            Verdict::ErrorAfterLogin("08P01".to_owned()),
        ),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), error("54000")),
        (
            "TLS without ALPN to a plaintext port",
            vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0],
            Verdict::Closed,
        ),
        ("ten thousand parameters", startup(3, 0, &vec![("x", "y"); 10_000], None), error("54000")),
    ]
}

/// An encryption request answered `N` leaves the rest of the corpus to the plaintext rules.
fn tolerant(expected: &Verdict, got: &Verdict) -> bool {
    expected == got || matches!((expected, got), (Verdict::Closed, Verdict::Answered(b'N')))
}

#[tokio::test]
async fn the_client_proxy_answers_every_hostile_startup_or_closes() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = HostServer::start(standin, &pki, &server_options(standin)).await.unwrap();
    let mut options = ClientOptions::to_server(
        &pki,
        server.addr(),
        vec![ClientTarget::iam("db", standin.endpoint(Listener::Pam))],
    );
    options.extra_toml = "[proxy]\nstartup_timeout = \"2s\"\n".into();
    let proxy = ClientProxy::start(standin, &options).await.unwrap();
    let mut failures = Vec::new();
    for (name, bytes, expected) in corpus() {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr("db")).await.unwrap();
        let got = verdict(&mut tcp, &bytes, Duration::from_secs(10)).await;
        if !tolerant(&expected, &got) {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), proxy.log());
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
    let output = rds_auth_integration::harness::Psql::local(proxy.addr("db"), "iam_user")
        .dbname("app")
        .run("SELECT 1")
        .await
        .unwrap();
    assert!(output.success, "the client proxy no longer serves: {}", output.stderr);
}

fn server_options(standin: &StandIn) -> HostServerOptions {
    let mut options = HostServerOptions::new(vec![
        AllowedTarget::new(standin.endpoint(Listener::Pam), &["iam"]),
        // Allowed by name, but the name leads to loopback: a DNS rebinding.
        AllowedTarget::new("localhost:5432", &["iam"]),
    ]);
    options.extra_toml = "[limits]\nstartup_timeout = \"2s\"\n".into();
    options
}

#[tokio::test]
async fn the_server_proxy_answers_every_hostile_startup_inside_tls_or_closes() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = HostServer::start(standin, &pki, &server_options(standin)).await.unwrap();
    let mut failures = Vec::new();
    for (name, bytes, expected) in corpus() {
        // Inside TLS: the same rules, except that a startup needs the proxies' parameters, and
        // an encryption request inside TLS ends the connection.
        let mut tls = tls_to(&server, &pki, &pki.alice).await;
        let got = verdict(&mut tls, &bytes, Duration::from_secs(10)).await;
        let acceptable = match (&expected, &got) {
            _ if tolerant(&expected, &got) => true,
            // "no user" and friends are checked after the target, which is missing here.
            (Verdict::Error(_) | Verdict::ErrorAfterLogin(_), Verdict::Error(code)) => {
                code == "08P01" || code == "28000"
            }
            (Verdict::Closed, Verdict::Error(code)) => {
                name.contains("SSLRequest")
                    || name.contains("GSSENC")
                    // Inside TLS, a ClientHello is just a startup packet of absurd length.
                    || (name.starts_with("TLS") && code == "54000")
            }
            _ => false,
        };
        if !acceptable {
            failures.push(format!("TLS, {name}: expected {expected:?}, got {got:?}"));
        }
        // Before TLS: plaintext is refused whatever it says.
        let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let got = verdict(&mut tcp, &bytes, Duration::from_secs(10)).await;
        let acceptable = match got {
            Verdict::Closed | Verdict::Answered(b'N') => true,
            Verdict::Error(ref code) => ["08P01", "28000", "54000", "0A000"].contains(&code.as_str()),
            Verdict::Answered(_) | Verdict::ErrorAfterLogin(_) => false,
        };
        if !acceptable {
            failures.push(format!("plaintext, {name}: got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), server.log());
    assert!(!server.log().contains("panicked"), "{}", server.log());
    assert_eq!(server.get("/liveness").await.unwrap().0, 200);
}

/// Every spelling of "somewhere else in the VPC" a valid client could try: each is refused
/// before the server proxy opens any socket.
#[tokio::test]
async fn the_server_proxy_is_not_an_open_relay() {
    let standin = standin().await;
    let pki = ProxyPki::new().unwrap();
    let server = HostServer::start(standin, &pki, &server_options(standin)).await.unwrap();
    // A canary where a relay would land: it must never see a connection.
    let canary = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = canary.local_addr().unwrap().port();
    let alias = standin.alias().to_owned();
    let long = format!("{}.rds.test:5432", "a".repeat(300));
    let attempts: Vec<(String, &str)> = vec![
        (format!("127.0.0.1:{port}"), "loopback"),
        (format!("localhost:{port}"), "loopback by name"),
        (format!("[::1]:{port}"), "IPv6 loopback"),
        (format!("[::ffff:127.0.0.1]:{port}"), "IPv4-mapped IPv6 loopback"),
        ("169.254.169.254:80".into(), "instance metadata"),
        ("[fd00:ec2::254]:80".into(), "IPv6 instance metadata"),
        (format!("2130706433:{port}"), "decimal loopback"),
        (format!("0x7f000001:{port}"), "hexadecimal loopback"),
        (format!("0177.0.0.1:{port}"), "octal loopback"),
        (format!("127.1:{port}"), "short loopback"),
        (format!("{alias}:22"), "another port of an allowed host"),
        (format!("{alias}:{port}"), "another port of an allowed host"),
        (format!("{alias}.:5432"), "a trailing dot"),
        (format!("{}:5432", alias.to_uppercase().replace("PG", "pg\u{0430}")), "a homoglyph"),
        ("localhost:5432".into(), "allowed, but its name leads to loopback (DNS rebinding)"),
        (long, "an overlong name"),
        ("10.0.0.1:5432".into(), "a private address"),
        (format!("{alias}:5432@10.0.0.1:5432"), "smuggled authority"),
        (format!("{alias}:5432\0evil:5432"), "an embedded NUL"),
    ];
    let mut failures = Vec::new();
    for (host, what) in &attempts {
        let mut tls = tls_to(&server, &pki, &pki.alice).await;
        let packet = startup(3, 2, &[("user", "iam_user"), ("host", host), ("password", "x")], None);
        let started = Instant::now();
        match verdict(&mut tls, &packet, Duration::from_secs(10)).await {
            Verdict::Error(code) if ["28000", "08P01", "08001"].contains(&code.as_str()) => {
                eprintln!("refused {what} ({host:.60}): {code} in {:.0?}", started.elapsed());
            }
            other => failures.push(format!("{what} ({host}): {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let accepted = tokio::time::timeout(Duration::from_millis(200), canary.accept()).await;
    assert!(accepted.is_err(), "the canary saw a connection: {accepted:?}");
    // No upstream connection was even attempted.
    let connects = server.metric("rds_auth_proxy_upstream_connect_seconds_count").await;
    assert_eq!(connects, Some(0.0), "{}", server.log());
}
