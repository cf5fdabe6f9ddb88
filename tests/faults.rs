//! Faults on either side of the proxy, over real sockets: a slow or failing API server, a
//! target that breaks off a body or resets an idle pooled connection, and a client that goes
//! away in the middle of a transfer. Each test checks what the client saw and that no broken
//! connection is kept, by looking at the kernel's socket table for the ports involved.
//!
//! The API server being down at start-up is covered in `tests/process.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::FakeApiServer;
use common::harness::{start_proxy, TestProxy};
use common::target::{read_head, split_response, HttpTarget};
use common::with_timeout;

fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent.get(url).call().expect("request through the proxy");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// Polls `check` every 50 ms until it holds, for at most 10 s; returns whether it held.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// TCP sockets of this network namespace that still hold a descriptor open (established or
/// half-closed by the peer) with `port` on the local or remote side. Sockets this process
/// closed itself (FIN-WAIT, TIME-WAIT) own no descriptor and are not counted.
fn open_sockets(port: u16, local: bool) -> usize {
    const ESTABLISHED: &str = "01";
    const CLOSE_WAIT: &str = "08";
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                continue;
            }
            let addr = if local { fields[1] } else { fields[2] };
            let Some(p) = addr.rsplit(':').next() else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port)
                && (fields[3] == ESTABLISHED || fields[3] == CLOSE_WAIT)
            {
                count += 1;
            }
        }
    }
    count
}

/// Connections from the proxy to a target on `target_port` that are still open.
fn proxy_to_target(target_port: u16) -> usize {
    open_sockets(target_port, false)
}

/// Client connections the proxy (listening on `proxy_port`) still holds.
fn proxy_from_clients(proxy_port: u16) -> usize {
    open_sockets(proxy_port, true)
}

/// A thread-per-connection target on a std socket, with a handler per connection.
struct ThreadTarget {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl ThreadTarget {
    fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> ThreadTarget {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                std::thread::spawn(move || handler(stream));
            }
        });
        ThreadTarget { addr, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Closes `stream` with a reset (RST) instead of an orderly FIN.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Sends `request` on a new connection to the proxy and reads until the proxy closes it.
/// Panics if the proxy neither finishes nor closes within 10 s: a hang is a failure.
fn exchange_until_close(proxy: &TestProxy, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    stream
        .read_to_end(&mut out)
        .expect("the proxy closed the connection rather than hang");
    out
}

#[test]
fn a_slow_token_request_does_not_delay_another_audience() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let fast_url = target.url("/m?kubernetes-audience=fast");
        let slow_url = target.url("/m?kubernetes-audience=slow");

        let agent = proxy.agent();
        common::blocking(move || assert_eq!(get(&agent, &fast_url).0, 200)).await;
        api.set_delay("slow", Duration::from_secs(6));

        let agent = proxy.agent();
        let slow = std::thread::spawn(move || get(&agent, &slow_url).0);
        assert!(
            eventually(|| api.calls_for("slow") == 1),
            "the slow TokenRequest did not start"
        );

        // While the slow TokenRequest is still outstanding, the cached audience is served.
        let fast_url = target.url("/m?kubernetes-audience=fast");
        for _ in 0..5 {
            let agent = proxy.agent();
            let url = fast_url.clone();
            let status = common::blocking(move || get(&agent, &url).0).await;
            assert_eq!(status, 200);
        }
        assert!(
            !slow.is_finished(),
            "requests for the cached audience waited for the slow TokenRequest"
        );
        assert_eq!(api.calls_for("fast"), 1);

        let status = common::blocking(move || slow.join().unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(
            target.last().token_audience.as_deref(),
            Some("slow"),
            "the slow audience got its own token"
        );
    }));
}

#[test]
fn a_failing_refresh_keeps_the_old_token_until_it_expires_then_502_with_the_reason() {
    // Lifetime 10 s: fresh for 8 s, then refreshed in the background, served until 9 s
    // (the expiry margin is capped at a tenth of the lifetime).
    const LIFETIME: Duration = Duration::from_secs(10);
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().token_lifetime(LIFETIME).start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let url = target.url("/m?kubernetes-audience=expiring");

        let issued = Instant::now();
        let agent = proxy.agent();
        let u = url.clone();
        assert_eq!(common::blocking(move || get(&agent, &u).0).await, 200);
        let first_token = target.last().authorization.unwrap();
        api.fail_all(403);

        // Past the refresh point, before expiry: the refresh fails, the old token serves.
        async_std::task::sleep(Duration::from_millis(8300).saturating_sub(issued.elapsed())).await;
        let agent = proxy.agent();
        let u = url.clone();
        let (status, body) = common::blocking(move || get(&agent, &u)).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            eventually(|| api.calls_for("expiring") >= 2),
            "no refresh was attempted"
        );
        let agent = proxy.agent();
        let u = url.clone();
        let (status, body) = common::blocking(move || get(&agent, &u)).await;
        assert_eq!(status, 200, "{body}");
        assert!(target
            .seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some(first_token.as_str())));

        // Past expiry: no token to send, and the client learns why.
        async_std::task::sleep(Duration::from_millis(10_500).saturating_sub(issued.elapsed()))
            .await;
        let served = target.seen().len();
        let agent = proxy.agent();
        let (status, body) = common::blocking(move || get(&agent, &url)).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("Forbidden"), "{body}");
        assert!(body.contains("cannot create resource"), "{body}");
        assert_eq!(
            target.seen().len(),
            served,
            "a request went out without a token"
        );
    }));
}

#[test]
fn a_body_cut_short_by_the_target_reaches_the_client_as_a_truncation() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let proxy = start_proxy(&api, |_| {}).await;
        // Promises 100 bytes (or a chunked body), sends 10, closes. Otherwise answers `ok`.
        let target = ThreadTarget::start(|mut stream| {
            while let Some(head) = read_head(&mut stream) {
                let head = String::from_utf8_lossy(&head).into_owned();
                let reply: &[u8] = if head.starts_with("GET /cut-length ") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"
                } else if head.starts_with("GET /cut-chunked ") {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123456789"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                let cut = reply.ends_with(b"0123456789");
                if stream.write_all(reply).is_err() || cut {
                    return;
                }
            }
        });
        let target_port = target.addr.port();
        let url = target.url("");

        let resp = common::blocking(move || {
            let req = |path: &str| {
                format!("GET {url}{path}?kubernetes-audience=cut HTTP/1.1\r\nHost: t\r\n\r\n")
            };
            // The proxy must close the client connection instead of waiting for the
            // next request: `exchange_until_close` panics if it hangs.
            let by_length = exchange_until_close(&proxy, req("/cut-length").as_bytes());
            let chunked = exchange_until_close(&proxy, req("/cut-chunked").as_bytes());
            (proxy, by_length, chunked)
        })
        .await;
        let (proxy, by_length, chunked) = resp;

        let (head, body) = split_response(&by_length);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains("Content-Length: 100\r\n"), "{head}");
        assert_eq!(
            body, b"0123456789",
            "fewer bytes than announced, then close"
        );

        let (head, body) = split_response(&chunked);
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
        assert!(
            !body.ends_with(b"0\r\n\r\n"),
            "a cut chunked body was completed: {:?}",
            String::from_utf8_lossy(&body)
        );

        // Neither broken connection went back to the pool; the next request dials anew.
        assert_eq!(proxy.running.context().upstream.idle_count(), 0);
        let before = target.connections();
        let agent = proxy.agent();
        let ok_url = target.url("/ok");
        let (status, body) = common::blocking(move || get(&agent, &ok_url)).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert_eq!(target.connections(), before + 1);
        assert!(eventually(|| proxy_to_target(target_port) <= 1));
    }));
}

/// A target that answers every request with an endless body (announced as 1 GiB), and counts
/// the connections on which writing failed because the proxy closed them.
fn endless_target(closed: Arc<AtomicUsize>) -> ThreadTarget {
    ThreadTarget::start(move |mut stream| {
        if read_head(&mut stream).is_none() {
            return;
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if stream.write_all(&chunk).is_err() {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    })
}

#[test]
fn a_client_vanishing_mid_download_closes_the_upstream_connection() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let proxy = start_proxy(&api, |_| {}).await;
        let closed = Arc::new(AtomicUsize::new(0));
        let target = endless_target(closed.clone());
        let target_port = target.addr.port();
        let proxy_port = proxy.addr().port();
        let url = target.url("/big?kubernetes-audience=dl");

        let proxy = common::blocking(move || {
            let mut stream = TcpStream::connect(proxy.addr()).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let req = format!("GET {url} HTTP/1.1\r\nHost: t\r\n\r\n");
            stream.write_all(req.as_bytes()).unwrap();
            let mut got = 0;
            let mut buf = vec![0; 64 * 1024];
            while got < 1024 * 1024 {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "the proxy closed early");
                got += n;
            }
            reset(stream);
            proxy
        })
        .await;

        assert!(
            eventually(|| closed.load(Ordering::SeqCst) == 1),
            "the target kept being read after the client left"
        );
        assert!(
            eventually(|| proxy_to_target(target_port) == 0),
            "a connection to the target is still open"
        );
        assert!(
            eventually(|| proxy_from_clients(proxy_port) == 0),
            "the proxy still holds the client connection"
        );
        assert_eq!(proxy.running.context().upstream.idle_count(), 0);
    }));
}

#[test]
fn a_client_vanishing_mid_upload_closes_the_upstream_connection() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let proxy = start_proxy(&api, |_| {}).await;
        // Reads the announced body; records how many body bytes arrived before EOF.
        let received = Arc::new(Mutex::new(None::<u64>));
        let seen = received.clone();
        let target = ThreadTarget::start(move |mut stream| {
            if read_head(&mut stream).is_none() {
                return;
            }
            let mut total = 0u64;
            let mut buf = vec![0; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
            *seen.lock().unwrap() = Some(total);
        });
        let target_port = target.addr.port();
        let proxy_port = proxy.addr().port();
        let url = target.url("/upload?kubernetes-audience=ul");

        let proxy = common::blocking(move || {
            let mut stream = TcpStream::connect(proxy.addr()).unwrap();
            let req = format!("POST {url} HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n");
            stream.write_all(req.as_bytes()).unwrap();
            let chunk = vec![b'u'; 64 * 1024];
            for _ in 0..16 {
                stream.write_all(&chunk).unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
            reset(stream);
            proxy
        })
        .await;

        assert!(
            eventually(|| received.lock().unwrap().is_some()),
            "the target never saw the upload end"
        );
        let got = received.lock().unwrap().unwrap();
        assert!(got < 64 * 1024 * 1024, "the target got {got} bytes");
        assert!(
            eventually(|| proxy_to_target(target_port) == 0),
            "a connection to the target is still open"
        );
        assert!(
            eventually(|| proxy_from_clients(proxy_port) == 0),
            "the proxy still holds the client connection"
        );
        assert_eq!(proxy.running.context().upstream.idle_count(), 0);
    }));
}

#[test]
fn a_reset_idle_pooled_connection_is_replaced_for_safe_requests_only() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let proxy = start_proxy(&api, |_| {}).await;
        // Keep-alive target that resets any connection idle for 300 ms.
        let requests = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = requests.clone();
        let target = ThreadTarget::start(move |mut stream| loop {
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    Ok(_) => return,
                    Err(_) if head.is_empty() => return reset(stream),
                    Err(_) => return,
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let line = head.lines().next().unwrap_or_default().to_string();
            log.lock().unwrap().push(line);
            // Request bodies are not read: the requests here send none or a tiny one.
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        });
        let agent = proxy.agent();
        let get_url = target.url("/g?kubernetes-audience=rst");
        let post_url = target.url("/p?kubernetes-audience=rst");

        let (first, second, post) = common::blocking(move || {
            let first = get(&agent, &get_url);
            std::thread::sleep(Duration::from_millis(800));
            let second = get(&agent, &get_url);
            std::thread::sleep(Duration::from_millis(800));
            let mut resp = agent.post(&post_url).send("abc").unwrap();
            let post = (
                resp.status().as_u16(),
                resp.body_mut().read_to_string().unwrap_or_default(),
            );
            (first, second, post)
        })
        .await;

        assert_eq!(first, (200, "ok".to_string()));
        assert_eq!(
            second,
            (200, "ok".to_string()),
            "the reset leaked to the client"
        );
        assert_eq!(
            target.connections(),
            2,
            "the GET was not retried on a new connection"
        );
        // A request with a body is not replayed: it may have reached the target already.
        assert_eq!(post.0, 502, "{}", post.1);
        let seen = requests.lock().unwrap().clone();
        assert_eq!(seen, ["GET /g HTTP/1.1", "GET /g HTTP/1.1"]);
        assert_eq!(target.connections(), 2);
    }));
}
