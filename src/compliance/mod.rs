//! Compliance state: who tried to reach a banned site and may therefore not
//! use webmail or iBabs until they have removed the app and cleared their
//! history (the municipal rule). One state for the proxy and the gateway,
//! answered from memory; every change goes to a [`store::Store`]: the state
//! file (written atomically, off the request path, by one writer thread),
//! or with `[cluster]` the file and the cluster's database.

pub mod remediate;
pub mod store;
pub mod writer;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::ComplianceConfig;
use crate::policy::{normalise_host, Host, Subject};
use store::{FileStore, Store};

/// Why compliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a compliance state file: {message}; move it aside to start with no flags", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("compliance.protected: {0:?} is not a host name")]
    BadHost(String),
    #[error("compliance.quarantine: {0:?}: write \"until-attested\" or a duration like \"14d\"")]
    BadQuarantine(String),
    #[error("no randomness for the device cookie key: {0}")]
    Random(String),
}

/// Why a subject is flagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub app: String,
    pub host: String,
    /// When the subject was first flagged (RFC 3339).
    pub since: String,
    pub since_unix: u64,
    /// The audit record that flagged it: the reference number people quote.
    pub seq: Option<u64>,
}

impl Flag {
    /// When the flag was raised, in milliseconds since the epoch (`since`
    /// has milliseconds; `since_unix` only seconds).
    fn since_millis(&self) -> u64 {
        humantime::parse_rfc3339(&self.since)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(self.since_unix.saturating_mul(1000))
    }
}

/// A change to the compliance state, as the other nodes of a cluster need
/// it (`[cluster]`): published by the node where it happened, applied by
/// the others without being published again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Flagged {
        key: String,
        flag: Flag,
    },
    Cleared {
        keys: Vec<String>,
    },
    /// Subject keys seen with a device (its verified cookie id).
    Linked {
        id: String,
        keys: Vec<String>,
    },
}

/// Who a compliance decision is about: the user when authenticated, else
/// the client address (a device range name covers many devices, so it is
/// never used to flag).
pub fn subject_key(subject: &Subject) -> String {
    match &subject.user {
        Some(u) => format!("user:{u}"),
        None => format!("client:{}", subject.client),
    }
}

/// The key of a gateway device cookie: a flag under it follows the device
/// whatever its address or user.
pub fn device_key(id: &str) -> String {
    format!("device:{id}")
}

/// The whole compliance state as a store keeps it (for the file store,
/// the state file's contents).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    flags: BTreeMap<String, Flag>,
    /// Device cookies linked to a flagged subject: kept across a restart,
    /// so a quarantined laptop that changed address stays recognised.
    #[serde(default)]
    devices: BTreeMap<String, DeviceLink>,
    /// The key that signs device cookies and attestation forms (hex): kept
    /// so a flagged device's cookie still counts after a restart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    secret: String,
}

impl StateFile {
    /// The signing key kept in the state (hex; empty when none yet).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The same state with another signing key: a cluster's nodes share one.
    pub fn with_secret(mut self, secret_hex: String) -> StateFile {
        self.secret = secret_hex;
        self
    }
}

/// The subject keys seen with one gateway device cookie, each with when it
/// was last seen with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeviceLink {
    /// Key → last seen together (unix seconds).
    #[serde(default)]
    linked: BTreeMap<String, u64>,
    last_seen_unix: u64,
    /// Whether the device has sent the cookie back: only then does it
    /// stand for a device (a client that drops cookies gets a fresh one on
    /// every request, and those are neither saved nor kept from eviction).
    #[serde(default)]
    returned: bool,
}

/// How many device cookies are remembered; beyond it the longest unseen
/// ones that are not linked to a flag are forgotten first.
const MAX_DEVICES: usize = 100_000;
/// Subject keys remembered per device cookie (oldest dropped first).
const MAX_KEYS_PER_DEVICE: usize = 16;
/// What the attestation form's token is for (see [`crate::tokens`]).
const ATTEST_TOKEN_CONTEXT: &str = "attest";
/// What a device cookie's signature is for (see [`crate::tokens`]).
const DEVICE_TOKEN_CONTEXT: &str = "device";
/// Devices linked to one flagged key at most: a flagged laptop minting
/// cookies cannot grow the state.
const MAX_DEVICES_PER_FLAG: usize = 8;
/// How long an address stays linked to a device after they were last seen
/// together: addresses move (DHCP), and a stale link would refuse one
/// person for another's flag, or let one attest for another.
const CLIENT_LINK_TTL: u64 = 3600;
/// How long a user stays linked to a device after they were last seen together.
const USER_LINK_TTL: u64 = 30 * 24 * 3600;

/// Flags, protected hosts and the means to check attestation forms.
pub struct Compliance {
    protected: HashSet<String>,
    quarantine: Option<Duration>,
    flags: DashMap<String, Flag>,
    /// Gateway device cookie id → subject keys seen with it, so a device is
    /// still recognised when its address changes.
    devices: DashMap<String, DeviceLink>,
    secret: [u8; 32],
    /// Where changes are kept (the state file, or the cluster's database
    /// as well); `None` read-only.
    store: Option<Arc<dyn Store>>,
    /// `on_unavailable = "deny"` while the cluster database is unreachable:
    /// every subject counts as flagged for protected hosts.
    deny_all: AtomicBool,
    /// Keys cleared lately, with when (ms): a flag raised before that and
    /// heard of afterwards (a late notification, a database read racing
    /// the clear) is stale and not taken (`[cluster]`).
    cleared: DashMap<String, u64>,
}

/// How long a clear is remembered against stale flags.
const CLEARED_MEMORY_MS: u64 = 10 * 60 * 1000;

/// The flag every subject has while `deny_all` is set.
fn unavailable_flag() -> Flag {
    Flag {
        app: "(compliance state unavailable)".into(),
        host: "-".into(),
        since: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        since_unix: now_unix(),
        seq: None,
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn link_ttl(key: &str) -> u64 {
    if key.starts_with("client:") {
        CLIENT_LINK_TTL
    } else {
        USER_LINK_TTL
    }
}

impl Compliance {
    /// Opens the state file (missing: no flags) and checks the
    /// configuration: the single-node default.
    pub fn open(config: &ComplianceConfig, state_path: &Path) -> Result<Compliance, ComplianceError> {
        Self::with_store(config, Arc::new(FileStore::open(state_path)?))
    }

    /// Loads the state from `store` and keeps every change there.
    pub fn with_store(config: &ComplianceConfig, store: Arc<dyn Store>) -> Result<Compliance, ComplianceError> {
        let state = store.load()?;
        let mut c = Self::from_state(config, state)?;
        tracing::debug!(store = store.kind(), "compliance state loaded");
        c.store = Some(store);
        Ok(c)
    }

    /// Opens the state for reading only (`policy explain`): nothing is
    /// ever written.
    pub fn open_read_only(config: &ComplianceConfig, state_path: &Path) -> Result<Compliance, ComplianceError> {
        Self::from_state(config, store::read_state_file(state_path)?)
    }

    fn from_state(config: &ComplianceConfig, state: StateFile) -> Result<Compliance, ComplianceError> {
        let mut protected = HashSet::new();
        for h in &config.protected {
            let host = normalise_host(h).map_err(|_| ComplianceError::BadHost(h.clone()))?;
            protected.insert(host.as_key().into_owned());
        }
        let quarantine = parse_quarantine(&config.quarantine)?;
        let mut secret = [0u8; 32];
        match hex::decode(&state.secret).ok().filter(|s| s.len() == 32) {
            Some(saved) => secret.copy_from_slice(&saved),
            None => getrandom::fill(&mut secret).map_err(|e| ComplianceError::Random(e.to_string()))?,
        }
        Ok(Compliance {
            protected,
            quarantine,
            flags: state.flags.into_iter().collect(),
            devices: state.devices.into_iter().collect(),
            secret,
            store: None,
            deny_all: AtomicBool::new(false),
            cleared: DashMap::new(),
        })
    }

    /// Whether a host is a protected system (or a subdomain of one).
    pub fn is_protected(&self, host: &Host) -> bool {
        let key = host.as_key();
        let mut suffix: &str = &key;
        loop {
            if self.protected.contains(suffix) {
                return true;
            }
            if matches!(host, Host::Ip(_)) {
                return false;
            }
            match suffix.split_once('.') {
                Some((_, rest)) => suffix = rest,
                None => return false,
            }
        }
    }

    /// `compliance.quarantine`: `None` until attested.
    pub fn quarantine(&self) -> Option<Duration> {
        self.quarantine
    }

    /// The protected hosts, for the dashboard and the PAC file.
    pub fn protected(&self) -> impl Iterator<Item = &str> {
        self.protected.iter().map(String::as_str)
    }

    /// Flags a subject after a `blocked` attempt that flags. The first flag
    /// in force is kept (its date and reference are what the person is
    /// told), also when two attempts race; the state file is written only
    /// when something changed. Returns whether this call flagged.
    pub fn flag(&self, key: &str, app: &str, host: &str, seq: Option<u64>) -> bool {
        let now = SystemTime::now();
        let new = Flag {
            app: app.to_string(),
            host: host.to_string(),
            since: humantime::format_rfc3339_millis(now).to_string(),
            since_unix: now_unix(),
            seq,
        };
        self.flag_with(key, new)
    }

    /// Flags `key` with `flag` unless a flag in force is there.
    fn flag_with(&self, key: &str, flag: Flag) -> bool {
        let flag_copy = flag.clone();
        let flagged = self.insert_unless(key.to_string(), flag, |held| self.in_force(held));
        if flagged {
            self.persist(Some(Change::Flagged { key: key.to_string(), flag: flag_copy }));
        }
        flagged
    }

    /// Puts `flag` under `key` unless the flag held there satisfies `keep`
    /// (atomically: two racing flags cannot both win); whether it did.
    fn insert_unless(&self, key: String, flag: Flag, keep: impl FnOnce(&Flag) -> bool) -> bool {
        match self.flags.entry(key) {
            dashmap::Entry::Occupied(o) if keep(o.get()) => false,
            dashmap::Entry::Occupied(mut o) => {
                o.insert(flag);
                true
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(flag);
                true
            }
        }
    }

    /// Flags a device cookie with the flag found among its keys, so the
    /// device stays refused when its address or user links age out.
    pub fn flag_device(&self, id: &str, flag: &Flag) {
        self.flag_with(&device_key(id), flag.clone());
    }

    fn in_force(&self, flag: &Flag) -> bool {
        match self.quarantine {
            Some(q) => now_unix().saturating_sub(flag.since_unix) <= q.as_secs(),
            None => true,
        }
    }

    /// The subject's flag, unless the quarantine period has passed.
    pub fn flag_of(&self, key: &str) -> Option<Flag> {
        if self.deny_all.load(Ordering::Relaxed) {
            return Some(self.flags.get(key).map(|f| f.clone()).unwrap_or_else(unavailable_flag));
        }
        let flag = self.flags.get(key)?.clone();
        self.in_force(&flag).then_some(flag)
    }

    /// The first flag among several keys that may name the same person.
    pub fn flag_of_any<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Option<(String, Flag)> {
        keys.into_iter().find_map(|k| self.flag_of(k).map(|f| (k.to_string(), f)))
    }

    /// Clears flags (attestation or an officer); returns the flags cleared.
    pub fn clear<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<(String, Flag)> {
        let cleared: Vec<(String, Flag)> = keys.into_iter().filter_map(|k| self.flags.remove(k)).collect();
        self.remember_cleared(cleared.iter().map(|(k, _)| k.as_str()));
        if !cleared.is_empty() {
            self.persist(Some(Change::Cleared { keys: cleared.iter().map(|(k, _)| k.clone()).collect() }));
        }
        cleared
    }

    /// Removes the flags whose quarantine has ended (privacy by design:
    /// nothing about a person is kept longer than the rule needs); returns
    /// them, for the `flag_cleared` records.
    pub fn expire(&self) -> Vec<(String, Flag)> {
        let ended: Vec<String> =
            self.flags.iter().filter(|e| !self.in_force(e.value())).map(|e| e.key().clone()).collect();
        let removed: Vec<(String, Flag)> =
            ended.iter().filter_map(|k| self.flags.remove_if(k, |_, f| !self.in_force(f))).collect();
        self.remember_cleared(removed.iter().map(|(k, _)| k.as_str()));
        if !removed.is_empty() {
            self.persist(Some(Change::Cleared { keys: removed.iter().map(|(k, _)| k.clone()).collect() }));
        }
        removed
    }

    /// All current flags, oldest first (for officers).
    pub fn flagged(&self) -> Vec<(String, Flag)> {
        let mut all: Vec<(String, Flag)> = self
            .flags
            .iter()
            .filter(|e| self.in_force(e.value()))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.sort_by_key(|(_, f)| f.since_unix);
        all
    }

    /// A new device cookie value, signed so that only cookies weerwal
    /// issued are ever linked: `(id, value)`.
    pub fn issue_device(&self) -> (String, String) {
        let mut bytes = [0u8; 16];
        let _ = getrandom::fill(&mut bytes);
        let id = hex::encode(bytes);
        let value = format!("{id}.{}", crate::tokens::token(&self.secret, DEVICE_TOKEN_CONTEXT, &id));
        (id, value)
    }

    /// The device id of a cookie value weerwal issued; `None` for anything else.
    pub fn verify_device(&self, value: &str) -> Option<String> {
        let (id, mac) = value.split_once('.')?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        crate::tokens::token_ok(&self.secret, DEVICE_TOKEN_CONTEXT, id, mac).then(|| id.to_ascii_lowercase())
    }

    /// Remembers that a device (by its verified cookie id) was seen with
    /// these subject keys now, and returns the keys that name it: the keys
    /// given and those seen with it recently (an address for an hour, a
    /// user for 30 days), then its own `device:` key. `returned` says the client
    /// sent the cookie (rather than being given a fresh one now).
    pub fn link_device(&self, id: &str, keys: &[String], returned: bool) -> Vec<String> {
        if self.devices.len() >= MAX_DEVICES && !self.devices.contains_key(id) {
            self.forget_devices();
        }
        let now = now_unix();
        let own = device_key(id);
        // A flagged key already linked to many devices gains no more.
        let crowded = |k: &String| {
            self.flag_of(k).is_some()
                && self.devices.iter().filter(|d| d.key() != id && d.linked.contains_key(k)).count()
                    >= MAX_DEVICES_PER_FLAG
        };
        let admitted: Vec<&String> = keys.iter().filter(|k| **k != own && !crowded(k)).collect();
        let (all, added) = {
            let mut entry = self.devices.entry(id.to_string()).or_default();
            entry.last_seen_unix = now;
            entry.returned |= returned;
            entry.linked.retain(|k, seen| now.saturating_sub(*seen) <= link_ttl(k));
            let mut added = false;
            for k in admitted {
                added |= entry.linked.insert(k.clone(), now).is_none();
            }
            while entry.linked.len() > MAX_KEYS_PER_DEVICE {
                let oldest = entry.linked.iter().min_by_key(|(_, seen)| **seen).map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => entry.linked.remove(&k),
                    None => break,
                };
            }
            // The device's own key last: a flag found through a link keeps
            // naming the key it was raised under (and the form's token).
            let mut all: Vec<String> = entry.linked.keys().cloned().collect();
            all.push(own);
            (all, added && entry.returned)
        };
        if added && self.flag_of_any(all.iter().map(String::as_str)).is_some() {
            let linked: Vec<String> = all.iter().filter(|k| **k != device_key(id)).cloned().collect();
            self.persist(Some(Change::Linked { id: id.to_string(), keys: linked }));
        }
        all
    }

    /// The store the state is kept in (`None`: read only), so the live
    /// sessions can be shared through it as well.
    pub fn store(&self) -> Option<Arc<dyn Store>> {
        self.store.clone()
    }

    /// Applies a change made on another node (not published again). A flag
    /// in force is kept over a newer one for the same key, as on one node;
    /// a flag whose quarantine has ended is not taken.
    pub fn apply(&self, change: Change) {
        let changed = match change {
            Change::Flagged { key, flag } => {
                if !self.in_force(&flag) || self.cleared_since(&key, &flag) {
                    return;
                }
                let since = flag.since_unix;
                self.insert_unless(key, flag, |held| self.in_force(held) && held.since_unix <= since)
            }
            Change::Cleared { keys } => {
                self.remember_cleared(keys.iter().map(String::as_str));
                keys.iter().filter(|k| self.flags.remove(k.as_str()).is_some()).count() > 0
            }
            Change::Linked { id, keys } => {
                let now = now_unix();
                let mut entry = self.devices.entry(id).or_default();
                entry.last_seen_unix = now;
                entry.returned = true;
                for k in keys {
                    entry.linked.insert(k, now);
                }
                while entry.linked.len() > MAX_KEYS_PER_DEVICE {
                    let oldest = entry.linked.iter().min_by_key(|(_, seen)| **seen).map(|(k, _)| k.clone());
                    match oldest {
                        Some(k) => entry.linked.remove(&k),
                        None => break,
                    };
                }
                true
            }
        };
        if changed {
            self.persist(None);
        }
    }

    /// Replaces every flag with the cluster's (after a reconnect, when
    /// notifications may have been missed), then applies `pending`: this
    /// node's changes the database has not taken yet.
    pub fn replace_all(&self, flags: Vec<(String, Flag)>, devices: Vec<(String, Vec<String>)>, pending: &[Change]) {
        let fresh: std::collections::HashMap<String, Flag> =
            flags.into_iter().filter(|(k, f)| self.in_force(f) && !self.cleared_since(k, f)).collect();
        self.flags.retain(|k, _| fresh.contains_key(k));
        for (k, f) in fresh {
            self.flags.insert(k, f);
        }
        for (id, keys) in devices {
            self.apply(Change::Linked { id, keys });
        }
        for c in pending {
            self.apply(c.clone());
        }
        self.persist(None);
    }

    /// Notes that `keys` were cleared now; forgets clears older than
    /// [`CLEARED_MEMORY_MS`].
    fn remember_cleared<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let now = now_millis();
        for k in keys {
            self.cleared.insert(k.to_string(), now);
        }
        if self.cleared.len() > 1024 {
            self.cleared.retain(|_, at| now.saturating_sub(*at) <= CLEARED_MEMORY_MS);
        }
    }

    /// Whether `key` was cleared after `flag` was raised: the flag is stale.
    fn cleared_since(&self, key: &str, flag: &Flag) -> bool {
        self.cleared.get(key).is_some_and(|at| *at >= flag.since_millis())
    }

    /// `on_unavailable = "deny"`: while set, every subject is refused the
    /// protected hosts (the database that knows the flags is unreachable).
    pub fn set_deny_all(&self, deny: bool) {
        self.deny_all.store(deny, Ordering::Relaxed);
    }

    /// Whether a device link must be kept: a real device (it returned its
    /// cookie) linked to a flag in force.
    fn keeps(&self, id: &str, link: &DeviceLink) -> bool {
        link.returned
            && (self.flag_of(&device_key(id)).is_some()
                || self.flag_of_any(link.linked.keys().map(String::as_str)).is_some())
    }

    /// Makes room for new device cookies (a flood of fresh ones must not
    /// grow memory without bound): forgets the tenth seen longest ago,
    /// never a device linked to a flag in force.
    fn forget_devices(&self) {
        let mut candidates: Vec<(u64, String)> = self
            .devices
            .iter()
            .filter(|e| !self.keeps(e.key(), e.value()))
            .map(|e| (e.last_seen_unix, e.key().clone()))
            .collect();
        candidates.sort_unstable();
        for (_, id) in candidates.into_iter().take(MAX_DEVICES / 10) {
            self.devices.remove_if(&id, |id, link| !self.keeps(id, link));
        }
    }

    /// The token the attestation form must carry: bound to the subject
    /// keys, unguessable without the secret.
    pub fn csrf_token(&self, key: &str) -> String {
        crate::tokens::token(&self.secret, ATTEST_TOKEN_CONTEXT, key)
    }

    /// Checks an attestation form's token in constant time.
    pub fn csrf_ok(&self, key: &str, token: &str) -> bool {
        crate::tokens::token_ok(&self.secret, ATTEST_TOKEN_CONTEXT, key, token)
    }

    /// Hands the current state to the store, with the change that led to
    /// it when this node made it (memory work only here: the store queues).
    fn persist(&self, change: Option<Change>) {
        let Some(store) = &self.store else { return };
        let flags: BTreeMap<String, Flag> = self.flags.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
        let devices = self
            .devices
            .iter()
            .filter(|e| self.keeps(e.key(), e.value()))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        store.keep(StateFile { flags, devices, secret: hex::encode(self.secret) }, change);
    }

    /// Waits until every change so far is on disk (shutdown, tests). Blocks:
    /// call it from `spawn_blocking` on the runtime.
    pub fn flush(&self) {
        if let Some(s) = &self.store {
            s.flush();
        }
    }
}

fn parse_quarantine(s: &str) -> Result<Option<Duration>, ComplianceError> {
    if s == "until-attested" {
        return Ok(None);
    }
    humantime::parse_duration(s).map(Some).map_err(|_| ComplianceError::BadQuarantine(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(q: &str) -> ComplianceConfig {
        ComplianceConfig { protected: vec!["Webmail.Gemeente.nl".into()], quarantine: q.into(), state: None }
    }

    #[test]
    fn flags_persist_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compliance.json");
        let c = Compliance::open(&config("until-attested"), &path).unwrap();
        assert!(c.is_protected(&normalise_host("webmail.gemeente.nl").unwrap()));
        assert!(c.is_protected(&normalise_host("x.webmail.gemeente.nl").unwrap()));
        assert!(!c.is_protected(&normalise_host("gemeente.nl").unwrap()));
        assert!(c.flag("client:10.0.0.1", "AliExpress", "aliexpress.com", Some(42)));
        assert!(!c.flag("client:10.0.0.1", "TikTok", "tiktok.com", Some(43)));
        assert_eq!(c.flag_of("client:10.0.0.1").unwrap().seq, Some(42), "the first flag is kept");
        c.flush();
        let reopened = Compliance::open(&config("until-attested"), &path).unwrap();
        assert_eq!(reopened.flag_of("client:10.0.0.1").unwrap().app, "AliExpress");
        assert_eq!(reopened.clear(["client:10.0.0.1"]).len(), 1);
        reopened.flush();
        let again = Compliance::open(&config("until-attested"), &path).unwrap();
        assert!(again.flag_of("client:10.0.0.1").is_none());
    }

    #[test]
    fn a_flagged_devices_cookie_link_survives_a_restart_and_is_dropped_once_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compliance.json");
        let c = Compliance::open(&config("until-attested"), &path).unwrap();
        let (a, _) = c.issue_device();
        let (b, _) = c.issue_device();
        let (fresh, _) = c.issue_device();
        c.link_device(&a, &["client:10.0.0.1".into()], false);
        c.link_device(&a, &["client:10.0.0.1".into()], true);
        c.link_device(&b, &["client:10.0.0.2".into()], true);
        // A client that never returns its cookie: linked, never saved.
        c.link_device(&fresh, &["client:10.0.0.1".into()], false);
        c.flag("client:10.0.0.1", "AliExpress", "aliexpress.com", Some(1));
        c.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&a) && !text.contains(&fresh) && !text.contains(&b), "{text}");
        let reopened = Compliance::open(&config("until-attested"), &path).unwrap();
        // From a new address, the flagged device's cookie still names it.
        let keys = reopened.link_device(&a, &["client:10.0.0.9".into()], true);
        assert_eq!(keys, ["client:10.0.0.1".into(), "client:10.0.0.9".into(), device_key(&a)]);
        assert!(reopened.flag_of_any(keys.iter().map(String::as_str)).is_some());
        // An unflagged device's link was not written to disk.
        assert_eq!(reopened.link_device(&b, &[], true), [device_key(&b)]);
        reopened.clear(["client:10.0.0.1"]);
        reopened.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&a), "{text}");
    }

    #[test]
    fn only_cookies_weerwal_signed_are_devices_and_they_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compliance.json");
        let c = Compliance::open(&config("until-attested"), &path).unwrap();
        let (id, value) = c.issue_device();
        assert_eq!(c.verify_device(&value).as_deref(), Some(id.as_str()));
        for forged in [id.clone(), format!("{id}.00000000000000000000000000000000"), "x.y".into(), String::new()] {
            assert_eq!(c.verify_device(&forged), None, "{forged:?}");
        }
        c.flag("client:10.0.0.1", "TikTok", "tiktok.com", None);
        c.flush();
        let reopened = Compliance::open(&config("until-attested"), &path).unwrap();
        assert_eq!(reopened.verify_device(&value).as_deref(), Some(id.as_str()), "the signing key is kept");
    }

    #[test]
    fn a_stale_address_link_neither_refuses_nor_attests_for_another_device() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compliance::open(&config("until-attested"), &dir.path().join("c.json")).unwrap();
        let (laptop, _) = c.issue_device();
        // The laptop had 10.0.0.5 two hours ago.
        c.devices.insert(
            laptop.clone(),
            DeviceLink {
                linked: [("client:10.0.0.5".to_string(), now_unix() - 7200)].into(),
                last_seen_unix: now_unix() - 7200,
                returned: true,
            },
        );
        // A phone now holds 10.0.0.5 and is flagged there.
        c.flag("client:10.0.0.5", "TikTok", "tiktok.com", Some(9));
        let keys = c.link_device(&laptop, &["client:10.0.0.8".into()], true);
        assert!(!keys.contains(&"client:10.0.0.5".to_string()), "{keys:?}");
        assert!(c.flag_of_any(keys.iter().map(String::as_str)).is_none(), "the laptop is not refused");
    }

    #[test]
    fn a_flagged_key_links_to_a_bounded_number_of_devices() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compliance::open(&config("until-attested"), &dir.path().join("c.json")).unwrap();
        c.flag("client:10.0.0.1", "TikTok", "tiktok.com", None);
        let linked = (0..40)
            .filter(|_| {
                let (id, _) = c.issue_device();
                c.link_device(&id, &["client:10.0.0.1".into()], true).contains(&"client:10.0.0.1".to_string())
            })
            .count();
        assert_eq!(linked, MAX_DEVICES_PER_FLAG);
    }

    #[test]
    fn racing_flags_keep_the_first_and_expired_flags_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Compliance::open(&config("14d"), &dir.path().join("c.json")).unwrap());
        let won: usize = (0..8u64)
            .map(|i| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || c.flag("user:jan", "TikTok", "tiktok.com", Some(i)) as usize)
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(won, 1, "exactly one flag wins");
        let seq = c.flag_of("user:jan").unwrap().seq;
        assert!(!c.flag("user:jan", "AliExpress", "aliexpress.com", Some(99)));
        assert_eq!(c.flag_of("user:jan").unwrap().seq, seq);
        c.flags.insert(
            "client:10.0.0.3".into(),
            Flag { app: "TikTok".into(), host: "tiktok.com".into(), since: String::new(), since_unix: 0, seq: None },
        );
        let expired = c.expire();
        assert_eq!(expired.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["client:10.0.0.3"]);
        assert!(c.flags.get("client:10.0.0.3").is_none());
        assert!(c.flag_of("user:jan").is_some());
    }

    #[test]
    fn a_flag_heard_of_after_its_clear_is_stale_and_a_later_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compliance::open(&config("until-attested"), &dir.path().join("c.json")).unwrap();
        let raised = |ms_ago: u64| {
            let at = SystemTime::now() - Duration::from_millis(ms_ago);
            Flag {
                app: "TikTok".into(),
                host: "tiktok.com".into(),
                since: humantime::format_rfc3339_millis(at).to_string(),
                since_unix: at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
                seq: Some(1),
            }
        };
        // Another node's flag, then its clear here, then the flag's
        // notification arriving late: the clear stands.
        let old = raised(500);
        c.apply(Change::Flagged { key: "client:10.0.0.1".into(), flag: old.clone() });
        assert_eq!(c.clear(["client:10.0.0.1"]).len(), 1);
        c.apply(Change::Flagged { key: "client:10.0.0.1".into(), flag: old.clone() });
        assert!(c.flag_of("client:10.0.0.1").is_none(), "a stale flag came back");
        c.replace_all(vec![("client:10.0.0.1".into(), old)], vec![], &[]);
        assert!(c.flag_of("client:10.0.0.1").is_none(), "a reload racing the clear brought it back");
        // A flag raised after the clear is a new attempt: taken.
        std::thread::sleep(Duration::from_millis(5));
        c.apply(Change::Flagged { key: "client:10.0.0.1".into(), flag: raised(0) });
        assert!(c.flag_of("client:10.0.0.1").is_some());
    }

    #[test]
    fn quarantine_for_a_duration_ends_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compliance.json");
        let fifteen_days_ago = now_unix() - 15 * 24 * 3600;
        let flag = |since_unix| Flag {
            app: "TikTok".into(),
            host: "tiktok.com".into(),
            since: String::new(),
            since_unix,
            seq: None,
        };
        let state = StateFile {
            flags: [
                ("client:10.0.0.1".to_string(), flag(fifteen_days_ago)),
                ("client:10.0.0.2".to_string(), flag(now_unix())),
            ]
            .into(),
            devices: BTreeMap::new(),
            secret: String::new(),
        };
        writer::write_atomically(&path, &serde_json::to_vec(&state).unwrap()).unwrap();
        let c = Compliance::open(&config("14d"), &path).unwrap();
        assert!(c.flag_of("client:10.0.0.1").is_none(), "15 days is past a 14-day quarantine");
        assert!(c.flag_of("client:10.0.0.2").is_some());
        let c = Compliance::open(&config("until-attested"), &path).unwrap();
        assert!(c.flag_of("client:10.0.0.1").is_some(), "until-attested never ends by itself");
    }

    #[test]
    fn the_state_file_is_0600_even_over_a_stale_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compliance.json");
        let stale = dir.path().join(".compliance.json.tmp");
        std::fs::write(&stale, "{}").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Compliance::open(&config("until-attested"), &path).unwrap();
        c.flag("client:10.0.0.1", "TikTok", "tiktok.com", None);
        c.flush();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn csrf_token_is_bound_to_the_subject() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compliance::open(&config("14d"), &dir.path().join("c.json")).unwrap();
        let t = c.csrf_token("client:10.0.0.1");
        assert!(c.csrf_ok("client:10.0.0.1", &t));
        assert!(!c.csrf_ok("client:10.0.0.2", &t));
        assert!(!c.csrf_ok("client:10.0.0.1", ""));
        assert!(Compliance::open(&config("soon"), &dir.path().join("d.json")).is_err());
    }
}
