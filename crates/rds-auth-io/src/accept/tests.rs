use std::time::Duration;

use bytes::Bytes;
use rds_auth_codec::Params;
use rds_auth_codec::startup::ProtocolVersion;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_rustls::TlsConnector;

use super::*;
use crate::certgen::CertAuthority;
use crate::tls::{self, ClientAuth, Identity};

struct Pki {
    server: Arc<rustls::ServerConfig>,
    client_roots: rustls::RootCertStore,
}

fn pki() -> Pki {
    let ca = CertAuthority::new("test CA", Duration::from_secs(3600)).unwrap();
    let leaf = ca.issue_server(&["proxy.test"], Duration::from_secs(3600)).unwrap();
    let identity = Identity {
        chain: vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
        key: PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
    };
    let server = tls::server_config(identity, ClientAuth::None, &[ALPN_POSTGRESQL], false).unwrap();
    let client_roots =
        tls::roots_from(vec![CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()]).unwrap();
    Pki { server, client_roots }
}

fn startup_bytes() -> Bytes {
    let mut params = Params::new();
    params.push(&b"user"[..], &b"alice"[..]).unwrap();
    StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_0, params }).to_bytes()
}

fn policy(tls: Option<Arc<rustls::ServerConfig>>) -> AcceptPolicy {
    AcceptPolicy { tls, max_startup_len: 10_000 }
}

fn spawn_accept(
    server: DuplexStream,
    policy: AcceptPolicy,
) -> tokio::task::JoinHandle<Accepted<DuplexStream>> {
    tokio::spawn(async move { accept(server, &policy).await })
}

async fn tls_client(
    pki: &Pki,
    io: DuplexStream,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<DuplexStream>> {
    let config = tls::client_config(pki.client_roots.clone(), None, alpn, false).unwrap();
    TlsConnector::from(config).connect(ServerName::try_from("proxy.test").unwrap(), io).await
}

fn is_startup(accepted: &Accepted<DuplexStream>, tls: bool) -> bool {
    matches!(accepted, Accepted::Startup { stream, message } if stream.get_ref().is_tls() == tls && message.params.get(b"user").is_some())
}

#[tokio::test]
async fn gss_then_ssl_refused_then_plaintext_startup() {
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(None));
    client.write_all(&StartupPacket::GssEncRequest.to_bytes()).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'N');
    client.write_all(&StartupPacket::SslRequest.to_bytes()).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'N');
    client.write_all(&startup_bytes()).await.unwrap();
    assert!(is_startup(&task.await.unwrap(), false));
}

#[tokio::test]
async fn ssl_request_then_tls_then_startup() {
    let pki = pki();
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(Some(pki.server.clone())));
    client.write_all(&StartupPacket::SslRequest.to_bytes()).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'S');
    let mut tls = tls_client(&pki, client, &[]).await.unwrap();
    tls.write_all(&startup_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert!(is_startup(&task.await.unwrap(), true));
}

#[tokio::test]
async fn direct_tls_needs_alpn() {
    let pki = pki();
    let (client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(Some(pki.server.clone())));
    let mut tls = tls_client(&pki, client, &[ALPN_POSTGRESQL]).await.unwrap();
    tls.write_all(&startup_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert!(is_startup(&task.await.unwrap(), true));

    let (client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(Some(pki.server.clone())));
    let _client = tls_client(&pki, client, &[]).await;
    let accepted = task.await.unwrap();
    assert!(matches!(accepted, Accepted::Close(CloseReason::DirectTlsRefused)), "{accepted:?}");

    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(None));
    client.write_all(&[0x16, 3, 1, 0, 5]).await.unwrap();
    assert!(matches!(task.await.unwrap(), Accepted::Close(CloseReason::DirectTlsRefused)));
}

#[tokio::test]
async fn early_data_after_ssl_request_is_refused() {
    let pki = pki();
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(Some(pki.server.clone())));
    let mut bytes = StartupPacket::SslRequest.to_bytes().to_vec();
    bytes.extend_from_slice(&startup_bytes());
    client.write_all(&bytes).await.unwrap();
    let accepted = task.await.unwrap();
    assert!(matches!(accepted, Accepted::Close(CloseReason::EarlyData)), "{accepted:?}");
}

#[tokio::test]
async fn repeated_requests_close_the_connection() {
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(None));
    client.write_all(&StartupPacket::SslRequest.to_bytes()).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'N');
    client.write_all(&StartupPacket::SslRequest.to_bytes()).await.unwrap();
    assert!(matches!(task.await.unwrap(), Accepted::Close(CloseReason::RepeatedRequest)));
}

#[tokio::test]
async fn cancel_in_every_shape() {
    let cancel =
        StartupPacket::CancelRequest(CancelRequest { pid: 7, key: Bytes::from_static(&[1, 2, 3, 4]) });
    // Plaintext, first.
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(None));
    client.write_all(&cancel.to_bytes()).await.unwrap();
    assert!(matches!(task.await.unwrap(), Accepted::Cancel { request, .. } if request.pid == 7));
    // After N.
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(None));
    client.write_all(&StartupPacket::SslRequest.to_bytes()).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'N');
    client.write_all(&cancel.to_bytes()).await.unwrap();
    assert!(matches!(task.await.unwrap(), Accepted::Cancel { .. }));
    // Inside TLS.
    let pki = pki();
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(Some(pki.server.clone())));
    client.write_all(&StartupPacket::SslRequest.to_bytes()).await.unwrap();
    assert_eq!(client.read_u8().await.unwrap(), b'S');
    let mut tls = tls_client(&pki, client, &[]).await.unwrap();
    tls.write_all(&cancel.to_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert!(matches!(task.await.unwrap(), Accepted::Cancel { stream, .. } if stream.get_ref().is_tls()));
}

#[tokio::test]
async fn a_malformed_cancel_is_closed_in_silence() {
    let (mut client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(None));
    client.write_all(&[0, 0, 0, 14, 4, 210, 22, 46, 0, 0, 0, 7, 1, 2]).await.unwrap();
    assert!(matches!(task.await.unwrap(), Accepted::Close(CloseReason::BadCancel)));
}

#[tokio::test]
async fn garbage_and_oversize_are_refused_with_their_error() {
    for (bytes, expect) in [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "exceeds the limit"),
        ([&[0u8, 0, 0x27, 0x20][..], &[0, 3, 0, 0], &[b'x'; 10]].concat(), "exceeds the limit"),
        (vec![0, 0, 0, 8, 0, 9, 0, 0], "unsupported frontend protocol"),
    ] {
        let (mut client, server) = duplex(1 << 16);
        let task = spawn_accept(server, policy(None));
        client.write_all(&bytes).await.unwrap();
        let Accepted::Refuse { error, .. } = task.await.unwrap() else { panic!("expected a refusal") };
        assert!(error.to_string().contains(expect), "{error}");
    }
}

#[tokio::test]
async fn silent_peer_is_closed_quietly() {
    let (client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(None));
    drop(client);
    assert!(matches!(task.await.unwrap(), Accepted::Close(CloseReason::PeerLeft)));
}

#[tokio::test]
async fn tls_closed_cleanly_before_startup_is_unused_and_abruptly_is_not() {
    let pki = pki();
    let (client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(Some(pki.server.clone())));
    let mut tls = tls_client(&pki, client, &[ALPN_POSTGRESQL]).await.unwrap();
    tls.shutdown().await.unwrap();
    assert!(matches!(task.await.unwrap(), Accepted::Close(CloseReason::Unused)));

    let (client, server) = duplex(1 << 16);
    let task = spawn_accept(server, policy(Some(pki.server.clone())));
    let tls = tls_client(&pki, client, &[ALPN_POSTGRESQL]).await.unwrap();
    drop(tls);
    let accepted = task.await.unwrap();
    assert!(!matches!(accepted, Accepted::Close(CloseReason::Unused)), "{accepted:?}");
}

/// The negotiation on arbitrary bytes, as the `handshake` fuzz target runs it
/// (integration/fuzz): once the client's bytes run out, it ends in a startup, a cancel, a
/// refusal or a close, and never panics. Encryption requests in the mix get `N`; the seeds
/// start with the requests so that the later states are reached too.
fn hostile_handshake(bytes: &[u8]) -> Accepted<DuplexStream> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        let (mut client, server) = duplex(1 << 16);
        let send = async {
            let _ = client.write_all(bytes).await;
            let _ = client.shutdown().await;
        };
        let policy = policy(None);
        let ((), accepted) =
            tokio::join!(send, tokio::time::timeout(Duration::from_secs(5), accept(server, &policy)));
        accepted.expect("the negotiation ended once the bytes ran out")
    })
}

mod hostile {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const SSL: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
    const GSS: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 48];

    fn prefix() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            Just(SSL.to_vec()),
            Just(GSS.to_vec()),
            Just([GSS, SSL].concat()),
            Just(startup_bytes().to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn hostile_bytes_end_the_negotiation(head in prefix(), tail in vec(any::<u8>(), 0..600)) {
            let _ = hostile_handshake(&[head, tail].concat());
        }

        #[test]
        fn any_cut_of_a_good_startup_is_closed_in_silence_or_accepted(cut in 0usize..64) {
            let good = startup_bytes();
            let cut = cut.min(good.len());
            let accepted = hostile_handshake(&good[..cut]);
            if cut == good.len() {
                prop_assert!(is_startup(&accepted, false));
            } else {
                // Nothing at all is a peer that left; part of a packet, a close mid-message.
                prop_assert!(matches!(accepted, Accepted::Close(_)), "{accepted:?}");
            }
        }
    }
}
