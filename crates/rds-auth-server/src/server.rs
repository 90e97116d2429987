use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::ServerConfig;
use crate::session;

/// Serves connections from `listener` until `shutdown` completes, then stops accepting and
/// lets open sessions finish for up to `config.drain_timeout`. Sessions still open after that
/// are ended at a message boundary with FATAL 57P01.
pub async fn run(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let terminate = CancellationToken::new();
    info!(listen.addr = %listener.local_addr()?, targets = config.allowlist().len(), "server proxy listening");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let config = config.clone();
                    let terminate = terminate.clone();
                    tracker.spawn(session::serve(tcp, peer, config, terminate));
                }
                // Running out of file descriptors must not end the proxy: wait and go on.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracker.close();
    info!(sessions = tracker.len(), "draining sessions");
    if tokio::time::timeout(config.drain_timeout, tracker.wait()).await.is_err() {
        info!(sessions = tracker.len(), "drain timeout reached: ending the remaining sessions");
        terminate.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
    }
    Ok(())
}
