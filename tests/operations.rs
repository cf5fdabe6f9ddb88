//! Running the proxy as a sidecar: health, readiness and metrics, proxy credentials,
//! pod-bound tokens, the connection limit, and draining on shutdown.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::apiserver::FakeApiServer;
use common::harness::{start_proxy, TestProxy};
use common::target::{raw_exchange, split_response, trickling_target, HttpTarget};
use common::with_timeout;
use kube_audience_proxy::config::BoundPod;
use kube_audience_proxy::proxy::auth::ProxyCredentials;

fn ops_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = raw_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (head, body) = split_response(&response);
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, String::from_utf8(body).unwrap())
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// Checks the text exposition format: every sample belongs to a family announced by HELP and
/// TYPE, names are valid, values are numbers, counters end in `_total`.
fn assert_valid_exposition(text: &str) {
    let mut families: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(rest.len() > name.len() + 1, "HELP without text: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
            families.push((name.to_string(), kind.to_string()));
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name {name}"
        );
        let (family, kind) = families.last().expect("sample before any TYPE");
        let ok = name == family
            || (kind == "histogram"
                && [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name.to_string()));
        assert!(ok, "{name} is not part of family {family}");
    }
    assert!(!families.is_empty());
}

async fn proxy_with_metrics(api: &FakeApiServer) -> TestProxy {
    start_proxy(api, |c| {
        c.serving.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

#[test]
fn health_readiness_and_metrics_follow_the_proxy() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = proxy_with_metrics(&api).await;
        let ops = proxy.running.metrics_addr.unwrap();
        assert!(
            proxy.running.ca_file.exists(),
            "ready before the CA file exists"
        );

        let agent = proxy.agent();
        let (health, ready, before) = common::blocking(move || {
            (
                ops_get(ops, "/healthz"),
                ops_get(ops, "/readyz"),
                ops_get(ops, "/metrics"),
            )
        })
        .await;
        assert_eq!(health, (200, "ok\n".into()));
        assert_eq!(ready.0, 200);
        assert_valid_exposition(&before.1);

        let url = target.url("/m?kubernetes-audience=metered");
        let missing = format!(
            "http://{}/",
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        );
        let addr = proxy.addr();
        let after = common::blocking(move || {
            // ureq tunnels even plain HTTP through CONNECT: these count as intercepted.
            for _ in 0..3 {
                assert_eq!(agent.get(&url).call().unwrap().status().as_u16(), 200);
            }
            assert_eq!(agent.get(&missing).call().unwrap().status().as_u16(), 502);
            let raw = format!("GET {url} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let (head, _) = split_response(&raw_exchange(addr, raw.as_bytes()));
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            ops_get(ops, "/metrics").1
        })
        .await;

        assert_valid_exposition(&after);
        let requests = |mode: &str, outcome: &str| {
            format!("kube_audience_proxy_requests_total{{mode=\"{mode}\",outcome=\"{outcome}\"}}")
        };
        assert_eq!(metric(&before.1, &requests("intercepted", "2xx")), 0.0);
        let expected = [
            (requests("intercepted", "2xx"), 3.0),
            (requests("intercepted", "5xx"), 1.0),
            (requests("plain", "2xx"), 1.0),
            (requests("plain", "4xx"), 0.0),
            (
                "kube_audience_proxy_token_requests_total{result=\"success\"}".into(),
                1.0,
            ),
            (
                "kube_audience_proxy_token_requests_total{result=\"failure\"}".into(),
                0.0,
            ),
            ("kube_audience_proxy_token_cache_hits_total".into(), 3.0),
            ("kube_audience_proxy_token_cache_entries".into(), 1.0),
            (
                "kube_audience_proxy_added_latency_seconds_count".into(),
                4.0,
            ),
        ];
        for (series, value) in expected {
            assert_eq!(metric(&after, &series), value, "{series}");
        }
        // Four requests reached the target; most went over a pooled connection.
        let opened = metric(
            &after,
            "kube_audience_proxy_upstream_connections_opened_total",
        );
        let reused = metric(
            &after,
            "kube_audience_proxy_upstream_connections_reused_total",
        );
        assert!(
            opened >= 1.0 && reused >= 2.0,
            "opened={opened} reused={reused}"
        );

        // Draining: not ready any more, and the proxy listener stops accepting.
        assert!(proxy.running.drain(Duration::from_secs(5)).await);
        let ready = common::blocking(move || ops_get(ops, "/readyz")).await;
        assert_eq!(ready.0, 503);
        let (health, _) = common::blocking(move || ops_get(ops, "/healthz")).await;
        assert_eq!(health, 200);
        assert_eq!(api.calls_for("metered"), 1);
    }));
}

fn basic(user_password: &str) -> String {
    // The tests' own base64, so that they do not trust the proxy's decoder.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = user_password.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

#[test]
fn proxy_credentials_are_required_for_plain_and_connect_requests() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |c| {
            c.serving.proxy_credentials = Some(ProxyCredentials::parse("prom:pa55word").unwrap());
        })
        .await;
        let addr = proxy.addr();
        let url = target.url("/secret?kubernetes-audience=guarded");
        let authority = target.addr().to_string();

        common::blocking(move || {
            let request = |auth: &str| {
                let auth = if auth.is_empty() { String::new() } else { format!("Proxy-Authorization: {auth}\r\n") };
                let raw = format!("GET {url} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
                split_response(&raw_exchange(addr, raw.as_bytes()))
            };
            let (head, _) = request("");
            assert!(head.starts_with("HTTP/1.1 407 "), "{head}");
            assert!(head.contains("Proxy-Authenticate: Basic realm=\"kube-audience-proxy\"\r\n"), "{head}");
            let (head, _) = request(&basic("prom:wrong"));
            assert!(head.starts_with("HTTP/1.1 407 "), "{head}");
            let (head, body) = request(&basic("prom:pa55word"));
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            assert_eq!(body, b"ok");

            // CONNECT: refused without credentials, a working tunnel with them.
            let connect = |auth: &str| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let auth = if auth.is_empty() { String::new() } else { format!("Proxy-Authorization: {auth}\r\n") };
                write!(s, "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n").unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                (s, String::from_utf8_lossy(&buf[..n]).into_owned())
            };
            let (_, reply) = connect("");
            assert!(reply.starts_with("HTTP/1.1 407 "), "{reply}");
            let (mut tunnel, reply) = connect(&basic("prom:pa55word"));
            assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
            // Plain HTTP inside the tunnel needs no further credentials.
            write!(tunnel, "GET /in-tunnel?kubernetes-audience=guarded HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            let mut rest = Vec::new();
            let _ = tunnel.read_to_end(&mut rest);
            assert!(split_response(&rest).0.starts_with("HTTP/1.1 200 "));
        })
        .await;

        // Only the authenticated requests arrived, and the credentials never did.
        let seen = target.seen();
        assert_eq!(seen.len(), 2);
        assert!(seen
            .iter()
            .all(|s| !s.header_names.contains(&"proxy-authorization".to_string())));
        assert!(seen
            .iter()
            .all(|s| s.token_audience.as_deref() == Some("guarded")));
    }));
}

#[test]
fn tokens_are_bound_to_the_pod_exactly_when_both_values_are_set() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        api.add_pod("prom-0", "0000-fake-uid");
        let target = HttpTarget::start().await;
        let pod = |name: &str, uid: &str| BoundPod {
            name: name.into(),
            uid: uid.into(),
        };

        let bound = Box::pin(start_proxy(&api, |c| {
            c.serving.bound_pod = Some(pod("prom-0", "0000-fake-uid"))
        }))
        .await;
        let unbound = Box::pin(start_proxy(&api, |_| {})).await;
        let stale = Box::pin(start_proxy(&api, |c| {
            c.serving.bound_pod = Some(pod("prom-0", "1111-old-uid"))
        }))
        .await;
        let gone = Box::pin(start_proxy(&api, |c| {
            c.serving.bound_pod = Some(pod("prom-9", "2222"))
        }))
        .await;
        let get = |proxy: &TestProxy, audience: &str| {
            let agent = proxy.agent();
            let url = target.url(&format!("/?kubernetes-audience={audience}"));
            common::blocking(move || {
                let mut resp = agent.get(&url).call().unwrap();
                (
                    resp.status().as_u16(),
                    resp.body_mut().read_to_string().unwrap(),
                )
            })
        };

        assert_eq!(get(&bound, "bound").await.0, 200);
        assert_eq!(get(&unbound, "unbound").await.0, 200);
        // A wrong pod: the API's answer reaches the client, and nothing reaches the target.
        let (status, body) = get(&stale, "stale").await;
        assert_eq!(status, 502);
        assert!(
            body.contains("409 Conflict") && body.contains("1111-old-uid"),
            "{body}"
        );
        let (status, body) = get(&gone, "gone").await;
        assert_eq!(status, 502);
        assert!(
            body.contains("404 NotFound") && body.contains("prom-9"),
            "{body}"
        );
        assert_eq!(target.seen().len(), 2);

        // Exactly the bound proxies asked for a bound token.
        let refs = api.bound_object_refs();
        assert_eq!(refs.len(), 4, "{refs:?}");
        assert_eq!(refs.iter().filter(|r| r.is_null()).count(), 1, "{refs:?}");
        let first = refs
            .iter()
            .find(|r| r["uid"] == "0000-fake-uid")
            .expect("bound request");
        assert_eq!(first["kind"], "Pod");
        assert_eq!(first["apiVersion"], "v1");
        assert_eq!(first["name"], "prom-0");
    }));
}

#[test]
fn a_burst_beyond_the_connection_limit_waits_and_is_served() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let target = HttpTarget::start().await;
        let proxy = start_proxy(&api, |c| c.serving.max_connections = 4).await;
        let addr = proxy.addr();
        let url = target.url("/slow/100?kubernetes-audience=burst");

        let statuses = common::blocking(move || {
            let clients: Vec<_> = (0..24)
                .map(|_| {
                    let url = url.clone();
                    std::thread::spawn(move || {
                        let raw =
                            format!("GET {url} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                        split_response(&raw_exchange(addr, raw.as_bytes())).0
                    })
                })
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>()
        })
        .await;

        for head in &statuses {
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        }
        assert_eq!(target.seen().len(), 24);
    }));
}

#[test]
fn draining_lets_a_long_download_finish_then_stops() {
    common::block_on(with_timeout(async {
        let api = FakeApiServer::builder().start();
        let slow = trickling_target(Duration::from_millis(1500));
        let proxy = start_proxy(&api, |_| {}).await;
        let addr = proxy.addr();

        let download = std::thread::spawn(move || {
            let raw = format!("GET http://{slow}/big HTTP/1.1\r\nHost: t\r\n\r\n");
            let response = raw_exchange(addr, raw.as_bytes());
            split_response(&response).1.len()
        });
        std::thread::sleep(Duration::from_millis(300));
        let idle = TcpStream::connect(addr).unwrap();

        let started = Instant::now();
        assert!(
            proxy.running.drain(Duration::from_secs(10)).await,
            "connections left open"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "drain did not wait"
        );
        assert_eq!(
            download.join().unwrap(),
            10_000,
            "the download was cut short"
        );
        drop(idle);

        // No longer accepting: a new connection is refused or never answered.
        let late = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        if let Ok(mut late) = late {
            late.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = late.write_all(format!("GET http://{slow}/ HTTP/1.1\r\n\r\n").as_bytes());
            let mut buf = [0u8; 16];
            assert!(
                !matches!(late.read(&mut buf), Ok(n) if n > 0),
                "served after draining"
            );
        }
    }));
}
