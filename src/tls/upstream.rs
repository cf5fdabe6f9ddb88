//! Client-side TLS towards upstream targets: which roots we trust and how certificates are
//! verified, including the `--insecure-skip-tls-verify` escape hatch.
//!
//! Dialing, SNI per connection and connection reuse belong to the upstream module; it passes
//! [`super::server_name`] to `futures_rustls::TlsConnector::connect`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, info, warn};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::CertificateDer;

use super::{provider, TlsError, ALPN_HTTP11};
use crate::config::UpstreamTls;

/// Environment variable naming a PEM bundle to use instead of the system one, as OpenSSL and
/// Go honour it.
pub const SSL_CERT_FILE_ENV: &str = "SSL_CERT_FILE";

/// Where distributions keep their PEM bundle of trusted roots; the first that exists is used.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    // Debian, Ubuntu
    "/etc/ssl/certs/ca-certificates.crt",
    // Alpine
    "/etc/ssl/cert.pem",
    // RHEL, Fedora
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// The client configuration for upstream connections and how many roots it trusts.
#[derive(Debug, Clone)]
pub struct UpstreamTlsConfig {
    /// Ready for `futures_rustls::TlsConnector::from`.
    pub client_config: Arc<ClientConfig>,
    /// Roots loaded from all sources. Zero means every verified connection will fail; the
    /// caller should warn (unless `insecure`).
    pub root_count: usize,
    /// Whether certificates are accepted unverified (`--insecure-skip-tls-verify`).
    pub insecure: bool,
}

/// Builds the client configuration for connections to upstream targets.
///
/// Trusted roots are, together:
/// - the system bundle: the file named by `SSL_CERT_FILE` if set, else the first existing of
///   [`SYSTEM_CA_BUNDLES`]; certificates in it that do not parse are skipped;
/// - the in-cluster CA at `apiserver_ca`, if that file exists (in-cluster service
///   certificates are often signed by it);
/// - every file in `tls.extra_ca_files`, each of which must hold at least one valid
///   certificate.
///
/// With `tls.insecure_skip_verify`, any certificate is accepted (see
/// [`danger::AcceptAnyServerCert`]); the roots are still loaded so that a bad file is
/// reported the same way. ALPN offers `http/1.1` only.
///
/// Finding no roots at all is not an error; see [`UpstreamTlsConfig::root_count`]. Fails with
/// [`TlsError::ReadCaFile`] or [`TlsError::UseCaCert`] naming the file when `apiserver_ca`
/// (existing) or an extra CA file cannot be read or used.
pub fn upstream_client_config(
    tls: &UpstreamTls,
    apiserver_ca: Option<&Path>,
) -> Result<UpstreamTlsConfig, TlsError> {
    build_client_config(tls, apiserver_ca, system_bundle().as_deref())
}

/// Checks the files that [`upstream_client_config`] must be able to use (the API server CA,
/// when it exists, and every extra CA file) without loading the system bundle, which takes a
/// few milliseconds and cannot fail in a way that stops the proxy. Lets start-up report a bad
/// file at once and leave the full configuration to a background thread.
pub fn check_upstream_ca_files(
    tls: &UpstreamTls,
    apiserver_ca: Option<&Path>,
) -> Result<(), TlsError> {
    build_client_config(tls, apiserver_ca, None).map(|_| ())
}

/// The system bundle to load: `SSL_CERT_FILE`, or the first existing well-known path.
fn system_bundle() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(SSL_CERT_FILE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

fn build_client_config(
    tls: &UpstreamTls,
    apiserver_ca: Option<&Path>,
    system_bundle: Option<&Path>,
) -> Result<UpstreamTlsConfig, TlsError> {
    let mut roots = RootCertStore::empty();

    let system = match system_bundle {
        Some(path) => add_system_bundle(&mut roots, path),
        None => 0,
    };
    let in_cluster = match apiserver_ca {
        Some(path) if path.exists() => add_ca_file(&mut roots, path)?,
        _ => 0,
    };
    let mut extra = 0;
    for path in &tls.extra_ca_files {
        extra += add_ca_file(&mut roots, path)?;
    }
    info!(
        "upstream tls roots loaded roots={} system={} system_file={} apiserver_ca={} extra={}",
        roots.len(),
        system,
        system_bundle.map_or("none".into(), |p| p.display().to_string()),
        in_cluster,
        extra
    );
    let root_count = roots.len();

    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let mut client_config = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyServerCert::new(&provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    client_config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];

    Ok(UpstreamTlsConfig {
        client_config: Arc::new(client_config),
        root_count,
        insecure: tls.insecure_skip_verify,
    })
}

/// Adds what it can from the system bundle at `path` and returns how many roots it added.
///
/// A distribution bundle may carry certificates webpki cannot use; losing one of them is
/// better than refusing to start, so they are skipped.
fn add_system_bundle(roots: &mut RootCertStore, path: &Path) -> usize {
    let iter = match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter,
        Err(e) => {
            warn!(
                "system ca bundle unreadable, continuing without it path={} error={}",
                path.display(),
                e
            );
            return 0;
        }
    };
    let mut certs = Vec::new();
    for item in iter {
        match item {
            Ok(cert) => certs.push(cert),
            // A read error would repeat on every further call; stop with what we have.
            Err(pem::Error::Io(e)) => {
                warn!(
                    "system ca bundle read failed, using the part read path={} error={}",
                    path.display(),
                    e
                );
                break;
            }
            Err(e) => debug!(
                "skipping malformed pem block in system ca bundle path={} error={}",
                path.display(),
                e
            ),
        }
    }
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        debug!(
            "skipped unusable certificates in system ca bundle path={} skipped={}",
            path.display(),
            ignored
        );
    }
    added
}

/// Adds every certificate in the PEM file at `path`, strictly: any failure is an error.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, TlsError> {
    let read_err = |source| TlsError::ReadCaFile {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(read_err(pem::Error::NoItemsFound));
    }
    let count = certs.len();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::UseCaCert {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(count)
}

/// Verification that is deliberately not verification. Only for `--insecure-skip-tls-verify`.
pub mod danger {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{
        verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
    };
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    /// Accepts any server certificate for any name, trusted or not, expired or not.
    ///
    /// This removes all protection against an attacker on the path: whoever answers gets the
    /// request and the token in it. It still checks that the server holds the key of the
    /// certificate it sent (the handshake signature), with the provider's algorithms.
    pub struct AcceptAnyServerCert {
        algorithms: WebPkiSupportedAlgorithms,
    }

    impl AcceptAnyServerCert {
        /// A verifier checking handshake signatures with `provider`'s algorithms.
        pub fn new(provider: &CryptoProvider) -> Self {
            AcceptAnyServerCert {
                algorithms: provider.signature_verification_algorithms,
            }
        }
    }

    impl std::fmt::Debug for AcceptAnyServerCert {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("AcceptAnyServerCert")
        }
    }

    impl ServerCertVerifier for AcceptAnyServerCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::tls::CertAuthority;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kap-upstream-{tag}-{}-{}",
            std::process::id(),
            crate::tls::hex(&rand8())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn rand8() -> [u8; 8] {
        let mut b = [0u8; 8];
        crate::tls::fill_random(&mut b).unwrap();
        b
    }

    #[test]
    fn bundles_add_their_certificates() {
        let dir = temp_dir("bundle");
        let a = CertAuthority::generate(SystemTime::now()).unwrap();
        let b = CertAuthority::generate(SystemTime::now()).unwrap();
        let bundle = dir.join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", a.cert_pem(), b.cert_pem())).unwrap();

        let mut roots = RootCertStore::empty();
        assert_eq!(add_ca_file(&mut roots, &bundle).unwrap(), 2);
        assert_eq!(add_system_bundle(&mut roots, &bundle), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn system_bundle_skips_what_it_cannot_use() {
        let dir = temp_dir("skip");
        let a = CertAuthority::generate(SystemTime::now()).unwrap();
        let bundle = dir.join("bundle.pem");
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let bad_b64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        std::fs::write(&bundle, format!("{junk}{bad_b64}{}", a.cert_pem())).unwrap();

        let mut roots = RootCertStore::empty();
        assert_eq!(add_system_bundle(&mut roots, &bundle), 1);
        assert_eq!(add_system_bundle(&mut roots, &dir.join("missing.pem")), 0);
        // The same file as an extra CA file is refused.
        let err = add_ca_file(&mut roots, &bundle).unwrap_err();
        assert!(
            err.to_string().contains(&*bundle.to_string_lossy()),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn extra_ca_files_must_hold_a_certificate() {
        let dir = temp_dir("extra");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let tls = UpstreamTls {
            extra_ca_files: vec![empty.clone()],
            insecure_skip_verify: false,
        };
        let err = build_client_config(&tls, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no certificate found in ca file {}", empty.display())
        );

        let missing = dir.join("missing.pem");
        let tls = UpstreamTls {
            extra_ca_files: vec![missing.clone()],
            insecure_skip_verify: false,
        };
        let err = build_client_config(&tls, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("read ca file {}", missing.display())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn roots_are_counted_from_every_source() {
        let dir = temp_dir("count");
        let write = |name: &str| {
            let ca = CertAuthority::generate(SystemTime::now()).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, ca.cert_pem()).unwrap();
            path
        };
        let system = write("system.pem");
        let cluster = write("cluster.pem");
        let extra = write("extra.pem");

        let tls = UpstreamTls {
            extra_ca_files: vec![extra],
            insecure_skip_verify: false,
        };
        let built = build_client_config(&tls, Some(&cluster), Some(&system)).unwrap();
        assert_eq!(built.root_count, 3);
        assert!(!built.insecure);
        assert_eq!(
            built.client_config.alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );

        // A missing in-cluster CA is simply absent; no roots at all is not an error.
        let none =
            build_client_config(&UpstreamTls::default(), Some(&dir.join("absent.crt")), None)
                .unwrap();
        assert_eq!(none.root_count, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
