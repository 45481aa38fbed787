//! Coalescing repeated attempts, so one looping client cannot fill the
//! audit volume (issue 15). The writer asks [`Coalescer::admit`] about each
//! attempt record before writing it. Within a window that starts at a
//! subject's first attempt on an (event, app, host), the first `after`
//! attempts are written one by one; the ones after that are counted
//! instead, and answered with the `seq` of the window's first record (the
//! block page's reference number). When the window closes, one record with
//! the count is written: the same event as the attempts, with
//! `detail.coalesced` = how many attempts it stands for (none goes
//! uncounted), `detail.first_seq`, and the window's start and end.
//!
//! Pure state: the writer thread owns it, so no locks, and unit tests drive
//! it with their own clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use super::record::{EventKind, Record};

/// Open windows kept at most; past this, new keys are written one by one
/// (never dropped) until windows close.
const MAX_OPEN: usize = 100_000;

/// What makes two attempts "identical".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    event: EventKind,
    user: Option<String>,
    client: Option<IpAddr>,
    app: Option<String>,
    host: Option<String>,
}

impl Key {
    /// The key of an attempt record; `None` for records that are never
    /// coalesced (sessions, logins, officers' actions, the writer's own).
    pub fn of(record: &Record) -> Option<Key> {
        if !matches!(
            record.event,
            EventKind::Blocked | EventKind::Exempted | EventKind::AppDetected | EventKind::GatewayDenied
        ) || record.detail.as_ref().is_some_and(|d| d.get("coalesced").is_some())
        {
            return None;
        }
        Some(Key {
            event: record.event,
            // The subject: the user when known, else the address.
            client: if record.user.is_some() { None } else { record.client },
            user: record.user.clone(),
            app: record.app.clone(),
            host: record.host.clone(),
        })
    }
}

/// What to do with an attempt record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Not an attempt, or coalescing is off: write it.
    Write,
    /// Write it; then tell [`Coalescer::written`] its `seq` under this key.
    WriteFirst(Key),
    /// Counted, not written: answer with the window's first `seq` (`None`
    /// while that record is not written yet, or could not be).
    Counted(Key),
}

struct Window {
    opened: Instant,
    opened_at: SystemTime,
    written: u32,
    counted: u64,
    first_seq: Option<u64>,
    last_at: SystemTime,
    /// The window's first record, the template of its count record.
    template: Record,
}

/// The open windows; see the module documentation.
pub struct Coalescer {
    after: u32,
    window: Duration,
    open: HashMap<Key, Window>,
}

impl Coalescer {
    /// `after` attempts written per window before counting starts (0: off).
    pub fn new(after: u32, window: Duration) -> Coalescer {
        Coalescer { after, window, open: HashMap::new() }
    }

    /// Whether anything is ever coalesced.
    pub fn enabled(&self) -> bool {
        self.after > 0 && !self.window.is_zero()
    }

    /// Decides about `record` arriving at `now` (`at`: the wall clock, for
    /// the count record's window times).
    pub fn admit(&mut self, record: &Record, now: Instant, at: SystemTime) -> Admission {
        if !self.enabled() {
            return Admission::Write;
        }
        let Some(key) = Key::of(record) else { return Admission::Write };
        if let Some(w) = self.open.get_mut(&key) {
            if now.duration_since(w.opened) < self.window {
                if w.written < self.after {
                    w.written += 1;
                    return Admission::WriteFirst(key);
                }
                w.counted += 1;
                w.last_at = at;
                return Admission::Counted(key);
            }
            // Expired but not yet collected by `due`: that happens before
            // the next batch; meanwhile this attempt is simply written.
            return Admission::Write;
        }
        if self.open.len() >= MAX_OPEN {
            return Admission::Write;
        }
        self.open.insert(
            key.clone(),
            Window {
                opened: now,
                opened_at: at,
                written: 1,
                counted: 0,
                first_seq: None,
                last_at: at,
                template: record.clone(),
            },
        );
        Admission::WriteFirst(key)
    }

    /// A record admitted with [`Admission::WriteFirst`] was written as `seq`.
    pub fn written(&mut self, key: &Key, seq: u64) {
        if let Some(w) = self.open.get_mut(key) {
            w.first_seq.get_or_insert(seq);
        }
    }

    /// A counted attempt could not be answered with a reference (its
    /// window's first record was not written): it is not counted either.
    pub fn uncount(&mut self, key: &Key) {
        if let Some(w) = self.open.get_mut(key) {
            w.counted = w.counted.saturating_sub(1);
        }
    }

    /// The reference a counted attempt is answered with.
    pub fn first_seq(&self, key: &Key) -> Option<u64> {
        self.open.get(key).and_then(|w| w.first_seq)
    }

    /// Closes the windows that are over at `now`; returns the count record
    /// of each that counted anything.
    pub fn due(&mut self, now: Instant) -> Vec<Record> {
        if self.open.is_empty() {
            return Vec::new();
        }
        let window = self.window;
        let over: Vec<Key> =
            self.open.iter().filter(|(_, w)| now.duration_since(w.opened) >= window).map(|(k, _)| k.clone()).collect();
        over.into_iter().filter_map(|k| self.open.remove(&k)).filter_map(count_record).collect()
    }

    /// Closes every window (the writer is stopping): nothing stays uncounted.
    pub fn drain(&mut self) -> Vec<Record> {
        self.open.drain().map(|(_, w)| w).filter_map(count_record).collect()
    }

    /// When the next window closes, for the writer's wake-up.
    pub fn next_due(&self) -> Option<Instant> {
        self.open.values().map(|w| w.opened + self.window).min()
    }
}

fn count_record(w: Window) -> Option<Record> {
    if w.counted == 0 {
        return None;
    }
    let mut r = w.template;
    r.seq = 0;
    r.ts.clear();
    r.prev.clear();
    r.hash.clear();
    r.detail = Some(serde_json::json!({
        "coalesced": w.counted,
        "first_seq": w.first_seq,
        "from": humantime::format_rfc3339_millis(w.opened_at).to_string(),
        "to": humantime::format_rfc3339_millis(w.last_at).to_string(),
    }));
    Some(r)
}

/// How many attempts a record stands for: 1, or its `detail.coalesced`.
pub fn attempts(record: &Record) -> u64 {
    record.detail.as_ref().and_then(|d| d.get("coalesced")).and_then(|c| c.as_u64()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(client: &str, host: &str) -> Record {
        let mut r = Record::new(EventKind::Blocked);
        r.client = client.parse().ok();
        r.app = Some("AliExpress".into());
        r.host = Some(host.into());
        r
    }

    #[test]
    fn after_the_first_few_attempts_are_counted_and_the_window_writes_one_count() {
        let mut c = Coalescer::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let at = SystemTime::now();
        let r = blocked("10.0.0.1", "aliexpress.com");
        let mut seq = 10;
        for _ in 0..3 {
            match c.admit(&r, t0, at) {
                Admission::WriteFirst(k) => {
                    c.written(&k, seq);
                    seq += 1;
                }
                a => panic!("{a:?}"),
            }
        }
        for _ in 0..97 {
            let Admission::Counted(k) = c.admit(&r, t0 + Duration::from_secs(1), at) else { panic!() };
            assert_eq!(c.first_seq(&k), Some(10));
        }
        // Another host, another subject: their own windows.
        assert!(matches!(c.admit(&blocked("10.0.0.1", "ae01.alicdn.com"), t0, at), Admission::WriteFirst(_)));
        assert!(matches!(c.admit(&blocked("10.0.0.2", "aliexpress.com"), t0, at), Admission::WriteFirst(_)));
        assert!(c.due(t0 + Duration::from_secs(59)).is_empty());
        let counts = c.due(t0 + Duration::from_secs(60));
        assert_eq!(counts.len(), 1, "only the window that counted writes a count");
        assert_eq!(attempts(&counts[0]), 97);
        assert_eq!(counts[0].detail.as_ref().unwrap()["first_seq"], 10);
        assert!(Key::of(&counts[0]).is_none(), "a count record is never counted again");
        // A new window starts afresh.
        assert!(matches!(c.admit(&r, t0 + Duration::from_secs(61), at), Admission::WriteFirst(_)));
        assert!(c.drain().is_empty());
    }

    #[test]
    fn off_and_other_events_are_always_written() {
        let mut c = Coalescer::new(0, Duration::from_secs(60));
        let r = blocked("10.0.0.1", "aliexpress.com");
        for _ in 0..10 {
            assert_eq!(c.admit(&r, Instant::now(), SystemTime::now()), Admission::Write);
        }
        let mut c = Coalescer::new(1, Duration::from_secs(60));
        for _ in 0..10 {
            assert_eq!(
                c.admit(&Record::new(EventKind::AuthFailed), Instant::now(), SystemTime::now()),
                Admission::Write
            );
        }
    }
}
