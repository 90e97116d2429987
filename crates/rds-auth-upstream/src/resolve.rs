use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use rds_auth_startup::Endpoint;

use crate::UpstreamError;

/// Turns endpoint names into addresses.
///
/// Overrides map a name to fixed addresses; split-DNS users and the tests (whose discovered
/// endpoints are fake names) need them. Names resolved through DNS may not lead to loopback,
/// link-local (169.254.169.254 is the instance metadata service), unspecified, multicast or
/// broadcast addresses: a name that does is a DNS-rebinding attempt, or a mistake. An IP
/// literal or an override is taken as meant, because someone wrote it down on purpose.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: HashMap<String, Vec<IpAddr>>,
}

impl Resolver {
    pub fn new(overrides: HashMap<String, Vec<IpAddr>>) -> Resolver {
        let overrides =
            overrides.into_iter().map(|(name, addrs)| (name.to_ascii_lowercase(), addrs)).collect();
        Resolver { overrides }
    }

    pub fn overrides(&self) -> &HashMap<String, Vec<IpAddr>> {
        &self.overrides
    }

    /// The addresses to try for `endpoint`, in order.
    pub async fn resolve(&self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, UpstreamError> {
        let port = endpoint.port();
        if let Some(ip) = endpoint.ip() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let host = endpoint.host();
        if let Some(addrs) = self.overrides.get(&host) {
            return Ok(addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| UpstreamError::Resolve { host: host.clone() })?
            .collect();
        if resolved.is_empty() {
            return Err(UpstreamError::Resolve { host });
        }
        let allowed: Vec<SocketAddr> = resolved.into_iter().filter(|a| !is_forbidden(a.ip())).collect();
        if allowed.is_empty() {
            return Err(UpstreamError::ForbiddenAddress { host });
        }
        Ok(allowed)
    }
}

/// Addresses a DNS name must never lead to.
pub(crate) fn is_forbidden(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                // The IPv6 instance-metadata address of EC2.
                || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.5", "172.18.0.2", "192.168.1.1", "52.1.2.3", "2600:1f18::1"] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn literals_and_overrides_are_taken_as_meant() {
        let resolver = Resolver::new(HashMap::from([(
            "DB.Internal.Test".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        )]));
        let addrs = resolver.resolve(&Endpoint::parse(b"db.internal.test:6432").unwrap()).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:6432".parse().unwrap()]);
        let addrs = resolver.resolve(&Endpoint::parse(b"127.0.0.1:5432").unwrap()).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:5432".parse().unwrap()]);
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let err =
            Resolver::default().resolve(&Endpoint::parse(b"localhost:5432").unwrap()).await.unwrap_err();
        assert!(matches!(err, UpstreamError::ForbiddenAddress { .. }), "{err:?}");
    }
}
