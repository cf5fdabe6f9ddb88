//! Real TLS handshakes over loopback sockets with the configurations from
//! `kube_audience_proxy::tls`: interception leaves, the CA file, the proxy's own listener and
//! the upstream client.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_std::io::{ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use futures_rustls::pki_types::pem::PemObject;
use futures_rustls::pki_types::CertificateDer;
use futures_rustls::rustls::version::{TLS12, TLS13};
use futures_rustls::rustls::{
    self, ClientConfig, ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use futures_rustls::{TlsAcceptor, TlsConnector};
use kube_audience_proxy::config::{ListenerTls, UpstreamTls};
use kube_audience_proxy::tls::{
    self, listener_server_config, parse_min_version, upstream_client_config, CertAuthority,
    Interceptor, TlsError,
};

/// Upper bound for any one test's network steps; generous, since the machine is shared.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

fn block_on<T>(fut: impl Future<Output = T>) -> T {
    task::block_on(async_std::future::timeout(STEP_TIMEOUT, fut)).expect("test step timed out")
}

/// A fresh, empty directory under the system temp dir, removed by [`TempDir::drop`].
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kap-tls-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What one side saw of a completed handshake.
#[derive(Debug)]
struct Negotiated {
    alpn: Option<Vec<u8>>,
    suite: Option<rustls::CipherSuite>,
    version: Option<ProtocolVersion>,
}

/// Runs one handshake between a server with `server` and a client with `client` sending
/// `name`, then a ping/pong over the session. Returns what each side saw.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (io::Result<Negotiated>, io::Result<Negotiated>) {
    let name = tls::server_name(name).unwrap();
    block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let server_side = task::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut stream = TlsAcceptor::from(server).accept(tcp).await?;
            let conn = stream.get_ref().1;
            let seen = Negotiated {
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
                version: conn.protocol_version(),
            };
            let mut ping = [0u8; 4];
            stream.read_exact(&mut ping).await?;
            assert_eq!(&ping, b"ping");
            stream.write_all(b"pong").await?;
            stream.flush().await?;
            Ok::<_, io::Error>(seen)
        });

        let client_side = async {
            let tcp = TcpStream::connect(addr).await?;
            let mut stream = TlsConnector::from(client).connect(name, tcp).await?;
            let conn = stream.get_ref().1;
            let seen = Negotiated {
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
                version: conn.protocol_version(),
            };
            stream.write_all(b"ping").await?;
            stream.flush().await?;
            let mut pong = [0u8; 4];
            stream.read_exact(&mut pong).await?;
            assert_eq!(&pong, b"pong");
            Ok::<_, io::Error>(seen)
        }
        .await;

        (client_side, server_side.await)
    })
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting exactly the certificates in the PEM file at `ca_file`.
fn client_trusting_file(
    ca_file: &Path,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    client_trusting(roots, versions)
}

fn client_trusting(
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client restricted to one TLS 1.2 suite and trusting `roots`.
fn tls12_client_with_suite(
    roots: RootCertStore,
    suite: rustls::SupportedCipherSuite,
) -> Arc<ClientConfig> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..rustls::crypto::ring::default_provider()
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A test CA and a server certificate it signed for `localhost` and `127.0.0.1`, written as
/// PEM files (chain = leaf then CA; key PKCS#8). Returns (ca file, cert file, key file).
fn write_server_cert(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test fixture ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let ca_file = dir.join("fixture-ca.pem");
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server.key");
    fs::write(&ca_file, ca_cert.pem()).unwrap();
    fs::write(&cert_file, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    (ca_file, cert_file, key_file)
}

fn roots_from(cert: &CertificateDer<'static>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    roots
}

// === interception leaves and the CA file ===

#[test]
fn client_trusting_only_the_ca_file_accepts_intercepted_leaves() {
    init_logging();
    let dir = TempDir::new("leaf");
    let now = SystemTime::now();
    let interceptor = Interceptor::new(CertAuthority::generate(now).unwrap()).unwrap();
    let ca_file = dir.join("ca.crt");
    interceptor.ca().write_cert_file(&ca_file).unwrap();

    for name in ["localhost", "127.0.0.1"] {
        let server = interceptor.server_config_for(name, now).unwrap();
        let client = client_trusting_file(&ca_file, &[&TLS13, &TLS12]);
        let (client_seen, server_seen) = handshake(server, client, name);
        let client_seen = client_seen.unwrap_or_else(|e| panic!("{name}: {e}"));
        let server_seen = server_seen.unwrap();
        assert_eq!(client_seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(server_seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    }
    assert_eq!(interceptor.leaves_issued(), 2);
    assert_eq!(interceptor.leaves_cached(), 2);
}

#[test]
fn intercepted_leaf_for_one_name_is_refused_for_another() {
    init_logging();
    let dir = TempDir::new("othername");
    let now = SystemTime::now();
    let interceptor = Interceptor::new(CertAuthority::generate(now).unwrap()).unwrap();
    let ca_file = dir.join("ca.crt");
    interceptor.ca().write_cert_file(&ca_file).unwrap();

    let server = interceptor.server_config_for("localhost", now).unwrap();
    let client = client_trusting_file(&ca_file, &[&TLS13, &TLS12]);
    let (client_seen, server_seen) = handshake(server, client, "other.example");
    let err = client_seen.unwrap_err();
    assert!(
        err.to_string().contains("not valid for name"),
        "unexpected client error: {err}"
    );
    server_seen.unwrap_err();
}

#[test]
fn leaf_of_another_ca_is_refused() {
    init_logging();
    let dir = TempDir::new("otherca");
    let now = SystemTime::now();
    let trusted = CertAuthority::generate(now).unwrap();
    let ca_file = dir.join("ca.crt");
    trusted.write_cert_file(&ca_file).unwrap();
    let other = Interceptor::new(CertAuthority::generate(now).unwrap()).unwrap();

    let server = other.server_config_for("localhost", now).unwrap();
    let client = client_trusting_file(&ca_file, &[&TLS13, &TLS12]);
    let (client_seen, _) = handshake(server, client, "localhost");
    client_seen.unwrap_err();
}

#[test]
fn ca_file_is_replaced_atomically_with_mode_0644() {
    init_logging();
    let dir = TempDir::new("cafile");
    let path = dir.join("ca.crt");
    let first = CertAuthority::generate(SystemTime::now()).unwrap();
    first.write_cert_file(&path).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert_eq!(fs::read_to_string(&path).unwrap(), first.cert_pem());
    assert_eq!(dir.entries(), ["ca.crt"]);

    // A read-only file left by an earlier version must not stop a restart.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    let second = CertAuthority::generate(SystemTime::now()).unwrap();
    second.write_cert_file(&path).unwrap();
    let contents = fs::read_to_string(&path).unwrap();
    assert_eq!(contents, second.cert_pem());
    assert_ne!(contents, first.cert_pem());
    assert_eq!(contents.matches("BEGIN CERTIFICATE").count(), 1);
    assert!(!contents.contains("PRIVATE KEY"));
    let new_meta = fs::metadata(&path).unwrap();
    assert_eq!(new_meta.permissions().mode() & 0o7777, 0o644);
    // A new inode: the file was renamed into place, not rewritten where readers have it open.
    assert_ne!(new_meta.ino(), meta.ino());
    assert_eq!(dir.entries(), ["ca.crt"]);
}

#[test]
fn ca_file_in_a_missing_directory_is_an_error_naming_it() {
    let dir = TempDir::new("cafile-missing");
    let path = dir.join("no-such-dir/ca.crt");
    let err = CertAuthority::generate(SystemTime::now())
        .unwrap()
        .write_cert_file(&path)
        .unwrap_err();
    assert!(matches!(err, TlsError::WriteCaFile { .. }), "{err:?}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_eq!(dir.entries(), Vec::<String>::new());
}

// === the proxy's own listener ===

#[test]
fn listener_serves_a_given_certificate_and_key() {
    init_logging();
    let dir = TempDir::new("listener");
    let (ca_file, cert_file, key_file) = write_server_cert(&dir);
    let tls = ListenerTls {
        cert_and_key: Some((cert_file, key_file)),
        ..ListenerTls::default()
    };
    let built = listener_server_config(&tls, SystemTime::now()).unwrap();
    assert!(!built.generated);

    for name in ["localhost", "127.0.0.1"] {
        let client = client_trusting_file(&ca_file, &[&TLS13, &TLS12]);
        let (client_seen, server_seen) = handshake(built.server_config.clone(), client, name);
        let client_seen = client_seen.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(client_seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(client_seen.version, Some(ProtocolVersion::TLSv1_3));
        server_seen.unwrap();
    }
}

#[test]
fn listener_refuses_bad_certificate_files() {
    let dir = TempDir::new("listener-bad");
    let (_ca_file, cert_file, key_file) = write_server_cert(&dir);
    let build = |cert: &Path, key: &Path| {
        let tls = ListenerTls {
            cert_and_key: Some((cert.to_owned(), key.to_owned())),
            ..ListenerTls::default()
        };
        listener_server_config(&tls, SystemTime::now()).unwrap_err()
    };

    // The key is not in the certificate file.
    let err = build(&cert_file, &cert_file);
    assert_eq!(
        err.to_string(),
        format!("no private key found in {}", cert_file.display())
    );
    // No certificate in the key file.
    let err = build(&key_file, &key_file);
    assert_eq!(
        err.to_string(),
        format!("no certificate found in {}", key_file.display())
    );
    // A key that belongs to another certificate.
    let other_key = dir.join("other.key");
    fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let err = build(&cert_file, &other_key);
    assert!(matches!(err, TlsError::UseListenerCert { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&*other_key.to_string_lossy()),
        "{err}"
    );
    // A missing file.
    let missing = dir.join("missing.pem");
    let err = build(&missing, &key_file);
    assert_eq!(
        err.to_string(),
        format!("read listener certificate {}", missing.display())
    );
}

#[test]
fn listener_generates_a_certificate_when_none_is_given() {
    init_logging();
    let built = listener_server_config(&ListenerTls::default(), SystemTime::now()).unwrap();
    assert!(built.generated);
    for name in ["localhost", "127.0.0.1", "::1"] {
        let client = client_trusting(roots_from(&built.certificate), &[&TLS13, &TLS12]);
        let (client_seen, server_seen) = handshake(built.server_config.clone(), client, name);
        let client_seen = client_seen.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(client_seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
        server_seen.unwrap();
    }
    let client = client_trusting(roots_from(&built.certificate), &[&TLS13, &TLS12]);
    let (client_seen, _) = handshake(built.server_config.clone(), client, "other.example");
    client_seen.unwrap_err();
}

#[test]
fn listener_with_tls13_only_refuses_a_tls12_client() {
    init_logging();
    let tls = ListenerTls {
        tls13_only: true,
        ..ListenerTls::default()
    };
    let built = listener_server_config(&tls, SystemTime::now()).unwrap();

    let client = client_trusting(roots_from(&built.certificate), &[&TLS12]);
    let (client_seen, server_seen) = handshake(built.server_config.clone(), client, "localhost");
    client_seen.unwrap_err();
    server_seen.unwrap_err();

    let client = client_trusting(roots_from(&built.certificate), &[&TLS13, &TLS12]);
    let (client_seen, _) = handshake(built.server_config.clone(), client, "localhost");
    assert_eq!(client_seen.unwrap().version, Some(ProtocolVersion::TLSv1_3));
}

#[test]
fn listener_negotiates_the_chosen_tls12_suite() {
    init_logging();
    let tls = ListenerTls {
        cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".to_string()],
        ..ListenerTls::default()
    };
    let built = listener_server_config(&tls, SystemTime::now()).unwrap();
    use rustls::crypto::ring::cipher_suite as suite;

    let client = tls12_client_with_suite(
        roots_from(&built.certificate),
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    );
    let (client_seen, server_seen) = handshake(built.server_config.clone(), client, "localhost");
    let client_seen = client_seen.unwrap();
    assert_eq!(client_seen.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(
        client_seen.suite,
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
    assert_eq!(server_seen.unwrap().suite, client_seen.suite);

    // A TLS 1.2 suite not in the list is refused.
    let client = tls12_client_with_suite(
        roots_from(&built.certificate),
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    );
    let (client_seen, _) = handshake(built.server_config.clone(), client, "localhost");
    client_seen.unwrap_err();

    // TLS 1.3 is untouched by a TLS 1.2 list, as in Go.
    let client = client_trusting(roots_from(&built.certificate), &[&TLS13]);
    let (client_seen, _) = handshake(built.server_config.clone(), client, "localhost");
    assert_eq!(client_seen.unwrap().version, Some(ProtocolVersion::TLSv1_3));
}

#[test]
fn listener_with_tls13_only_and_tls12_suites_still_serves_tls13() {
    init_logging();
    let tls = ListenerTls {
        tls13_only: true,
        cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string()],
        ..ListenerTls::default()
    };
    let built = listener_server_config(&tls, SystemTime::now()).unwrap();
    let client = client_trusting(roots_from(&built.certificate), &[&TLS13, &TLS12]);
    let (client_seen, _) = handshake(built.server_config.clone(), client, "localhost");
    assert_eq!(client_seen.unwrap().version, Some(ProtocolVersion::TLSv1_3));
}

#[test]
fn unsupported_versions_and_suites_are_refused() {
    for value in ["VersionTLS10", "VersionTLS11"] {
        let err = parse_min_version(value).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(value) && text.contains("VersionTLS12"),
            "{text}"
        );
    }
    let tls = ListenerTls {
        cipher_suites: vec![
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string(),
            "TLS_RSA_WITH_AES_128_CBC_SHA".to_string(),
        ],
        ..ListenerTls::default()
    };
    let err = listener_server_config(&tls, SystemTime::now()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"TLS_RSA_WITH_AES_128_CBC_SHA\""), "{text}");
    assert!(
        text.contains("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{text}"
    );
}

// === upstream client ===

#[test]
fn upstream_client_trusts_extra_ca_files_only_when_told() {
    init_logging();
    let dir = TempDir::new("upstream");
    let now = SystemTime::now();
    let target = Interceptor::new(CertAuthority::generate(now).unwrap()).unwrap();
    let ca_file = dir.join("target-ca.pem");
    target.ca().write_cert_file(&ca_file).unwrap();
    let server = target.server_config_for("localhost", now).unwrap();

    let trusting = UpstreamTls {
        extra_ca_files: vec![ca_file],
        insecure_skip_verify: false,
    };
    let built =
        upstream_client_config(&trusting, Some(&dir.join("absent-apiserver-ca.crt"))).unwrap();
    assert!(built.root_count >= 1);
    assert!(!built.insecure);
    let (client_seen, server_seen) = handshake(server.clone(), built.client_config, "localhost");
    assert_eq!(client_seen.unwrap().alpn.as_deref(), Some(&b"http/1.1"[..]));
    server_seen.unwrap();

    // The in-cluster CA path counts as trusted too.
    let built =
        upstream_client_config(&UpstreamTls::default(), Some(&trusting.extra_ca_files[0])).unwrap();
    let (client_seen, _) = handshake(server.clone(), built.client_config, "localhost");
    client_seen.unwrap();

    // Without it, the target's CA is unknown.
    let built = upstream_client_config(&UpstreamTls::default(), None).unwrap();
    let (client_seen, _) = handshake(server, built.client_config, "localhost");
    let err = client_seen.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn upstream_client_in_insecure_mode_accepts_an_untrusted_server() {
    init_logging();
    let now = SystemTime::now();
    let target = Interceptor::new(CertAuthority::generate(now).unwrap()).unwrap();
    let server = target.server_config_for("localhost", now).unwrap();

    let insecure = UpstreamTls {
        extra_ca_files: Vec::new(),
        insecure_skip_verify: true,
    };
    let built = upstream_client_config(&insecure, None).unwrap();
    assert!(built.insecure);
    // Even for a name the certificate does not carry.
    for name in ["localhost", "other.example", "[::1]"] {
        let (client_seen, server_seen) =
            handshake(server.clone(), built.client_config.clone(), name);
        client_seen.unwrap_or_else(|e| panic!("{name}: {e}"));
        server_seen.unwrap();
    }
}

#[test]
fn upstream_client_refuses_an_unreadable_extra_ca_file() {
    let dir = TempDir::new("upstream-bad");
    let missing = dir.join("missing.pem");
    let tls = UpstreamTls {
        extra_ca_files: vec![missing.clone()],
        insecure_skip_verify: false,
    };
    let err = upstream_client_config(&tls, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("read ca file {}", missing.display())
    );
}
