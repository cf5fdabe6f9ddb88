//! Plain-HTTP forwarding through the proxy: token injection, the audience parameter, header
//! rewriting, streaming, keep-alive, and every error a client can see. Each test checks what
//! the target received and what the client got back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::apiserver::FakeApiServer;
use common::harness::start_proxy;
use common::target::{
    pattern_checksum, raw_exchange, split_response, HttpTarget, Pattern, RawTarget,
};
use common::with_timeout;
use kube_audience_proxy::policy::AudiencePolicy;

fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent.get(url).call().expect("request through the proxy");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

#[test]
fn injects_a_token_for_the_audience_and_strips_the_parameter() {
    common::init_logging();
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let agent = proxy.agent();

        let url = target.url("/metrics?a=1&kubernetes-audience=prometheus-target&b=x%20y");
        let (status, body) = get(&agent, &url);

        assert_eq!((status, body.as_str()), (200, "ok"));
        let seen = target.last();
        assert_eq!(seen.target, "/metrics?a=1&b=x%20y");
        assert_eq!(seen.token_audience.as_deref(), Some("prometheus-target"));
        assert_eq!(api.calls_for("prometheus-target"), 1);
    }));
}

#[test]
fn a_request_without_audience_passes_unchanged() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;

        let resp = proxy
            .agent()
            .get(&target.url("/plain?x=1"))
            .header("Authorization", "Basic Y2xpZW50OnNlY3JldA==")
            .call()
            .unwrap();

        assert_eq!(resp.status().as_u16(), 200);
        let seen = target.last();
        assert_eq!(seen.target, "/plain?x=1");
        assert_eq!(
            seen.authorization.as_deref(),
            Some("Basic Y2xpZW50OnNlY3JldA==")
        );
        assert_eq!(api.total_calls(), 0);
    }));
}

#[test]
fn the_clients_authorization_is_replaced_when_an_audience_is_given() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;

        let resp = proxy
            .agent()
            .get(&target.url("/?kubernetes-audience=aud"))
            .header("Authorization", "Bearer client-supplied")
            .call()
            .unwrap();

        assert_eq!(resp.status().as_u16(), 200);
        let seen = target.last();
        assert_eq!(seen.token_audience.as_deref(), Some("aud"));
        assert!(!seen.authorization.unwrap().contains("client-supplied"));
    }));
}

#[test]
fn fifty_requests_make_one_token_request() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let agent = proxy.agent();

        for _ in 0..50 {
            let (status, _) = get(&agent, &target.url("/m?kubernetes-audience=one"));
            assert_eq!(status, 200);
        }

        assert_eq!(api.calls_for("one"), 1);
        assert_eq!(target.seen().len(), 50);
        assert!(target
            .seen()
            .iter()
            .all(|s| s.token_audience.as_deref() == Some("one")));
    }));
}

#[test]
fn forty_concurrent_first_requests_make_one_token_request() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        api.set_delay("busy", Duration::from_millis(300));
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let url = target.url("/m?kubernetes-audience=busy");

        let threads: Vec<_> = (0..40)
            .map(|_| {
                let agent = proxy.agent();
                let url = url.clone();
                std::thread::spawn(move || get(&agent, &url).0)
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 200);
        }

        assert_eq!(api.calls_for("busy"), 1);
        assert_eq!(target.seen().len(), 40);
    }));
}

#[test]
fn large_bodies_stream_both_ways() {
    const SIZE: u64 = 64 * 1024 * 1024;
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let agent = proxy.agent();

        // Download: the client checks every byte.
        let mut resp = agent
            .get(&target.url(&format!("/bytes/{SIZE}?kubernetes-audience=big")))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut state = common::target::CHECKSUM_START;
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            common::target::checksum(&buf[..n], &mut state);
        }
        assert_eq!(state, pattern_checksum(SIZE));

        // Upload, chunked (no length known up front): the target checks every byte.
        let mut resp = agent
            .post(&target.url("/upload?kubernetes-audience=big"))
            .send(ureq::SendBody::from_reader(&mut Pattern {
                pos: 0,
                len: SIZE,
            }))
            .unwrap();
        let (len, sum) = pattern_checksum(SIZE);
        assert_eq!(
            resp.body_mut().read_to_string().unwrap(),
            format!("{len} {sum}")
        );
        assert_eq!(target.last().body_len, SIZE);
        assert_eq!(target.last().token_audience.as_deref(), Some("big"));
    }));
}

#[test]
fn client_connections_and_upstream_connections_are_kept_alive() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;

        // Three requests on one client connection, written by hand to be sure of it.
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for i in 0..3 {
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                target.url(&format!("/k{i}?kubernetes-audience=ka")),
                target.addr()
            );
            client.write_all(req.as_bytes()).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"\r\n\r\nok") {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0, "closed after {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&got)
            );
        }

        assert_eq!(target.seen().len(), 3);
        assert_eq!(
            target.connections(),
            1,
            "the upstream connection was not reused"
        );
    }));
}

#[test]
fn origin_form_and_malformed_requests_get_400_and_the_proxy_keeps_serving() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;

        let resp = raw_exchange(proxy.addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = split_response(&resp);
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("not a proxy request"));

        let resp = raw_exchange(proxy.addr(), b"GET\x01 nonsense\r\n\r\n");
        assert!(split_response(&resp).0.starts_with("HTTP/1.1 400 "));

        let resp = raw_exchange(proxy.addr(), b"NOT HTTP AT ALL\r\n\r\n");
        assert!(split_response(&resp).0.starts_with("HTTP/1.1 400 "));

        let mut huge = format!("GET {} HTTP/1.1\r\nX-Big: ", target.url("/")).into_bytes();
        huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
        huge.extend_from_slice(b"\r\n\r\n");
        let resp = raw_exchange(proxy.addr(), &huge);
        assert!(split_response(&resp).0.starts_with("HTTP/1.1 431 "));

        let odd = format!(
            "GET {} HTTP/1.1\r\n\r\n",
            target.url("/?kubernetes-audience=a&kubernetes-audience=b")
        );
        let resp = raw_exchange(proxy.addr(), odd.as_bytes());
        let (head, body) = split_response(&resp);
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("more than one"));

        // Nothing of that reached the target or the API server, and the proxy still serves.
        assert!(target.seen().is_empty());
        assert_eq!(api.total_calls(), 0);
        let (status, _) = get(&proxy.agent(), &target.url("/after"));
        assert_eq!(status, 200);
    }));
}

#[test]
fn an_audience_outside_the_allowlist_gets_403_without_a_token_request() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |c| {
            c.policy = AudiencePolicy::parse("good,scoped=never.example").unwrap();
        })
        .await;
        let agent = proxy.agent();

        let (status, body) = get(&agent, &target.url("/?kubernetes-audience=evil"));
        assert_eq!(status, 403);
        assert!(body.contains("\"evil\" is not allowed"), "{body}");
        let (status, _) = get(&agent, &target.url("/?kubernetes-audience=scoped"));
        assert_eq!(status, 403);
        let (status, _) = get(&agent, &target.url("/?kubernetes-audience=good"));
        assert_eq!(status, 200);

        assert_eq!(api.calls_for("evil"), 0);
        assert_eq!(api.calls_for("scoped"), 0);
        assert_eq!(target.seen().len(), 1);
    }));
}

#[test]
fn a_failed_token_request_gets_502_with_the_api_reason_and_nothing_is_forwarded() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        api.fail_all(403);
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;

        let (status, body) = get(&proxy.agent(), &target.url("/?kubernetes-audience=denied"));

        assert_eq!(status, 502);
        assert!(body.contains("Forbidden"), "{body}");
        assert!(body.contains("denied"), "{body}");
        assert!(target.seen().is_empty());
    }));
}

#[test]
fn unreachable_slow_and_looping_upstreams_get_clear_statuses() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |c| {
            c.timeouts.upstream_response = Duration::from_millis(500);
        })
        .await;
        let agent = proxy.agent();

        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (status, body) = get(&agent, &format!("http://{closed}/"));
        assert_eq!(status, 502);
        assert!(body.contains("upstream unreachable"), "{body}");

        let (status, body) = get(&agent, &target.url("/slow/3000"));
        assert_eq!(status, 504, "{body}");

        let resp = raw_exchange(
            proxy.addr(),
            format!("GET http://{}/ HTTP/1.1\r\n\r\n", proxy.addr()).as_bytes(),
        );
        let (head, body) = split_response(&resp);
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("own listener"));
    }));
}

#[test]
fn hop_by_hop_headers_are_removed_and_host_is_kept() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = RawTarget::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Up\r\nX-Up: 1\r\nKeep-Alive: timeout=1\r\n\r\nok");
        let proxy = start_proxy(&api, |_| {}).await;

        let request = format!(
            "GET {} HTTP/1.1\r\nHost: Custom.Host:1234\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: s\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\n\
             Proxy-Authorization: Basic dTpw\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n",
            target.url("/h?kubernetes-audience=hop")
        );
        let resp = raw_exchange(proxy.addr(), request.as_bytes());
        let (head, body) = split_response(&resp);

        let sent = String::from_utf8(target.requests()[0].clone()).unwrap();
        assert!(sent.starts_with("GET /h HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("Host: Custom.Host:1234\r\n"), "{sent}");
        assert!(sent.contains("X-Kept: yes\r\n"));
        assert!(
            sent.contains("Authorization: Bearer fake-token.hop."),
            "{sent}"
        );
        for gone in [
            "X-Secret",
            "Keep-Alive",
            "Proxy-Connection",
            "Proxy-Authorization",
            "TE:",
            "Upgrade",
        ] {
            assert!(!sent.contains(gone), "{gone} was forwarded: {sent}");
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            !head.contains("X-Up") && !head.contains("Keep-Alive"),
            "{head}"
        );
        assert_eq!(body, b"ok");
    }));
}

#[test]
fn short_lived_tokens_are_refreshed_without_a_failed_request() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder()
            .token_lifetime(Duration::from_secs(2))
            .start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |_| {}).await;
        let agent = proxy.agent();

        let started = std::time::Instant::now();
        let mut served = 0;
        while started.elapsed() < Duration::from_secs(7) {
            let (status, body) = get(&agent, &target.url("/m?kubernetes-audience=brief"));
            assert_eq!(status, 200, "{body}");
            served += 1;
            std::thread::sleep(Duration::from_millis(100));
        }

        // Every request carried a token for its audience, and the token was renewed on the way.
        assert!(target
            .seen()
            .iter()
            .all(|s| s.token_audience.as_deref() == Some("brief")));
        assert_eq!(target.seen().len(), served);
        assert!(
            api.calls_for("brief") >= 3,
            "calls: {}",
            api.calls_for("brief")
        );
        let distinct: std::collections::HashSet<_> =
            target.seen().into_iter().map(|s| s.authorization).collect();
        assert!(distinct.len() >= 3);
    }));
}
