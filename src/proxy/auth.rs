//! `--proxy-credentials-file`: who may use the proxy. Every request that reaches the proxy
//! directly (absolute-form or CONNECT) must carry `Proxy-Authorization: Basic …` with the
//! configured `user:password`; requests inside an authenticated tunnel need nothing more.

use std::fmt;

use crate::http1::Header;

/// The expected `user:password`. `Debug` shows the user name only.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    expected: Vec<u8>,
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self
            .expected
            .split(|&b| b == b':')
            .next()
            .unwrap_or_default();
        write!(
            f,
            "ProxyCredentials(user={:?}, password=<redacted>)",
            String::from_utf8_lossy(user)
        )
    }
}

impl ProxyCredentials {
    /// Parses the file content: one `user:password` line; surrounding whitespace is ignored.
    pub fn parse(content: &str) -> Result<ProxyCredentials, &'static str> {
        let line = content.trim();
        if line.contains('\n') {
            return Err("expected a single line user:password");
        }
        match line.split_once(':') {
            Some(("", _)) => Err("the user name before ':' is empty"),
            Some(_) => Ok(ProxyCredentials {
                expected: line.as_bytes().to_vec(),
            }),
            None => Err("expected user:password"),
        }
    }

    /// Whether `headers` carry the right `Proxy-Authorization`. Compares in constant time, so
    /// the time taken says nothing about how much of a guess was right.
    pub fn accepts(&self, headers: &[Header]) -> bool {
        headers
            .iter()
            .filter(|h| h.is("proxy-authorization"))
            .any(|h| {
                let value = h.value.trim_ascii();
                let Some(scheme_end) = value.iter().position(|&b| b == b' ') else {
                    return false;
                };
                let (scheme, encoded) = value.split_at(scheme_end);
                if !scheme.eq_ignore_ascii_case(b"basic") {
                    return false;
                }
                let decoded = std::str::from_utf8(encoded.trim_ascii())
                    .ok()
                    .and_then(crate::base64::decode);
                match decoded {
                    Some(given) => constant_time_eq(&given, &self.expected),
                    None => false,
                }
            })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> Vec<Header> {
        vec![Header::new("Proxy-Authorization", value)]
    }

    #[test]
    fn only_the_right_basic_credentials_are_accepted() {
        let creds = ProxyCredentials::parse("prometheus:s3cret\n").unwrap();
        // base64("prometheus:s3cret")
        assert!(creds.accepts(&with("Basic cHJvbWV0aGV1czpzM2NyZXQ=")));
        assert!(creds.accepts(&with("basic   cHJvbWV0aGV1czpzM2NyZXQ=  ")));
        assert!(!creds.accepts(&with("Basic cHJvbWV0aGV1czpzM2NyZXU=")));
        assert!(!creds.accepts(&with("Bearer cHJvbWV0aGV1czpzM2NyZXQ=")));
        assert!(!creds.accepts(&with("Basic")));
        assert!(!creds.accepts(&[]));
    }

    #[test]
    fn credential_files_must_hold_user_and_password() {
        assert!(ProxyCredentials::parse("u:").is_ok());
        assert!(ProxyCredentials::parse("nocolon").is_err());
        assert!(ProxyCredentials::parse(":p").is_err());
        assert!(ProxyCredentials::parse("a:b\nc:d").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let creds = ProxyCredentials::parse("prometheus:s3cret").unwrap();
        let shown = format!("{creds:?}");
        assert!(
            shown.contains("prometheus") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
