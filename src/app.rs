//! Wiring: builds the token cache, TLS state and listeners from a [`Config`] and runs them.
//!
//! [`start`] does everything that can fail at start-up, so that a bad file or a port in use
//! is reported before the first request, and returns a handle with the bound addresses;
//! [`run`] adds signal handling around it for the binary.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_std::net::TcpListener;
use async_std::task::JoinHandle;
use log::{info, warn};

use crate::config::Config;
use crate::kube::{KubeError, TokenClient};
use crate::proxy::{self, Interception, ProxyContext};
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
    pub ca_file: PathBuf,
    context: Arc<ProxyContext>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Shared state, for tests and metrics.
    pub fn context(&self) -> &Arc<ProxyContext> {
        &self.context
    }

    /// Stops accepting connections. Connections already accepted finish on their own.
    pub async fn stop(self) {
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

    let upstream_tls = tls::upstream_client_config(&config.upstream_tls, config.api.ca_file())
        .map_err(AppError::Tls)?;
    if upstream_tls.insecure {
        warn!("upstream certificates are not verified (--insecure-skip-tls-verify): any target can impersonate any other");
    } else if upstream_tls.root_count == 0 {
        warn!("no trusted roots for upstream TLS: https targets will fail verification; mount a CA bundle and set SSL_CERT_FILE, or pass --upstream-ca-file");
    }
    let upstream = Upstream::new(
        Some(upstream_tls.client_config),
        config.timeouts.upstream_connect,
        config.timeouts.upstream_idle,
    );

    let mut listeners = Vec::new();
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

    let context = Arc::new(ProxyContext {
        audience_parameter: config.audience_parameter.clone(),
        policy: config.policy.clone(),
        tokens,
        upstream,
        interception: Some(Interception::new(Arc::new(leaf_config))),
        timeouts: config.timeouts.clone(),
    });

    let mut tasks = Vec::new();
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
        )));
    }

    Ok(RunningProxy {
        insecure_addr,
        secure_addr,
        ca_pem,
        ca_file: config.ca_file_destination.clone(),
        context,
        tasks,
    })
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { flag, addr, source })
}

/// Runs the proxy until SIGTERM or SIGINT. Blocks the calling thread, which should be the
/// main thread before any other thread was started (see [`crate::signal`]).
pub fn run(config: Config) -> Result<(), AppError> {
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

        let signal = async_std::task::spawn_blocking(move || signals.wait()).await;
        match signal {
            Ok(name) => info!("shutting down signal={name}"),
            Err(e) => warn!("waiting for signals failed, shutting down error=\"{e}\""),
        }
        running.stop().await;
        Ok(())
    })
}
