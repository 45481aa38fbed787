//! Leaf certificates for banned hosts, minted on demand and cached.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;
use tokio::sync::OnceCell;

use super::{random_serial, since_epoch, CaError, CertificateAuthority, BACKDATE};

/// Short enough that a leaf that somehow leaves the server is soon useless,
/// long enough that a busy proxy rarely re-mints.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 86_400);
/// A cached leaf this close to its end is replaced by a fresh one, so no
/// connection is ever served a certificate that expires during it.
const RENEW_BEFORE: Duration = Duration::from_secs(86_400);
/// Default bound on cached hosts; a leaf and its config take a few KiB.
pub const DEFAULT_MAX_HOSTS: usize = 10_000;
/// Resumed sessions shared by all leaves (rustls refuses to resume a session
/// under a different SNI, so sharing is safe and bounds the memory).
const SESSION_CACHE_SIZE: usize = 4_096;
/// RFC 1035: a DNS name is at most 253 characters in text form.
const MAX_DNS_NAME: usize = 253;

/// Mints and caches leaf certificates; the proxy calls
/// [`server_config`](Self::server_config) on every intercepted connection.
///
/// Exists because minting costs an ECDSA signature and a banned host is
/// usually hit in bursts (a page, its assets, retries): one leaf per host,
/// shared by all connections, replaced a day before it expires. Concurrent
/// first requests for one host wait for one mint; minting runs on the
/// blocking pool so it never stalls other connections.
pub struct LeafCache {
    minter: Arc<Minter>,
    pub(super) cache: DashMap<String, Arc<OnceCell<Arc<Leaf>>>>,
    max_hosts: usize,
}

/// Everything a mint needs, shareable with `spawn_blocking`.
struct Minter {
    ca: Arc<CertificateAuthority>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    /// One P-256 key for every leaf, made on first use: generating a key per
    /// host would double the cost of a mint for no gain, as the serials stay
    /// random.
    key: OnceCell<Arc<LeafKey>>,
    minted: AtomicU64,
}

struct LeafKey {
    rcgen: KeyPair,
    rustls: Arc<dyn SigningKey>,
}

/// One minted leaf and the TLS configuration that serves it.
pub(crate) struct Leaf {
    pub(crate) config: Arc<ServerConfig>,
    // Read by the tests, which check the certificate itself.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) cert_der: CertificateDer<'static>,
    pub(crate) not_after: SystemTime,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.minter.ca.cert_path())
            .field("hosts", &self.cache.len())
            .field("max_hosts", &self.max_hosts)
            .field("minted", &self.minted())
            .finish()
    }
}

impl Leaf {
    fn fresh(&self, now: SystemTime) -> bool {
        now + RENEW_BEFORE < self.not_after
    }
}

impl LeafCache {
    /// A cache that signs with `ca` and keeps at most
    /// [`DEFAULT_MAX_HOSTS`] hosts.
    pub fn new(ca: Arc<CertificateAuthority>) -> Self {
        Self::with_max_hosts(ca, DEFAULT_MAX_HOSTS)
    }

    /// A cache that keeps about `max_hosts` hosts (at least one; concurrent
    /// first requests may overshoot briefly); when full, a tenth of the
    /// entries is dropped, expiring ones first.
    pub fn with_max_hosts(ca: Arc<CertificateAuthority>, max_hosts: usize) -> Self {
        LeafCache {
            minter: Arc::new(Minter {
                ca,
                provider: Arc::new(rustls::crypto::ring::default_provider()),
                sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
                key: OnceCell::new(),
                minted: AtomicU64::new(0),
            }),
            cache: DashMap::new(),
            max_hosts: max_hosts.max(1),
        }
    }

    /// The TLS server configuration for `host`: its leaf plus the CA (the
    /// full chain), ALPN `http/1.1` only, no client authentication.
    ///
    /// `host` is an already-normalised host: a lower-case DNS name, or an IP
    /// literal without brackets. Anything else is refused rather than put
    /// into a certificate.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        Ok(self.leaf(host).await?.config.clone())
    }

    /// How many leaves this cache has minted, for `/metrics` and tests.
    pub fn minted(&self) -> u64 {
        self.minter.minted.load(Ordering::Relaxed)
    }

    /// How many hosts are cached now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no host is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    pub(crate) async fn leaf(&self, host: &str) -> Result<Arc<Leaf>, CaError> {
        let san = san_for(host).map_err(|reason| self.minter.error(host, reason))?;
        let cell = self.cell_for(host);
        // A failed or cancelled mint leaves the cell empty: the next caller
        // tries again.
        let leaf = cell.get_or_try_init(|| self.minter.clone().mint(host.to_owned(), san)).await?;
        Ok(leaf.clone())
    }

    /// The cell for `host`: the cached one while its leaf is fresh, else a
    /// new empty one that the caller (and concurrent callers) fill.
    fn cell_for(&self, host: &str) -> Arc<OnceCell<Arc<Leaf>>> {
        // Clone out of the map at once: no dashmap guard is held across
        // another map operation (that can deadlock on a shard lock).
        let cached = self.cache.get(host).map(|entry| entry.value().clone());
        if let Some(cell) = cached {
            match cell.get() {
                Some(leaf) if !leaf.fresh(SystemTime::now()) => {
                    // Replace only the cell we saw, so concurrent callers that
                    // also saw it stale end up sharing one new mint.
                    let fresh = Arc::new(OnceCell::new());
                    return match self.cache.entry(host.to_owned()) {
                        Entry::Occupied(mut entry) if Arc::ptr_eq(entry.get(), &cell) => {
                            entry.insert(fresh.clone());
                            fresh
                        }
                        Entry::Occupied(entry) => entry.get().clone(),
                        Entry::Vacant(entry) => {
                            entry.insert(fresh.clone());
                            fresh
                        }
                    };
                }
                _ => return cell,
            }
        }
        if self.cache.len() >= self.max_hosts {
            self.evict();
        }
        self.cache.entry(host.to_owned()).or_insert_with(|| Arc::new(OnceCell::new())).clone()
    }

    /// Drops a tenth of the cache: stale leaves first, then arbitrary ones
    /// (dashmap's order follows the hash, so no host is systematically
    /// favoured). Callers still waiting on an evicted cell keep their own
    /// handle to it and get their leaf; it is just not cached.
    fn evict(&self) {
        let want = (self.max_hosts / 10).max(1);
        let now = SystemTime::now();
        let mut stale = Vec::new();
        let mut others = Vec::new();
        for entry in self.cache.iter() {
            match entry.value().get() {
                Some(leaf) if !leaf.fresh(now) => stale.push(entry.key().clone()),
                _ if others.len() < want => others.push(entry.key().clone()),
                _ => {}
            }
        }
        let victims = stale.into_iter().chain(others).take(want);
        for host in victims {
            self.cache.remove(&host);
        }
    }
}

impl Minter {
    fn error(&self, host: &str, reason: impl Into<String>) -> CaError {
        CaError::Leaf { host: host.to_owned(), ca: self.ca.cert_path().to_path_buf(), reason: reason.into() }
    }

    async fn mint(self: Arc<Self>, host: String, san: SanType) -> Result<Arc<Leaf>, CaError> {
        let key = self
            .key
            .get_or_try_init(|| {
                let provider = self.provider.clone();
                blocking(&self, &host, move || LeafKey::generate(&provider))
            })
            .await?
            .clone();
        let minter = self.clone();
        let name = host.clone();
        let leaf = blocking(&self, &host, move || minter.sign(&name, san, &key)).await?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host = %host, "minted a leaf certificate");
        Ok(Arc::new(leaf))
    }

    fn sign(&self, host: &str, san: SanType, key: &LeafKey) -> Result<Leaf, String> {
        let now = SystemTime::now();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let not_after = now + LEAF_VALIDITY;

        let mut name = DistinguishedName::new();
        // X.509 caps a common name at 64 characters (RFC 5280 `ub-common-name`);
        // browsers read only the SAN, and rcgen marks the SAN critical when
        // the subject is empty, as RFC 5280 §4.2.1.6 requires.
        if host.len() <= 64 {
            name.push(DnType::CommonName, host);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.subject_alt_names = vec![san];
        params.serial_number = Some(random_serial().map_err(|e| e.to_string())?);
        params.not_before = epoch + since_epoch(now - BACKDATE);
        params.not_after = epoch + since_epoch(not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key.rcgen, self.ca.issuer()).map_err(|e| e.to_string())?;
        let cert_der = cert.der().clone();

        let chain = vec![cert_der.clone(), self.ca.cert_der_owned()];
        let certified = CertifiedKey::new(chain, key.rustls.clone());
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        // Only what the block page is served over: offering h2 and then
        // speaking HTTP/1.1 would show a protocol error instead of the page.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        Ok(Leaf { config: Arc::new(config), cert_der, not_after })
    }
}

impl LeafKey {
    fn generate(provider: &CryptoProvider) -> Result<Arc<Self>, String> {
        let rcgen = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(rcgen.serialize_der()));
        let rustls = provider.key_provider.load_private_key(der).map_err(|e| e.to_string())?;
        Ok(Arc::new(LeafKey { rcgen, rustls }))
    }
}

/// Runs `work` on tokio's blocking pool: key generation and signing are
/// CPU work that must not hold up the tasks serving other connections.
async fn blocking<T: Send + 'static>(
    minter: &Minter,
    host: &str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, CaError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => Err(minter.error(host, reason)),
        Err(join) => Err(minter.error(host, format!("minting task failed: {join}"))),
    }
}

/// The subjectAltName for `host`: an IP address SAN for an IP literal, else
/// a DNS name SAN. Only what a normalised host can be gets through: this
/// text comes from a client's SNI or CONNECT line and goes into a
/// certificate.
fn san_for(host: &str) -> Result<SanType, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= MAX_DNS_NAME
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err("not a normalised host (a lower-case DNS name or an IP address)".into());
    }
    let name = host.try_into().map_err(|e: rcgen::Error| e.to_string())?;
    Ok(SanType::DnsName(name))
}
