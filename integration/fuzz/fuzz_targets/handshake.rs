//! Both proxies' handshake on arbitrary bytes from a client: the startup negotiation they
//! share (`rds_auth_io::accept`: SSLRequest, GSSENCRequest, direct TLS, CancelRequest,
//! StartupMessage), then the client proxy's checks and the server proxy's extraction. The
//! negotiation must end (a startup, a cancel, a refusal or a close) once the bytes run out,
//! and never panic. The proptest `hostile_bytes_end_the_negotiation`
//! (crates/rds-auth-io/src/accept/tests.rs) runs the same in every CI run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_auth_io::accept::{AcceptPolicy, Accepted, accept};
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let policy = AcceptPolicy { tls: None, max_startup_len: 10_000 };
        let send = async {
            let _ = client.write_all(data).await;
            // The client's half closes: the negotiation sees the end of its bytes.
            let _ = client.shutdown().await;
        };
        let deadline = std::time::Duration::from_secs(5);
        let ((), accepted) = tokio::join!(send, tokio::time::timeout(deadline, accept(server, &policy)));
        let accepted = accepted.expect("the negotiation ended once the bytes ran out");
        if let Accepted::Startup { message, .. } = accepted {
            let mut params = message.params.clone();
            let _ = rds_auth_startup::check_client_params(&params);
            let _ = rds_auth_startup::negotiate(message.version, &mut params, 2);
            let _ = rds_auth_startup::extract(message.params);
        }
        drop(client);
    });
});
