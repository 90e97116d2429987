use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningParams, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::TokenError;

/// How long RDS accepts a token after it was signed (`X-Amz-Expires=900`).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

const SERVICE: &str = "rds-db";
const SIGNATURE_PARAM: &str = "X-Amz-Signature";

/// RFC 3986's unreserved characters stay as they are; everything else is percent-encoded, as
/// botocore does with `quote(safe='-_.~')`.
pub(crate) const QUERY_VALUE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// What a token is for: the exact endpoint name and port, the startup `user`, and the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub region: &'a str,
}

/// A signed token. It prints as `[redacted]`; [`AuthToken::expose`] gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken {
    text: String,
    signed_at: SystemTime,
}

impl AuthToken {
    pub fn expose(&self) -> &str {
        &self.text
    }

    pub fn signed_at(&self) -> SystemTime {
        self.signed_at
    }

    pub fn expires_at(&self) -> SystemTime {
        self.signed_at + TOKEN_LIFETIME
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthToken").field("text", &"[redacted]").finish_non_exhaustive()
    }
}

impl fmt::Display for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Signs a token for `request` with `credentials`, as of `now`.
///
/// The query keeps botocore's order: `Action`, `DBUser`, the SigV4 parameters, then
/// `X-Amz-Security-Token` when the credentials have a session token, and the signature last.
pub fn generate(
    credentials: &Credentials,
    request: &TokenRequest<'_>,
    now: SystemTime,
) -> Result<AuthToken, TokenError> {
    let url = format!(
        "https://{}:{}/?Action=connect&DBUser={}",
        request.host,
        request.port,
        utf8_percent_encode(request.user, QUERY_VALUE)
    );
    let mut url = presign(credentials, url, SERVICE, request.region, TOKEN_LIFETIME, now)?;
    let text = url.split_off("https://".len());
    Ok(AuthToken { text, signed_at: now })
}

/// Presigns `GET url` for `service` in `region` with SigV4 in the query string, as of `now`,
/// valid for `expires_in`, and returns the URL with the signing parameters appended in
/// botocore's order and the signature last.
pub(crate) fn presign(
    credentials: &Credentials,
    mut url: String,
    service: &str,
    region: &str,
    expires_in: Duration,
    now: SystemTime,
) -> Result<String, TokenError> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires_in);
    let identity: Identity = credentials.clone().into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|_| TokenError::Signing("incomplete signing parameters".into()))?
        .into();
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::empty())
        .map_err(|_| TokenError::Signing("the endpoint or user cannot form a request".into()))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|_| TokenError::Signing("SigV4 signing failed".into()))?.into_parts();

    let mut signature: Option<&Cow<'static, str>> = None;
    for (name, value) in instructions.params() {
        if *name == SIGNATURE_PARAM {
            signature = Some(value);
            continue;
        }
        append_param(&mut url, name, value);
    }
    let signature = signature.ok_or(TokenError::Signing("no signature was produced".into()))?;
    append_param(&mut url, SIGNATURE_PARAM, signature);
    Ok(url)
}

fn append_param(url: &mut String, name: &str, value: &str) {
    url.push('&');
    url.push_str(name);
    url.push('=');
    url.extend(utf8_percent_encode(value, QUERY_VALUE));
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2026-01-01T00:00:00Z.
    const NEW_YEAR: u64 = 1_767_225_600;
    /// 2026-12-04T19:30:00Z.
    const DECEMBER: u64 = 1_796_412_600;

    fn sign_with(
        session: Option<&str>,
        host: &str,
        port: u16,
        user: &str,
        region: &str,
        secs: u64,
    ) -> String {
        let creds = Credentials::new(AKID, SECRET, session.map(str::to_owned), None, "test");
        generate(&creds, &TokenRequest { host, port, user, region }, at(secs)).unwrap().expose().to_owned()
    }

    #[test]
    fn vector_1_plain_user() {
        assert_eq!(
            sign_with(
                None,
                "mydb.123456789012.us-east-1.rds.amazonaws.com",
                5432,
                "iam_user",
                "us-east-1",
                NEW_YEAR
            ),
            "mydb.123456789012.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=iam_user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=a36defd1bc3602e81d21849b3bb118f88c27b588ecde8b5ff5784418e80aeef8"
        );
    }

    #[test]
    fn vector_2_user_that_needs_encoding() {
        assert_eq!(
            sign_with(
                None,
                "mydb.123456789012.us-east-1.rds.amazonaws.com",
                5432,
                "iam+user@corp.example",
                "us-east-1",
                NEW_YEAR
            ),
            "mydb.123456789012.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=iam%2Buser%40corp.example&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=1b65528339506373d8d72776d8f83d4f70f9dec35636c89f2039b8c5cc46f748"
        );
    }

    #[test]
    fn vector_3_session_token() {
        assert_eq!(
            sign_with(
                Some("IQoJb3JpZ2luX2VjEXAMPLE/TOKEN+with/slashes=="),
                "orders.cluster-c1x2y3z4.eu-west-1.rds.amazonaws.com",
                6432,
                "app_reader",
                "eu-west-1",
                DECEMBER
            ),
            "orders.cluster-c1x2y3z4.eu-west-1.rds.amazonaws.com:6432/?Action=connect&DBUser=app_reader&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261204%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20261204T193000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2FTOKEN%2Bwith%2Fslashes%3D%3D&X-Amz-Signature=476d30cbb36483fdc45f62855b5e4c45ce443096f987b91f15d6e13da4194ab9"
        );
    }

    #[test]
    fn odd_user_names_sign_without_panicking() {
        for user in ["a b*c~d", "o'brien", "ümlaut", "x/y?z&w=v", "%41"] {
            let token = sign_with(None, "db.example.com", 5432, user, "us-east-1", NEW_YEAR);
            let info = crate::parse(&token).unwrap();
            assert_eq!(info.db_user, user);
        }
    }

    #[test]
    fn token_never_prints() {
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let request = TokenRequest { host: "db.example.com", port: 5432, user: "u", region: "us-east-1" };
        let token = generate(&creds, &request, at(NEW_YEAR)).unwrap();
        assert_eq!(format!("{token}"), "[redacted]");
        assert!(!format!("{token:?}").contains("Signature"));
    }
}
