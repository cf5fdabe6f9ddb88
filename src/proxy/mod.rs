//! The proxy itself: accepting client connections, reading one request head at a time,
//! and sending each request through [`forward`] or, for CONNECT, into an intercepted tunnel.
//!
//! Everything a client sees when something fails is decided here, in [`ProxyError::status`]
//! and [`respond_error`]: a status and one line of text naming the step, never a credential.

mod connect;
mod forward;
pub mod rewrite;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_std::io::WriteExt;
use async_std::net::{TcpListener, TcpStream};
use log::{debug, warn};

use crate::config::Timeouts;
use crate::http1::{self, BufIo, HeadError, Header, Io, RequestHead};
use crate::policy::AudiencePolicy;
use crate::token::TokenCache;
use crate::upstream::{Target, Upstream, UpstreamError};

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
}

impl ProxyError {
    /// The one place where failures map to HTTP statuses.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::BadRequest(_) => 400,
            ProxyError::HeadTooLarge => 431,
            ProxyError::HeadTimeout => 408,
            ProxyError::NotAllowed { .. } => 403,
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
    let mut out = http1::encode_response_head(status, reason_phrase(status).as_bytes(), &headers);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let io = client.get_mut();
    io.write_all(&out).await?;
    io.flush().await
}

/// Accepts connections until the task is cancelled, one task per connection.
/// `tls` terminates TLS on each accepted socket first (the HTTPS proxy listener).
pub async fn serve(
    ctx: Arc<ProxyContext>,
    listener: TcpListener,
    tls: Option<futures_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
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
            handle_accepted(ctx, stream, peer, tls).await;
        });
    }
}

async fn handle_accepted(
    ctx: Arc<ProxyContext>,
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
    serve_connection(&ctx, BufIo::new(io), peer, None).await;
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
        let head = match client
            .read_request_head(ctx.timeouts.client_idle, ctx.timeouts.client_head)
            .await
        {
            Ok(head) => head,
            Err(e) => {
                reject_head(&mut client, peer, e).await;
                return;
            }
        };
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
