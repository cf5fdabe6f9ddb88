//! HTTP/1.1 on the wire, as a proxy needs it: message heads parsed with `httparse`, bodies
//! framed per RFC 9112 §6 and streamed in both directions without buffering a whole body.
//!
//! This is written for the proxy rather than taken from a general HTTP engine because a proxy
//! must pass through what a server would refuse or hide: bytes that follow a CONNECT head,
//! pipelined requests, HTTP/1.0 peers, close-delimited bodies, responses to HEAD that carry a
//! `Content-Length`, and header values that are not UTF-8. This module knows nothing about
//! tokens, audiences or where a request goes.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use async_std::future::timeout;
use async_std::io::{Read as AsyncRead, ReadExt, Write as AsyncWrite, WriteExt};

/// Largest request or response head we accept, in bytes. Prometheus and the exporters it
/// scrapes send heads of a few hundred bytes; 64 KiB leaves room for large cookies and
/// tracing headers while keeping a slow or hostile peer from growing our memory.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields in one head. httparse needs a fixed-size array.
pub const MAX_HEADERS: usize = 128;

/// Read buffer size per connection. 16 KiB matches a TLS record, so one read from a TLS
/// stream fills at most one buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Longest chunk-size line (with extensions) or trailer field we accept inside a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// A stream type the proxy can serve: a TCP socket, a TLS session or a TLS session inside one.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One header field as received; the value is kept as bytes, since HTTP allows obs-text.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Whether this field is `name`, compared case-insensitively.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

impl fmt::Debug for Header {
    /// Shows the name only: values may be credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <{} bytes>", self.name, self.value.len())
    }
}

/// A parsed request line and header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target exactly as sent: absolute-form, origin-form or authority-form.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

/// A parsed status line and header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub minor_version: u8,
    pub status: u16,
    pub reason: Vec<u8>,
    pub headers: Vec<Header>,
}

/// Finds the first field called `name`.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.is(name)).map(|h| &h.value[..])
}

/// Whether any comma-separated element of any `name` field equals `token` (case-insensitive),
/// as in `Connection: keep-alive, close`.
pub fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.is(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed the connection before sending any byte of a head: a normal end.
    Closed,
    /// No byte of a new head arrived within the idle time.
    Idle,
    /// A head was started but not finished in time.
    Timeout,
    /// The head is larger than [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] fields.
    TooLarge,
    /// The bytes are not an HTTP/1.x head.
    Malformed(String),
    /// The connection closed in the middle of a head.
    Truncated,
    Io(io::Error),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Closed => f.write_str("connection closed"),
            HeadError::Idle => f.write_str("connection idle for too long"),
            HeadError::Timeout => f.write_str("timed out reading the message head"),
            HeadError::TooLarge => write!(
                f,
                "message head larger than {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields"
            ),
            HeadError::Malformed(why) => write!(f, "malformed message head: {why}"),
            HeadError::Truncated => f.write_str("connection closed in the middle of a head"),
            HeadError::Io(e) => write!(f, "reading the message head: {e}"),
        }
    }
}

impl std::error::Error for HeadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HeadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Parses a complete head at the start of the bytes, returning it and its length, or `None`
/// when more bytes are needed.
type HeadParser<T> = fn(&[u8]) -> Result<Option<(T, usize)>, HeadError>;

/// A stream with a read buffer that survives between messages, so bytes that arrive behind a
/// head (a pipelined request, the first TLS record after CONNECT) are never lost.
pub struct BufIo<S> {
    stream: S,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Set when a head grows past one buffer; holds the whole head while it is parsed.
    head_buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> BufIo<S> {
    pub fn new(stream: S) -> BufIo<S> {
        BufIo {
            stream,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            head_buf: Vec::new(),
        }
    }

    /// The stream, for writing. Reads must go through `BufIo` or buffered bytes are skipped.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Gives up the stream and whatever was buffered behind the last head.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.stream, rest)
    }

    /// Returns buffered bytes, reading once from the stream when the buffer is empty.
    /// An empty slice means end of stream.
    pub async fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = self.stream.read(&mut self.buf).await?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Reads a request head. Waits up to `idle` for its first byte, then up to `head_time`
    /// for the rest. Empty lines before a request line are skipped (RFC 9112 §2.2).
    pub async fn read_request_head(
        &mut self,
        idle: Duration,
        head_time: Duration,
    ) -> Result<RequestHead, HeadError> {
        self.read_head(idle, head_time, true, parse_request).await
    }

    /// Reads a response head, which must begin within `wait` and be complete by then too.
    pub async fn read_response_head(&mut self, wait: Duration) -> Result<ResponseHead, HeadError> {
        self.read_head(wait, wait, false, parse_response).await
    }

    async fn read_head<T>(
        &mut self,
        idle: Duration,
        head_time: Duration,
        skip_empty_lines: bool,
        parse: HeadParser<T>,
    ) -> Result<T, HeadError> {
        let mut deadline: Option<Instant> = None;
        // How far the pending bytes were already searched for the end of the head, so a
        // peer sending one byte at a time costs linear, not quadratic, work.
        let mut scanned = 0;
        self.head_buf.clear();
        loop {
            if skip_empty_lines && self.head_buf.is_empty() {
                while self.start < self.end && matches!(self.buf[self.start], b'\r' | b'\n') {
                    self.start += 1;
                }
            }
            if !self.head_buf.is_empty() {
                self.head_buf
                    .extend_from_slice(&self.buf[self.start..self.end]);
                self.start = self.end;
            }

            let pending: &[u8] = if self.head_buf.is_empty() {
                &self.buf[self.start..self.end]
            } else {
                &self.head_buf
            };
            if let Some(head_end) = find_head_end(pending, scanned) {
                let Some((head, used)) = parse(&pending[..head_end])? else {
                    return Err(HeadError::Malformed("incomplete head".into()));
                };
                if self.head_buf.is_empty() {
                    self.start += used;
                } else {
                    // Put what follows the head back into the read buffer.
                    let rest = self.head_buf.len() - used;
                    self.buf[..rest].copy_from_slice(&self.head_buf[used..]);
                    self.start = 0;
                    self.end = rest;
                    self.head_buf.clear();
                }
                return Ok(head);
            }
            scanned = pending.len().saturating_sub(3);
            if pending.len() >= MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            // Reject garbage early rather than waiting for a terminator that may never come;
            // the request line is enough to tell, and parsing only short prefixes keeps this
            // from turning quadratic.
            if !pending.is_empty() && pending.len() < 1024 {
                parse(pending)?;
            }

            let started = !pending.is_empty();
            if self.head_buf.is_empty() && self.end - self.start == self.buf.len() {
                self.head_buf
                    .extend_from_slice(&self.buf[self.start..self.end]);
                self.start = self.end;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }

            let deadline_at = *deadline
                .get_or_insert_with(|| Instant::now() + if started { head_time } else { idle });
            let wait = deadline_at.saturating_duration_since(Instant::now());
            let end = self.end;
            let read = within(wait, self.stream.read(&mut self.buf[end..])).await;
            match read {
                Err(_) if started => return Err(HeadError::Timeout),
                Err(_) => return Err(HeadError::Idle),
                Ok(Err(e)) => return Err(HeadError::Io(e)),
                Ok(Ok(0)) if started => return Err(HeadError::Truncated),
                Ok(Ok(0)) => return Err(HeadError::Closed),
                Ok(Ok(n)) => {
                    if !started {
                        // The head has begun: from now on it has `head_time` to complete.
                        deadline = Some(Instant::now() + head_time);
                    }
                    self.end += n;
                }
            }
        }
    }
}

/// The index just past the blank line that ends a head (`\n\r\n` or `\n\n`), searching
/// from `from`.
fn find_head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(pos) = bytes.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        match bytes.get(nl + 1..nl + 3) {
            Some([b'\r', b'\n']) => return Some(nl + 3),
            Some([b'\n', _]) => return Some(nl + 2),
            None if bytes.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            _ => i = nl + 1,
        }
    }
    None
}

impl<S: AsyncRead + Unpin> AsyncRead for BufIo<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.start < this.end {
            let n = out.len().min(this.end - this.start);
            out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
            this.start += n;
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut this.stream).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BufIo<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_close(cx)
    }
}

fn owned_headers(raw: &[httparse::Header<'_>]) -> Result<Vec<Header>, HeadError> {
    raw.iter()
        .map(|h| Ok(Header::new(h.name, h.value)))
        .collect()
}

fn map_parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        other => HeadError::Malformed(other.to_string()),
    }
}

/// Parses a complete request head at the start of `bytes`, or `None` when more is needed.
pub fn parse_request(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let used = match req.parse(bytes).map_err(map_parse_error)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    let head = RequestHead {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        minor_version: req.version.unwrap_or(1),
        headers: owned_headers(req.headers)?,
    };
    Ok(Some((head, used)))
}

/// Parses a complete response head at the start of `bytes`, or `None` when more is needed.
pub fn parse_response(bytes: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let used = match resp.parse(bytes).map_err(map_parse_error)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    // httparse keeps the reason as text; take the raw bytes after the status code instead, so
    // a reason with obs-text survives.
    let line_end = bytes.iter().position(|&b| b == b'\n').unwrap_or(0);
    let line = bytes[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&bytes[..line_end]);
    let reason = line.get(13..).unwrap_or_default().to_vec();
    let head = ResponseHead {
        minor_version: resp.version.unwrap_or(1),
        status: resp.code.unwrap_or_default(),
        reason,
        headers: owned_headers(resp.headers)?,
    };
    Ok(Some((head, used)))
}

/// How a message body is delimited on the wire (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a message's framing headers cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    InvalidContentLength,
    /// A transfer coding other than a final `chunked`.
    UnsupportedTransferEncoding,
    /// Both `Transfer-Encoding` and `Content-Length` on a request: refused, because the two
    /// framings disagreeing is how request smuggling works.
    Ambiguous,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::InvalidContentLength => "invalid Content-Length",
            FramingError::UnsupportedTransferEncoding => {
                "unsupported Transfer-Encoding (only chunked is supported)"
            }
            FramingError::Ambiguous => "both Transfer-Encoding and Content-Length are present",
        })
    }
}

impl std::error::Error for FramingError {}

/// Parses `Content-Length`; repeated fields must agree (RFC 9110 §8.6).
fn content_length(headers: &[Header]) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    for h in headers.iter().filter(|h| h.is("content-length")) {
        for part in h.value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::InvalidContentLength);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(FramingError::InvalidContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(FramingError::InvalidContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// `Some(true)` when the final transfer coding is chunked, `Some(false)` when there is a
/// transfer coding that is not, `None` without `Transfer-Encoding`.
fn is_chunked(headers: &[Header]) -> Option<bool> {
    let codings: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.is("transfer-encoding"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
        .collect();
    let last = codings.last()?;
    Some(last.eq_ignore_ascii_case(b"chunked"))
}

/// The framing of a request body.
pub fn request_body_kind(head: &RequestHead) -> Result<BodyKind, FramingError> {
    let length = content_length(&head.headers)?;
    match is_chunked(&head.headers) {
        Some(true) if length.is_some() => Err(FramingError::Ambiguous),
        Some(true) => Ok(BodyKind::Chunked),
        Some(false) => Err(FramingError::UnsupportedTransferEncoding),
        None => Ok(length.map_or(BodyKind::None, BodyKind::Length)),
    }
}

/// The framing of a response body, given the request method it answers.
pub fn response_body_kind(method: &str, head: &ResponseHead) -> Result<BodyKind, FramingError> {
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Ok(BodyKind::None);
    }
    match is_chunked(&head.headers) {
        Some(true) => Ok(BodyKind::Chunked),
        // A response with a coding we cannot parse is read until close (RFC 9112 §6.3 rule 4).
        Some(false) => Ok(BodyKind::UntilClose),
        None => Ok(content_length(&head.headers)?.map_or(BodyKind::UntilClose, BodyKind::Length)),
    }
}

/// How a body is written towards the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    /// Bytes as they are; the head carries the length, or closing the connection ends it.
    Raw,
    /// Chunked encoding, ended by a last chunk.
    Chunked,
}

/// Why a body could not be copied; says which side failed, because the caller must then
/// treat that connection as broken.
#[derive(Debug)]
pub enum BodyError {
    /// Reading from the sender failed.
    Read(io::Error),
    /// The sender closed the connection before the body was complete.
    Truncated,
    /// The chunked encoding is broken.
    MalformedChunk(&'static str),
    /// Writing to the receiver failed.
    Write(io::Error),
    /// No data arrived from the sender within the allowed time.
    Stalled,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Read(e) => write!(f, "reading the body: {e}"),
            BodyError::Truncated => f.write_str("the body ended before it was complete"),
            BodyError::MalformedChunk(why) => write!(f, "malformed chunked body: {why}"),
            BodyError::Write(e) => write!(f, "writing the body: {e}"),
            BodyError::Stalled => f.write_str("no body data arrived in time"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Read(e) | BodyError::Write(e) => Some(e),
            _ => None,
        }
    }
}

impl BodyError {
    /// Whether the failure was on the sending side (as opposed to the receiving side).
    pub fn is_sender_side(&self) -> bool {
        !matches!(self, BodyError::Write(_))
    }
}

/// Copies one body from `src` to `dst`, decoding `kind` and encoding `out`. `head` (the
/// message head, or nothing) goes out in the same write as the first body bytes, so a small
/// message leaves as one packet. Each read waits at most `stall` for data. Flushes `dst` at
/// the end. Returns the number of body bytes.
pub async fn copy_body<R, W>(
    src: &mut BufIo<R>,
    kind: BodyKind,
    dst: &mut W,
    out: OutFraming,
    stall: Duration,
    head: Vec<u8>,
) -> Result<u64, BodyError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut writer = BodyWriter {
        dst,
        out,
        pending: head,
    };
    let total = match kind {
        BodyKind::None => 0,
        BodyKind::Length(n) => copy_exact(src, n, &mut writer, stall).await?,
        BodyKind::UntilClose => copy_until_close(src, &mut writer, stall).await?,
        BodyKind::Chunked => copy_chunked(src, &mut writer, stall).await?,
    };
    if out == OutFraming::Chunked {
        writer.pending.extend_from_slice(b"0\r\n\r\n");
    }
    if !writer.pending.is_empty() {
        let pending = std::mem::take(&mut writer.pending);
        writer
            .dst
            .write_all(&pending)
            .await
            .map_err(BodyError::Write)?;
    }
    writer.dst.flush().await.map_err(BodyError::Write)?;
    Ok(total)
}

struct BodyWriter<'a, W: ?Sized> {
    dst: &'a mut W,
    out: OutFraming,
    /// Bytes to send before the next body bytes: the head, then chunk framing.
    pending: Vec<u8>,
}

impl<W: AsyncWrite + Unpin + ?Sized> BodyWriter<'_, W> {
    async fn write(&mut self, data: &[u8]) -> Result<(), BodyError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.out == OutFraming::Raw && self.pending.is_empty() {
            return self.dst.write_all(data).await.map_err(BodyError::Write);
        }
        // One write per piece: separate writes of head, size line, data and CRLF would each
        // become a packet (TCP_NODELAY) or a TLS record.
        if self.out == OutFraming::Chunked {
            self.pending
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        self.pending.extend_from_slice(data);
        if self.out == OutFraming::Chunked {
            self.pending.extend_from_slice(b"\r\n");
        }
        let result = self.dst.write_all(&self.pending).await;
        self.pending.clear();
        result.map_err(BodyError::Write)
    }
}

async fn fill<R: AsyncRead + AsyncWrite + Unpin>(
    src: &mut BufIo<R>,
    stall: Duration,
) -> Result<usize, BodyError> {
    match within(stall, src.fill_buf()).await {
        Err(_) => Err(BodyError::Stalled),
        Ok(Err(e)) => Err(BodyError::Read(e)),
        Ok(Ok(bytes)) => Ok(bytes.len()),
    }
}

async fn copy_exact<R, W>(
    src: &mut BufIo<R>,
    mut remaining: u64,
    writer: &mut BodyWriter<'_, W>,
    stall: Duration,
) -> Result<u64, BodyError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin + ?Sized,
{
    let total = remaining;
    while remaining > 0 {
        let available = fill(src, stall).await?;
        if available == 0 {
            return Err(BodyError::Truncated);
        }
        let n = available.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let start = src.start;
        writer.write(&src.buf[start..start + n]).await?;
        src.consume(n);
        remaining -= n as u64;
    }
    Ok(total)
}

async fn copy_until_close<R, W>(
    src: &mut BufIo<R>,
    writer: &mut BodyWriter<'_, W>,
    stall: Duration,
) -> Result<u64, BodyError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut total = 0u64;
    loop {
        let available = fill(src, stall).await?;
        if available == 0 {
            return Ok(total);
        }
        let start = src.start;
        writer.write(&src.buf[start..start + available]).await?;
        src.consume(available);
        total += available as u64;
    }
}

/// Reads one CRLF- (or LF-) terminated line of at most [`MAX_CHUNK_LINE`] bytes, without it.
async fn read_line<R: AsyncRead + AsyncWrite + Unpin>(
    src: &mut BufIo<R>,
    stall: Duration,
) -> Result<Vec<u8>, BodyError> {
    let mut line = Vec::new();
    loop {
        if fill(src, stall).await? == 0 {
            return Err(BodyError::Truncated);
        }
        let available = src.buffered();
        if let Some(pos) = available.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&available[..pos]);
            src.consume(pos + 1);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
        line.extend_from_slice(available);
        let n = available.len();
        src.consume(n);
        if line.len() > MAX_CHUNK_LINE {
            return Err(BodyError::MalformedChunk("chunk line too long"));
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let size = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::MalformedChunk("invalid chunk size"));
    }
    let text = std::str::from_utf8(size).map_err(|_| BodyError::MalformedChunk("chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| BodyError::MalformedChunk("invalid chunk size"))
}

async fn copy_chunked<R, W>(
    src: &mut BufIo<R>,
    writer: &mut BodyWriter<'_, W>,
    stall: Duration,
) -> Result<u64, BodyError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut total = 0u64;
    loop {
        let size = parse_chunk_size(&read_line(src, stall).await?)?;
        if size == 0 {
            break;
        }
        total += copy_exact(src, size, writer, stall).await?;
        if !read_line(src, stall).await?.is_empty() {
            return Err(BodyError::MalformedChunk("missing CRLF after chunk data"));
        }
    }
    // Trailer fields are read and dropped: we do not announce `Trailer`, and none of the
    // clients we serve rely on them.
    let mut trailer_bytes = 0;
    loop {
        let line = read_line(src, stall).await?;
        if line.is_empty() {
            return Ok(total);
        }
        trailer_bytes += line.len();
        if trailer_bytes > MAX_HEAD_BYTES {
            return Err(BodyError::MalformedChunk("trailer section too large"));
        }
    }
}

/// Awaits `future` for at most `limit`. The timer is armed only when the future does not
/// finish on its first poll: most reads find data waiting, and arming and disarming a timer
/// for each of them is a measurable share of a proxied request.
pub async fn within<F: std::future::Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, async_std::future::TimeoutError> {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(output) => Ok(output),
        std::task::Poll::Pending => timeout(limit, future).await,
    }
}

/// Shuts down the write side (for TLS: sends close_notify), so the peer sees a clean end.
pub async fn close<S: AsyncWrite + Unpin + ?Sized>(stream: &mut S) -> io::Result<()> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_close(cx)).await
}

/// Serialises a request head. `headers` must already hold the framing fields.
pub fn encode_request_head(method: &str, target: &str, headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(&mut out, headers);
    out
}

/// Serialises a response head as HTTP/1.1 (a proxy speaks its own version).
pub fn encode_response_head(status: u16, reason: &[u8], headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("HTTP/1.1 {status:03} ").as_bytes());
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    encode_fields(&mut out, headers);
    out
}

fn encode_fields(out: &mut Vec<u8>, headers: &[Header]) {
    for h in headers {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_std::io::Cursor;
    use async_std::task::block_on;

    /// An in-memory duplex: reads from `input`, records writes.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Duplex {
        fn new(input: &[u8]) -> Duplex {
            Duplex {
                input: Cursor::new(input.to_vec()),
                output: Vec::new(),
            }
        }
    }

    impl AsyncRead for Duplex {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            // At most 7 bytes a read, so parsing across reads is exercised.
            let n = buf.len().min(7);
            std::pin::Pin::new(&mut self.input).poll_read(cx, &mut buf[..n])
        }
    }

    impl AsyncWrite for Duplex {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.output.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn pipelined_heads_and_trailing_bytes_survive() {
        let wire =
            b"\r\nGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nGET http://b/x HTTP/1.0\r\n\r\nrest";
        let mut io = BufIo::new(Duplex::new(wire));
        block_on(async {
            let one = io.read_request_head(T, T).await.unwrap();
            assert_eq!(
                (one.method.as_str(), one.target.as_str()),
                ("GET", "http://a/")
            );
            assert_eq!(one.minor_version, 1);
            let two = io.read_request_head(T, T).await.unwrap();
            assert_eq!(two.target, "http://b/x");
            assert_eq!(two.minor_version, 0);
            let mut rest = Vec::new();
            io.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"rest");
        });
    }

    #[test]
    fn a_head_larger_than_one_buffer_parses() {
        let mut wire = b"GET http://a/ HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            wire.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(300)).as_bytes());
        }
        wire.extend_from_slice(b"\r\nbody");
        let mut io = BufIo::new(Duplex::new(&wire));
        block_on(async {
            let head = io.read_request_head(T, T).await.unwrap();
            assert_eq!(head.headers.len(), 100);
            let mut rest = Vec::new();
            io.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"body");
        });
    }

    #[test]
    fn oversized_and_malformed_heads_are_refused() {
        let mut wire = b"GET http://a/ HTTP/1.1\r\nX: ".to_vec();
        wire.extend(std::iter::repeat_n(b'v', MAX_HEAD_BYTES));
        let mut io = BufIo::new(Duplex::new(&wire));
        let err = block_on(io.read_request_head(T, T)).unwrap_err();
        assert!(matches!(err, HeadError::TooLarge), "{err:?}");

        let mut io = BufIo::new(Duplex::new(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n"));
        let err = block_on(io.read_request_head(T, T)).unwrap_err();
        assert!(matches!(err, HeadError::Malformed(_)), "{err:?}");

        let mut io = BufIo::new(Duplex::new(b"GET / HTTP/1.1\r\nHost"));
        let err = block_on(io.read_request_head(T, T)).unwrap_err();
        assert!(matches!(err, HeadError::Truncated), "{err:?}");

        let mut io = BufIo::new(Duplex::new(b""));
        let err = block_on(io.read_request_head(T, T)).unwrap_err();
        assert!(matches!(err, HeadError::Closed), "{err:?}");
    }

    #[test]
    fn non_utf8_header_values_are_kept() {
        let wire = b"GET http://a/ HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n";
        let mut io = BufIo::new(Duplex::new(wire));
        let head = block_on(io.read_request_head(T, T)).unwrap();
        assert_eq!(header(&head.headers, "x-name"), Some(&b"caf\xe9"[..]));
    }

    #[test]
    fn response_reason_keeps_raw_bytes() {
        let (head, used) = parse_response(b"HTTP/1.0 200 Fine \xff\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(used, 23);
        assert_eq!((head.minor_version, head.status), (0, 200));
        assert_eq!(head.reason, b"Fine \xff");
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            minor_version: 1,
            status,
            reason: b"X".to_vec(),
            headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let cl = [("Content-Length", "5")];
        assert_eq!(
            response_body_kind("HEAD", &response(200, &cl)),
            Ok(BodyKind::None)
        );
        assert_eq!(
            response_body_kind("GET", &response(304, &cl)),
            Ok(BodyKind::None)
        );
        assert_eq!(
            response_body_kind("GET", &response(204, &cl)),
            Ok(BodyKind::None)
        );
        assert_eq!(
            response_body_kind("GET", &response(200, &cl)),
            Ok(BodyKind::Length(5))
        );
        assert_eq!(
            response_body_kind("GET", &response(200, &[])),
            Ok(BodyKind::UntilClose)
        );
        let te = [
            ("Transfer-Encoding", "gzip, chunked"),
            ("Content-Length", "5"),
        ];
        assert_eq!(
            response_body_kind("GET", &response(200, &te)),
            Ok(BodyKind::Chunked)
        );
        let te = [("Transfer-Encoding", "gzip")];
        assert_eq!(
            response_body_kind("GET", &response(200, &te)),
            Ok(BodyKind::UntilClose)
        );
        let bad = [("Content-Length", "5, 6")];
        assert!(response_body_kind("GET", &response(200, &bad)).is_err());
        let same = [("Content-Length", "5"), ("content-length", "5")];
        assert_eq!(
            response_body_kind("GET", &response(200, &same)),
            Ok(BodyKind::Length(5))
        );
    }

    fn request(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "http://a/".into(),
            minor_version: 1,
            headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
        }
    }

    #[test]
    fn request_framing_refuses_smuggling_shapes() {
        assert_eq!(request_body_kind(&request(&[])), Ok(BodyKind::None));
        let r = request(&[("Content-Length", "0")]);
        assert_eq!(request_body_kind(&r), Ok(BodyKind::Length(0)));
        let r = request(&[("Transfer-Encoding", "chunked")]);
        assert_eq!(request_body_kind(&r), Ok(BodyKind::Chunked));
        let r = request(&[("Transfer-Encoding", "chunked"), ("Content-Length", "3")]);
        assert_eq!(request_body_kind(&r), Err(FramingError::Ambiguous));
        let r = request(&[("Transfer-Encoding", "gzip")]);
        assert_eq!(
            request_body_kind(&r),
            Err(FramingError::UnsupportedTransferEncoding)
        );
        let r = request(&[("Content-Length", "+3")]);
        assert_eq!(
            request_body_kind(&r),
            Err(FramingError::InvalidContentLength)
        );
    }

    fn copy(wire: &[u8], kind: BodyKind, out: OutFraming) -> (Result<u64, BodyError>, Vec<u8>) {
        let mut src = BufIo::new(Duplex::new(wire));
        let mut dst = Duplex::new(b"");
        let result = block_on(copy_body(&mut src, kind, &mut dst, out, T, Vec::new()));
        (result, dst.output)
    }

    #[test]
    fn chunked_bodies_decode_and_reencode() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";
        let (n, out) = copy(wire, BodyKind::Chunked, OutFraming::Raw);
        assert_eq!((n.unwrap(), out.as_slice()), (11, &b"hello world"[..]));
        let (n, out) = copy(wire, BodyKind::Chunked, OutFraming::Chunked);
        assert_eq!(n.unwrap(), 11);
        // The source hands out 7 bytes a read, so chunks come out re-cut at most 7 long.
        assert!(out.ends_with(b"\r\n0\r\n\r\n"));
        let (n, again) = copy(&out, BodyKind::Chunked, OutFraming::Raw);
        assert_eq!((n.unwrap(), again.as_slice()), (11, &b"hello world"[..]));
    }

    #[test]
    fn broken_bodies_are_reported() {
        let (r, _) = copy(b"abc", BodyKind::Length(5), OutFraming::Raw);
        assert!(matches!(r, Err(BodyError::Truncated)));
        let (r, _) = copy(b"5\r\nhello\r\n", BodyKind::Chunked, OutFraming::Raw);
        assert!(matches!(r, Err(BodyError::Truncated)));
        let (r, _) = copy(b"zz\r\n", BodyKind::Chunked, OutFraming::Raw);
        assert!(matches!(r, Err(BodyError::MalformedChunk(_))));
        let (r, _) = copy(b"2\r\nabc\r\n", BodyKind::Chunked, OutFraming::Raw);
        assert!(matches!(r, Err(BodyError::MalformedChunk(_))));
    }

    #[test]
    fn close_delimited_bodies_copy_everything() {
        let (n, out) = copy(b"all of it", BodyKind::UntilClose, OutFraming::Chunked);
        assert_eq!(n.unwrap(), 9);
        assert_eq!(out, b"7\r\nall of \r\n2\r\nit\r\n0\r\n\r\n");
    }

    #[test]
    fn connection_tokens_are_found_in_lists() {
        let h = vec![Header::new("Connection", "keep-alive, Close")];
        assert!(has_token(&h, "connection", "close"));
        assert!(!has_token(&h, "connection", "upgrade"));
    }

    #[test]
    fn heads_encode_as_http_1_1() {
        let h = vec![Header::new("Host", "a"), Header::new("X", b"\xff".to_vec())];
        assert_eq!(
            encode_request_head("GET", "/p?q", &h),
            b"GET /p?q HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n"
        );
        assert_eq!(
            encode_response_head(200, b"OK", &[]),
            b"HTTP/1.1 200 OK\r\n\r\n"
        );
    }
}
