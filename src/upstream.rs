//! Connections to targets: resolving, dialing with a timeout, TLS to the target, and a pool
//! of idle keep-alive connections shared by every client connection and tunnel.
//!
//! This module does not speak HTTP beyond owning a [`BufIo`] per connection; the proxy
//! decides when a connection is clean enough to go back to the pool.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_std::future::timeout;
use async_std::io::{Read as AsyncRead, Write as AsyncWrite};
use async_std::net::{TcpStream, ToSocketAddrs};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use crate::http1::BufIo;

/// Idle connections kept per target. Prometheus scrapes each target over one connection at
/// a time, so a few are plenty; more would only hold sockets open on the target.
const MAX_IDLE_PER_TARGET: usize = 8;

/// Idle connections kept in all. Past it, a returned connection is closed instead.
const MAX_IDLE_TOTAL: usize = 512;

/// Where a request goes: scheme, host as the client named it, and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub tls: bool,
    /// Lowercase, without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn new(tls: bool, host: &str, port: u16) -> Target {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Target {
            tls,
            host: host.to_ascii_lowercase(),
            port,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why no connection to a target could be made.
#[derive(Debug)]
pub enum UpstreamError {
    /// The name did not resolve.
    Resolve { target: String, source: io::Error },
    /// The target resolves to one of the proxy's own listeners: forwarding would loop.
    Loop { target: String },
    /// Every resolved address refused or failed.
    Connect { target: String, source: io::Error },
    /// Connecting took longer than the connect timeout.
    ConnectTimeout { target: String, after: Duration },
    /// The target's name cannot be used for TLS (SNI and verification).
    ServerName { target: String },
    /// The TLS handshake with the target failed, verification included.
    Tls { target: String, source: io::Error },
    /// A TLS target was asked for, but upstream TLS is not configured.
    NoTls { target: String },
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Resolve { target, source } => {
                write!(f, "resolve {target}: {source}")
            }
            UpstreamError::Loop { target } => {
                write!(f, "{target} is this proxy's own listener; refusing to loop")
            }
            UpstreamError::Connect { target, source } => write!(f, "connect to {target}: {source}"),
            UpstreamError::ConnectTimeout { target, after } => {
                write!(
                    f,
                    "connect to {target}: timed out after {}s",
                    after.as_secs_f32()
                )
            }
            UpstreamError::ServerName { target } => {
                write!(f, "{target}: not a valid TLS server name")
            }
            UpstreamError::Tls { target, source } => {
                write!(f, "TLS handshake with {target} failed: {source}")
            }
            UpstreamError::NoTls { target } => {
                write!(f, "{target}: TLS to upstreams is not configured")
            }
        }
    }
}

impl std::error::Error for UpstreamError {}

impl UpstreamError {
    /// Whether the failure is a time-out (504) rather than a refusal (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::ConnectTimeout { .. })
    }
}

/// The TLS client configuration for targets, possibly still being built.
struct TlsSlot {
    ready: Arc<OnceLock<Option<TlsConnector>>>,
    /// Closed once `ready` is set; `recv` on it is how a dial waits.
    done_rx: async_std::channel::Receiver<()>,
    done_tx: Mutex<Option<async_std::channel::Sender<()>>>,
}

impl Default for TlsSlot {
    fn default() -> Self {
        let (tx, rx) = async_std::channel::bounded(1);
        TlsSlot {
            ready: Arc::new(OnceLock::new()),
            done_rx: rx,
            done_tx: Mutex::new(Some(tx)),
        }
    }
}

impl TlsSlot {
    async fn connector(&self) -> Option<&TlsConnector> {
        if self.ready.get().is_none() {
            let _ = self.done_rx.recv().await;
        }
        self.ready.get().and_then(Option::as_ref)
    }
}

/// A connection to a target, plain or TLS.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_close(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// A connection checked out of the pool or freshly dialed.
pub struct Conn {
    pub io: BufIo<UpstreamIo>,
    pub target: Target,
    /// Whether it had served a request before: a failure on first use of a reused connection
    /// may just mean the target closed it while idle.
    pub reused: bool,
}

struct Idle {
    io: BufIo<UpstreamIo>,
    since: Instant,
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub opened: AtomicU64,
    pub reused: AtomicU64,
}

/// Dials targets and keeps idle connections for reuse.
pub struct Upstream {
    tls: TlsSlot,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Addresses the proxy listens on, to refuse requests that would loop back into it.
    own_addrs: Mutex<Vec<SocketAddr>>,
    idle: Mutex<HashMap<Target, Vec<Idle>>>,
    pub stats: UpstreamStats,
}

impl Upstream {
    /// `tls` is the client configuration for `https` targets; `None` refuses them.
    pub fn new(
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Upstream {
        let slot = TlsSlot::default();
        let _ = slot.ready.set(tls.map(TlsConnector::from));
        Upstream::with_slot(slot, connect_timeout, idle_timeout)
    }

    /// Like [`Upstream::new`], with the TLS configuration built by `load` on a blocking
    /// thread, started now. Plain-HTTP targets are served meanwhile; a TLS target waits for
    /// it. Building it means parsing the system trust store, a few milliseconds that need not
    /// delay the first request.
    pub fn with_tls_loading(
        load: impl FnOnce() -> Option<Arc<rustls::ClientConfig>> + Send + 'static,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Upstream {
        let slot = TlsSlot::default();
        let ready = slot.ready.clone();
        let done = slot.done_tx.lock().expect("tls slot poisoned").take();
        async_std::task::spawn_blocking(move || {
            let _ = ready.set(load().map(TlsConnector::from));
            // Dropping the sender wakes every dial waiting for the configuration.
            drop(done);
        });
        Upstream::with_slot(slot, connect_timeout, idle_timeout)
    }

    fn with_slot(tls: TlsSlot, connect_timeout: Duration, idle_timeout: Duration) -> Upstream {
        Upstream {
            tls,
            connect_timeout,
            idle_timeout,
            own_addrs: Mutex::new(Vec::new()),
            idle: Mutex::new(HashMap::new()),
            stats: UpstreamStats::default(),
        }
    }

    /// Registers a listener address of this proxy, so requests to it are refused.
    pub fn add_own_addr(&self, addr: SocketAddr) {
        self.own_addrs
            .lock()
            .expect("own_addrs poisoned")
            .push(addr);
    }

    /// An idle pooled connection to `target`, or a new one.
    pub async fn connect(&self, target: &Target) -> Result<Conn, UpstreamError> {
        if let Some(io) = self.take_idle(target) {
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(Conn {
                io,
                target: target.clone(),
                reused: true,
            });
        }
        self.connect_new(target).await
    }

    /// Always dials: used to retry after a reused connection turned out to be dead.
    pub async fn connect_new(&self, target: &Target) -> Result<Conn, UpstreamError> {
        let tcp = match timeout(self.connect_timeout, self.dial(target)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    target: target.to_string(),
                    after: self.connect_timeout,
                })
            }
        };
        let io = if target.tls {
            // Timed apart from the TCP connect: a target that accepts connections but never
            // finishes a handshake (a plain-HTTP port, say) is a TLS problem, not the network.
            match timeout(self.connect_timeout, self.handshake(target, tcp)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(UpstreamError::Tls {
                        target: target.to_string(),
                        source: io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
                    })
                }
            }
        } else {
            UpstreamIo::Plain(tcp)
        };
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            io: BufIo::new(io),
            target: target.clone(),
            reused: false,
        })
    }

    /// Puts a connection back for reuse. The caller guarantees that the last response was
    /// read completely and that the target did not ask to close.
    pub fn release(&self, conn: Conn) {
        if !conn.io.buffered().is_empty() {
            // Bytes beyond the response: the target is out of step with us.
            return;
        }
        let mut idle = self.idle.lock().expect("idle pool poisoned");
        let now = Instant::now();
        let total: usize = idle.values().map(Vec::len).sum();
        if total >= MAX_IDLE_TOTAL {
            return;
        }
        let list = idle.entry(conn.target).or_default();
        list.retain(|c| now.duration_since(c.since) < self.idle_timeout);
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(Idle {
                io: conn.io,
                since: now,
            });
        }
    }

    /// Closes the idle connections that have outlived the idle timeout, so that neither the
    /// proxy nor the target holds their sockets longer than that. Called periodically.
    pub fn close_expired(&self) -> usize {
        let mut idle = self.idle.lock().expect("idle pool poisoned");
        let now = Instant::now();
        let mut closed = 0;
        idle.retain(|_, list| {
            let before = list.len();
            list.retain(|c| now.duration_since(c.since) < self.idle_timeout);
            closed += before - list.len();
            !list.is_empty()
        });
        closed
    }

    /// How often [`Upstream::close_expired`] should run: a fraction of the idle timeout, so
    /// that a connection lives at most about 1.25 times the timeout.
    pub fn reap_interval(&self) -> Duration {
        (self.idle_timeout / 4).max(Duration::from_millis(250))
    }

    /// Number of idle connections held, for metrics and tests.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .expect("idle pool poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    fn take_idle(&self, target: &Target) -> Option<BufIo<UpstreamIo>> {
        let mut idle = self.idle.lock().expect("idle pool poisoned");
        let list = idle.get_mut(target)?;
        let now = Instant::now();
        // Most recently used first: it is the least likely to have been closed by the target.
        while let Some(conn) = list.pop() {
            if now.duration_since(conn.since) < self.idle_timeout {
                return Some(conn.io);
            }
        }
        idle.remove(target);
        None
    }

    async fn dial(&self, target: &Target) -> Result<TcpStream, UpstreamError> {
        let name = target.to_string();
        let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .await
            .map_err(|source| UpstreamError::Resolve {
                target: name.clone(),
                source,
            })?
            .collect();
        if addrs.iter().any(|a| self.is_own_addr(a)) {
            return Err(UpstreamError::Loop { target: name });
        }

        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let Some(tcp) = stream else {
            return Err(UpstreamError::Connect {
                target: name,
                source: last_error,
            });
        };
        // Without it, small writes wait for the peer's delayed ACK: tens of milliseconds
        // per request and per TLS handshake.
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn handshake(
        &self,
        target: &Target,
        tcp: TcpStream,
    ) -> Result<UpstreamIo, UpstreamError> {
        let name = target.to_string();
        let Some(connector) = self.tls.connector().await else {
            return Err(UpstreamError::NoTls { target: name });
        };
        let server_name = server_name(&target.host).ok_or_else(|| UpstreamError::ServerName {
            target: name.clone(),
        })?;
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|source| UpstreamError::Tls {
                target: name,
                source,
            })?;
        Ok(UpstreamIo::Tls(Box::new(tls)))
    }

    fn is_own_addr(&self, addr: &SocketAddr) -> bool {
        let own = self.own_addrs.lock().expect("own_addrs poisoned");
        own.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || (l.ip().is_unspecified() && (addr.ip().is_loopback() || is_local(addr))))
        })
    }
}

/// Whether `addr` is an address of this machine: binding to it succeeds only if it is.
fn is_local(addr: &SocketAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}

/// The TLS server name for a host: an IP address or a DNS name.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_display_with_brackets_for_ipv6() {
        assert_eq!(
            Target::new(false, "[FD00::1]", 80).to_string(),
            "[fd00::1]:80"
        );
        assert_eq!(
            Target::new(true, "Example.COM", 443).to_string(),
            "example.com:443"
        );
    }

    #[test]
    fn server_names_accept_ips_and_names() {
        assert!(matches!(
            server_name("10.0.0.1"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("svc.ns.svc"),
            Some(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name").is_none());
    }

    #[test]
    fn expired_idle_connections_are_closed_and_fresh_ones_kept() {
        async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let idle = Duration::from_millis(200);
            let up = Upstream::new(None, Duration::from_secs(1), idle);
            let target = Target::new(false, "127.0.0.1", addr.port());

            let old = up.connect(&target).await.unwrap();
            up.release(old);
            assert_eq!(up.close_expired(), 0, "a fresh connection was closed");
            async_std::task::sleep(idle + Duration::from_millis(50)).await;
            assert_eq!(up.idle_count(), 1);
            assert_eq!(up.close_expired(), 1);
            assert_eq!(up.idle_count(), 0);
            let long = Upstream::new(None, Duration::from_secs(1), Duration::from_secs(8));
            assert_eq!(long.reap_interval(), Duration::from_secs(2));
        });
    }

    #[test]
    fn requests_to_our_own_listener_are_loops() {
        let up = Upstream::new(None, Duration::from_secs(1), Duration::from_secs(1));
        up.add_own_addr("127.0.0.1:8080".parse().unwrap());
        up.add_own_addr("0.0.0.0:9090".parse().unwrap());
        assert!(up.is_own_addr(&"127.0.0.1:8080".parse().unwrap()));
        assert!(!up.is_own_addr(&"127.0.0.1:8081".parse().unwrap()));
        assert!(up.is_own_addr(&"127.0.0.1:9090".parse().unwrap()));
        assert!(!up.is_own_addr(&"192.0.2.1:9090".parse().unwrap()));
    }
}
