//! Wiring: builds the token cache, TLS state and listeners from a [`Config`] and runs them.
//!
//! [`start`] does everything that can fail at start-up, so that a bad file or a port in use
//! is reported before the first request, and returns a handle with the bound addresses;
//! [`run`] adds signal handling around it for the binary.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_std::net::TcpListener;
use async_std::task::JoinHandle;
use log::{debug, info, warn};
use rustls_pki_types::CertificateDer;

use crate::config::Config;
use crate::kube::{KubeError, TokenClient};
use crate::ops::{self, Health, Metrics, OpsState};
use crate::proxy::{self, ConnectionPermits, Interception, ProxyContext};
use crate::signal::TerminationSignals;
use crate::tls::{self, CertAuthority, Interceptor, TlsError};
use crate::token::{CacheSettings, TokenCache};
use crate::upstream::Upstream;

/// Why the proxy could not start or stopped with a failure.
#[derive(Debug)]
pub enum AppError {
    /// The TokenRequest client could not be built (CA file, URL).
    TokenClient(KubeError),
    /// Generating the CA, writing its file, or loading TLS material failed.
    Tls(TlsError),
    /// A listener could not be bound.
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Signal handling could not be set up.
    Signals(std::io::Error),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::TokenClient(_) => f.write_str("set up the TokenRequest client"),
            AppError::Tls(_) => f.write_str("set up TLS"),
            AppError::Bind { flag, addr, .. } => write!(f, "{flag} {addr}: cannot listen"),
            AppError::Signals(_) => f.write_str("set up signal handling"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::TokenClient(e) => Some(e),
            AppError::Tls(e) => Some(e),
            AppError::Bind { source, .. } | AppError::Signals(source) => Some(source),
        }
    }
}

/// A started proxy: its listeners are bound and serving.
pub struct RunningProxy {
    /// Where the plain-HTTP proxy listens, if configured.
    pub insecure_addr: Option<SocketAddr>,
    /// Where the TLS proxy listens, if configured.
    pub secure_addr: Option<SocketAddr>,
    /// The interception CA certificate, as written to the CA file.
    pub ca_pem: String,
    /// Where the CA certificate was written.
    pub ca_file: PathBuf,
    /// The certificate the TLS listener presents (generated or loaded), if it is configured;
    /// a client of a generated one can pin it.
    pub listener_certificate: Option<CertificateDer<'static>>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served, if configured.
    pub metrics_addr: Option<SocketAddr>,
    context: Arc<ProxyContext>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Shared state, for tests and metrics.
    pub fn context(&self) -> &Arc<ProxyContext> {
        &self.context
    }

    /// Stops accepting connections and reports not ready. Connections waiting for their next
    /// request close at once; requests in flight may finish. Returns once every client
    /// connection has closed (true) or `grace` has passed (false).
    pub async fn drain(&self, grace: Duration) -> bool {
        self.context.health.set_draining();
        let deadline = Instant::now() + grace;
        while self.context.metrics.connections.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            async_std::task::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops every listener, the metrics listener included. Connections already accepted
    /// finish on their own.
    pub async fn stop(self) {
        self.context.health.set_draining();
        for task in self.tasks {
            task.cancel().await;
        }
    }
}

/// Builds everything from `config`, binds the listeners and starts serving.
pub async fn start(config: &Config) -> Result<RunningProxy, AppError> {
    let client = TokenClient::new(
        &config.api,
        config.token_expiration_seconds,
        config.timeouts.token_connect,
        config.timeouts.token_call,
    )
    .map_err(AppError::TokenClient)?;
    let client = match &config.serving.bound_pod {
        Some(pod) => {
            info!("binding tokens to the pod pod={} uid={}", pod.name, pod.uid);
            client.with_bound_pod(&pod.name, &pod.uid)
        }
        None => client,
    };
    let tokens = TokenCache::new(Arc::new(client), CacheSettings::default());

    let now = SystemTime::now();
    let ca = CertAuthority::generate(now).map_err(AppError::Tls)?;
    ca.write_cert_file(&config.ca_file_destination)
        .map_err(AppError::Tls)?;
    let ca_pem = ca.cert_pem().to_string();
    let interceptor = Arc::new(Interceptor::new(ca).map_err(AppError::Tls)?);
    let leaf_config = {
        let interceptor = interceptor.clone();
        move |name: &str| {
            interceptor
                .server_config_for(name, SystemTime::now())
                .map_err(|e| e.to_string())
        }
    };

    // Bad CA files stop the start; the full configuration, which also parses the system
    // trust store, is built in the background so that it does not delay the first request.
    tls::check_upstream_ca_files(&config.upstream_tls, config.api.ca_file())
        .map_err(AppError::Tls)?;
    if config.upstream_tls.insecure_skip_verify {
        warn!("upstream certificates are not verified (--insecure-skip-tls-verify): any target can impersonate any other");
    }
    let upstream_settings = config.upstream_tls.clone();
    let apiserver_ca = config.api.ca_file().map(Path::to_path_buf);
    let upstream = Upstream::with_tls_loading(
        move || match tls::upstream_client_config(&upstream_settings, apiserver_ca.as_deref()) {
            Ok(loaded) => {
                if loaded.root_count == 0 && !loaded.insecure {
                    warn!("no trusted roots for upstream TLS: https targets will fail verification; mount a CA bundle and set SSL_CERT_FILE, or pass --upstream-ca-file");
                }
                Some(loaded.client_config)
            }
            Err(e) => {
                // Only a file that changed since the check above can get here.
                warn!("upstream TLS unavailable, https targets will get 502 error=\"{e}\"");
                None
            }
        },
        config.timeouts.upstream_connect,
        config.timeouts.upstream_idle,
    );

    let mut listeners = Vec::new();
    let mut listener_certificate = None;
    if let Some(addr) = config.insecure_listen {
        let listener = bind("--insecure-listen-address", addr).await?;
        listeners.push((listener, None));
    }
    if let Some(addr) = config.secure_listen {
        let listener = bind("--secure-listen-address", addr).await?;
        let tls = tls::listener_server_config(&config.listener_tls, now).map_err(AppError::Tls)?;
        if tls.generated {
            info!("generated a self-signed certificate for the TLS listener");
        }
        listener_certificate = Some(tls.certificate);
        let acceptor = futures_rustls::TlsAcceptor::from(tls.server_config);
        listeners.push((listener, Some(acceptor)));
    }

    let mut insecure_addr = None;
    let mut secure_addr = None;
    for (listener, tls) in &listeners {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        upstream.add_own_addr(addr);
        if tls.is_some() {
            secure_addr = Some(addr);
        } else {
            insecure_addr = Some(addr);
        }
    }

    let metrics_listener = match config.serving.metrics_listen {
        Some(addr) => Some(bind("--metrics-listen-address", addr).await?),
        None => None,
    };
    warn_if_exposed(config, &listeners);

    let context = Arc::new(ProxyContext {
        audience_parameter: config.audience_parameter.clone(),
        policy: config.policy.clone(),
        tokens,
        upstream,
        interception: Some(Interception::new(Arc::new(leaf_config))),
        timeouts: config.timeouts.clone(),
        credentials: config.serving.proxy_credentials.clone(),
        metrics: Metrics::default(),
        health: Health::default(),
    });

    let mut tasks = Vec::new();
    let permits = ConnectionPermits::new(config.serving.max_connections);
    for (listener, tls) in listeners {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!("listening addr={addr} scheme={scheme}");
        tasks.push(async_std::task::spawn(proxy::serve(
            context.clone(),
            listener,
            tls,
            permits.clone(),
        )));
    }
    tasks.push(async_std::task::spawn(reap_idle_connections(
        context.clone(),
    )));
    let mut metrics_addr = None;
    if let Some(listener) = metrics_listener {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        info!("serving health and metrics addr={addr}");
        metrics_addr = Some(addr);
        let state = Arc::new(OpsState {
            proxy: context.clone(),
            interceptor,
        });
        tasks.push(async_std::task::spawn(ops::serve(listener, state)));
    }
    context.health.set_ready();

    Ok(RunningProxy {
        insecure_addr,
        secure_addr,
        ca_pem,
        ca_file: config.ca_file_destination.clone(),
        listener_certificate,
        metrics_addr,
        context,
        tasks,
    })
}

/// Closes expired idle upstream connections, and after a burst of traffic hands memory the
/// allocator keeps back to the system, so that an idle sidecar returns to its idle size.
async fn reap_idle_connections(context: Arc<ProxyContext>) {
    let interval = context.upstream.reap_interval();
    loop {
        async_std::task::sleep(interval).await;
        let closed = context.upstream.close_expired();
        if closed > 0 {
            debug!("closed idle upstream connections count={closed}");
            release_free_memory();
        }
    }
}

/// glibc keeps freed memory for reuse; trimming returns the free pages to the system. Other
/// allocators (musl's) return memory on their own.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no arguments
    // that could be invalid (0 keeps no extra padding).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Anyone who reaches a proxy listener can mint tokens: say so when a listener is reachable
/// from outside the machine and nothing else limits what it hands out.
fn warn_if_exposed(
    config: &Config,
    listeners: &[(TcpListener, Option<futures_rustls::TlsAcceptor>)],
) {
    if config.serving.proxy_credentials.is_some() || config.policy.is_restricted() {
        return;
    }
    for (listener, _) in listeners {
        if let Ok(addr) = listener.local_addr() {
            if !addr.ip().is_loopback() {
                warn!("listening beyond loopback without --proxy-credentials-file or --allowed-audiences: anyone who can connect can obtain tokens for any audience addr={addr}");
            }
        }
    }
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { flag, addr, source })
}

/// Variable read by async-std when its executor starts: the number of worker threads.
const EXECUTOR_THREADS_ENV: &str = "ASYNC_STD_THREAD_COUNT";

/// Runs the executor on one thread unless the operator chose otherwise. A sidecar serves one
/// client: one thread that also drives the reactor saves a thread hand-off on every wake-up
/// (about a third of the CPU per request over a single reused tunnel, measured), and costs
/// throughput only where many connections are busy at once. TokenRequests run on their own
/// blocking threads either way.
fn use_one_executor_thread() {
    if std::env::var_os(EXECUTOR_THREADS_ENV).is_none() {
        // Before any other thread exists (see `run`), so nothing reads the environment
        // concurrently.
        std::env::set_var(EXECUTOR_THREADS_ENV, "1");
    }
}

/// glibc gives each thread that allocates its own arena, and keeps them: every TokenRequest
/// thread would leave a few hundred KiB behind. The proxy allocates almost only on its one
/// executor thread, so a single shared arena costs no contention. Other allocators (musl's)
/// have no arenas.
fn use_one_allocator_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Runs the proxy until SIGTERM or SIGINT. Blocks the calling thread, which should be the
/// main thread before any other thread was started (see [`crate::signal`]).
pub fn run(config: Config) -> Result<(), AppError> {
    use_one_executor_thread();
    use_one_allocator_arena();
    let signals = TerminationSignals::block().map_err(AppError::Signals)?;
    async_std::task::block_on(async {
        info!(
            "starting version={} namespace={} service_account={} apiserver={}",
            env!("CARGO_PKG_VERSION"),
            config.api.namespace,
            config.api.service_account,
            config.api.server
        );
        let running = start(&config).await?;
        info!("wrote CA certificate path={}", running.ca_file.display());

        // One thread takes the signals for the whole process and forwards them.
        let (signal_tx, signal_rx) = async_std::channel::unbounded();
        std::thread::spawn(move || loop {
            let received = signals.wait();
            if signal_tx.send_blocking(received).is_err() {
                return;
            }
        });

        match signal_rx.recv().await {
            Ok(Ok(name)) => info!("shutting down signal={name}"),
            Ok(Err(e)) => warn!("waiting for signals failed, shutting down error=\"{e}\""),
            Err(_) => warn!("signal thread ended, shutting down"),
        }
        let grace = config.serving.shutdown_grace_period;
        let drained = proxy::first_of(async { Some(running.drain(grace).await) }, async {
            let second = signal_rx.recv().await;
            if let Ok(Ok(name)) = second {
                info!("second signal, exiting at once signal={name}");
            }
            None
        })
        .await;
        match drained {
            Some(true) => info!("all connections closed, exiting"),
            Some(false) => warn!(
                "shutdown grace period over, exiting with requests still in flight grace_s={}",
                grace.as_secs_f32()
            ),
            None => {}
        }
        Ok(())
    })
}
