//! The binary's command line: help, usage errors, configuration errors and the flag forms of
//! the earlier Go tool, checked by running the real executable with a cleared environment.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kube-audience-proxy");

/// Upper bound for a process that should exit at once; only reached when something hangs.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// A scratch directory holding fake mounted ServiceAccount files; removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kap-cli-{}-{}-{}",
            std::process::id(),
            test,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create scratch dir");
        let scratch = Scratch { dir };
        scratch.write("namespace", "team-a\n");
        scratch.write("ca.crt", "fake ca bundle");
        scratch.write("token", "fake-api-token-not-real");
        scratch
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn write(&self, name: &str, content: &str) {
        fs::write(self.dir.join(name), content).expect("write scratch file");
    }

    /// Flags for a complete configuration that needs nothing from the environment and binds
    /// only an ephemeral loopback port.
    fn valid_flags(&self) -> Vec<String> {
        vec![
            "--service-account=prometheus".to_string(),
            format!("--namespace-file={}", self.path("namespace")),
            "--apiserver=https://127.0.0.1:1".to_string(),
            format!("--apiserver-ca-file={}", self.path("ca.crt")),
            format!("--apiserver-token-file={}", self.path("token")),
            "--insecure-listen-address=127.0.0.1:0".to_string(),
            format!("--ca-file-destination={}", self.path("out-ca.crt")),
        ]
    }

    /// The valid flags with `extra` appended (a later flag overrides an earlier one).
    fn flags_with(&self, extra: &[&str]) -> Vec<String> {
        let mut flags = self.valid_flags();
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts a configuration or usage error: exit 2, nothing on stdout, and exactly one
    /// prefixed line on stderr; returns that line.
    fn usage_error(&self) -> &str {
        assert_eq!(self.code(), Some(2), "stderr: {}", self.stderr);
        assert_eq!(self.stdout, "");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one stderr line, got {:?}",
            self.stderr
        );
        assert!(
            lines[0].starts_with("kube-audience-proxy: "),
            "{}",
            lines[0]
        );
        lines[0]
    }
}

fn command(args: &[String], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary to completion; kills it and fails the test if it outlives [`EXIT_LIMIT`].
fn run(args: &[String], env: &[(&str, &str)]) -> Outcome {
    let mut child = command(args, env).spawn().expect("spawn binary");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_or_kill(&mut child, EXIT_LIMIT).expect("binary did not exit in time");
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Waits up to `limit`; on timeout kills the child, reaps it and returns `None`.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_lists_the_flags_and_exits_zero() {
    for trigger in ["--help", "-h"] {
        let out = run(&strings(&[trigger]), &[]);
        assert_eq!(out.code(), Some(0), "{trigger}: {}", out.stderr);
        assert_eq!(out.stderr, "");
        assert!(
            out.stdout.starts_with("Usage: kube-audience-proxy"),
            "{}",
            out.stdout
        );
        for flag in [
            "--insecure-listen-address",
            "--secure-listen-address",
            "--service-account",
            "--namespace-file",
            "--apiserver",
            "--audience-parameter",
            "--allowed-audiences",
            "--token-expiration-seconds",
            "--ca-file-destination",
            "--insecure-skip-tls-verify",
            "--log-level",
            "--log-format",
        ] {
            assert!(out.stdout.contains(flag), "{trigger}: {flag} missing");
        }
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run(&strings(&["--no-such-flag"]), &[]);
    let line = out.usage_error();
    assert!(line.contains("--no-such-flag"), "{line}");
}

#[test]
fn missing_service_account_names_flag_and_variable() {
    let scratch = Scratch::new("sa");
    let flags: Vec<String> = scratch
        .valid_flags()
        .into_iter()
        .filter(|f| !f.starts_with("--service-account"))
        .collect();
    let out = run(&flags, &[]);
    let line = out.usage_error();
    assert!(line.contains("--service-account"), "{line}");
    assert!(
        line.contains("SERVICE_ACCOUNT environment variable"),
        "{line}"
    );
}

#[test]
fn service_account_from_the_environment_is_used() {
    let scratch = Scratch::new("sa-env");
    let flags: Vec<String> = scratch
        .valid_flags()
        .into_iter()
        .filter(|f| !f.starts_with("--service-account"))
        .chain(["--token-expiration-seconds=1".to_string()])
        .collect();
    // Past the service account check, the next error proves the variable was read.
    let out = run(&flags, &[("SERVICE_ACCOUNT", "prometheus")]);
    assert!(out.usage_error().contains("--token-expiration-seconds 1"));
}

#[test]
fn unreadable_namespace_file_names_the_path() {
    let scratch = Scratch::new("ns");
    let missing = scratch.path("no-namespace");
    let out = run(
        &scratch.flags_with(&[&format!("--namespace-file={missing}")]),
        &[],
    );
    let line = out.usage_error();
    assert!(
        line.contains(&format!("cannot read --namespace-file {missing}: ")),
        "{line}"
    );
    assert!(line.contains("No such file"), "{line}");
}

#[test]
fn bad_apiserver_url_is_refused() {
    let scratch = Scratch::new("url");
    let out = run(&scratch.flags_with(&["--apiserver=https://h/?x=1"]), &[]);
    assert_eq!(
        out.usage_error(),
        "kube-audience-proxy: --apiserver https://h/?x=1: the url must not have a query"
    );
}

#[test]
fn missing_service_host_without_apiserver_flag() {
    let scratch = Scratch::new("host");
    let flags: Vec<String> = scratch
        .valid_flags()
        .into_iter()
        .filter(|f| !f.starts_with("--apiserver="))
        .collect();
    let out = run(&flags, &[("KUBERNETES_SERVICE_PORT", "443")]);
    let line = out.usage_error();
    assert!(line.contains("--apiserver"), "{line}");
    assert!(line.contains("KUBERNETES_SERVICE_HOST"), "{line}");
    assert!(line.contains("KUBERNETES_SERVICE_PORT"), "{line}");
}

#[test]
fn short_token_lifetime_is_refused() {
    let scratch = Scratch::new("exp");
    let out = run(
        &scratch.flags_with(&["--token-expiration-seconds=300"]),
        &[],
    );
    assert_eq!(
        out.usage_error(),
        "kube-audience-proxy: --token-expiration-seconds 300: must be at least 600 (the API \
         server refuses shorter tokens)"
    );
}

#[test]
fn bad_log_level_is_a_usage_error() {
    let out = run(&strings(&["--log-level=loud"]), &[]);
    let line = out.usage_error();
    assert!(line.contains("--log-level"), "{line}");
    assert!(
        line.contains("all, debug, info, warn, error, none"),
        "{line}"
    );
}

#[test]
fn bad_allowed_audiences_is_refused() {
    let scratch = Scratch::new("aud");
    let out = run(&scratch.flags_with(&["--allowed-audiences=a=*."]), &[]);
    let line = out.usage_error();
    assert!(
        line.starts_with(
            "kube-audience-proxy: invalid --allowed-audiences: invalid entry \"a=*.\""
        ),
        "{line}"
    );
}

#[test]
fn old_tls_versions_are_refused() {
    let scratch = Scratch::new("tls");
    let out = run(
        &scratch.flags_with(&["--tls-min-version=VersionTLS10"]),
        &[],
    );
    let line = out.usage_error();
    assert!(line.contains("--tls-min-version VersionTLS10"), "{line}");
    assert!(line.contains("VersionTLS12, VersionTLS13"), "{line}");
}

#[test]
fn every_flag_is_accepted_in_equals_form() {
    let scratch = Scratch::new("eq");
    let missing = scratch.path("no-upstream-ca");
    // All valid, except the upstream CA file, which is checked last: reaching that error
    // proves every other flag parsed and passed validation.
    let flags = scratch.flags_with(&[
        "--secure-listen-address=127.0.0.1:0",
        "--namespace=team-b",
        "--tls-min-version=VersionTLS13",
        "--tls-cipher-suites=TLS_AES_128_GCM_SHA256",
        "--audience-parameter=aud",
        "--allowed-audiences=a,b=*.svc",
        "--token-expiration-seconds=7200",
        "--insecure-skip-tls-verify=false",
        "--log-level=warn",
        "--log-format=json",
        &format!("--upstream-ca-file={missing}"),
    ]);
    let out = run(&flags, &[]);
    let line = out.usage_error();
    assert!(
        line.contains(&format!("cannot read --upstream-ca-file {missing}")),
        "{line}"
    );
}

#[test]
fn switch_with_a_non_boolean_value_is_refused() {
    let out = run(&strings(&["--insecure-skip-tls-verify=maybe"]), &[]);
    let line = out.usage_error();
    assert!(line.contains("--insecure-skip-tls-verify"), "{line}");
    assert!(line.contains("maybe"), "{line}");
}

/// Starts the binary with a valid configuration plus klog flags, waits for the warning about
/// them, then stops it; returns the warning line. Holds whether the proxy exits at once or
/// keeps serving, since the warning comes before the proxy starts.
fn klog_warning(format: &str) -> String {
    let scratch = Scratch::new("klog");
    let flags = scratch.flags_with(&[
        "--v=2",
        "-v",
        "3",
        "--logtostderr",
        "--alsologtostderr=false",
        "--vmodule",
        "x=1",
        &format!("--log-format={format}"),
    ]);
    let mut child = command(&flags, &[]).spawn().expect("spawn binary");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = child.stderr.take().expect("piped stderr");

    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + EXIT_LIMIT;
    let mut seen = Vec::new();
    let warning = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) if line.contains("ignoring flags of the earlier implementation") => {
                break Some(line)
            }
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };

    // Stop the proxy if it is still running. If it already exited, the configuration must
    // have been accepted: it may stop later for lack of a real API server, never with 2.
    if let Some(status) = child.try_wait().expect("try_wait") {
        assert_ne!(
            status.code(),
            Some(2),
            "configuration refused; stderr: {seen:?}"
        );
    } else {
        let _ = child.kill();
        let _ = child.wait();
    }
    reader.join().expect("stderr reader");
    seen.extend(lines_rx.try_iter());
    let _ = stdout.join();

    let warning =
        warning.unwrap_or_else(|| panic!("no warning about klog flags; stderr: {seen:?}"));
    let repeated: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("ignoring flags"))
        .collect();
    assert!(repeated.is_empty(), "warned more than once: {repeated:?}");
    assert!(
        !seen.iter().any(|l| l.contains("fake-api-token-not-real")),
        "the API token was logged"
    );
    warning
}

#[test]
fn klog_flags_are_accepted_with_one_logfmt_warning() {
    let warning = klog_warning("logfmt");
    assert!(warning.starts_with("ts="), "{warning}");
    assert!(warning.contains(" level=warn "), "{warning}");
    assert!(
        warning.ends_with(
            "msg=\"ignoring flags of the earlier implementation\" \
             flags=--v,--logtostderr,--alsologtostderr,--vmodule"
        ),
        "{warning}"
    );
}

#[test]
fn klog_flags_are_accepted_with_one_json_warning() {
    let warning = klog_warning("json");
    let event: serde_json::Value = serde_json::from_str(&warning).expect("a JSON line");
    assert_eq!(event["level"], "warn");
    assert_eq!(event["msg"], "ignoring flags of the earlier implementation");
    assert_eq!(
        event["flags"],
        "--v,--logtostderr,--alsologtostderr,--vmodule"
    );
    assert!(event["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
}
