//! The RDS stand-in checks tokens as RDS does: valid ones log in, every kind of bad one gets
//! RDS's exact refusal, and each verdict is logged with its reason.

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use rds_auth_codec::backend::BackendMessage;
use rds_auth_codec::startup::StartupMessage;
use rds_auth_codec::{Params, ProtocolVersion, StartupPacket};
use rds_auth_integration::harness::{
    Listener, Psql, SESSION_ACCESS_KEY_ID, STATIC_ACCESS_KEY_ID, Signer, StandIn,
};
use rds_auth_token::{Credentials, TokenRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;

use crate::support::{LOG_WAIT, assert_pam_refusal, connect_to, current_user, standin};

/// A token for `user` at `host:port` signed now with the stand-in's static key.
fn token_for(standin: &StandIn, host: &str, port: u16, user: &str) -> String {
    let request = TokenRequest { host, port, user, region: standin.region() };
    rds_auth_token::generate(standin.credentials(Signer::Static), &request, SystemTime::now())
        .expect("the test credentials sign any request")
        .expose()
        .to_owned()
}

#[tokio::test]
async fn a_static_token_logs_in_through_pam() {
    let standin = standin().await;
    let token = standin.token("iam_user", Listener::Pam, Signer::Static).unwrap();
    assert!(token.len() <= 511, "a static token fits through pam_exec ({} bytes)", token.len());
    let client = connect_to(standin, Listener::Pam, "iam_user", "postgres", &token).await.unwrap();
    assert_eq!(current_user(&client).await, "iam_user");
    let row = client
        .query_one("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "TLSv1.3");
    let line = standin
        .container()
        .wait_for_line(
            &["pam user=\"iam_user\"", &format!("accept key={STATIC_ACCESS_KEY_ID} session_token=false")],
            LOG_WAIT,
        )
        .await
        .unwrap();
    assert!(!line.contains(&token), "the token reached the log: {line}");
}

#[tokio::test]
async fn psql_logs_in_with_a_token_and_verifies_the_ip_address() {
    let standin = standin().await;
    let token = standin.token("iam_user", Listener::Pam, Signer::Static).unwrap();
    let output = Psql::new(standin.addr(Listener::Pam), "iam_user", standin.ca_pem_path().to_owned())
        .password(&token)
        .dbname("demo")
        .run("SELECT current_user || ' ' || count(*) FROM greetings")
        .await
        .unwrap();
    assert!(output.success, "psql failed: {}", output.stderr);
    assert_eq!(output.stdout.trim(), "iam_user 4");
}

#[tokio::test]
async fn a_user_name_that_needs_encoding_logs_in() {
    let standin = standin().await;
    let user = "iam+user@corp.example";
    let token = standin.token(user, Listener::Pam, Signer::Static).unwrap();
    assert!(token.contains("DBUser=iam%2Buser%40corp.example"));
    let client = connect_to(standin, Listener::Pam, user, "app", &token).await.unwrap();
    assert_eq!(current_user(&client).await, user);
    // IAM users may create tables in the databases they were given.
    client
        .batch_execute("CREATE TABLE notes (x int); INSERT INTO notes VALUES (1); DROP TABLE notes")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let standin = standin().await;
    let token = standin.token("iam_user", Listener::Pam, Signer::Static).unwrap();
    let (head, signature) = token.rsplit_once("X-Amz-Signature=").unwrap();
    let flipped = if signature.starts_with('0') { '1' } else { '0' };
    let forged = format!("{head}X-Amz-Signature={flipped}{}", &signature[1..]);
    assert_pam_refusal(connect_to(standin, Listener::Pam, "iam_user", "postgres", &forged).await, "iam_user");
    standin
        .container()
        .wait_for_line(&["pam user=\"iam_user\"", "refuse: the signature does not match"], LOG_WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_signed_with_the_wrong_secret_is_refused() {
    let standin = standin().await;
    let impostor = Credentials::new(STATIC_ACCESS_KEY_ID, "not-the-secret", None, None, "test");
    let request =
        TokenRequest { host: standin.alias(), port: 5432, user: "app_reader", region: standin.region() };
    let token = rds_auth_token::generate(&impostor, &request, SystemTime::now()).unwrap();
    assert_pam_refusal(
        connect_to(standin, Listener::Pam, "app_reader", "postgres", token.expose()).await,
        "app_reader",
    );
    standin
        .container()
        .wait_for_line(&["pam user=\"app_reader\"", "refuse: the signature does not match"], LOG_WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let standin = standin().await;
    let twenty_minutes_ago = SystemTime::now() - Duration::from_secs(20 * 60);
    let token = standin.token_at("iam_user", Listener::Pam, Signer::Static, twenty_minutes_ago).unwrap();
    assert_pam_refusal(connect_to(standin, Listener::Pam, "iam_user", "postgres", &token).await, "iam_user");
    standin
        .container()
        .wait_for_line(&["pam user=\"iam_user\"", "refuse: the token expired"], LOG_WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_from_the_future_is_refused() {
    let standin = standin().await;
    let in_ten_minutes = SystemTime::now() + Duration::from_secs(10 * 60);
    let token = standin.token_at("iam_user", Listener::Pam, Signer::Static, in_ten_minutes).unwrap();
    assert_pam_refusal(connect_to(standin, Listener::Pam, "iam_user", "postgres", &token).await, "iam_user");
    standin
        .container()
        .wait_for_line(&["pam user=\"iam_user\"", "refuse: the token was signed"], LOG_WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_for_another_host_is_refused() {
    let standin = standin().await;
    let token = token_for(standin, "elsewhere.rds.test", 5432, "iam_user");
    assert_pam_refusal(connect_to(standin, Listener::Pam, "iam_user", "postgres", &token).await, "iam_user");
    standin
        .container()
        .wait_for_line(
            &["refuse: the token is for elsewhere.rds.test:5432, this endpoint is pg.rds.test:5432"],
            LOG_WAIT,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_for_another_user_is_refused() {
    let standin = standin().await;
    let token = standin.token("app_reader", Listener::Pam, Signer::Static).unwrap();
    assert_pam_refusal(connect_to(standin, Listener::Pam, "iam_user", "postgres", &token).await, "iam_user");
    standin
        .container()
        .wait_for_line(
            &["refuse: the token is for user \"app_reader\", the login is for \"iam_user\""],
            LOG_WAIT,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn psql_shows_the_refusal() {
    let standin = standin().await;
    let token = token_for(standin, "psql-elsewhere.rds.test", 5432, "iam_user");
    let output = Psql::new(standin.addr(Listener::Pam), "iam_user", standin.ca_pem_path().to_owned())
        .password(&token)
        .run("SELECT 1")
        .await
        .unwrap();
    assert!(!output.success, "psql logged in with a token for another host");
    assert!(
        output.stderr.contains("FATAL:  PAM authentication failed for user \"iam_user\""),
        "{}",
        output.stderr
    );
}

#[tokio::test]
async fn a_session_token_fails_through_pam_and_logs_in_through_the_front() {
    let standin = standin().await;
    let pam_token = standin.token("app_reader", Listener::Pam, Signer::Session).unwrap();
    assert!(
        pam_token.len() > 511,
        "a session token is {} bytes, no longer than pam_exec passes",
        pam_token.len()
    );
    assert_pam_refusal(
        connect_to(standin, Listener::Pam, "app_reader", "postgres", &pam_token).await,
        "app_reader",
    );
    // pam_exec passed on exactly its first 511 bytes, which are not a token.
    standin
        .container()
        .wait_for_line(&["pam user=\"app_reader\" len=511 refuse: not a token"], LOG_WAIT)
        .await
        .unwrap();

    let front_token = standin.token("app_reader", Listener::Front, Signer::Session).unwrap();
    let client = connect_to(standin, Listener::Front, "app_reader", "demo", &front_token).await.unwrap();
    assert_eq!(current_user(&client).await, "app_reader");
    let greetings: i64 = client.query_one("SELECT count(*) FROM greetings", &[]).await.unwrap().get(0);
    assert_eq!(greetings, 4);
    standin
        .container()
        .wait_for_line(
            &[
                "front user=\"app_reader\"",
                &format!("len={} accept key={SESSION_ACCESS_KEY_ID} session_token=true", front_token.len()),
            ],
            LOG_WAIT,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn psql_logs_in_through_the_front_with_a_session_token() {
    let standin = standin().await;
    let token = standin.token("iam_user", Listener::Front, Signer::Session).unwrap();
    let output = Psql::new(standin.addr(Listener::Front), "iam_user", standin.ca_pem_path().to_owned())
        .password(&token)
        .run("SELECT current_user")
        .await
        .unwrap();
    assert!(output.success, "psql failed: {}", output.stderr);
    assert_eq!(output.stdout.trim(), "iam_user");
}

#[tokio::test]
async fn the_front_refuses_as_postgres_does() {
    let standin = standin().await;
    // A tampered session token, and a token for the PAM port, both fail at the front.
    let token = standin.token("iam_user", Listener::Front, Signer::Session).unwrap();
    let tampered = token.replacen("X-Amz-Security-Token=IQoJ", "X-Amz-Security-Token=IQoK", 1);
    assert_ne!(tampered, token);
    assert_pam_refusal(
        connect_to(standin, Listener::Front, "iam_user", "postgres", &tampered).await,
        "iam_user",
    );
    let pam_token = standin.token("iam_user", Listener::Pam, Signer::Static).unwrap();
    assert_pam_refusal(
        connect_to(standin, Listener::Front, "iam_user", "postgres", &pam_token).await,
        "iam_user",
    );
    standin
        .container()
        .wait_for_line(&["front user=\"iam_user\"", "refuse: the signature does not match"], LOG_WAIT)
        .await
        .unwrap();
    standin
        .container()
        .wait_for_line(
            &[
                "front user=\"iam_user\"",
                "refuse: the token is for pg.rds.test:5432, this endpoint is pg.rds.test:5433",
            ],
            LOG_WAIT,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_front_refuses_plaintext() {
    let standin = standin().await;
    let mut stream = tokio::net::TcpStream::connect(standin.addr(Listener::Front)).await.unwrap();
    let mut params = Params::new();
    params.push("user", "iam_user").unwrap();
    params.push("database", "postgres").unwrap();
    let startup = StartupPacket::Startup(StartupMessage { version: ProtocolVersion::V3_0, params });
    stream.write_all(&startup.to_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let message = loop {
        if let Some(message) = BackendMessage::decode(&mut buf, 1 << 16).unwrap() {
            break message;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "the front closed without a word");
    };
    let BackendMessage::ErrorResponse(fields) = message else { panic!("not an error: {message:?}") };
    assert_eq!(fields.sqlstate().map(|s| s.as_str().to_owned()).as_deref(), Some("28000"));
    assert!(
        fields.message().ends_with("user \"iam_user\", database \"postgres\", no encryption"),
        "{}",
        fields.message()
    );
}

#[tokio::test]
async fn password_users_log_in_with_postgres_methods() {
    let standin = standin().await;
    for (user, password) in
        [("scram_user", "scram-secret"), ("md5_user", "md5-secret"), ("password_user", "clear-secret")]
    {
        let client = connect_to(standin, Listener::Pam, user, "postgres", password)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"));
        assert_eq!(current_user(&client).await, user);
    }
    let refused = connect_to(standin, Listener::Pam, "scram_user", "postgres", "wrong").await;
    let Err(error) = refused else { panic!("a wrong password was accepted") };
    assert_eq!(error.db_error().map(|db| db.code()), Some(&SqlState::INVALID_PASSWORD));
}

#[tokio::test]
async fn scram_binds_to_the_tls_channel() {
    let standin = standin().await;
    let client = connect_to(standin, Listener::Pam, "scram_user", "postgres", "scram-secret").await.unwrap();
    // Postgres records the mechanism only in its log; the connection working with
    // tls-server-end-point offered proves the server accepted SCRAM-SHA-256-PLUS.
    assert_eq!(current_user(&client).await, "scram_user");
}
