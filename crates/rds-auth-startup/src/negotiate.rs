use bytes::Bytes;
use rds_auth_codec::backend::BackendMessage;
use rds_auth_codec::{Params, ProtocolVersion};

/// Names starting with this are protocol extensions, never settings (protocol.sgml,
/// "StartupMessage").
pub const PROTOCOL_OPTION_PREFIX: &[u8] = b"_pq_.";

/// The outcome of protocol negotiation for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    /// The version the session runs at.
    pub version: ProtocolVersion,
    /// The NegotiateProtocolVersion to send right after the StartupMessage, if any.
    pub reply: Option<BackendMessage>,
}

/// Settles the protocol version of a session as PostgreSQL does: any 3.x is accepted; a minor
/// above `newest_minor`, or any `_pq_.` option, earns a NegotiateProtocolVersion naming the
/// newest supported minor and every `_pq_.` option, which are all unrecognised. The options
/// are removed from `params`, so they never reach the database.
pub fn negotiate(requested: ProtocolVersion, params: &mut Params, newest_minor: u16) -> Negotiation {
    let mut unrecognized: Vec<Bytes> = Vec::new();
    params.retain(|name, _| {
        if name.starts_with(PROTOCOL_OPTION_PREFIX) {
            unrecognized.push(Bytes::copy_from_slice(name));
            false
        } else {
            true
        }
    });
    let minor = requested.minor.min(newest_minor);
    let version = ProtocolVersion::new(requested.major, minor);
    let reply = (requested.minor > newest_minor || !unrecognized.is_empty())
        .then(|| BackendMessage::NegotiateProtocolVersion { newest_minor: u32::from(minor), unrecognized });
    Negotiation { version, reply }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(names: &[&str]) -> Params {
        let mut p = Params::new();
        for n in names {
            p.push(n.as_bytes().to_vec(), &b"v"[..]).unwrap();
        }
        p
    }

    #[test]
    fn plain_three_zero_needs_nothing() {
        let mut p = params(&["user", "database"]);
        let n = negotiate(ProtocolVersion::V3_0, &mut p, 2);
        assert_eq!(n, Negotiation { version: ProtocolVersion::V3_0, reply: None });
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn grease_is_downgraded_and_options_reported() {
        let mut p = params(&["user", "_pq_.test_protocol_negotiation", "application_name"]);
        let n = negotiate(ProtocolVersion::new(3, 9999), &mut p, 2);
        assert_eq!(n.version, ProtocolVersion::V3_2);
        assert_eq!(
            n.reply,
            Some(BackendMessage::NegotiateProtocolVersion {
                newest_minor: 2,
                unrecognized: vec![Bytes::from_static(b"_pq_.test_protocol_negotiation")],
            })
        );
        assert_eq!(p.names().cloned().collect::<Vec<_>>(), vec!["user", "application_name"]);
    }

    #[test]
    fn three_two_is_accepted_quietly_and_options_at_three_zero_are_reported() {
        let mut p = params(&["user"]);
        assert_eq!(negotiate(ProtocolVersion::V3_2, &mut p, 2).reply, None);
        let mut p = params(&["user", "_pq_.x"]);
        let n = negotiate(ProtocolVersion::V3_0, &mut p, 2);
        assert_eq!(n.version, ProtocolVersion::V3_0);
        assert!(matches!(n.reply, Some(BackendMessage::NegotiateProtocolVersion { newest_minor: 0, .. })));
    }
}
