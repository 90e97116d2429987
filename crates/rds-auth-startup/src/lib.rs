//! The startup rewrite between the two proxies: the client proxy injects the target and the
//! credential into the StartupMessage, the server proxy takes them out again.
//!
//! What it owns:
//! - the names of the injected parameters, `host` (the target `endpoint:port`) and `password`
//!   (the IAM token or a static password). They are the Go predecessor's names, so a mixed
//!   deployment keeps working while a team migrates. Both are undotted on purpose: PostgreSQL
//!   silently stores an unknown dotted name as a session setting, but refuses an undotted one,
//!   so a stripping bug fails loudly instead of parking a token in `current_setting()`; and
//!   `aws_identity`, the caller's presigned `sts:GetCallerIdentity` query, which only this
//!   project's client proxy sends;
//! - the rules for what a client may send: `user` is required, reserved names and duplicates
//!   are refused, and so are replication connections;
//! - protocol-version negotiation: which version a session runs at, which `_pq_.` options are
//!   reported back as unrecognised, and stripping them ([`negotiate`]);
//! - [`Endpoint`], the strict spelling of a target, and [`Secret`], which never prints.
//!
//! Invariants: everything the client sent that is not ours passes through byte for byte and in
//! order; nothing here does I/O, reads the clock or logs a parameter value.

mod endpoint;
mod error;
mod negotiate;
mod secret;

use bytes::Bytes;
use rds_auth_codec::Params;

pub use crate::endpoint::Endpoint;
pub use crate::error::StartupError;
pub use crate::negotiate::{Negotiation, PROTOCOL_OPTION_PREFIX, negotiate};
pub use crate::secret::Secret;

/// The parameter that carries the target, as `endpoint:port`.
pub const TARGET_PARAM: &[u8] = b"host";
/// The parameter that carries the IAM token or the static password.
pub const CREDENTIAL_PARAM: &[u8] = b"password";
/// The parameter that carries the caller's identity proof.
pub const IDENTITY_PARAM: &[u8] = b"aws_identity";
/// Names a client may not send, because the proxies own them.
pub const RESERVED_PARAMS: [&[u8]; 3] = [TARGET_PARAM, CREDENTIAL_PARAM, IDENTITY_PARAM];

/// What the client proxy adds to a client's startup parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub target: Endpoint,
    /// The token or password; `None` in passthrough mode, where the client authenticates itself.
    pub credential: Option<Secret>,
    /// A presigned `sts:GetCallerIdentity` query proving who the caller is.
    pub identity: Option<Secret>,
}

/// The startup user, which every session must name. PostgreSQL refuses a startup without one
/// with the same SQLSTATE.
pub fn user(params: &Params) -> Result<&str, StartupError> {
    let user = params.get(b"user").filter(|u| !u.is_empty()).ok_or(StartupError::MissingUser)?;
    std::str::from_utf8(user).map_err(|_| StartupError::UserNotUtf8)
}

/// Checks what a client sent before the client proxy adds anything: a user, no reserved name,
/// no name twice, and no replication.
pub fn check_client_params(params: &Params) -> Result<(), StartupError> {
    let mut seen: Vec<&Bytes> = Vec::with_capacity(params.len());
    for name in params.names() {
        if RESERVED_PARAMS.contains(&name.as_ref()) {
            return Err(StartupError::ReservedParameter(display_name(name)));
        }
        if seen.contains(&name) {
            return Err(StartupError::DuplicateParameter(display_name(name)));
        }
        seen.push(name);
    }
    if params.get(b"replication").is_some_and(|v| is_replication(v)) {
        return Err(StartupError::Replication);
    }
    user(params)?;
    Ok(())
}

/// The client proxy's rewrite: the client's parameters unchanged, then the target and the
/// credential.
pub fn inject(params: &Params, injection: &Injection) -> Result<Params, StartupError> {
    check_client_params(params)?;
    let mut out = params.clone();
    out.push(TARGET_PARAM, Bytes::from(injection.target.to_string()))
        .map_err(|_| StartupError::InvalidTarget("the target cannot be encoded"))?;
    if let Some(credential) = &injection.credential {
        out.push(CREDENTIAL_PARAM, credential.expose_bytes().clone())
            .map_err(|_| StartupError::InvalidCredential)?;
    }
    if let Some(identity) = &injection.identity {
        out.push(IDENTITY_PARAM, identity.expose_bytes().clone())
            .map_err(|_| StartupError::InvalidCredential)?;
    }
    Ok(out)
}

/// The server proxy's rewrite: takes the target and credential out, and returns exactly the
/// parameters the client sent, which go on to the database.
pub fn extract(mut params: Params) -> Result<(Params, Injection), StartupError> {
    for name in RESERVED_PARAMS {
        if params.count(name) > 1 {
            return Err(StartupError::DuplicateParameter(display_name(name)));
        }
    }
    let target = params.remove(TARGET_PARAM).pop().ok_or(StartupError::MissingTarget)?;
    let target = Endpoint::parse(&target)?;
    let credential = params.remove(CREDENTIAL_PARAM).pop().map(Secret::new);
    if credential.as_ref().is_some_and(|c| c.expose_bytes().is_empty()) {
        return Err(StartupError::InvalidCredential);
    }
    let identity = params.remove(IDENTITY_PARAM).pop().map(Secret::new);
    let mut seen: Vec<&Bytes> = Vec::with_capacity(params.len());
    for name in params.names() {
        if seen.contains(&name) {
            return Err(StartupError::DuplicateParameter(display_name(name)));
        }
        seen.push(name);
    }
    if params.get(b"replication").is_some_and(|v| is_replication(v)) {
        return Err(StartupError::Replication);
    }
    user(&params)?;
    Ok((params, Injection { target, credential, identity }))
}

/// Whether a `replication` value asks for a replication connection. PostgreSQL accepts the
/// boolean spellings and `database`.
fn is_replication(value: &[u8]) -> bool {
    !matches!(value.to_ascii_lowercase().as_slice(), b"false" | b"off" | b"no" | b"0" | b"f" | b"n")
}

/// A parameter name for an error message, cut short and made printable.
fn display_name(name: &[u8]) -> String {
    let name: String = String::from_utf8_lossy(name).chars().take(64).collect();
    name.escape_default().to_string()
}

#[cfg(test)]
mod tests;
