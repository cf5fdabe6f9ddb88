//! What an operator watches: `/healthz`, `/readyz` and `/metrics` on a listener of their
//! own, which never proxies, plus the counters the proxy updates as it works.
//!
//! The metrics are a handful of series, so they are kept as atomics and written out in the
//! Prometheus text format by hand rather than through a metrics library.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_std::io::WriteExt;
use async_std::net::TcpListener;
use log::{debug, warn};

use crate::http1::{self, BufIo, Header};
use crate::proxy::ProxyContext;
use crate::tls::Interceptor;

/// Upper bounds of the latency histogram buckets, in seconds: from a cache hit on loopback
/// (tens of microseconds) to a slow TokenRequest or upstream connect (seconds).
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// How a request ended, for the requests counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status was sent (by the upstream or by the proxy).
    Status(u16),
    /// The exchange broke off after the response had started, or before any response.
    Aborted,
}

/// Counters updated on the request path. Lock-free: each update is one or two atomic adds.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `[intercepted as usize][class]`, class 0..=4 for 1xx..5xx, 5 for aborted.
    requests: [[AtomicU64; 6]; 2],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Client connections open right now.
    pub connections: AtomicUsize,
}

impl Metrics {
    /// Counts one request.
    pub fn record_request(&self, intercepted: bool, outcome: Outcome) {
        let class = match outcome {
            Outcome::Status(s) => (usize::from(s / 100).clamp(1, 5)) - 1,
            Outcome::Aborted => 5,
        };
        self.requests[usize::from(intercepted)][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time the proxy spent on a request before handing it to the upstream:
    /// parsing, the token (cache or TokenRequest) and the upstream connection.
    pub fn record_added_latency(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|&b| secs <= b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Start-up and shutdown state, for `/readyz` and for the connection loops.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
    /// Dropped when draining starts, which wakes every [`Health::drained`] waiter at once.
    drain_tx: std::sync::Mutex<Option<async_std::channel::Sender<()>>>,
    drain_rx: async_std::channel::Receiver<()>,
}

impl Default for Health {
    fn default() -> Self {
        let (tx, rx) = async_std::channel::bounded(1);
        Health {
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_tx: std::sync::Mutex::new(Some(tx)),
            drain_rx: rx,
        }
    }
}

impl Health {
    /// Called once the CA file is written and every listener is bound.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Called when shutdown begins: from then on the proxy reports not ready.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drain_tx.lock().expect("drain sender poisoned").take();
    }

    /// Resolves once draining has started.
    pub async fn drained(&self) {
        // Nothing is ever sent: `recv` returns when the sender is dropped.
        let _ = self.drain_rx.recv().await;
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_draining()
    }
}

/// What the ops listener reports on.
pub struct OpsState {
    pub proxy: Arc<ProxyContext>,
    pub interceptor: Arc<Interceptor>,
}

/// Serves `/healthz`, `/readyz` and `/metrics` until the task is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<OpsState>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("metrics listener accept failed, retrying in 100ms error=\"{e}\"");
                async_std::task::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        async_std::task::spawn(async move {
            let _ = stream.set_nodelay(true);
            answer(BufIo::new(stream), &state, peer).await;
        });
    }
}

async fn answer(mut io: BufIo<async_std::net::TcpStream>, state: &OpsState, peer: SocketAddr) {
    let wait = Duration::from_secs(10);
    loop {
        let Ok(head) = io.read_request_head(wait, wait).await else {
            return;
        };
        let path = head.target.split('?').next().unwrap_or_default();
        let (status, content_type, body) = match (head.method.as_str(), path) {
            ("GET" | "HEAD", "/healthz") => (200, "text/plain", "ok\n".to_string()),
            ("GET" | "HEAD", "/readyz") if state.proxy.health.is_ready() => {
                (200, "text/plain", "ready\n".to_string())
            }
            ("GET" | "HEAD", "/readyz") => (503, "text/plain", "not ready\n".to_string()),
            ("GET" | "HEAD", "/metrics") => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                render_metrics(state),
            ),
            ("GET" | "HEAD", _) => (404, "text/plain", "not found\n".to_string()),
            _ => (405, "text/plain", "method not allowed\n".to_string()),
        };
        debug!("ops request peer={peer} path={path} status={status}");
        let close =
            head.minor_version == 0 || http1::has_token(&head.headers, "connection", "close");
        let mut headers = vec![
            Header::new("Content-Type", content_type),
            Header::new("Content-Length", body.len().to_string()),
        ];
        if close {
            headers.push(Header::new("Connection", "close"));
        }
        let reason: &[u8] = match status {
            200 => b"OK",
            404 => b"Not Found",
            405 => b"Method Not Allowed",
            _ => b"Service Unavailable",
        };
        let mut out = http1::encode_response_head(status, reason, &headers);
        if head.method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        if io.get_mut().write_all(&out).await.is_err() || close {
            return;
        }
    }
}

/// The `/metrics` body in the Prometheus text exposition format.
pub fn render_metrics(state: &OpsState) -> String {
    let ctx = &state.proxy;
    let m = &ctx.metrics;
    let mut out = String::with_capacity(4096);

    family(&mut out, "requests_total", "counter", "Requests handled, by outcome, and by whether they came inside a CONNECT tunnel (intercepted) or not (plain).");
    for (mode, intercepted) in [("plain", 0), ("intercepted", 1)] {
        for (class, outcome) in ["1xx", "2xx", "3xx", "4xx", "5xx", "aborted"]
            .iter()
            .enumerate()
        {
            let n = m.requests[intercepted][class].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "kube_audience_proxy_requests_total{{mode=\"{mode}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }

    family(&mut out, "added_latency_seconds", "histogram", "Time from a request's head to handing it to the upstream: token lookup or request and upstream connection.");
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
        cumulative += m.latency_buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "kube_audience_proxy_added_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = m.latency_count.load(Ordering::Relaxed);
    let sum = m.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(
        out,
        "kube_audience_proxy_added_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "kube_audience_proxy_added_latency_seconds_sum {sum}");
    let _ = writeln!(
        out,
        "kube_audience_proxy_added_latency_seconds_count {count}"
    );

    let tokens = ctx.tokens.stats();
    family(
        &mut out,
        "token_requests_total",
        "counter",
        "TokenRequests sent to the API server, by result.",
    );
    let _ = writeln!(
        out,
        "kube_audience_proxy_token_requests_total{{result=\"success\"}} {}",
        tokens.successes
    );
    let _ = writeln!(
        out,
        "kube_audience_proxy_token_requests_total{{result=\"failure\"}} {}",
        tokens.failures
    );
    simple(
        &mut out,
        "token_cache_hits_total",
        "counter",
        "Token lookups answered from the cache.",
        tokens.hits,
    );
    simple(
        &mut out,
        "token_cache_misses_total",
        "counter",
        "Token lookups that waited for a TokenRequest or got a remembered failure.",
        tokens.misses,
    );
    simple(
        &mut out,
        "token_cache_refreshes_total",
        "counter",
        "Background refreshes started while a valid token was still served.",
        tokens.refreshes,
    );
    simple(
        &mut out,
        "token_cache_entries",
        "gauge",
        "Audiences in the token cache.",
        tokens.entries as u64,
    );

    simple(
        &mut out,
        "leaf_certificates_issued_total",
        "counter",
        "Leaf certificates issued for intercepted tunnels.",
        state.interceptor.leaves_issued(),
    );
    simple(
        &mut out,
        "leaf_certificates_cached",
        "gauge",
        "Leaf certificates in the cache.",
        state.interceptor.leaves_cached() as u64,
    );

    let up = &ctx.upstream.stats;
    simple(
        &mut out,
        "upstream_connections_opened_total",
        "counter",
        "Connections opened to upstream targets.",
        up.opened.load(Ordering::Relaxed),
    );
    simple(
        &mut out,
        "upstream_connections_reused_total",
        "counter",
        "Requests sent on a pooled upstream connection.",
        up.reused.load(Ordering::Relaxed),
    );
    simple(
        &mut out,
        "upstream_connections_idle",
        "gauge",
        "Idle upstream connections in the pool.",
        ctx.upstream.idle_count() as u64,
    );
    simple(
        &mut out,
        "client_connections",
        "gauge",
        "Client connections open.",
        m.connections.load(Ordering::Relaxed) as u64,
    );
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP kube_audience_proxy_{name} {help}");
    let _ = writeln!(out, "# TYPE kube_audience_proxy_{name} {kind}");
}

fn simple(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "kube_audience_proxy_{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_class() {
        let m = Metrics::default();
        m.record_request(false, Outcome::Status(200));
        m.record_request(false, Outcome::Status(204));
        m.record_request(true, Outcome::Status(502));
        m.record_request(true, Outcome::Aborted);
        m.record_request(true, Outcome::Status(999));
        assert_eq!(m.requests[0][1].load(Ordering::Relaxed), 2);
        assert_eq!(m.requests[1][4].load(Ordering::Relaxed), 2);
        assert_eq!(m.requests[1][5].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let m = Metrics::default();
        m.record_added_latency(Duration::from_micros(50));
        m.record_added_latency(Duration::from_micros(100));
        m.record_added_latency(Duration::from_millis(3));
        m.record_added_latency(Duration::from_secs(10));
        assert_eq!(m.latency_buckets[0].load(Ordering::Relaxed), 2);
        assert_eq!(m.latency_buckets[5].load(Ordering::Relaxed), 1);
        assert_eq!(m.latency_count.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn readiness_needs_start_up_and_ends_with_draining() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_ready();
        assert!(h.is_ready());
        h.set_draining();
        assert!(!h.is_ready());
    }
}
