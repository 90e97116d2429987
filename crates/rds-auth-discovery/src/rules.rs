//! Tag rules: which databases a user sees, decided by their RDS tags.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

use crate::DiscoveryError;

/// Allow and block rules over a database's tags.
///
/// Each rule is `key=value` or `key`. The value is exact or a glob (`prod*`, `{dev,test}`,
/// `eu-?`); a bare `key` asks only that the tag be present, whatever its value. Keys are
/// exact and everything is case-sensitive, as RDS tags are.
///
/// A database matches when every allow rule matches one of its tags and no block rule
/// matches any; empty rules match every database.
#[derive(Clone, Debug)]
pub struct TagRules {
    allow: Vec<TagRule>,
    block: Vec<TagRule>,
}

#[derive(Clone, Debug)]
struct TagRule {
    text: String,
    key: String,
    /// `None` for a key-only rule.
    value: Option<GlobMatcher>,
}

impl TagRules {
    /// Parses allow and block rules, failing on the first that is not valid.
    pub fn parse(allow: &[String], block: &[String]) -> Result<TagRules, DiscoveryError> {
        let parse_all =
            |rules: &[String]| rules.iter().map(|rule| TagRule::parse(rule)).collect::<Result<Vec<_>, _>>();
        Ok(TagRules { allow: parse_all(allow)?, block: parse_all(block)? })
    }

    /// Whether a database with these tags passes the rules.
    pub fn matches(&self, tags: &[(String, String)]) -> bool {
        self.allow.iter().all(|rule| rule.matches(tags)) && !self.block.iter().any(|rule| rule.matches(tags))
    }

    /// True when there is no rule at all, so every database matches.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.block.is_empty()
    }
}

impl fmt::Display for TagRules {
    /// `allow env=prod*, team; block tier=scratch`, or `no rules`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no rules");
        }
        let join =
            |rules: &[TagRule]| rules.iter().map(|rule| rule.text.as_str()).collect::<Vec<_>>().join(", ");
        match (self.allow.is_empty(), self.block.is_empty()) {
            (false, true) => write!(f, "allow {}", join(&self.allow)),
            (true, false) => write!(f, "block {}", join(&self.block)),
            _ => write!(f, "allow {}; block {}", join(&self.allow), join(&self.block)),
        }
    }
}

impl TagRule {
    fn parse(text: &str) -> Result<TagRule, DiscoveryError> {
        let invalid = |reason: String| DiscoveryError::TagRule { rule: text.to_owned(), reason };
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (text, None),
        };
        if key.is_empty() {
            return Err(invalid("the tag key is empty; write key=value or key".to_owned()));
        }
        let value = match value {
            None => None,
            Some(pattern) => {
                // Tag values are not paths: `*` also matches `/`.
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(false)
                    .backslash_escape(true)
                    .build()
                    .map_err(|error| invalid(format!("bad value pattern: {}", error.kind())))?;
                Some(glob.compile_matcher())
            }
        };
        Ok(TagRule { text: text.to_owned(), key: key.to_owned(), value })
    }

    fn matches(&self, tags: &[(String, String)]) -> bool {
        tags.iter().any(|(key, value)| {
            *key == self.key && self.value.as_ref().is_none_or(|pattern| pattern.is_match(value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], block: &[&str]) -> TagRules {
        let owned = |rules: &[&str]| rules.iter().map(|rule| (*rule).to_owned()).collect::<Vec<_>>();
        TagRules::parse(&owned(allow), &owned(block)).unwrap()
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn empty_rules_match_everything() {
        let rules = rules(&[], &[]);
        assert!(rules.is_empty());
        assert!(rules.matches(&[]));
        assert!(rules.matches(&tags(&[("env", "prod")])));
        assert_eq!(rules.to_string(), "no rules");
    }

    #[test]
    fn exact_values() {
        let rules = rules(&["env=prod"], &[]);
        assert!(!rules.is_empty());
        assert!(rules.matches(&tags(&[("team", "a"), ("env", "prod")])));
        assert!(!rules.matches(&tags(&[("env", "production")])));
        assert!(!rules.matches(&tags(&[("env", "Prod")])), "values are case-sensitive");
        assert!(!rules.matches(&tags(&[("Env", "prod")])), "keys are case-sensitive");
        assert!(!rules.matches(&tags(&[("prod", "env")])));
        assert!(!rules.matches(&[]));
    }

    #[test]
    fn glob_values() {
        let rules = rules(&["env=prod*"], &[]);
        assert!(rules.matches(&tags(&[("env", "prod")])));
        assert!(rules.matches(&tags(&[("env", "production")])));
        assert!(rules.matches(&tags(&[("env", "prod/eu")])), "* crosses slashes in tag values");
        assert!(!rules.matches(&tags(&[("env", "preprod")])));

        let rules =
            super::TagRules::parse(&["tier={gold,silver}".to_owned(), "zone=eu-?".to_owned()], &[]).unwrap();
        assert!(rules.matches(&tags(&[("tier", "silver"), ("zone", "eu-1")])));
        assert!(!rules.matches(&tags(&[("tier", "bronze"), ("zone", "eu-1")])));
        assert!(!rules.matches(&tags(&[("tier", "gold"), ("zone", "eu-12")])));
    }

    #[test]
    fn key_only_rules_ask_for_presence() {
        let rules = rules(&["team"], &[]);
        assert!(rules.matches(&tags(&[("team", "")])));
        assert!(rules.matches(&tags(&[("team", "payments")])));
        assert!(!rules.matches(&tags(&[("teams", "payments")])));
    }

    #[test]
    fn empty_value_is_exact() {
        let rules = rules(&["team="], &[]);
        assert!(rules.matches(&tags(&[("team", "")])));
        assert!(!rules.matches(&tags(&[("team", "payments")])));
    }

    #[test]
    fn value_may_contain_equals() {
        let rules = rules(&["expr=a=b"], &[]);
        assert!(rules.matches(&tags(&[("expr", "a=b")])));
        assert!(!rules.matches(&tags(&[("expr", "a")])));
    }

    #[test]
    fn every_allow_rule_must_match() {
        let rules = rules(&["env=prod", "team"], &[]);
        assert!(rules.matches(&tags(&[("env", "prod"), ("team", "a")])));
        assert!(!rules.matches(&tags(&[("env", "prod")])));
        assert!(!rules.matches(&tags(&[("team", "a")])));
    }

    #[test]
    fn any_block_rule_blocks() {
        let rules = rules(&[], &["tier=scratch", "legacy"]);
        assert!(rules.matches(&tags(&[("env", "prod")])));
        assert!(rules.matches(&[]));
        assert!(!rules.matches(&tags(&[("tier", "scratch")])));
        assert!(!rules.matches(&tags(&[("legacy", "yes"), ("env", "prod")])));
        assert!(rules.matches(&tags(&[("tier", "gold")])));
    }

    #[test]
    fn block_wins_over_allow() {
        let rules = rules(&["env=prod*"], &["env=prod-legacy"]);
        assert!(rules.matches(&tags(&[("env", "prod-eu")])));
        assert!(!rules.matches(&tags(&[("env", "prod-legacy")])));
        assert_eq!(rules.to_string(), "allow env=prod*; block env=prod-legacy");
    }

    #[test]
    fn bad_rules_are_errors() {
        let error = TagRules::parse(&["env=[prod".to_owned()], &[]).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("invalid tag rule \"env=[prod\": bad value pattern"), "{message}");

        let error = TagRules::parse(&[], &["=prod".to_owned()]).unwrap_err();
        assert!(matches!(error, DiscoveryError::TagRule { ref rule, .. } if rule == "=prod"), "{error}");

        let error = TagRules::parse(&[], &[String::new()]).unwrap_err();
        assert!(matches!(error, DiscoveryError::TagRule { .. }), "{error}");
    }
}
