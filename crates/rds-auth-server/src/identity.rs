//! The caller's IAM identity, learned from STS.
//!
//! The client proxy sends a presigned `sts:GetCallerIdentity` query (see
//! `rds_auth_token::presign_identity`). The server proxy reads it strictly, sends it to STS at
//! the endpoint of its own configuration (the regional endpoint of the proof's region by
//! default; never a host the client names), and reads the caller's ARN from the answer. The
//! answer is cached under the proof's signature until the proof expires, so a client proxy
//! that reuses its proof costs one STS call per proof lifetime.
//!
//! An assumed-role ARN (`arn:aws:sts::123456789012:assumed-role/Analyst/alice`) is also given
//! as its role (`arn:aws:iam::123456789012:role/Analyst`), which is what target rules name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rds_auth_token::{ProofInfo, TokenError};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::metrics::Metrics;

/// The largest STS answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// Answers kept at most; beyond this, expired ones are swept and then the oldest dropped.
const MAX_CACHED: usize = 10_000;

/// Who the caller is, as STS says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The ARN STS answered, e.g. `arn:aws:sts::123456789012:assumed-role/Analyst/alice`.
    pub arn: String,
    /// The ARN rules match: an assumed role's role ARN, otherwise `arn` itself.
    pub principal: String,
    pub account: String,
    /// The access key id the proof was signed with.
    pub access_key_id: String,
}

/// Where STS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsEndpoint {
    /// `https://sts.<region>.amazonaws.com`, the proof's region.
    Regional,
    /// A fixed endpoint: an STS VPC endpoint, or a test double. `http` is allowed only for
    /// loopback addresses.
    Fixed { https: bool, host: String, port: u16 },
}

/// How the server proxy verifies identity proofs.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Refuse sessions that bring no proof.
    pub required: bool,
    pub endpoint: StsEndpoint,
    /// Verifies STS's certificate: the system's roots.
    pub tls: Arc<rustls::ClientConfig>,
    /// Bounds one STS call, connect included.
    pub timeout: Duration,
    /// How far a proof's signing time may be in the future.
    pub clock_skew: Duration,
}

/// Why an identity proof was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the identity proof is malformed: {0}")]
    Malformed(#[from] TokenError),
    #[error("the identity proof is outside its validity window: {0}")]
    Window(rds_auth_token::WindowError),
    #[error("STS refused the identity proof ({status})")]
    Refused { status: StatusCode, code: Option<String> },
    #[error("STS could not be asked: {0}")]
    Unavailable(String),
    #[error("STS answered something that is not a GetCallerIdentity result")]
    BadAnswer,
}

impl IdentityError {
    /// Whether the caller is at fault (as opposed to STS or the network).
    pub fn is_caller_fault(&self) -> bool {
        !matches!(self, IdentityError::Unavailable(_) | IdentityError::BadAnswer)
    }
}

/// How long STS is not asked for optional identities after it could not be reached, so a
/// server proxy without a route to STS does not make every session wait for a timeout.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(60);

/// Verifies proofs and caches STS's answers.
#[derive(Debug)]
pub struct IdentityVerifier {
    config: IdentityConfig,
    cache: Mutex<HashMap<String, (CallerIdentity, SystemTime)>>,
    /// Until when optional identities are skipped, after STS could not be reached.
    unavailable_until: Mutex<Option<std::time::Instant>>,
}

impl IdentityVerifier {
    pub fn new(config: IdentityConfig) -> IdentityVerifier {
        IdentityVerifier { config, cache: Mutex::new(HashMap::new()), unavailable_until: Mutex::new(None) }
    }

    /// Whether STS failed to answer recently: sessions that need no identity then go on
    /// without asking it.
    pub(crate) fn recently_unavailable(&self) -> bool {
        let until = self.unavailable_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|until| std::time::Instant::now() < until)
    }

    pub fn required(&self) -> bool {
        self.config.required
    }

    /// Verifies `proof`, from the cache when the same proof was verified before.
    pub(crate) async fn verify(
        &self,
        proof: &str,
        now: SystemTime,
        metrics: &Metrics,
    ) -> Result<CallerIdentity, IdentityError> {
        let info = rds_auth_token::parse_proof(proof)?;
        info.check_window(now, self.config.clock_skew).map_err(IdentityError::Window)?;
        if let Some(identity) = self.cached(&info.signature, now) {
            Metrics::outcome(&metrics.identity_lookups, "cached");
            return Ok(identity);
        }
        let answer = tokio::time::timeout(self.config.timeout, self.ask_sts(&info, proof))
            .await
            .unwrap_or_else(|_| Err(IdentityError::Unavailable("STS did not answer in time".into())));
        let outcome = match &answer {
            Ok(_) => "verified",
            Err(e) if e.is_caller_fault() => "refused",
            Err(_) => "unavailable",
        };
        let mut until = self.unavailable_until.lock().unwrap_or_else(|p| p.into_inner());
        *until = (outcome == "unavailable").then(|| std::time::Instant::now() + UNAVAILABLE_BACKOFF);
        drop(until);
        Metrics::outcome(&metrics.identity_lookups, outcome);
        let identity = answer?;
        self.remember(&info, &identity, now);
        Ok(identity)
    }

    fn cached(&self, signature: &str, now: SystemTime) -> Option<CallerIdentity> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(signature).filter(|(_, expires)| *expires > now).map(|(identity, _)| identity.clone())
    }

    fn remember(&self, info: &ProofInfo, identity: &CallerIdentity, now: SystemTime) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, expires)| *expires > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(info.signature.clone(), (identity.clone(), info.expires_at()));
    }

    async fn ask_sts(&self, info: &ProofInfo, proof: &str) -> Result<CallerIdentity, IdentityError> {
        let (https, host, port) = match &self.config.endpoint {
            StsEndpoint::Regional => (true, rds_auth_token::sts_host(&info.region), 443),
            StsEndpoint::Fixed { https, host, port } => (*https, host.clone(), *port),
        };
        let unavailable =
            |what: &str, e: &dyn std::fmt::Display| IdentityError::Unavailable(format!("{what}: {e}"));
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| unavailable(&format!("resolving {host}"), &e))?
            .next()
            .ok_or_else(|| IdentityError::Unavailable(format!("{host} has no address")))?;
        let tcp =
            TcpStream::connect(addr).await.map_err(|e| unavailable(&format!("connecting to {addr}"), &e))?;
        // The Host header must be the one the client signed: the host, with the port when it
        // is not the scheme's default.
        let default_port = if https { 443 } else { 80 };
        let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let request = Request::get(format!("/?{proof}"))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, concat!("rds-auth-proxy-server/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|_| IdentityError::BadAnswer)?;
        let (status, body) = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| IdentityError::Unavailable(format!("{host} is not a server name")))?;
            let tls = TlsConnector::from(self.config.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| unavailable("TLS to STS", &e))?;
            send(tls, request).await?
        } else {
            send(tcp, request).await?
        };
        let body = std::str::from_utf8(&body).map_err(|_| IdentityError::BadAnswer)?;
        if status != StatusCode::OK {
            let code = error_code(body);
            debug!(status = %status, code = code.as_deref().unwrap_or(""), "STS refused an identity proof");
            return Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                IdentityError::Unavailable(format!("STS answered {status}"))
            } else {
                IdentityError::Refused { status, code }
            });
        }
        let (arn, account) = read_result(body).ok_or(IdentityError::BadAnswer)?;
        Ok(CallerIdentity {
            principal: principal_of(&arn),
            arn,
            account,
            access_key_id: info.access_key_id.clone(),
        })
    }
}

async fn send<S>(stream: S, request: Request<Empty<Bytes>>) -> Result<(StatusCode, Bytes), IdentityError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let unavailable = |e: &dyn std::fmt::Display| IdentityError::Unavailable(format!("HTTP to STS: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unavailable(&e))?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| unavailable(&e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| unavailable(&*e))?
        .to_bytes();
    Ok((status, body))
}

/// `Arn` and `Account` from a GetCallerIdentityResponse.
fn read_result(body: &str) -> Option<(String, String)> {
    let mut doc = aws_smithy_xml::decode::Document::new(body);
    let mut root = doc.root_element().ok()?;
    if !root.start_el().matches("GetCallerIdentityResponse") {
        return None;
    }
    let (mut arn, mut account) = (None, None);
    while let Some(mut tag) = root.next_tag() {
        if !tag.start_el().matches("GetCallerIdentityResult") {
            continue;
        }
        while let Some(mut field) = tag.next_tag() {
            let name = field.start_el().local().to_owned();
            let value = aws_smithy_xml::decode::try_data(&mut field).ok()?.into_owned();
            match name.as_str() {
                "Arn" => arn = Some(value),
                "Account" => account = Some(value),
                _ => {}
            }
        }
    }
    let arn = arn.filter(|a| a.starts_with("arn:") && a.len() <= 2048)?;
    Some((arn, account.unwrap_or_default()))
}

/// The error code of an STS error answer, e.g. `SignatureDoesNotMatch` or `ExpiredToken`.
fn error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    let code = &body[start..end];
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| code.to_owned())
}

/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` becomes `arn:aws:iam::ACCOUNT:role/ROLE`;
/// any other ARN stays as it is.
pub fn principal_of(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let [_, partition, "sts", _, account, resource] = parts.as_slice()
        && let Some(rest) = resource.strip_prefix("assumed-role/")
        && let Some((role, _session)) = rest.rsplit_once('/')
    {
        return format!("arn:{partition}:iam::{account}:role/{role}");
    }
    arn.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_roles_become_their_role() {
        assert_eq!(
            principal_of("arn:aws:sts::123456789012:assumed-role/Analyst/alice@example.com"),
            "arn:aws:iam::123456789012:role/Analyst"
        );
        assert_eq!(
            principal_of("arn:aws-cn:sts::123456789012:assumed-role/AWSReservedSSO_Admin_1234/bob"),
            "arn:aws-cn:iam::123456789012:role/AWSReservedSSO_Admin_1234"
        );
        assert_eq!(
            principal_of("arn:aws:iam::123456789012:user/carol"),
            "arn:aws:iam::123456789012:user/carol"
        );
        assert_eq!(principal_of("not an arn"), "not an arn");
    }

    #[test]
    fn reads_sts_answers() {
        let ok = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/Analyst/alice</Arn>
    <UserId>AROAEXAMPLE:alice</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;
        assert_eq!(
            read_result(ok),
            Some(("arn:aws:sts::123456789012:assumed-role/Analyst/alice".into(), "123456789012".into()))
        );
        assert_eq!(read_result("<ErrorResponse/>"), None);
        assert_eq!(read_result("not xml"), None);
        let error = "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>";
        assert_eq!(error_code(error).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code("<Code><script></Code>"), None);
    }
}
