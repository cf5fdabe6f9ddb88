//! An HTTPS target behind the proxy, with its own test CA written to a file, and the
//! client-side pieces a test needs to talk TLS by hand: a CONNECT tunnel through the proxy,
//! a rustls client configuration trusting given PEM certificates, and a minimal HTTP/1.1
//! exchange over any async stream. Plain-HTTP targets live in [`super::target`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_std::io::{Read as AsyncRead, ReadExt, Write as AsyncWrite, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use futures_rustls::{TlsAcceptor, TlsConnector};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;

use super::apiserver::SharedStream;
use super::target::{answer, Seen};
use super::tempdir::TempDir;

/// The *ring* provider, passed explicitly as the crate does.
pub fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA: its certificate as PEM, and an issuer to sign server certificates with.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`, with its key, as DER.
    pub fn issue_localhost(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let (cert, key) = self.sign_localhost();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// Like [`issue_localhost`](Self::issue_localhost), as PEM strings (certificate, key).
    pub fn issue_localhost_pem(&self) -> (String, String) {
        let (cert, key) = self.sign_localhost();
        (cert.pem(), key.serialize_pem())
    }

    fn sign_localhost(&self) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "test https target");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (cert, key)
    }
}

/// Which CA signs the target's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The CA written to [`TlsTarget::ca_file`].
    OwnCa,
    /// Another CA, known to no one: configuring `ca_file` does not make the target trusted.
    UnrelatedCa,
}

/// An HTTPS/1.1 target served by async-h1 over rustls. Every path answers `ok`; what each
/// request looked like is recorded as [`Seen`].
pub struct TlsTarget {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    ca_file: PathBuf,
    ca_pem: String,
    task: Option<async_std::task::JoinHandle<()>>,
    _dir: TempDir,
}

impl TlsTarget {
    /// A target whose certificate is signed by the CA in [`ca_file`](Self::ca_file).
    pub async fn start() -> TlsTarget {
        Self::start_with(Signer::OwnCa).await
    }

    /// A target whose certificate comes from `signer`; [`ca_file`](Self::ca_file) always holds
    /// the target's own CA.
    pub async fn start_with(signer: Signer) -> TlsTarget {
        let dir = TempDir::new();
        let ca = TestCa::new("test https target CA");
        let ca_file = dir.join("target-ca.crt");
        std::fs::write(&ca_file, &ca.pem).expect("write target CA");
        let (cert, key) = match signer {
            Signer::OwnCa => ca.issue_localhost(),
            Signer::UnrelatedCa => TestCa::new("unrelated test CA").issue_localhost(),
        };
        let config = rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = {
            let seen = seen.clone();
            let connections = connections.clone();
            async_std::task::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    let acceptor = acceptor.clone();
                    async_std::task::spawn(async move {
                        let handshake = async_std::future::timeout(
                            Duration::from_secs(10),
                            acceptor.accept(tcp),
                        );
                        let Ok(Ok(tls)) = handshake.await else {
                            return;
                        };
                        let stream = SharedStream::new(tls);
                        let _ = async_h1::accept(stream, move |req| {
                            let seen = seen.clone();
                            async move { Ok(answer(req, &seen).await) }
                        })
                        .await;
                    });
                }
            })
        };
        TlsTarget {
            addr,
            seen,
            connections,
            ca_file,
            ca_pem: ca.pem,
            task: Some(task),
            _dir: dir,
        }
    }

    /// The bound loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub fn ip_url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// The PEM file of the target's own CA, for `upstream_tls.extra_ca_files`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The target's own CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The latest request received; panics if there was none.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the target saw no request")
    }

    /// TCP connections accepted so far, whether or not their handshake succeeded.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TlsTarget {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            async_std::task::block_on(task.cancel());
        }
    }
}

/// A client configuration trusting exactly the certificates in `pems`, with the given
/// protocol versions (`None`: rustls's defaults), offering `http/1.1`.
pub fn client_config(
    pems: &[&str],
    versions: Option<&[&'static SupportedProtocolVersion]>,
) -> Arc<ClientConfig> {
    let certs = pems
        .iter()
        .flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()))
        .map(|cert| cert.expect("PEM certificate"))
        .collect();
    client_config_der(certs, versions)
}

/// Like [`client_config`], trusting DER certificates (a self-signed end-entity certificate
/// works as its own anchor).
pub fn client_config_der(
    certs: Vec<CertificateDer<'static>>,
    versions: Option<&[&'static SupportedProtocolVersion]>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).expect("trust anchor");
    }
    let builder = ClientConfig::builder_with_provider(ring());
    let builder = match versions {
        Some(versions) => builder.with_protocol_versions(versions),
        None => builder.with_safe_default_protocol_versions(),
    }
    .expect("protocol versions");
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Runs a TLS client handshake over `stream` for `name`.
pub async fn tls_connect<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<ClientConfig>,
    name: &str,
    stream: S,
) -> std::io::Result<futures_rustls::client::TlsStream<S>> {
    let name = ServerName::try_from(name.to_string()).expect("server name");
    TlsConnector::from(config).connect(name, stream).await
}

/// Sends `CONNECT authority` on `stream` and returns the proxy's answer head as text.
/// Panics if the stream ends before a whole head.
pub async fn send_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    authority: &str,
) -> String {
    let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    read_head(stream).await.expect("an answer to CONNECT")
}

/// Opens a TCP connection to the proxy at `proxy` and sends CONNECT; panics unless the
/// proxy answers 200.
pub async fn open_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let answer = send_connect(&mut tcp, authority).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    tcp
}

/// Reads one byte at a time up to and including the blank line ending a head; `None` when
/// the stream ends first.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A response read by [`exchange`].
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The status line and fields, up to and including the blank line.
    pub head: String,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

/// Reads one response whose length is given by `Content-Length` (every response the tests
/// expect has one); `None` when the stream ends before a full response.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Answer> {
    let head = read_head(stream).await?;
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a response with Content-Length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(Answer {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Writes `request` (a complete head, no body) and reads one response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
) -> Option<Answer> {
    stream.write_all(request.as_bytes()).await.ok()?;
    stream.flush().await.ok()?;
    read_response(stream).await
}

/// A GET request head for `target` with the given `Host`.
pub fn get(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-audience-proxy-test\r\n\r\n")
}
