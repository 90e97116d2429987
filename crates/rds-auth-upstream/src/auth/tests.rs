use bytes::{Bytes, BytesMut};
use rds_auth_codec::SqlState;

use super::*;

fn secret(s: &str) -> Secret {
    Secret::new(Bytes::copy_from_slice(s.as_bytes()))
}

fn auth(a: Authentication) -> BackendMessage {
    BackendMessage::Authentication(a)
}

fn sasl(mechanisms: &[&'static str]) -> BackendMessage {
    auth(Authentication::Sasl {
        mechanisms: mechanisms.iter().map(|m| Bytes::from_static(m.as_bytes())).collect(),
    })
}

fn frame(bytes: &Bytes) -> Frame {
    Frame::decode(&mut BytesMut::from(&bytes[..]), 1 << 16).unwrap().unwrap()
}

#[test]
fn token_answers_only_a_cleartext_request() {
    let mut l = AuthLoop::new("alice", Credential::Token(secret("tok")), None);
    let AuthStep::Reply(bytes) = l.on_backend(auth(Authentication::CleartextPassword)).unwrap() else {
        panic!("expected a reply")
    };
    assert_eq!(AuthResponse::parse_password(frame(&bytes)).unwrap(), AuthResponse::Password("tok".into()));
    assert!(matches!(l.on_backend(auth(Authentication::Ok)).unwrap(), AuthStep::Done));

    for request in [auth(Authentication::Md5Password { salt: *b"salt" }), sasl(&["SCRAM-SHA-256"])] {
        let mut l = AuthLoop::new("alice", Credential::Token(secret("tok")), None);
        let err = l.on_backend(request).unwrap_err();
        assert_eq!(err.sqlstate(), SqlState::INVALID_AUTHORIZATION);
        assert!(err.to_string().contains("not enabled for IAM"), "{err}");
    }
}

#[test]
fn password_mode_hashes_md5_like_libpq() {
    let mut l = AuthLoop::new("md5_user", Credential::Password(secret("md5-secret")), None);
    let AuthStep::Reply(bytes) =
        l.on_backend(auth(Authentication::Md5Password { salt: [1, 2, 3, 4] })).unwrap()
    else {
        panic!("expected a reply")
    };
    let expected = md5_hash(b"md5_user", b"md5-secret", [1, 2, 3, 4]);
    assert_eq!(
        AuthResponse::parse_password(frame(&bytes)).unwrap(),
        AuthResponse::Password(Bytes::from(expected))
    );
}

#[test]
fn password_mode_picks_plus_when_it_can_bind() {
    let mut l = AuthLoop::new("u", Credential::Password(secret("pw")), Some(vec![7; 32]));
    let AuthStep::Reply(bytes) = l.on_backend(sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])).unwrap() else {
        panic!("expected a reply")
    };
    let AuthResponse::SaslInitialResponse { mechanism, data } =
        AuthResponse::parse_sasl_initial(frame(&bytes)).unwrap()
    else {
        panic!("expected SASLInitialResponse")
    };
    assert_eq!(mechanism.as_ref(), b"SCRAM-SHA-256-PLUS");
    assert!(data.unwrap().starts_with(b"p=tls-server-end-point,,"));
}

#[test]
fn passthrough_withholds_plus_and_explains_a_binding_client() {
    let mut l = AuthLoop::new("u", Credential::Passthrough, Some(vec![7; 32]));
    let AuthStep::AskClient(offer) = l.on_backend(sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])).unwrap()
    else {
        panic!("expected the offer to go to the client")
    };
    assert_eq!(offer, sasl(&["SCRAM-SHA-256"]));

    let plain = AuthResponse::SaslInitialResponse {
        mechanism: Bytes::from_static(b"SCRAM-SHA-256"),
        data: Some(Bytes::from_static(b"n,,n=,r=abc")),
    };
    assert_eq!(l.on_client(frame(&plain.to_bytes())).unwrap(), plain.to_bytes());

    let mut l = AuthLoop::new("u", Credential::Passthrough, Some(vec![7; 32]));
    l.on_backend(sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])).unwrap();
    let binding = AuthResponse::SaslInitialResponse {
        mechanism: Bytes::from_static(b"SCRAM-SHA-256"),
        data: Some(Bytes::from_static(b"y,,n=,r=abc")),
    };
    let err = l.on_client(frame(&binding.to_bytes())).unwrap_err();
    assert!(matches!(err, UpstreamError::ChannelBindingThroughProxy));
    assert!(err.hint().contains("channel_binding=disable"));
}

#[test]
fn passthrough_refuses_answers_out_of_turn() {
    let mut l = AuthLoop::new("u", Credential::Passthrough, None);
    let stray = AuthResponse::Password(Bytes::from_static(b"x")).to_bytes();
    assert!(matches!(l.on_client(frame(&stray)), Err(UpstreamError::ClientProtocol)));
}

#[test]
fn gss_and_friends_are_refused_with_0a000() {
    for request in
        [Authentication::Gss, Authentication::Sspi, Authentication::KerberosV5, Authentication::ScmCredential]
    {
        let mut l = AuthLoop::new("u", Credential::Passthrough, None);
        let err = l.on_backend(auth(request)).unwrap_err();
        assert_eq!(err.sqlstate(), SqlState::FEATURE_NOT_SUPPORTED);
    }
}

#[test]
fn database_errors_are_kept_whole() {
    let fields = rds_auth_codec::ErrorFields::fatal(SqlState(*b"3D000"), "database \"x\" does not exist");
    let mut l = AuthLoop::new("u", Credential::Token(secret("t")), None);
    let err = l.on_backend(BackendMessage::ErrorResponse(fields.clone())).unwrap_err();
    assert_eq!(err.to_error_fields(), fields);
}
