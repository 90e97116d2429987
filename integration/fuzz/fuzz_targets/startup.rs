//! A startup packet from arbitrary bytes, then what each proxy does with its parameters: the
//! client proxy's checks and protocol negotiation, and the server proxy's extraction of the
//! injected target and credentials.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rds_auth_codec::StartupPacket;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(StartupPacket::Startup(message))) = StartupPacket::decode(&mut BytesMut::from(data), 1 << 16)
    else {
        return;
    };
    let mut params = message.params.clone();
    let _ = rds_auth_startup::check_client_params(&params);
    let _ = rds_auth_startup::negotiate(message.version, &mut params, 2);
    let _ = rds_auth_startup::extract(message.params);
});
