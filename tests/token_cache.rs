//! The token cache over the real TokenRequest client and the fake API server: request
//! counts, single flight, refresh of short-lived tokens, isolation between audiences, and
//! behaviour when the API fails.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::{audience_of, FakeApiServer};
use kube_audience_proxy::kube::{KubeError, TokenClient};
use kube_audience_proxy::token::{CacheSettings, TokenCache};

fn cache_for(server: &FakeApiServer) -> Arc<TokenCache> {
    let client = TokenClient::new(
        &server.api_settings(),
        3600,
        Duration::from_secs(5),
        Duration::from_secs(20),
    )
    .expect("client");
    Arc::new(TokenCache::new(Arc::new(client), CacheSettings::default()))
}

#[test]
fn sequential_gets_make_one_request() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let cache = cache_for(&server);
    common::block_on(async {
        let first = cache.get("vault").await.unwrap();
        assert_eq!(audience_of(first.expose()), Some("vault"));
        for _ in 0..49 {
            assert_eq!(cache.get("vault").await.unwrap(), first);
        }
    });
    assert_eq!(server.calls_for("vault"), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.failures), (49, 1, 0));
}

#[test]
fn concurrent_first_gets_make_one_request() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    // The delay keeps the request in flight while all callers arrive.
    server.set_delay("vault", Duration::from_millis(500));
    let cache = cache_for(&server);
    let tokens = common::block_on(async {
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let cache = cache.clone();
                async_std::task::spawn(async move { cache.get("vault").await })
            })
            .collect();
        let mut tokens = HashSet::new();
        for task in tasks {
            tokens.insert(task.await.unwrap().expose().to_string());
        }
        tokens
    });
    assert_eq!(tokens.len(), 1);
    assert_eq!(server.calls_for("vault"), 1);
}

#[test]
fn short_lived_tokens_are_refreshed_without_failures() {
    common::init_logging();
    let server = FakeApiServer::builder()
        .token_lifetime(Duration::from_secs(3))
        .start();
    let cache = cache_for(&server);
    let tokens = common::block_on(async {
        let mut tokens = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            let token = cache
                .get("vault")
                .await
                .expect("no failure while refreshing");
            tokens.push(token.expose().to_string());
            async_std::task::sleep(Duration::from_millis(50)).await;
        }
        tokens
    });
    let distinct: HashSet<_> = tokens.iter().collect();
    assert!(
        distinct.len() >= 3,
        "only {} tokens over 8 s",
        distinct.len()
    );
    // Refreshes happen once per token, not per call.
    assert!(server.calls_for("vault") <= distinct.len() + 1);
    assert!(tokens.len() > 4 * server.calls_for("vault"));
    assert_eq!(cache.stats().failures, 0);
}

#[test]
fn a_slow_audience_does_not_delay_a_cached_one() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    let cache = cache_for(&server);
    common::block_on(async {
        let fast = cache.get("fast").await.unwrap();
        server.set_delay("slow", Duration::from_secs(5));

        let slow_done = Arc::new(AtomicBool::new(false));
        let slow = {
            let (cache, slow_done) = (cache.clone(), slow_done.clone());
            async_std::task::spawn(async move {
                let token = cache.get("slow").await;
                slow_done.store(true, Ordering::SeqCst);
                token
            })
        };
        while server.calls_for("slow") == 0 {
            async_std::task::sleep(Duration::from_millis(10)).await;
        }

        assert_eq!(cache.get("fast").await.unwrap(), fast);
        assert!(
            !slow_done.load(Ordering::SeqCst),
            "the cached audience was answered only after the slow one"
        );
        let slow = slow.await.unwrap();
        assert_eq!(audience_of(slow.expose()), Some("slow"));
    });
}

#[test]
fn a_failing_refresh_keeps_the_old_token_until_it_expires() {
    common::init_logging();
    let server = FakeApiServer::builder()
        .token_lifetime(Duration::from_secs(3))
        .start();
    let cache = cache_for(&server);
    common::block_on(async {
        let first = cache.get("vault").await.unwrap();
        let issued_at = Instant::now();
        server.fail_all(500);

        let error = loop {
            match cache.get("vault").await {
                Ok(token) => assert_eq!(token, first, "a token appeared while the API fails"),
                Err(error) => break error,
            }
            assert!(
                issued_at.elapsed() < Duration::from_secs(20),
                "never expired"
            );
            async_std::task::sleep(Duration::from_millis(50)).await;
        };
        // Served past the refresh point (80% of 3 s), i.e. refresh failures were hidden.
        assert!(issued_at.elapsed() >= Duration::from_millis(2400));
        assert!(server.calls_for("vault") >= 2, "no refresh was attempted");
        assert!(matches!(
            error.kube_error(),
            KubeError::Status {
                http_status: 500,
                ..
            }
        ));
        assert_eq!(error.audience(), "vault");
    });
}

#[test]
fn a_failing_first_request_is_remembered() {
    common::init_logging();
    let server = FakeApiServer::builder().start();
    server.fail_all(403);
    let cache = cache_for(&server);
    common::block_on(async {
        let first = cache.get("vault").await.unwrap_err();
        assert!(!first.is_remembered());
        assert!(first
            .kube_error()
            .to_string()
            .contains("403 Forbidden: serviceaccounts \"prometheus\" is forbidden"));
        for _ in 0..20 {
            let again = cache.get("vault").await.unwrap_err();
            assert!(again.is_remembered());
            assert_eq!(again.kube_error().short_reason(), "403 Forbidden");
        }
    });
    assert_eq!(server.calls_for("vault"), 1);
    assert_eq!(cache.stats().failures, 1);
}

#[test]
fn an_api_outage_is_bridged_by_the_current_token() {
    common::init_logging();
    let server = FakeApiServer::builder()
        .token_lifetime(Duration::from_secs(6))
        .start();
    let cache = cache_for(&server);
    common::block_on(async {
        let first = cache.get("vault").await.unwrap();
        server.stop();

        // The refresh (due after 4.8 s) fails against the stopped server; callers do not see it.
        while cache.stats().failures == 0 {
            assert_eq!(cache.get("vault").await.unwrap(), first);
            async_std::task::sleep(Duration::from_millis(50)).await;
        }
        server.restart();

        let started = Instant::now();
        loop {
            if let Ok(token) = cache.get("vault").await {
                if token != first {
                    assert_eq!(audience_of(token.expose()), Some("vault"));
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no new token after restart"
            );
            async_std::task::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(server.calls_for("vault"), 2);
}
