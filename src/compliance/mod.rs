//! Compliance state: who tried to reach a banned site and may therefore not
//! use webmail or iBabs until they have removed the app and cleared their
//! history (the municipal rule). One state for the proxy and the gateway;
//! it survives restarts through a small state file written atomically.

pub mod remediate;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ComplianceConfig;
use crate::policy::{normalise_host, Host, Subject};

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

/// A change to the compliance state, as the other nodes of a cluster need
/// it (`[cluster]`): published by the node where it happened, applied by
/// the others without being published again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Flagged { key: String, flag: Flag },
    Cleared { keys: Vec<String> },
    Linked { cookie: String, keys: Vec<String> },
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    flags: BTreeMap<String, Flag>,
    /// Device cookies linked to a flagged subject: kept across a restart,
    /// so a quarantined laptop that changed address stays recognised.
    #[serde(default)]
    devices: BTreeMap<String, DeviceLink>,
}

/// The subject keys seen with one gateway device cookie.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeviceLink {
    keys: Vec<String>,
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

/// Flags, protected hosts and the means to check attestation forms.
pub struct Compliance {
    protected: HashSet<String>,
    quarantine: Option<Duration>,
    flags: DashMap<String, Flag>,
    /// Gateway device cookie → subject keys seen with it, so a device is
    /// still recognised when its address changes.
    devices: DashMap<String, DeviceLink>,
    state_path: PathBuf,
    secret: [u8; 32],
    persist_lock: Mutex<()>,
    /// Where changes made on this node are published (`[cluster]`).
    changes: OnceLock<tokio::sync::mpsc::UnboundedSender<Change>>,
    /// `on_unavailable = "deny"` while the cluster database is unreachable:
    /// every subject counts as flagged for protected hosts.
    deny_all: AtomicBool,
}

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

impl Compliance {
    /// Opens the state file (missing: no flags) and checks the configuration.
    pub fn open(config: &ComplianceConfig, state_path: &Path) -> Result<Compliance, ComplianceError> {
        let mut protected = HashSet::new();
        for h in &config.protected {
            let host = normalise_host(h).map_err(|_| ComplianceError::BadHost(h.clone()))?;
            protected.insert(host.as_key().into_owned());
        }
        let quarantine = parse_quarantine(&config.quarantine)?;
        let state: StateFile = match std::fs::read_to_string(state_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| ComplianceError::Corrupt { path: state_path.to_path_buf(), message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(source) => return Err(ComplianceError::Io { path: state_path.to_path_buf(), source }),
        };
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ComplianceError::Io {
            path: state_path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Compliance {
            protected,
            quarantine,
            flags: state.flags.into_iter().collect(),
            devices: state.devices.into_iter().collect(),
            state_path: state_path.to_path_buf(),
            secret,
            persist_lock: Mutex::new(()),
            changes: OnceLock::new(),
            deny_all: AtomicBool::new(false),
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

    /// The protected hosts, for the PAC file.
    pub fn protected(&self) -> impl Iterator<Item = &str> {
        self.protected.iter().map(String::as_str)
    }

    /// Flags a subject after a `blocked` or `app_detected` record. The
    /// first flag is kept (its date and reference are what the person is
    /// told); the state file is written only when something changed.
    pub fn flag(&self, key: &str, app: &str, host: &str, seq: Option<u64>) {
        if self.flag_of(key).is_some() {
            return;
        }
        let now = SystemTime::now();
        let flag = Flag {
            app: app.to_string(),
            host: host.to_string(),
            since: humantime::format_rfc3339_millis(now).to_string(),
            since_unix: now_unix(),
            seq,
        };
        self.flags.insert(key.to_string(), flag.clone());
        self.persist();
        self.publish(Change::Flagged { key: key.to_string(), flag });
    }

    /// The subject's flag, unless the quarantine period has passed.
    pub fn flag_of(&self, key: &str) -> Option<Flag> {
        if self.deny_all.load(Ordering::Relaxed) {
            return Some(self.flags.get(key).map(|f| f.clone()).unwrap_or_else(unavailable_flag));
        }
        let flag = self.flags.get(key)?.clone();
        if let Some(q) = self.quarantine {
            if now_unix().saturating_sub(flag.since_unix) > q.as_secs() {
                return None;
            }
        }
        Some(flag)
    }

    /// The first flag among several keys that may name the same person.
    pub fn flag_of_any<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Option<(String, Flag)> {
        keys.into_iter().find_map(|k| self.flag_of(k).map(|f| (k.to_string(), f)))
    }

    /// Clears flags (attestation or an officer); returns the flags cleared.
    pub fn clear<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<(String, Flag)> {
        let cleared: Vec<(String, Flag)> = keys.into_iter().filter_map(|k| self.flags.remove(k)).collect();
        if !cleared.is_empty() {
            self.persist();
            self.publish(Change::Cleared { keys: cleared.iter().map(|(k, _)| k.clone()).collect() });
        }
        cleared
    }

    /// All current flags, oldest first (for officers).
    pub fn flagged(&self) -> Vec<(String, Flag)> {
        let mut all: Vec<(String, Flag)> = self
            .flags
            .iter()
            .filter(|e| self.flag_of(e.key()).is_some())
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        all.sort_by_key(|(_, f)| f.since_unix);
        all
    }

    /// Remembers that a device cookie was seen with these subject keys and
    /// returns every key known for the device. `returned` says the client
    /// sent the cookie (rather than being given a fresh one now). A
    /// returned cookie that gains a key while linked to a flag is saved at
    /// once, so the link survives a restart.
    pub fn link_device(&self, cookie: &str, keys: &[String], returned: bool) -> Vec<String> {
        if self.devices.len() >= MAX_DEVICES && !self.devices.contains_key(cookie) {
            self.forget_devices();
        }
        let (all, added) = {
            let mut entry = self.devices.entry(cookie.to_string()).or_default();
            entry.last_seen_unix = now_unix();
            entry.returned |= returned;
            let mut added = false;
            for k in keys {
                if !entry.keys.contains(k) {
                    if entry.keys.len() >= MAX_KEYS_PER_DEVICE {
                        entry.keys.remove(0);
                    }
                    entry.keys.push(k.clone());
                    added = true;
                }
            }
            (entry.keys.clone(), added && entry.returned)
        };
        if added && self.flag_of_any(all.iter().map(String::as_str)).is_some() {
            self.persist();
            self.publish(Change::Linked { cookie: cookie.to_string(), keys: all.clone() });
        }
        all
    }

    /// Publishes this node's changes to `to` from now on (`[cluster]`).
    pub fn publish_to(&self, to: tokio::sync::mpsc::UnboundedSender<Change>) {
        let _ = self.changes.set(to);
    }

    fn publish(&self, change: Change) {
        if let Some(tx) = self.changes.get() {
            let _ = tx.send(change);
        }
    }

    /// Applies a change made on another node (not published again). Of two
    /// flags for one subject the older is kept, as on one node.
    pub fn apply(&self, change: Change) {
        let changed = match change {
            Change::Flagged { key, flag } => match self.flags.get(&key).map(|f| f.since_unix) {
                Some(since) if since <= flag.since_unix => false,
                _ => {
                    self.flags.insert(key, flag);
                    true
                }
            },
            Change::Cleared { keys } => keys.iter().filter(|k| self.flags.remove(k.as_str()).is_some()).count() > 0,
            Change::Linked { cookie, keys } => {
                let mut entry = self.devices.entry(cookie).or_default();
                entry.last_seen_unix = now_unix();
                entry.returned = true;
                for k in keys {
                    if !entry.keys.contains(&k) {
                        if entry.keys.len() >= MAX_KEYS_PER_DEVICE {
                            entry.keys.remove(0);
                        }
                        entry.keys.push(k);
                    }
                }
                true
            }
        };
        if changed {
            self.persist();
        }
    }

    /// Replaces every flag with the cluster's (after a reconnect, when
    /// notifications may have been missed), then applies `pending`: this
    /// node's changes the database has not taken yet.
    pub fn replace_all(&self, flags: Vec<(String, Flag)>, devices: Vec<(String, Vec<String>)>, pending: &[Change]) {
        let fresh: std::collections::HashMap<String, Flag> = flags.into_iter().collect();
        self.flags.retain(|k, _| fresh.contains_key(k));
        for (k, f) in fresh {
            self.flags.insert(k, f);
        }
        for (cookie, keys) in devices {
            self.apply(Change::Linked { cookie, keys });
        }
        for c in pending {
            self.apply(c.clone());
        }
        self.persist();
    }

    /// `on_unavailable = "deny"`: while set, every subject is refused the
    /// protected hosts (the database that knows the flags is unreachable).
    pub fn set_deny_all(&self, deny: bool) {
        self.deny_all.store(deny, Ordering::Relaxed);
    }

    /// Whether a device link must be kept: a real device (it returned its
    /// cookie) linked to a flag in force.
    fn keeps(&self, link: &DeviceLink) -> bool {
        link.returned && self.flag_of_any(link.keys.iter().map(String::as_str)).is_some()
    }

    /// Makes room for new device cookies (a flood of fresh ones must not
    /// grow memory without bound): forgets the tenth seen longest ago,
    /// never a device linked to a flag in force.
    fn forget_devices(&self) {
        let mut candidates: Vec<(u64, String)> = self
            .devices
            .iter()
            .filter(|e| !self.keeps(e.value()))
            .map(|e| (e.last_seen_unix, e.key().clone()))
            .collect();
        candidates.sort_unstable();
        for (_, cookie) in candidates.into_iter().take(MAX_DEVICES / 10) {
            self.devices.remove_if(&cookie, |_, link| !self.keeps(link));
        }
    }

    /// The token the attestation form must carry: bound to the subject
    /// keys, unguessable without the process secret.
    pub fn csrf_token(&self, key: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(b"attest\0");
        h.update(key.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Checks an attestation form's token in constant time.
    pub fn csrf_ok(&self, key: &str, token: &str) -> bool {
        let expected = self.csrf_token(key);
        expected.len() == token.len() && expected.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    fn persist(&self) {
        let _guard = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        let flags: BTreeMap<String, Flag> = self.flags.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
        let devices = self
            .devices
            .iter()
            .filter(|e| self.keeps(e.value()))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let state = StateFile { flags, devices };
        if let Err(e) = write_atomically(&self.state_path, &state) {
            tracing::error!(path = %self.state_path.display(), error = %e, "cannot save compliance state; flags hold until restart");
        }
    }
}

fn parse_quarantine(s: &str) -> Result<Option<Duration>, ComplianceError> {
    if s == "until-attested" {
        return Ok(None);
    }
    humantime::parse_duration(s).map(Some).map_err(|_| ComplianceError::BadQuarantine(s.to_string()))
}

fn write_atomically(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".compliance.json.tmp");
    // Created anew: a mode given at open applies only to a file it creates.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    // Names and addresses of flagged people: readable by weerwal only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(q: &str) -> ComplianceConfig {
        ComplianceConfig { protected: vec!["Webmail.Gemeente.nl".into()], quarantine: q.into() }
    }

    #[test]
    fn flags_persist_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compliance.json");
        let c = Compliance::open(&config("until-attested"), &path).unwrap();
        assert!(c.is_protected(&normalise_host("webmail.gemeente.nl").unwrap()));
        assert!(c.is_protected(&normalise_host("x.webmail.gemeente.nl").unwrap()));
        assert!(!c.is_protected(&normalise_host("gemeente.nl").unwrap()));
        c.flag("client:10.0.0.1", "AliExpress", "aliexpress.com", Some(42));
        c.flag("client:10.0.0.1", "TikTok", "tiktok.com", Some(43));
        assert_eq!(c.flag_of("client:10.0.0.1").unwrap().seq, Some(42), "the first flag is kept");
        let reopened = Compliance::open(&config("until-attested"), &path).unwrap();
        assert_eq!(reopened.flag_of("client:10.0.0.1").unwrap().app, "AliExpress");
        assert_eq!(reopened.clear(["client:10.0.0.1"]).len(), 1);
        let again = Compliance::open(&config("until-attested"), &path).unwrap();
        assert!(again.flag_of("client:10.0.0.1").is_none());
    }

    #[test]
    fn a_flagged_devices_cookie_link_survives_a_restart_and_is_dropped_once_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compliance.json");
        let c = Compliance::open(&config("until-attested"), &path).unwrap();
        c.link_device("cookie-a", &["client:10.0.0.1".into()], false);
        c.link_device("cookie-a", &["client:10.0.0.1".into()], true);
        c.link_device("cookie-b", &["client:10.0.0.2".into()], true);
        // A client that never returns its cookie: linked, never saved.
        c.link_device("cookie-fresh", &["client:10.0.0.1".into()], false);
        c.flag("client:10.0.0.1", "AliExpress", "aliexpress.com", Some(1));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("cookie-a") && !text.contains("cookie-fresh") && !text.contains("cookie-b"), "{text}");
        let reopened = Compliance::open(&config("until-attested"), &path).unwrap();
        // From a new address, the flagged device's cookie still names it.
        let keys = reopened.link_device("cookie-a", &["client:10.0.0.9".into()], true);
        assert_eq!(keys, ["client:10.0.0.1", "client:10.0.0.9"]);
        assert!(reopened.flag_of_any(keys.iter().map(String::as_str)).is_some());
        // An unflagged device's link was not written to disk.
        assert_eq!(reopened.link_device("cookie-b", &[], true), Vec::<String>::new());
        reopened.clear(["client:10.0.0.1"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("cookie-a"), "{text}");
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
        };
        write_atomically(&path, &state).unwrap();
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
