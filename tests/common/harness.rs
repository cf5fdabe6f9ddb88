//! Starts the real proxy in-process against the fake API server, and builds clients that use
//! it the way Prometheus and curl do.

use std::net::SocketAddr;
use std::time::Duration;

use kube_audience_proxy::app::{self, RunningProxy};
use kube_audience_proxy::config::{Config, ListenerTls, ServingSettings, Timeouts, UpstreamTls};
use kube_audience_proxy::policy::AudiencePolicy;

use super::apiserver::FakeApiServer;
use super::tempdir::TempDir;

/// A proxy running in this test process.
pub struct TestProxy {
    pub running: RunningProxy,
    pub dir: TempDir,
}

impl TestProxy {
    pub fn addr(&self) -> SocketAddr {
        self.running.insecure_addr.expect("no plain listener")
    }

    /// `http://127.0.0.1:PORT`, for `proxy_url`-style settings.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A ureq agent that sends every request through this proxy and trusts only its CA.
    pub fn agent(&self) -> ureq::Agent {
        let proxy = ureq::Proxy::new(&self.url()).unwrap();
        let ca = ureq::tls::Certificate::from_pem(self.running.ca_pem.as_bytes()).unwrap();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
            .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .build();
        ureq::Agent::config_builder()
            .proxy(Some(proxy))
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }
}

/// A configuration that talks to `api`, listens on a free loopback port and writes its CA
/// into a fresh directory.
pub fn test_config(api: &FakeApiServer, dir: &TempDir) -> Config {
    Config {
        insecure_listen: Some("127.0.0.1:0".parse().unwrap()),
        secure_listen: None,
        listener_tls: ListenerTls::default(),
        api: api.api_settings(),
        audience_parameter: "kubernetes-audience".into(),
        policy: AudiencePolicy::Any,
        token_expiration_seconds: 3600,
        ca_file_destination: dir.join("ca.crt"),
        upstream_tls: UpstreamTls::default(),
        timeouts: Timeouts {
            client_head: Duration::from_secs(5),
            client_idle: Duration::from_secs(10),
            upstream_connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(10),
            ..Timeouts::default()
        },
        serving: ServingSettings::default(),
    }
}

/// Starts a proxy for `api`, after `adjust` has changed the test configuration.
pub async fn start_proxy(api: &FakeApiServer, adjust: impl FnOnce(&mut Config)) -> TestProxy {
    let dir = TempDir::new();
    let mut config = test_config(api, &dir);
    adjust(&mut config);
    let running = app::start(&config).await.expect("the proxy starts");
    TestProxy { running, dir }
}
