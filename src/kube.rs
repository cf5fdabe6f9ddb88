//! The TokenRequest client: one blocking `POST …/serviceaccounts/<name>/token` per call.
//!
//! It owns the HTTP exchange with the API server (TLS trust, the mounted bearer token, the
//! request and response objects, and turning failures into [`KubeError`]). It does not cache
//! tokens or decide when to refresh them; that is [`crate::token::TokenCache`]'s job.
//!
//! See <https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/>.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::config::{ApiCredential, ApiSettings, PemSource};
use crate::exec::ExecError;
use crate::timefmt::parse_rfc3339;
use crate::token::{IssuedToken, Token, TokenSource};

/// How long a copy of the mounted API token is used before the file is read again. The
/// kubelet rotates the projected token well before it expires, so a minute is plenty.
pub const DEFAULT_TOKEN_FILE_REREAD: Duration = Duration::from_secs(60);

/// At most this many characters of an API `Status` message are kept in an error.
const MAX_STATUS_MESSAGE_CHARS: usize = 200;

/// Response bodies larger than this (bytes) are refused; a TokenRequest is about 2 KiB.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// A failed TokenRequest, or a failure to set the client up.
///
/// Cheap to clone (wrapped sources sit behind `Arc`), so one failure can be handed to every
/// caller that waited for the same request. Never contains a token or a response body.
#[derive(Debug, Clone)]
pub enum KubeError {
    /// The API server URL is neither `http://` nor `https://`.
    ParseApiServerUrl { server: String },
    /// An `https://` server was given without a CA file to verify it.
    MissingCaFile { server: String },
    /// The CA file could not be read or is not PEM.
    ReadCaFile {
        path: PathBuf,
        source: Arc<rustls_pki_types::pem::Error>,
    },
    /// The CA file holds no certificate.
    NoCertificatesInCaFile { path: PathBuf },
    /// Inline CA data (from a kubeconfig) is not PEM or holds no certificate.
    ParseCaData { origin: String },
    /// A client certificate or key (`what`) cannot be loaded from `origin` (a path, or
    /// where inline data came from).
    ClientCert {
        origin: String,
        what: &'static str,
        reason: &'static str,
        source: Option<Arc<io::Error>>,
    },
    /// The exec credential plugin gave no credential.
    ExecPlugin { audience: String, source: ExecError },
    /// The mounted API token file could not be read.
    ReadTokenFile {
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// The mounted API token file is empty (after trimming whitespace).
    EmptyTokenFile { path: PathBuf },
    /// No TCP connection to the API server (refused, unreachable, name not found).
    Connect {
        audience: String,
        url: String,
        source: Arc<ureq::Error>,
    },
    /// The TLS handshake with the API server failed, e.g. its certificate is not signed by
    /// the CA file.
    Tls {
        audience: String,
        url: String,
        source: Arc<ureq::Error>,
    },
    /// The API server did not answer within the connect or call timeout.
    Timeout {
        audience: String,
        url: String,
        source: Arc<ureq::Error>,
    },
    /// Any other transport failure while sending the request or reading the response.
    Transport {
        audience: String,
        url: String,
        source: Arc<ureq::Error>,
    },
    /// The API server answered with a non-2xx status. `reason` and `message` come from the
    /// API's `Status` object when the body is one; otherwise `reason` is the HTTP reason
    /// phrase and `message` is `None`.
    Status {
        audience: String,
        http_status: u16,
        reason: String,
        message: Option<String>,
    },
    /// A 2xx response that is not a usable TokenRequest (`what` says which part is wrong).
    ParseTokenResponse {
        audience: String,
        http_status: u16,
        what: &'static str,
    },
    /// The issued token's `expirationTimestamp` is not in the future by our clock.
    ExpiredOnArrival { audience: String },
}

impl KubeError {
    /// The audience of the failed request, when the failure belongs to one.
    pub fn audience(&self) -> Option<&str> {
        match self {
            KubeError::Connect { audience, .. }
            | KubeError::Tls { audience, .. }
            | KubeError::Timeout { audience, .. }
            | KubeError::Transport { audience, .. }
            | KubeError::Status { audience, .. }
            | KubeError::ParseTokenResponse { audience, .. }
            | KubeError::ExpiredOnArrival { audience }
            | KubeError::ExecPlugin { audience, .. } => Some(audience),
            _ => None,
        }
    }

    /// True when trying again later may succeed without anyone changing the configuration:
    /// transport failures, timeouts, 429 and 5xx. False for TLS failures, 4xx and files.
    pub fn is_retryable(&self) -> bool {
        match self {
            KubeError::Connect { .. } | KubeError::Timeout { .. } | KubeError::Transport { .. } => {
                true
            }
            KubeError::Status { http_status, .. } => *http_status == 429 || *http_status >= 500,
            _ => false,
        }
    }

    /// A few words for a client-facing message: `403 Forbidden`, `connection failed`, ….
    pub fn short_reason(&self) -> String {
        match self {
            KubeError::Status {
                http_status,
                reason,
                ..
            } => format!("{http_status} {reason}").trim_end().to_string(),
            KubeError::Connect { .. } => "api server unreachable".into(),
            KubeError::Tls { .. } => "tls failure".into(),
            KubeError::Timeout { .. } => "api server timeout".into(),
            KubeError::Transport { .. } => "transport failure".into(),
            KubeError::ParseTokenResponse { .. } => "malformed response".into(),
            KubeError::ExpiredOnArrival { .. } => "token expired on arrival".into(),
            KubeError::ExecPlugin { .. } => "api credential plugin failed".into(),
            _ => "client setup failure".into(),
        }
    }
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeError::ParseApiServerUrl { server } => {
                write!(f, "api server url {server:?} is not http:// or https://")
            }
            KubeError::MissingCaFile { server } => {
                write!(f, "no ca file given to verify {server}")
            }
            KubeError::ReadCaFile { path, .. } => {
                write!(f, "cannot read ca file {}", path.display())
            }
            KubeError::NoCertificatesInCaFile { path } => {
                write!(f, "ca file {} holds no certificate", path.display())
            }
            KubeError::ParseCaData { origin } => {
                write!(f, "{origin} holds no PEM certificate")
            }
            KubeError::ClientCert {
                origin,
                what,
                reason,
                ..
            } => write!(f, "{what} {origin} {reason}"),
            KubeError::ExecPlugin { audience, .. } => write!(
                f,
                "token request for audience {audience:?} failed: no api credential"
            ),
            KubeError::ReadTokenFile { path, .. } => {
                write!(f, "cannot read api token file {}", path.display())
            }
            KubeError::EmptyTokenFile { path } => {
                write!(f, "api token file {} is empty", path.display())
            }
            KubeError::Connect { audience, url, .. } => {
                write!(f, "token request for audience {audience:?} failed: cannot connect to {url}")
            }
            KubeError::Tls { audience, url, .. } => {
                write!(f, "token request for audience {audience:?} failed: tls with {url}")
            }
            KubeError::Timeout { audience, url, .. } => {
                write!(f, "token request for audience {audience:?} failed: timeout from {url}")
            }
            KubeError::Transport { audience, url, .. } => {
                write!(f, "token request for audience {audience:?} failed: exchange with {url}")
            }
            KubeError::Status {
                audience,
                http_status,
                reason,
                message,
            } => {
                write!(f, "token request for audience {audience:?} failed: {http_status}")?;
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            KubeError::ParseTokenResponse {
                audience,
                http_status,
                what,
            } => write!(
                f,
                "token request for audience {audience:?} failed: {http_status} response {what}"
            ),
            KubeError::ExpiredOnArrival { audience } => write!(
                f,
                "token request for audience {audience:?} failed: issued token is already expired (clock skew?)"
            ),
        }
    }
}

impl std::error::Error for KubeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KubeError::ReadCaFile { source, .. } => Some(source.as_ref()),
            KubeError::ReadTokenFile { source, .. } => Some(source.as_ref()),
            KubeError::ClientCert {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            KubeError::ExecPlugin { source, .. } => Some(source),
            KubeError::Connect { source, .. }
            | KubeError::Tls { source, .. }
            | KubeError::Timeout { source, .. }
            | KubeError::Transport { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Mints bound ServiceAccount tokens with the TokenRequest API, authenticating with the
/// configured API credential (the mounted token, a kubeconfig token, token file, client
/// certificate or exec plugin). Blocking; one instance is shared by all callers.
pub struct TokenClient {
    /// Agent with the configured client certificate, if any.
    agent: ureq::Agent,
    agents: AgentFactory,
    url: String,
    credential: ApiCredential,
    expiration_seconds: u32,
    bound_pod: Option<BoundObjectRef>,
    token_file_reread: Duration,
    cached: Mutex<Option<CachedCredential>>,
}

/// Everything needed to build an agent, so that one can be built again for a client
/// certificate an exec plugin returns.
struct AgentFactory {
    tls: Option<TlsBase>,
    connect_timeout: Duration,
    call_timeout: Duration,
    connect_to: Option<ConnectTo>,
}

/// Connects requests for the TLS server name to the API server's real address.
#[derive(Debug, Clone)]
struct ConnectTo {
    /// The name in the request URL, lowercase.
    name: String,
    /// The server URL as configured; only its scheme and authority are used.
    real: ureq::http::Uri,
}

impl ureq::unversioned::resolver::Resolver for ConnectTo {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let for_us = uri
            .host()
            .is_some_and(|h| h.eq_ignore_ascii_case(&self.name));
        let target = if for_us { &self.real } else { uri };
        ureq::unversioned::resolver::DefaultResolver::default().resolve(target, config, timeout)
    }
}

/// `server` with its host replaced by `name` (the port kept, or made explicit), and the
/// original as a URI for the resolver.
fn with_server_name(server: &str, name: &str) -> Result<(String, ureq::http::Uri), KubeError> {
    let bad = || KubeError::ParseApiServerUrl {
        server: server.to_string(),
    };
    let real: ureq::http::Uri = server.parse().map_err(|_| bad())?;
    let authority = real.authority().ok_or_else(bad)?;
    let port = authority.port_u16().unwrap_or(443);
    let path = real.path().trim_end_matches('/');
    let host = if name.contains(':') {
        format!("[{name}]")
    } else {
        name.to_string()
    };
    Ok((format!("https://{host}:{port}{path}"), real))
}

/// TLS settings towards an `https://` API server.
struct TlsBase {
    /// `None` when verification is off.
    roots: Option<Arc<Vec<ureq::tls::Certificate<'static>>>>,
}

/// A credential obtained from a file or a plugin, and how long it may be reused.
struct CachedCredential {
    bearer: Option<Token>,
    /// Set when the credential is a client certificate returned by a plugin.
    agent: Option<ureq::Agent>,
    fresh: Freshness,
}

enum Freshness {
    /// A token file's content, reused for [`TokenClient::with_token_file_reread`].
    ReadAt(Instant),
    /// A plugin's credential with an `expirationTimestamp`.
    Until(SystemTime),
    /// A plugin's credential without one: reused until the API server refuses it.
    UntilRefused,
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("url", &self.url)
            .field("credential", &self.credential)
            .field("expiration_seconds", &self.expiration_seconds)
            .field("bound_pod", &self.bound_pod)
            .finish_non_exhaustive()
    }
}

impl AgentFactory {
    fn agent(&self, client_cert: Option<ureq::tls::ClientCert>) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The request carries an API credential: it must never go through a proxy
            // picked up from HTTP_PROXY, nor follow a redirect anywhere.
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_global(Some(self.call_timeout))
            .user_agent(concat!("kube-audience-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &self.tls {
            let builder = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .client_cert(client_cert)
                .unversioned_rustls_crypto_provider(crate::tls::provider());
            let builder = match &tls.roots {
                Some(roots) => builder.root_certs(ureq::tls::RootCerts::Specific(roots.clone())),
                None => builder.disable_verification(true),
            };
            config = config.tls_config(builder.build());
        }
        match &self.connect_to {
            None => config.build().new_agent(),
            Some(connect_to) => ureq::Agent::with_parts(
                config.build(),
                ureq::unversioned::transport::DefaultConnector::new(),
                connect_to.clone(),
            ),
        }
    }
}

impl TokenClient {
    /// Builds the client: parses the CA (for `https://` servers, which are then trusted
    /// against it only) and the client certificate, if any, and sets the timeouts. Token
    /// files are read, and exec plugins run, on first use.
    ///
    /// With a TLS server name (kubeconfig `tls-server-name`), the request URL names that
    /// host, so that SNI and certificate verification use it, and a resolver sends the
    /// connection to the server's real address (as `curl --connect-to` does).
    ///
    /// Fails when the server URL has another scheme, an `https://` server has no CA while
    /// verification is on, the CA holds no certificate, or a client certificate or key
    /// cannot be loaded.
    pub fn new(
        api: &ApiSettings,
        expiration_seconds: u32,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<TokenClient, KubeError> {
        let server = api.server.trim_end_matches('/');
        let is_https = if server.starts_with("https://") {
            true
        } else if server.starts_with("http://") {
            false
        } else {
            return Err(KubeError::ParseApiServerUrl {
                server: api.server.clone(),
            });
        };

        let tls = if !is_https {
            None
        } else if api.insecure_skip_verify {
            log::warn!(
                "api server certificate is not verified (insecure-skip-tls-verify) apiserver={server}"
            );
            Some(TlsBase { roots: None })
        } else {
            let Some(ca) = &api.ca else {
                return Err(KubeError::MissingCaFile {
                    server: server.to_string(),
                });
            };
            Some(TlsBase {
                roots: Some(Arc::new(read_ca(ca)?)),
            })
        };
        let (url_base, connect_to) = match (&api.tls_server_name, is_https) {
            (Some(name), true) => {
                let (renamed, real) = with_server_name(server, name)?;
                (
                    renamed,
                    Some(ConnectTo {
                        name: name.to_ascii_lowercase(),
                        real,
                    }),
                )
            }
            _ => (server.to_string(), None),
        };
        let agents = AgentFactory {
            tls,
            connect_timeout,
            call_timeout,
            connect_to,
        };
        let client_cert = match (&api.client_cert, is_https) {
            (Some(source), true) => Some(load_client_cert(&source.cert, &source.key)?),
            _ => None,
        };

        Ok(TokenClient {
            agent: agents.agent(client_cert),
            agents,
            url: token_request_url(&url_base, &api.namespace, &api.service_account),
            credential: api.credential.clone(),
            expiration_seconds,
            bound_pod: None,
            token_file_reread: DEFAULT_TOKEN_FILE_REREAD,
            cached: Mutex::new(None),
        })
    }

    /// Binds every issued token to this pod (`spec.boundObjectRef`), so the API server
    /// invalidates the tokens when the pod is deleted.
    pub fn with_bound_pod(mut self, name: impl Into<String>, uid: impl Into<String>) -> Self {
        self.bound_pod = Some(BoundObjectRef {
            kind: "Pod",
            api_version: "v1",
            name: name.into(),
            uid: uid.into(),
        });
        self
    }

    /// Sets how long a read of a token file is reused (default
    /// [`DEFAULT_TOKEN_FILE_REREAD`]); zero reads it on every request.
    pub fn with_token_file_reread(mut self, interval: Duration) -> Self {
        self.token_file_reread = interval;
        self
    }

    /// The TokenRequest URL this client posts to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token and agent to use: from the cache while it is fresh, else from the
    /// token file or the exec plugin. `refresh` ignores the cache (after a 401).
    fn credential(
        &self,
        audience: &str,
        refresh: bool,
    ) -> Result<(Option<Token>, ureq::Agent), KubeError> {
        let (path, exec) = match &self.credential {
            ApiCredential::None => return Ok((None, self.agent.clone())),
            ApiCredential::Token { token, .. } => {
                return Ok((Some(token.clone()), self.agent.clone()))
            }
            ApiCredential::TokenFile(path) => (Some(path), None),
            ApiCredential::Exec(exec) => (None, Some(exec)),
        };
        // Held while a plugin runs, so that concurrent callers wait for its one answer.
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref() {
            let fresh = match c.fresh {
                Freshness::ReadAt(at) => at.elapsed() < self.token_file_reread,
                Freshness::Until(until) => SystemTime::now() < until,
                Freshness::UntilRefused => true,
            };
            if fresh && !refresh {
                let agent = c.agent.clone().unwrap_or_else(|| self.agent.clone());
                return Ok((c.bearer.clone(), agent));
            }
        }
        if let Some(path) = path {
            let token = read_token_file(path)?;
            *cached = Some(CachedCredential {
                bearer: Some(token.clone()),
                agent: None,
                fresh: Freshness::ReadAt(Instant::now()),
            });
            return Ok((Some(token), self.agent.clone()));
        }
        let exec = exec.expect("the credential is a token file or a plugin here");
        log::debug!(
            "running exec credential plugin command={}",
            exec.command.display()
        );
        let credential = exec.run().map_err(|source| KubeError::ExecPlugin {
            audience: audience.to_string(),
            source,
        })?;
        let agent = match &credential.client_cert_pem {
            None => self.agent.clone(),
            Some((cert, key)) => {
                let origin = |what: &str| format!("{}, exec plugin {what}", exec.origin);
                let cert = PemSource::Inline {
                    origin: origin("client certificate"),
                    pem: cert.clone(),
                };
                let key = PemSource::Inline {
                    origin: origin("client key"),
                    pem: key.clone(),
                };
                self.agents.agent(Some(load_client_cert(&cert, &key)?))
            }
        };
        let fresh = match credential.expires_at {
            Some(until) => {
                let expires_in_s = until
                    .duration_since(SystemTime::now())
                    .map_or(0, |d| d.as_secs());
                log::debug!("exec credential obtained expires_in_s={expires_in_s}");
                Freshness::Until(until)
            }
            None => {
                log::debug!("exec credential obtained expires_in_s=none");
                Freshness::UntilRefused
            }
        };
        *cached = Some(CachedCredential {
            bearer: credential.token.clone(),
            agent: credential.client_cert_pem.is_some().then(|| agent.clone()),
            fresh,
        });
        Ok((credential.token, agent))
    }

    /// One HTTP exchange; returns the status and the body (bounded).
    fn post(
        &self,
        audience: &str,
        agent: &ureq::Agent,
        bearer: Option<&Token>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), KubeError> {
        let transport = |e: ureq::Error| classify_transport_error(audience, &self.url, e);
        let mut request = agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(bearer) = bearer {
            request = request.header("Authorization", format!("Bearer {}", bearer.expose()));
        }
        let mut response = request.send(body).map_err(transport)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(transport)?;
        Ok((status, body))
    }
}

impl TokenSource for TokenClient {
    /// Posts a TokenRequest for `audience`. After a 401 a token file is read again, or an
    /// exec plugin run again, and the request retried once, in case the credential was
    /// rotated or revoked in the meantime.
    fn request_token(&self, audience: &str) -> Result<IssuedToken, KubeError> {
        let body = request_body(audience, self.expiration_seconds, self.bound_pod.as_ref());

        let (bearer, agent) = self.credential(audience, false)?;
        let (mut status, mut response) = self.post(audience, &agent, bearer.as_ref(), &body)?;
        let renewable = matches!(
            self.credential,
            ApiCredential::TokenFile(_) | ApiCredential::Exec(_)
        );
        if status == 401 && renewable {
            log::debug!(
                "token request unauthorized, renewing the api credential audience={audience}"
            );
            let (bearer, agent) = self.credential(audience, true)?;
            (status, response) = self.post(audience, &agent, bearer.as_ref(), &body)?;
        }

        if !(200..300).contains(&status) {
            return Err(status_error(audience, status, &response));
        }
        parse_issued_token(audience, status, &response)
    }
}

/// `spec.boundObjectRef` of a TokenRequest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct BoundObjectRef {
    kind: &'static str,
    api_version: &'static str,
    name: String,
    uid: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: TokenRequestSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec<'a> {
    audiences: [&'a str; 1],
    expiration_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    bound_object_ref: Option<&'a BoundObjectRef>,
}

#[derive(Deserialize)]
struct TokenResponse {
    status: Option<TokenResponseStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenResponseStatus {
    token: Option<String>,
    expiration_timestamp: Option<String>,
}

/// The API's failure object; only the fields we show.
#[derive(Deserialize)]
struct ApiStatus {
    kind: Option<String>,
    reason: Option<String>,
    message: Option<String>,
}

/// The CA bundle's certificates: from its file, or from inline PEM.
fn read_ca(ca: &PemSource) -> Result<Vec<ureq::tls::Certificate<'static>>, KubeError> {
    let mut roots = Vec::new();
    match ca {
        PemSource::File(path) => {
            let read_error = |e| KubeError::ReadCaFile {
                path: path.to_path_buf(),
                source: Arc::new(e),
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(read_error)? {
                let cert = cert.map_err(read_error)?;
                roots.push(ureq::tls::Certificate::from_der(cert.as_ref()).to_owned());
            }
            if roots.is_empty() {
                return Err(KubeError::NoCertificatesInCaFile {
                    path: path.to_path_buf(),
                });
            }
        }
        PemSource::Inline { origin, pem } => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| KubeError::ParseCaData {
                    origin: origin.clone(),
                })?;
                roots.push(ureq::tls::Certificate::from_der(cert.as_ref()).to_owned());
            }
            if roots.is_empty() {
                return Err(KubeError::ParseCaData {
                    origin: origin.clone(),
                });
            }
        }
    }
    Ok(roots)
}

/// Loads a client certificate chain and its key, from files or inline PEM.
fn load_client_cert(cert: &PemSource, key: &PemSource) -> Result<ureq::tls::ClientCert, KubeError> {
    let bytes = |source: &PemSource, what: &'static str| match source {
        PemSource::File(path) => std::fs::read(path).map_err(|e| KubeError::ClientCert {
            origin: source.describe(),
            what,
            reason: "cannot be read",
            source: Some(Arc::new(e)),
        }),
        PemSource::Inline { pem, .. } => Ok(pem.clone()),
    };
    let invalid = |source: &PemSource, what, reason| KubeError::ClientCert {
        origin: source.describe(),
        what,
        reason,
        source: None,
    };

    let cert_pem = bytes(cert, "client certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .map(|c| c.map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(cert, "client certificate", "is not valid PEM"))?;
    if chain.is_empty() {
        return Err(invalid(cert, "client certificate", "holds no certificate"));
    }

    let key_pem = bytes(key, "client key")?;
    // The PEM parser's error could quote key material: only our own reason is kept.
    let key_der = ureq::tls::PrivateKey::from_pem(&key_pem)
        .map_err(|_| invalid(key, "client key", "holds no private key"))?;
    Ok(ureq::tls::ClientCert::new_with_certs(&chain, key_der))
}

fn read_token_file(path: &Path) -> Result<Token, KubeError> {
    let text = std::fs::read_to_string(path).map_err(|e| KubeError::ReadTokenFile {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(KubeError::EmptyTokenFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Token::new(value))
}

/// `{server}/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`. `server` is used as given
/// (an IPv6 host is already bracketed, a path prefix is kept); the names are
/// percent-encoded so that a stray `/` or `?` cannot change the path.
fn token_request_url(server: &str, namespace: &str, service_account: &str) -> String {
    format!(
        "{}/api/v1/namespaces/{}/serviceaccounts/{}/token",
        server.trim_end_matches('/'),
        encode_path_segment(namespace),
        encode_path_segment(service_account)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn request_body(
    audience: &str,
    expiration_seconds: u32,
    bound_pod: Option<&BoundObjectRef>,
) -> Vec<u8> {
    let request = TokenRequest {
        api_version: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        spec: TokenRequestSpec {
            audiences: [audience],
            expiration_seconds,
            bound_object_ref: bound_pod,
        },
    };
    serde_json::to_vec(&request).expect("a struct of strings and numbers always serializes")
}

/// Builds the error for a non-2xx response, using the `Status` object when there is one.
fn status_error(audience: &str, http_status: u16, body: &[u8]) -> KubeError {
    let api_status = serde_json::from_slice::<ApiStatus>(body)
        .ok()
        .filter(|s| s.kind.as_deref() == Some("Status"));
    let (reason, message) = match api_status {
        Some(s) => (
            s.reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| reason_phrase(http_status).to_string()),
            s.message.filter(|m| !m.is_empty()).map(|m| truncate(&m)),
        ),
        None => (reason_phrase(http_status).to_string(), None),
    };
    KubeError::Status {
        audience: audience.to_string(),
        http_status,
        reason,
        message,
    }
}

fn parse_issued_token(
    audience: &str,
    http_status: u16,
    body: &[u8],
) -> Result<IssuedToken, KubeError> {
    // serde's error text can quote the input, which holds a token: it is dropped here.
    let malformed = |what| KubeError::ParseTokenResponse {
        audience: audience.to_string(),
        http_status,
        what,
    };
    let response: TokenResponse =
        serde_json::from_slice(body).map_err(|_| malformed("is not a TokenRequest object"))?;
    let status = response.status.ok_or_else(|| malformed("has no status"))?;
    let token = status
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("has no status.token"))?;
    let expires_at = status
        .expiration_timestamp
        .ok_or_else(|| malformed("has no status.expirationTimestamp"))?;
    let expires_at = parse_rfc3339(&expires_at)
        .ok_or_else(|| malformed("has an invalid status.expirationTimestamp"))?;
    Ok(IssuedToken {
        token: Token::new(token),
        expires_at,
    })
}

fn classify_transport_error(audience: &str, url: &str, error: ureq::Error) -> KubeError {
    let (audience, url) = (audience.to_string(), url.to_string());
    let is_tls_io = |e: &io::Error| e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    let is_connect_io = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable
        )
    };
    match &error {
        ureq::Error::Timeout(_) => KubeError::Timeout {
            audience,
            url,
            source: Arc::new(error),
        },
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => KubeError::Timeout {
            audience,
            url,
            source: Arc::new(error),
        },
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => KubeError::Tls {
            audience,
            url,
            source: Arc::new(error),
        },
        ureq::Error::Io(e) if is_tls_io(e) => KubeError::Tls {
            audience,
            url,
            source: Arc::new(error),
        },
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => KubeError::Connect {
            audience,
            url,
            source: Arc::new(error),
        },
        ureq::Error::Io(e) if is_connect_io(e) => KubeError::Connect {
            audience,
            url,
            source: Arc::new(error),
        },
        _ => KubeError::Transport {
            audience,
            url,
            source: Arc::new(error),
        },
    }
}

fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_STATUS_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_string(),
    }
}

/// Reason phrases of the statuses the API server is known to send.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_server_name_replaces_the_host_and_keeps_port_and_path() {
        let (url, real) =
            with_server_name("https://10.0.0.1:6443/prefix/", "kube.internal").unwrap();
        assert_eq!(url, "https://kube.internal:6443/prefix");
        assert_eq!(real.host(), Some("10.0.0.1"));
        let (url, _) = with_server_name("https://[fd00::1]", "api").unwrap();
        assert_eq!(url, "https://api:443");
        let (url, _) = with_server_name("https://h:1", "fd00::2").unwrap();
        assert_eq!(url, "https://[fd00::2]:1");
    }
    use std::error::Error as _;
    use std::time::UNIX_EPOCH;

    const FAKE: &str = "fake-token-value-for-tests";

    fn settings(server: &str, ca_file: Option<&str>) -> ApiSettings {
        ApiSettings::mounted(
            server,
            ca_file.map(PathBuf::from),
            "/nonexistent/token",
            "monitoring",
            "prometheus",
        )
    }

    #[test]
    fn builds_urls_for_ipv6_hosts_and_path_prefixes() {
        assert_eq!(
            token_request_url("https://[fd00::1]:443", "ns", "sa"),
            "https://[fd00::1]:443/api/v1/namespaces/ns/serviceaccounts/sa/token"
        );
        assert_eq!(
            token_request_url("http://127.0.0.1:8001/k8s/", "ns", "sa"),
            "http://127.0.0.1:8001/k8s/api/v1/namespaces/ns/serviceaccounts/sa/token"
        );
    }

    #[test]
    fn encodes_names_as_path_segments() {
        assert_eq!(encode_path_segment("kube-system"), "kube-system");
        assert_eq!(encode_path_segment("a/b?c d%"), "a%2Fb%3Fc%20d%25");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
        assert_eq!(
            token_request_url("https://h", "../x", "s#"),
            "https://h/api/v1/namespaces/..%2Fx/serviceaccounts/s%23/token"
        );
    }

    #[test]
    fn http_urls_are_accepted_and_others_refused() {
        let client = TokenClient::new(
            &settings("http://127.0.0.1:8001", None),
            3600,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            client.url(),
            "http://127.0.0.1:8001/api/v1/namespaces/monitoring/serviceaccounts/prometheus/token"
        );

        let err = TokenClient::new(
            &settings("ftp://x", None),
            3600,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(err, KubeError::ParseApiServerUrl { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn https_needs_a_readable_ca_file() {
        let timeouts = (Duration::from_secs(1), Duration::from_secs(1));
        let err = TokenClient::new(&settings("https://h", None), 3600, timeouts.0, timeouts.1)
            .unwrap_err();
        assert_eq!(err.to_string(), "no ca file given to verify https://h");

        let err = TokenClient::new(
            &settings("https://h", Some("/nonexistent/ca.crt")),
            3600,
            timeouts.0,
            timeouts.1,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "cannot read ca file /nonexistent/ca.crt");
        assert!(err.source().is_some());
    }

    #[test]
    fn request_body_has_the_fields_the_api_expects() {
        let body: serde_json::Value =
            serde_json::from_slice(&request_body("https://vault", 600, None)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": ["https://vault"], "expirationSeconds": 600}
            })
        );

        let pod = BoundObjectRef {
            kind: "Pod",
            api_version: "v1",
            name: "web-0".into(),
            uid: "1234-abcd".into(),
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body("a", 3600, Some(&pod))).unwrap();
        assert_eq!(
            body["spec"]["boundObjectRef"],
            serde_json::json!({"kind": "Pod", "apiVersion": "v1", "name": "web-0", "uid": "1234-abcd"})
        );
    }

    #[test]
    fn status_objects_are_surfaced() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"serviceaccounts \"prom\" is forbidden: User \"x\" cannot create resource",
            "reason":"Forbidden","code":403}"#;
        let err = status_error("vault", 403, body);
        assert_eq!(
            err.to_string(),
            "token request for audience \"vault\" failed: 403 Forbidden: serviceaccounts \"prom\" is forbidden: User \"x\" cannot create resource"
        );
        assert_eq!(err.short_reason(), "403 Forbidden");
        assert!(!err.is_retryable());
        assert_eq!(err.audience(), Some("vault"));
    }

    #[test]
    fn other_error_bodies_are_not_shown() {
        let err = status_error("a", 502, b"<html>upstream secret stuff</html>");
        assert_eq!(
            err.to_string(),
            "token request for audience \"a\" failed: 502 Bad Gateway"
        );
        assert!(err.is_retryable());

        // JSON that is not a Status (for example a TokenRequest echoed back) is not shown.
        let err = status_error(
            "a",
            400,
            format!(r#"{{"kind":"TokenRequest","message":"{FAKE}"}}"#).as_bytes(),
        );
        assert!(!err.to_string().contains(FAKE));
        assert!(!format!("{err:?}").contains(FAKE));

        let err = status_error("a", 599, b"");
        assert_eq!(
            err.to_string(),
            "token request for audience \"a\" failed: 599"
        );
    }

    #[test]
    fn long_status_messages_are_truncated() {
        let long = "x".repeat(500);
        let body =
            format!(r#"{{"kind":"Status","reason":"Invalid","message":"{long}","code":422}}"#);
        let KubeError::Status { message, .. } = status_error("a", 422, body.as_bytes()) else {
            panic!("not a status error");
        };
        assert_eq!(
            message.unwrap().chars().count(),
            MAX_STATUS_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn parses_issued_tokens() {
        let body = format!(
            r#"{{"kind":"TokenRequest","status":{{"token":"{FAKE}","expirationTimestamp":"2030-01-01T00:00:00Z"}}}}"#
        );
        let issued = parse_issued_token("a", 201, body.as_bytes()).unwrap();
        assert_eq!(issued.token.expose(), FAKE);
        assert_eq!(
            issued.expires_at,
            UNIX_EPOCH + Duration::from_secs(1_893_456_000)
        );
    }

    #[test]
    fn malformed_success_responses_never_echo_the_body() {
        for body in [
            format!(r#"{{"status":{{"token":"{FAKE}"}}}}"#),
            format!(r#"{{"status":{{"token":"{FAKE}","expirationTimestamp":"soon"}}}}"#),
            format!(r#"{{"status":{{"token":"","expirationTimestamp":"{FAKE}"}}}}"#),
            format!(r#"{{"status": "{FAKE}"}}"#),
            format!("not json {FAKE}"),
        ] {
            let err = parse_issued_token("a", 201, body.as_bytes()).unwrap_err();
            let (display, debug) = (err.to_string(), format!("{err:?}"));
            assert!(display.starts_with("token request for audience \"a\" failed: 201 response "));
            assert!(!display.contains(FAKE) && !debug.contains(FAKE), "{debug}");
        }
    }

    #[test]
    fn token_file_errors_name_the_path_not_the_content() {
        let dir = std::env::temp_dir().join(format!("kube-rs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, " \n\t").unwrap();
        let err = read_token_file(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("api token file {} is empty", path.display())
        );

        std::fs::write(&path, format!("{FAKE}\n")).unwrap();
        let token = read_token_file(&path).unwrap();
        assert_eq!(token.expose(), FAKE);
        assert!(!format!("{token:?}").contains(FAKE));
        std::fs::remove_dir_all(&dir).unwrap();

        let err = read_token_file(&path).unwrap_err();
        assert!(err.to_string().starts_with("cannot read api token file "));
    }

    #[test]
    fn errors_are_cheap_to_share_across_threads() {
        fn assert_traits<T: Clone + Send + Sync + std::error::Error + 'static>() {}
        assert_traits::<KubeError>();
    }
}
