//! The server proxy's parsers of what a client sends as credentials: an RDS IAM token and a
//! presigned sts:GetCallerIdentity proof. The proptests in crates/rds-auth-token run the same
//! parsers on generated input in every CI run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = rds_auth_token::parse(text);
    let _ = rds_auth_token::parse_proof(text);
});
