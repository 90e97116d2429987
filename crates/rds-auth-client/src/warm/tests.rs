use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::*;

const SETTINGS: WarmSettings = WarmSettings { size: 2, idle: Duration::from_secs(5) };

/// A loopback connection: ours as the pool holds it, and the far end.
async fn pair() -> (Upstream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (theirs, _) = listener.accept().await.unwrap();
    (PgStream::new(Transport::plain(ours)), theirs)
}

/// The local port of a pooled connection, which tells connections apart.
fn port(stream: &Upstream) -> u16 {
    stream.get_ref().get_ref().local_addr().unwrap().port()
}

/// Waits until the reactor has seen the far end's close or bytes.
async fn readable(stream: &Upstream) {
    stream.get_ref().get_ref().readable().await.unwrap();
}

#[test]
fn reserve_counts_handshakes_under_way_and_failures_free_them() {
    let pool = WarmPool::new(SETTINGS);
    let now = Instant::now();
    assert_eq!(pool.reserve(now), 2);
    assert_eq!(pool.reserve(now), 0, "two handshakes are under way already");
    assert_eq!(pool.fill(None, now), None);
    assert_eq!(pool.reserve(now), 1, "a failed handshake frees its place");
    assert_eq!(WarmPool::new(WarmSettings::OFF).reserve(now), 0);
}

#[tokio::test]
async fn the_youngest_open_connection_is_taken_and_stale_ones_are_not() {
    let pool = WarmPool::new(SETTINGS);
    let start = Instant::now();
    assert_eq!(pool.reserve(start), 2);
    let (older, _far_older) = pair().await;
    let (younger, _far_younger) = pair().await;
    let older_port = port(&older);
    let younger_port = port(&younger);
    assert!(pool.fill(Some(older), start).is_some());
    assert!(pool.fill(Some(younger), start + Duration::from_secs(1)).is_some());
    assert_eq!(pool.ready(), 2);

    let taken = pool.take(start + Duration::from_secs(2)).unwrap();
    assert_eq!(port(&taken), younger_port);
    let taken = pool.take(start + Duration::from_secs(2)).unwrap();
    assert_eq!(port(&taken), older_port);
    assert!(pool.take(start).is_none());

    assert_eq!(pool.reserve(start), 2);
    let (stale, _far) = pair().await;
    assert!(pool.fill(Some(stale), start).is_some());
    assert!(pool.take(start + SETTINGS.idle).is_none(), "a connection past `idle` is not used");
    assert_eq!(pool.ready(), 0, "and it is dropped");
}

#[tokio::test]
async fn a_connection_the_far_end_closed_or_wrote_to_is_not_taken() {
    let pool = WarmPool::new(SETTINGS);
    let now = Instant::now();
    assert_eq!(pool.reserve(now), 2);
    let (closed, far) = pair().await;
    drop(far);
    readable(&closed).await;
    assert!(pool.fill(Some(closed), now).is_some());
    let (chatty, mut far) = pair().await;
    far.write_all(b"E").await.unwrap();
    readable(&chatty).await;
    assert!(pool.fill(Some(chatty), now).is_some());
    assert!(pool.take(now).is_none());
    assert_eq!(pool.ready(), 0);
}

#[tokio::test]
async fn expire_takes_back_only_what_no_session_took() {
    let pool = WarmPool::new(SETTINGS);
    let now = Instant::now();
    assert_eq!(pool.reserve(now), 2);
    let (first, _far_first) = pair().await;
    let (second, _far_second) = pair().await;
    let first_id = pool.fill(Some(first), now).unwrap();
    let second_id = pool.fill(Some(second), now).unwrap();
    assert!(pool.take(now).is_some(), "a session takes the younger one");
    assert!(pool.expire(second_id).is_none());
    assert!(pool.expire(first_id).is_some());
    assert_eq!(pool.ready(), 0);
    assert_eq!(pool.reserve(now), 2);
}

#[tokio::test]
async fn a_full_pool_turns_extra_connections_away() {
    let pool = WarmPool::new(WarmSettings { size: 1, idle: Duration::from_secs(5) });
    let now = Instant::now();
    assert_eq!(pool.reserve(now), 1);
    let (one, _far_one) = pair().await;
    let (two, _far_two) = pair().await;
    assert!(pool.fill(Some(one), now).is_some());
    assert_eq!(pool.fill(Some(two), now), None);
    assert_eq!(pool.ready(), 1);
}
