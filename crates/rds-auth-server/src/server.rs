use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::ServerConfig;
use crate::session;

/// How long ending the remaining sessions may take once the drain deadline has passed.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// Serves connections from `listener` until `shutdown` completes. Then:
/// 1. readiness turns 503 at once, and the listener keeps accepting for
///    `config.shutdown.min_delay`, while load balancers deregister this replica;
/// 2. the listener closes, and open sessions may finish for up to
///    `config.shutdown.max_delay`;
/// 3. sessions still open are ended at a message boundary with FATAL 57P01.
pub async fn run(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let terminate = CancellationToken::new();
    info!(listen.addr = %listener.local_addr()?, targets = config.allowlist().len(), "server proxy listening");
    config.phase.set_serving();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stop_accepting = std::pin::pin!(None::<tokio::time::Sleep>);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tracker.spawn(session::serve(tcp, peer, config.clone(), terminate.clone()));
                }
                // Running out of file descriptors must not end the proxy: wait and go on.
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown, if stop_accepting.is_none() => {
                config.phase.set_draining();
                config.metrics.draining.set(1);
                info!(
                    min_delay_ms = config.shutdown.min_delay.as_millis() as u64,
                    "shutting down: readiness fails now; still accepting until load balancers have noticed"
                );
                stop_accepting.set(Some(tokio::time::sleep(config.shutdown.min_delay)));
            }
            () = async { stop_accepting.as_mut().as_pin_mut().expect("guarded by is_some").await },
                if stop_accepting.is_some() => break,
        }
    }
    drop(listener);
    tracker.close();
    info!(
        sessions = tracker.len(),
        max_delay_ms = config.shutdown.max_delay.as_millis() as u64,
        "listener closed: draining sessions"
    );
    if tokio::time::timeout(config.shutdown.max_delay, tracker.wait()).await.is_err() {
        info!(sessions = tracker.len(), "drain deadline reached: ending the remaining sessions with 57P01");
        terminate.cancel();
        let _ = tokio::time::timeout(TERMINATE_GRACE, tracker.wait()).await;
    }
    info!("server proxy stopped");
    Ok(())
}
