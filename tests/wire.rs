//! Wire-level cases that general-purpose HTTP engines get wrong and that real exporters and
//! clients produce: each is checked byte for byte through the proxy.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::apiserver::FakeApiServer;
use common::harness::{start_proxy, TestProxy};
use common::target::{raw_exchange, split_response, RawTarget};
use common::with_timeout;

/// Sends one request for `path` on `target` through `proxy` and returns head and body.
fn through(proxy: &TestProxy, target: &RawTarget, method: &str, path: &str) -> (String, Vec<u8>) {
    let request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.url(path),
        target.addr()
    );
    split_response(&raw_exchange(proxy.addr(), request.as_bytes()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn run(test: impl FnOnce(&TestProxy) + Send + 'static) {
    common::block_on(with_timeout(async move {
        let api = FakeApiServer::builder().start();
        let proxy = start_proxy(&api, |_| {}).await;
        common::blocking(move || test(&proxy)).await;
    }));
}

#[test]
fn a_response_without_date_passes_intact() {
    run(|proxy| {
        let target =
            RawTarget::start(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        let (head, body) = through(proxy, &target, "GET", "/");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("date:"), "{head}");
        assert!(head.contains("X-A: b\r\n"));
        assert_eq!(body, b"hello");
    });
}

#[test]
fn responses_without_a_body_keep_their_content_length_and_do_not_hang() {
    run(|proxy| {
        let head_target = RawTarget::start(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
        let (head, body) = through(proxy, &head_target, "HEAD", "/");
        assert!(head.contains("Content-Length: 1234\r\n"), "{head}");
        assert!(body.is_empty());

        for status in ["304 Not Modified", "204 No Content"] {
            let response =
                format!("HTTP/1.1 {status}\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n");
            let target = RawTarget::start(Box::leak(response.into_bytes().into_boxed_slice()));
            let (head, body) = through(proxy, &target, "GET", "/");
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{head}"
            );
            assert!(head.contains("ETag: \"x\"\r\n"), "{head}");
            assert!(body.is_empty(), "{status} grew a body");
        }
    });
}

#[test]
fn close_delimited_and_http_1_0_responses_arrive_whole() {
    run(|proxy| {
        let body = "# HELP up a metric\nup 1\n".repeat(500);
        let response = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}");
        let target = RawTarget::start(Box::leak(response.into_bytes().into_boxed_slice()));

        // An HTTP/1.1 client gets the body re-framed as chunked; ureq decodes it.
        let agent = proxy.agent();
        let mut resp = agent.get(&target.url("/metrics")).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.body_mut().read_to_string().unwrap(), body);

        // Byte for byte on the wire: chunked towards HTTP/1.1.
        let (head, raw) = through(proxy, &target, "GET", "/metrics");
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
        assert!(raw.ends_with(b"0\r\n\r\n"));
    });
}

#[test]
fn an_http_1_0_client_gets_no_chunked_framing_and_a_close() {
    run(|proxy| {
        let target = RawTarget::start(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        );
        let request = format!("GET {} HTTP/1.0\r\n\r\n", target.url("/old"));
        let (head, body) = split_response(&raw_exchange(proxy.addr(), request.as_bytes()));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("chunked"), "{head}");
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert_eq!(body, b"hello world");
        // The target got a Host field even though the client sent none.
        let sent = String::from_utf8(target.requests()[0].clone()).unwrap();
        assert!(
            sent.contains(&format!("Host: {}\r\n", target.addr())),
            "{sent}"
        );
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    run(|proxy| {
        let target = RawTarget::start_with(
            |head| {
                let line = String::from_utf8_lossy(head)
                    .lines()
                    .next()
                    .unwrap()
                    .to_string();
                let path = line.split(' ').nth(1).unwrap().to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                    path.len()
                )
                .into_bytes()
            },
            false,
        );
        let mut request = Vec::new();
        for p in ["/one", "/two", "/three"] {
            request.extend_from_slice(
                format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", target.url(p)).as_bytes(),
            );
        }
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(&request).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"/three") {
            let n = client.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "connection closed early: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        let one = text.find("\r\n\r\n/one").unwrap();
        let two = text.find("\r\n\r\n/two").unwrap();
        assert!(one < two, "{text}");
    });
}

#[test]
fn header_values_that_are_not_utf8_pass_both_ways() {
    run(|proxy| {
        let target =
            RawTarget::start(b"HTTP/1.1 200 OK\r\nX-Back: caf\xe9\r\nContent-Length: 0\r\n\r\n");
        let mut request =
            format!("GET {} HTTP/1.1\r\nHost: t\r\nX-Name: ", target.url("/u")).into_bytes();
        request.extend_from_slice(b"na\xefve\r\nConnection: close\r\n\r\n");
        let resp = raw_exchange(proxy.addr(), &request);
        assert!(
            contains(&resp, b"X-Back: caf\xe9\r\n"),
            "{:?}",
            String::from_utf8_lossy(&resp)
        );
        let sent = &target.requests()[0];
        assert!(contains(sent, b"X-Name: na\xefve\r\n"));
    });
}

#[test]
fn an_upstream_closing_mid_body_is_seen_as_truncation() {
    run(|proxy| {
        let target = RawTarget::start(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part");
        let (head, body) = through(proxy, &target, "GET", "/cut");
        assert!(head.contains("Content-Length: 100\r\n"), "{head}");
        // The connection closes after fewer bytes than announced: the client can tell.
        assert_eq!(body, b"only part");

        let chunked =
            RawTarget::start(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart");
        let (_, body) = through(proxy, &chunked, "GET", "/cut");
        assert!(!body.ends_with(b"0\r\n\r\n"), "a cut body looked complete");
    });
}

#[test]
fn a_half_sent_head_gets_408_and_an_idle_connection_is_closed() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let proxy = start_proxy(&api, |c| {
            c.timeouts.client_head = Duration::from_millis(300);
            c.timeouts.client_idle = Duration::from_millis(600);
        })
        .await;
        let addr = proxy.addr();
        common::blocking(move || {
            let mut slow = TcpStream::connect(addr).unwrap();
            slow.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            slow.write_all(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            let mut got = Vec::new();
            let _ = slow.read_to_end(&mut got);
            let (head, _) = split_response(&got);
            assert!(head.starts_with("HTTP/1.1 408 "), "{head}");

            let mut idle = TcpStream::connect(addr).unwrap();
            idle.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut got = Vec::new();
            let n = idle.read_to_end(&mut got).unwrap();
            assert_eq!(
                n,
                0,
                "an idle connection got {:?}",
                String::from_utf8_lossy(&got)
            );
        })
        .await;
    }));
}

#[test]
fn an_http_1_1_request_without_host_is_served_with_the_targets_authority() {
    run(|proxy| {
        let target = RawTarget::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let request = format!(
            "GET {} HTTP/1.1\r\nConnection: close\r\n\r\n",
            target.url("/nohost")
        );
        let (head, body) = split_response(&raw_exchange(proxy.addr(), request.as_bytes()));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, b"ok");
        let sent = String::from_utf8(target.requests()[0].clone()).unwrap();
        assert!(
            sent.contains(&format!("Host: {}\r\n", target.addr())),
            "{sent}"
        );
    });
}
