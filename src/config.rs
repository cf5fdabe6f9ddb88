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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Args;
use crate::exec::ExecConfig;
use crate::kubeconfig::{self, KubeconfigError, ResolvedContext};
use crate::policy::{AudiencePolicy, PolicyError};
use crate::proxy::auth::ProxyCredentials;
use crate::token::Token;

/// Environment variable naming the ServiceAccount when `--service-account` is not given.
pub const ENV_SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// Environment variable Kubernetes sets in every pod: the API server's service address.
pub const ENV_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
/// Environment variable Kubernetes sets in every pod: the API server's service port.
pub const ENV_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";
/// Downward-API variable with the pod's name, for binding tokens to the pod.
pub const ENV_POD_NAME: &str = "POD_NAME";
/// Downward-API variable with the pod's uid, for binding tokens to the pod.
pub const ENV_POD_UID: &str = "POD_UID";
/// Environment variable listing kubeconfig files; the first one is used.
pub const ENV_KUBECONFIG: &str = "KUBECONFIG";
/// Kubeconfig used last, relative to `$HOME`, as kubectl does.
pub const HOME_KUBECONFIG: &str = ".kube/config";
/// Namespace used with a kubeconfig whose context names none, as kubectl does.
pub const KUBECONFIG_DEFAULT_NAMESPACE: &str = "default";

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
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
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
    pub serving: ServingSettings,
}

/// How the proxy runs as a sidecar: who may use it, how much it takes on, how it reports
/// and how it stops.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    /// `--metrics-listen-address`: `/healthz`, `/readyz`, `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--shutdown-grace-period`: how long in-flight requests may finish after a signal.
    pub shutdown_grace_period: Duration,
    /// `--bound-pod-name` and `--bound-pod-uid`: tokens die with this pod.
    pub bound_pod: Option<BoundPod>,
    /// `--proxy-credentials-file`, parsed.
    pub proxy_credentials: Option<ProxyCredentials>,
    /// `--max-connections`: client connections served at once, all listeners together.
    pub max_connections: usize,
}

impl Default for ServingSettings {
    fn default() -> Self {
        ServingSettings {
            metrics_listen: None,
            shutdown_grace_period: Duration::from_secs(10),
            bound_pod: None,
            proxy_credentials: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The pod a token is bound to (`spec.boundObjectRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

/// Client connections served at once by default. Prometheus keeps about one connection per
/// target; a thousand covers large scrape configurations while bounding descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How to reach the API server and who we are there.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL without a trailing slash, e.g. `https://10.0.0.1:443` or `https://[fd00::1]:443`.
    pub server: String,
    /// PEM bundle the API server's certificate must chain to; `None` only for `http://` or
    /// when verification is off.
    pub ca: Option<PemSource>,
    /// Name to verify the API server's certificate against instead of the URL's host
    /// (kubeconfig `tls-server-name`).
    pub tls_server_name: Option<String>,
    /// Do not verify the API server's certificate (kubeconfig `insecure-skip-tls-verify`).
    pub insecure_skip_verify: bool,
    /// TLS client certificate presented to the API server.
    pub client_cert: Option<ClientCertSource>,
    /// Bearer credential sent to the API server.
    pub credential: ApiCredential,
    pub namespace: String,
    pub service_account: String,
}

impl ApiSettings {
    /// Settings for the in-cluster case: a CA file and the mounted, rotated token file.
    pub fn mounted(
        server: impl Into<String>,
        ca_file: Option<PathBuf>,
        token_file: impl Into<PathBuf>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> ApiSettings {
        ApiSettings {
            server: server.into(),
            ca: ca_file.map(PemSource::File),
            tls_server_name: None,
            insecure_skip_verify: false,
            client_cert: None,
            credential: ApiCredential::TokenFile(token_file.into()),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// The API server's CA bundle when it is a file (it is also trusted for upstreams).
    pub fn ca_file(&self) -> Option<&Path> {
        match &self.ca {
            Some(PemSource::File(path)) => Some(path),
            _ => None,
        }
    }
}

/// PEM material: a file read when needed, or bytes taken from a kubeconfig.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    /// `origin` says where the bytes came from, for errors (`kubeconfig …, user "dev",
    /// client-key-data`).
    Inline {
        origin: String,
        pem: Vec<u8>,
    },
}

impl PemSource {
    /// The file's path or the inline data's origin, for messages.
    pub fn describe(&self) -> String {
        match self {
            PemSource::File(path) => path.display().to_string(),
            PemSource::Inline { origin, .. } => origin.clone(),
        }
    }
}

impl fmt::Debug for PemSource {
    // Inline data may be a private key: only its size is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            PemSource::Inline { origin, pem } => f
                .debug_struct("Inline")
                .field("origin", origin)
                .field("bytes", &pem.len())
                .finish(),
        }
    }
}

/// A TLS client certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSource {
    /// The certificate chain, leaf first.
    pub cert: PemSource,
    /// The private key of the leaf.
    pub key: PemSource,
}

/// The bearer credential sent with each TokenRequest.
#[derive(Debug, Clone)]
pub enum ApiCredential {
    /// None: the client certificate authenticates us.
    None,
    /// A token file, re-read as it rotates (the mounted ServiceAccount token, or a
    /// kubeconfig `tokenFile`).
    TokenFile(PathBuf),
    /// A fixed token from a kubeconfig; `origin` names where, for messages.
    Token { origin: String, token: Token },
    /// An exec credential plugin, run when no unexpired credential is cached.
    Exec(ExecConfig),
}

impl ApiCredential {
    /// The token file, for [`ApiCredential::TokenFile`].
    pub fn token_file(&self) -> Option<&Path> {
        match self {
            ApiCredential::TokenFile(path) => Some(path),
            _ => None,
        }
    }
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
    /// The `--proxy-credentials-file` cannot be read or does not hold `user:password`.
    ReadProxyCredentials { path: PathBuf, reason: String },
    /// The kubeconfig (named by `from`: `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`)
    /// gives no usable context.
    Kubeconfig {
        from: &'static str,
        source: KubeconfigError,
    },
    /// The kubeconfig context's namespace is not a namespace name.
    InvalidKubeconfigNamespace {
        path: PathBuf,
        context: String,
        namespace: String,
        reason: &'static str,
    },
    /// An `https://` server from a kubeconfig without any CA to verify it.
    KubeconfigWithoutCa {
        path: PathBuf,
        context: String,
        server: String,
    },
    /// `--context` is given, but no kubeconfig is in use.
    ContextWithoutKubeconfig,
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
            ConfigError::ReadProxyCredentials { path, reason } => {
                write!(f, "--proxy-credentials-file {}: {reason}", shown_path(path))
            }
            ConfigError::Kubeconfig { from, .. } => {
                write!(f, "cannot use the kubeconfig named by {from}")
            }
            ConfigError::InvalidKubeconfigNamespace {
                path,
                context,
                namespace,
                reason,
            } => write!(
                f,
                "kubeconfig {}, context {context:?}: namespace {namespace:?} {reason}; set \
                 --namespace",
                shown_path(path)
            ),
            ConfigError::KubeconfigWithoutCa {
                path,
                context,
                server,
            } => write!(
                f,
                "kubeconfig {}, context {context:?}: the cluster has no certificate-authority \
                 or certificate-authority-data to verify {server}; add one or pass \
                 --apiserver-ca-file",
                shown_path(path)
            ),
            ConfigError::ContextWithoutKubeconfig => write!(
                f,
                "--context is set but no kubeconfig is in use: pass --kubeconfig"
            ),
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
            ConfigError::Kubeconfig { source, .. } => Some(source),
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
        let timeouts = timeouts(&args)?;
        let serving = serving_settings(&args, env)?;

        let service_account = match args.service_account.clone() {
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

        let api = match api_source(&args, env) {
            ApiSource::Kubeconfig { from, path } => {
                kubeconfig_api(&args, from, &path, service_account)?
            }
            ApiSource::Mounted => {
                if args.context.is_some() {
                    return Err(ConfigError::ContextWithoutKubeconfig);
                }
                let namespace = namespace(args.namespace.clone(), args.namespace_file.clone())?;
                let server = api_server(args.apiserver.clone(), env)?;
                let ca_file = if server.starts_with("https://") {
                    let path = args
                        .apiserver_ca_file
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_API_CA_FILE));
                    check_ca_file(&path)?;
                    Some(path)
                } else {
                    None
                };
                let token_file = args
                    .apiserver_token_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_API_TOKEN_FILE));
                check_token_file(&token_file)?;
                ApiSettings::mounted(server, ca_file, token_file, namespace, service_account)
            }
        };

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
            api,
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
            timeouts,
            serving,
        })
    }
}

/// `--metrics-listen-address`, the pod binding, proxy credentials and the connection limit.
fn serving_settings(
    args: &Args,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServingSettings, ConfigError> {
    let defaults = ServingSettings::default();
    let metrics_listen = args
        .metrics_listen_address
        .as_deref()
        .map(|a| parse_listen_address("--metrics-listen-address", a))
        .transpose()?;
    let shutdown_grace_period = duration_flag(
        "--shutdown-grace-period",
        &args.shutdown_grace_period,
        defaults.shutdown_grace_period,
    )?;

    let name = args.bound_pod_name.clone().or_else(|| env(ENV_POD_NAME));
    let uid = args.bound_pod_uid.clone().or_else(|| env(ENV_POD_UID));
    let name = name.filter(|n| !n.is_empty());
    let uid = uid.filter(|u| !u.is_empty());
    let bound_pod = match (name, uid) {
        (Some(name), Some(uid)) => Some(BoundPod { name, uid }),
        // A flag given without its partner is a mistake; a lone variable from the downward
        // API is not (binding then stays off, as with neither).
        (Some(name), None) if args.bound_pod_name.is_some() => {
            return Err(invalid(
                "--bound-pod-name",
                &name,
                "needs --bound-pod-uid (or $POD_UID) too",
            ));
        }
        (None, Some(uid)) if args.bound_pod_uid.is_some() => {
            return Err(invalid(
                "--bound-pod-uid",
                &uid,
                "needs --bound-pod-name (or $POD_NAME) too",
            ));
        }
        _ => None,
    };

    let proxy_credentials = match &args.proxy_credentials_file {
        None => None,
        Some(path) => {
            let failed = |reason: String| ConfigError::ReadProxyCredentials {
                path: path.clone(),
                reason,
            };
            let content = fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
            Some(ProxyCredentials::parse(&content).map_err(|r| failed(r.to_string()))?)
        }
    };

    let max_connections = args.max_connections.unwrap_or(defaults.max_connections);
    if max_connections == 0 {
        return Err(invalid("--max-connections", "0", "must be at least 1"));
    }
    Ok(ServingSettings {
        metrics_listen,
        shutdown_grace_period,
        bound_pod,
        proxy_credentials,
        max_connections,
    })
}

/// The timeout flags, over [`Timeouts::default`].
fn timeouts(args: &Args) -> Result<Timeouts, ConfigError> {
    let d = Timeouts::default();
    Ok(Timeouts {
        client_head: duration_flag(
            "--request-head-timeout",
            &args.request_head_timeout,
            d.client_head,
        )?,
        client_idle: duration_flag(
            "--client-idle-timeout",
            &args.client_idle_timeout,
            d.client_idle,
        )?,
        upstream_connect: duration_flag(
            "--upstream-connect-timeout",
            &args.upstream_connect_timeout,
            d.upstream_connect,
        )?,
        upstream_response: duration_flag(
            "--upstream-response-timeout",
            &args.upstream_response_timeout,
            d.upstream_response,
        )?,
        upstream_idle: duration_flag(
            "--upstream-idle-timeout",
            &args.upstream_idle_timeout,
            d.upstream_idle,
        )?,
        ..d
    })
}

fn invalid(flag: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidFlag {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn duration_flag(
    flag: &'static str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|reason| invalid(flag, text, reason)),
    }
}

/// Parses a Go-style duration: `10s`, `1m30s`, `500ms`, `2h`; a bare number means seconds.
/// Zero is refused: every duration here must allow some time.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    const FORM: &str = "expected a duration such as 500ms, 10s, 1m30s or 2h";
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return match secs {
            0 => Err("must be longer than zero"),
            _ => Ok(Duration::from_secs(secs)),
        };
    }
    if text.is_empty() {
        return Err(FORM);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(FORM)?;
        let number: f64 = rest[..digits].parse().map_err(|_| FORM)?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(FORM),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number * scale);
    }
    if total.is_zero() {
        return Err("must be longer than zero");
    }
    Ok(total)
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

/// Where the API settings come from.
enum ApiSource {
    /// The mounted ServiceAccount files and `KUBERNETES_SERVICE_*` (or the flags naming them).
    Mounted,
    /// A kubeconfig file; `from` says what named it, for errors.
    Kubeconfig { from: &'static str, path: PathBuf },
}

/// Chooses the API settings' source: `--kubeconfig`; else the mounted files when a flag
/// names one of them or we run in a pod with a mounted token; else the first file of
/// `$KUBECONFIG`; else `~/.kube/config` outside a pod, if it exists; else the mounted files
/// (whose absence is then the error). Kubeconfig files found through the environment are
/// only considered when this build can read them.
fn api_source(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> ApiSource {
    if let Some(path) = &args.kubeconfig {
        return ApiSource::Kubeconfig {
            from: "--kubeconfig",
            path: path.clone(),
        };
    }
    if args.apiserver_token_file.is_some() || args.apiserver_ca_file.is_some() {
        return ApiSource::Mounted;
    }
    let in_pod = env(ENV_SERVICE_HOST).is_some_and(|h| !h.is_empty());
    if (in_pod && Path::new(DEFAULT_API_TOKEN_FILE).is_file()) || !cfg!(feature = "kubeconfig") {
        return ApiSource::Mounted;
    }
    if let Some(list) = env(ENV_KUBECONFIG) {
        if let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()) {
            return ApiSource::Kubeconfig {
                from: "$KUBECONFIG",
                path: first,
            };
        }
    }
    if !in_pod {
        if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
            let path = Path::new(&home).join(HOME_KUBECONFIG);
            if path.is_file() {
                return ApiSource::Kubeconfig {
                    from: "~/.kube/config",
                    path,
                };
            }
        }
    }
    ApiSource::Mounted
}

/// API settings from a kubeconfig context, with `--apiserver`, `--apiserver-ca-file`,
/// `--apiserver-token-file`, `--namespace` and `--namespace-file` taking precedence.
fn kubeconfig_api(
    args: &Args,
    from: &'static str,
    path: &Path,
    service_account: String,
) -> Result<ApiSettings, ConfigError> {
    let ResolvedContext {
        context,
        server,
        ca,
        insecure_skip_tls_verify,
        tls_server_name,
        client_cert,
        credential,
        namespace: context_namespace,
    } = kubeconfig::load(path, args.context.as_deref())
        .map_err(|source| ConfigError::Kubeconfig { from, source })?;

    let server = match &args.apiserver {
        Some(url) => {
            parse_api_server_url(url).map_err(|reason| ConfigError::ParseApiServerUrl {
                url: url.clone(),
                reason,
            })?
        }
        None => server,
    };

    let explicit_namespace = args.namespace.is_some() || args.namespace_file.is_some();
    let namespace = if explicit_namespace || Path::new(DEFAULT_NAMESPACE_FILE).is_file() {
        namespace(args.namespace.clone(), args.namespace_file.clone())?
    } else {
        match context_namespace {
            Some(namespace) => {
                check_kube_name(&namespace, 63, false).map_err(|reason| {
                    ConfigError::InvalidKubeconfigNamespace {
                        path: path.to_path_buf(),
                        context: context.clone(),
                        namespace: namespace.clone(),
                        reason,
                    }
                })?;
                namespace
            }
            None => KUBECONFIG_DEFAULT_NAMESPACE.to_string(),
        }
    };

    let ca = match &args.apiserver_ca_file {
        Some(file) => {
            check_ca_file(file)?;
            Some(PemSource::File(file.clone()))
        }
        None => ca,
    };
    let https = server.starts_with("https://");
    if https && ca.is_none() && !insecure_skip_tls_verify {
        return Err(ConfigError::KubeconfigWithoutCa {
            path: path.to_path_buf(),
            context,
            server,
        });
    }
    let credential = match &args.apiserver_token_file {
        Some(file) => {
            check_token_file(file)?;
            ApiCredential::TokenFile(file.clone())
        }
        None => credential,
    };

    Ok(ApiSettings {
        server,
        ca: if https && !insecure_skip_tls_verify {
            ca
        } else {
            None
        },
        tls_server_name,
        insecure_skip_verify: insecure_skip_tls_verify,
        client_cert,
        credential,
        namespace,
        service_account,
    })
}

fn check_ca_file(path: &Path) -> Result<(), ConfigError> {
    fs::read(path)
        .map(drop)
        .map_err(|source| ConfigError::ReadApiServerCa {
            path: path.to_path_buf(),
            source,
        })
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
            "must be at least {MIN_TOKEN_EXPIRATION_SECONDS} \
             (the API server refuses shorter tokens)"
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
            "must be lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::cli::parse_args;

    /// A scratch directory with the mounted ServiceAccount files, removed on drop.
    struct Mount {
        dir: PathBuf,
    }

    impl Mount {
        fn new() -> Mount {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kap-config-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            let mount = Mount { dir };
            mount.write("namespace", " team-a\n");
            mount.write("ca.crt", "not parsed here");
            mount.write("token", "fake-api-token");
            mount
        }

        fn path(&self, name: &str) -> String {
            self.dir.join(name).to_string_lossy().into_owned()
        }

        fn write(&self, name: &str, content: &str) {
            fs::write(self.dir.join(name), content).unwrap();
        }

        /// Flags pointing at this mount, then `extra`.
        fn flags(&self, extra: &[&str]) -> Vec<String> {
            let mut flags = vec![
                format!("--namespace-file={}", self.path("namespace")),
                format!("--apiserver-ca-file={}", self.path("ca.crt")),
                format!("--apiserver-token-file={}", self.path("token")),
            ];
            flags.extend(extra.iter().map(|s| s.to_string()));
            flags
        }

        fn config(&self, extra: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
            let args = parse_args(&self.flags(extra)).expect("flags parse").args;
            let env: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::from_args(args, &|name| env.get(name).cloned())
        }
    }

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    const POD_ENV: &[(&str, &str)] = &[
        ("SERVICE_ACCOUNT", "prometheus"),
        ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];

    #[test]
    fn in_cluster_url_brackets_ipv6_hosts() {
        assert_eq!(in_cluster_url("10.0.0.1", "443"), "https://10.0.0.1:443");
        assert_eq!(in_cluster_url("fd00::1", "443"), "https://[fd00::1]:443");
        assert_eq!(
            in_cluster_url("[fd00::1]", "6443"),
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            in_cluster_url("kubernetes.default.svc", "443"),
            "https://kubernetes.default.svc:443"
        );
        assert_eq!(
            parse_api_server_url(&in_cluster_url("2001:db8::a", "443")),
            Ok("https://[2001:db8::a]:443".to_string())
        );
    }

    #[test]
    fn api_server_urls_that_are_accepted() {
        for (given, expected) in [
            ("https://10.0.0.1:443", "https://10.0.0.1:443"),
            ("https://10.0.0.1:443/", "https://10.0.0.1:443"),
            ("HTTPS://Kube.Example:6443", "https://Kube.Example:6443"),
            (
                "http://127.0.0.1:8001/api/v1/proxy/",
                "http://127.0.0.1:8001/api/v1/proxy",
            ),
            ("https://[fd00::1]", "https://[fd00::1]"),
            ("https://[fd00::1]:443//", "https://[fd00::1]:443"),
            ("https://kubernetes", "https://kubernetes"),
        ] {
            assert_eq!(
                parse_api_server_url(given).as_deref(),
                Ok(expected),
                "{given}"
            );
        }
    }

    #[test]
    fn api_server_urls_that_are_refused() {
        for (given, reason) in [
            (
                "10.0.0.1:443",
                "the url has no scheme: expected http:// or https://",
            ),
            ("ftp://host", "the scheme must be http or https"),
            ("https://host/?a=b", "the url must not have a query"),
            ("https://host/#x", "the url must not have a fragment"),
            (
                "https://user:pw@host",
                "the url must not contain user info; the token file provides credentials",
            ),
            ("https://", "the url has no host"),
            ("https://:443", "the url has no host"),
            ("https://host:", "the port is not a number from 1 to 65535"),
            ("https://host:0", "the port is not a number from 1 to 65535"),
            (
                "https://host:65536",
                "the port is not a number from 1 to 65535",
            ),
            (
                "https://host:+1",
                "the port is not a number from 1 to 65535",
            ),
            (
                "https://fd00::1:443",
                "the port is not a number from 1 to 65535",
            ),
            ("https://[fd00::1", "unclosed '[' in the host"),
            (
                "https://[nothost]:1",
                "the bracketed host is not an IPv6 address",
            ),
            ("https://[::1]x", "unexpected text after ']'"),
            (
                "https://ho st",
                "the url contains whitespace or control characters",
            ),
            (
                "https://ho$t",
                "the host has characters a host name cannot have (an IPv6 address needs [ ])",
            ),
        ] {
            assert_eq!(parse_api_server_url(given), Err(reason), "{given}");
        }
    }

    #[test]
    fn pod_defaults() {
        let mount = Mount::new();
        let config = mount.config(&[], POD_ENV).unwrap();
        assert_eq!(config.insecure_listen, Some(DEFAULT_INSECURE_LISTEN));
        assert_eq!(config.secure_listen, None);
        assert_eq!(config.api.server, "https://10.0.0.1:443");
        assert_eq!(config.api.service_account, "prometheus");
        assert_eq!(config.api.namespace, "team-a");
        assert_eq!(config.api.ca_file(), Some(Path::new(&mount.path("ca.crt"))));
        assert_eq!(
            config.api.credential.token_file(),
            Some(Path::new(&mount.path("token")))
        );
        assert_eq!(config.audience_parameter, "kubernetes-audience");
        assert_eq!(config.policy, AudiencePolicy::Any);
        assert_eq!(config.token_expiration_seconds, 3600);
        assert_eq!(config.ca_file_destination, PathBuf::from("ca.crt"));
        assert!(config.listener_tls.cert_and_key.is_none());
        assert!(!config.listener_tls.tls13_only);
        assert!(config.listener_tls.cipher_suites.is_empty());
        assert!(config.upstream_tls.extra_ca_files.is_empty());
        assert!(!config.upstream_tls.insecure_skip_verify);
    }

    #[test]
    fn every_flag_lands_in_its_field() {
        let mount = Mount::new();
        mount.write("cert.pem", "c");
        mount.write("key.pem", "k");
        mount.write("up1.pem", "u");
        let (cert, key, up) = (
            mount.path("cert.pem"),
            mount.path("key.pem"),
            mount.path("up1.pem"),
        );
        let config = mount
            .config(
                &[
                    "--secure-listen-address=[::1]:8443",
                    "--service-account=other",
                    "--namespace=ns-b",
                    "--apiserver=https://[fd00::1]:6443/",
                    &format!("--tls-cert-file={cert}"),
                    &format!("--tls-private-key-file={key}"),
                    "--tls-min-version=VersionTLS13",
                    "--tls-cipher-suites=A, B,,",
                    "--tls-cipher-suites=C",
                    "--audience-parameter=aud",
                    "--allowed-audiences=a=*.svc",
                    "--token-expiration-seconds=600",
                    "--ca-file-destination=/tmp/out.crt",
                    &format!("--upstream-ca-file={up}"),
                    "--insecure-skip-tls-verify=true",
                ],
                POD_ENV,
            )
            .unwrap();
        assert_eq!(
            config.insecure_listen, None,
            "only the secure listener was asked for"
        );
        assert_eq!(config.secure_listen, Some("[::1]:8443".parse().unwrap()));
        assert_eq!(config.api.server, "https://[fd00::1]:6443");
        assert_eq!(config.api.service_account, "other");
        assert_eq!(config.api.namespace, "ns-b");
        assert_eq!(
            config.listener_tls.cert_and_key,
            Some((PathBuf::from(cert), PathBuf::from(key)))
        );
        assert!(config.listener_tls.tls13_only);
        assert_eq!(config.listener_tls.cipher_suites, ["A", "B", "C"]);
        assert_eq!(config.audience_parameter, "aud");
        assert!(config.policy.is_restricted());
        assert_eq!(config.token_expiration_seconds, 600);
        assert_eq!(config.ca_file_destination, PathBuf::from("/tmp/out.crt"));
        assert_eq!(config.upstream_tls.extra_ca_files, [PathBuf::from(up)]);
        assert!(config.upstream_tls.insecure_skip_verify);
    }

    #[test]
    fn listen_address_forms() {
        let mount = Mount::new();
        for (given, expected) in [
            (":9000", "0.0.0.0:9000"),
            ("localhost:9000", "127.0.0.1:9000"),
            ("10.1.2.3:80", "10.1.2.3:80"),
            ("[::]:80", "[::]:80"),
        ] {
            let flag = format!("--insecure-listen-address={given}");
            let config = mount.config(&[&flag], POD_ENV).unwrap();
            assert_eq!(
                config.insecure_listen,
                Some(expected.parse().unwrap()),
                "{given}"
            );
        }
        let err = mount
            .config(&["--insecure-listen-address=example.com:80"], POD_ENV)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--insecure-listen-address example.com:80: expected IP:PORT, [IPv6]:PORT or :PORT"
        );
    }

    #[test]
    fn http_api_server_needs_no_ca_file() {
        let mount = Mount::new();
        let config = mount
            .config(
                &[
                    "--apiserver=http://127.0.0.1:8001",
                    "--apiserver-ca-file=/no/such/ca",
                ],
                POD_ENV,
            )
            .unwrap();
        assert_eq!(config.api.ca_file(), None);
    }

    #[test]
    fn namespace_flag_overrides_the_file() {
        let mount = Mount::new();
        let config = mount
            .config(
                &["--namespace-file=/no/such/file", "--namespace=ns"],
                POD_ENV,
            )
            .unwrap();
        assert_eq!(config.api.namespace, "ns");
    }

    fn error(mount: &Mount, extra: &[&str], env: &[(&str, &str)]) -> String {
        mount.config(extra, env).unwrap_err().to_string()
    }

    #[test]
    fn missing_service_account() {
        let mount = Mount::new();
        let env = &POD_ENV[1..];
        let expected = "no service account: set --service-account or the SERVICE_ACCOUNT \
                        environment variable";
        assert_eq!(error(&mount, &[], env), expected);
        assert_eq!(error(&mount, &["--service-account="], env), expected);
        assert_eq!(
            error(&mount, &["--service-account=a/b"], env),
            "--service-account a/b: must be lowercase letters, digits, '-' and '.', starting \
             and ending with a letter or digit"
        );
    }

    #[test]
    fn namespace_file_problems() {
        let mount = Mount::new();
        let missing = mount.path("missing");
        let err = mount
            .config(&[&format!("--namespace-file={missing}")], POD_ENV)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read --namespace-file {missing}")
        );
        assert!(err.source().is_some());

        mount.write("namespace", " \n");
        assert_eq!(
            error(&mount, &[], POD_ENV),
            format!(
                "--namespace-file {} is empty: it must hold the namespace, or set --namespace",
                mount.path("namespace")
            )
        );
        mount.write("namespace", "Team_A");
        assert_eq!(
            error(&mount, &[], POD_ENV),
            format!(
                "--namespace-file {} holds \"Team_A\": must be lowercase letters, digits and '-', \
                 starting and ending with a letter or digit",
                mount.path("namespace")
            )
        );
        assert!(error(&mount, &["--namespace=a.b"], POD_ENV).starts_with("--namespace a.b: "));
    }

    #[test]
    fn api_server_problems() {
        let mount = Mount::new();
        let no_host = [POD_ENV[0], POD_ENV[2]];
        assert_eq!(
            error(&mount, &[], &no_host),
            "no api server: set --apiserver, or the KUBERNETES_SERVICE_HOST and \
             KUBERNETES_SERVICE_PORT environment variables"
        );
        assert_eq!(
            error(&mount, &["--apiserver=ftp://x"], POD_ENV),
            "--apiserver ftp://x: the scheme must be http or https"
        );
        let bad_port = [POD_ENV[0], POD_ENV[1], ("KUBERNETES_SERVICE_PORT", "https")];
        assert_eq!(
            error(&mount, &[], &bad_port),
            "api server url https://10.0.0.1:https built from KUBERNETES_SERVICE_HOST and \
             KUBERNETES_SERVICE_PORT: the port is not a number from 1 to 65535"
        );
        let ipv6 = [
            POD_ENV[0],
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            POD_ENV[2],
        ];
        assert_eq!(
            mount.config(&[], &ipv6).unwrap().api.server,
            "https://[fd00::1]:443"
        );
    }

    #[test]
    fn unreadable_files_name_flag_and_path() {
        let mount = Mount::new();
        let missing = mount.path("missing");
        for (flag, message) in [
            ("--apiserver-ca-file", "cannot read --apiserver-ca-file"),
            (
                "--apiserver-token-file",
                "cannot read --apiserver-token-file",
            ),
            ("--upstream-ca-file", "cannot read --upstream-ca-file"),
        ] {
            let err = mount
                .config(&[&format!("{flag}={missing}")], POD_ENV)
                .unwrap_err();
            assert_eq!(err.to_string(), format!("{message} {missing}"));
            let cause = err.source().expect("io cause").to_string();
            assert!(cause.contains("No such file"), "{cause}");
        }
        // A directory opens but does not read.
        let dir = mount.dir.to_string_lossy().into_owned();
        let err = error(&mount, &[&format!("--apiserver-token-file={dir}")], POD_ENV);
        assert_eq!(err, format!("cannot read --apiserver-token-file {dir}"));
    }

    #[test]
    fn empty_token_file_is_refused_without_showing_content() {
        let mount = Mount::new();
        mount.write("token", "\n");
        assert_eq!(
            error(&mount, &[], POD_ENV),
            format!("--apiserver-token-file {} is empty", mount.path("token"))
        );
    }

    #[test]
    fn token_expiration_bounds() {
        let mount = Mount::new();
        assert_eq!(
            error(&mount, &["--token-expiration-seconds=300"], POD_ENV),
            "--token-expiration-seconds 300: must be at least 600 (the API server refuses \
             shorter tokens)"
        );
        assert_eq!(
            error(&mount, &["--token-expiration-seconds=4294967296"], POD_ENV),
            "--token-expiration-seconds 4294967296: must be at most 4294967295"
        );
        let max = mount
            .config(&["--token-expiration-seconds=4294967295"], POD_ENV)
            .unwrap();
        assert_eq!(max.token_expiration_seconds, u32::MAX);
    }

    #[test]
    fn tls_flag_problems() {
        let mount = Mount::new();
        assert_eq!(
            error(&mount, &["--tls-min-version=VersionTLS10"], POD_ENV),
            "--tls-min-version VersionTLS10: TLS 1.0 and 1.1 are not supported; supported: \
             VersionTLS12, VersionTLS13"
        );
        assert_eq!(
            error(&mount, &["--tls-min-version=tls1.3"], POD_ENV),
            "--tls-min-version tls1.3: unknown TLS version; supported: VersionTLS12, VersionTLS13"
        );
        assert_eq!(
            error(&mount, &["--tls-cert-file=c"], POD_ENV),
            "--tls-cert-file is set but --tls-private-key-file is not: give both or neither"
        );
        assert_eq!(
            error(&mount, &["--tls-private-key-file=k"], POD_ENV),
            "--tls-private-key-file is set but --tls-cert-file is not: give both or neither"
        );
        mount.write("cert.pem", "c");
        let cert = format!("--tls-cert-file={}", mount.path("cert.pem"));
        let key = format!("--tls-private-key-file={}", mount.path("nokey.pem"));
        assert_eq!(
            error(&mount, &[&cert, &key], POD_ENV),
            format!(
                "cannot read --tls-private-key-file {}",
                mount.path("nokey.pem")
            )
        );
    }

    #[test]
    fn audience_flag_problems() {
        let mount = Mount::new();
        assert_eq!(
            error(&mount, &["--audience-parameter="], POD_ENV),
            "--audience-parameter \"\": must not be empty"
        );
        for bad in ["a&b", "a=b", "a#b", "a b", "a?b", "a%20"] {
            let flag = format!("--audience-parameter={bad}");
            let message = error(&mount, &[&flag], POD_ENV);
            assert!(
                message.ends_with(": must not contain '&', '=', '#', '?', '%' or whitespace"),
                "{message}"
            );
        }
        let err = mount
            .config(&["--allowed-audiences=,"], POD_ENV)
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid --allowed-audiences");
        assert_eq!(
            err.source().unwrap().to_string(),
            "invalid entry \",\": the list names no audience"
        );
    }

    #[test]
    #[cfg(not(feature = "kubeconfig"))]
    fn kubeconfig_needs_the_feature() {
        let mount = Mount::new();
        let err = mount
            .config(&["--kubeconfig=/home/dev/.kube/config"], POD_ENV)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot use the kubeconfig named by --kubeconfig"
        );
        assert_eq!(
            err.source().unwrap().to_string(),
            "kubeconfig /home/dev/.kube/config: this build cannot read kubeconfig files (it \
             was built without the kubeconfig feature)"
        );
    }

    #[test]
    fn mounted_files_win_over_kubeconfig_from_the_environment() {
        let mount = Mount::new();
        let env = [
            POD_ENV[0],
            POD_ENV[1],
            POD_ENV[2],
            ("KUBECONFIG", "/no/such/kubeconfig"),
        ];
        // The mount's flags name the token and CA files, so the environment is not consulted.
        let config = mount.config(&[], &env).unwrap();
        assert_eq!(
            config.api.credential.token_file(),
            Some(Path::new(&mount.path("token")))
        );
    }

    #[test]
    fn values_in_messages_are_quoted_only_when_needed() {
        assert_eq!(shown("plain"), "plain");
        assert_eq!(shown(""), "\"\"");
        assert_eq!(shown("a b"), "\"a b\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
    }
}
