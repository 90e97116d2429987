//! Proof of the caller's IAM identity: a presigned `sts:GetCallerIdentity` request.
//!
//! The client proxy signs the request and sends only its query string; the server proxy sends
//! it to STS (the endpoint of its own configuration, never one the client names) and learns
//! the caller's ARN from the answer, with no PKI of its own. aws-iam-authenticator and Vault's
//! AWS auth method work the same way.
//!
//! Anyone holding a proof can replay it until it expires, like a token: it travels only inside
//! the mutually authenticated TLS between the proxies, and never prints.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use percent_encoding::percent_decode_str;

use crate::TokenError;
use crate::parse::{WindowError, check_window, parse_amz_date};
use crate::sign::presign;

/// How long STS accepts a proof after it was signed.
pub const PROOF_LIFETIME: Duration = Duration::from_secs(900);

const SERVICE: &str = "sts";
const ACTION: &str = "GetCallerIdentity";
const VERSION: &str = "2011-06-15";
/// The longest proof the parser reads: about 1.5 KB with a session token in it.
const MAX_PROOF_LEN: usize = 8 * 1024;

/// The STS host a proof for `region` is signed for and sent to: the regional endpoint, which
/// AWS recommends over the global one and which works for opt-in regions.
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

/// A signed proof: the query string of a presigned GetCallerIdentity request. It prints as
/// `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityProof {
    query: String,
    signed_at: SystemTime,
}

impl IdentityProof {
    pub fn expose(&self) -> &str {
        &self.query
    }

    pub fn signed_at(&self) -> SystemTime {
        self.signed_at
    }
}

impl fmt::Debug for IdentityProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityProof").field("query", &"[redacted]").finish_non_exhaustive()
    }
}

/// Presigns GetCallerIdentity for `host` (an STS host, with a port if it is not 443) in
/// `region`, as of `now`.
pub fn presign_identity(
    credentials: &Credentials,
    host: &str,
    region: &str,
    now: SystemTime,
) -> Result<IdentityProof, TokenError> {
    let url = format!("https://{host}/?Action={ACTION}&Version={VERSION}");
    let url = presign(credentials, url, SERVICE, region, PROOF_LIFETIME, now)?;
    let query = url.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default();
    Ok(IdentityProof { query, signed_at: now })
}

/// What a proof says about itself. The signature is checked by STS, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofInfo {
    pub access_key_id: String,
    pub region: String,
    pub signed_at: SystemTime,
    pub expires_in: Duration,
    /// The signature, a cache key for STS's answer.
    pub signature: String,
}

impl ProofInfo {
    pub fn expires_at(&self) -> SystemTime {
        self.signed_at.checked_add(self.expires_in).unwrap_or(self.signed_at)
    }

    pub fn check_window(&self, now: SystemTime, skew: Duration) -> Result<(), WindowError> {
        check_window(self.signed_at, self.expires_at(), now, skew)
    }
}

/// Reads a proof, refusing anything but a presigned GetCallerIdentity that signs only the
/// `host` header: no other action, no extra parameter, nothing repeated. The server proxy
/// sends exactly this query to STS, so it can never be made to call anything else.
pub fn parse_proof(query: &str) -> Result<ProofInfo, TokenError> {
    if query.len() > MAX_PROOF_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let mut fields: [Option<String>; 9] = Default::default();
    const NAMES: [&str; 9] = [
        "Action",
        "Version",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    ];
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').ok_or(TokenError::Malformed("parameter without value"))?;
        let index =
            NAMES.iter().position(|n| *n == name).ok_or(TokenError::Malformed("unexpected parameter"))?;
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| TokenError::Malformed("parameter is not UTF-8"))?;
        if fields[index].replace(value.into_owned()).is_some() {
            return Err(TokenError::Malformed("parameter repeated"));
        }
    }
    let [action, version, algorithm, credential, date, expires, signed_headers, signature, _session] = fields;
    if action.as_deref() != Some(ACTION) || version.as_deref() != Some(VERSION) {
        return Err(TokenError::Malformed("not a GetCallerIdentity request"));
    }
    if algorithm.as_deref() != Some("AWS4-HMAC-SHA256") || signed_headers.as_deref() != Some("host") {
        return Err(TokenError::Malformed("not a SigV4 presign of the host header alone"));
    }
    let signature = signature.ok_or(TokenError::Malformed("no signature"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed("bad signature"));
    }
    let credential = credential.ok_or(TokenError::Malformed("no X-Amz-Credential"))?;
    let mut scope = credential.split('/');
    let (Some(access_key_id), Some(_day), Some(region), Some(SERVICE), Some("aws4_request"), None) =
        (scope.next(), scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
    else {
        return Err(TokenError::Malformed("bad X-Amz-Credential scope"));
    };
    // The region names a host the server proxy connects to: letters, digits and dashes only.
    if region.is_empty()
        || region.len() > 32
        || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(TokenError::Malformed("bad region"));
    }
    if access_key_id.is_empty() || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenError::Malformed("bad access key id"));
    }
    let signed_at = parse_amz_date(&date.ok_or(TokenError::Malformed("no X-Amz-Date"))?)?;
    let expires_in: u64 = expires
        .ok_or(TokenError::Malformed("no X-Amz-Expires"))?
        .parse()
        .map_err(|_| TokenError::Malformed("bad X-Amz-Expires"))?;
    if expires_in > PROOF_LIFETIME.as_secs() {
        return Err(TokenError::Malformed("X-Amz-Expires over 15 minutes"));
    }
    Ok(ProofInfo {
        access_key_id: access_key_id.to_owned(),
        region: region.to_owned(),
        signed_at,
        expires_in: Duration::from_secs(expires_in),
        signature,
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 2026-12-04T19:30:00Z.
    const DECEMBER: u64 = 1_796_412_600;

    fn proof(session: Option<&str>, host: &str, region: &str) -> String {
        let creds = Credentials::new("AKIDEXAMPLE", SECRET, session.map(str::to_owned), None, "test");
        let at = UNIX_EPOCH + Duration::from_secs(DECEMBER);
        presign_identity(&creds, host, region, at).unwrap().expose().to_owned()
    }

    /// Vectors from botocore 1.44.8's SigV4QueryAuth (`generate_presigned_url` of
    /// `get_caller_identity`), at the same instant.
    #[test]
    fn matches_botocore() {
        assert_eq!(
            proof(None, &sts_host("us-east-1"), "us-east-1"),
            "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261204%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20261204T193000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=0cc21b5f40609f0e37dbcbbf8a155f42953eefe7b191d98163d84b17870f864d"
        );
        assert_eq!(
            proof(Some("IQoJb3JpZ2luX2VjEXAMPLE/TOKEN+with/slashes=="), &sts_host("eu-west-1"), "eu-west-1"),
            "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261204%2Feu-west-1%2Fsts%2Faws4_request&X-Amz-Date=20261204T193000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2FTOKEN%2Bwith%2Fslashes%3D%3D&X-Amz-Signature=b7ab2341a39c8de7ded4fd10182555639fb4c77e3197f2f2c9a3e47a376950e9"
        );
        assert!(
            proof(None, "127.0.0.1:5000", "us-east-1").ends_with(
                "X-Amz-Signature=77332c68ae8243ea170a8b1cac89432be690ce7c920200d8be9c2b9e136991d8"
            )
        );
    }

    #[test]
    fn reads_what_it_signed() {
        let info =
            parse_proof(&proof(Some("session/token"), "sts.eu-west-1.amazonaws.com", "eu-west-1")).unwrap();
        assert_eq!(info.access_key_id, "AKIDEXAMPLE");
        assert_eq!(info.region, "eu-west-1");
        assert_eq!(info.signed_at, UNIX_EPOCH + Duration::from_secs(DECEMBER));
        assert_eq!(info.expires_in, PROOF_LIFETIME);
        assert_eq!(info.signature.len(), 64);
    }

    #[test]
    fn refuses_anything_but_get_caller_identity() {
        let good = proof(None, &sts_host("us-east-1"), "us-east-1");
        for bad in [
            String::new(),
            good.replace("GetCallerIdentity", "AssumeRole"),
            format!("{good}&RoleArn=x"),
            format!("{good}&Action=GetCallerIdentity"),
            good.replace("SignedHeaders=host", "SignedHeaders=host%3Bx-evil"),
            good.replace("us-east-1%2Fsts", "evil.example.com%2F%2Fsts"),
            good.replace("us-east-1%2Fsts", "us-east-1%2Fs3"),
            good.replace("X-Amz-Expires=900", "X-Amz-Expires=3600"),
            good.replace("AKIDEXAMPLE", "AKID%2FEXAMPLE"),
        ] {
            assert!(parse_proof(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cn_regions_have_their_own_domain() {
        assert_eq!(sts_host("cn-north-1"), "sts.cn-north-1.amazonaws.com.cn");
        assert_eq!(sts_host("ap-southeast-7"), "sts.ap-southeast-7.amazonaws.com");
    }

    #[test]
    fn a_proof_never_prints() {
        let creds = Credentials::new("AKIDEXAMPLE", SECRET, None, None, "test");
        let proof = presign_identity(&creds, "sts.us-east-1.amazonaws.com", "us-east-1", UNIX_EPOCH).unwrap();
        assert!(!format!("{proof:?}").contains("Signature"));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = parse_proof(&text);
        }
    }
}
