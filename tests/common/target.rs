//! Targets behind the proxy: an HTTP server that records what reached it (and which audience
//! the injected token was minted for), and raw TCP servers that answer with exact bytes, for
//! the wire-level cases an ordinary server would never produce.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_std::io::{BufReader, Read as AsyncRead, ReadExt};
use async_std::net::TcpListener;
use http_types::{Body, Request, Response, StatusCode};

use super::apiserver::audience_of;

/// What one request looked like when it reached a target.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub host: Option<String>,
    pub authorization: Option<String>,
    /// The audience the bearer token was minted for, when it came from the fake API server.
    pub token_audience: Option<String>,
    pub body_len: u64,
    pub body_checksum: u64,
    /// Every header name received, lowercase.
    pub header_names: Vec<String>,
}

/// An HTTP/1.1 target served by async-h1. Routes:
/// - `/bytes/N`: a body of N pattern bytes, streamed;
/// - `/upload`: reads the request body, answers `len checksum`;
/// - `/slow/MS`: waits MS milliseconds, then answers;
/// - anything else: `ok`.
pub struct HttpTarget {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: Option<async_std::task::JoinHandle<()>>,
}

impl HttpTarget {
    pub async fn start() -> HttpTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = {
            let seen = seen.clone();
            let connections = connections.clone();
            async_std::task::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    async_std::task::spawn(async move {
                        let _ = async_h1::accept(stream, move |req| {
                            let seen = seen.clone();
                            async move { Ok(answer(req, &seen).await) }
                        })
                        .await;
                    });
                }
            })
        };
        HttpTarget {
            addr,
            seen,
            connections,
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the target saw no request")
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            async_std::task::block_on(task.cancel());
        }
    }
}

/// Records `req` in `seen` and answers it by the routes of [`HttpTarget`]; the TLS target
/// serves the same routes.
pub async fn answer(mut req: Request, seen: &Mutex<Vec<Seen>>) -> Response {
    let url = req.url().clone();
    let target = match url.query() {
        Some(q) => format!("{}?{}", url.path(), q),
        None => url.path().to_string(),
    };
    let header = |name: &str| req.header(name).map(|v| v.as_str().to_string());
    let authorization = header("authorization");
    let token_audience = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(audience_of)
        .map(str::to_string);
    let host = header("host");
    let header_names = req
        .header_names()
        .map(|n| n.as_str().to_lowercase())
        .collect();

    let mut body = req.take_body();
    let (body_len, body_checksum) = checksum_reader(&mut body).await;
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: target.clone(),
        host,
        authorization,
        token_audience,
        body_len,
        body_checksum,
        header_names,
    });

    let path = url.path();
    let mut res = Response::new(StatusCode::Ok);
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap();
        let reader = BufReader::new(Pattern { pos: 0, len: n });
        res.set_body(Body::from_reader(reader, Some(n as usize)));
    } else if path == "/upload" {
        res.set_body(format!("{body_len} {body_checksum}"));
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        async_std::task::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        res.set_body("slow ok");
    } else {
        res.set_body("ok");
    }
    res
}

/// The byte at offset `i` of every pattern body.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i >> 13) % 251) as u8
}

/// FNV-1a over a stream, with its length.
pub fn checksum(bytes: &[u8], state: &mut (u64, u64)) {
    for &b in bytes {
        state.1 = (state.1 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    state.0 += bytes.len() as u64;
}

pub const CHECKSUM_START: (u64, u64) = (0, 0xcbf2_9ce4_8422_2325);

async fn checksum_reader<R: AsyncRead + Unpin>(reader: &mut R) -> (u64, u64) {
    let mut state = CHECKSUM_START;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return state;
        }
        checksum(&buf[..n], &mut state);
    }
}

/// The checksum of the first `len` pattern bytes.
pub fn pattern_checksum(len: u64) -> (u64, u64) {
    let mut state = CHECKSUM_START;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut i = 0;
    while i < len {
        buf.clear();
        while i < len && buf.len() < 64 * 1024 {
            buf.push(pattern_byte(i));
            i += 1;
        }
        checksum(&buf, &mut state);
    }
    state
}

/// An endless-looking body generated on the fly, so that large bodies cost no memory.
pub struct Pattern {
    pub pos: u64,
    pub len: u64,
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min((self.len - self.pos) as usize);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(self.pos + k as u64);
        }
        self.pos += n as u64;
        Poll::Ready(Ok(n))
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.len - self.pos) as usize);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(self.pos + k as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A target that reads one request head per connection and answers with fixed bytes, then
/// closes (or, with `keep_open`, waits for the client to close). It records the raw request
/// heads it received.
pub struct RawTarget {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawTarget {
    /// Answers every request on every connection with `response`, closing after each.
    pub fn start(response: &'static [u8]) -> RawTarget {
        Self::start_with(move |_| response.to_vec(), true)
    }

    /// Answers each request with `respond(head)`; with `close`, closes after each answer.
    pub fn start_with(
        respond: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
        close: bool,
    ) -> RawTarget {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        {
            let requests = requests.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    let requests = requests.clone();
                    let respond = respond.clone();
                    std::thread::spawn(move || loop {
                        let Some(head) = read_head(&mut stream) else {
                            return;
                        };
                        requests.lock().unwrap().push(head.clone());
                        if stream.write_all(&respond(&head)).is_err() || close {
                            return;
                        }
                    });
                }
            });
        }
        RawTarget { addr, requests }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads up to and including the blank line that ends a head; `None` at end of stream.
/// Bodies are not read: raw targets are used with body-less requests.
pub fn read_head(stream: &mut StdStream) -> Option<Vec<u8>> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// Sends raw bytes to `addr` and returns everything received until the peer closes (or 10 s
/// pass without data).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = StdStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// Splits a response into its head (up to the blank line, as text) and its body bytes.
pub fn split_response(bytes: &[u8]) -> (String, Vec<u8>) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(bytes.len());
    (
        String::from_utf8_lossy(&bytes[..end]).into_owned(),
        bytes[end..].to_vec(),
    )
}

/// A target that sends a response head and then its body slowly, over about `total`.
pub fn trickling_target(total: Duration) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = read_head(&mut stream);
                let pieces = 10;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    pieces * 1000
                );
                for _ in 0..pieces {
                    std::thread::sleep(total / pieces as u32);
                    if stream.write_all(&[b'x'; 1000]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
