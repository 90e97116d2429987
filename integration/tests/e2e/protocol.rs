//! What no client available here sends, with hand-built packets through both proxies:
//! protocol 3.2, libpq 19's 3.9999 GREASE with `_pq_.` options, direct TLS, GSSENCRequest,
//! and the real backend pid in BackendKeyData.

use rds_auth_codec::backend::{Authentication, BackendMessage};
use rds_auth_codec::frame::Frame;
use rds_auth_codec::startup::StartupMessage;
use rds_auth_codec::{Params, ProtocolVersion, StartupPacket};
use rds_auth_integration::harness::Listener;
use rds_auth_integration::harness::proxies::{ClientOptions, ClientProxy, ClientTarget};
use rds_auth_io::PgStream;
use rds_auth_io::tls::{self, ALPN_POSTGRESQL};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::proxies::iam_proxy;
use crate::support::topology;

fn startup(version: ProtocolVersion, extra: &[(&str, &str)]) -> bytes::Bytes {
    let mut params = Params::new();
    params.push(&b"user"[..], &b"iam_user"[..]).unwrap();
    params.push(&b"database"[..], &b"app"[..]).unwrap();
    for (name, value) in extra {
        params.push(name.as_bytes().to_vec(), value.as_bytes().to_vec()).unwrap();
    }
    StartupPacket::Startup(StartupMessage { version, params }).to_bytes()
}

/// Reads until ReadyForQuery and returns everything before it.
async fn until_ready<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut PgStream<S>) -> Vec<BackendMessage> {
    let mut seen = Vec::new();
    loop {
        let message = stream.read_backend(1 << 20).await.unwrap();
        match message {
            BackendMessage::ReadyForQuery(_) => return seen,
            BackendMessage::ErrorResponse(fields) => panic!("refused: {fields:?}"),
            other => seen.push(other),
        }
    }
}

/// Runs `SELECT pg_backend_pid()` and returns the pid as text.
async fn backend_pid<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut PgStream<S>) -> u32 {
    stream.send(&Frame::new(b'Q', &b"SELECT pg_backend_pid()\0"[..]).to_bytes()).await.unwrap();
    let mut pid = None;
    for message in until_ready(stream).await {
        if let BackendMessage::Other(Frame { tag: b'D', body }) = message {
            // DataRow: column count (2), length (4), text.
            pid = std::str::from_utf8(&body[6..]).ok().and_then(|s| s.parse().ok());
        }
    }
    pid.expect("a DataRow with the pid")
}

fn key_data(messages: &[BackendMessage]) -> (u32, usize) {
    messages
        .iter()
        .find_map(|m| match m {
            BackendMessage::BackendKeyData(k) => Some((k.pid, k.key.len())),
            _ => None,
        })
        .expect("BackendKeyData")
}

#[tokio::test]
async fn protocol_3_2_needs_no_negotiation_and_keeps_the_pid() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let mut stream = PgStream::new(TcpStream::connect(proxy.addr("db")).await.unwrap());
    stream.send(&startup(ProtocolVersion::V3_2, &[])).await.unwrap();
    let messages = until_ready(&mut stream).await;
    assert!(matches!(messages[0], BackendMessage::Authentication(Authentication::Ok)), "{messages:?}");
    assert!(!messages.iter().any(|m| matches!(m, BackendMessage::NegotiateProtocolVersion { .. })));
    let (pid, _) = key_data(&messages);
    assert_eq!(pid, backend_pid(&mut stream).await, "BackendKeyData carries the real backend pid");
}

#[tokio::test]
async fn grease_is_downgraded_with_negotiate_protocol_version() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let mut stream = PgStream::new(TcpStream::connect(proxy.addr("db")).await.unwrap());
    let grease = ProtocolVersion::new(3, 9999);
    stream
        .send(&startup(grease, &[("_pq_.test_protocol_negotiation", "1"), ("application_name", "grease")]))
        .await
        .unwrap();
    let messages = until_ready(&mut stream).await;
    assert_eq!(
        messages[0],
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 2,
            unrecognized: vec![bytes::Bytes::from_static(b"_pq_.test_protocol_negotiation")],
        },
        "NegotiateProtocolVersion comes first"
    );
    assert!(matches!(messages[1], BackendMessage::Authentication(Authentication::Ok)));
    // The session works, and the option never reached the database.
    stream
        .send(&Frame::new(b'Q', &b"SELECT current_setting('application_name')\0"[..]).to_bytes())
        .await
        .unwrap();
    let rows = until_ready(&mut stream).await;
    assert!(
        rows.iter().any(
            |m| matches!(m, BackendMessage::Other(Frame { tag: b'D', body }) if body.ends_with(b"grease"))
        )
    );
}

#[tokio::test]
async fn gssenc_then_ssl_refused_then_startup() {
    let topology = topology().await;
    let proxy = iam_proxy(topology).await;
    let mut stream = PgStream::new(TcpStream::connect(proxy.addr("db")).await.unwrap());
    stream.send(&StartupPacket::GssEncRequest.to_bytes()).await.unwrap();
    assert!(stream.fill_first().await.unwrap());
    assert_eq!(stream.buffered(), b"N");
    let (tcp, _) = stream.into_parts();
    let mut stream = PgStream::new(tcp);
    stream.send(&StartupPacket::SslRequest.to_bytes()).await.unwrap();
    assert!(stream.fill_first().await.unwrap());
    assert_eq!(stream.buffered(), b"N");
    let (tcp, _) = stream.into_parts();
    let mut stream = PgStream::new(tcp);
    stream.send(&startup(ProtocolVersion::V3_0, &[])).await.unwrap();
    let messages = until_ready(&mut stream).await;
    let (_, key_len) = key_data(&messages);
    assert_eq!(key_len, 4, "a 3.0 client gets a 4-byte key");
}

#[tokio::test]
async fn direct_tls_with_alpn_when_local_tls_is_on() {
    let topology = topology().await;
    let target = ClientTarget::iam("db", topology.standin.endpoint(Listener::Pam));
    let mut options = ClientOptions::new(topology, vec![target]);
    options.local_tls = true;
    let proxy = ClientProxy::start(&topology.standin, &options).await.unwrap();
    let local_ca = tls::load_roots(&proxy.dir().join("xdg/rds-auth-proxy/local-ca.crt")).unwrap();
    let config = tls::client_config(local_ca, None, &[ALPN_POSTGRESQL], true).unwrap();
    let tcp = TcpStream::connect(proxy.addr("db")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_POSTGRESQL));
    let mut stream = PgStream::new(tls);
    stream.send(&startup(ProtocolVersion::V3_0, &[])).await.unwrap();
    let messages = until_ready(&mut stream).await;
    assert!(matches!(messages[0], BackendMessage::Authentication(Authentication::Ok)));
}
