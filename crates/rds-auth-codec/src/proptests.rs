//! Properties every decoder must hold: round trips, no panics on arbitrary bytes, and the same
//! messages whatever way a stream is split.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::backend::{Authentication, BackendKeyData, BackendMessage, TransactionStatus};
use crate::boundary::{Boundary, BoundaryScanner};
use crate::error_fields::ErrorFields;
use crate::frame::Frame;
use crate::frontend::AuthResponse;
use crate::startup::{CancelRequest, Params, ProtocolVersion, StartupMessage, StartupPacket};

fn no_nul(max: usize) -> impl Strategy<Value = Bytes> {
    vec(1u8..=255, 0..max).prop_map(Bytes::from)
}

fn name() -> impl Strategy<Value = Bytes> {
    vec(1u8..=255, 1..24).prop_map(Bytes::from)
}

fn any_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn params() -> impl Strategy<Value = Params> {
    vec((name(), no_nul(40)), 0..8).prop_map(|pairs| {
        let mut params = Params::new();
        for (n, v) in pairs {
            params.push(n, v).unwrap();
        }
        params
    })
}

fn cancel_key() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 4..=256).prop_map(Bytes::from)
}

fn startup_packet() -> impl Strategy<Value = StartupPacket> {
    prop_oneof![
        Just(StartupPacket::SslRequest),
        Just(StartupPacket::GssEncRequest),
        (any::<u32>(), cancel_key())
            .prop_map(|(pid, key)| StartupPacket::CancelRequest(CancelRequest { pid, key })),
        (any::<u16>(), params()).prop_map(|(minor, params)| {
            StartupPacket::Startup(StartupMessage { version: ProtocolVersion::new(3, minor), params })
        }),
    ]
}

fn error_fields() -> impl Strategy<Value = ErrorFields> {
    vec((1u8..=255, no_nul(30)), 0..6).prop_map(|fields| fields.into_iter().collect())
}

fn authentication() -> impl Strategy<Value = Authentication> {
    prop_oneof![
        Just(Authentication::Ok),
        Just(Authentication::KerberosV5),
        Just(Authentication::CleartextPassword),
        any::<[u8; 4]>().prop_map(|salt| Authentication::Md5Password { salt }),
        Just(Authentication::ScmCredential),
        Just(Authentication::Gss),
        any_bytes(40).prop_map(Authentication::GssContinue),
        Just(Authentication::Sspi),
        vec(name(), 0..4).prop_map(|mechanisms| Authentication::Sasl { mechanisms }),
        any_bytes(40).prop_map(Authentication::SaslContinue),
        any_bytes(40).prop_map(Authentication::SaslFinal),
    ]
}

fn transaction_status() -> impl Strategy<Value = TransactionStatus> {
    prop_oneof![
        Just(TransactionStatus::Idle),
        Just(TransactionStatus::InTransaction),
        Just(TransactionStatus::Failed),
    ]
}

fn backend_message() -> impl Strategy<Value = BackendMessage> {
    let untouched = any::<u8>()
        .prop_filter("types the codec decodes", |t| !b"RSKvZEN".contains(t))
        .prop_flat_map(|tag| any_bytes(200).prop_map(move |body| Frame::new(tag, body)));
    prop_oneof![
        authentication().prop_map(BackendMessage::Authentication),
        (no_nul(20), no_nul(40)).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        (any::<u32>(), cancel_key())
            .prop_map(|(pid, key)| BackendMessage::BackendKeyData(BackendKeyData { pid, key })),
        (any::<u32>(), vec(no_nul(30), 0..4)).prop_map(|(newest_minor, unrecognized)| {
            BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized }
        }),
        transaction_status().prop_map(BackendMessage::ReadyForQuery),
        error_fields().prop_map(BackendMessage::ErrorResponse),
        error_fields().prop_map(BackendMessage::NoticeResponse),
        untouched.prop_map(BackendMessage::Other),
    ]
}

fn auth_response() -> impl Strategy<Value = AuthResponse> {
    prop_oneof![
        no_nul(100).prop_map(AuthResponse::Password),
        (name(), proptest::option::of(any_bytes(60)))
            .prop_map(|(mechanism, data)| AuthResponse::SaslInitialResponse { mechanism, data }),
        any_bytes(60).prop_map(AuthResponse::SaslResponse),
    ]
}

/// Feeds `bytes` in pieces cut at `cuts` and collects every message `decode` yields.
fn decode_split<T>(
    bytes: &[u8],
    cuts: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Option<T>,
) -> Vec<T> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for pair in points.windows(2) {
        buf.extend_from_slice(&bytes[pair[0]..pair[1]]);
        while let Some(message) = decode(&mut buf) {
            out.push(message);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    out
}

proptest! {
    #[test]
    fn startup_round_trip(packet in startup_packet()) {
        let mut buf = BytesMut::from(&packet.to_bytes()[..]);
        prop_assert_eq!(StartupPacket::decode(&mut buf, 1 << 16), Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn backend_round_trip(message in backend_message()) {
        let mut buf = BytesMut::from(&message.to_bytes()[..]);
        prop_assert_eq!(BackendMessage::decode(&mut buf, 1 << 16), Ok(Some(message)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frontend_round_trip(message in auth_response()) {
        let frame = Frame::decode(&mut BytesMut::from(&message.to_bytes()[..]), 1 << 16)
            .unwrap()
            .unwrap();
        let parsed = match &message {
            AuthResponse::Password(_) => AuthResponse::parse_password(frame),
            AuthResponse::SaslInitialResponse { .. } => AuthResponse::parse_sasl_initial(frame),
            AuthResponse::SaslResponse(_) => AuthResponse::parse_sasl_response(frame),
        };
        prop_assert_eq!(parsed, Ok(message));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in any_bytes(600), limit in 0usize..2_000) {
        let _ = StartupPacket::decode(&mut BytesMut::from(&bytes[..]), limit);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = BackendMessage::decode(&mut buf, limit) {}
        let frame = Frame::new(b'p', bytes.clone());
        let _ = AuthResponse::parse_password(frame.clone());
        let _ = AuthResponse::parse_sasl_initial(frame.clone());
        let _ = AuthResponse::parse_sasl_response(frame);
        let _ = ErrorFields::decode(bytes.clone());
        for tag in *b"RSKvZENp" {
            let _ = BackendMessage::parse(Frame::new(tag, bytes.clone()));
        }
        let _ = BoundaryScanner::new(limit).scan(&bytes, |_| {});
    }

    #[test]
    fn split_streams_decode_alike(
        messages in vec(backend_message(), 1..12),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let mut bytes = BytesMut::new();
        for message in &messages {
            message.encode(&mut bytes);
        }
        let decoded = decode_split(&bytes, &cuts, |buf| BackendMessage::decode(buf, 1 << 16).unwrap());
        prop_assert_eq!(&decoded, &messages);

        // The boundary scanner sees one message start per message, however the bytes arrive.
        let mut scanner = BoundaryScanner::new(1 << 16);
        let mut starts = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.extend([0, bytes.len()]);
        points.sort_unstable();
        for pair in points.windows(2) {
            scanner.scan(&bytes[pair[0]..pair[1]], |b| {
                if let Boundary::Message { .. } = b { starts += 1 }
            }).unwrap();
        }
        prop_assert_eq!(starts, messages.len());
        prop_assert!(scanner.at_boundary());
    }

    #[test]
    fn split_startup_streams_decode_alike(
        packets in vec(startup_packet(), 1..6),
        cuts in vec(any::<usize>(), 0..10),
    ) {
        let mut bytes = BytesMut::new();
        for packet in &packets {
            packet.encode(&mut bytes);
        }
        let decoded = decode_split(&bytes, &cuts, |buf| StartupPacket::decode(buf, 1 << 16).unwrap());
        prop_assert_eq!(decoded, packets);
    }
}
