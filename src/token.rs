//! Bound ServiceAccount tokens and the per-audience cache in front of the TokenRequest API.
//!
//! [`TokenCache`] decides when to ask for a token and shares one answer among all callers:
//! tokens are reused until 80% of their lifetime has passed, then refreshed in the background
//! while the current one keeps being served. It does not talk HTTP itself; a [`TokenSource`]
//! (in production [`crate::kube::TokenClient`]) does, on a blocking thread.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_std::channel::{Receiver, Sender};

use crate::kube::KubeError;

/// A bearer token. Its `Debug` prints the length only and it has no `Display`: the value
/// leaves this type in exactly one place, [`Token::expose`], where the header is built.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// Wraps a token value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Token(value.into())
    }

    /// The raw value, for building an `Authorization` header. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes redacted>)", self.0.len())
    }
}

/// A token as the API server issued it, with the expiry it announced.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Token,
    /// `status.expirationTimestamp` of the TokenRequest.
    pub expires_at: SystemTime,
}

/// Something that can mint a token for an audience. Blocking: the cache calls it on a
/// blocking thread. The TokenRequest client implements it; tests can substitute their own.
pub trait TokenSource: Send + Sync + 'static {
    /// Asks for a new token for `audience`; fails as the TokenRequest fails.
    fn request_token(&self, audience: &str) -> Result<IssuedToken, crate::kube::KubeError>;
}

/// Share of a token's lifetime (from receipt to `expirationTimestamp`) after which it is
/// refreshed in the background: 80%, as a percentage.
pub const REFRESH_AFTER_PERCENT: u32 = 80;

/// A token is no longer handed out this long before its announced expiry, to allow for the
/// request's time in flight and for clock differences with the target. Capped at a tenth of
/// the token's lifetime so that short-lived tokens stay usable.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// A failed request that left an audience without a usable token is remembered this long:
/// callers in that window get the same error without a new API call, so a broken RBAC
/// binding does not turn every proxied request into a TokenRequest.
pub const FAILURE_TTL: Duration = Duration::from_secs(5);

/// First wait before retrying a failed background refresh; doubles on each failure.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);

/// Longest wait between retries of a failed background refresh.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// At most this many audiences are cached; past it the least recently used one is dropped.
/// A proxy serves a handful of audiences, so this only bounds memory against odd clients.
pub const MAX_AUDIENCES: usize = 1024;

/// Where the cache reads the time. Injectable so that tests can move it.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Tunables of a [`TokenCache`]; [`Default`] uses the constants of this module and the
/// system clock.
#[derive(Clone)]
pub struct CacheSettings {
    /// See [`MAX_AUDIENCES`].
    pub max_audiences: usize,
    /// See [`FAILURE_TTL`].
    pub failure_ttl: Duration,
    /// See [`EXPIRY_MARGIN`].
    pub expiry_margin: Duration,
    /// See [`RETRY_INITIAL`].
    pub retry_initial: Duration,
    /// See [`RETRY_MAX`].
    pub retry_max: Duration,
    /// The time source.
    pub clock: Clock,
}

impl CacheSettings {
    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_audiences: MAX_AUDIENCES,
            failure_ttl: FAILURE_TTL,
            expiry_margin: EXPIRY_MARGIN,
            retry_initial: RETRY_INITIAL,
            retry_max: RETRY_MAX,
            clock: Arc::new(SystemTime::now),
        }
    }
}

impl fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSettings")
            .field("max_audiences", &self.max_audiences)
            .field("failure_ttl", &self.failure_ttl)
            .field("expiry_margin", &self.expiry_margin)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .finish_non_exhaustive()
    }
}

/// Counters since the cache was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Calls answered from the cache without waiting.
    pub hits: u64,
    /// Calls that had to wait for a TokenRequest (or got a remembered failure).
    pub misses: u64,
    /// Background refreshes started while a valid token was still being served.
    pub refreshes: u64,
    /// TokenRequests that succeeded.
    pub successes: u64,
    /// TokenRequests that failed.
    pub failures: u64,
    /// Audiences currently held.
    pub entries: usize,
}

/// No token could be had for an audience. The reason is the [`KubeError`] in `source()`.
#[derive(Debug, Clone)]
pub struct TokenError {
    audience: String,
    error: KubeError,
    /// Set when the error is a remembered one: how long until the next attempt is allowed.
    retry_in: Option<Duration>,
}

impl TokenError {
    /// The audience no token could be had for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The failed TokenRequest.
    pub fn kube_error(&self) -> &KubeError {
        &self.error
    }

    /// True when this is a remembered failure and no request was made for this call.
    pub fn is_remembered(&self) -> bool {
        self.retry_in.is_some()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no token for audience {:?}", self.audience)?;
        if let Some(retry_in) = self.retry_in {
            write!(
                f,
                " (recent failure remembered, next attempt in {}s)",
                retry_in.as_secs_f64().ceil() as u64
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Per-audience cache of bound tokens in front of a [`TokenSource`].
///
/// A hit takes one short lock and does no I/O. Concurrent misses for one audience share a
/// single request; requests for other audiences proceed independently. A token is fresh
/// until [`REFRESH_AFTER_PERCENT`] of its lifetime has passed; the next call after that
/// starts one background refresh and still gets the current token, which is served until
/// [`EXPIRY_MARGIN`] before it expires. A failed refresh is retried with backoff
/// ([`RETRY_INITIAL`] doubling to [`RETRY_MAX`]) while the current token lasts. An audience
/// without a usable token whose request failed gets that error for [`FAILURE_TTL`] before
/// the next request is made. At most [`MAX_AUDIENCES`] audiences are held.
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn TokenSource>,
    settings: CacheSettings,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
    refreshes: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    /// Logical time of the latest use, for picking the least recently used entry.
    tick: u64,
}

struct Entry {
    current: Option<Held>,
    /// Present while a TokenRequest is in flight; closed (never sent on) when it ends, after
    /// the result has been stored in this entry.
    flight: Option<Receiver<()>>,
    /// The latest failed request, until a request succeeds.
    failure: Option<Failure>,
    /// Wait before the next background retry after a failed refresh.
    retry_delay: Duration,
    /// No background refresh is started before this.
    retry_not_before: Option<SystemTime>,
    last_used: u64,
}

struct Held {
    issued: IssuedToken,
    received_at: SystemTime,
}

struct Failure {
    error: KubeError,
    /// Until then, callers without a usable token get `error` and no request is made:
    /// [`FAILURE_TTL`] after a failed first request, the backoff time after a failed refresh.
    retry_at: SystemTime,
}

/// What one pass over an entry decided.
enum Step {
    Done(Result<Token, TokenError>),
    Wait(Receiver<()>),
}

impl TokenCache {
    /// Builds an empty cache over `source`.
    pub fn new(source: Arc<dyn TokenSource>, settings: CacheSettings) -> TokenCache {
        TokenCache {
            inner: Arc::new(Inner {
                source,
                settings,
                entries: Mutex::new(Entries::default()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                refreshes: AtomicU64::new(0),
                successes: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// A usable token for `audience`: from the cache, or from a TokenRequest that this call
    /// starts or joins.
    ///
    /// Fails when there is no usable token and the request fails, or failed less than
    /// [`FAILURE_TTL`] ago (then no new request is made).
    pub async fn get(&self, audience: &str) -> Result<Token, TokenError> {
        let mut waited = false;
        loop {
            let step = self.inner.step(audience, waited);
            match step {
                Step::Done(result) => return result,
                Step::Wait(flight) => {
                    if !waited {
                        self.inner.misses.fetch_add(1, Ordering::Relaxed);
                        log::debug!("token cache miss audience={audience}");
                    }
                    // Err only: the sender never sends, it closes when the flight is over.
                    let _ = flight.recv().await;
                    waited = true;
                }
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        let entries = self.inner.lock().map.len();
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            refreshes: self.inner.refreshes.load(Ordering::Relaxed),
            successes: self.inner.successes.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            entries,
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // The map stays consistent even if a holder panicked: every update is one assignment.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks at the entry once, under the lock, and says what the caller does next.
    /// `waited` is true once the caller has waited for a flight: it then takes that flight's
    /// outcome rather than starting another.
    fn step(self: &Arc<Self>, audience: &str, waited: bool) -> Step {
        let now = (self.settings.clock)();
        let mut entries = self.lock();
        let entry = self.entry(&mut entries, audience);

        if let Some(held) = &entry.current {
            let (received, expires) = (held.received_at, held.issued.expires_at);
            let usable = match freshness(received, expires, self.settings.expiry_margin, now) {
                // A token just fetched for a waiter is handed out even when its lifetime is
                // shorter than the margin; the waiter would otherwise start another request.
                Freshness::Expired => waited && entry.failure.is_none() && now < expires,
                _ => true,
            };
            if usable {
                let token = held.issued.token.clone();
                let refresh_due = freshness(received, expires, self.settings.expiry_margin, now)
                    == Freshness::RefreshDue;
                let retry_allowed = entry.retry_not_before.is_none_or(|at| now >= at);
                if refresh_due && retry_allowed && entry.flight.is_none() {
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    log::debug!(
                        "token refresh start audience={audience} expires_in_s={}",
                        secs_until(now, expires)
                    );
                    entry.flight = Some(self.start_flight(audience));
                }
                if !waited {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    log::debug!(
                        "token cache hit audience={audience} expires_in_s={}",
                        secs_until(now, expires)
                    );
                }
                return Step::Done(Ok(token));
            }
        }

        if let Some(flight) = &entry.flight {
            return Step::Wait(flight.clone());
        }

        if let Some(failure) = &entry.failure {
            let retry_at = failure.retry_at;
            if waited {
                return Step::Done(Err(TokenError {
                    audience: audience.to_string(),
                    error: failure.error.clone(),
                    retry_in: None,
                }));
            }
            if now < retry_at {
                self.misses.fetch_add(1, Ordering::Relaxed);
                log::debug!("token cache remembered failure audience={audience}");
                return Step::Done(Err(TokenError {
                    audience: audience.to_string(),
                    error: failure.error.clone(),
                    retry_in: Some(retry_at.duration_since(now).unwrap_or_default()),
                }));
            }
        }

        let flight = self.start_flight(audience);
        entry.flight = Some(flight.clone());
        Step::Wait(flight)
    }

    /// The entry for `audience`, created if needed (evicting the least recently used idle
    /// entry when full), marked as just used.
    fn entry<'a>(&self, entries: &'a mut Entries, audience: &str) -> &'a mut Entry {
        entries.tick += 1;
        let tick = entries.tick;
        if !entries.map.contains_key(audience) && entries.map.len() >= self.settings.max_audiences {
            let victim = entries
                .map
                .iter()
                .filter(|(_, e)| e.flight.is_none())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                log::debug!("token cache evict audience={victim}");
                entries.map.remove(&victim);
            }
        }
        let entry = entries
            .map
            .entry(audience.to_string())
            .or_insert_with(|| Entry {
                current: None,
                flight: None,
                failure: None,
                retry_delay: self.settings.retry_initial,
                retry_not_before: None,
                last_used: tick,
            });
        entry.last_used = tick;
        entry
    }

    /// Starts a TokenRequest on a blocking thread; the returned receiver closes when its
    /// result is in the entry.
    fn start_flight(self: &Arc<Self>, audience: &str) -> Receiver<()> {
        let (done, flight) = async_std::channel::bounded(1);
        let guard = FlightGuard {
            inner: Arc::clone(self),
            audience: audience.to_string(),
            done: Some(done),
        };
        async_std::task::spawn_blocking(move || {
            let result = guard.inner.source.request_token(&guard.audience);
            guard.inner.finish(&guard.audience, result);
        });
        flight
    }

    /// Stores the outcome of a flight and ends it.
    fn finish(&self, audience: &str, result: Result<IssuedToken, KubeError>) {
        let now = (self.settings.clock)();
        let result = match result {
            Ok(issued) if issued.expires_at <= now => Err(KubeError::ExpiredOnArrival {
                audience: audience.to_string(),
            }),
            other => other,
        };

        let mut entries = self.lock();
        let Some(entry) = entries.map.get_mut(audience) else {
            return;
        };
        entry.flight = None;
        match result {
            Ok(issued) => {
                self.successes.fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "token refresh success audience={audience} expires_in_s={}",
                    secs_until(now, issued.expires_at)
                );
                entry.current = Some(Held {
                    issued,
                    received_at: now,
                });
                entry.failure = None;
                entry.retry_delay = self.settings.retry_initial;
                entry.retry_not_before = None;
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let serving_until = entry.current.as_ref().map(|held| {
                    usable_until(
                        held.received_at,
                        held.issued.expires_at,
                        self.settings.expiry_margin,
                    )
                });
                let retry_at = match serving_until {
                    Some(until) if now < until => {
                        let retry_at = retry_time(now, entry.retry_delay, until);
                        log::warn!(
                            "token refresh failed, keeping the current token until it expires audience={audience} expires_in_s={} retry_in_s={} error={}",
                            secs_until(now, until),
                            secs_until(now, retry_at),
                            error_chain(&error)
                        );
                        entry.retry_not_before = Some(retry_at);
                        entry.retry_delay =
                            next_backoff(entry.retry_delay, self.settings.retry_max);
                        retry_at
                    }
                    _ => {
                        log::debug!(
                            "token refresh failure audience={audience} error={}",
                            error_chain(&error)
                        );
                        now + self.settings.failure_ttl
                    }
                };
                entry.failure = Some(Failure { error, retry_at });
            }
        }
    }
}

/// Ends a flight even if the source panics: the entry forgets the flight, then the channel
/// closes (fields drop after `drop` runs), so waiters wake and try again.
struct FlightGuard {
    inner: Arc<Inner>,
    audience: String,
    done: Option<Sender<()>>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut entries = self.inner.lock();
            if let Some(entry) = entries.map.get_mut(&self.audience) {
                entry.flight = None;
            }
        }
        drop(self.done.take());
    }
}

/// Where a held token stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Still served, but a refresh should be under way.
    RefreshDue,
    /// Not served any more.
    Expired,
}

fn freshness(
    received_at: SystemTime,
    expires_at: SystemTime,
    margin: Duration,
    now: SystemTime,
) -> Freshness {
    if now >= usable_until(received_at, expires_at, margin) {
        Freshness::Expired
    } else if now >= refresh_due_at(received_at, expires_at) {
        Freshness::RefreshDue
    } else {
        Freshness::Fresh
    }
}

fn lifetime(received_at: SystemTime, expires_at: SystemTime) -> Duration {
    expires_at.duration_since(received_at).unwrap_or_default()
}

/// When [`REFRESH_AFTER_PERCENT`] of the lifetime has passed.
fn refresh_due_at(received_at: SystemTime, expires_at: SystemTime) -> SystemTime {
    received_at + lifetime(received_at, expires_at) * REFRESH_AFTER_PERCENT / 100
}

/// The end of serving: `margin` before expiry, the margin capped at a tenth of the lifetime.
fn usable_until(received_at: SystemTime, expires_at: SystemTime, margin: Duration) -> SystemTime {
    expires_at - margin.min(lifetime(received_at, expires_at) / 10)
}

fn next_backoff(delay: Duration, max: Duration) -> Duration {
    delay.saturating_mul(2).min(max)
}

/// The next retry after a failed refresh, never later than the end of serving.
fn retry_time(now: SystemTime, delay: Duration, serving_until: SystemTime) -> SystemTime {
    (now + delay).min(serving_until)
}

fn secs_until(now: SystemTime, then: SystemTime) -> u64 {
    then.duration_since(now).unwrap_or_default().as_secs()
}

/// `error: cause: cause`, for one log field.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::error::Error as _;
    use std::sync::atomic::AtomicUsize;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    /// A clock tests move by hand.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<SystemTime>>);

    impl FakeClock {
        fn new() -> Self {
            FakeClock(Arc::new(Mutex::new(at(0))))
        }
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
        fn clock(&self) -> Clock {
            let me = self.clone();
            Arc::new(move || me.now())
        }
    }

    /// Issues `fake-<audience>-<n>` tokens valid for `lifetime` by the fake clock.
    struct FakeSource {
        clock: FakeClock,
        lifetime: Mutex<Duration>,
        fail: Mutex<Option<u16>>,
        calls: AtomicUsize,
        /// Audiences whose requests block until released.
        gated: Mutex<HashSet<String>>,
        gate: (Mutex<bool>, std::sync::Condvar),
    }

    impl FakeSource {
        fn new(clock: &FakeClock, lifetime: Duration) -> Arc<Self> {
            Arc::new(FakeSource {
                clock: clock.clone(),
                lifetime: Mutex::new(lifetime),
                fail: Mutex::new(None),
                calls: AtomicUsize::new(0),
                gated: Mutex::new(HashSet::new()),
                gate: (Mutex::new(false), std::sync::Condvar::new()),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        fn fail_with(&self, status: Option<u16>) {
            *self.fail.lock().unwrap() = status;
        }
        fn hold(&self, audience: &str) {
            self.gated.lock().unwrap().insert(audience.to_string());
        }
        fn release(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }
    }

    impl TokenSource for FakeSource {
        fn request_token(&self, audience: &str) -> Result<IssuedToken, KubeError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.gated.lock().unwrap().contains(audience) {
                let mut open = self.gate.0.lock().unwrap();
                while !*open {
                    open = self.gate.1.wait(open).unwrap();
                }
            }
            if let Some(status) = *self.fail.lock().unwrap() {
                return Err(KubeError::Status {
                    audience: audience.to_string(),
                    http_status: status,
                    reason: "FakeFailure".into(),
                    message: Some("no".into()),
                });
            }
            Ok(IssuedToken {
                token: Token::new(format!("fake-{audience}-{n}")),
                expires_at: self.clock.now() + *self.lifetime.lock().unwrap(),
            })
        }
    }

    fn cache(source: &Arc<FakeSource>, clock: &FakeClock) -> TokenCache {
        TokenCache::new(
            source.clone(),
            CacheSettings::default().with_clock(clock.clock()),
        )
    }

    fn run<F: std::future::Future>(future: F) -> F::Output {
        async_std::task::block_on(async_std::future::timeout(Duration::from_secs(10), future))
            .expect("test timed out")
    }

    /// Waits until the source has seen `n` calls and the cache has no flight in progress.
    async fn settle(cache: &TokenCache, source: &FakeSource, n: usize) {
        loop {
            let idle = cache.inner.lock().map.values().all(|e| e.flight.is_none());
            if source.calls() >= n && idle {
                return;
            }
            async_std::task::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn refreshes_after_eighty_percent_and_expires_early() {
        let margin = Duration::from_secs(5);
        let (got, exp) = (at(0), at(3600));
        assert_eq!(refresh_due_at(got, exp), at(2880));
        assert_eq!(usable_until(got, exp, margin), at(3595));
        assert_eq!(freshness(got, exp, margin, at(2879)), Freshness::Fresh);
        assert_eq!(freshness(got, exp, margin, at(2880)), Freshness::RefreshDue);
        assert_eq!(freshness(got, exp, margin, at(3594)), Freshness::RefreshDue);
        assert_eq!(freshness(got, exp, margin, at(3595)), Freshness::Expired);
    }

    #[test]
    fn short_lifetimes_keep_a_proportional_margin() {
        let (got, exp) = (at(0), at(2));
        assert_eq!(
            usable_until(got, exp, EXPIRY_MARGIN),
            exp - Duration::from_millis(200)
        );
        assert_eq!(
            refresh_due_at(got, exp),
            at(0) + Duration::from_millis(1600)
        );
        // An expiry before receipt is expired at once rather than underflowing.
        assert_eq!(
            freshness(at(10), at(5), EXPIRY_MARGIN, at(10)),
            Freshness::Expired
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_past_expiry() {
        let max = Duration::from_secs(30);
        assert_eq!(
            next_backoff(Duration::from_secs(1), max),
            Duration::from_secs(2)
        );
        assert_eq!(next_backoff(Duration::from_secs(16), max), max);
        assert_eq!(next_backoff(max, max), max);
        assert_eq!(retry_time(at(0), Duration::from_secs(4), at(100)), at(4));
        assert_eq!(retry_time(at(98), Duration::from_secs(4), at(100)), at(100));
    }

    #[test]
    fn hits_reuse_one_token() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(3600));
        let cache = cache(&source, &clock);
        run(async {
            let first = cache.get("vault").await.unwrap();
            for _ in 0..9 {
                assert_eq!(cache.get("vault").await.unwrap(), first);
            }
        });
        assert_eq!(source.calls(), 1);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (9, 1, 1));
    }

    #[test]
    fn concurrent_misses_share_one_request() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(3600));
        source.hold("vault");
        let cache = Arc::new(cache(&source, &clock));
        let tokens = run(async {
            let tasks: Vec<_> = (0..20)
                .map(|_| {
                    let cache = cache.clone();
                    async_std::task::spawn(async move { cache.get("vault").await })
                })
                .collect();
            while cache.stats().misses < 20 {
                async_std::task::sleep(Duration::from_millis(5)).await;
            }
            source.release();
            let mut tokens = Vec::new();
            for task in tasks {
                tokens.push(task.await.unwrap());
            }
            tokens
        });
        assert_eq!(source.calls(), 1);
        assert!(tokens.iter().all(|t| t.expose() == "fake-vault-1"));
    }

    #[test]
    fn stale_tokens_are_served_while_one_refresh_runs() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(100));
        let cache = cache(&source, &clock);
        run(async {
            let first = cache.get("a").await.unwrap();
            clock.advance(Duration::from_secs(85));
            source.hold("a");
            for _ in 0..5 {
                assert_eq!(cache.get("a").await.unwrap(), first);
            }
            source.release();
            settle(&cache, &source, 2).await;
            assert_eq!(cache.get("a").await.unwrap().expose(), "fake-a-2");
        });
        assert_eq!(source.calls(), 2);
        assert_eq!(cache.stats().refreshes, 1);
    }

    #[test]
    fn a_slow_audience_does_not_hold_up_another() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(3600));
        let cache = Arc::new(cache(&source, &clock));
        run(async {
            cache.get("fast").await.unwrap();
            source.hold("slow");
            let slow = {
                let cache = cache.clone();
                async_std::task::spawn(async move { cache.get("slow").await })
            };
            while source.calls() < 2 {
                async_std::task::sleep(Duration::from_millis(5)).await;
            }
            // "slow" is blocked inside its request: "fast" must still answer, and a second
            // miss for a third audience must get its own request.
            cache.get("fast").await.unwrap();
            cache.get("third").await.unwrap();
            source.release();
            slow.await.unwrap();
        });
        assert_eq!(source.calls(), 3);
    }

    #[test]
    fn failed_refresh_keeps_serving_then_backs_off() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(100));
        let cache = cache(&source, &clock);
        run(async {
            let first = cache.get("a").await.unwrap();
            source.fail_with(Some(500));
            clock.advance(Duration::from_secs(85));
            assert_eq!(cache.get("a").await.unwrap(), first);
            settle(&cache, &source, 2).await;

            // Within the 1 s backoff: served, no new request.
            assert_eq!(cache.get("a").await.unwrap(), first);
            assert_eq!(source.calls(), 2);

            clock.advance(Duration::from_secs(1));
            assert_eq!(cache.get("a").await.unwrap(), first);
            settle(&cache, &source, 3).await;

            // Past the end of serving (95 s), with the last failure older than the TTL.
            clock.advance(Duration::from_secs(10));
            let err = cache.get("a").await.unwrap_err();
            assert!(!err.is_remembered());
            assert_eq!(err.kube_error().short_reason(), "500 FakeFailure");
        });
        assert_eq!(source.calls(), 4);
        assert_eq!(cache.stats().failures, 3);
    }

    #[test]
    fn expiry_after_a_failed_refresh_retries_at_once() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(100));
        let cache = cache(&source, &clock);
        run(async {
            let first = cache.get("a").await.unwrap();
            source.fail_with(Some(503));
            clock.advance(Duration::from_secs(94));
            assert_eq!(cache.get("a").await.unwrap(), first);
            settle(&cache, &source, 2).await;

            // The refresh failed 1.5 s ago, within FAILURE_TTL, but that window is only for
            // audiences that never had a token: the expired one is replaced right away.
            source.fail_with(None);
            clock.advance(Duration::from_millis(1500));
            assert_eq!(cache.get("a").await.unwrap().expose(), "fake-a-3");
        });
    }

    #[test]
    fn failed_first_requests_are_remembered_briefly() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(3600));
        source.fail_with(Some(403));
        let cache = cache(&source, &clock);
        run(async {
            let err = cache.get("a").await.unwrap_err();
            assert!(!err.is_remembered());
            assert_eq!(err.to_string(), "no token for audience \"a\"");
            assert!(err
                .source()
                .unwrap()
                .to_string()
                .contains("403 FakeFailure: no"));
            for _ in 0..5 {
                let err = cache.get("a").await.unwrap_err();
                assert!(err.is_remembered());
                assert_eq!(
                    err.to_string(),
                    "no token for audience \"a\" (recent failure remembered, next attempt in 5s)"
                );
            }
            assert_eq!(source.calls(), 1);

            clock.advance(FAILURE_TTL);
            source.fail_with(None);
            assert_eq!(cache.get("a").await.unwrap().expose(), "fake-a-2");
        });
        assert_eq!(source.calls(), 2);
    }

    #[test]
    fn tokens_expired_on_arrival_are_failures() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::ZERO);
        let cache = cache(&source, &clock);
        let err = run(cache.get("a")).unwrap_err();
        assert!(matches!(
            err.kube_error(),
            KubeError::ExpiredOnArrival { .. }
        ));
        assert_eq!(source.calls(), 1);
    }

    #[test]
    fn least_recently_used_audience_is_evicted() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(3600));
        let settings = CacheSettings {
            max_audiences: 2,
            ..CacheSettings::default()
        };
        let cache = TokenCache::new(source.clone(), settings.with_clock(clock.clock()));
        run(async {
            cache.get("a").await.unwrap();
            cache.get("b").await.unwrap();
            cache.get("a").await.unwrap();
            cache.get("c").await.unwrap();
            assert_eq!(cache.stats().entries, 2);
            assert_eq!(source.calls(), 3);
            cache.get("a").await.unwrap();
            assert_eq!(source.calls(), 3);
            cache.get("b").await.unwrap();
            assert_eq!(source.calls(), 4);
        });
    }

    #[test]
    fn errors_and_debug_output_never_show_tokens() {
        let clock = FakeClock::new();
        let source = FakeSource::new(&clock, Duration::from_secs(3600));
        let cache = cache(&source, &clock);
        let token = run(cache.get("a")).unwrap();
        assert!(!format!("{token:?}").contains("fake-a"));
        assert!(!format!("{cache:?}").contains("fake-a"));
    }
}
