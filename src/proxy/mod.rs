//! The proxy itself: accepting client connections, reading one request head at a time,
//! and sending each request through [`forward`] or, for CONNECT, into an intercepted tunnel.
//!
//! Everything a client sees when something fails is decided here, in [`ProxyError::status`]
//! and [`respond_error`]: a status and one line of text naming the step, never a credential.

pub mod auth;
mod connect;
mod forward;
pub mod rewrite;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_std::io::WriteExt;
use async_std::net::{TcpListener, TcpStream};
use log::{debug, warn};

use crate::config::Timeouts;
use crate::http1::{self, BufIo, HeadError, Header, Io, RequestHead};
use crate::ops::{Health, Metrics};
use crate::policy::AudiencePolicy;
use crate::token::TokenCache;
use crate::upstream::{Target, Upstream, UpstreamError};

use auth::ProxyCredentials;
pub use connect::Interception;
use forward::Next;

/// A client connection: whatever stream it arrived on, behind one read buffer.
pub(crate) type ClientIo = BufIo<Box<dyn Io>>;

/// What every connection task shares.
pub struct ProxyContext {
    pub audience_parameter: String,
    pub policy: AudiencePolicy,
    pub tokens: TokenCache,
    pub upstream: Upstream,
    /// Issues certificates for CONNECT tunnels; `None` refuses CONNECT.
    pub interception: Option<Interception>,
    pub timeouts: Timeouts,
    /// When set, every request must authenticate with `Proxy-Authorization`.
    pub credentials: Option<ProxyCredentials>,
    pub metrics: Metrics,
    pub health: Health,
}

/// The destination fixed by a CONNECT request, for the requests inside its tunnel.
#[derive(Debug, Clone)]
pub(crate) struct Tunnel {
    pub target: Target,
    /// `host:port` as the CONNECT request named it.
    pub authority: String,
}

/// A request the proxy will not or cannot serve, with what the client is told.
#[derive(Debug)]
pub enum ProxyError {
    /// Malformed, or addressed to the proxy rather than through it.
    BadRequest(String),
    HeadTooLarge,
    HeadTimeout,
    NotAllowed {
        audience: String,
        target: String,
    },
    /// The token request failed; the text carries the API server's reason.
    Token(String),
    Upstream(UpstreamError),
    /// The target answered with something that is not a usable response, or not at all.
    UpstreamResponse(String),
    UpstreamTimeout,
    /// CONNECT while interception is not available.
    ConnectRefused(String),
    /// `--proxy-credentials-file` is set and the request did not carry them.
    ProxyAuthRequired,
}

impl ProxyError {
    /// The one place where failures map to HTTP statuses.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::BadRequest(_) => 400,
            ProxyError::HeadTooLarge => 431,
            ProxyError::HeadTimeout => 408,
            ProxyError::NotAllowed { .. } => 403,
            ProxyError::ProxyAuthRequired => 407,
            ProxyError::Upstream(UpstreamError::Loop { .. }) => 400,
            ProxyError::Upstream(e) if e.is_timeout() => 504,
            ProxyError::UpstreamTimeout => 504,
            ProxyError::Token(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamResponse(_)
            | ProxyError::ConnectRefused(_) => 502,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::BadRequest(why) => write!(f, "bad request: {why}"),
            ProxyError::HeadTooLarge => write!(
                f,
                "request head too large: the limit is {} bytes and {} fields",
                http1::MAX_HEAD_BYTES,
                http1::MAX_HEADERS
            ),
            ProxyError::HeadTimeout => f.write_str("timed out waiting for the request head"),
            ProxyError::NotAllowed { audience, target } => {
                write!(f, "audience {audience:?} is not allowed for {target}")
            }
            ProxyError::Token(why) => f.write_str(why),
            ProxyError::Upstream(e) => write!(f, "upstream unreachable: {e}"),
            ProxyError::UpstreamResponse(why) => write!(f, "bad response from upstream: {why}"),
            ProxyError::UpstreamTimeout => f.write_str("upstream timed out before responding"),
            ProxyError::ConnectRefused(why) => write!(f, "CONNECT refused: {why}"),
            ProxyError::ProxyAuthRequired => {
                f.write_str("proxy authentication required: missing or wrong Proxy-Authorization")
            }
        }
    }
}

impl std::error::Error for ProxyError {}

impl From<rewrite::RewriteError> for ProxyError {
    fn from(e: rewrite::RewriteError) -> ProxyError {
        ProxyError::BadRequest(e.0)
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Answers `error` in plain text. Closes the connection when `close` is set, for HTTP/1.0
/// clients, and when the client asked to; otherwise the client may send its next request.
pub(crate) async fn respond_error(
    client: &mut ClientIo,
    request: &RequestHead,
    error: &ProxyError,
    close: bool,
) -> Next {
    let close = close
        || request.minor_version == 0
        || http1::has_token(&request.headers, "connection", "close");
    let next = if close { Next::Close } else { Next::KeepAlive };
    debug!(
        "request refused method={} status={} error=\"{}\"",
        request.method,
        error.status(),
        error
    );
    if write_error(client, error, close, request.method == "HEAD")
        .await
        .is_err()
    {
        return Next::Close;
    }
    next
}

async fn write_error(
    client: &mut ClientIo,
    error: &ProxyError,
    close: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let status = error.status();
    let body = format!("kube-audience-proxy: {error}\n");
    let mut headers = vec![
        Header::new("Content-Type", "text/plain; charset=utf-8"),
        Header::new("Content-Length", body.len().to_string()),
    ];
    if close {
        headers.push(Header::new("Connection", "close"));
    }
    if status == 407 {
        headers.push(Header::new(
            "Proxy-Authenticate",
            "Basic realm=\"kube-audience-proxy\"",
        ));
    }
    let mut out = http1::encode_response_head(status, reason_phrase(status).as_bytes(), &headers);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let io = client.get_mut();
    io.write_all(&out).await?;
    io.flush().await
}

/// Accepts connections until draining starts, one task per connection. `tls` terminates TLS
/// on each accepted socket first (the HTTPS proxy listener). `permits` bounds the number of
/// client connections across all listeners: past it, new connections wait in the kernel's
/// backlog until one closes.
pub async fn serve(
    ctx: Arc<ProxyContext>,
    listener: TcpListener,
    tls: Option<futures_rustls::TlsAcceptor>,
    permits: ConnectionPermits,
) {
    loop {
        let permit = match first_of(permits.acquire(), async {
            ctx.health.drained().await;
            None
        })
        .await
        {
            Some(permit) => permit,
            None => return,
        };
        let accepted = first_of(async { Some(listener.accept().await) }, async {
            ctx.health.drained().await;
            None
        })
        .await;
        let (stream, peer) = match accepted {
            None => return,
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) => {
                // Out of descriptors, most likely: wait rather than spin, and keep serving
                // the connections we have.
                warn!("accept failed, retrying in 100ms error=\"{e}\"");
                async_std::task::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        async_std::task::spawn(async move {
            ctx.metrics.connections.fetch_add(1, Ordering::Relaxed);
            handle_accepted(&ctx, stream, peer, tls).await;
            ctx.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// A counting semaphore for client connections, made of a bounded channel: acquiring sends
/// (and waits while the channel is full), releasing receives.
#[derive(Clone)]
pub struct ConnectionPermits {
    tx: async_std::channel::Sender<()>,
    rx: async_std::channel::Receiver<()>,
}

/// Held by a connection task; frees its place when dropped.
pub struct ConnectionPermit {
    rx: async_std::channel::Receiver<()>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let _ = self.rx.try_recv();
    }
}

impl ConnectionPermits {
    /// Allows `max` connections at once (at least one).
    pub fn new(max: usize) -> ConnectionPermits {
        let (tx, rx) = async_std::channel::bounded(max.max(1));
        ConnectionPermits { tx, rx }
    }

    async fn acquire(&self) -> Option<ConnectionPermit> {
        self.tx.send(()).await.ok()?;
        Some(ConnectionPermit {
            rx: self.rx.clone(),
        })
    }
}

/// Runs both futures and returns the output of whichever finishes first.
pub async fn first_of<T>(a: impl Future<Output = T>, b: impl Future<Output = T>) -> T {
    let mut a = pin!(a);
    let mut b = pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        b.as_mut().poll(cx)
    })
    .await
}

async fn handle_accepted(
    ctx: &ProxyContext,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<futures_rustls::TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    debug!("connection accepted peer={peer}");
    let io: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            match async_std::future::timeout(ctx.timeouts.client_head, handshake).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    debug!("client TLS handshake failed peer={peer} error=\"{e}\"");
                    return;
                }
                Err(_) => {
                    debug!("client TLS handshake timed out peer={peer}");
                    return;
                }
            }
        }
    };
    serve_connection(ctx, BufIo::new(io), peer, None).await;
    debug!("connection closed peer={peer}");
}

/// Serves requests on one client connection, one at a time, until either side closes.
pub(crate) async fn serve_connection(
    ctx: &ProxyContext,
    mut client: ClientIo,
    peer: SocketAddr,
    tunnel: Option<&Tunnel>,
) {
    loop {
        if ctx.health.is_draining() {
            return;
        }
        let read = client.read_request_head(ctx.timeouts.client_idle, ctx.timeouts.client_head);
        // While draining, a connection waiting for its next request is closed at once; one
        // in the middle of a request finishes it first (the loop ends after it).
        let head = match first_of(async { Some(read.await) }, async {
            ctx.health.drained().await;
            None
        })
        .await
        {
            None => return,
            Some(Ok(head)) => head,
            Some(Err(e)) => {
                reject_head(&mut client, peer, e).await;
                return;
            }
        };
        if tunnel.is_none() {
            if let Some(credentials) = &ctx.credentials {
                if !credentials.accepts(&head.headers) {
                    let close = http1::request_body_kind(&head) != Ok(http1::BodyKind::None);
                    ctx.metrics
                        .record_request(false, crate::ops::Outcome::Status(407));
                    let next =
                        respond_error(&mut client, &head, &ProxyError::ProxyAuthRequired, close)
                            .await;
                    if next == Next::Close {
                        return;
                    }
                    continue;
                }
            }
        }
        if head.method == "CONNECT" {
            if tunnel.is_some() {
                let e = ProxyError::BadRequest("CONNECT inside an intercepted tunnel".into());
                respond_error(&mut client, &head, &e, true).await;
                return;
            }
            connect::handle(ctx, client, head, peer).await;
            return;
        }
        if forward::forward(ctx, &mut client, head, tunnel).await == Next::Close {
            let _ = http1::close(client.get_mut()).await;
            return;
        }
    }
}

/// Answers a head that could not be read, where an answer makes sense, then the caller
/// closes the connection.
async fn reject_head(client: &mut ClientIo, peer: SocketAddr, error: HeadError) {
    let reply = match &error {
        HeadError::Closed | HeadError::Idle | HeadError::Truncated | HeadError::Io(_) => None,
        HeadError::Timeout => Some(ProxyError::HeadTimeout),
        HeadError::TooLarge => Some(ProxyError::HeadTooLarge),
        HeadError::Malformed(why) => Some(ProxyError::BadRequest(why.clone())),
    };
    debug!("connection ends peer={peer} reason=\"{error}\"");
    if let Some(reply) = reply {
        let _ = write_error(client, &reply, true, false).await;
    }
}
