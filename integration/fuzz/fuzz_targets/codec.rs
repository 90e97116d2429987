//! Every decoder of the wire codec on arbitrary bytes, under an arbitrary limit: no panic, no
//! allocation sized by a claimed length. The proptest `arbitrary_bytes_never_panic`
//! (crates/rds-auth-codec/src/proptests.rs) runs the same calls in every CI run.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rds_auth_codec::backend::BackendMessage;
use rds_auth_codec::boundary::BoundaryScanner;
use rds_auth_codec::frame::Frame;
use rds_auth_codec::frontend::AuthResponse;
use rds_auth_codec::{ErrorFields, StartupPacket};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, bytes)) = data.split_first() else { return };
    let limit = usize::from(limit) * 16;
    let _ = StartupPacket::decode(&mut BytesMut::from(bytes), limit);
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = BackendMessage::decode(&mut buf, limit) {}
    let body = Bytes::copy_from_slice(bytes);
    let frame = Frame::new(b'p', body.clone());
    let _ = AuthResponse::parse_password(frame.clone());
    let _ = AuthResponse::parse_sasl_initial(frame.clone());
    let _ = AuthResponse::parse_sasl_response(frame);
    let _ = ErrorFields::decode(body.clone());
    for tag in *b"RSKvZENp" {
        let _ = BackendMessage::parse(Frame::new(tag, body.clone()));
    }
    let _ = BoundaryScanner::new(limit).scan(bytes, |_| {});
});
