//! The container's tie to the test process that started it.
//!
//! The harness opens a TCP connection to the lifeline port as soon as the container is ready
//! and keeps it open for as long as it needs the container. [`run`] returns when nobody
//! connected within the first-contact time, or when every connection made so far has closed;
//! the entrypoint then stops Postgres and the container exits, and Docker removes it. A test
//! binary that panics, is killed, or keeps a container in a `static` (which is never dropped)
//! therefore leaves nothing running: the kernel closes its sockets when the process ends.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::standin::StandinError;

/// Why the lifeline let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifelineEnd {
    /// Nobody connected in time.
    NoContact,
    /// Every holder closed its connection.
    Released,
}

/// Waits as described in the module documentation.
pub async fn run(listener: TcpListener, first_contact: Duration) -> Result<LifelineEnd, StandinError> {
    let mut holders = JoinSet::new();
    match tokio::time::timeout(first_contact, listener.accept()).await {
        Err(_elapsed) => return Ok(LifelineEnd::NoContact),
        Ok(accepted) => {
            let (stream, _) = accepted?;
            holders.spawn(hold(stream));
        }
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // A failed accept (a reset before we got to it) is no holder.
                if let Ok((stream, _)) = accepted {
                    holders.spawn(hold(stream));
                }
            }
            Some(_) = holders.join_next() => {
                if holders.is_empty() {
                    return Ok(LifelineEnd::Released);
                }
            }
        }
    }
}

/// Reads until the holder closes or the connection fails.
async fn hold(mut stream: TcpStream) {
    let mut buf = [0u8; 64];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lets_go_when_the_last_holder_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lifeline = tokio::spawn(run(listener, Duration::from_secs(5)));
        let first = TcpStream::connect(addr).await.unwrap();
        let second = TcpStream::connect(addr).await.unwrap();
        // Both must have been accepted before the first lets go.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!lifeline.is_finished());
        drop(second);
        assert_eq!(lifeline.await.unwrap().unwrap(), LifelineEnd::Released);
    }

    #[tokio::test]
    async fn lets_go_without_contact() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(run(listener, Duration::from_millis(50)).await.unwrap(), LifelineEnd::NoContact);
    }
}
