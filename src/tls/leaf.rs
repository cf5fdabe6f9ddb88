//! Leaf certificates for intercepted CONNECT targets, issued by the [`CertAuthority`] and kept
//! in a bounded, expiry-aware cache.
//!
//! This file decides which name a leaf is for only in the sense of normalising it; choosing
//! between the client's SNI and the CONNECT host is the caller's decision.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use log::debug;
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ca::ORGANIZATION;
use super::{
    parse_host, provider, random_serial, CertAuthority, Host, TlsError, ALPN_HTTP11, BACKDATE,
};

/// Validity of a leaf from its issue: one day.
///
/// Short enough that a leaked leaf is soon useless, long enough that a busy proxy issues a
/// handful per host per day. Leaves are re-issued once half their lifetime has passed.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Most leaves kept at once: 1000.
///
/// One proxy serves one client, which talks to a bounded set of targets; 1000 covers a large
/// Prometheus configuration, and at a few kilobytes per entry it stays small. When full, the
/// least recently used entry is evicted.
pub const LEAF_CACHE_CAPACITY: usize = 1000;

/// Longest common name we set (RFC 5280's `ub-common-name`); a longer host name is carried in
/// the SAN alone, which is all clients check anyway.
const MAX_COMMON_NAME: usize = 64;

/// TLS sessions remembered for resumption, across all leaves together: 256.
///
/// rustls gives each server configuration its own store by default, which with
/// [`LEAF_CACHE_CAPACITY`] configurations could hold a quarter of a million sessions. One shared
/// store keeps memory bounded; rustls only resumes a session for the SNI it was made with.
const SESSION_CACHE_CAPACITY: usize = 256;

/// Issues and caches leaf certificates for intercepted connections.
///
/// All leaves share one ECDSA P-256 key, generated with the interceptor and held in memory
/// only. Generating a key per leaf would add work to every cache miss without protecting
/// anything: any per-leaf key would live in the same process memory as this one and as the
/// CA key, which can sign a leaf for any name anyway.
///
/// Safe to share between tasks: lookups take a short lock, and signing happens outside it.
pub struct Interceptor {
    ca: CertAuthority,
    provider: Arc<CryptoProvider>,
    leaf_key: KeyPair,
    leaf_signing_key: Arc<dyn SigningKey>,
    sessions: Arc<dyn StoresServerSessions>,
    cache: Mutex<LeafCache<Arc<ServerConfig>>>,
    issued: AtomicU64,
}

impl Interceptor {
    /// Creates an interceptor issuing leaves from `ca`, with a fresh leaf key.
    ///
    /// Fails if the leaf key cannot be generated or loaded into rustls.
    pub fn new(ca: CertAuthority) -> Result<Interceptor, TlsError> {
        Self::with_capacity(ca, LEAF_CACHE_CAPACITY)
    }

    fn with_capacity(ca: CertAuthority, capacity: usize) -> Result<Interceptor, TlsError> {
        let provider = provider();
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(TlsError::GenerateLeafKey)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(TlsError::Rustls)?;
        Ok(Interceptor {
            ca,
            provider,
            leaf_key,
            leaf_signing_key,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_CAPACITY),
            cache: Mutex::new(LeafCache::new(capacity)),
            issued: AtomicU64::new(0),
        })
    }

    /// The CA that signs the leaves, e.g. to write its certificate.
    pub fn ca(&self) -> &CertAuthority {
        &self.ca
    }

    /// A server configuration presenting a leaf for `name`, from the cache when a fresh one
    /// is there.
    ///
    /// `name` is a DNS name (matched case-insensitively) or an IPv4/IPv6 address, with or
    /// without brackets. An address gets an IP SAN, a name a lowercase DNS SAN; the common
    /// name repeats it. The leaf has EKU serverAuth only, key usage digitalSignature, is not a
    /// CA, and is valid from `now` minus [`BACKDATE`] for [`LEAF_LIFETIME`] (never past the
    /// CA). The chain presented is leaf then CA, and ALPN offers `http/1.1` only.
    ///
    /// A cached leaf is reused until half its lifetime has passed at `now`; after that a new
    /// one is issued, so a long-running proxy never presents an expired leaf.
    ///
    /// Fails with [`TlsError::InvalidServerName`] for a name that is neither, and with
    /// [`TlsError::IssueLeaf`] if signing fails.
    pub fn server_config_for(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let host = parse_host(name)?;
        let key = match &host {
            Host::Ip(ip) => ip.to_string(),
            Host::Dns(dns) => dns.as_ref().to_owned(),
        };

        if let Some(config) = self.lock_cache().get(&key, now) {
            debug!("leaf cache hit host={key}");
            return Ok(config);
        }

        // Signed without the lock held: two tasks missing at once both sign, and the later
        // insert wins, which is harmless.
        let (config, validity) = self.issue(&key, &host, now)?;
        self.issued.fetch_add(1, Ordering::Relaxed);
        let evicted = self
            .lock_cache()
            .insert(key.clone(), config.clone(), validity, now);
        debug!("leaf issued host={key} evicted={evicted}");
        Ok(config)
    }

    /// How many leaves have been issued since start.
    pub fn leaves_issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// How many leaves are cached now.
    pub fn leaves_cached(&self) -> usize {
        self.lock_cache().len()
    }

    fn lock_cache(&self) -> MutexGuard<'_, LeafCache<Arc<ServerConfig>>> {
        // The cache is consistent after every statement, so a panic elsewhere while the
        // lock was held leaves nothing to repair.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Signs a leaf for `host` and wraps it in a server configuration.
    fn issue(
        &self,
        name: &str,
        host: &Host,
        now: SystemTime,
    ) -> Result<(Arc<ServerConfig>, Validity), TlsError> {
        let issue_err = |source| TlsError::IssueLeaf {
            name: name.to_owned(),
            source,
        };

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        if name.len() <= MAX_COMMON_NAME {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.subject_alt_names = vec![match host {
            Host::Ip(ip) => SanType::IpAddress(*ip),
            Host::Dns(dns) => {
                SanType::DnsName(Ia5String::try_from(dns.as_ref()).map_err(issue_err)?)
            }
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        let validity = Validity {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: (now + LEAF_LIFETIME).min(self.ca.not_after()),
        };
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();

        let leaf = self.ca.sign(&params, &self.leaf_key).map_err(issue_err)?;
        let chain = vec![leaf.der().clone(), self.ca.cert_der().clone()];
        let certified = CertifiedKey::new(chain, self.leaf_signing_key.clone());

        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        config.session_storage = self.sessions.clone();
        Ok((Arc::new(config), validity))
    }
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("ca", &self.ca)
            .field("leaves_issued", &self.leaves_issued())
            .field("leaves_cached", &self.leaves_cached())
            .finish_non_exhaustive()
    }
}

/// The validity window of an issued leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    /// From this instant on, the leaf is replaced: half-way through its lifetime.
    fn refresh_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime / 2
    }

    /// Whether the leaf may still be handed out at `now`. A clock that went backwards past
    /// `not_before` also counts as stale, since clients would see a not-yet-valid leaf.
    fn is_fresh(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.refresh_at()
    }
}

/// A bounded map from name to value with validity, evicting the least recently used.
///
/// Limitation: eviction scans all entries, which is fine at [`LEAF_CACHE_CAPACITY`] and only
/// happens on an insert into a full cache.
#[derive(Debug)]
struct LeafCache<V> {
    entries: HashMap<String, Entry<V>>,
    capacity: usize,
    /// Monotonic use counter; an entry's `last_used` is its position in it.
    clock: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    validity: Validity,
    last_used: u64,
}

impl<V: Clone> LeafCache<V> {
    fn new(capacity: usize) -> Self {
        LeafCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value for `key` if it is still fresh at `now`; a stale entry is dropped.
    fn get<Q>(&mut self, key: &Q, now: SystemTime) -> Option<V>
    where
        String: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.entries.get_mut(key)?;
        if !entry.validity.is_fresh(now) {
            self.entries.remove(key);
            return None;
        }
        self.clock += 1;
        entry.last_used = self.clock;
        Some(entry.value.clone())
    }

    /// Stores `value` under `key`, replacing any entry there. When the cache is full, stale
    /// entries go first, then the least recently used one. Returns how many were evicted.
    fn insert(&mut self, key: String, value: V, validity: Validity, now: SystemTime) -> usize {
        self.clock += 1;
        let entry = Entry {
            value,
            validity,
            last_used: self.clock,
        };
        if self.entries.insert(key.clone(), entry).is_some() {
            return 0;
        }
        if self.entries.len() <= self.capacity {
            return 0;
        }

        let before = self.entries.len();
        self.entries
            .retain(|k, e| *k == key || e.validity.is_fresh(now));
        while self.entries.len() > self.capacity {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            self.entries.remove(&oldest);
        }
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::RootCertStore;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;
    use crate::tls::danger::AcceptAnyServerCert;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000 + secs)
    }

    fn interceptor(now: SystemTime, capacity: usize) -> Interceptor {
        Interceptor::with_capacity(CertAuthority::generate(now).unwrap(), capacity).unwrap()
    }

    /// The chain a server with `config` presents, read through an in-memory handshake:
    /// rustls offers no other way to ask a certificate resolver.
    fn presented_chain(config: &ServerConfig) -> Vec<CertificateDer<'static>> {
        let client_config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(&provider())))
            .with_no_client_auth();
        let name = ServerName::try_from("unused.invalid").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(config.clone())).unwrap();
        let mut wire = Vec::new();
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            wire.clear();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
            }
            server.process_new_packets().unwrap();
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        client.peer_certificates().unwrap().to_vec()
    }

    fn verify(
        ca: &CertAuthority,
        chain: &[CertificateDer<'static>],
        name: &str,
        now: SystemTime,
    ) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::since_unix_epoch(secs),
            )
            .map(|_| ())
    }

    #[test]
    fn leaf_for_a_name_verifies_against_the_ca_alone() {
        let now = t(0);
        let icpt = interceptor(now, 10);
        let config = icpt.server_config_for("Example.COM", now).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let chain = presented_chain(&config);
        assert_eq!(chain.len(), 2);
        assert_eq!(&chain[1], icpt.ca().cert_der());

        verify(icpt.ca(), &chain, "example.com", now).unwrap();
        verify(icpt.ca(), &chain, "other.example", now).unwrap_err();
        verify(icpt.ca(), &chain, "127.0.0.1", now).unwrap_err();
        // Outside the validity window.
        verify(
            icpt.ca(),
            &chain,
            "example.com",
            now + LEAF_LIFETIME + BACKDATE,
        )
        .unwrap_err();
        verify(icpt.ca(), &chain, "example.com", now - BACKDATE * 2).unwrap_err();
    }

    #[test]
    fn leaf_for_an_address_has_an_ip_san() {
        let now = t(0);
        let icpt = interceptor(now, 10);
        for (name, check) in [
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "::1"),
            ("fd00::1", "fd00::1"),
        ] {
            let chain = presented_chain(&icpt.server_config_for(name, now).unwrap());
            verify(icpt.ca(), &chain, check, now).unwrap();
            verify(icpt.ca(), &chain, "localhost", now).unwrap_err();
        }
        // A bracketed and an unbracketed spelling are the same entry.
        icpt.server_config_for("::1", now).unwrap();
        assert_eq!(icpt.leaves_issued(), 3);
    }

    #[test]
    fn the_ca_cannot_be_used_as_a_leaf() {
        let now = t(0);
        let icpt = interceptor(now, 10);
        let ca_only = vec![icpt.ca().cert_der().clone()];
        verify(icpt.ca(), &ca_only, "example.com", now).unwrap_err();
    }

    #[test]
    fn fresh_leaves_are_reused_and_old_ones_replaced() {
        let start = t(0);
        let icpt = interceptor(start, 10);
        let first = icpt.server_config_for("a.example", start).unwrap();
        let again = icpt
            .server_config_for("A.Example", start + Duration::from_secs(3600))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(icpt.leaves_issued(), 1);

        // Past half of the lifetime: replaced.
        let later = start + LEAF_LIFETIME / 2 + Duration::from_secs(60);
        let renewed = icpt.server_config_for("a.example", later).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert_eq!(icpt.leaves_issued(), 2);
        assert_eq!(icpt.leaves_cached(), 1);
        let chain = presented_chain(&renewed);
        verify(icpt.ca(), &chain, "a.example", later + LEAF_LIFETIME / 2).unwrap();

        // A clock that jumped back before the leaf's start also gets a new one.
        let earlier = start - Duration::from_secs(3600);
        let back = icpt.server_config_for("a.example", earlier).unwrap();
        assert!(!Arc::ptr_eq(&renewed, &back));
    }

    #[test]
    fn weeks_of_use_never_present_an_expired_leaf() {
        let start = t(0);
        let icpt = interceptor(start, 10);
        let mut now = start;
        while now < start + Duration::from_secs(21 * 24 * 3600) {
            let chain = presented_chain(&icpt.server_config_for("svc.example", now).unwrap());
            verify(icpt.ca(), &chain, "svc.example", now).unwrap();
            now += Duration::from_secs(5 * 3600);
        }
        // Every third call (15 h) finds its leaf past half-life.
        assert!(icpt.leaves_issued() >= 30, "{}", icpt.leaves_issued());
    }

    #[test]
    fn leaves_never_outlive_the_ca() {
        let start = t(0);
        let icpt = interceptor(start, 10);
        let near_end = icpt.ca().not_after() - Duration::from_secs(3600);
        let chain = presented_chain(&icpt.server_config_for("x.example", near_end).unwrap());
        verify(icpt.ca(), &chain, "x.example", near_end).unwrap();
        let (_, validity) = icpt
            .issue("x.example", &parse_host("x.example").unwrap(), near_end)
            .unwrap();
        assert_eq!(validity.not_after, icpt.ca().not_after());
    }

    #[test]
    fn long_names_go_in_the_san_only() {
        let now = t(0);
        let icpt = interceptor(now, 10);
        let long = format!("{}.{}.example", "a".repeat(40), "b".repeat(40));
        let chain = presented_chain(&icpt.server_config_for(&long, now).unwrap());
        verify(icpt.ca(), &chain, &long, now).unwrap();
    }

    #[test]
    fn invalid_names_are_refused() {
        let icpt = interceptor(t(0), 10);
        let err = icpt.server_config_for("bad name", t(0)).unwrap_err();
        assert!(matches!(err, TlsError::InvalidServerName { .. }), "{err:?}");
        assert_eq!(icpt.leaves_issued(), 0);
    }

    #[test]
    fn debug_shows_counters_not_keys() {
        let icpt = interceptor(t(0), 10);
        icpt.server_config_for("a.example", t(0)).unwrap();
        let debug = format!("{icpt:?}");
        assert!(debug.contains("leaves_issued: 1"), "{debug}");
        assert!(!debug.contains(&crate::tls::hex(&icpt.leaf_key.serialize_der())));
    }

    #[test]
    fn concurrent_callers_share_the_cache() {
        let now = t(0);
        let icpt = interceptor(now, 10);
        let names = ["a.example", "b.example", "10.0.0.1"];
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        for name in names {
                            icpt.server_config_for(name, now).unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(icpt.leaves_cached(), names.len());
        // Simultaneous misses may each sign once; after that every call is a hit.
        assert!(icpt.leaves_issued() <= 4 * names.len() as u64);
        let cached = icpt.server_config_for("a.example", now).unwrap();
        assert!(Arc::ptr_eq(
            &cached,
            &icpt.server_config_for("a.example", now).unwrap()
        ));
    }

    fn validity(from: u64, to: u64) -> Validity {
        Validity {
            not_before: t(from),
            not_after: t(to),
        }
    }

    #[test]
    fn validity_is_fresh_until_half_time() {
        let v = validity(0, 100);
        assert_eq!(v.refresh_at(), t(50));
        assert!(v.is_fresh(t(0)));
        assert!(v.is_fresh(t(49)));
        assert!(!v.is_fresh(t(50)));
        assert!(!v.is_fresh(t(200)));
        let before_start = t(0) - Duration::from_secs(1);
        assert!(!v.is_fresh(before_start));
    }

    #[test]
    fn cache_holds_its_bound_and_evicts_the_least_recently_used() {
        let mut cache = LeafCache::new(3);
        let now = t(10);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(cache.insert(k.into(), i, validity(0, 1000), now), 0);
        }
        // Touch "a", so "b" is now the least recently used.
        assert_eq!(cache.get("a", now), Some(0));
        assert_eq!(cache.insert("d".into(), 3, validity(0, 1000), now), 1);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("b", now), None);
        assert_eq!(cache.get("a", now), Some(0));
        assert_eq!(cache.get("c", now), Some(2));
        assert_eq!(cache.get("d", now), Some(3));

        // Replacing an entry does not evict anything.
        assert_eq!(cache.insert("a".into(), 9, validity(0, 1000), now), 0);
        assert_eq!(cache.get("a", now), Some(9));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn cache_drops_stale_entries_first() {
        let mut cache = LeafCache::new(3);
        cache.insert("old1".into(), 1, validity(0, 20), t(0));
        cache.insert("fresh".into(), 2, validity(0, 1000), t(0));
        cache.insert("old2".into(), 3, validity(0, 20), t(0));
        // "fresh" is the least recently used, but the other two are stale at t(15).
        let evicted = cache.insert("new".into(), 4, validity(15, 1000), t(15));
        assert_eq!(evicted, 2);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("fresh", t(15)), Some(2));
        assert_eq!(cache.get("new", t(15)), Some(4));
    }

    #[test]
    fn cache_bound_holds_under_many_names() {
        let mut cache = LeafCache::new(LEAF_CACHE_CAPACITY);
        for i in 0..(LEAF_CACHE_CAPACITY * 3) {
            cache.insert(format!("h{i}"), i, validity(0, 1000), t(1));
            assert!(cache.len() <= LEAF_CACHE_CAPACITY);
        }
        assert_eq!(cache.len(), LEAF_CACHE_CAPACITY);
        // The newest survive.
        let last = LEAF_CACHE_CAPACITY * 3 - 1;
        assert_eq!(cache.get(&format!("h{last}"), t(1)), Some(last));
        assert_eq!(cache.get("h0", t(1)), None);
    }

    #[test]
    fn interceptor_cache_is_bounded() {
        let now = t(0);
        let icpt = interceptor(now, 2);
        for name in ["a.example", "b.example", "c.example"] {
            icpt.server_config_for(name, now).unwrap();
        }
        assert_eq!(icpt.leaves_cached(), 2);
        assert_eq!(icpt.leaves_issued(), 3);
        // "a" was evicted and is issued again.
        icpt.server_config_for("a.example", now).unwrap();
        assert_eq!(icpt.leaves_issued(), 4);
    }
}
