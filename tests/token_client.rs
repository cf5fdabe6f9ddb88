//! The TokenRequest client against the fake API server over real TLS: success, every kind
//! of API failure, TLS and transport failures, and rotation of the mounted API token.

mod common;

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use common::apiserver::{audience_of, unrelated_ca_pem, FakeApiServer};
use common::tempdir::TempDir;
use kube_audience_proxy::config::PemSource;
use kube_audience_proxy::kube::{KubeError, TokenClient};
use kube_audience_proxy::token::TokenSource;

const MOUNTED: &str = "fake-mounted-api-token-0";

fn client(server: &FakeApiServer) -> TokenClient {
    TokenClient::new(
        &server.api_settings(),
        3600,
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .expect("client")
}

/// Runs the blocking client call off the test thread, bounded by the test timeout.
fn request(
    client: &std::sync::Arc<TokenClient>,
    audience: &str,
) -> Result<kube_audience_proxy::token::IssuedToken, KubeError> {
    let (client, audience) = (client.clone(), audience.to_string());
    common::block_on(common::blocking(move || client.request_token(&audience)))
}

/// The error's whole chain, as main prints it.
fn chain(error: &KubeError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn assert_no_secrets(error: &KubeError) {
    let (display, debug) = (chain(error), format!("{error:?}"));
    for secret in [MOUNTED, "fake-token."] {
        assert!(!display.contains(secret), "{display}");
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn issues_a_token_for_the_audience() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let client = std::sync::Arc::new(client(&server));

    let before = SystemTime::now();
    let issued = request(&client, "https://vault.example").unwrap();

    assert_eq!(
        audience_of(issued.token.expose()),
        Some("https://vault.example")
    );
    let lifetime = issued.expires_at.duration_since(before).unwrap();
    assert!(lifetime > Duration::from_secs(3500) && lifetime <= Duration::from_secs(3601));
    assert!(!format!("{issued:?}").contains("fake-token."));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(requests[0]["kind"], "TokenRequest");
    assert_eq!(
        requests[0]["spec"]["audiences"],
        serde_json::json!(["https://vault.example"])
    );
    assert_eq!(requests[0]["spec"]["expirationSeconds"], 3600);
    assert!(requests[0]["spec"].get("boundObjectRef").is_none());
}

#[test]
fn binds_tokens_to_the_pod_when_asked() {
    let server = FakeApiServer::builder().start();
    server.add_pod("web-0", "0000-fake-uid");
    let client = std::sync::Arc::new(client(&server).with_bound_pod("web-0", "0000-fake-uid"));
    request(&client, "a").unwrap();
    assert_eq!(
        server.bound_object_refs(),
        vec![
            serde_json::json!({"kind": "Pod", "apiVersion": "v1", "name": "web-0", "uid": "0000-fake-uid"})
        ]
    );
}

#[test]
fn api_failures_surface_code_reason_and_message() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let client = std::sync::Arc::new(client(&server));

    let cases = [
        (403, "403 Forbidden: serviceaccounts \"prometheus\" is forbidden: User \"system:serviceaccount:monitoring:prometheus\" cannot create resource"),
        (404, "404 NotFound: serviceaccounts \"prometheus\" not found"),
        (422, "422 Invalid: TokenRequest.authentication.k8s.io \"prometheus\" is invalid: spec.expirationSeconds"),
        (500, "500 InternalError: Internal error occurred"),
    ];
    for (status, expected) in cases {
        server.fail_next(1, status);
        let err = request(&client, "vault").unwrap_err();
        let KubeError::Status { http_status, .. } = &err else {
            panic!("{status}: not a Status error: {err:?}");
        };
        assert_eq!(*http_status, status);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "token request for audience \"vault\" failed: {expected}"
            )),
            "{text}"
        );
        assert_eq!(err.is_retryable(), status >= 500, "{status}");
        assert_no_secrets(&err);
    }
    assert_eq!(server.calls_for("vault"), 4);
}

#[test]
fn wrong_service_account_and_short_expiry_are_refused_by_the_api() {
    let server = FakeApiServer::builder().start();
    let mut settings = server.api_settings();
    settings.service_account = "nobody".into();
    let client = std::sync::Arc::new(
        TokenClient::new(
            &settings,
            60,
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let err = request(&client, "a").unwrap_err();
    assert_eq!(
        err.to_string(),
        "token request for audience \"a\" failed: 404 NotFound: serviceaccounts \"nobody\" not found"
    );

    let client = std::sync::Arc::new(
        TokenClient::new(
            &server.api_settings(),
            60,
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let err = request(&client, "a").unwrap_err();
    assert!(err.to_string().contains("422 Invalid: "), "{err}");
    assert!(
        err.to_string()
            .contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
}

#[test]
fn a_certificate_from_another_ca_is_a_tls_error() {
    let server = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let other_ca = dir.join("other-ca.crt");
    std::fs::write(&other_ca, unrelated_ca_pem()).unwrap();
    let mut settings = server.api_settings();
    settings.ca = Some(PemSource::File(other_ca));
    let client = std::sync::Arc::new(
        TokenClient::new(
            &settings,
            3600,
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
        .unwrap(),
    );

    let err = request(&client, "a").unwrap_err();
    assert!(matches!(err, KubeError::Tls { .. }), "{err:?}");
    assert!(err.source().is_some());
    assert!(
        chain(&err)
            .starts_with("token request for audience \"a\" failed: tls with https://127.0.0.1:"),
        "{}",
        chain(&err)
    );
    assert_no_secrets(&err);
    assert_eq!(server.calls_for("a"), 0);
}

#[test]
fn a_ca_file_without_certificates_is_refused_at_start() {
    let server = FakeApiServer::builder().start();
    let dir = TempDir::new();
    let empty = dir.join("empty.crt");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let mut settings = server.api_settings();
    settings.ca = Some(PemSource::File(empty.clone()));
    let err = TokenClient::new(
        &settings,
        3600,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("ca file {} holds no certificate", empty.display())
    );
}

#[test]
fn a_stopped_api_server_is_a_transport_error_until_it_is_back() {
    let server = FakeApiServer::builder().start();
    let client = std::sync::Arc::new(client(&server));
    request(&client, "a").unwrap();

    server.stop();
    let err = request(&client, "a").unwrap_err();
    assert!(
        matches!(err, KubeError::Connect { .. } | KubeError::Transport { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.source().is_some());
    assert_no_secrets(&err);

    server.restart();
    request(&client, "a").unwrap();
    assert_eq!(server.calls_for("a"), 2);
}

#[test]
fn a_rotated_mounted_token_is_picked_up_after_a_401() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let client = std::sync::Arc::new(client(&server));
    request(&client, "a").unwrap();

    // The cached copy is younger than a minute, so the first attempt uses the old value,
    // gets 401, and the retry reads the file again.
    server.rotate_mounted_token("fake-mounted-api-token-1");
    request(&client, "a").unwrap();
    assert_eq!(server.calls_for("a"), 3);

    // Now in memory: one call.
    request(&client, "a").unwrap();
    assert_eq!(server.calls_for("a"), 4);
}

#[test]
fn a_mounted_token_older_than_the_reread_interval_is_read_again() {
    let server = FakeApiServer::builder().start();
    let client = std::sync::Arc::new(client(&server).with_token_file_reread(Duration::ZERO));
    request(&client, "a").unwrap();
    server.rotate_mounted_token("fake-mounted-api-token-1");
    request(&client, "a").unwrap();
    assert_eq!(server.calls_for("a"), 2);
}

#[test]
fn a_persistent_401_is_reported_after_one_retry() {
    let server = FakeApiServer::builder().start();
    let client = std::sync::Arc::new(client(&server));
    server.fail_all(401);
    let err = request(&client, "a").unwrap_err();
    assert_eq!(
        err.to_string(),
        "token request for audience \"a\" failed: 401 Unauthorized: Unauthorized"
    );
    assert_eq!(server.calls_for("a"), 2);
    assert_no_secrets(&err);
}

#[test]
fn an_empty_mounted_token_file_names_the_path() {
    let server = FakeApiServer::builder().start();
    let client = std::sync::Arc::new(client(&server));
    std::fs::write(server.token_file(), "\n").unwrap();
    let err = request(&client, "a").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("api token file {} is empty", server.token_file().display())
    );
    assert_eq!(server.total_calls(), 0);
}
