use std::collections::HashMap;
use std::fmt;

use rds_auth_startup::Endpoint;

/// How a session authenticates to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// The client proxy sends an IAM token, which answers RDS's cleartext-password request.
    Iam,
    /// The client proxy sends a static password, used for cleartext, MD5 or SCRAM.
    Password,
    /// The client authenticates itself; the exchange is relayed.
    Passthrough,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Iam => "iam",
            AuthMode::Password => "password",
            AuthMode::Passthrough => "passthrough",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The modes a target accepts. The server's configuration is authoritative: the wire carries
/// a token and a static password in the same parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthModes {
    pub iam: bool,
    pub password: bool,
    pub passthrough: bool,
}

impl AuthModes {
    pub const IAM_ONLY: AuthModes = AuthModes { iam: true, password: false, passthrough: false };

    pub fn from_modes(modes: &[AuthMode]) -> AuthModes {
        AuthModes {
            iam: modes.contains(&AuthMode::Iam),
            password: modes.contains(&AuthMode::Password),
            passthrough: modes.contains(&AuthMode::Passthrough),
        }
    }

    pub fn accepts(self, mode: AuthMode) -> bool {
        match mode {
            AuthMode::Iam => self.iam,
            AuthMode::Password => self.password,
            AuthMode::Passthrough => self.passthrough,
        }
    }
}

/// One allowed database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRule {
    pub endpoint: Endpoint,
    pub modes: AuthModes,
    /// Where the rule came from, for refusals and logs: `static` or a discovery source.
    pub source: String,
}

/// The databases the server proxy may connect to, matched on the exact endpoint name and
/// port. There is no wildcard and no private-range or loopback exemption: an IP address is
/// allowed only when it is listed as that literal, and another port of an allowed host is
/// another target.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: HashMap<Endpoint, TargetRule>,
    /// Endpoints by the short id cancel keys carry.
    by_id: HashMap<[u8; 8], Endpoint>,
}

impl Allowlist {
    pub fn new(rules: impl IntoIterator<Item = TargetRule>) -> Allowlist {
        let rules: HashMap<Endpoint, TargetRule> =
            rules.into_iter().map(|r| (r.endpoint.clone(), r)).collect();
        let by_id = rules.keys().map(|e| (crate::cancel::target_id(e), e.clone())).collect();
        Allowlist { rules, by_id }
    }

    /// The allowed endpoint a cancel key's target id stands for.
    pub(crate) fn by_target_id(&self, id: &[u8; 8]) -> Option<&Endpoint> {
        self.by_id.get(id)
    }

    pub fn get(&self, endpoint: &Endpoint) -> Option<&TargetRule> {
        self.rules.get(endpoint)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> impl Iterator<Item = &TargetRule> {
        self.rules.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> TargetRule {
        TargetRule { endpoint: text.parse().unwrap(), modes: AuthModes::IAM_ONLY, source: "static".into() }
    }

    #[test]
    fn exact_endpoint_and_port_only() {
        let list = Allowlist::new([rule("db.example.com:5432"), rule("10.0.0.5:5432")]);
        for allowed in ["db.example.com:5432", "DB.example.COM:5432", "10.0.0.5:5432"] {
            assert!(list.get(&allowed.parse().unwrap()).is_some(), "{allowed}");
        }
        for refused in ["db.example.com:5433", "db.example.com.evil:5432", "10.0.0.5:22", "127.0.0.1:5432"] {
            assert!(list.get(&refused.parse().unwrap()).is_none(), "{refused}");
        }
    }
}
