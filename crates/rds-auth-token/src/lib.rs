//! RDS IAM authentication tokens.
//!
//! What it owns:
//! - [`generate`]: a SigV4 query-string presign of
//!   `GET https://<endpoint>:<port>/?Action=connect&DBUser=<user>` for service `rds-db`, valid
//!   900 s, with the scheme dropped. It matches botocore's `generate_db_auth_token` byte for
//!   byte, session tokens included. aws-sdk-rds's `AuthTokenGenerator` is deliberately not
//!   used: it does not percent-encode `DBUser`, so it signs the wrong user for `a+b@c`, and it
//!   panics on a space;
//! - [`TokenCache`]: reuse of a token while it has life left, which keeps an IDE's burst of
//!   connections under RDS's limit of about 200 new IAM connections per second;
//! - [`presign_identity`]: a presigned `sts:GetCallerIdentity` query, the client proxy's
//!   proof of its IAM identity, and [`parse_proof`], the server proxy's strict reading of one
//!   before it asks STS;
//! - [`parse`]: reading a token's endpoint, user, time window and access key id, for the server
//!   proxy's sanity checks and audit lines. It never verifies a signature.
//!
//! Invariants: pure. Credentials and the current time are arguments; nothing here reads the
//! clock, the environment or the network, and no `Debug` or `Display` prints a token.

mod cache;
mod error;
mod identity;
mod parse;
mod sign;

pub use aws_credential_types::Credentials;

pub use crate::cache::{CacheKey, TokenCache};
pub use crate::error::TokenError;
pub use crate::identity::{
    IdentityProof, PROOF_LIFETIME, ProofInfo, parse_proof, presign_identity, sts_host,
};
pub use crate::parse::{TokenInfo, WindowError, parse};
pub use crate::sign::{AuthToken, TOKEN_LIFETIME, TokenRequest, generate};
