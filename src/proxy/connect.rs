//! CONNECT: the proxy answers `200`, then plays the target's part in the TLS handshake with
//! a leaf certificate from its own CA, and serves the requests inside the tunnel through the
//! same path as plain HTTP. The connection to the real target is made per request, with TLS,
//! by the upstream pool.
//!
//! Note: tunnels are always opened up. A client that wants an opaque tunnel (raw TCP other
//! than HTTP, or TLS it does not let us terminate) cannot use this proxy for that destination.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_std::future::timeout;
use async_std::io::{Read as AsyncRead, Write as AsyncWrite, WriteExt};
use futures_rustls::LazyConfigAcceptor;
use log::debug;
use rustls::server::Acceptor;

use super::rewrite::parse_authority;
use super::{respond_error, serve_connection, ClientIo, ProxyContext, ProxyError, Tunnel};
use crate::http1::{BufIo, Io, RequestHead};
use crate::upstream::Target;

/// Finds the server configuration (with a leaf certificate) for the name a client expects.
pub type LeafConfigFn =
    dyn Fn(&str) -> Result<Arc<rustls::ServerConfig>, String> + Send + Sync + 'static;

/// What the proxy needs to intercept CONNECT tunnels.
#[derive(Clone)]
pub struct Interception {
    leaf_config: Arc<LeafConfigFn>,
}

impl Interception {
    pub fn new(leaf_config: Arc<LeafConfigFn>) -> Interception {
        Interception { leaf_config }
    }
}

pub(super) async fn handle(
    ctx: &ProxyContext,
    mut client: ClientIo,
    head: RequestHead,
    peer: SocketAddr,
) {
    let (host, port) = match parse_authority(&head.target, None) {
        Ok(parts) => parts,
        Err(e) => {
            respond_error(&mut client, &head, &ProxyError::from(e), true).await;
            return;
        }
    };
    let Some(interception) = ctx.interception.clone() else {
        let e = ProxyError::ConnectRefused("TLS interception is not configured".into());
        respond_error(&mut client, &head, &e, true).await;
        return;
    };
    let tunnel = Tunnel {
        target: Target::new(true, host, port),
        authority: head.target.clone(),
    };

    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    if client.get_mut().write_all(established).await.is_err() {
        return;
    }
    if client.get_mut().flush().await.is_err() {
        return;
    }

    // Some clients (ureq, for one) tunnel plain HTTP through CONNECT too. A TLS session
    // starts with a handshake record (content type 22); anything else is served as plain
    // HTTP inside the tunnel, to a plain-HTTP target.
    let first = match timeout(ctx.timeouts.client_head, client.fill_buf()).await {
        Ok(Ok([])) | Ok(Err(_)) => return,
        Ok(Ok(bytes)) => bytes[0],
        Err(_) => {
            debug!(
                "tunnel idle before its first byte peer={peer} upstream={}",
                tunnel.target
            );
            return;
        }
    };
    if first != TLS_HANDSHAKE_RECORD {
        let tunnel = Tunnel {
            target: Target::new(false, host, port),
            ..tunnel
        };
        debug!("plain-HTTP tunnel peer={peer} upstream={}", tunnel.target);
        Box::pin(serve_connection(ctx, client, peer, Some(&tunnel))).await;
        return;
    }

    // Bytes the client sent right behind the CONNECT head are the start of its handshake.
    let (stream, early) = client.into_parts();
    let stream = Rewind::new(early, stream);
    let tls = match timeout(
        ctx.timeouts.client_head,
        accept_tls(stream, &interception, &tunnel),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(
                "tunnel handshake failed peer={peer} upstream={} error=\"{e}\"",
                tunnel.target
            );
            return;
        }
        Err(_) => {
            debug!(
                "tunnel handshake timed out peer={peer} upstream={}",
                tunnel.target
            );
            return;
        }
    };
    debug!("tunnel established peer={peer} upstream={}", tunnel.target);
    let inner: Box<dyn Io> = Box::new(tls);
    // Boxed: this future is part of `serve_connection`'s own.
    Box::pin(serve_connection(
        ctx,
        BufIo::new(inner),
        peer,
        Some(&tunnel),
    ))
    .await;
}

/// The first byte of a TLS connection: a handshake record (RFC 8446 §5.1).
const TLS_HANDSHAKE_RECORD: u8 = 22;

async fn accept_tls(
    stream: Rewind<Box<dyn Io>>,
    interception: &Interception,
    tunnel: &Tunnel,
) -> io::Result<futures_rustls::server::TlsStream<Rewind<Box<dyn Io>>>> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
    // The leaf must match what the client will verify: its SNI when it sends one, else the
    // host it asked to CONNECT to (clients send no SNI for IP addresses).
    let name = start
        .client_hello()
        .server_name()
        .map(str::to_string)
        .unwrap_or_else(|| tunnel.target.host.clone());
    let config = (interception.leaf_config)(&name)
        .map_err(|e| io::Error::other(format!("issuing a certificate for {name}: {e}")))?;
    start.into_stream(config).await
}

/// A stream that first yields `prefix`, then reads from the inner stream.
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.len().min(this.prefix.len() - this.pos);
            buf[..n].copy_from_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
