//! Fakes and helpers shared by the integration tests: a fake Kubernetes API server, a
//! temporary directory, logging set-up and timeouts. Not every test binary uses all of it.
#![allow(dead_code)]

pub mod apiserver;
pub mod harness;
pub mod target;
pub mod tempdir;
pub mod tls_target;

use std::future::Future;
use std::time::Duration;

/// Upper bound on any single await in a test; generous, as the machine is shared.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `log` output to the test harness (shown for failing tests, `RUST_LOG` to filter).
pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Awaits `future`, panicking if it takes longer than [`TEST_TIMEOUT`].
pub async fn with_timeout<F: Future>(future: F) -> F::Output {
    async_std::future::timeout(TEST_TIMEOUT, future)
        .await
        .expect("test step timed out")
}

/// Runs `future` to completion on this thread, with [`TEST_TIMEOUT`].
pub fn block_on<F: Future>(future: F) -> F::Output {
    async_std::task::block_on(with_timeout(future))
}

/// Runs blocking `work` on a blocking thread, with [`TEST_TIMEOUT`].
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    with_timeout(async_std::task::spawn_blocking(work)).await
}
