//! PROXY protocol v2, for a server proxy behind a network load balancer that hides the client
//! address. When it is configured, every connection must open with a v2 header; the header's
//! source address becomes the client address in logs, audit lines and rate limits.
//!
//! The header is read with exact-length reads, so not one byte of the Postgres stream that
//! follows is consumed. A `LOCAL` header (the load balancer's own health check) keeps the TCP
//! peer address.

use std::io;
use std::net::SocketAddr;

use ppp::v2::{Addresses, Command, Header};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The fixed part of a v2 header: 12 signature bytes, version and command, family and
/// protocol, and a 16-bit length.
const FIXED: usize = 16;
/// The longest address block and TLVs accepted. AWS adds a VPC endpoint id TLV; 512 bytes is
/// far more than any load balancer sends.
const MAX_REST: usize = 512;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection did not start with a PROXY protocol v2 header")]
    Missing,
    #[error("the PROXY protocol header is too long ({0} bytes)")]
    TooLong(usize),
    #[error("the PROXY protocol header is malformed")]
    Malformed,
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads one v2 header from `stream` and returns the client address it names, or `peer` for a
/// `LOCAL` header or an address family that has no IP address.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    let mut fixed = [0u8; FIXED];
    stream.read_exact(&mut fixed).await?;
    if !fixed.starts_with(ppp::v2::PROTOCOL_PREFIX) {
        return Err(ProxyHeaderError::Missing);
    }
    let rest = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if rest > MAX_REST {
        return Err(ProxyHeaderError::TooLong(rest));
    }
    let mut header = Vec::with_capacity(FIXED + rest);
    header.extend_from_slice(&fixed);
    header.resize(FIXED + rest, 0);
    stream.read_exact(&mut header[FIXED..]).await?;
    client_address(&header, peer)
}

fn client_address(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    let header = Header::try_from(header).map_err(|_| ProxyHeaderError::Malformed)?;
    if header.command == Command::Local {
        return Ok(peer);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => peer,
    })
}

#[cfg(test)]
mod tests {
    use ppp::v2::{Builder, Protocol, Version};
    use proptest::prelude::*;

    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.9:40000".parse().unwrap()
    }

    fn header(command: Command, source: &str) -> Vec<u8> {
        let source: SocketAddr = source.parse().unwrap();
        let destination: SocketAddr =
            if source.is_ipv4() { "10.0.0.1:5432" } else { "[fd00::1]:5432" }.parse().unwrap();
        Builder::with_addresses(Version::Two | command, Protocol::Stream, (source, destination))
            .write_tlv(ppp::v2::Type::NoOp, &[0; 5])
            .unwrap()
            .build()
            .unwrap()
    }

    async fn read(bytes: &[u8]) -> (Result<SocketAddr, ProxyHeaderError>, Vec<u8>) {
        let mut stream = bytes;
        let result = read_header(&mut stream, peer()).await;
        (result, stream.to_vec())
    }

    #[tokio::test]
    async fn the_source_address_is_the_client_and_nothing_after_the_header_is_read() {
        for source in ["203.0.113.7:51234", "[2001:db8::7]:51234"] {
            let mut bytes = header(Command::Proxy, source);
            bytes.extend_from_slice(b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
            let (addr, rest) = read(&bytes).await;
            assert_eq!(addr.unwrap(), source.parse::<SocketAddr>().unwrap());
            assert_eq!(rest, b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
        }
    }

    #[tokio::test]
    async fn a_local_header_keeps_the_peer() {
        let (addr, _) = read(&header(Command::Local, "203.0.113.7:1")).await;
        assert_eq!(addr.unwrap(), peer());
    }

    #[tokio::test]
    async fn a_postgres_startup_without_a_header_is_refused() {
        let ssl_request = [0u8, 0, 0, 8, 4, 0xd2, 0x16, 0x2f, 0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f];
        assert!(matches!(read(&ssl_request).await.0, Err(ProxyHeaderError::Missing)));
        assert!(matches!(read(&ssl_request[..8]).await.0, Err(ProxyHeaderError::Io(_))));
    }

    #[tokio::test]
    async fn oversize_and_malformed_headers_are_refused() {
        let mut long = header(Command::Proxy, "203.0.113.7:1");
        long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(matches!(read(&long).await.0, Err(ProxyHeaderError::TooLong(2000))));
        let mut bad_family = header(Command::Proxy, "203.0.113.7:1");
        bad_family[13] = 0x77;
        assert!(matches!(read(&bad_family).await.0, Err(ProxyHeaderError::Malformed)));
    }

    proptest! {
        #[test]
        fn any_bytes_after_the_signature_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = ppp::v2::PROTOCOL_PREFIX.to_vec();
            bytes.extend_from_slice(&tail);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = runtime.block_on(read(&bytes));
        }
    }
}
