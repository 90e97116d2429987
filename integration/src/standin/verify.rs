//! The token check: what RDS verifies before it lets an IAM user in.
//!
//! A token is accepted when it names this endpoint (host and port), the login user exactly,
//! this region, a lifetime of at most 900 s that includes now (with five minutes of tolerance
//! for a signer whose clock runs ahead), and a known access key, and when the whole token,
//! recomputed with that key's secret, is byte for byte the one presented. Recomputing checks
//! the signature and everything it covers, the session token included.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use percent_encoding::percent_decode_str;
use rds_auth_token::{Credentials, TOKEN_LIFETIME, TokenError, TokenRequest, WindowError};

/// How far in the future a token's signing time may lie: a client's clock may run ahead.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// What a token must satisfy at one endpoint.
#[derive(Clone)]
pub struct Policy {
    pub host: String,
    pub port: u16,
    pub region: String,
    /// Access key id to secret access key.
    pub secrets: BTreeMap<String, String>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("region", &self.region)
            .field("access_key_ids", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A token that passed, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub access_key_id: String,
    pub session_token: bool,
}

/// Why a token was refused. Every variant ends in the same client-visible error; the reason
/// goes to the stand-in's log only, and never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a token: {0}")]
    Malformed(TokenError),
    #[error("the password is not UTF-8")]
    NotUtf8,
    #[error("the token is for {host}:{port}, this endpoint is {expected}")]
    WrongEndpoint { host: String, port: u16, expected: String },
    #[error("the token is for user {token_user:?}, the login is for {login_user:?}")]
    WrongUser { token_user: String, login_user: String },
    #[error("the token is for region {token_region}, this endpoint is in {expected}")]
    WrongRegion { token_region: String, expected: String },
    #[error("the token claims a lifetime of {0:?}, more than RDS allows")]
    LifetimeTooLong(Duration),
    #[error("{0}")]
    Window(WindowError),
    #[error("unknown access key id {0}")]
    UnknownAccessKey(String),
    #[error("the X-Amz-Security-Token parameter is malformed")]
    BadSessionToken,
    #[error("cannot recompute the token: {0}")]
    Recompute(TokenError),
    #[error("the signature does not match")]
    BadSignature,
}

/// Checks `token`, presented at the endpoint `policy` describes by the login `login_user`, at
/// `now`.
pub fn verify(policy: &Policy, login_user: &str, token: &str, now: SystemTime) -> Result<Accepted, Refusal> {
    let info = rds_auth_token::parse(token).map_err(Refusal::Malformed)?;
    if info.host != policy.host || info.port != policy.port {
        return Err(Refusal::WrongEndpoint {
            host: info.host,
            port: info.port,
            expected: format!("{}:{}", policy.host, policy.port),
        });
    }
    if info.db_user != login_user {
        return Err(Refusal::WrongUser { token_user: info.db_user, login_user: login_user.to_owned() });
    }
    if info.region != policy.region {
        return Err(Refusal::WrongRegion { token_region: info.region, expected: policy.region.clone() });
    }
    if info.expires_in > TOKEN_LIFETIME {
        return Err(Refusal::LifetimeTooLong(info.expires_in));
    }
    if let Ok(ahead) = info.signed_at.duration_since(now)
        && ahead > CLOCK_SKEW
    {
        return Err(Refusal::Window(WindowError::NotYetValid { ahead }));
    }
    if let Ok(ago) = now.duration_since(info.expires_at())
        && ago > Duration::ZERO
    {
        return Err(Refusal::Window(WindowError::Expired { ago }));
    }
    let Some(secret) = policy.secrets.get(&info.access_key_id) else {
        return Err(Refusal::UnknownAccessKey(info.access_key_id));
    };
    let session_token = session_token(token)?;
    let has_session_token = session_token.is_some();
    let credentials = Credentials::new(&info.access_key_id, secret, session_token, None, "standin");
    let request =
        TokenRequest { host: &info.host, port: info.port, user: &info.db_user, region: &info.region };
    let expected =
        rds_auth_token::generate(&credentials, &request, info.signed_at).map_err(Refusal::Recompute)?;
    if expected.expose() != token {
        return Err(Refusal::BadSignature);
    }
    Ok(Accepted { access_key_id: info.access_key_id, session_token: has_session_token })
}

/// The percent-decoded `X-Amz-Security-Token` of a token, which `TokenInfo` deliberately does
/// not expose.
fn session_token(token: &str) -> Result<Option<String>, Refusal> {
    let Some((_, query)) = token.split_once("/?") else { return Ok(None) };
    let mut found = None;
    for pair in query.split('&') {
        let Some(("X-Amz-Security-Token", value)) = pair.split_once('=') else { continue };
        let decoded = percent_decode_str(value).decode_utf8().map_err(|_| Refusal::BadSessionToken)?;
        if found.replace(decoded.into_owned()).is_some() {
            return Err(Refusal::BadSessionToken);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const HOST: &str = "pg.rds.test";
    const AKID: &str = "AKIDSTANDIN";
    const SECRET: &str = "standin/secret+key";
    const SESSION_AKID: &str = "ASIASTANDIN";
    const SESSION_SECRET: &str = "session/secret+key";

    /// 2026-12-04T19:30:00Z.
    fn signed() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_412_600)
    }

    fn policy() -> Policy {
        Policy {
            host: HOST.into(),
            port: 5432,
            region: "us-east-1".into(),
            secrets: [
                (AKID.to_owned(), SECRET.to_owned()),
                (SESSION_AKID.to_owned(), SESSION_SECRET.to_owned()),
            ]
            .into(),
        }
    }

    fn sign(credentials: &Credentials, host: &str, port: u16, user: &str, region: &str) -> String {
        let request = TokenRequest { host, port, user, region };
        rds_auth_token::generate(credentials, &request, signed()).unwrap().expose().to_owned()
    }

    fn static_credentials() -> Credentials {
        Credentials::new(AKID, SECRET, None, None, "test")
    }

    fn session_credentials() -> Credentials {
        // Real session tokens are 700 to 1,200 characters, with `/`, `+` and `=` in them.
        let session_token = format!("IQoJb3JpZ2luX2Vj{}==", "EXAMPLE/TOKEN+with/slashes".repeat(24));
        Credentials::new(SESSION_AKID, SESSION_SECRET, Some(session_token), None, "test")
    }

    fn check(token: &str, user: &str, at: SystemTime) -> Result<Accepted, Refusal> {
        verify(&policy(), user, token, at)
    }

    fn valid() -> String {
        sign(&static_credentials(), HOST, 5432, "iam_user", "us-east-1")
    }

    #[test]
    fn accepts_a_valid_token_throughout_its_window() {
        let token = valid();
        let accepted = Accepted { access_key_id: AKID.into(), session_token: false };
        assert_eq!(check(&token, "iam_user", signed()), Ok(accepted.clone()));
        assert_eq!(check(&token, "iam_user", signed() + Duration::from_secs(900)), Ok(accepted.clone()));
        assert_eq!(check(&token, "iam_user", signed() - Duration::from_secs(299)), Ok(accepted));
    }

    #[test]
    fn accepts_users_that_need_encoding() {
        let token = sign(&static_credentials(), HOST, 5432, "iam+user@corp.example", "us-east-1");
        assert!(token.contains("DBUser=iam%2Buser%40corp.example"));
        assert!(check(&token, "iam+user@corp.example", signed()).is_ok());
        assert!(matches!(check(&token, "iam user@corp.example", signed()), Err(Refusal::WrongUser { .. })));
    }

    #[test]
    fn refuses_a_forged_signature() {
        let token = valid();
        let (head, signature) = token.rsplit_once("X-Amz-Signature=").unwrap();
        let flipped = if signature.starts_with('0') { "1" } else { "0" };
        let forged = format!("{head}X-Amz-Signature={flipped}{}", &signature[1..]);
        assert_eq!(check(&forged, "iam_user", signed()), Err(Refusal::BadSignature));
    }

    #[test]
    fn refuses_a_wrong_secret() {
        let token = sign(
            &Credentials::new(AKID, "not-the-secret", None, None, "test"),
            HOST,
            5432,
            "iam_user",
            "us-east-1",
        );
        assert_eq!(check(&token, "iam_user", signed()), Err(Refusal::BadSignature));
    }

    #[test]
    fn refuses_an_unknown_key() {
        let token = sign(
            &Credentials::new("AKIDOTHER", SECRET, None, None, "test"),
            HOST,
            5432,
            "iam_user",
            "us-east-1",
        );
        assert_eq!(check(&token, "iam_user", signed()), Err(Refusal::UnknownAccessKey("AKIDOTHER".into())));
    }

    #[test]
    fn refuses_an_expired_token() {
        let late = signed() + Duration::from_secs(901);
        assert_eq!(
            check(&valid(), "iam_user", late),
            Err(Refusal::Window(WindowError::Expired { ago: Duration::from_secs(1) }))
        );
    }

    #[test]
    fn refuses_a_token_from_the_future() {
        let early = signed() - Duration::from_secs(301);
        assert_eq!(
            check(&valid(), "iam_user", early),
            Err(Refusal::Window(WindowError::NotYetValid { ahead: Duration::from_secs(301) }))
        );
    }

    #[test]
    fn refuses_a_longer_lifetime_even_if_signed() {
        let token = valid().replace("X-Amz-Expires=900", "X-Amz-Expires=3600");
        assert_eq!(
            check(&token, "iam_user", signed()),
            Err(Refusal::LifetimeTooLong(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn refuses_a_wrong_host() {
        let token = sign(&static_credentials(), "other.rds.test", 5432, "iam_user", "us-east-1");
        assert_eq!(
            check(&token, "iam_user", signed()),
            Err(Refusal::WrongEndpoint {
                host: "other.rds.test".into(),
                port: 5432,
                expected: "pg.rds.test:5432".into()
            })
        );
    }

    #[test]
    fn refuses_a_wrong_port() {
        let token = sign(&static_credentials(), HOST, 5433, "iam_user", "us-east-1");
        assert!(matches!(
            check(&token, "iam_user", signed()),
            Err(Refusal::WrongEndpoint { port: 5433, .. })
        ));
    }

    #[test]
    fn refuses_a_wrong_user() {
        let token = sign(&static_credentials(), HOST, 5432, "app_reader", "us-east-1");
        assert_eq!(
            check(&token, "iam_user", signed()),
            Err(Refusal::WrongUser { token_user: "app_reader".into(), login_user: "iam_user".into() })
        );
    }

    #[test]
    fn refuses_a_wrong_region() {
        let token = sign(&static_credentials(), HOST, 5432, "iam_user", "eu-west-1");
        assert_eq!(
            check(&token, "iam_user", signed()),
            Err(Refusal::WrongRegion { token_region: "eu-west-1".into(), expected: "us-east-1".into() })
        );
    }

    #[test]
    fn accepts_session_tokens_and_refuses_tampered_ones() {
        let token = sign(&session_credentials(), HOST, 5432, "iam_user", "us-east-1");
        assert!(token.len() > 500, "{}", token.len());
        assert_eq!(
            check(&token, "iam_user", signed()),
            Ok(Accepted { access_key_id: SESSION_AKID.into(), session_token: true })
        );
        let tampered = token.replace("EXAMPLE", "EXAMPLF");
        assert_ne!(tampered, token);
        assert_eq!(check(&tampered, "iam_user", signed()), Err(Refusal::BadSignature));
        let dropped = token
            .split('&')
            .filter(|pair| !pair.starts_with("X-Amz-Security-Token="))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(check(&dropped, "iam_user", signed()), Err(Refusal::BadSignature));
    }

    #[test]
    fn refuses_truncated_and_garbage_tokens() {
        let token = sign(&session_credentials(), HOST, 5432, "iam_user", "us-east-1");
        assert!(matches!(check(&token[..511], "iam_user", signed()), Err(Refusal::Malformed(_))));
        assert!(matches!(check("password", "iam_user", signed()), Err(Refusal::Malformed(_))));
        assert!(matches!(check("", "iam_user", signed()), Err(Refusal::Malformed(_))));
    }
}
