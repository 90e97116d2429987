//! A full session of every kind at TRACE level on both proxies: no token, secret key, session
//! token or password appears in any log line. (The AWS SDK traces the canonical request it
//! signs, access key id and scope included; neither is a secret, and the signature, the
//! secret key and the session token never appear.)

use rds_auth_integration::harness::proxies::{
    ClientCredentials, ClientOptions, ClientProxy, ClientTarget, Topology,
};
use rds_auth_integration::harness::{Listener, Psql, Signer};

#[tokio::test]
async fn trace_logs_hold_no_secret() {
    let topology = Topology::start("secrets", "trace").await.unwrap();
    let standin = &topology.standin;
    let pam = standin.endpoint(Listener::Pam);
    let targets = vec![
        ClientTarget::iam("iam", &pam),
        ClientTarget::iam("pass", &pam).with_auth("passthrough"),
        ClientTarget::iam("scram", &pam).with_password("scram-secret"),
        ClientTarget::iam("clear", &pam).with_password("clear-secret"),
    ];
    let mut options = ClientOptions::new(&topology, targets);
    // A span-scoped directive too: it must not switch aws-sigv4's traces back on.
    options.log_level = "trace,[conn]=trace".into();
    let proxy = ClientProxy::start(standin, &options).await.unwrap();
    for (target, user, password) in [
        ("iam", "iam_user", None),
        ("pass", "scram_user", Some("scram-secret")),
        ("scram", "scram_user", None),
        ("clear", "password_user", None),
    ] {
        let mut psql = Psql::local(proxy.addr(target), user);
        if let Some(password) = password {
            psql = psql.password(password);
        }
        let output = psql.run("SELECT 1").await.unwrap();
        assert!(output.success, "{target}: {}", output.stderr);
    }
    // A second client proxy with session credentials, for the long tokens.
    let mut session =
        ClientOptions::new(&topology, vec![ClientTarget::iam("front", standin.endpoint(Listener::Front))]);
    session.credentials = ClientCredentials::StandIn(Signer::Session);
    session.log_level = "trace".into();
    let session_proxy = ClientProxy::start(standin, &session).await.unwrap();
    let output = Psql::local(session_proxy.addr("front"), "app_reader").run("SELECT 1").await.unwrap();
    assert!(output.success, "{}", output.stderr);

    let logs = [
        ("client proxy", proxy.log()),
        ("client proxy (session credentials)", session_proxy.log()),
        ("server proxy", topology.server.container().logs()),
    ];
    let static_credentials = standin.credentials(Signer::Static);
    let session_credentials = standin.credentials(Signer::Session);
    let session_token = session_credentials.session_token().unwrap().to_owned();
    let forbidden = [
        ("a token's signature", "X-Amz-Signature".to_owned()),
        ("a token's security token", "X-Amz-Security-Token".to_owned()),
        ("the static secret key", static_credentials.secret_access_key().to_owned()),
        ("the session secret key", session_credentials.secret_access_key().to_owned()),
        ("the session token", session_token[..40].to_owned()),
        ("a SCRAM password", "scram-secret".to_owned()),
        ("a cleartext password", "clear-secret".to_owned()),
    ];
    for (source, log) in &logs {
        assert!(
            log.lines().count() > 20,
            "{source} logged almost nothing at TRACE: the test would prove nothing"
        );
        for (what, needle) in &forbidden {
            if let Some(line) = log.lines().find(|line| line.contains(needle.as_str())) {
                panic!("{what} appears in the {source} log:\n{line}");
            }
        }
    }
}
