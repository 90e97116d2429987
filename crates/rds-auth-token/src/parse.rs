use std::time::{Duration, SystemTime};

use percent_encoding::percent_decode_str;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::TokenError;

/// The longest token the parser reads. Real tokens are about 1 KB with a session token in them;
/// anything far larger is not a token.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The longest validity SigV4 allows a presigned URL.
pub(crate) const MAX_EXPIRES: u64 = 7 * 24 * 3600;

/// What a token says about itself. None of it is trusted: the database verifies the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub host: String,
    pub port: u16,
    pub db_user: String,
    pub access_key_id: String,
    pub region: String,
    pub signed_at: SystemTime,
    pub expires_in: Duration,
    pub has_session_token: bool,
}

/// A token used outside its validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the token was signed {ahead:?} in the future")]
    NotYetValid { ahead: Duration },
    #[error("the token expired {ago:?} ago")]
    Expired { ago: Duration },
}

impl TokenInfo {
    pub fn expires_at(&self) -> SystemTime {
        self.signed_at.checked_add(self.expires_in).unwrap_or(self.signed_at)
    }

    /// Checks that `now` lies within the token's window, allowing `skew` either way.
    pub fn check_window(&self, now: SystemTime, skew: Duration) -> Result<(), WindowError> {
        check_window(self.signed_at, self.expires_at(), now, skew)
    }
}

/// Checks that `now` lies within `signed_at..expires_at`, allowing `skew` either way.
pub(crate) fn check_window(
    signed_at: SystemTime,
    expires_at: SystemTime,
    now: SystemTime,
    skew: Duration,
) -> Result<(), WindowError> {
    if let Ok(ahead) = signed_at.duration_since(now)
        && ahead > skew
    {
        return Err(WindowError::NotYetValid { ahead });
    }
    if let Ok(ago) = now.duration_since(expires_at)
        && ago > skew
    {
        return Err(WindowError::Expired { ago });
    }
    Ok(())
}

/// Reads a token of the form `<host>:<port>/?Action=connect&DBUser=…&X-Amz-…`.
pub fn parse(token: &str) -> Result<TokenInfo, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let (authority, query) = token.split_once("/?").ok_or(TokenError::Malformed("no query"))?;
    let (host, port) = authority.rsplit_once(':').ok_or(TokenError::Malformed("no port"))?;
    let port: u16 = port.parse().map_err(|_| TokenError::Malformed("bad port"))?;
    if host.is_empty() {
        return Err(TokenError::Malformed("no host"));
    }

    let mut action = None;
    let mut db_user = None;
    let mut credential = None;
    let mut date = None;
    let mut expires = None;
    let mut has_session_token = false;
    let mut has_signature = false;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').ok_or(TokenError::Malformed("parameter without value"))?;
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| TokenError::Malformed("parameter is not UTF-8"))?;
        let slot = match name {
            "Action" => &mut action,
            "DBUser" => &mut db_user,
            "X-Amz-Credential" => &mut credential,
            "X-Amz-Date" => &mut date,
            "X-Amz-Expires" => &mut expires,
            "X-Amz-Security-Token" => {
                has_session_token = true;
                continue;
            }
            "X-Amz-Signature" => {
                has_signature = true;
                continue;
            }
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(TokenError::Malformed("parameter repeated"));
        }
    }

    if action.as_deref() != Some("connect") {
        return Err(TokenError::Malformed("Action is not connect"));
    }
    if !has_signature {
        return Err(TokenError::Malformed("no signature"));
    }
    let db_user = db_user.ok_or(TokenError::Malformed("no DBUser"))?;
    let credential = credential.ok_or(TokenError::Malformed("no X-Amz-Credential"))?;
    // <access key id>/<yyyymmdd>/<region>/rds-db/aws4_request
    let mut scope = credential.split('/');
    let (Some(access_key_id), Some(_day), Some(region), Some("rds-db"), Some("aws4_request"), None) =
        (scope.next(), scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
    else {
        return Err(TokenError::Malformed("bad X-Amz-Credential scope"));
    };
    let signed_at = parse_amz_date(&date.ok_or(TokenError::Malformed("no X-Amz-Date"))?)?;
    let expires_in: u64 = expires
        .ok_or(TokenError::Malformed("no X-Amz-Expires"))?
        .parse()
        .map_err(|_| TokenError::Malformed("bad X-Amz-Expires"))?;
    // SigV4 presigned URLs live at most seven days.
    if expires_in > MAX_EXPIRES {
        return Err(TokenError::Malformed("X-Amz-Expires over seven days"));
    }

    Ok(TokenInfo {
        host: host.to_owned(),
        port,
        db_user,
        access_key_id: access_key_id.to_owned(),
        region: region.to_owned(),
        signed_at,
        expires_in: Duration::from_secs(expires_in),
        has_session_token,
    })
}

/// `YYYYMMDDTHHMMSSZ`.
pub(crate) fn parse_amz_date(text: &str) -> Result<SystemTime, TokenError> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    let parsed =
        PrimitiveDateTime::parse(text, format).map_err(|_| TokenError::Malformed("bad X-Amz-Date"))?;
    let utc: OffsetDateTime = parsed.assume_utc();
    Ok(utc.into())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    use super::*;

    const VECTOR_3: &str = "orders.cluster-c1x2y3z4.eu-west-1.rds.amazonaws.com:6432/?Action=connect&DBUser=app_reader&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261204%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20261204T193000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLE%2FTOKEN%2Bwith%2Fslashes%3D%3D&X-Amz-Signature=476d30cbb36483fdc45f62855b5e4c45ce443096f987b91f15d6e13da4194ab9";

    #[test]
    fn reads_every_field() {
        let info = parse(VECTOR_3).unwrap();
        assert_eq!(
            info,
            TokenInfo {
                host: "orders.cluster-c1x2y3z4.eu-west-1.rds.amazonaws.com".into(),
                port: 6432,
                db_user: "app_reader".into(),
                access_key_id: "AKIDEXAMPLE".into(),
                region: "eu-west-1".into(),
                signed_at: UNIX_EPOCH + Duration::from_secs(1_796_412_600),
                expires_in: Duration::from_secs(900),
                has_session_token: true,
            }
        );
    }

    #[test]
    fn a_token_from_before_1970_parses_and_is_expired() {
        let old =
            VECTOR_3.replace("20261204T193000Z", "19600101T000000Z").replace("20261204%2F", "19600101%2F");
        let info = parse(&old).unwrap();
        assert!(matches!(
            info.check_window(SystemTime::now(), Duration::from_secs(60)),
            Err(WindowError::Expired { .. })
        ));
    }

    #[test]
    fn window() {
        let info = parse(VECTOR_3).unwrap();
        let signed = info.signed_at;
        let skew = Duration::from_secs(60);
        assert_eq!(info.check_window(signed + Duration::from_secs(899), skew), Ok(()));
        assert_eq!(info.check_window(signed - Duration::from_secs(30), skew), Ok(()));
        assert_eq!(
            info.check_window(signed + Duration::from_secs(1000), skew),
            Err(WindowError::Expired { ago: Duration::from_secs(100) })
        );
        assert_eq!(
            info.check_window(signed - Duration::from_secs(120), skew),
            Err(WindowError::NotYetValid { ahead: Duration::from_secs(120) })
        );
    }

    #[test]
    fn refuses_lookalikes() {
        for bad in [
            "",
            "password123",
            "db:5432/?Action=connect&DBUser=u",
            &VECTOR_3.replace("Action=connect", "Action=read"),
            &VECTOR_3.replace("rds-db", "s3"),
            &VECTOR_3.replace("X-Amz-Date=20261204T193000Z", "X-Amz-Date=yesterday"),
            &format!("{VECTOR_3}&DBUser=admin"),
            &VECTOR_3.replace("X-Amz-Expires=900", "X-Amz-Expires=99999999999"),
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }
    }
}
