//! HTTPS interception end to end: CONNECT, the leaf certificate the client sees, token
//! injection inside the tunnel, TLS towards the real target and the CA file clients trust.
//! Each test checks what the target received and what the client got back.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll};
use std::time::Duration;

use async_std::io::{Read as AsyncRead, Write as AsyncWrite};
use async_std::net::TcpStream;
use common::apiserver::FakeApiServer;
use common::blocking;
use common::harness::{start_proxy, TestProxy};
use common::target::HttpTarget;
use common::tempdir::TempDir;
use common::tls_target::{
    client_config, exchange, get, open_tunnel, send_connect, tls_connect, Answer, Signer, TlsTarget,
};

fn ureq_get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent.get(url).call().expect("request through the proxy");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// Starts a proxy that trusts `target`'s CA for upstream TLS.
async fn proxy_trusting(api: &FakeApiServer, target: &TlsTarget) -> TestProxy {
    let ca = target.ca_file().to_path_buf();
    start_proxy(api, move |config| {
        config.upstream_tls.extra_ca_files = vec![ca]
    })
    .await
}

/// Opens a tunnel to `authority` and completes a TLS handshake inside it for `name`,
/// trusting only the proxy's CA.
async fn tls_tunnel(
    proxy: &TestProxy,
    authority: &str,
    name: &str,
) -> futures_rustls::client::TlsStream<TcpStream> {
    let tcp = open_tunnel(proxy.addr(), authority).await;
    let config = client_config(&[&proxy.running.ca_pem], None);
    tls_connect(config, name, tcp)
        .await
        .expect("TLS handshake with the proxy's leaf")
}

/// One GET through a fresh intercepted tunnel; `None` if the tunnel broke instead.
async fn get_in_tunnel(proxy: &TestProxy, target: &TlsTarget, path: &str) -> Option<Answer> {
    let authority = format!("localhost:{}", target.port());
    let mut tls = tls_tunnel(proxy, &authority, "localhost").await;
    exchange(&mut tls, &get(path, &authority)).await
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

/// Runs curl with `args` (bounded by `--max-time`) and returns its exit status and stdout.
fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--noproxy", ""])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ureq_reaches_an_https_target_by_name_and_by_ip_with_the_token() {
    common::init_logging();
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;
        let agent = proxy.agent();

        let by_name = target.url("/m?x=1&kubernetes-audience=aud");
        let by_ip = target.ip_url("/ip?kubernetes-audience=aud-ip&y=2");
        let (named, ip) =
            blocking(move || (ureq_get(&agent, &by_name), ureq_get(&agent, &by_ip))).await;

        assert_eq!(named, (200, "ok".to_string()));
        assert_eq!(ip, (200, "ok".to_string()));
        let seen = target.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].target, "/m?x=1");
        assert_eq!(seen[0].token_audience.as_deref(), Some("aud"));
        assert_eq!(seen[1].target, "/ip?y=2");
        assert_eq!(seen[1].token_audience.as_deref(), Some("aud-ip"));
        assert_eq!(api.calls_for("aud"), 1);
    });
}

#[test]
fn curl_reaches_https_and_http_targets_through_the_proxy() {
    if !curl_installed() {
        return;
    }
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let plain = HttpTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;

        let proxy_url = proxy.url();
        let ca_file = proxy.running.ca_file.display().to_string();
        let https_url = target.url("/curl?kubernetes-audience=curl-aud");
        let http_url = plain.url("/plain?kubernetes-audience=curl-plain&z=1");
        let (https, http) = blocking(move || {
            let https = curl(&["--proxy", &proxy_url, "--cacert", &ca_file, &https_url]);
            let http = curl(&["--proxy", &proxy_url, &http_url]);
            (https, http)
        })
        .await;

        assert!(https.0, "curl https failed: {}", https.2);
        assert_eq!(https.1, "ok");
        let seen = target.last();
        assert_eq!(seen.target, "/curl");
        assert_eq!(seen.token_audience.as_deref(), Some("curl-aud"));

        assert!(http.0, "curl http failed: {}", http.2);
        assert_eq!(http.1, "ok");
        let seen = plain.last();
        assert_eq!(seen.target, "/plain?z=1");
        assert_eq!(seen.token_audience.as_deref(), Some("curl-plain"));
    });
}

#[test]
fn curl_refuses_the_leaf_without_the_proxy_ca() {
    if !curl_installed() {
        return;
    }
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;

        let proxy_url = proxy.url();
        let url = target.url("/?kubernetes-audience=curl-aud");
        let dir = TempDir::new();
        let other = dir.join("other.crt");
        std::fs::write(&other, target.ca_pem()).unwrap();
        let other = other.display().to_string();
        let (ok, out, _) =
            blocking(move || curl(&["--proxy", &proxy_url, "--cacert", &other, &url])).await;

        assert!(!ok, "curl accepted a leaf it has no CA for: {out}");
        assert!(target.seen().is_empty());
    });
}

#[test]
fn three_requests_share_one_tunnel_and_one_upstream_connection() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;
        let authority = format!("localhost:{}", target.port());

        let mut tls = tls_tunnel(&proxy, &authority, "localhost").await;
        for i in 0..3 {
            let path = format!("/r{i}?kubernetes-audience=aud{i}");
            let answer = exchange(&mut tls, &get(&path, &authority))
                .await
                .expect("a response inside the tunnel");
            assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        }

        let seen = target.seen();
        let targets: Vec<_> = seen.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(targets, ["/r0", "/r1", "/r2"]);
        let audiences: Vec<_> = seen
            .iter()
            .map(|s| s.token_audience.as_deref().unwrap())
            .collect();
        assert_eq!(audiences, ["aud0", "aud1", "aud2"]);
        assert_eq!(seen[0].host.as_deref(), Some(authority.as_str()));
        assert_eq!(
            target.connections(),
            1,
            "the upstream connection was reused"
        );
    });
}

/// Sends the CONNECT head together with the first bytes written on it (the ClientHello), and
/// hides the proxy's `200` answer from the reader.
struct ConnectAhead {
    inner: TcpStream,
    head: Option<Vec<u8>>,
    pending: Vec<u8>,
    claimed: usize,
    answer: Vec<u8>,
    answered: bool,
    leftover: Vec<u8>,
}

impl ConnectAhead {
    fn new(inner: TcpStream, authority: &str) -> ConnectAhead {
        let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        ConnectAhead {
            inner,
            head: Some(head.into_bytes()),
            pending: Vec::new(),
            claimed: 0,
            answer: Vec::new(),
            answered: false,
            leftover: Vec::new(),
        }
    }
}

impl AsyncWrite for ConnectAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(mut head) = this.head.take() {
            head.extend_from_slice(buf);
            this.pending = head;
            this.claimed = buf.len();
        }
        if this.pending.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        while !this.pending.is_empty() {
            match Pin::new(&mut this.inner).poll_write(cx, &this.pending) {
                Poll::Ready(Ok(n)) => {
                    this.pending.drain(..n);
                }
                other => return other,
            }
        }
        Poll::Ready(Ok(this.claimed))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

impl AsyncRead for ConnectAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        while !this.answered {
            let mut chunk = [0u8; 512];
            let n = match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            this.answer.extend_from_slice(&chunk[..n]);
            if let Some(end) = this.answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&this.answer[..end]).into_owned();
                assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                this.leftover = this.answer.split_off(end + 4);
                this.answered = true;
            }
        }
        if !this.leftover.is_empty() {
            let n = buf.len().min(this.leftover.len());
            buf[..n].copy_from_slice(&this.leftover[..n]);
            this.leftover.drain(..n);
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

#[test]
fn a_client_hello_sent_with_the_connect_head_is_not_lost() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;
        let authority = format!("localhost:{}", target.port());

        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let config = client_config(&[&proxy.running.ca_pem], None);
        let mut tls = tls_connect(config, "localhost", ConnectAhead::new(tcp, &authority))
            .await
            .expect("TLS handshake right behind the CONNECT head");
        let answer = exchange(
            &mut tls,
            &get("/early?kubernetes-audience=early", &authority),
        )
        .await
        .expect("a response inside the tunnel");

        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        let seen = target.last();
        assert_eq!(seen.target, "/early");
        assert_eq!(seen.token_audience.as_deref(), Some("early"));
    });
}

#[test]
fn an_untrusted_target_is_a_502_inside_the_tunnel_until_its_ca_is_configured() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let path = "/secret?kubernetes-audience=aud";

        let untrusting = start_proxy(&api, |_| {}).await;
        let answer = get_in_tunnel(&untrusting, &target, path)
            .await
            .expect("an answer inside the tunnel");
        assert_eq!(answer.status, 502, "{answer:?}");
        let body = answer.body.to_lowercase();
        assert!(
            body.contains("tls") && body.contains("certificate"),
            "{}",
            answer.body
        );
        assert!(!answer.body.contains("fake-token"), "{}", answer.body);
        assert!(target.seen().is_empty());

        let trusting = proxy_trusting(&api, &target).await;
        let answer = get_in_tunnel(&trusting, &target, path).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        assert_eq!(target.last().token_audience.as_deref(), Some("aud"));

        let skipping = start_proxy(&api, |c| c.upstream_tls.insecure_skip_verify = true).await;
        let answer = get_in_tunnel(&skipping, &target, path).await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        assert_eq!(target.seen().len(), 2);
    });
}

#[test]
fn a_target_signed_by_another_ca_than_the_configured_one_is_refused() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start_with(Signer::UnrelatedCa).await;
        let proxy = proxy_trusting(&api, &target).await;

        let answer = get_in_tunnel(&proxy, &target, "/?kubernetes-audience=aud")
            .await
            .expect("an answer inside the tunnel");

        assert_eq!(answer.status, 502, "{answer:?}");
        assert!(
            answer.body.to_lowercase().contains("certificate"),
            "{}",
            answer.body
        );
        assert!(target.seen().is_empty());
    });
}

#[test]
fn tls_inside_a_tunnel_to_a_plain_http_port_never_succeeds() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        // The plain target waits for a request head that never comes: the handshake times out.
        let proxy = start_proxy(&api, |c| {
            c.timeouts.upstream_connect = Duration::from_secs(1)
        })
        .await;
        let authority = target.addr().to_string();

        let tcp = open_tunnel(proxy.addr(), &authority).await;
        let config = client_config(&[&proxy.running.ca_pem], None);
        let outcome = match tls_connect(config, "127.0.0.1", tcp).await {
            Ok(mut tls) => exchange(&mut tls, &get("/?kubernetes-audience=aud", &authority)).await,
            Err(_) => None,
        };

        if let Some(answer) = outcome {
            assert!(matches!(answer.status, 502 | 504), "{answer:?}");
        }
        assert!(
            target.seen().is_empty(),
            "a plain target must not parse a request out of a TLS handshake"
        );
    });
}

#[test]
fn plain_http_inside_a_tunnel_reaches_a_plain_target_with_the_token() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let authority = target.addr().to_string();

        let mut tcp = open_tunnel(proxy.addr(), &authority).await;
        let first = exchange(
            &mut tcp,
            &get("/in?a=1&kubernetes-audience=plain", &authority),
        )
        .await
        .expect("a response inside the tunnel");
        let second = exchange(&mut tcp, &get("/again", &authority))
            .await
            .expect("a second response inside the tunnel");

        assert_eq!((first.status, first.body.as_str()), (200, "ok"));
        assert_eq!((second.status, second.body.as_str()), (200, "ok"));
        let seen = target.seen();
        assert_eq!(seen[0].target, "/in?a=1");
        assert_eq!(seen[0].token_audience.as_deref(), Some("plain"));
        assert_eq!(seen[1].target, "/again");
        assert_eq!(seen[1].token_audience, None);

        // ureq tunnels http:// URLs through CONNECT as well.
        let agent = proxy.agent();
        let url = target.url("/ureq?kubernetes-audience=ureq-plain");
        let (status, body) = blocking(move || ureq_get(&agent, &url)).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let seen = target.last();
        assert_eq!(seen.target, "/ureq");
        assert_eq!(seen.token_audience.as_deref(), Some("ureq-plain"));
    });
}

/// Reads until the proxy closes the connection, returning what arrived; panics if it stays
/// open for 10 s.
fn read_until_closed(stream: &mut StdStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the proxy kept a garbage tunnel open: {e}"),
        }
    }
}

/// Opens a tunnel with blocking I/O and reads the `200`.
fn std_tunnel(proxy: SocketAddr, authority: &str) -> StdStream {
    let mut tcp = StdStream::connect(proxy).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .unwrap();
    let head = common::target::read_head(&mut tcp).expect("an answer to CONNECT");
    assert!(head.starts_with(b"HTTP/1.1 200 "));
    tcp
}

#[test]
fn garbage_inside_a_tunnel_is_dropped_and_the_proxy_keeps_serving() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;
        let proxy_addr = proxy.addr();
        let authority = format!("localhost:{}", target.port());

        blocking(move || {
            // A truncated TLS record header, then half-close.
            let mut tcp = std_tunnel(proxy_addr, &authority);
            tcp.write_all(b"\x16\x03\x01").unwrap();
            tcp.shutdown(std::net::Shutdown::Write).unwrap();
            assert!(read_until_closed(&mut tcp).is_empty());

            // A TLS record header followed by a record that is no handshake.
            let mut tcp = std_tunnel(proxy_addr, &authority);
            tcp.write_all(b"\x16\x03\x01\x00\x08garbage!\x16\x03\x01\x00\x01\xff")
                .unwrap();
            let got = read_until_closed(&mut tcp);
            assert!(
                got.is_empty() || got[0] == 21,
                "only a TLS alert may come back: {got:?}"
            );

            // Neither TLS nor HTTP.
            let mut tcp = std_tunnel(proxy_addr, &authority);
            tcp.write_all(b"\x00\x01\x02\xfe\xff binary noise\r\n\r\n")
                .unwrap();
            let got = String::from_utf8_lossy(&read_until_closed(&mut tcp)).into_owned();
            assert!(
                got.is_empty() || got.starts_with("HTTP/1.1 400 "),
                "unexpected answer to noise: {got}"
            );
        })
        .await;

        assert!(target.seen().is_empty());
        let answer = get_in_tunnel(&proxy, &target, "/after?kubernetes-audience=aud")
            .await
            .expect("the proxy still serves");
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        assert_eq!(target.last().target, "/after");
    });
}

fn pem_blocks(pem: &str, label: &str) -> usize {
    pem.matches(&format!("-----BEGIN {label}-----")).count()
}

fn assert_ca_file(path: &Path, expected: &str) {
    let content = std::fs::read_to_string(path).expect("the CA file exists");
    assert_eq!(content, expected);
    assert_eq!(pem_blocks(&content, "CERTIFICATE"), 1, "{content}");
    assert!(!content.contains("PRIVATE KEY"), "the CA file holds a key");
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn the_ca_file_holds_one_certificate_and_is_replaced_by_a_restart() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let dir = TempDir::new();
        let path = dir.join("ca.crt");
        std::fs::write(&path, "stale content from an earlier run\n").unwrap();

        let first = {
            let path = path.clone();
            start_proxy(&api, move |c| c.ca_file_destination = path).await
        };
        assert_eq!(first.running.ca_file, path);
        assert_ca_file(&path, &first.running.ca_pem);

        let second = {
            let path = path.clone();
            start_proxy(&api, move |c| c.ca_file_destination = path).await
        };
        assert_ne!(first.running.ca_pem, second.running.ca_pem);
        assert_ca_file(&path, &second.running.ca_pem);
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries, ["ca.crt"], "no temporary file is left behind");

        // Clients that load the file trust the second proxy's leaves, not the first's.
        let target = TlsTarget::start().await;
        let pem = std::fs::read_to_string(&path).unwrap();
        let authority = format!("localhost:{}", target.port());
        let config = client_config(&[&pem], None);
        let tcp = open_tunnel(second.addr(), &authority).await;
        assert!(tls_connect(config.clone(), "localhost", tcp).await.is_ok());
        let tcp = open_tunnel(first.addr(), &authority).await;
        assert!(tls_connect(config, "localhost", tcp).await.is_err());
    });
}

#[test]
fn absolute_form_requests_inside_the_tunnel_go_to_the_tunnel_target() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;
        let authority = format!("localhost:{}", target.port());

        let mut tls = tls_tunnel(&proxy, &authority, "localhost").await;
        let absolute = target.url("/p?q=1&kubernetes-audience=abs");
        let answer = exchange(&mut tls, &get(&absolute, &authority))
            .await
            .expect("a response inside the tunnel");

        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        let seen = target.last();
        assert_eq!(seen.target, "/p?q=1");
        assert_eq!(seen.token_audience.as_deref(), Some("abs"));
    });
}

#[test]
fn the_leaf_names_the_sni_host_or_else_the_connect_host() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let target = TlsTarget::start().await;
        let proxy = proxy_trusting(&api, &target).await;
        let config = client_config(&[&proxy.running.ca_pem], None);

        // By IP: no SNI is sent, the leaf is for the CONNECT host.
        let by_ip = target.addr().to_string();
        let tcp = open_tunnel(proxy.addr(), &by_ip).await;
        let mut tls = tls_connect(config.clone(), "127.0.0.1", tcp)
            .await
            .expect("a leaf for the IP address");
        let answer = exchange(&mut tls, &get("/ip", &by_ip)).await.unwrap();
        assert_eq!(answer.status, 200);

        // With SNI, the leaf is for the SNI name, even when CONNECT named an IP address.
        let tcp = open_tunnel(proxy.addr(), &by_ip).await;
        let mut tls = tls_connect(config.clone(), "localhost", tcp)
            .await
            .expect("a leaf for the SNI name");
        let answer = exchange(&mut tls, &get("/sni", &by_ip)).await.unwrap();
        assert_eq!(answer.status, 200);

        // The client that sent no SNI for an IP address gets no leaf for a name it did not ask.
        let other = format!("127.0.0.2:{}", target.port());
        let tcp = open_tunnel(proxy.addr(), &other).await;
        // A fresh configuration: a resumed session would skip the certificate altogether.
        let fresh = client_config(&[&proxy.running.ca_pem], None);
        assert!(tls_connect(fresh, "127.0.0.1", tcp).await.is_err());
        let targets: Vec<_> = target.seen().into_iter().map(|s| s.target).collect();
        assert_eq!(targets, ["/ip", "/sni"]);
    });
}

#[test]
fn connect_without_a_port_or_to_the_proxy_itself_fails_cleanly() {
    common::block_on(async {
        let api = FakeApiServer::builder().start();
        let proxy = start_proxy(&api, |_| {}).await;

        let mut tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        let answer = send_connect(&mut tcp, "no-port.invalid").await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

        // A tunnel to the proxy's own listener: refused when the first request is forwarded.
        let own = proxy.addr().to_string();
        let mut tcp = open_tunnel(proxy.addr(), &own).await;
        let answer = exchange(&mut tcp, &get("/", &own))
            .await
            .expect("an answer inside the tunnel");
        assert_eq!(answer.status, 400, "{answer:?}");
        assert!(answer.body.contains("loop"), "{}", answer.body);
    });
}
