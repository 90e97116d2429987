use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rds_auth_codec::backend::{BackendMessage, TransactionStatus};
use rds_auth_codec::frame::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;

fn ready() -> Bytes {
    BackendMessage::ReadyForQuery(TransactionStatus::Idle).to_bytes()
}

fn query(sql: &str) -> Bytes {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    Frame::new(b'Q', body).to_bytes()
}

/// Runs a relay between two duplex pairs; returns the far ends and the relay task.
fn start(
    client_ahead: &[u8],
    server_ahead: &[u8],
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<RelayOutcome>) {
    let (client_far, mut client_near) = duplex(1 << 16);
    let (server_far, mut server_near) = duplex(1 << 16);
    let (client_ahead, server_ahead) = (BytesMut::from(client_ahead), BytesMut::from(server_ahead));
    let closing = Bytes::from_static(b"BYE");
    let task = tokio::spawn(async move {
        relay(
            &mut client_near,
            &mut server_near,
            client_ahead,
            server_ahead,
            RelayConfig { buffer_size: 7, max_message_len: 1 << 20 },
            async move {
                let _ = shutdown.await;
            },
            closing,
            &mut NoObserver,
        )
        .await
    });
    (client_far, server_far, task)
}

#[tokio::test]
async fn read_ahead_goes_first_and_queries_are_counted() {
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let q = query("select 1");
    let (mut client, mut server, task) = start(&q, &ready(), rx);

    let mut got = vec![0; q.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, q);
    let mut got = vec![0; 6];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(got, ready());

    // A second query is still running when the client vanishes.
    client.write_all(&query("select pg_sleep(60)")).await.unwrap();
    let mut sink = vec![0; query("select pg_sleep(60)").len()];
    server.read_exact(&mut sink).await.unwrap();
    drop(client);
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.end, RelayEnd::ClientClosed), "{:?}", outcome.end);
    // One ReadyForQuery came back for two queries.
    assert_eq!(outcome.queries_in_flight, 1);
    assert!(!outcome.terminated);
    assert_eq!(outcome.bytes_server_to_client, 6);
    // The server side saw the close.
    assert_eq!(server.read(&mut [0; 1]).await.unwrap(), 0);
}

#[tokio::test]
async fn shutdown_waits_for_a_message_boundary() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (mut client, mut server, task) = start(b"", b"", rx);
    // Half a DataRow is on its way when shutdown is asked for.
    let row = Frame::new(b'D', vec![1u8; 40]).to_bytes();
    server.write_all(&row[..20]).await.unwrap();
    let mut got = vec![0; 20];
    client.read_exact(&mut got).await.unwrap();
    tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished(), "the relay must not cut a message in half");
    server.write_all(&row[20..]).await.unwrap();
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.end, RelayEnd::Shutdown), "{:?}", outcome.end);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(&rest[..25], &row[20..]);
    assert_eq!(&rest[25..], b"BYE");
}

#[tokio::test]
async fn server_close_after_an_error_reaches_the_client() {
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let (mut client, mut server, task) = start(b"", b"", rx);
    client.write_all(&Frame::new(b'X', Vec::new()).to_bytes()).await.unwrap();
    server.write_all(b"E\0\0\0\x04").await.unwrap();
    drop(server);
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.end, RelayEnd::ServerClosed | RelayEnd::ClientClosed));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"E\0\0\0\x04");
}

#[tokio::test]
async fn garbage_ends_the_relay() {
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let (mut client, _server, task) = start(b"", b"", rx);
    client.write_all(&[b'Q', 0, 0, 0, 1]).await.unwrap();
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.end, RelayEnd::Protocol(Direction::ClientToServer, _)), "{:?}", outcome.end);
}
