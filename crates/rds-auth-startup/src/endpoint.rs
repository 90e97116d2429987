use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::StartupError;

/// The longest DNS name (RFC 1035, 253 characters in text form).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A database endpoint: a host and a port, spelled one way only.
///
/// The server proxy compares endpoints for equality against its allowlist, so each address
/// must have exactly one accepted spelling:
/// - DNS names are lowercase letters, digits and hyphens in dot-separated labels, with no
///   trailing dot; uppercase input is lowered, as DNS is case-blind;
/// - IPv4 addresses are four decimal octets without leading zeros; numeric forms a resolver
///   might still accept (`2130706433`, `127.1`, `0x7f.0.0.1`, `0177.0.0.1`) are refused;
/// - IPv6 addresses are bracketed, `[::1]:5432`, and kept in their canonical text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Endpoint {
    /// Builds an endpoint from a host written without a port.
    pub fn new(host: &str, port: u16) -> Result<Endpoint, StartupError> {
        if port == 0 {
            return Err(StartupError::InvalidTarget("port 0"));
        }
        let host = parse_host(host)?;
        Ok(Endpoint { host, port })
    }

    /// Parses `host:port` or `[ipv6]:port`.
    pub fn parse(text: &[u8]) -> Result<Endpoint, StartupError> {
        let text = std::str::from_utf8(text).map_err(|_| StartupError::InvalidTarget("not UTF-8"))?;
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) =
                rest.split_once("]:").ok_or(StartupError::InvalidTarget("expected [address]:port"))?;
            let ip = Ipv6Addr::from_str(host).map_err(|_| StartupError::InvalidTarget("bad IPv6 address"))?;
            // Keep one spelling: the canonical text form.
            if ip.to_string() != host.to_ascii_lowercase() {
                return Err(StartupError::InvalidTarget("IPv6 address not in canonical form"));
            }
            (host, port)
        } else {
            let (host, port) =
                text.rsplit_once(':').ok_or(StartupError::InvalidTarget("expected host:port"))?;
            if host.contains(':') {
                return Err(StartupError::InvalidTarget("IPv6 addresses are written [address]:port"));
            }
            (host, port)
        };
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StartupError::InvalidTarget("bad port"));
        }
        if port.starts_with('0') {
            return Err(StartupError::InvalidTarget("bad port"));
        }
        let port: u16 = port.parse().map_err(|_| StartupError::InvalidTarget("bad port"))?;
        Endpoint::new(host, port)
    }

    /// The host as written for DNS, TLS server names and IAM tokens (no brackets).
    pub fn host(&self) -> String {
        match &self.host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(name) => write!(f, "{name}:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

impl FromStr for Endpoint {
    type Err = StartupError;

    fn from_str(s: &str) -> Result<Endpoint, StartupError> {
        Endpoint::parse(s.as_bytes())
    }
}

fn parse_host(host: &str) -> Result<Host, StartupError> {
    if host.is_empty() {
        return Err(StartupError::InvalidTarget("empty host"));
    }
    if host.len() > MAX_NAME_LEN {
        return Err(StartupError::InvalidTarget("host name too long"));
    }
    if host.contains(':') {
        let ip = Ipv6Addr::from_str(host).map_err(|_| StartupError::InvalidTarget("bad IPv6 address"))?;
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.iter().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        // Only the four-octet dotted decimal form, which `Ipv4Addr` parses strictly (no leading
        // zeros, no short forms).
        let ip = Ipv4Addr::from_str(host)
            .map_err(|_| StartupError::InvalidTarget("numeric host that is not a dotted IPv4 address"))?;
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(StartupError::InvalidTarget("empty label in host name"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(StartupError::InvalidTarget("host name label too long"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(StartupError::InvalidTarget("host name has characters DNS does not allow"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(StartupError::InvalidTarget("host name label starts or ends with a hyphen"));
        }
    }
    // The last label of a name is never all digits or hex-looking; resolvers read such names
    // as numbers (`10.1`, `0x7f000001`).
    let last = labels.last().copied().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || last.to_ascii_lowercase().starts_with("0x") {
        return Err(StartupError::InvalidTarget("numeric host that is not a dotted IPv4 address"));
    }
    Ok(Host::Name(host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_spellings() {
        for (text, shown) in [
            ("mydb.abc.us-east-1.rds.amazonaws.com:5432", "mydb.abc.us-east-1.rds.amazonaws.com:5432"),
            ("MyDB.Example.COM:6432", "mydb.example.com:6432"),
            ("10.0.0.1:5432", "10.0.0.1:5432"),
            ("[::1]:5432", "[::1]:5432"),
            ("postgres_1:5432", "postgres_1:5432"),
        ] {
            assert_eq!(Endpoint::parse(text.as_bytes()).unwrap().to_string(), shown, "{text}");
        }
    }

    #[test]
    fn refused_spellings() {
        let long = format!("{}.example.com:5432", "a".repeat(64));
        let very_long = format!("{}:5432", "a.".repeat(130) + "com");
        for text in [
            "db.example.com",
            "db.example.com:",
            "db.example.com:0",
            "db.example.com:65536",
            "db.example.com:05432",
            "db.example.com.:5432",
            "db..example.com:5432",
            "2130706433:5432",
            "127.1:5432",
            "0177.0.0.1:5432",
            "0x7f.0.0.1:5432",
            "127.0.0.0x1:5432",
            "[0:0:0:0:0:0:0:1]:5432",
            "[::ffff:127.0.0.1]:5432x",
            "::1:5432",
            "-db.example.com:5432",
            "db example.com:5432",
            "db.example.com:5432\0",
            long.as_str(),
            very_long.as_str(),
        ] {
            assert!(Endpoint::parse(text.as_bytes()).is_err(), "{text:?} was accepted");
        }
    }
}
