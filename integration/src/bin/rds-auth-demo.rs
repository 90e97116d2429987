//! `rds-auth-demo`, what `cargo xtask demo` runs: the whole path on this machine, no AWS
//! account needed.
//!
//! It starts the RDS stand-in (Postgres that checks IAM tokens as RDS does) on an internal
//! Docker network, the server proxy in a container joining that network, and then the client
//! proxy in the foreground with a target `demo`, which prints the psql line to use. Ctrl-C
//! stops the client proxy, which drains its sessions; the containers go with this process.

use std::process::ExitCode;

use rds_auth_integration::harness::Listener;
use rds_auth_integration::harness::proxies::{ClientOptions, ClientTarget, Topology, client_command};

/// The local port the demo asks for, so the printed line stays the same between runs.
const DEMO_PORT: u16 = 15432;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(message) => {
            #[allow(clippy::print_stderr, reason = "the demo talks to the person running it")]
            {
                eprintln!("rds-auth-demo: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stderr, reason = "the demo talks to the person running it")]
async fn run() -> Result<ExitCode, String> {
    eprintln!("starting the RDS stand-in and the server proxy in containers...");
    let topology = Topology::start("demo", "info").await.map_err(|e| e.to_string())?;
    let mut target = ClientTarget::iam("demo", topology.standin.endpoint(Listener::Pam));
    target.database = Some("demo".to_owned());
    target.user = Some("iam_user".to_owned());
    target.local_port = std::net::TcpListener::bind(("127.0.0.1", DEMO_PORT)).ok().map(|_| DEMO_PORT);
    let mut options = ClientOptions::new(&topology, vec![target]);
    options.log_level = "info".to_owned();
    let dir = rds_auth_integration::harness::scratch_dir("demo").map_err(|e| e.to_string())?;
    let mut command = client_command(&topology.standin, &options, &dir).map_err(|e| e.to_string())?;
    eprintln!(
        "\nThe server proxy runs in container {} and reaches the database on an internal network;\n\
         the client proxy below signs an IAM token per connection with the stand-in's test keys.\n\
         Connect with the psql line it prints: no password is asked for. Try\n\
         \x20   SELECT * FROM greetings;\n\
         Ctrl-C stops everything.\n",
        topology.server.container().name()
    );
    let mut child =
        command.kill_on_drop(true).spawn().map_err(|e| format!("cannot start rds-auth-proxy: {e}"))?;
    // Ctrl-C reaches the client proxy too, which drains and exits; wait for it, then let the
    // containers go.
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| e.to_string())?,
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    eprintln!("client proxy exited ({status}); removing the containers");
    drop(topology);
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
