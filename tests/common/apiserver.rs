//! A fake Kubernetes API server for tests and the demo: it serves the TokenRequest endpoint
//! over HTTPS the way the real one answers it (bearer check, validation, `Status` failures)
//! and records what it was asked. It knows nothing of any other API resource.
//!
//! The certificate authority and server certificate are generated at start; `ca.crt` and the
//! mounted API `token` file are written into the server's directory. Issued tokens are
//! `fake-token.<audience>.<serial>`, so that a target can tell which audience a token was
//! minted for ([`audience_of`]).
//!
//! Besides the mounted token, it can accept extra bearer tokens ([`FakeApiServer::accept_bearer`])
//! and, when built with [`Builder::client_certs`], TLS client certificates signed by a client
//! CA of its own ([`FakeApiServer::issue_client_cert`]); a verified certificate authenticates a
//! request without a bearer token, as on a real API server.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_std::net::{TcpListener, TcpStream};
use async_std::task::JoinHandle;
use futures_rustls::TlsAcceptor;
use http_types::{Request, Response, StatusCode};
use kube_audience_proxy::config::ApiSettings;
use kube_audience_proxy::timefmt::format_rfc3339_millis;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use super::tempdir::TempDir;

/// Prefix of every token this server issues.
pub const TOKEN_PREFIX: &str = "fake-token.";

/// The API server refuses TokenRequests for less than this, as the real one does.
pub const MIN_EXPIRATION_SECONDS: u64 = 600;

/// The audience a token issued by this server was minted for.
pub fn audience_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (audience, serial) = rest.rsplit_once('.')?;
    serial.parse::<u64>().ok()?;
    Some(audience)
}

/// A PEM CA certificate unrelated to any server, for "wrong CA" tests.
pub fn unrelated_ca_pem() -> String {
    generate_pki("unrelated test CA").ca_pem
}

/// Builder for [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct Builder {
    namespace: String,
    service_account: String,
    token_lifetime: Option<Duration>,
    listen: SocketAddr,
    dir: Option<PathBuf>,
    mounted_token: String,
    client_certs: bool,
}

impl Builder {
    /// Verify TLS client certificates against a client CA generated at start: a request with
    /// a certificate it signed is authenticated; one signed by another CA fails the handshake;
    /// requests without one still authenticate with a bearer token.
    pub fn client_certs(mut self) -> Self {
        self.client_certs = true;
        self
    }

    /// The namespace whose service account may be asked for tokens (default `monitoring`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// The one service account that exists (default `prometheus`).
    pub fn service_account(mut self, name: &str) -> Self {
        self.service_account = name.to_string();
        self
    }

    /// Issue tokens valid for this long, whatever `expirationSeconds` asked for.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = Some(lifetime);
        self
    }

    /// Listen here instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Write `ca.crt` and `token` into this existing directory instead of a temporary one.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The initial content of the mounted API token file.
    pub fn mounted_token(mut self, token: &str) -> Self {
        self.mounted_token = token.to_string();
        self
    }

    /// Generates the certificates, writes the files and starts serving. Panics on failure.
    pub fn start(self) -> FakeApiServer {
        let (tempdir, dir) = match self.dir {
            Some(dir) => (None, dir),
            None => {
                let tempdir = TempDir::new();
                let dir = tempdir.path().to_path_buf();
                (Some(tempdir), dir)
            }
        };
        let pki = generate_pki("fake kube-apiserver test CA");
        let ca_file = dir.join("ca.crt");
        let token_file = dir.join("token");
        std::fs::write(&ca_file, &pki.ca_pem).expect("write ca.crt");
        std::fs::write(&token_file, format!("{}\n", self.mounted_token)).expect("write token");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let (builder, client_ca) = if self.client_certs {
            let ca = ClientCa::generate();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert_der.clone()).expect("client ca root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .expect("client verifier");
            (builder.with_client_cert_verifier(verifier), Some(ca))
        } else {
            (builder.with_no_client_auth(), None)
        };
        let tls = builder
            .with_single_cert(pki.chain, pki.key)
            .expect("server certificate");

        let state = Arc::new(State {
            namespace: self.namespace,
            service_account: self.service_account,
            token_file: token_file.clone(),
            token_lifetime: Mutex::new(self.token_lifetime),
            failures: Mutex::new(None),
            delays: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            total_calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
            extra_bearers: Mutex::new(Vec::new()),
            client_cert_calls: AtomicUsize::new(0),
            pods: Mutex::new(HashMap::new()),
        });
        let listener =
            async_std::task::block_on(TcpListener::bind(self.listen)).expect("bind fake api");
        let addr = listener.local_addr().expect("local addr");
        let server = FakeApiServer {
            state,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            addr,
            accept_task: Mutex::new(None),
            ca_file,
            token_file,
            ca_pem: pki.ca_pem,
            client_ca,
            _tempdir: tempdir,
        };
        server.serve(listener);
        server
    }
}

/// A running fake API server; stops when dropped.
pub struct FakeApiServer {
    state: Arc<State>,
    acceptor: TlsAcceptor,
    addr: SocketAddr,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    ca_file: PathBuf,
    token_file: PathBuf,
    ca_pem: String,
    client_ca: Option<ClientCa>,
    _tempdir: Option<TempDir>,
}

/// The CA whose client certificates the server accepts.
struct ClientCa {
    cert_der: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl ClientCa {
    fn generate() -> ClientCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "fake kube-apiserver client CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("client ca key");
        let cert = params.self_signed(&key).expect("client ca cert");
        ClientCa {
            cert_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn issue(&self, user: &str) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("client key");
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// How the next calls fail.
#[derive(Debug, Clone, Copy)]
struct FailPlan {
    status: u16,
    /// `None`: until cleared.
    remaining: Option<usize>,
}

struct State {
    namespace: String,
    service_account: String,
    token_file: PathBuf,
    token_lifetime: Mutex<Option<Duration>>,
    failures: Mutex<Option<FailPlan>>,
    delays: Mutex<HashMap<String, Duration>>,
    calls: Mutex<HashMap<String, usize>>,
    total_calls: AtomicUsize,
    requests: Mutex<Vec<Value>>,
    serial: AtomicU64,
    connections: Mutex<Vec<JoinHandle<()>>>,
    extra_bearers: Mutex<Vec<String>>,
    client_cert_calls: AtomicUsize,
    /// Pods that exist, name to uid, for checking `spec.boundObjectRef`.
    pods: Mutex<HashMap<String, String>>,
}

impl FakeApiServer {
    /// A builder with the defaults: `monitoring/prometheus`, lifetime as requested.
    pub fn builder() -> Builder {
        Builder {
            namespace: "monitoring".into(),
            service_account: "prometheus".into(),
            token_lifetime: None,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            dir: None,
            mounted_token: "fake-mounted-api-token-0".into(),
            client_certs: false,
        }
    }

    /// A client certificate and key (PEM) for `user`, signed by the client CA.
    /// Panics unless built with [`Builder::client_certs`].
    pub fn issue_client_cert(&self, user: &str) -> (String, String) {
        self.client_ca
            .as_ref()
            .expect("the server was built with client_certs()")
            .issue(user)
    }

    /// Accepts `token` as a bearer token too, besides the mounted one.
    /// Makes a pod exist, so that tokens may be bound to it.
    pub fn add_pod(&self, name: &str, uid: &str) {
        self.state
            .pods
            .lock()
            .unwrap()
            .insert(name.to_string(), uid.to_string());
    }

    pub fn accept_bearer(&self, token: &str) {
        self.state
            .extra_bearers
            .lock()
            .unwrap()
            .push(token.to_string());
    }

    /// No longer accepts a token given to [`accept_bearer`](Self::accept_bearer).
    pub fn revoke_bearer(&self, token: &str) {
        self.state
            .extra_bearers
            .lock()
            .unwrap()
            .retain(|t| t != token);
    }

    /// Requests authenticated by a verified client certificate.
    pub fn client_cert_calls(&self) -> usize {
        self.state.client_cert_calls.load(Ordering::SeqCst)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bound address (kept across [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM file of the CA that signed the server certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The mounted API token file; its current content is the accepted bearer token.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// Settings for a client of this server.
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings::mounted(
            self.url(),
            Some(self.ca_file.clone()),
            self.token_file.clone(),
            self.state.namespace.clone(),
            self.state.service_account.clone(),
        )
    }

    /// Replaces the accepted mounted token, as the kubelet does when it rotates it.
    pub fn rotate_mounted_token(&self, token: &str) {
        std::fs::write(&self.token_file, format!("{token}\n")).expect("rewrite token file");
    }

    /// Issue tokens valid for this long (`None`: as requested by `expirationSeconds`).
    pub fn set_token_lifetime(&self, lifetime: Option<Duration>) {
        *self.state.token_lifetime.lock().unwrap() = lifetime;
    }

    /// Fails the next `count` TokenRequests with `status` (401, 403, 404, 422, 500, …).
    pub fn fail_next(&self, count: usize, status: u16) {
        *self.state.failures.lock().unwrap() = Some(FailPlan {
            status,
            remaining: Some(count),
        });
    }

    /// Fails every TokenRequest with `status` until [`clear_failures`](Self::clear_failures).
    pub fn fail_all(&self, status: u16) {
        *self.state.failures.lock().unwrap() = Some(FailPlan {
            status,
            remaining: None,
        });
    }

    /// Answers normally again.
    pub fn clear_failures(&self) {
        *self.state.failures.lock().unwrap() = None;
    }

    /// Delays every answer to a TokenRequest for `audience`.
    pub fn set_delay(&self, audience: &str, delay: Duration) {
        self.state
            .delays
            .lock()
            .unwrap()
            .insert(audience.to_string(), delay);
    }

    /// TokenRequests received for `audience` (first of `spec.audiences`), whatever the outcome.
    pub fn calls_for(&self, audience: &str) -> usize {
        self.state
            .calls
            .lock()
            .unwrap()
            .get(audience)
            .copied()
            .unwrap_or(0)
    }

    /// HTTP requests received, on any path.
    pub fn total_calls(&self) -> usize {
        self.state.total_calls.load(Ordering::SeqCst)
    }

    /// The JSON bodies of the TokenRequests received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    /// `spec.boundObjectRef` of each TokenRequest received (`Null` when absent).
    pub fn bound_object_refs(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .map(|r| r["spec"]["boundObjectRef"].clone())
            .collect()
    }

    /// Stops listening and drops every open connection, as a crashed API server would.
    pub fn stop(&self) {
        let accept = self.accept_task.lock().unwrap().take();
        let connections: Vec<_> = self.state.connections.lock().unwrap().drain(..).collect();
        async_std::task::block_on(async {
            if let Some(accept) = accept {
                accept.cancel().await;
            }
            for connection in connections {
                connection.cancel().await;
            }
        });
    }

    /// Listens again on the same address after [`stop`](Self::stop).
    pub fn restart(&self) {
        self.stop();
        let listener = async_std::task::block_on(TcpListener::bind(self.addr))
            .expect("rebind fake api on the same port");
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let acceptor = self.acceptor.clone();
        let task = async_std::task::spawn(async move {
            loop {
                let Ok((tcp, _peer)) = listener.accept().await else {
                    continue;
                };
                let state2 = state.clone();
                let acceptor = acceptor.clone();
                let connection = async_std::task::spawn(async move {
                    let handshake =
                        async_std::future::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    let Ok(Ok(tls)) = handshake.await else {
                        return;
                    };
                    // The verifier only lets through certificates the client CA signed.
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    let stream = SharedStream::new(tls);
                    let _ = async_h1::accept(stream, |req| {
                        let state = state2.clone();
                        async move { Ok(state.handle(req, client_cert).await) }
                    })
                    .await;
                });
                let mut connections = state.connections.lock().unwrap();
                connections.push(connection);
            }
        });
        *self.accept_task.lock().unwrap() = Some(task);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl State {
    async fn handle(&self, mut req: Request, client_cert: bool) -> Response {
        self.total_calls.fetch_add(1, Ordering::SeqCst);

        let path = req.url().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["api", "v1", "namespaces", ns, "serviceaccounts", sa, "token"] = segments[..] else {
            return not_found_path();
        };
        if req.method() != http_types::Method::Post {
            return status_response(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            );
        }
        let (ns, sa) = (ns.to_string(), sa.to_string());

        let body = req.body_string().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let audience = parsed
            .as_ref()
            .and_then(|b| b["spec"]["audiences"][0].as_str())
            .unwrap_or("")
            .to_string();
        if let Some(parsed) = &parsed {
            self.requests.lock().unwrap().push(parsed.clone());
        }
        *self
            .calls
            .lock()
            .unwrap()
            .entry(audience.clone())
            .or_default() += 1;

        let delay = self.delays.lock().unwrap().get(&audience).copied();
        if let Some(delay) = delay {
            async_std::task::sleep(delay).await;
        }

        if let Some(status) = self.take_injected_failure() {
            return self.failure(status, &ns, &sa);
        }

        let presented = req
            .header("Authorization")
            .map(|v| v.last().as_str().to_string());
        let expected = std::fs::read_to_string(&self.token_file).unwrap_or_default();
        let expected = expected.trim();
        let mounted_ok =
            !expected.is_empty() && presented.as_deref() == Some(&format!("Bearer {expected}"));
        let extra_ok = self
            .extra_bearers
            .lock()
            .unwrap()
            .iter()
            .any(|t| presented.as_deref() == Some(&format!("Bearer {t}")));
        if client_cert && !mounted_ok && !extra_ok {
            self.client_cert_calls.fetch_add(1, Ordering::SeqCst);
        } else if !mounted_ok && !extra_ok {
            return self.failure(401, &ns, &sa);
        }

        if ns != self.namespace || sa != self.service_account {
            return status_response(
                404,
                "NotFound",
                &format!("serviceaccounts \"{sa}\" not found"),
            );
        }

        let Some(request) = parsed else {
            return status_response(400, "BadRequest", "the request body is not valid JSON");
        };
        if request["apiVersion"] != "authentication.k8s.io/v1" || request["kind"] != "TokenRequest"
        {
            return status_response(
                400,
                "BadRequest",
                "the body is not an authentication.k8s.io/v1 TokenRequest",
            );
        }
        if audience.is_empty() {
            return invalid(
                &sa,
                "spec.audiences: Required value: at least one audience is required",
            );
        }
        let requested = request["spec"]["expirationSeconds"]
            .as_u64()
            .unwrap_or(3600);
        if requested < MIN_EXPIRATION_SECONDS {
            return invalid(
                &sa,
                &format!("spec.expirationSeconds: Invalid value: {requested}: may not specify a duration less than 10 minutes"),
            );
        }

        // As the real API server: the bound pod must exist and have that uid.
        let bound = &request["spec"]["boundObjectRef"];
        if !bound.is_null() {
            let name = bound["name"].as_str().unwrap_or_default();
            let uid = bound["uid"].as_str().unwrap_or_default();
            if bound["kind"] != "Pod" || bound["apiVersion"] != "v1" {
                return status_response(400, "BadRequest", "cannot bind token to object of type");
            }
            match self.pods.lock().unwrap().get(name) {
                None => {
                    return status_response(404, "NotFound", &format!("pods \"{name}\" not found"))
                }
                Some(real) if real != uid => {
                    return status_response(
                        409,
                        "Conflict",
                        &format!("Operation cannot be fulfilled on pods \"{name}\": the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"),
                    )
                }
                Some(_) => {}
            }
        }

        let lifetime = self
            .token_lifetime
            .lock()
            .unwrap()
            .unwrap_or(Duration::from_secs(requested));
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let mut spec = request["spec"].clone();
        spec["expirationSeconds"] = json!(lifetime.as_secs());
        let answer = json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": ns, "creationTimestamp": null},
            "spec": spec,
            "status": {
                "token": format!("{TOKEN_PREFIX}{audience}.{serial}"),
                "expirationTimestamp": format_rfc3339_millis(SystemTime::now() + lifetime),
            },
        });
        json_response(201, &answer)
    }

    fn take_injected_failure(&self) -> Option<u16> {
        let mut failures = self.failures.lock().unwrap();
        let plan = (*failures)?;
        match plan.remaining {
            None => Some(plan.status),
            Some(0) => {
                *failures = None;
                None
            }
            Some(n) => {
                *failures = if n == 1 {
                    None
                } else {
                    Some(FailPlan {
                        remaining: Some(n - 1),
                        ..plan
                    })
                };
                Some(plan.status)
            }
        }
    }

    /// The `Status` the real API server sends for `status` on this endpoint.
    fn failure(&self, status: u16, ns: &str, sa: &str) -> Response {
        match status {
            401 => status_response(401, "Unauthorized", "Unauthorized"),
            403 => status_response(
                403,
                "Forbidden",
                &format!("serviceaccounts \"{sa}\" is forbidden: User \"system:serviceaccount:{ns}:{sa}\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"{ns}\""),
            ),
            404 => status_response(404, "NotFound", &format!("serviceaccounts \"{sa}\" not found")),
            422 => invalid(sa, "spec.expirationSeconds: Invalid value: 1: may not specify a duration less than 10 minutes"),
            429 => status_response(429, "TooManyRequests", "too many requests, please try again later"),
            503 => status_response(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
            other => status_response(other, "InternalError", "Internal error occurred: injected failure of the fake api server"),
        }
    }
}

fn not_found_path() -> Response {
    status_response(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn invalid(sa: &str, cause: &str) -> Response {
    status_response(
        422,
        "Invalid",
        &format!("TokenRequest.authentication.k8s.io \"{sa}\" is invalid: {cause}"),
    )
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    json_response(code, &body)
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::try_from(code).unwrap_or(StatusCode::InternalServerError);
    let mut response = Response::new(status);
    response.insert_header("Content-Type", "application/json");
    response.set_body(body.to_string());
    response
}

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A CA and a server certificate for `localhost` and `127.0.0.1` signed by it.
fn generate_pki(ca_name: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(DnType::CommonName, "fake kube-apiserver");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server cert");

    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// Gives async-h1 the `Clone` stream it wants over one TLS stream. Each poll takes the lock
/// only for its own duration, so a reader and a writer never block each other for long.
#[derive(Clone)]
pub struct SharedStream(Arc<Mutex<futures_rustls::server::TlsStream<TcpStream>>>);

impl SharedStream {
    pub fn new(stream: futures_rustls::server::TlsStream<TcpStream>) -> SharedStream {
        SharedStream(Arc::new(Mutex::new(stream)))
    }
}

impl async_std::io::Read for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut stream = self.0.lock().unwrap();
        Pin::new(&mut *stream).poll_read(cx, buf)
    }
}

impl async_std::io::Write for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut stream = self.0.lock().unwrap();
        Pin::new(&mut *stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut stream = self.0.lock().unwrap();
        Pin::new(&mut *stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut stream = self.0.lock().unwrap();
        Pin::new(&mut *stream).poll_close(cx)
    }
}
