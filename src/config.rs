//! Validated settings, derived from the raw flags in [`crate::cli`] and the environment.
//!
//! Every file the proxy needs at start-up is read here, so that a missing or unreadable file
//! is a start-up error naming the flag, not a failure on the first request. Files are only
//! checked (or, for the namespace, read); loading certificates and keys is left to the modules
//! that use them. In-cluster discovery follows what a pod gets from Kubernetes: the mounted
//! ServiceAccount files and the `KUBERNETES_SERVICE_*` variables.
//!
//! Logging settings are not here: [`crate::cli::Args`] carries them, because logging is set up
//! before this validation runs.

use std::error::Error;
use std::fmt;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Args;
use crate::policy::{AudiencePolicy, PolicyError};

/// Environment variable naming the ServiceAccount when `--service-account` is not given.
pub const ENV_SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// Environment variable Kubernetes sets in every pod: the API server's service address.
pub const ENV_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
/// Environment variable Kubernetes sets in every pod: the API server's service port.
pub const ENV_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";

/// Mounted file holding the pod's namespace.
pub const DEFAULT_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Mounted CA bundle of the cluster.
pub const DEFAULT_API_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// Mounted ServiceAccount token, rotated by the kubelet.
pub const DEFAULT_API_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Query parameter carrying the audience, as in the Go tool.
pub const DEFAULT_AUDIENCE_PARAMETER: &str = "kubernetes-audience";
/// Where the interception CA certificate goes: the working directory, as in the Go tool.
pub const DEFAULT_CA_FILE_DESTINATION: &str = "ca.crt";
/// Plain-HTTP listener when no listener flag is given: loopback only, since anything that can
/// reach the proxy can obtain tokens of our ServiceAccount.
pub const DEFAULT_INSECURE_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Shortest token lifetime in seconds the TokenRequest API accepts (10 minutes).
pub const MIN_TOKEN_EXPIRATION_SECONDS: u64 = 600;

/// `--tls-min-version` values we accept; TLS 1.0 and 1.1 are not implemented by rustls.
const TLS_VERSIONS: &str = "VersionTLS12, VersionTLS13";

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

/// Why the flags and environment do not make a usable configuration. Each variant names the
/// step that failed; the values shown are flag values and paths, never file contents.
#[derive(Debug)]
pub enum ConfigError {
    /// A flag value is malformed or out of range.
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// One of `--tls-cert-file` / `--tls-private-key-file` without the other.
    IncompleteTlsPair {
        given: &'static str,
        missing: &'static str,
    },
    /// `--tls-cert-file` or `--tls-private-key-file` cannot be read.
    ReadTlsFile {
        flag: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Neither `--service-account` nor `$SERVICE_ACCOUNT` is set.
    MissingServiceAccount,
    /// The namespace file cannot be read.
    ReadNamespaceFile { path: PathBuf, source: io::Error },
    /// The namespace file holds only whitespace.
    EmptyNamespace { path: PathBuf },
    /// The namespace file holds something that is not a namespace name.
    InvalidNamespaceFile {
        path: PathBuf,
        namespace: String,
        reason: &'static str,
    },
    /// Neither `--apiserver` nor the `KUBERNETES_SERVICE_*` variables are set.
    MissingApiServer,
    /// `--apiserver` is not a URL we can use.
    ParseApiServerUrl { url: String, reason: &'static str },
    /// The URL built from `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` is not one
    /// we can use.
    ParseInClusterUrl { url: String, reason: &'static str },
    /// The API server's CA bundle cannot be read.
    ReadApiServerCa { path: PathBuf, source: io::Error },
    /// The API token file cannot be read.
    ReadApiServerToken { path: PathBuf, source: io::Error },
    /// The API token file is empty.
    EmptyApiServerToken { path: PathBuf },
    /// `--allowed-audiences` does not parse.
    ParseAllowedAudiences { source: PolicyError },
    /// An `--upstream-ca-file` cannot be read.
    ReadUpstreamCa { path: PathBuf, source: io::Error },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidFlag {
                flag,
                value,
                reason,
            } => write!(f, "{flag} {}: {reason}", shown(value)),
            ConfigError::IncompleteTlsPair { given, missing } => {
                write!(
                    f,
                    "{given} is set but {missing} is not: give both or neither"
                )
            }
            ConfigError::ReadTlsFile { flag, path, .. } => {
                write!(f, "cannot read {flag} {}", shown_path(path))
            }
            ConfigError::MissingServiceAccount => write!(
                f,
                "no service account: set --service-account or the {ENV_SERVICE_ACCOUNT} \
                 environment variable"
            ),
            ConfigError::ReadNamespaceFile { path, .. } => {
                write!(f, "cannot read --namespace-file {}", shown_path(path))
            }
            ConfigError::EmptyNamespace { path } => write!(
                f,
                "--namespace-file {} is empty: it must hold the namespace, or set --namespace",
                shown_path(path)
            ),
            ConfigError::InvalidNamespaceFile {
                path,
                namespace,
                reason,
            } => write!(
                f,
                "--namespace-file {} holds {namespace:?}: {reason}",
                shown_path(path)
            ),
            ConfigError::MissingApiServer => write!(
                f,
                "no api server: set --apiserver, or the {ENV_SERVICE_HOST} and \
                 {ENV_SERVICE_PORT} environment variables"
            ),
            ConfigError::ParseApiServerUrl { url, reason } => {
                write!(f, "--apiserver {}: {reason}", shown(url))
            }
            ConfigError::ParseInClusterUrl { url, reason } => write!(
                f,
                "api server url {} built from {ENV_SERVICE_HOST} and {ENV_SERVICE_PORT}: \
                 {reason}",
                shown(url)
            ),
            ConfigError::ReadApiServerCa { path, .. } => {
                write!(f, "cannot read --apiserver-ca-file {}", shown_path(path))
            }
            ConfigError::ReadApiServerToken { path, .. } => {
                write!(f, "cannot read --apiserver-token-file {}", shown_path(path))
            }
            ConfigError::EmptyApiServerToken { path } => {
                write!(f, "--apiserver-token-file {} is empty", shown_path(path))
            }
            ConfigError::ParseAllowedAudiences { .. } => write!(f, "invalid --allowed-audiences"),
            ConfigError::ReadUpstreamCa { path, .. } => {
                write!(f, "cannot read --upstream-ca-file {}", shown_path(path))
            }
        }
    }
}

impl Error for ConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ConfigError::ReadTlsFile { source, .. }
            | ConfigError::ReadNamespaceFile { source, .. }
            | ConfigError::ReadApiServerCa { source, .. }
            | ConfigError::ReadApiServerToken { source, .. }
            | ConfigError::ReadUpstreamCa { source, .. } => Some(source),
            ConfigError::ParseAllowedAudiences { source } => Some(source),
            _ => None,
        }
    }
}

impl Config {
    /// Validates the flags, fills in defaults from `env` (a variable lookup, normally
    /// `std::env::var`) and the mounted ServiceAccount files, and checks that every file the
    /// proxy will read is readable now.
    ///
    /// Fails on the first problem found, in flag order; see [`ConfigError`]. Reads the
    /// namespace file (unless `--namespace` is given) and reads, then drops, the CA, token and
    /// certificate files; nothing read is kept except the namespace.
    pub fn from_args(
        args: Args,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let insecure_listen = args
            .insecure_listen_address
            .as_deref()
            .map(|a| parse_listen_address("--insecure-listen-address", a))
            .transpose()?;
        let secure_listen = args
            .secure_listen_address
            .as_deref()
            .map(|a| parse_listen_address("--secure-listen-address", a))
            .transpose()?;
        let insecure_listen = match (insecure_listen, secure_listen) {
            (None, None) => Some(DEFAULT_INSECURE_LISTEN),
            (insecure, _) => insecure,
        };

        let listener_tls = listener_tls(&args)?;

        let service_account = match args.service_account {
            Some(name) => Some(name),
            None => env(ENV_SERVICE_ACCOUNT),
        }
        .filter(|name| !name.is_empty())
        .ok_or(ConfigError::MissingServiceAccount)?;
        check_kube_name(&service_account, 253, true).map_err(|reason| {
            ConfigError::InvalidFlag {
                flag: "--service-account",
                value: service_account.clone(),
                reason: reason.to_string(),
            }
        })?;

        let namespace = namespace(args.namespace, args.namespace_file)?;

        let server = api_server(args.apiserver, env)?;
        let ca_file = if server.starts_with("https://") {
            let path = args
                .apiserver_ca_file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_API_CA_FILE));
            fs::read(&path).map_err(|source| ConfigError::ReadApiServerCa {
                path: path.clone(),
                source,
            })?;
            Some(path)
        } else {
            None
        };
        let token_file = args
            .apiserver_token_file
            .unwrap_or_else(|| PathBuf::from(DEFAULT_API_TOKEN_FILE));
        check_token_file(&token_file)?;

        let audience_parameter = args
            .audience_parameter
            .unwrap_or_else(|| DEFAULT_AUDIENCE_PARAMETER.to_string());
        check_audience_parameter(&audience_parameter)?;

        let policy = match &args.allowed_audiences {
            None => AudiencePolicy::Any,
            Some(list) => AudiencePolicy::parse(list)
                .map_err(|source| ConfigError::ParseAllowedAudiences { source })?,
        };

        let token_expiration_seconds = token_expiration(args.token_expiration_seconds)?;

        for path in &args.upstream_ca_file {
            fs::read(path).map_err(|source| ConfigError::ReadUpstreamCa {
                path: path.clone(),
                source,
            })?;
        }

        Ok(Config {
            insecure_listen,
            secure_listen,
            listener_tls,
            api: ApiSettings {
                server,
                ca_file,
                token_file,
                namespace,
                service_account,
            },
            audience_parameter,
            policy,
            token_expiration_seconds,
            ca_file_destination: args
                .ca_file_destination
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE_DESTINATION)),
            upstream_tls: UpstreamTls {
                extra_ca_files: args.upstream_ca_file,
                insecure_skip_verify: args.insecure_skip_tls_verify,
            },
            timeouts: Timeouts::default(),
        })
    }
}

/// The API server URL a pod reaches from its `KUBERNETES_SERVICE_HOST` and
/// `KUBERNETES_SERVICE_PORT`: `https://10.0.0.1:443`, or `https://[fd00::1]:443` for an IPv6
/// host (bracketed unless it already is). Not validated; see [`parse_api_server_url`].
pub fn in_cluster_url(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// Checks an API server base URL and returns it without trailing slashes.
///
/// Accepts `http` or `https` (any case, returned lowercase), a host name, IPv4 address or
/// bracketed IPv6 address, an optional port from 1 to 65535, and an optional path prefix (as
/// `kubectl proxy` paths need). Refuses user info, a query, a fragment, whitespace and
/// control characters, with the reason as the error.
pub fn parse_api_server_url(url: &str) -> Result<String, &'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the url contains whitespace or control characters");
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("the url has no scheme: expected http:// or https://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https");
    }
    if rest.contains('?') {
        return Err("the url must not have a query");
    }
    if rest.contains('#') {
        return Err("the url must not have a fragment");
    }
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains('@') {
        return Err("the url must not contain user info; the token file provides credentials");
    }

    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("unclosed '[' in the host")?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("unexpected text after ']'")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the url has no host");
    }
    let host_ok = authority.starts_with('[')
        || host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !host_ok {
        return Err("the host has characters a host name cannot have (an IPv6 address needs [ ])");
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err("the port is not a number from 1 to 65535");
        }
    }

    let path = path.trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{path}"))
}

/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` or `:PORT` (all IPv4 interfaces, which is what
/// the Go tool's `:PORT` meant on most clusters).
///
/// Limitation: host names other than `localhost` are refused rather than resolved, and `:PORT`
/// binds IPv4 only; write `[::]:PORT` for IPv6.
fn parse_listen_address(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidFlag {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let with_host = if let Some(port) = value.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if let Some(port) = value.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        value.to_string()
    };
    with_host
        .parse()
        .map_err(|_| invalid("expected IP:PORT, [IPv6]:PORT or :PORT"))
}

fn listener_tls(args: &Args) -> Result<ListenerTls, ConfigError> {
    let cert_and_key = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::IncompleteTlsPair {
                given: "--tls-cert-file",
                missing: "--tls-private-key-file",
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::IncompleteTlsPair {
                given: "--tls-private-key-file",
                missing: "--tls-cert-file",
            })
        }
        (Some(cert), Some(key)) => {
            for (flag, path) in [("--tls-cert-file", cert), ("--tls-private-key-file", key)] {
                fs::read(path).map_err(|source| ConfigError::ReadTlsFile {
                    flag,
                    path: path.clone(),
                    source,
                })?;
            }
            Some((cert.clone(), key.clone()))
        }
    };

    let tls13_only = match args.tls_min_version.as_deref() {
        None | Some("VersionTLS12") => false,
        Some("VersionTLS13") => true,
        Some(other) => {
            let reason = if matches!(other, "VersionTLS10" | "VersionTLS11") {
                format!("TLS 1.0 and 1.1 are not supported; supported: {TLS_VERSIONS}")
            } else {
                format!("unknown TLS version; supported: {TLS_VERSIONS}")
            };
            return Err(ConfigError::InvalidFlag {
                flag: "--tls-min-version",
                value: other.to_string(),
                reason,
            });
        }
    };

    let cipher_suites = args
        .tls_cipher_suites
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();

    Ok(ListenerTls {
        cert_and_key,
        tls13_only,
        cipher_suites,
    })
}

/// `--namespace` if given, else the trimmed content of the namespace file.
fn namespace(flag: Option<String>, file: Option<PathBuf>) -> Result<String, ConfigError> {
    if let Some(namespace) = flag {
        check_kube_name(&namespace, 63, false).map_err(|reason| ConfigError::InvalidFlag {
            flag: "--namespace",
            value: namespace.clone(),
            reason: reason.to_string(),
        })?;
        return Ok(namespace);
    }

    let path = file.unwrap_or_else(|| PathBuf::from(DEFAULT_NAMESPACE_FILE));
    let content = fs::read_to_string(&path).map_err(|source| ConfigError::ReadNamespaceFile {
        path: path.clone(),
        source,
    })?;
    let namespace = content.trim();
    if namespace.is_empty() {
        return Err(ConfigError::EmptyNamespace { path });
    }
    check_kube_name(namespace, 63, false).map_err(|reason| ConfigError::InvalidNamespaceFile {
        path: path.clone(),
        namespace: namespace.to_string(),
        reason,
    })?;
    Ok(namespace.to_string())
}

/// `--apiserver` if given, else the in-cluster URL; checked either way.
fn api_server(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    if let Some(url) = flag {
        return parse_api_server_url(&url)
            .map_err(|reason| ConfigError::ParseApiServerUrl { url, reason });
    }
    let non_empty = |name| env(name).filter(|v: &String| !v.is_empty());
    let (Some(host), Some(port)) = (non_empty(ENV_SERVICE_HOST), non_empty(ENV_SERVICE_PORT))
    else {
        return Err(ConfigError::MissingApiServer);
    };
    let url = in_cluster_url(&host, &port);
    parse_api_server_url(&url).map_err(|reason| ConfigError::ParseInClusterUrl { url, reason })
}

/// The token file must be readable and non-empty. Its content is dropped at once and never
/// appears in an error.
fn check_token_file(path: &Path) -> Result<(), ConfigError> {
    let content = fs::read(path).map_err(|source| ConfigError::ReadApiServerToken {
        path: path.to_path_buf(),
        source,
    })?;
    if content.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::EmptyApiServerToken {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The parameter is matched and removed by name in the raw query, so it must not contain
/// characters that delimit or encode query parts.
fn check_audience_parameter(name: &str) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name
        .chars()
        .any(|c| matches!(c, '&' | '=' | '#' | '?' | '%') || c.is_whitespace() || c.is_control())
    {
        "must not contain '&', '=', '#', '?', '%' or whitespace"
    } else {
        return Ok(());
    };
    Err(ConfigError::InvalidFlag {
        flag: "--audience-parameter",
        value: name.to_string(),
        reason: reason.to_string(),
    })
}

fn token_expiration(seconds: u64) -> Result<u32, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidFlag {
        flag: "--token-expiration-seconds",
        value: seconds.to_string(),
        reason,
    };
    if seconds < MIN_TOKEN_EXPIRATION_SECONDS {
        return Err(invalid(format!(
            "must be at least {MIN_TOKEN_EXPIRATION_SECONDS} (the API server refuses shorter tokens)"
        )));
    }
    u32::try_from(seconds).map_err(|_| invalid(format!("must be at most {}", u32::MAX)))
}

/// Kubernetes object names as the API accepts them in a URL path: DNS labels (namespaces,
/// `dots == false`) or DNS subdomains (ServiceAccounts). Checking them here also keeps `/`,
/// `?` and `%` out of the TokenRequest path.
fn check_kube_name(name: &str, max_len: usize, dots: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > max_len {
        return Err(if dots {
            "must be at most 253 characters"
        } else {
            "must be at most 63 characters"
        });
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name.chars().all(allowed) || !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err(if dots {
            "must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        } else {
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        });
    }
    Ok(())
}

/// A value as it appears in an error: bare when it is a plain word, quoted otherwise, so an
/// empty value or one with spaces is still visible.
fn shown(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"');
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

fn shown_path(path: &Path) -> String {
    shown(&path.to_string_lossy())
}
