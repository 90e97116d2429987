/// Signing or parsing a token failed. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign a token: {0}")]
    Signing(String),
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
}
