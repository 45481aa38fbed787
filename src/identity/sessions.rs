//! Sessions: one subject from one client address, continuing while requests
//! keep coming within `identity.session_idle`. Officers read attempts per
//! session. A session exists from its first request, but leaves a trace in
//! the audit log only once it has something to log (its first blocked or
//! exempted attempt): ordinary browsing is never recorded.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use tokio::time::Instant;

use crate::audit::{EventKind, Record, Via};
use crate::compliance::store::Store;

/// Sessions are keyed by client address and user: two people behind one
/// address (a shared terminal) are two sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    client: IpAddr,
    user: Option<Arc<str>>,
}

#[derive(Debug)]
struct Session {
    id: Arc<str>,
    device: Option<String>,
    user_agent: Option<String>,
    started: SystemTime,
    started_at: Instant,
    last_seen: Instant,
    /// Attempts per app; non-empty means `session_start` was written.
    attempts: BTreeMap<String, u64>,
    hosts: HashSet<String>,
    logged: bool,
}

/// The live sessions. A `DashMap` so the request path never waits on a
/// global lock.
pub struct SessionStore {
    sessions: DashMap<Key, Session>,
    /// The user last seen from each address, so the gateway can link a
    /// device to the person using it on the proxy.
    /// `true` once a second user was seen there: then the address names
    /// nobody (a terminal server, NAT), and the gateway must not guess.
    users_at: DashMap<IpAddr, Vec<(Arc<str>, Instant)>>,
    idle: Duration,
    /// Where "user seen at address" is kept for the other nodes (the
    /// compliance store; only `[cluster]`'s sends it anywhere), at most
    /// every quarter of the idle time per pair.
    store: std::sync::OnceLock<Arc<dyn Store>>,
}

/// A random 128-bit session id in hex.
fn new_id() -> Arc<str> {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Not fatal for an identifier: fall back to time and address entropy.
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = t.to_le_bytes();
    }
    hex::encode(bytes).into()
}

/// The result of [`SessionStore::touch`].
pub struct Touched {
    /// The id of the session the request belongs to.
    pub id: Arc<str>,
    /// The `session_end` of a session that had gone idle and was replaced;
    /// the caller writes it.
    pub ended: Option<Record>,
}

impl SessionStore {
    pub fn new(idle: Duration) -> SessionStore {
        SessionStore { sessions: DashMap::new(), users_at: DashMap::new(), idle, store: std::sync::OnceLock::new() }
    }

    fn fresh(device: Option<&str>, user_agent: Option<&str>, now: Instant) -> Session {
        Session {
            id: new_id(),
            device: device.map(str::to_string),
            user_agent: user_agent.map(|u| u.chars().take(512).collect()),
            started: SystemTime::now(),
            started_at: now,
            last_seen: now,
            attempts: BTreeMap::new(),
            hosts: HashSet::new(),
            logged: false,
        }
    }

    /// The session of a request, created or continued.
    pub fn touch(&self, client: IpAddr, user: Option<&str>, device: Option<&str>, user_agent: Option<&str>) -> Touched {
        let key = Key { client, user: user.map(Arc::from) };
        if let Some(u) = &key.user {
            if self.seen_at(client, u, Instant::now()) {
                if let Some(store) = self.store.get() {
                    store.seen(client, u);
                }
            }
        }
        let now = Instant::now();
        let mut entry = self.sessions.entry(key).or_insert_with(|| Self::fresh(device, user_agent, now));
        let mut ended = None;
        if now.duration_since(entry.last_seen) > self.idle {
            // Idle too long: a new session starts; the old one ends here so
            // no attempt is counted in the wrong session.
            let old = std::mem::replace(&mut *entry, Self::fresh(device, user_agent, now));
            if old.logged {
                ended = Some(end_record(entry.key(), &old));
            }
        }
        entry.last_seen = now;
        Touched { id: Arc::clone(&entry.id), ended }
    }

    /// Notes `user` seen at `client` at `now`; true when the other nodes
    /// should hear of it (new there, or not said for a quarter of the idle time).
    fn seen_at(&self, client: IpAddr, user: &Arc<str>, now: Instant) -> bool {
        // Each user seen at the address with when; a few at most.
        let mut seen = self.users_at.entry(client).or_default();
        seen.retain(|(_, at)| now.duration_since(*at) <= self.idle);
        match seen.iter().position(|(name, _)| name == user) {
            Some(i) => {
                let stale = now.duration_since(seen[i].1) > self.idle / 4;
                seen[i].1 = seen[i].1.max(now);
                stale
            }
            // Two already make the address ambiguous; more add nothing.
            None if seen.len() < 8 => {
                seen.push((Arc::clone(user), now));
                true
            }
            None => false,
        }
    }

    /// Keeps "user seen at address" in `store` from now on (`[cluster]`:
    /// a gateway on another node names the user of this proxy's session).
    pub fn share_with(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    /// Notes a user seen at an address by another node, `ago` ago.
    pub fn seen_elsewhere(&self, client: IpAddr, user: &str, ago: Duration) {
        if ago > self.idle {
            return;
        }
        let at = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        self.seen_at(client, &Arc::from(user), at);
    }

    /// Counts a blocked or exempted attempt in its session. Returns the
    /// session's `session_start` record when this is the first thing it
    /// logs; the caller writes it before the attempt's own record.
    pub fn note_attempt(&self, client: IpAddr, user: Option<&str>, app: &str, host: &str) -> Option<Record> {
        let key = Key { client, user: user.map(Arc::from) };
        let mut s = self.sessions.get_mut(&key)?;
        *s.attempts.entry(app.to_string()).or_insert(0) += 1;
        if s.hosts.len() < 1000 {
            s.hosts.insert(host.to_string());
        }
        if s.logged {
            return None;
        }
        s.logged = true;
        let mut r = Record::new(EventKind::SessionStart);
        r.session = Some(s.id.to_string());
        r.user = user.map(str::to_string);
        r.client = Some(client);
        r.device.clone_from(&s.device);
        r.user_agent.clone_from(&s.user_agent);
        r.via = Some(Via::Proxy);
        r.detail = Some(serde_json::json!({ "started": humantime::format_rfc3339_millis(s.started).to_string() }));
        Some(r)
    }

    /// Removes sessions idle for longer than the idle time; returns the
    /// `session_end` records of those that logged something.
    pub fn sweep(&self) -> Vec<Record> {
        let now = Instant::now();
        let mut ended = Vec::new();
        self.sessions.retain(|key, s| {
            let live = now.duration_since(s.last_seen) <= self.idle;
            if !live && s.logged {
                ended.push(end_record(key, s));
            }
            live
        });
        // Users not seen at an address for the idle time are forgotten
        // there, each under its own entry's lock (no rebuild from a
        // snapshot that a concurrent login could be missing from).
        self.users_at.retain(|_, seen| {
            seen.retain(|(_, at)| now.duration_since(*at) <= self.idle);
            !seen.is_empty()
        });
        if self.sessions.is_empty() || self.sessions.capacity() > 4 * self.sessions.len().max(1024) {
            self.sessions.shrink_to_fit();
        }
        ended
    }

    /// Ends every session (shutdown); returns the `session_end` records.
    pub fn end_all(&self) -> Vec<Record> {
        let mut ended = Vec::new();
        self.sessions.retain(|key, s| {
            if s.logged {
                ended.push(end_record(key, s));
            }
            false
        });
        self.sessions.shrink_to_fit();
        self.users_at.clear();
        ended
    }

    /// The one user seen from this address within the idle time, if
    /// exactly one was.
    pub fn user_at(&self, client: IpAddr) -> Option<String> {
        let seen = self.users_at.get(&client)?;
        let now = Instant::now();
        let mut live = seen.iter().filter(|(_, at)| now.duration_since(*at) <= self.idle);
        match (live.next(), live.next()) {
            (Some((user, _)), None) => Some(user.to_string()),
            _ => None,
        }
    }

    /// The id of the live session of `user` (or of the unauthenticated
    /// subject) at `client`, without continuing it: the gateway's records
    /// name the proxy session of the person they are about.
    pub fn live_session(&self, client: IpAddr, user: Option<&str>) -> Option<String> {
        let key = Key { client, user: user.map(Arc::from) };
        let s = self.sessions.get(&key)?;
        (Instant::now().duration_since(s.last_seen) <= self.idle).then(|| s.id.to_string())
    }

    /// How long a session may be quiet before it ends.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A read-only snapshot of the live sessions, for the officers'
    /// dashboard. Sessions that have logged nothing (ordinary browsing) are
    /// only counted, never described: `(described, browsing_only)`.
    pub fn live(&self) -> (Vec<LiveSession>, usize) {
        let now = Instant::now();
        let mut browsing_only = 0;
        let mut out = Vec::new();
        for e in self.sessions.iter() {
            let (key, s) = (e.key(), e.value());
            if now.duration_since(s.last_seen) > self.idle {
                continue;
            }
            if !s.logged {
                browsing_only += 1;
                continue;
            }
            out.push(LiveSession {
                id: s.id.to_string(),
                user: key.user.as_deref().map(str::to_string),
                client: key.client,
                device: s.device.clone(),
                started: s.started,
                quiet_for: now.duration_since(s.last_seen),
                attempts: s.attempts.clone(),
                distinct_hosts: s.hosts.len(),
            });
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| a.id.cmp(&b.id)));
        (out, browsing_only)
    }

    /// Allocated slots, to check that memory returns after a sweep.
    pub fn capacity(&self) -> usize {
        self.sessions.capacity()
    }
}

/// One live session that has logged attempts, as [`SessionStore::live`]
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub id: String,
    pub user: Option<String>,
    pub client: IpAddr,
    pub device: Option<String>,
    pub started: SystemTime,
    /// Time since its last request.
    pub quiet_for: Duration,
    /// Attempts per app so far.
    pub attempts: BTreeMap<String, u64>,
    pub distinct_hosts: usize,
}

fn end_record(key: &Key, s: &Session) -> Record {
    let mut r = Record::new(EventKind::SessionEnd);
    r.session = Some(s.id.to_string());
    r.user = key.user.as_deref().map(str::to_string);
    r.client = Some(key.client);
    r.device.clone_from(&s.device);
    r.via = Some(Via::Proxy);
    let mut hosts: Vec<&String> = s.hosts.iter().collect();
    hosts.sort();
    r.detail = Some(serde_json::json!({
        "started": humantime::format_rfc3339_millis(s.started).to_string(),
        "duration_s": s.last_seen.duration_since(s.started_at).as_secs(),
        "attempts": s.attempts,
        "distinct_hosts": hosts.len(),
        "hosts": hosts,
    }));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_attempt_starts_the_record_and_idle_ends_it() {
        let store = SessionStore::new(Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = store.touch(ip, Some("jan"), None, Some("ua"));
        let b = store.touch(ip, Some("piet"), None, None);
        assert_ne!(a.id, b.id, "two users from one address are two sessions");
        assert_eq!(store.touch(ip, Some("jan"), None, None).id, a.id);
        let start = store.note_attempt(ip, Some("jan"), "TikTok", "www.tiktok.com").unwrap();
        assert_eq!(start.event, EventKind::SessionStart);
        assert_eq!(start.session.as_deref(), Some(&*a.id));
        assert!(store.note_attempt(ip, Some("jan"), "TikTok", "m.tiktok.com").is_none());
        store.note_attempt(ip, Some("jan"), "AliExpress", "aliexpress.com");
        tokio::time::advance(Duration::from_secs(61)).await;
        let ended = store.sweep();
        assert_eq!(ended.len(), 1, "piet only browsed: no record");
        let detail = ended[0].detail.as_ref().unwrap();
        assert_eq!(detail["attempts"]["TikTok"], 2);
        assert_eq!(detail["attempts"]["AliExpress"], 1);
        assert_eq!(detail["distinct_hosts"], 3);
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_after_idle_starts_a_new_session_and_ends_the_old() {
        let store = SessionStore::new(Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = store.touch(ip, None, None, None);
        store.note_attempt(ip, None, "TikTok", "tiktok.com");
        tokio::time::advance(Duration::from_secs(120)).await;
        let second = store.touch(ip, None, None, None);
        assert_ne!(first.id, second.id);
        assert_eq!(second.ended.unwrap().session.as_deref(), Some(&*first.id));
    }

    #[tokio::test(start_paused = true)]
    async fn live_describes_only_sessions_with_attempts() {
        let store = SessionStore::new(Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let s = store.touch(a, Some("jan"), Some("raadslaptops"), None);
        store.touch(b, None, None, None);
        store.note_attempt(a, Some("jan"), "TikTok", "www.tiktok.com");
        tokio::time::advance(Duration::from_secs(5)).await;
        let (live, browsing_only) = store.live();
        assert_eq!(browsing_only, 1, "the session that only browsed is counted, not described");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id, &*s.id);
        assert_eq!(
            (live[0].user.as_deref(), live[0].client, live[0].device.as_deref()),
            (Some("jan"), a, Some("raadslaptops"))
        );
        assert_eq!(live[0].attempts["TikTok"], 1);
        assert_eq!((live[0].distinct_hosts, live[0].quiet_for), (1, Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(store.live(), (Vec::new(), 0), "idle sessions are not live, even before a sweep");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_after_a_sweep_of_100_000_clients() {
        let store = SessionStore::new(Duration::from_secs(60));
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            store.touch(ip, None, None, Some("Mozilla/5.0"));
        }
        assert_eq!(store.len(), 100_000);
        assert!(store.capacity() >= 100_000);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(store.sweep().is_empty());
        assert_eq!(store.len(), 0);
        assert!(store.capacity() < 10_000, "capacity {} not returned", store.capacity());
    }
}
