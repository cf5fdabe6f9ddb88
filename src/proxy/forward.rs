//! One request through the proxy: from a parsed head to a response written back, with the
//! token injected on the way. The same path serves plain absolute-form requests and requests
//! inside an intercepted CONNECT tunnel.

use std::time::Instant;

use log::debug;

use super::rewrite::{self, AbsoluteTarget};
use super::{ClientIo, ProxyContext, ProxyError, Tunnel};
use crate::http1::{
    self, copy_body, encode_request_head, encode_response_head, has_token, BodyError, BodyKind,
    HeadError, OutFraming, RequestHead, ResponseHead,
};
use crate::ops::Outcome;
use crate::token::Token;
use crate::upstream::{Conn, Target};
use async_std::io::{Write as AsyncWrite, WriteExt};

/// What the client connection should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    KeepAlive,
    Close,
}

/// Where the request goes and what to send, once checked.
struct Prepared {
    target: Target,
    audience: Option<String>,
    origin_target: String,
    host_fallback: String,
    body: BodyKind,
}

/// Serves one request. Errors before the response head is sent are answered with a status
/// and a short text; errors after it close the connection, which is how HTTP/1.1 tells the
/// client that the body is incomplete.
pub(crate) async fn forward(
    ctx: &ProxyContext,
    client: &mut ClientIo,
    head: RequestHead,
    tunnel: Option<&Tunnel>,
) -> Next {
    let started = Instant::now();
    let client_wants_close =
        head.minor_version == 0 || has_token(&head.headers, "connection", "close");

    let intercepted = tunnel.is_some();
    let refuse = |e: &ProxyError| {
        ctx.metrics
            .record_request(intercepted, Outcome::Status(e.status()))
    };

    let prepared = match prepare(ctx, &head, tunnel) {
        Ok(p) => p,
        Err(e) => {
            refuse(&e);
            let body = http1::request_body_kind(&head).unwrap_or(BodyKind::Chunked);
            return super::respond_error(client, &head, &e, body != BodyKind::None).await;
        }
    };
    let token = match &prepared.audience {
        None => None,
        Some(audience) => match ctx.tokens.get(audience).await {
            Ok(token) => Some(token),
            Err(e) => {
                // The cache's own message names the audience; the client needs the API's reason.
                let e = ProxyError::Token(e.kube_error().to_string());
                refuse(&e);
                let close = prepared.body != BodyKind::None;
                return super::respond_error(client, &head, &e, close).await;
            }
        },
    };

    let outcome = exchange(
        ctx,
        client,
        &head,
        &prepared,
        token.as_ref(),
        client_wants_close,
        started,
    )
    .await;
    let (status, next) = match outcome {
        Ok((status, next)) => (status, next),
        Err(Failure::Respond(e)) => {
            let status = e.status();
            let next = super::respond_error(client, &head, &e, true).await;
            (status, next)
        }
        Err(Failure::Abort(why)) => {
            ctx.metrics.record_request(intercepted, Outcome::Aborted);
            debug!(
                "request aborted method={} upstream={} error=\"{}\"",
                head.method, prepared.target, why
            );
            return Next::Close;
        }
    };
    ctx.metrics
        .record_request(intercepted, Outcome::Status(status));
    debug!(
        "request method={} upstream={} path={} audience={} status={} elapsed_ms={}",
        head.method,
        prepared.target,
        path_only(&prepared.origin_target),
        prepared.audience.as_deref().unwrap_or("-"),
        status,
        started.elapsed().as_millis()
    );
    next
}

/// The path without the query, for logs: a query may carry secrets of the target's own.
fn path_only(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

fn prepare(
    ctx: &ProxyContext,
    head: &RequestHead,
    tunnel: Option<&Tunnel>,
) -> Result<Prepared, ProxyError> {
    let body = http1::request_body_kind(head).map_err(|e| ProxyError::BadRequest(e.to_string()))?;

    let (target, path_and_query, authority) = match tunnel {
        None => {
            let AbsoluteTarget {
                tls,
                host,
                port,
                authority,
                path_and_query,
            } = rewrite::parse_absolute(&head.target).map_err(ProxyError::from)?;
            (
                Target::new(tls, host, port),
                path_and_query,
                authority.to_string(),
            )
        }
        Some(t) => {
            // Inside a tunnel the destination is fixed by CONNECT; an absolute-form target
            // (allowed by RFC 9112 §3.2.2) only contributes its path.
            let path_and_query = if head.target.starts_with('/') {
                head.target.as_str()
            } else if let Ok(abs) = rewrite::parse_absolute(&head.target) {
                abs.path_and_query
            } else {
                return Err(ProxyError::BadRequest(format!(
                    "invalid request target {:?} inside the tunnel",
                    head.target
                )));
            };
            (t.target.clone(), path_and_query, t.authority.clone())
        }
    };

    let extracted = rewrite::extract_audience(path_and_query, &ctx.audience_parameter)
        .map_err(ProxyError::from)?;
    if let Some(audience) = &extracted.audience {
        if !ctx.policy.allows(audience, &target.host, target.port) {
            return Err(ProxyError::NotAllowed {
                audience: audience.clone(),
                target: target.to_string(),
            });
        }
    }
    Ok(Prepared {
        target,
        audience: extracted.audience,
        origin_target: extracted.target,
        host_fallback: authority,
        body,
    })
}

/// A failure of the exchange: answer the client, or give up on the connection.
enum Failure {
    Respond(ProxyError),
    Abort(String),
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Failure {
        Failure::Abort(e.to_string())
    }
}

/// Whether a request can be sent again on a fresh connection after a reused one failed:
/// only when no body was sent and repeating it is harmless (RFC 9110 §9.2.2).
fn is_retryable(method: &str, body: BodyKind) -> bool {
    matches!(body, BodyKind::None | BodyKind::Length(0))
        && matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
}

async fn exchange(
    ctx: &ProxyContext,
    client: &mut ClientIo,
    head: &RequestHead,
    prepared: &Prepared,
    token: Option<&Token>,
    client_wants_close: bool,
    started: Instant,
) -> Result<(u16, Next), Failure> {
    let headers = rewrite::upstream_request_headers(
        &head.headers,
        token,
        &prepared.host_fallback,
        prepared.body,
    );
    let request_head = encode_request_head(&head.method, &prepared.origin_target, &headers);

    let mut conn = ctx
        .upstream
        .connect(&prepared.target)
        .await
        .map_err(|e| Failure::Respond(ProxyError::Upstream(e)))?;
    ctx.metrics.record_added_latency(started.elapsed());

    let expects_continue = head.minor_version == 1
        && has_token(&head.headers, "expect", "100-continue")
        && !matches!(prepared.body, BodyKind::None | BodyKind::Length(0));
    if expects_continue {
        // We answer the expectation ourselves and stream the body at once, rather than
        // forward `Expect` and hold the body until the target agrees.
        write_client(client, b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }

    let mut retry = is_retryable(&head.method, prepared.body);
    let response = loop {
        match send_request(ctx, &mut conn, client, &request_head, prepared.body).await {
            Ok(response) => break response,
            Err(SendError::UpstreamGone(_)) if retry && conn.reused => {
                retry = false;
                debug!(
                    "pooled connection was closed, retrying upstream={}",
                    prepared.target
                );
                conn = ctx
                    .upstream
                    .connect_new(&prepared.target)
                    .await
                    .map_err(|e| Failure::Respond(ProxyError::Upstream(e)))?;
            }
            Err(SendError::UpstreamGone(why)) => {
                return Err(Failure::Respond(ProxyError::UpstreamResponse(why)))
            }
            Err(SendError::UpstreamTimeout) => {
                return Err(Failure::Respond(ProxyError::UpstreamTimeout))
            }
            Err(SendError::ClientBody(e)) if e.is_sender_side() => {
                if matches!(e, BodyError::MalformedChunk(_)) {
                    return Err(Failure::Respond(ProxyError::BadRequest(e.to_string())));
                }
                return Err(Failure::Abort(format!("client request body: {e}")));
            }
            Err(SendError::ClientBody(e)) => {
                return Err(Failure::Respond(ProxyError::UpstreamResponse(format!(
                    "sending the request body: {e}"
                ))))
            }
        }
    };

    relay_response(ctx, client, head, conn, response, client_wants_close).await
}

enum SendError {
    /// The target closed or reset the connection, or sent garbage, before a response head.
    UpstreamGone(String),
    UpstreamTimeout,
    /// Copying the request body failed on either side.
    ClientBody(BodyError),
}

/// Sends the head and body, then reads the final response head (skipping `100 Continue`).
async fn send_request(
    ctx: &ProxyContext,
    conn: &mut Conn,
    client: &mut ClientIo,
    request_head: &[u8],
    body: BodyKind,
) -> Result<ResponseHead, SendError> {
    let gone = |e: std::io::Error| SendError::UpstreamGone(format!("sending the request: {e}"));
    if matches!(body, BodyKind::None | BodyKind::Length(0)) {
        // Sent on its own, so that a failure here is known to be the upstream's (and the
        // request may be retried on a fresh connection).
        let io = conn.io.get_mut();
        io.write_all(request_head).await.map_err(gone)?;
        io.flush().await.map_err(gone)?;
    } else {
        let out = if body == BodyKind::Chunked {
            OutFraming::Chunked
        } else {
            OutFraming::Raw
        };
        let head = together_with_body(
            !client.buffered().is_empty(),
            conn.io.get_mut(),
            request_head.to_vec(),
        )
        .await
        .map_err(gone)?;
        let stall = ctx.timeouts.client_idle;
        copy_body(client, body, conn.io.get_mut(), out, stall, head)
            .await
            .map_err(SendError::ClientBody)?;
    }

    loop {
        let head = match conn
            .io
            .read_response_head(ctx.timeouts.upstream_response)
            .await
        {
            Ok(head) => head,
            Err(HeadError::Idle | HeadError::Timeout) => return Err(SendError::UpstreamTimeout),
            Err(HeadError::Closed) => {
                return Err(SendError::UpstreamGone(
                    "the target closed the connection without a response".into(),
                ))
            }
            Err(e) => {
                return Err(SendError::UpstreamGone(format!(
                    "reading the response: {e}"
                )))
            }
        };
        match head.status {
            100 => continue,
            101 => {
                return Err(SendError::UpstreamGone(
                    "the target switched protocols, which the proxy does not support".into(),
                ))
            }
            _ => return Ok(head),
        }
    }
}

async fn relay_response(
    ctx: &ProxyContext,
    client: &mut ClientIo,
    request: &RequestHead,
    mut conn: Conn,
    response: ResponseHead,
    client_wants_close: bool,
) -> Result<(u16, Next), Failure> {
    let upstream_body = http1::response_body_kind(&request.method, &response).map_err(|e| {
        Failure::Respond(ProxyError::UpstreamResponse(format!(
            "invalid response framing: {e}"
        )))
    })?;

    // Towards an HTTP/1.0 client there is no chunked coding: the body is sent as it comes and
    // the connection closed after it. Towards HTTP/1.1, a close-delimited body is re-framed as
    // chunked so that the client connection can stay open.
    let (client_body, out, mut close) = match (upstream_body, request.minor_version) {
        (BodyKind::Chunked | BodyKind::UntilClose, 0) => (BodyKind::None, OutFraming::Raw, true),
        (BodyKind::Chunked | BodyKind::UntilClose, _) => {
            (BodyKind::Chunked, OutFraming::Chunked, client_wants_close)
        }
        (other, _) => (other, OutFraming::Raw, client_wants_close),
    };
    close |= client_wants_close;
    let headers = rewrite::client_response_headers(&response.headers, client_body, close);
    let head = encode_response_head(response.status, &response.reason, &headers);
    let head = together_with_body(!conn.io.buffered().is_empty(), client.get_mut(), head)
        .await
        .map_err(|e| Failure::Abort(format!("writing to the client: {e}")))?;

    let stall = ctx.timeouts.upstream_response;
    let copied = copy_body(
        &mut conn.io,
        upstream_body,
        client.get_mut(),
        out,
        stall,
        head,
    )
    .await;
    if let Err(e) = copied {
        // The target broke off (the client sees a short body and a closed connection), or the
        // client went away; either way this upstream connection is not reusable.
        let side = if e.is_sender_side() {
            "target"
        } else {
            "client"
        };
        return Err(Failure::Abort(format!(
            "response body from the {side}: {e}"
        )));
    }

    let reusable = upstream_body != BodyKind::UntilClose
        && response.minor_version == 1
        && !has_token(&response.headers, "connection", "close");
    if reusable {
        ctx.upstream.release(conn);
    }
    let next = if close { Next::Close } else { Next::KeepAlive };
    Ok((response.status, next))
}

/// Returns `head` to be sent with the first body bytes when some have already arrived from
/// the sender (one packet for a small message), or sends it now and returns nothing, so that a
/// slow body does not hold the head back.
async fn together_with_body<W: AsyncWrite + Unpin + ?Sized>(
    body_arrived: bool,
    dst: &mut W,
    head: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    if body_arrived {
        return Ok(head);
    }
    dst.write_all(&head).await?;
    dst.flush().await?;
    Ok(Vec::new())
}

async fn write_client(client: &mut ClientIo, bytes: &[u8]) -> Result<(), Failure> {
    let io = client.get_mut();
    io.write_all(bytes)
        .await
        .map_err(|e| Failure::Abort(format!("writing to the client: {e}")))?;
    io.flush()
        .await
        .map_err(|e| Failure::Abort(format!("writing to the client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_idempotent_requests_are_retried() {
        assert!(is_retryable("GET", BodyKind::None));
        assert!(is_retryable("DELETE", BodyKind::Length(0)));
        assert!(!is_retryable("POST", BodyKind::None));
        assert!(!is_retryable("PUT", BodyKind::Length(1)));
        assert!(!is_retryable("GET", BodyKind::Chunked));
    }

    #[test]
    fn logged_paths_drop_the_query() {
        assert_eq!(path_only("/m?secret=1"), "/m");
        assert_eq!(path_only("/m#x"), "/m");
    }
}
