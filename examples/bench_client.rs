//! Load client for `scripts/bench.sh`: the scenarios wrk cannot drive, HTTPS through CONNECT
//! (one tunnel reused, or a new CONNECT and a full TLS handshake per request) and the same
//! directly to the target; plus the start-up measurement. One thread per connection, std I/O
//! and rustls; plain HTTP works too. It prints one `key=value` line for the script.
//!
//! ```text
//! bench_client load --url URL [--proxy ADDR] [--ca FILE] [--connections N] [--seconds S]
//!                   [--new-connections] [--requests N] [--audiences N] [--hold N]
//! bench_client startup --url URL --audience-url URL -- PROXY-COMMAND… ({port} is replaced)
//! ```
//!
//! `load` prints `requests= errors= seconds= rps= p50_ms= p99_ms=`; it stops at the deadline
//! or after `--requests` in all; `{aud}` in the URL cycles through `--audiences` names; with
//! `--hold N` it first opens N keep-alive connections, each served once, keeps them open
//! during the run, sends one more request on each at the end and prints `held= hold_errors=`.
//! TLS session resumption
//! is off, so that every new connection pays for a full handshake, as a Go client without a
//! session cache does. `startup` runs the command with a free loopback port in place of
//! `{port}`, and prints `first_ms=` (until a request without an audience is answered) and
//! `audience_ms=` (until one with an audience, hence a TokenRequest, is answered), both from
//! the spawn; then, after a second of idleness, `idle_rss_kib=`, and stops the proxy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Url {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query.
    path: String,
}

fn parse_url(url: &str) -> Url {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        panic!("--url must be http:// or https://: {url}")
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority.rsplit_once(':').expect("the URL needs a port");
    Url {
        tls,
        host: host.to_string(),
        port: port.parse().expect("a numeric port"),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    }
}

/// What each connection needs; shared by the threads.
struct Plan {
    url: Url,
    proxy: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `{aud}` in the path becomes `aud-K`, K cycling through this many audiences.
    audiences: usize,
    /// Requests left to send in all, when limited.
    budget: Option<AtomicI64>,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Plan {
    /// A connection ready for requests: TCP, CONNECT through the proxy for TLS, TLS.
    fn open(&self) -> std::io::Result<BufReader<Box<dyn Stream>>> {
        let addr = match &self.proxy {
            Some(p) => p.clone(),
            None => format!("{}:{}", self.url.host, self.url.port),
        };
        let tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let Some(config) = &self.tls else {
            return Ok(BufReader::new(Box::new(tcp)));
        };
        let mut tcp = tcp;
        if self.proxy.is_some() {
            let authority = format!("{}:{}", self.url.host, self.url.port);
            write!(
                tcp,
                "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
            )?;
            let mut reader = BufReader::new(tcp);
            let status = read_head(&mut reader)?.0;
            if status != 200 {
                return Err(std::io::Error::other(format!("CONNECT answered {status}")));
            }
            if !reader.buffer().is_empty() {
                return Err(std::io::Error::other("bytes after the CONNECT answer"));
            }
            tcp = reader.into_inner();
        }
        let name = rustls::pki_types::ServerName::try_from(self.url.host.clone())
            .map_err(std::io::Error::other)?;
        let conn =
            rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // Complete the handshake now, so that a failure shows here and not in the request.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(BufReader::new(Box::new(tls)))
    }

    /// The request bytes: absolute-form for plain HTTP through the proxy.
    fn request(&self, close: bool, n: usize) -> Vec<u8> {
        let authority = format!("{}:{}", self.url.host, self.url.port);
        let path = self
            .url
            .path
            .replace("{aud}", &format!("aud-{}", n % self.audiences.max(1)));
        let target = if self.proxy.is_some() && !self.url.tls {
            format!("http://{authority}{path}")
        } else {
            path
        };
        let connection = if close { "Connection: close\r\n" } else { "" };
        format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n{connection}\r\n").into_bytes()
    }
}

/// Reads a response head; returns the status and the Content-Length.
fn read_head<R: BufRead>(reader: &mut R) -> std::io::Result<(u16, Option<usize>)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            return Ok((status, length));
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
}

/// One request and its whole response; `Ok(status)`.
fn exchange<S: Read + Write>(conn: &mut BufReader<S>, request: &[u8]) -> std::io::Result<u16> {
    conn.get_mut().write_all(request)?;
    conn.get_mut().flush()?;
    let (status, length) = read_head(conn)?;
    let length = length.ok_or_else(|| std::io::Error::other("no Content-Length"))?;
    let mut remaining = length;
    while remaining > 0 {
        let available = conn.fill_buf()?;
        if available.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = available.len().min(remaining);
        conn.consume(n);
        remaining -= n;
    }
    Ok(status)
}

fn tls_config(ca_file: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).expect("read --ca") {
        roots.add(cert.expect("a PEM certificate")).expect("a CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Runs one connection's loop until `deadline`; returns latencies (µs) and the error count.
fn run_connection(plan: &Plan, deadline: Instant, new_connections: bool) -> (Vec<u32>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let requests: Vec<Vec<u8>> = (0..plan.audiences.max(1))
        .map(|n| plan.request(new_connections, n))
        .collect();
    let mut conn = None;
    let mut sent = 0usize;
    while Instant::now() < deadline {
        if let Some(budget) = &plan.budget {
            if budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
                break;
            }
        }
        let request = &requests[sent % requests.len()];
        sent += 1;
        let started = Instant::now();
        if conn.is_none() {
            match plan.open() {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("opened above");
        match exchange(c, request) {
            Ok(200) => latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Ok(_) | Err(_) => {
                errors += 1;
                conn = None;
                continue;
            }
        }
        if new_connections {
            conn = None;
        }
    }
    (latencies, errors)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn load(args: &[String]) -> ExitCode {
    let mut url = None;
    let mut proxy = None;
    let mut ca = None;
    let mut connections = 1usize;
    let mut seconds = 5.0f64;
    let mut new_connections = false;
    let mut audiences = 1;
    let mut budget = None;
    let mut hold = 0usize;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(parse_url(value())),
            "--proxy" => proxy = Some(value().clone()),
            "--ca" => ca = Some(value().clone()),
            "--connections" => connections = value().parse().expect("--connections N"),
            "--seconds" => seconds = value().parse().expect("--seconds S"),
            "--new-connections" => new_connections = true,
            "--audiences" => audiences = value().parse().expect("--audiences N"),
            "--requests" => budget = Some(AtomicI64::new(value().parse().expect("--requests N"))),
            "--hold" => hold = value().parse().expect("--hold N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let url = url.expect("--url is required");
    let tls = url
        .tls
        .then(|| tls_config(ca.as_deref().expect("--ca is required for https")));
    let plan = Arc::new(Plan {
        url,
        proxy,
        tls,
        audiences,
        budget,
    });

    // Connections held open across the run: each is served once before and once after.
    let mut held = Vec::new();
    let mut hold_errors = 0u64;
    for n in 0..hold {
        match plan
            .open()
            .and_then(|mut c| exchange(&mut c, &plan.request(false, n)).map(|s| (c, s)))
        {
            Ok((c, 200)) => held.push(c),
            _ => hold_errors += 1,
        }
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let plan = plan.clone();
            std::thread::spawn(move || run_connection(&plan, deadline, new_connections))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (l, e) = t.join().expect("a load thread panicked");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for (n, c) in held.iter_mut().enumerate() {
        if !matches!(exchange(c, &plan.request(false, n)), Ok(200)) {
            hold_errors += 1;
        }
    }
    if hold > 0 {
        println!("held={} hold_errors={hold_errors}", held.len());
    }
    drop(held);
    latencies.sort_unstable();
    println!(
        "requests={} errors={errors} seconds={elapsed:.3} rps={:.1} p50_ms={:.3} p99_ms={:.3}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    ExitCode::SUCCESS
}

/// Tries `url` through the proxy at `addr` every half millisecond until it is answered 200.
fn first_success(addr: &str, url: &str, limit: Instant) -> bool {
    let plan = Plan {
        url: parse_url(url),
        proxy: Some(addr.to_string()),
        tls: None,
        audiences: 1,
        budget: None,
    };
    let request = plan.request(true, 0);
    while Instant::now() < limit {
        if let Ok(mut c) = plan.open() {
            if let Ok(200) = exchange(&mut c, &request) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

fn startup(args: &[String]) -> ExitCode {
    let split = args
        .iter()
        .position(|a| a == "--")
        .expect("-- PROXY-COMMAND");
    let (flags, command) = (&args[..split], &args[split + 1..]);
    let mut url = None;
    let mut audience_url = None;
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--audience-url" => audience_url = Some(value.clone()),
            other => panic!("unknown flag {other}"),
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let command: Vec<String> = command
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();

    let spawned = Instant::now();
    let child = Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .expect("start the proxy");
    let limit = spawned + Duration::from_secs(10);
    let ok = first_success(&addr, url.as_deref().expect("--url"), limit);
    let first = spawned.elapsed();
    let ok = ok
        && first_success(
            &addr,
            audience_url.as_deref().expect("--audience-url"),
            limit,
        );
    let audience = spawned.elapsed();
    if !ok {
        eprintln!("bench_client: the proxy did not answer within 10 s");
        stop(child);
        return ExitCode::FAILURE;
    }
    // Idle: the proxy has served its first requests and holds one token.
    std::thread::sleep(Duration::from_secs(1));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
    let idle_rss_kib = status
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    stop(child);
    println!(
        "first_ms={:.2} audience_ms={:.2} idle_rss_kib={idle_rss_kib}",
        first.as_secs_f64() * 1000.0,
        audience.as_secs_f64() * 1000.0,
    );
    ExitCode::SUCCESS
}

/// Ends the proxy with SIGTERM, as an orchestrator would, and reaps it.
fn stop(mut child: std::process::Child) {
    // SAFETY: signalling a child process we started and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => load(&args[1..]),
        Some("startup") => startup(&args[1..]),
        _ => {
            eprintln!("usage: bench_client load … | bench_client startup … -- COMMAND…");
            ExitCode::from(2)
        }
    }
}
