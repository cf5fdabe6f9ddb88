//! `--allowed-audiences`: which audiences may be requested, and for which destinations.
//!
//! An entry is `AUD` (any destination) or `AUD=PATTERN`, where the pattern is `host`,
//! `host:port` or `*.suffix` (any name below `suffix`, not `suffix` itself). Host names compare
//! case-insensitively; the policy never resolves names, it sees what the client asked for.

use std::fmt;

/// The parsed allowlist. `Any` when the flag is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AudiencePolicy {
    #[default]
    Any,
    Only(Vec<Rule>),
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub audience: String,
    pub destination: Option<HostPattern>,
}

/// Where an audience may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `host`: that host on any port.
    Host(String),
    /// `host:port`.
    HostPort(String, u16),
    /// `*.suffix`, stored with its leading dot: `.suffix`.
    Suffix(String),
}

/// A malformed `--allowed-audiences` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub entry: String,
    pub reason: &'static str,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid entry {:?}: {}", self.entry, self.reason)
    }
}

impl std::error::Error for PolicyError {}

impl AudiencePolicy {
    /// Parses the comma-separated flag value. Empty entries are skipped; an empty list is an
    /// error, since it would refuse every audience and is more likely a templating mistake.
    pub fn parse(list: &str) -> Result<AudiencePolicy, PolicyError> {
        let mut rules = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            rules.push(Rule::parse(entry)?);
        }
        if rules.is_empty() {
            return Err(PolicyError {
                entry: list.to_string(),
                reason: "the list names no audience",
            });
        }
        Ok(AudiencePolicy::Only(rules))
    }

    /// Whether `audience` may be sent to `host:port`.
    pub fn allows(&self, audience: &str, host: &str, port: u16) -> bool {
        match self {
            AudiencePolicy::Any => true,
            AudiencePolicy::Only(rules) => rules
                .iter()
                .any(|r| r.audience == audience && r.matches_destination(host, port)),
        }
    }

    /// Whether any audience is restricted at all (used for the start-up exposure warning).
    pub fn is_restricted(&self) -> bool {
        matches!(self, AudiencePolicy::Only(_))
    }
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule, PolicyError> {
        let err = |reason| PolicyError {
            entry: entry.to_string(),
            reason,
        };
        let (audience, pattern) = match entry.split_once('=') {
            None => (entry, None),
            Some((aud, pat)) => (aud.trim(), Some(pat.trim())),
        };
        if audience.is_empty() {
            return Err(err("the audience is empty"));
        }
        let destination = match pattern {
            None => None,
            Some(p) => Some(HostPattern::parse(p).map_err(err)?),
        };
        Ok(Rule {
            audience: audience.to_string(),
            destination,
        })
    }

    fn matches_destination(&self, host: &str, port: u16) -> bool {
        let Some(pattern) = &self.destination else {
            return true;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match pattern {
            HostPattern::Host(h) => h.eq_ignore_ascii_case(host),
            HostPattern::HostPort(h, p) => *p == port && h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

impl HostPattern {
    fn parse(pattern: &str) -> Result<HostPattern, &'static str> {
        if pattern.is_empty() {
            return Err("the host pattern after '=' is empty");
        }
        if let Some(suffix) = pattern.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains(['*', ':']) {
                return Err("a wildcard pattern is '*.suffix' with no port and one '*'");
            }
            return Ok(HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase())));
        }
        if pattern.contains('*') {
            return Err("'*' may only stand at the start, as '*.suffix'");
        }
        // `[v6]:port`, `[v6]`, a bare IPv6 address, `host:port` or `host`.
        if let Some(rest) = pattern.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or("unclosed '[' in the host")?;
            return match after.strip_prefix(':') {
                Some(port) => Ok(HostPattern::HostPort(host.to_string(), parse_port(port)?)),
                None if after.is_empty() => Ok(HostPattern::Host(host.to_string())),
                None => Err("unexpected text after ']'"),
            };
        }
        match pattern.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => {
                if host.is_empty() {
                    return Err("the host before ':' is empty");
                }
                Ok(HostPattern::HostPort(host.to_string(), parse_port(port)?))
            }
            _ => Ok(HostPattern::Host(pattern.to_string())),
        }
    }
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    port.parse().map_err(|_| "the port is not a number from 0 to 65535")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_allows_everything() {
        assert!(AudiencePolicy::Any.allows("x", "example.com", 80));
    }

    #[test]
    fn plain_audience_allows_any_destination() {
        let p = AudiencePolicy::parse("a, b").unwrap();
        assert!(p.allows("a", "one", 1));
        assert!(p.allows("b", "two", 2));
        assert!(!p.allows("c", "one", 1));
    }

    #[test]
    fn host_and_port_patterns() {
        let p = AudiencePolicy::parse("a=Svc.NS.svc,b=10.0.0.1:8443,c=[fd00::1]:443,d=fd00::2")
            .unwrap();
        assert!(p.allows("a", "svc.ns.svc", 9000));
        assert!(!p.allows("a", "other", 9000));
        assert!(p.allows("b", "10.0.0.1", 8443));
        assert!(!p.allows("b", "10.0.0.1", 443));
        assert!(p.allows("c", "[fd00::1]", 443));
        assert!(p.allows("c", "fd00::1", 443));
        assert!(p.allows("d", "[fd00::2]", 1));
    }

    #[test]
    fn suffix_pattern_matches_names_below_only() {
        let p = AudiencePolicy::parse("a=*.svc.cluster.local").unwrap();
        assert!(p.allows("a", "x.ns.svc.cluster.local", 80));
        assert!(p.allows("a", "X.NS.SVC.CLUSTER.LOCAL", 80));
        assert!(!p.allows("a", "svc.cluster.local", 80));
        assert!(!p.allows("a", "evilsvc.cluster.local.com", 80));
        assert!(!p.allows("a", "xsvc.cluster.local", 80));
    }

    #[test]
    fn same_audience_may_have_several_destinations() {
        let p = AudiencePolicy::parse("a=one,a=two:1").unwrap();
        assert!(p.allows("a", "one", 5));
        assert!(p.allows("a", "two", 1));
        assert!(!p.allows("a", "two", 2));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["", " , ", "=host", "a=", "a=*.", "a=x.*.y", "a=host:port", "a=[::1", "a=:1"] {
            assert!(AudiencePolicy::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = AudiencePolicy::parse("a=host:99999").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid entry \"a=host:99999\": the port is not a number from 0 to 65535"
        );
    }
}
