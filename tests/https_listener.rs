//! The proxy's own TLS listener (`--secure-listen-address`) end to end: clients that speak
//! TLS to the proxy itself, then plain HTTP or CONNECT (TLS inside TLS) to their targets,
//! with a generated or a given certificate and with TLS 1.3 only. Each test checks what the
//! target received and what the client got back.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_std::net::TcpStream;
use common::apiserver::FakeApiServer;
use common::blocking;
use common::harness::{start_proxy, TestProxy};
use common::target::HttpTarget;
use common::tempdir::TempDir;
use common::tls_target::{
    client_config, client_config_der, exchange, get, send_connect, tls_connect, TestCa, TlsTarget,
};
use rustls::pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Starts a proxy with only the TLS listener, trusting `target`'s CA upstream, after
/// `adjust`.
async fn secure_proxy(
    api: &FakeApiServer,
    target: &TlsTarget,
    adjust: impl FnOnce(&mut kube_audience_proxy::config::Config),
) -> TestProxy {
    let ca = target.ca_file().to_path_buf();
    start_proxy(api, move |config| {
        config.insecure_listen = None;
        config.secure_listen = Some("127.0.0.1:0".parse().unwrap());
        config.upstream_tls.extra_ca_files = vec![ca];
        adjust(config);
    })
    .await
}

fn secure_addr(proxy: &TestProxy) -> SocketAddr {
    proxy.running.secure_addr.expect("a TLS listener")
}

/// A ureq agent using the proxy as an `https://` proxy, trusting `listener` for the proxy
/// itself and the proxy's CA for intercepted targets.
fn https_proxy_agent(proxy: &TestProxy, listener: CertificateDer<'static>) -> ureq::Agent {
    let url = format!("https://{}", secure_addr(proxy));
    let proxy_setting = ureq::Proxy::new(&url).unwrap();
    let roots = [
        ureq::tls::Certificate::from_pem(proxy.running.ca_pem.as_bytes()).unwrap(),
        ureq::tls::Certificate::from_der(listener.as_ref()).to_owned(),
    ];
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .proxy(Some(proxy_setting))
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn ureq_get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent.get(url).call().expect("request through the proxy");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// A client configuration trusting only the listener's certificate.
fn listener_client(
    proxy: &TestProxy,
    versions: Option<&[&'static rustls::SupportedProtocolVersion]>,
) -> Arc<rustls::ClientConfig> {
    let listener = proxy.running.listener_certificate.clone();
    client_config_der(vec![listener.expect("a listener certificate")], versions)
}

#[test]
fn a_generated_listener_certificate_serves_http_and_https_targets() {
    common::init_logging();
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let tls_target = TlsTarget::start().await;
        let plain = HttpTarget::start().await;
        let proxy = secure_proxy(&api, &tls_target, |_| {}).await;
        assert!(proxy.running.insecure_addr.is_none());
        let listener = proxy
            .running
            .listener_certificate
            .clone()
            .expect("the listener certificate is exposed");

        let agent = https_proxy_agent(&proxy, listener);
        let https_url = tls_target.url("/in-tls?kubernetes-audience=nested&k=v");
        let http_url = plain.url("/plain?kubernetes-audience=over-tls");
        let (https, http) =
            blocking(move || (ureq_get(&agent, &https_url), ureq_get(&agent, &http_url))).await;

        assert_eq!(https, (200, "ok".to_string()));
        let seen = tls_target.last();
        assert_eq!(seen.target, "/in-tls?k=v");
        assert_eq!(seen.token_audience.as_deref(), Some("nested"));
        assert_eq!(http, (200, "ok".to_string()));
        let seen = plain.last();
        assert_eq!(seen.target, "/plain");
        assert_eq!(seen.token_audience.as_deref(), Some("over-tls"));
    });
}

#[test]
fn absolute_form_requests_over_the_tls_listener_are_forwarded() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let tls_target = TlsTarget::start().await;
        let plain = HttpTarget::start().await;
        let proxy = secure_proxy(&api, &tls_target, |_| {}).await;
        let config = listener_client(&proxy, None);

        let tcp = TcpStream::connect(secure_addr(&proxy)).await.unwrap();
        let mut tls = tls_connect(config, "127.0.0.1", tcp)
            .await
            .expect("TLS handshake with the listener");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        let host = plain.addr().to_string();
        for i in 0..2 {
            let url = plain.url(&format!("/abs{i}?kubernetes-audience=abs"));
            let answer = exchange(&mut tls, &get(&url, &host))
                .await
                .expect("a response over the TLS listener");
            assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        }

        let seen = plain.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].target, "/abs1");
        assert_eq!(seen[1].token_audience.as_deref(), Some("abs"));
    });
}

/// Writes a certificate for `localhost`/`127.0.0.1` signed by a fresh CA, and its key, as
/// PEM files; returns (CA PEM, certificate path, key path).
fn write_listener_files(dir: &TempDir) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ca = TestCa::new("test listener CA");
    let (cert, key) = ca.issue_localhost_pem();
    let cert_path = dir.join("listener.crt");
    let key_path = dir.join("listener.key");
    std::fs::write(&cert_path, format!("{cert}{}", ca.pem)).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (ca.pem, cert_path, key_path)
}

#[test]
fn a_given_listener_certificate_is_presented_and_serves_requests() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let tls_target = TlsTarget::start().await;
        let dir = TempDir::new();
        let (listener_ca, cert_path, key_path) = write_listener_files(&dir);
        let files = (cert_path.clone(), key_path);
        let proxy = secure_proxy(&api, &tls_target, move |c| {
            c.listener_tls.cert_and_key = Some(files);
        })
        .await;

        let given = CertificateDer::pem_file_iter(&cert_path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(proxy.running.listener_certificate.as_ref(), Some(&given));

        // Trusting only the CA that signed the given certificate.
        let agent = {
            let url = format!("https://localhost:{}", secure_addr(&proxy).port());
            let roots = [
                ureq::tls::Certificate::from_pem(proxy.running.ca_pem.as_bytes()).unwrap(),
                ureq::tls::Certificate::from_pem(listener_ca.as_bytes()).unwrap(),
            ];
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build();
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .proxy(Some(ureq::Proxy::new(&url).unwrap()))
                .tls_config(tls)
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            agent
        };
        let url = tls_target.url("/given?kubernetes-audience=given");
        let (status, body) = blocking(move || ureq_get(&agent, &url)).await;

        assert_eq!((status, body.as_str()), (200, "ok"));
        let seen = tls_target.last();
        assert_eq!(seen.target, "/given");
        assert_eq!(seen.token_audience.as_deref(), Some("given"));

        // A client that does not trust the listener's CA is refused before any request.
        let tcp = TcpStream::connect(secure_addr(&proxy)).await.unwrap();
        let untrusting = client_config(&[&proxy.running.ca_pem], None);
        assert!(tls_connect(untrusting, "localhost", tcp).await.is_err());
        assert_eq!(tls_target.seen().len(), 1);
    });
}

#[test]
fn tls13_only_refuses_a_tls12_client_and_serves_a_tls13_one() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let tls_target = TlsTarget::start().await;
        let plain = HttpTarget::start().await;
        let proxy = secure_proxy(&api, &tls_target, |c| c.listener_tls.tls13_only = true).await;

        let tcp = TcpStream::connect(secure_addr(&proxy)).await.unwrap();
        let tls12 = listener_client(&proxy, Some(&[&rustls::version::TLS12]));
        assert!(tls_connect(tls12, "127.0.0.1", tcp).await.is_err());

        let tcp = TcpStream::connect(secure_addr(&proxy)).await.unwrap();
        let tls13 = listener_client(&proxy, Some(&[&rustls::version::TLS13]));
        let mut tls = tls_connect(tls13, "127.0.0.1", tcp)
            .await
            .expect("a TLS 1.3 client is served");
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let url = plain.url("/v13?kubernetes-audience=v13");
        let answer = exchange(&mut tls, &get(&url, &plain.addr().to_string()))
            .await
            .expect("a response");
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        assert_eq!(plain.last().token_audience.as_deref(), Some("v13"));
    });
}

#[test]
fn connect_over_the_tls_listener_nests_tls_by_hand() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let tls_target = TlsTarget::start().await;
        let proxy = secure_proxy(&api, &tls_target, |_| {}).await;

        let tcp = TcpStream::connect(secure_addr(&proxy)).await.unwrap();
        let mut outer = tls_connect(listener_client(&proxy, None), "127.0.0.1", tcp)
            .await
            .unwrap();
        let authority = format!("localhost:{}", tls_target.port());
        let answer = send_connect(&mut outer, &authority).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        let inner_config = client_config(&[&proxy.running.ca_pem], None);
        let mut inner = tls_connect(inner_config, "localhost", outer)
            .await
            .expect("TLS inside TLS");
        let answer = exchange(
            &mut inner,
            &get("/nested?kubernetes-audience=n", &authority),
        )
        .await
        .expect("a response");

        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        let seen = tls_target.last();
        assert_eq!(seen.target, "/nested");
        assert_eq!(seen.token_audience.as_deref(), Some("n"));
    });
}

#[test]
fn both_listeners_serve_side_by_side() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let plain = HttpTarget::start().await;
        let proxy = start_proxy(&api, |c| {
            c.secure_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let secure = secure_addr(&proxy);
        assert_ne!(proxy.addr(), secure);

        let agent = proxy.agent();
        let url = plain.url("/insecure?kubernetes-audience=side");
        let (status, _) = blocking(move || ureq_get(&agent, &url)).await;
        assert_eq!(status, 200);

        // Plain HTTP on the TLS port is not served.
        let mut tcp = TcpStream::connect(secure).await.unwrap();
        let answer = exchange(&mut tcp, &get(&plain.url("/wrong-port"), "x")).await;
        assert!(answer.is_none(), "{answer:?}");
        let targets: Vec<_> = plain.seen().into_iter().map(|s| s.target).collect();
        assert_eq!(targets, ["/insecure"]);
    });
}

fn curl_installed() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!("note: curl is not installed; skipping the curl checks");
    }
    found
}

#[test]
fn curl_uses_the_tls_listener_as_an_https_proxy() {
    if !curl_installed() {
        return;
    }
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let tls_target = TlsTarget::start().await;
        let plain = HttpTarget::start().await;
        let dir = TempDir::new();
        let (listener_ca, cert_path, key_path) = write_listener_files(&dir);
        let listener_ca_file = dir.join("listener-ca.crt");
        std::fs::write(&listener_ca_file, listener_ca).unwrap();
        let proxy = secure_proxy(&api, &tls_target, move |c| {
            c.listener_tls.cert_and_key = Some((cert_path, key_path));
        })
        .await;

        let proxy_url = format!("https://localhost:{}", secure_addr(&proxy).port());
        let proxy_ca = listener_ca_file.display().to_string();
        let ca_file = proxy.running.ca_file.display().to_string();
        let https_url = tls_target.url("/curl-tls?kubernetes-audience=curl-tls");
        let http_url = plain.url("/curl-plain?kubernetes-audience=curl-plain");
        let run = move |extra: &[&str], url: &str| {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "20", "--noproxy", ""])
                .args(["--proxy", &proxy_url, "--proxy-cacert", &proxy_ca])
                .args(extra)
                .arg(url)
                .output()
                .expect("run curl");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (https, http) = blocking(move || {
            (
                run(&["--cacert", &ca_file], &https_url),
                run(&[], &http_url),
            )
        })
        .await;

        if https.2.contains("not support") || https.2.contains("nsupported proxy") {
            eprintln!("note: this curl cannot use HTTPS proxies: {}", https.2);
            return;
        }
        assert!(https.0, "curl via the TLS listener failed: {}", https.2);
        assert_eq!(https.1, "ok");
        assert_eq!(
            tls_target.last().token_audience.as_deref(),
            Some("curl-tls")
        );
        assert!(http.0, "curl http via the TLS listener failed: {}", http.2);
        assert_eq!(http.1, "ok");
        let seen = plain.last();
        assert_eq!(seen.target, "/curl-plain");
        assert_eq!(seen.token_audience.as_deref(), Some("curl-plain"));
    });
}
