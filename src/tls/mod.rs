//! TLS for the proxy: the interception CA, the leaf certificates it issues for CONNECT
//! targets, the proxy's own TLS listener and the client configuration used towards upstreams.
//!
//! Everything here builds rustls configurations with the *ring* provider passed explicitly;
//! nothing installs or relies on a process-wide default provider. This module does not accept,
//! dial or copy bytes: the proxy and upstream modules drive the handshakes with the
//! configurations built here.
//!
//! Submodules:
//! - [`ca`]: the CA generated at start-up and the atomic write of its certificate;
//! - [`leaf`]: per-host leaf certificates and their bounded cache;
//! - [`listener`]: the proxy's own TLS listener (certificate, versions, cipher suites);
//! - [`upstream`]: trust roots and verification for connections to targets.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem;
use rustls_pki_types::{DnsName, ServerName};

pub mod ca;
pub mod leaf;
pub mod listener;
pub mod upstream;

pub use ca::{CertAuthority, CA_LIFETIME};
pub use leaf::{Interceptor, LEAF_CACHE_CAPACITY, LEAF_LIFETIME};
pub use listener::{
    listener_server_config, parse_min_version, ListenerTlsConfig, MinTlsVersion,
    SUPPORTED_CIPHER_SUITES, SUPPORTED_MIN_VERSIONS,
};
pub use upstream::{check_upstream_ca_files, danger, upstream_client_config, UpstreamTlsConfig};

/// The only application protocol we speak over TLS, on every side: the proxy handles HTTP/1.1
/// and nothing else, so offering `h2` would break clients that honour it.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// How far back every generated certificate's not-before is set, so that a client whose clock
/// runs a little behind ours still accepts a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The *ring* crypto provider used by every configuration in this crate.
///
/// It is built once and shared; it is never installed as the process default, so a library
/// that looks for a default finds none rather than a surprising one.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The TLS server name to send (SNI) and verify for `host`, as taken from a URL or a CONNECT
/// target without its port.
///
/// IPv4 and IPv6 addresses (the latter with or without brackets) become IP server names, for
/// which rustls sends no SNI and checks an IP SAN; anything else must be a valid DNS name.
/// Fails with [`TlsError::InvalidServerName`] otherwise (empty, spaces, an IPv6 zone, ...).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    match parse_host(host)? {
        Host::Ip(ip) => Ok(ServerName::IpAddress(ip.into())),
        Host::Dns(name) => Ok(ServerName::DnsName(name)),
    }
}

/// A host name sorted into the two kinds a certificate SAN distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    /// Lowercase.
    Dns(DnsName<'static>),
}

/// Sorts `host` into an IP address or a lowercase DNS name (RFC 5280 section 4.2.1.6 keeps the
/// two apart: an address in a DNS SAN matches nothing).
fn parse_host(host: &str) -> Result<Host, TlsError> {
    let invalid = || TlsError::InvalidServerName {
        name: host.to_owned(),
    };
    let unbracketed = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(invalid)?,
        None => host,
    };
    let bracketed = unbracketed.len() != host.len();
    match unbracketed.parse::<IpAddr>() {
        // Brackets are only for IPv6 literals (RFC 3986 section 3.2.2).
        Ok(ip) if bracketed && ip.is_ipv4() => return Err(invalid()),
        Ok(ip) => return Ok(Host::Ip(ip)),
        Err(_) if bracketed => return Err(invalid()),
        Err(_) => {}
    }
    // A fully qualified name's final dot is not part of the name for SNI (RFC 6066 section 3)
    // or for a SAN, so `example.com.` and `example.com` share one leaf.
    let relative = host.strip_suffix('.').unwrap_or(host);
    let lower = relative.to_ascii_lowercase();
    let name = DnsName::try_from(lower).map_err(|_| invalid())?;
    Ok(Host::Dns(name))
}

/// What went wrong while building a TLS configuration or certificate.
#[derive(Debug)]
pub enum TlsError {
    /// The system random source failed while making a serial number or name.
    GenerateRandom,
    /// rcgen could not generate the interception CA (key or self-signature).
    GenerateCa(rcgen::Error),
    /// The CA certificate could not be written to its destination.
    WriteCaFile { path: PathBuf, source: io::Error },
    /// The shared leaf key could not be generated or loaded.
    GenerateLeafKey(rcgen::Error),
    /// A leaf certificate for `name` could not be issued.
    IssueLeaf { name: String, source: rcgen::Error },
    /// The self-signed certificate of the TLS listener could not be generated.
    GenerateListenerCert(rcgen::Error),
    /// The listener certificate file is missing, unreadable, malformed or holds no certificate.
    ReadListenerCert { path: PathBuf, source: pem::Error },
    /// The listener key file is missing, unreadable, malformed or holds no private key.
    ReadListenerKey { path: PathBuf, source: pem::Error },
    /// rustls refused the listener certificate and key together (e.g. they do not match).
    UseListenerCert {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    /// A `--tls-min-version` value we do not support.
    UnsupportedTlsVersion { value: String },
    /// A `--tls-cipher-suites` name we do not support; `supported` lists what we do.
    UnsupportedCipherSuite {
        name: String,
        supported: Vec<&'static str>,
    },
    /// A CA bundle is missing, unreadable, malformed or holds no certificate.
    ReadCaFile { path: PathBuf, source: pem::Error },
    /// A certificate in a CA bundle is not usable as a trust anchor.
    UseCaCert {
        path: PathBuf,
        source: rustls::Error,
    },
    /// `name` is neither an IP address nor a valid DNS name.
    InvalidServerName { name: String },
    /// rustls refused a configuration we built (versions, suites, verifier).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::GenerateRandom => f.write_str("read random bytes from the system"),
            TlsError::GenerateCa(_) => f.write_str("generate interception ca"),
            TlsError::WriteCaFile { path, .. } => {
                write!(f, "write ca certificate to {}", path.display())
            }
            TlsError::GenerateLeafKey(_) => f.write_str("generate leaf certificate key"),
            TlsError::IssueLeaf { name, .. } => write!(f, "issue leaf certificate for {name}"),
            TlsError::GenerateListenerCert(_) => {
                f.write_str("generate self-signed listener certificate")
            }
            TlsError::ReadListenerCert { path, source } => match source {
                pem::Error::NoItemsFound => {
                    write!(f, "no certificate found in {}", path.display())
                }
                _ => write!(f, "read listener certificate {}", path.display()),
            },
            TlsError::ReadListenerKey { path, source } => match source {
                pem::Error::NoItemsFound => {
                    write!(f, "no private key found in {}", path.display())
                }
                _ => write!(f, "read listener private key {}", path.display()),
            },
            TlsError::UseListenerCert { cert, key, .. } => write!(
                f,
                "use listener certificate {} with key {}",
                cert.display(),
                key.display()
            ),
            TlsError::UnsupportedTlsVersion { value } => write!(
                f,
                "unsupported tls version {value:?}: supported are {}",
                listener::SUPPORTED_MIN_VERSIONS.join(", ")
            ),
            TlsError::UnsupportedCipherSuite { name, supported } => write!(
                f,
                "unsupported tls cipher suite {name:?}: supported are {}",
                supported.join(", ")
            ),
            TlsError::ReadCaFile { path, source } => match source {
                pem::Error::NoItemsFound => {
                    write!(f, "no certificate found in ca file {}", path.display())
                }
                _ => write!(f, "read ca file {}", path.display()),
            },
            TlsError::UseCaCert { path, .. } => {
                write!(f, "use certificate from ca file {}", path.display())
            }
            TlsError::InvalidServerName { name } => write!(f, "invalid tls server name {name:?}"),
            TlsError::Rustls(_) => f.write_str("build tls configuration"),
        }
    }
}

impl StdError for TlsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TlsError::GenerateCa(e)
            | TlsError::GenerateLeafKey(e)
            | TlsError::IssueLeaf { source: e, .. }
            | TlsError::GenerateListenerCert(e) => Some(e),
            TlsError::WriteCaFile { source, .. } => Some(source),
            TlsError::ReadListenerCert { source, .. }
            | TlsError::ReadListenerKey { source, .. }
            | TlsError::ReadCaFile { source, .. } => pem_source(source),
            TlsError::UseListenerCert { source, .. }
            | TlsError::UseCaCert { source, .. }
            | TlsError::Rustls(source) => Some(source),
            TlsError::GenerateRandom
            | TlsError::UnsupportedTlsVersion { .. }
            | TlsError::UnsupportedCipherSuite { .. }
            | TlsError::InvalidServerName { .. } => None,
        }
    }
}

/// The cause to chain below a PEM-file error: the I/O error itself rather than the PEM
/// wrapper around it, and nothing for "no items", which our own message already says.
fn pem_source(e: &pem::Error) -> Option<&(dyn StdError + 'static)> {
    match e {
        pem::Error::Io(io) => Some(io),
        pem::Error::NoItemsFound => None,
        other => Some(other),
    }
}

/// Fills `buf` from the provider's secure random source.
fn fill_random(buf: &mut [u8]) -> Result<(), TlsError> {
    provider()
        .secure_random
        .fill(buf)
        .map_err(|_| TlsError::GenerateRandom)
}

/// A positive, non-zero 128-bit serial number (RFC 5280 section 4.1.2.2 allows up to 20
/// octets; random serials keep two certificates from one CA from ever colliding).
fn random_serial() -> Result<rcgen::SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// Lowercase hex, for the random part of the CA name.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_sort_into_ip_and_dns() {
        assert_eq!(
            parse_host("127.0.0.1").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_host("::1").unwrap(), Host::Ip("::1".parse().unwrap()));
        assert_eq!(
            parse_host("[fd00::1]").unwrap(),
            Host::Ip("fd00::1".parse().unwrap())
        );
        let example = Host::Dns(DnsName::try_from("example.com").unwrap().to_owned());
        assert_eq!(parse_host("Example.COM").unwrap(), example);
        assert_eq!(parse_host("example.com.").unwrap(), example);
    }

    #[test]
    fn bad_hosts_are_refused() {
        for bad in [
            "",
            "[example.com]",
            "[::1",
            "::1]",
            "a b",
            "fe80::1%eth0",
            "[1.2.3.4]",
        ] {
            let err = parse_host(bad).unwrap_err();
            assert!(
                matches!(&err, TlsError::InvalidServerName { name } if name == bad),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn server_names_keep_ip_and_dns_apart() {
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("10.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        match server_name("Kubernetes.Default.svc").unwrap() {
            ServerName::DnsName(name) => assert_eq!(name.as_ref(), "kubernetes.default.svc"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            server_name("not a host").unwrap_err().to_string(),
            "invalid tls server name \"not a host\""
        );
    }

    #[test]
    fn serials_are_positive_and_differ() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.to_bytes()[0] < 0x80 && a.to_bytes()[0] > 0);
    }
}
