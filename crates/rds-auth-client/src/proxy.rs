use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rds_auth_io::relay::RelayConfig;
use rds_auth_token::TokenCache;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::session;
use crate::{CancelRegistry, Target};

/// State every session of the client proxy shares.
#[derive(Debug)]
pub struct Shared {
    pub tokens: TokenCache,
    pub cancels: Arc<CancelRegistry>,
    /// Local TLS toward Postgres clients; `None` answers `N` to SSLRequest.
    pub local_tls: Option<Arc<rustls::ServerConfig>>,
    pub startup_timeout: Duration,
    /// Bounds everything from the StartupMessage to ReadyForQuery.
    pub handshake_timeout: Duration,
    pub relay: RelayConfig,
    /// How long open sessions may go on after Ctrl-C before they are ended.
    pub drain_timeout: Duration,
}

/// A bound local listener and the target it leads to.
#[derive(Debug)]
pub struct Listener {
    pub target: Arc<Target>,
    pub socket: LocalSocket,
}

/// Where local clients connect.
#[derive(Debug)]
pub enum LocalSocket {
    Tcp(TcpListener),
    /// A Unix socket, `.s.PGSQL.<port>` in a directory only its owner can open, so other
    /// users of the machine cannot borrow the IAM identity behind it. Removed on exit.
    Unix(UnixListener, PathBuf),
}

enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

async fn accept(socket: &LocalSocket) -> io::Result<Accepted> {
    match socket {
        LocalSocket::Tcp(listener) => listener.accept().await.map(|(tcp, peer)| Accepted::Tcp(tcp, peer)),
        LocalSocket::Unix(listener, _) => listener.accept().await.map(|(unix, _)| Accepted::Unix(unix)),
    }
}

/// Serves every listener until `shutdown` completes, then drains: no new connections, open
/// sessions get `shared.drain_timeout` to finish, and the rest are ended at a message boundary
/// with FATAL 57P01.
pub async fn run(
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let sessions = TaskTracker::new();
    let stop_accepting = CancellationToken::new();
    let terminate = CancellationToken::new();
    let mut accept_loops = Vec::new();
    for listener in listeners {
        let (sessions, stop, terminate, shared) =
            (sessions.clone(), stop_accepting.clone(), terminate.clone(), shared.clone());
        accept_loops.push(tokio::spawn(async move {
            let Listener { target, socket } = listener;
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = accept(&socket) => accepted,
                };
                match accepted {
                    Ok(Accepted::Tcp(tcp, peer)) => {
                        sessions.spawn(session::serve_tcp(
                            tcp,
                            peer,
                            target.clone(),
                            shared.clone(),
                            terminate.clone(),
                        ));
                    }
                    Ok(Accepted::Unix(unix)) => {
                        sessions.spawn(session::serve(
                            unix,
                            "unix".to_owned(),
                            target.clone(),
                            shared.clone(),
                            terminate.clone(),
                        ));
                    }
                    // Running out of file descriptors must not end the proxy: wait and go on.
                    Err(e) => {
                        warn!(target = %target.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            if let LocalSocket::Unix(_, path) = &socket {
                let _ = std::fs::remove_file(path);
            }
        }));
    }
    shutdown.await;
    stop_accepting.cancel();
    for accept_loop in accept_loops {
        let _ = accept_loop.await;
    }
    sessions.close();
    if !sessions.is_empty() {
        info!(sessions = sessions.len(), "waiting for open sessions to finish");
    }
    if tokio::time::timeout(shared.drain_timeout, sessions.wait()).await.is_err() {
        info!(sessions = sessions.len(), "ending the remaining sessions");
        terminate.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
    }
    Ok(())
}
