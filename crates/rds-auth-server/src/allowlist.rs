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
    /// Which IAM principals may reach it.
    pub principals: Principals,
}

/// The IAM principals a target admits, as glob patterns over ARNs (`*` matches any run of
/// characters, `/` included). An assumed role is matched by its role ARN
/// (`arn:aws:iam::123456789012:role/Analyst`) and by its full session ARN.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    patterns: Vec<String>,
    set: Option<globset::GlobSet>,
}

impl PartialEq for Principals {
    fn eq(&self, other: &Principals) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for Principals {}

/// A principal pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("invalid principal pattern {pattern:?}: {reason}")]
pub struct PrincipalPatternError {
    pub pattern: String,
    pub reason: String,
}

impl Principals {
    /// Anyone who may reach the server proxy at all.
    pub const ANYONE: Principals = Principals { patterns: Vec::new(), set: None };

    /// Only principals matching one of `patterns`; an empty list admits no one.
    pub fn only(patterns: &[String]) -> Result<Principals, PrincipalPatternError> {
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in patterns {
            let glob = globset::GlobBuilder::new(pattern).literal_separator(false).build().map_err(|e| {
                PrincipalPatternError { pattern: pattern.clone(), reason: e.kind().to_string() }
            })?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| PrincipalPatternError { pattern: patterns.join(", "), reason: e.to_string() })?;
        Ok(Principals { patterns: patterns.to_vec(), set: Some(set) })
    }

    /// Whether a caller proving an identity is needed at all.
    pub fn is_restricted(&self) -> bool {
        self.set.is_some()
    }

    /// Whether a caller is admitted: anyone when unrestricted, otherwise a proven identity
    /// whose principal or ARN matches a pattern.
    pub fn admits(&self, caller: Option<&crate::CallerIdentity>) -> bool {
        match (&self.set, caller) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(set), Some(caller)) => set.is_match(&caller.principal) || set.is_match(&caller.arn),
        }
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
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
        TargetRule {
            endpoint: text.parse().unwrap(),
            modes: AuthModes::IAM_ONLY,
            source: "static".into(),
            principals: Principals::ANYONE,
        }
    }

    fn caller(arn: &str) -> crate::CallerIdentity {
        crate::CallerIdentity {
            arn: arn.into(),
            principal: crate::identity::principal_of(arn),
            account: "123456789012".into(),
            access_key_id: "ASIAEXAMPLE".into(),
        }
    }

    #[test]
    fn principals_match_roles_and_session_arns() {
        let only = Principals::only(&[
            "arn:aws:iam::123456789012:role/Analyst".into(),
            "arn:aws:iam::*:role/dba-*".into(),
            "arn:aws:sts::123456789012:assumed-role/Ops/alice".into(),
        ])
        .unwrap();
        for admitted in [
            "arn:aws:sts::123456789012:assumed-role/Analyst/bob",
            "arn:aws:sts::999999999999:assumed-role/dba-prod/carol",
            "arn:aws:sts::123456789012:assumed-role/Ops/alice",
        ] {
            assert!(only.admits(Some(&caller(admitted))), "{admitted}");
        }
        for refused in [
            "arn:aws:sts::123456789012:assumed-role/Analyst2/bob",
            "arn:aws:sts::123456789012:assumed-role/Ops/mallory",
            "arn:aws:iam::123456789012:user/Analyst",
        ] {
            assert!(!only.admits(Some(&caller(refused))), "{refused}");
        }
        assert!(!only.admits(None), "a restricted target needs a proven identity");
        assert!(Principals::ANYONE.admits(None));
        assert!(!Principals::only(&[]).unwrap().admits(Some(&caller("arn:aws:iam::1:user/x"))));
        assert!(Principals::only(&["arn:[".into()]).is_err());
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
