//! The proxy's own TLS listener (`--secure-listen-address`): its certificate, protocol
//! versions and cipher suites, named as the Go original names them.
//!
//! Accepting connections and serving them is the proxy module's job; this file only builds
//! the [`ServerConfig`].

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use log::{info, warn};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::{ring::cipher_suite as suite, CryptoProvider};
use rustls::version::{TLS12, TLS13};
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ca::{CA_LIFETIME, ORGANIZATION};
use super::{parse_host, provider, random_serial, Host, TlsError, ALPN_HTTP11, BACKDATE};
use crate::config::ListenerTls;

/// The `--tls-min-version` values we accept, in Go's spelling.
pub const SUPPORTED_MIN_VERSIONS: &[&str] = &["VersionTLS12", "VersionTLS13"];

/// The `--tls-cipher-suites` names we accept, in Go's spelling: every AEAD suite rustls offers.
///
/// Go's shorter `…_CHACHA20_POLY1305` spellings of the two TLS 1.2 ChaCha20 suites are
/// accepted too. CBC, RSA key exchange, 3DES and RC4 suites are not offered by rustls at all.
pub const SUPPORTED_CIPHER_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// Where Linux keeps the machine's host name; read to add it to a generated certificate.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The lowest TLS version the listener accepts (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Parses a Go-style `--tls-min-version` value: `VersionTLS12` or `VersionTLS13`.
///
/// Fails with [`TlsError::UnsupportedTlsVersion`] for anything else, including `VersionTLS10`
/// and `VersionTLS11`, which rustls does not implement.
pub fn parse_min_version(value: &str) -> Result<MinTlsVersion, TlsError> {
    match value {
        "VersionTLS12" => Ok(MinTlsVersion::Tls12),
        "VersionTLS13" => Ok(MinTlsVersion::Tls13),
        _ => Err(TlsError::UnsupportedTlsVersion {
            value: value.to_owned(),
        }),
    }
}

/// The listener's server configuration and where its certificate came from.
#[derive(Debug, Clone)]
pub struct ListenerTlsConfig {
    /// Ready for `futures_rustls::TlsAcceptor::from`.
    pub server_config: Arc<ServerConfig>,
    /// True when no certificate was configured and a self-signed one was generated.
    pub generated: bool,
    /// The end-entity certificate presented, e.g. to pin a generated one in a client.
    pub certificate: CertificateDer<'static>,
}

/// Builds the listener's server configuration from `tls`.
///
/// The certificate comes from `tls.cert_and_key` (a PEM file with the leaf first, then any
/// chain; a PEM key in PKCS#8, SEC1 or PKCS#1 form) or, when that is `None`, is generated
/// self-signed at `now` for `localhost`, `127.0.0.1`, `::1` and the machine's host name,
/// valid for the same period as the interception CA.
///
/// Versions: TLS 1.3 only with `tls13_only`, else TLS 1.2 and 1.3. Cipher suites follow Go's
/// `CipherSuites`, so a configuration carried over behaves the same:
/// - an empty list keeps rustls's defaults;
/// - TLS 1.2 names restrict TLS 1.2 to those suites, in the given order;
/// - TLS 1.3 names restrict TLS 1.3 to those suites; when none is named, all TLS 1.3 suites
///   stay enabled (Go cannot restrict TLS 1.3 at all);
/// - a non-empty list with no TLS 1.2 name leaves TLS 1.2 nothing to negotiate, so TLS 1.2 is
///   turned off rather than left to fail every handshake;
/// - with `tls13_only`, TLS 1.2 names are accepted but have no effect, as in Go; a warning
///   says so.
///
/// ALPN offers `http/1.1` only.
///
/// Fails naming the file when a certificate or key file is missing, unreadable, malformed or
/// empty, or the key does not match the certificate; naming the suite when a cipher suite is
/// unknown or not offered by rustls.
pub fn listener_server_config(
    tls: &ListenerTls,
    now: SystemTime,
) -> Result<ListenerTlsConfig, TlsError> {
    let suites = select_cipher_suites(&tls.cipher_suites)?;
    let has_tls12 = suites.iter().any(|s| s.version() == &TLS12);
    let versions: &[&'static SupportedProtocolVersion] = if tls.tls13_only || !has_tls12 {
        &[&TLS13]
    } else {
        &[&TLS13, &TLS12]
    };
    if tls.tls13_only && !tls.cipher_suites.is_empty() && has_tls12 {
        let ignored: Vec<&str> = suites
            .iter()
            .filter(|s| s.version() == &TLS12)
            .filter_map(|s| s.suite().as_str())
            .collect();
        warn!(
            "tls 1.2 cipher suites have no effect with tls 1.3 only suites={}",
            ignored.join(",")
        );
    }

    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..(*provider()).clone()
    });
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(TlsError::Rustls)?
        .with_no_client_auth();

    let (mut server_config, certificate, generated) = match &tls.cert_and_key {
        Some((cert_path, key_path)) => {
            let chain = read_cert_chain(cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| {
                TlsError::ReadListenerKey {
                    path: key_path.clone(),
                    source,
                }
            })?;
            let certificate = chain[0].clone();
            let config = builder.with_single_cert(chain, key).map_err(|source| {
                TlsError::UseListenerCert {
                    cert: cert_path.clone(),
                    key: key_path.clone(),
                    source,
                }
            })?;
            (config, certificate, false)
        }
        None => {
            let (certificate, key) = generate_self_signed(now)?;
            let config = builder
                .with_single_cert(vec![certificate.clone()], key)
                .map_err(TlsError::Rustls)?;
            info!("generated self-signed listener certificate");
            (config, certificate, true)
        }
    };
    server_config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];

    Ok(ListenerTlsConfig {
        server_config: Arc::new(server_config),
        generated,
        certificate,
    })
}

/// The suite for a Go cipher suite name, if rustls offers it.
fn lookup_cipher_suite(name: &str) -> Option<SupportedCipherSuite> {
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => suite::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => suite::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => suite::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// The suites to enable for `names`, per the rules on [`listener_server_config`]: TLS 1.3
/// suites first, then TLS 1.2 ones, each group without duplicates.
fn select_cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let defaults = provider().cipher_suites.clone();
    let names: Vec<&str> = names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(defaults);
    }

    let mut tls13 = Vec::new();
    let mut tls12 = Vec::new();
    for name in names {
        let Some(found) = lookup_cipher_suite(name) else {
            return Err(TlsError::UnsupportedCipherSuite {
                name: name.to_owned(),
                supported: SUPPORTED_CIPHER_SUITES.to_vec(),
            });
        };
        let group = match found.version().version {
            ProtocolVersion::TLSv1_3 => &mut tls13,
            _ => &mut tls12,
        };
        if !group
            .iter()
            .any(|s: &SupportedCipherSuite| s.suite() == found.suite())
        {
            group.push(found);
        }
    }
    if tls13.is_empty() {
        tls13 = defaults
            .into_iter()
            .filter(|s| s.version() == &TLS13)
            .collect();
    }
    tls13.extend(tls12);
    Ok(tls13)
}

/// Reads a PEM certificate chain, leaf first; fails if the file holds no certificate.
fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |source| TlsError::ReadListenerCert {
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(err)?;
    if chain.is_empty() {
        return Err(err(pem::Error::NoItemsFound));
    }
    Ok(chain)
}

/// A self-signed ECDSA P-256 server certificate for the local names, and its key.
fn generate_self_signed(
    now: SystemTime,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(TlsError::GenerateListenerCert)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, ORGANIZATION);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.subject_alt_names = local_names()
        .into_iter()
        .map(|host| match host {
            Host::Ip(ip) => Ok(SanType::IpAddress(ip)),
            Host::Dns(dns) => dns
                .as_ref()
                .try_into()
                .map(SanType::DnsName)
                .map_err(TlsError::GenerateListenerCert),
        })
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial()?);
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = (now + CA_LIFETIME).into();

    let cert = params
        .self_signed(&key)
        .map_err(TlsError::GenerateListenerCert)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}

/// `localhost`, `127.0.0.1`, `::1`, and the host name when Linux tells us a valid one.
fn local_names() -> Vec<Host> {
    let mut names = vec![
        Host::Dns(rustls_pki_types::DnsName::try_from("localhost").expect("valid literal")),
        Host::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
        Host::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    let hostname = std::fs::read_to_string(HOSTNAME_FILE).unwrap_or_default();
    if let Ok(host) = parse_host(hostname.trim()) {
        if !names.contains(&host) {
            names.push(host);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn suite_names(suites: &[SupportedCipherSuite]) -> Vec<&'static str> {
        suites.iter().map(|s| s.suite().as_str().unwrap()).collect()
    }

    #[test]
    fn min_versions_parse_in_go_spelling() {
        assert_eq!(
            parse_min_version("VersionTLS12").unwrap(),
            MinTlsVersion::Tls12
        );
        assert_eq!(
            parse_min_version("VersionTLS13").unwrap(),
            MinTlsVersion::Tls13
        );
        for bad in ["VersionTLS10", "VersionTLS11", "tls12", ""] {
            let err = parse_min_version(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "unsupported tls version {bad:?}: supported are VersionTLS12, VersionTLS13"
                )
            );
        }
    }

    #[test]
    fn every_supported_name_maps_to_a_suite_with_that_name() {
        for name in SUPPORTED_CIPHER_SUITES {
            let found = lookup_cipher_suite(name).unwrap();
            // rustls names TLS 1.3 suites TLS13_…; Go names them TLS_….
            let rustls_name = found.suite().as_str().unwrap().replace("TLS13_", "TLS_");
            assert_eq!(&rustls_name, name);
        }
        assert_eq!(
            lookup_cipher_suite("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305")
                .unwrap()
                .suite(),
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256.suite()
        );
        assert_eq!(
            lookup_cipher_suite("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305")
                .unwrap()
                .suite(),
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256.suite()
        );
    }

    #[test]
    fn unsupported_suites_are_named_with_the_supported_list() {
        for bad in [
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
            "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
            "tls_aes_128_gcm_sha256",
            "NOPE",
        ] {
            let err = select_cipher_suites(&names(&["TLS_AES_128_GCM_SHA256", bad])).unwrap_err();
            let TlsError::UnsupportedCipherSuite { name, supported } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(name, bad);
            assert_eq!(supported.len(), 9);
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "unsupported tls cipher suite {bad:?}: supported are TLS_AES_128_GCM_SHA256, "
                )),
                "{text}"
            );
            assert!(
                text.ends_with("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
                "{text}"
            );
        }
    }

    #[test]
    fn empty_list_keeps_the_defaults() {
        let selected = select_cipher_suites(&names(&[" ", ""])).unwrap();
        assert_eq!(selected.len(), provider().cipher_suites.len());
    }

    #[test]
    fn tls12_names_restrict_tls12_and_keep_all_of_tls13() {
        let selected = select_cipher_suites(&names(&[
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            " TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305 ",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ]))
        .unwrap();
        let got = suite_names(&selected);
        assert_eq!(got.iter().filter(|n| n.starts_with("TLS13_")).count(), 3);
        assert_eq!(
            got.iter()
                .filter(|n| !n.starts_with("TLS13_"))
                .collect::<Vec<_>>(),
            [
                &"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                &"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
    }

    #[test]
    fn tls13_names_restrict_tls13_and_drop_tls12() {
        let selected = select_cipher_suites(&names(&["TLS_CHACHA20_POLY1305_SHA256"])).unwrap();
        assert_eq!(suite_names(&selected), ["TLS13_CHACHA20_POLY1305_SHA256"]);
    }

    #[test]
    fn generated_certificate_covers_the_local_names() {
        let names = local_names();
        assert!(names.contains(&Host::Ip("127.0.0.1".parse().unwrap())));
        assert!(names.contains(&Host::Ip("::1".parse().unwrap())));
        assert!(names.contains(&parse_host("localhost").unwrap()));
        let (cert, _key) = generate_self_signed(SystemTime::now()).unwrap();
        assert!(!cert.is_empty());
    }

    #[test]
    fn missing_files_are_named() {
        let tls = ListenerTls {
            cert_and_key: Some(("/nonexistent/c.pem".into(), "/nonexistent/k.pem".into())),
            ..ListenerTls::default()
        };
        let err = listener_server_config(&tls, SystemTime::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "read listener certificate /nonexistent/c.pem"
        );
        let source = std::error::Error::source(&err).unwrap();
        assert!(
            source.downcast_ref::<std::io::Error>().is_some(),
            "{source:?}"
        );
    }
}
