//! The harness itself: other containers reach the stand-in by its alias on the test network, a
//! stand-in of one's own is removed when dropped, a container that dies fails with its log, and
//! a missing image fails with the command that builds it.

use std::process::Command;
use std::time::Duration;

use rds_auth_integration::harness::{
    Container, ContainerSpec, HarnessError, Listener, Signer, StandIn, StandInOptions, check_docker,
};

use crate::support::{connect_to, current_user, standin};

#[tokio::test]
async fn a_probe_on_the_network_reaches_both_listeners_by_alias() {
    let standin = standin().await;
    let network = standin.network().expect("the shared stand-in joins a network");
    let ip = standin.network_ip().expect("the stand-in has an address on its network");
    let script = format!(
        "nc -z -w 5 {alias} 5432 && nc -z -w 5 {alias} 5433 && getent hosts {alias} && echo PROBE OK",
        alias = standin.alias()
    );
    let probe = Container::start(
        ContainerSpec::new("rds-auth-proxy-test/base:bookworm")
            .with_name_prefix("rds-auth-probe")
            .with_cmd(&["sh", "-c", &script])
            .with_network(network, &[])
            .with_ready_line("PROBE OK")
            .with_startup_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let logs = probe.logs();
    assert!(logs.contains(&format!("{ip} ")), "the alias resolved elsewhere: {logs}");
    probe.remove().await.unwrap();
}

#[tokio::test]
async fn an_own_stand_in_takes_its_alias_and_is_removed_on_drop() {
    let own = StandIn::start(StandInOptions::new().with_alias("own.rds.test")).await.unwrap();
    assert_eq!(own.endpoint(Listener::Pam), "own.rds.test:5432");
    assert!(own.network().is_none());
    let token = own.token("iam_user", Listener::Pam, Signer::Static).unwrap();
    let client = connect_to(&own, Listener::Pam, "iam_user", "postgres", &token).await.unwrap();
    assert_eq!(current_user(&client).await, "iam_user");
    drop(client);
    let name = own.container().name().to_owned();
    drop(own);
    let listed = Command::new("docker")
        .args(["ps", "--all", "--quiet", "--filter", &format!("name=^{name}$")])
        .output()
        .unwrap();
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "", "{name} is still there");
}

#[tokio::test]
async fn a_missing_image_fails_with_the_command_that_builds_it() {
    let error = check_docker("rds-auth-proxy-test/missing:0").await.unwrap_err();
    assert!(matches!(error, HarnessError::ImageMissing { .. }), "{error:?}");
    assert!(error.to_string().contains("cargo xtask images"), "{error}");
}

#[tokio::test]
async fn a_container_that_dies_fails_with_its_log_and_is_removed() {
    let error = Container::start(
        ContainerSpec::new("rds-auth-proxy-test/base:bookworm")
            .with_name_prefix("rds-auth-broken")
            .with_cmd(&["sh", "-c", "echo 'something broke' >&2; exit 3"])
            .with_ready_line("NEVER")
            .with_startup_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap_err();
    let HarnessError::ContainerStart { name, reason, log } = &error else { panic!("{error:?}") };
    assert_eq!(reason, "it exited before it was ready");
    assert!(log.contains("something broke"), "{log}");
    let listed = Command::new("docker")
        .args(["ps", "--all", "--quiet", "--filter", &format!("name=^{name}$")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "", "{name} is still there");
}
