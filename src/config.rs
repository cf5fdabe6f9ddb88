//! Validated settings, derived from the raw flags in [`crate::cli`] and the environment.
//!
//! Every file the proxy needs at start-up is read here, so that a missing or unreadable file
//! is a start-up error naming the flag, not a failure on the first request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::AudiencePolicy;

/// Everything the proxy needs to run, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain-HTTP proxy listener (`--insecure-listen-address`).
    pub insecure_listen: Option<SocketAddr>,
    /// TLS proxy listener (`--secure-listen-address`).
    pub secure_listen: Option<SocketAddr>,
    /// Certificate for the TLS listener; `None` means generate a self-signed one.
    pub listener_tls: ListenerTls,
    pub api: ApiSettings,
    /// Query parameter that carries the audience (`--audience-parameter`).
    pub audience_parameter: String,
    pub policy: AudiencePolicy,
    /// `spec.expirationSeconds` of every TokenRequest.
    pub token_expiration_seconds: u32,
    /// Where the interception CA certificate is written (`--ca-file-destination`).
    pub ca_file_destination: PathBuf,
    pub upstream_tls: UpstreamTls,
    pub timeouts: Timeouts,
}

/// How to reach the API server and who we are there.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL without a trailing slash, e.g. `https://10.0.0.1:443` or `https://[fd00::1]:443`.
    pub server: String,
    /// PEM bundle the API server's certificate must chain to; `None` only for `http://`.
    pub ca_file: Option<PathBuf>,
    /// Mounted bearer token file, re-read as the kubelet rotates it.
    pub token_file: PathBuf,
    pub namespace: String,
    pub service_account: String,
}

/// Certificate of the proxy's own TLS listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerTls {
    /// `(--tls-cert-file, --tls-private-key-file)`; both or neither.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// `--tls-min-version`: TLS 1.3 only when true.
    pub tls13_only: bool,
    /// `--tls-cipher-suites`, as Go names; empty means rustls's defaults.
    pub cipher_suites: Vec<String>,
}

/// Trust for TLS connections to upstream targets.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// `--upstream-ca-file`, repeatable.
    pub extra_ca_files: Vec<PathBuf>,
    /// `--insecure-skip-tls-verify`.
    pub insecure_skip_verify: bool,
}

/// Time limits on each step of a request.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Reading a request head, from its first byte or from the end of the previous response.
    pub client_head: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub client_idle: Duration,
    /// Establishing a TCP (and TLS) connection to an upstream.
    pub upstream_connect: Duration,
    /// From the end of the request to the upstream's response head.
    pub upstream_response: Duration,
    /// An idle pooled upstream connection is dropped after this.
    pub upstream_idle: Duration,
    /// Connect timeout of a TokenRequest.
    pub token_connect: Duration,
    /// Whole-call timeout of a TokenRequest.
    pub token_call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_head: Duration::from_secs(30),
            client_idle: Duration::from_secs(90),
            upstream_connect: Duration::from_secs(10),
            upstream_response: Duration::from_secs(60),
            upstream_idle: Duration::from_secs(60),
            token_connect: Duration::from_secs(5),
            token_call: Duration::from_secs(15),
        }
    }
}
