//! The audit record: one JSON object per line of `logs/audit.jsonl`, the
//! officers' evidence. Field names and order are a stable interface.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What happened. Only policy-relevant events exist: ordinary browsing is
/// never recorded (data minimisation, AVG/GDPR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Blocked,
    Exempted,
    AppDetected,
    SessionStart,
    SessionEnd,
    GatewayDenied,
    Attested,
    FlagCleared,
    PolicyLoaded,
    AuthFailed,
    Retention,
}

/// Which listener saw the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Proxy,
    Gateway,
    Admin,
    System,
    /// The DNS listener (`[dns]`).
    Dns,
}

/// One audit record. Callers fill in what they know; the writer assigns
/// `seq`, `ts`, `prev` and `hash`, so order and chaining are decided in one place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub ts: String,
    pub event: EventKind,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub client: Option<IpAddr>,
    /// Always written (null when the address has no device name), like
    /// `session`, `user` and `client`: every record says who it is about.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Whether the attempt was a top-level navigation (`Sec-Fetch-Mode:
    /// navigate`) rather than an embedded sub-resource; absent when the
    /// request did not say (an app, an old browser, a CONNECT alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub navigation: Option<bool>,
    /// Whether this attempt flagged its subject for the compliance gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagged: Option<bool>,
    /// Why: the exemption's reason, or what an officer wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Event-specific facts (policy digest and counts, session summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The cluster node that wrote the record (`[cluster] node`); absent
    /// on a node without `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default)]
    pub prev: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl Record {
    /// A record of `event` with every other field empty.
    pub fn new(event: EventKind) -> Record {
        Record {
            seq: 0,
            ts: String::new(),
            event,
            session: None,
            user: None,
            client: None,
            device: None,
            app: None,
            rule: None,
            host: None,
            port: None,
            method: None,
            path: None,
            via: None,
            user_agent: None,
            navigation: None,
            flagged: None,
            reason: None,
            detail: None,
            node: None,
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// Serialises the record as its final line (with `hash`, ending in a
    /// newline) into `out`, and returns the hash. The hash is SHA-256 over
    /// the line as written without its `hash` field: the canonical form.
    pub fn write_line(&self, out: &mut Vec<u8>) -> Result<String, serde_json::Error> {
        let start = out.len();
        if self.hash.is_empty() {
            serde_json::to_writer(&mut *out, self)?;
        } else {
            let mut unhashed = self.clone();
            unhashed.hash.clear();
            serde_json::to_writer(&mut *out, &unhashed)?;
        }
        let hash = hex::encode(Sha256::digest(&out[start..]));
        // Replace the closing brace with the hash field.
        out.pop();
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        Ok(hash)
    }
}

/// The `prev` of the very first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Recomputes a line's hash from its text, for `logs verify` and for
/// resuming the chain. `None` when the line has no well-formed hash field.
pub fn line_hash(line: &str) -> Option<(String, &str)> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let body = line.strip_suffix("\"}")?;
    let idx = body.rfind(",\"hash\":\"")?;
    let claimed = &body[idx + 9..];
    if claimed.len() != 64 {
        return None;
    }
    let mut canonical = String::with_capacity(idx + 1);
    canonical.push_str(&body[..idx]);
    canonical.push('}');
    Some((hex::encode(Sha256::digest(canonical.as_bytes())), claimed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_carries_a_hash_that_can_be_recomputed() {
        let mut r = Record::new(EventKind::Blocked);
        r.seq = 7;
        r.ts = "2026-11-23T10:15:02.123Z".into();
        r.host = Some("aliexpress.com".into());
        r.prev = GENESIS.into();
        let mut out = Vec::new();
        let hash = r.write_line(&mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with(
                "{\"seq\":7,\"ts\":\"2026-11-23T10:15:02.123Z\",\"event\":\"blocked\",\"session\":null,\"user\":null,"
            ),
            "{line}"
        );
        assert!(line.ends_with(&format!("\"hash\":\"{hash}\"}}\n")));
        let (recomputed, claimed) = line_hash(&line).unwrap();
        assert_eq!(recomputed, claimed);
        let parsed: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed.hash, hash);
        // An edited line no longer matches its hash.
        let edited = line.replace("aliexpress.com", "example.com");
        let (recomputed, claimed) = line_hash(&edited).unwrap();
        assert_ne!(recomputed, claimed);
    }
}
