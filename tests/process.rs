//! The binary as an operator runs it: against the fake API server, with real clients, checking
//! its log output (never a secret, at the most verbose level), signals and start-up failures.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::apiserver::FakeApiServer;
use common::tempdir::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_kube-audience-proxy");

/// A running proxy process whose stderr is collected line by line.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl ProxyProcess {
    fn start(api: &FakeApiServer, dir: &TempDir, extra: &[&str]) -> ProxyProcess {
        let port = free_port();
        let mut child = proxy_command(api, dir, port)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the proxy binary");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut process = ProxyProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            lines,
            log: Vec::new(),
        };
        process.wait_for_line("listening");
        process
    }

    /// Waits up to 10 s for a log line containing `needle`.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Everything logged so far, waiting briefly for stragglers.
    fn drain_log(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0);
    }

    /// Waits up to `limit` for the process to exit and returns its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the proxy did not exit within {limit:?}");
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn proxy_command(api: &FakeApiServer, dir: &TempDir, port: u16) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("SERVICE_ACCOUNT", "prometheus")
        .arg(format!("--insecure-listen-address=127.0.0.1:{port}"))
        .arg(format!("--apiserver={}", api.url()))
        .arg(format!("--apiserver-ca-file={}", api.ca_file().display()))
        .arg(format!(
            "--apiserver-token-file={}",
            api.token_file().display()
        ))
        .arg("--namespace=monitoring")
        .arg(format!(
            "--ca-file-destination={}",
            dir.join("ca.crt").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// One request through the proxy, written by hand so that every header is under our control.
fn request_through(proxy: SocketAddr, target: &str, extra_headers: &str) -> String {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra_headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn no_secret_reaches_the_log_even_at_the_most_verbose_level() {
    for format in ["logfmt", "json"] {
        let api = FakeApiServer::builder().start();
        let dir = TempDir::new();
        let target = common::block_on(common::target::HttpTarget::start());
        let level = ["--log-level=all", &format!("--log-format={format}")];
        let mut proxy = ProxyProcess::start(&api, &dir, &level);

        let response = request_through(
            proxy.addr,
            &target.url("/m?kubernetes-audience=log-check&q=1"),
            "Authorization: Bearer client-secret-bearer\r\n\
             Proxy-Authorization: Basic cHJveHktc2VjcmV0\r\nCookie: session=cookie-secret\r\n",
        );
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        api.fail_all(403);
        let refused = request_through(proxy.addr, &target.url("/?kubernetes-audience=other"), "");
        assert!(refused.starts_with("HTTP/1.1 502"), "{refused}");

        // The request was served, and logged at debug…
        proxy.wait_for_line("log-check");
        let log = proxy.drain_log();
        let seen = target.last();
        let issued = seen.authorization.unwrap();
        let issued = issued.strip_prefix("Bearer ").unwrap();
        // …but none of the secrets involved appears anywhere in it.
        for secret in [
            issued,
            "fake-token.",
            "fake-mounted-api-token-0",
            "client-secret-bearer",
            "cHJveHktc2VjcmV0",
            "cookie-secret",
            "Bearer",
        ] {
            assert!(
                !log.contains(secret),
                "{secret:?} was logged ({format}):\n{log}"
            );
        }
        assert!(!log.contains("q=1"), "a query string was logged:\n{log}");
    }
}

#[test]
fn sigterm_and_sigint_end_the_process_promptly_with_status_0() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let api = FakeApiServer::builder().start();
        let dir = TempDir::new();
        let mut proxy = ProxyProcess::start(&api, &dir, &[]);
        // An idle client connection must not hold the exit up.
        let _idle = TcpStream::connect(proxy.addr).unwrap();

        proxy.signal(signal);

        assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
        proxy.wait_for_line("shutting down");
    }
}

#[test]
fn a_port_in_use_is_a_start_up_error_naming_the_flag() {
    let api = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();

    let output = proxy_command(&api, &dir, port)
        .stderr(Stdio::piped())
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kube-audience-proxy: --insecure-listen-address 127.0.0.1:"),
        "{stderr}"
    );
    assert!(last.contains("in use"), "{stderr}");
}

#[test]
fn an_unwritable_ca_destination_is_a_start_up_error_naming_the_path() {
    let api = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let output = proxy_command(&api, &dir, free_port())
        .arg("--ca-file-destination=/nonexistent-dir/ca.crt")
        .stderr(Stdio::piped())
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent-dir/ca.crt"), "{stderr}");
}

#[test]
fn the_api_server_down_at_start_up_does_not_stop_the_proxy() {
    let api = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let target = common::block_on(common::target::HttpTarget::start());
    api.stop();
    let proxy = ProxyProcess::start(&api, &dir, &[]);

    let pass = request_through(proxy.addr, &target.url("/plain"), "");
    assert!(pass.starts_with("HTTP/1.1 200"), "{pass}");
    let failed = request_through(proxy.addr, &target.url("/?kubernetes-audience=later"), "");
    assert!(failed.starts_with("HTTP/1.1 502"), "{failed}");

    api.restart();
    // The failure is remembered for a few seconds; after that the proxy recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = request_through(proxy.addr, &target.url("/?kubernetes-audience=later"), "");
        if again.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {again}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(target.last().token_audience.as_deref(), Some("later"));
}

/// Starts a download of a slowly sent body through `proxy` and returns the thread that
/// reports how many body bytes arrived.
fn slow_download(proxy: SocketAddr, total: Duration) -> std::thread::JoinHandle<usize> {
    let slow = common::target::trickling_target(total);
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(proxy).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(stream, "GET http://{slow}/big HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        common::target::split_response(&response).1.len()
    })
}

#[test]
fn sigterm_lets_a_long_download_finish_then_exits_0() {
    let api = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let mut proxy = ProxyProcess::start(&api, &dir, &["--shutdown-grace-period=20s"]);
    let download = slow_download(proxy.addr, Duration::from_millis(2000));
    std::thread::sleep(Duration::from_millis(400));

    proxy.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "exited before the download ended"
    );

    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(
        download.join().unwrap(),
        10_000,
        "the download was cut short"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let api = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let mut proxy = ProxyProcess::start(&api, &dir, &["--shutdown-grace-period=60s"]);
    let download = slow_download(proxy.addr, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(400));

    proxy.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "did not wait for the download"
    );
    proxy.signal(libc::SIGINT);

    assert_eq!(proxy.wait_exit(Duration::from_secs(2)), Some(0));
    assert!(download.join().unwrap() < 10_000);
}

#[test]
fn an_upstream_ca_file_without_certificates_is_a_start_up_error_naming_it() {
    let api = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let bogus = dir.join("not-a-ca.pem");
    std::fs::write(&bogus, "this is no certificate\n").unwrap();
    let output = proxy_command(&api, &dir, free_port())
        .arg(format!("--upstream-ca-file={}", bogus.display()))
        .stderr(Stdio::piped())
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not-a-ca.pem"), "{stderr}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Streams a body much larger than any buffer the proxy has: its peak memory must not move
/// by more than a small fraction of the body, so nothing buffered the body whole.
#[test]
fn a_large_download_does_not_grow_the_proxys_memory() {
    const SIZE: u64 = 128 * 1024 * 1024;
    let api = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let target = common::block_on(common::target::HttpTarget::start());
    let proxy = ProxyProcess::start(&api, &dir, &[]);
    let warm_up = request_through(proxy.addr, &target.url("/warm-up"), "");
    assert!(warm_up.starts_with("HTTP/1.1 200"), "{warm_up}");
    let before = peak_rss_kib(proxy.child.id());

    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let url = target.url(&format!("/bytes/{SIZE}?kubernetes-audience=big"));
    write!(
        stream,
        "GET {url} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) => panic!("download failed after {received} bytes: {e}"),
        }
    }

    assert!(received > SIZE, "only {received} bytes arrived");
    let growth_kib = peak_rss_kib(proxy.child.id()).saturating_sub(before);
    assert!(
        growth_kib < 8 * 1024,
        "peak memory grew by {growth_kib} KiB"
    );
}
