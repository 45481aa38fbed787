//! What the dashboard reads from the audit log, through the same functions
//! as `weerwal logs`: the files in chain order ([`reader::select`]), the
//! filters ([`FilterArgs::to_filter`], [`Filter::matches`]), the report
//! ([`report::report`]), the CSV columns ([`query::csv_fields`]) and the
//! chain check ([`verify::verify`]). The records come from a [`Source`]:
//! the local files, or with `[cluster]` every node's records in the
//! database. All of it blocks: call it off the async runtime
//! (`spawn_blocking`).

use std::collections::VecDeque;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::source::Source;
use crate::audit::cli::FilterArgs;
use crate::audit::output::csv_row;
use crate::audit::query::{csv_fields, Filter, RunError, Skipped, View, COLUMNS};
use crate::audit::reader::{select, ReadError};
use crate::audit::verify::{verify, Outcome};
use crate::audit::{EventKind, Record};

/// The events the attempts page shows when no event is chosen.
pub const ATTEMPT_EVENTS: [EventKind; 4] =
    [EventKind::Blocked, EventKind::Exempted, EventKind::AppDetected, EventKind::GatewayDenied];

/// Every event, in the order the filter lists them.
pub const ALL_EVENTS: [EventKind; 11] = [
    EventKind::Blocked,
    EventKind::Exempted,
    EventKind::AppDetected,
    EventKind::GatewayDenied,
    EventKind::SessionStart,
    EventKind::SessionEnd,
    EventKind::Attested,
    EventKind::FlagCleared,
    EventKind::AuthFailed,
    EventKind::PolicyLoaded,
    EventKind::Retention,
];

/// The name of an event as the log writes it (`app_detected`).
pub fn event_name(e: EventKind) -> String {
    match serde_json::to_value(e) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The filter fields of `logs query`, as query-string keys.
pub const FILTER_KEYS: [&str; 8] = ["user", "session", "app", "host", "client", "event", "since", "until"];

/// The filters in a query string, exactly as `weerwal logs query` takes
/// them. Only these keys are read: the web never chooses which files are
/// read (`--log` has no counterpart here).
pub fn filter_args(pairs: &[(String, String)]) -> FilterArgs {
    let get = |k: &str| {
        pairs.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty())
    };
    FilterArgs {
        user: get("user"),
        session: get("session"),
        app: get("app"),
        host: get("host"),
        client: get("client"),
        event: get("event"),
        since: get("since"),
        until: get("until"),
        logs: Vec::new(),
    }
}

/// The configured log's files, in chain order.
pub fn log_files(live: &Path) -> Result<Vec<PathBuf>, String> {
    select(&[], live).map(|s| s.files)
}

fn wanted(v: &View<'_>, filter: &Filter, attempts_only: bool) -> bool {
    (!attempts_only || filter.event.is_some() || ATTEMPT_EVENTS.contains(&v.event)) && filter.matches(v)
}

/// The newest records that match.
#[derive(Debug, Default)]
pub struct Newest {
    /// Newest first, at most the limit asked for.
    pub records: Vec<Record>,
    /// How many matched in all.
    pub matched: u64,
    pub skipped: Skipped,
}

/// The newest `limit` records matching `filter`; with `attempts_only` and
/// no event in the filter, only attempts (blocked, exempted, app detected,
/// gateway denied). Streams the log, keeping only the last `limit` lines.
pub fn newest(source: &Source, filter: &Filter, attempts_only: bool, limit: usize) -> Result<Newest, ReadError> {
    let mut last: VecDeque<String> = VecDeque::with_capacity(limit.min(4096));
    let mut out = Newest::default();
    source.each(&filter.range, &mut |line| {
        let Some(text) = line.text().filter(|_| line.complete) else {
            out.skipped.note(line.file, line.number);
            return ControlFlow::Continue(());
        };
        let Ok(v) = serde_json::from_str::<View>(text) else {
            out.skipped.note(line.file, line.number);
            return ControlFlow::Continue(());
        };
        if wanted(&v, filter, attempts_only) {
            out.matched += 1;
            if limit > 0 {
                if last.len() == limit {
                    last.pop_front();
                }
                last.push_back(text.to_string());
            }
        }
        ControlFlow::Continue(())
    })?;
    out.records = last.iter().rev().filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok(out)
}

/// Writes every matching record as CSV with the columns of `logs query
/// --format csv`; returns how many.
pub fn write_csv(source: &Source, filter: &Filter, attempts_only: bool, out: &mut dyn Write) -> Result<u64, RunError> {
    csv_row(out, &COLUMNS)?;
    let mut n = 0u64;
    let mut failed = None;
    source.each(&filter.range, &mut |line| {
        let Some(text) = line.text().filter(|_| line.complete) else { return ControlFlow::Continue(()) };
        let Ok(v) = serde_json::from_str::<View>(text) else { return ControlFlow::Continue(()) };
        if !wanted(&v, filter, attempts_only) {
            return ControlFlow::Continue(());
        }
        let Ok(r) = serde_json::from_str::<Record>(text) else { return ControlFlow::Continue(()) };
        match csv_row(out, &csv_fields(&r)) {
            Ok(()) => {
                n += 1;
                ControlFlow::Continue(())
            }
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(n),
    }
}

/// The result of checking the chain, as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct VerifyStatus {
    pub checked: SystemTime,
    /// The outcome, or why the log could not be read.
    pub result: Result<Outcome, String>,
    /// How long the check took.
    pub took: Duration,
}

/// `logs verify` over the configured log, run at most once per `ttl`
/// (it reads the whole log): concurrent requests wait for the one run.
pub struct VerifyCache {
    live: PathBuf,
    ttl: Duration,
    slot: tokio::sync::Mutex<Option<(Instant, Arc<VerifyStatus>)>>,
}

impl VerifyCache {
    pub fn new(live: &Path, ttl: Duration) -> VerifyCache {
        VerifyCache { live: live.to_path_buf(), ttl, slot: tokio::sync::Mutex::new(None) }
    }

    /// The last result when still fresh (and not `force`d), else a new one.
    pub async fn get(&self, force: bool) -> Arc<VerifyStatus> {
        let mut slot = self.slot.lock().await;
        if let Some((at, status)) = slot.as_ref() {
            if !force && at.elapsed() < self.ttl {
                return Arc::clone(status);
            }
        }
        let live = self.live.clone();
        let status = tokio::task::spawn_blocking(move || run_verify(&live)).await.unwrap_or_else(|e| VerifyStatus {
            checked: SystemTime::now(),
            result: Err(format!("verification stopped: {e}")),
            took: Duration::ZERO,
        });
        let status = Arc::new(status);
        *slot = Some((Instant::now(), Arc::clone(&status)));
        status
    }

    /// The last result, if any, without running a check.
    pub async fn peek(&self) -> Option<Arc<VerifyStatus>> {
        self.slot.lock().await.as_ref().map(|(_, s)| Arc::clone(s))
    }
}

fn run_verify(live: &Path) -> VerifyStatus {
    let started = std::time::Instant::now();
    let once = || -> Result<Outcome, String> {
        let selection = select(&[], live)?;
        verify(&selection).map_err(|e| e.to_string())
    };
    let mut result = once();
    if matches!(result, Ok(Outcome::Broken(_))) {
        // The writer may have been half-way through a line at that very
        // moment: a real break is still there a moment later.
        std::thread::sleep(Duration::from_millis(100));
        result = once();
    }
    VerifyStatus { checked: SystemTime::now(), result, took: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS;

    fn write_log(path: &Path, events: &[(EventKind, &str)]) {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for (i, (event, host)) in events.iter().enumerate() {
            let mut r = Record::new(*event);
            r.seq = i as u64 + 1;
            r.ts = format!("2026-11-23T10:00:{:02}.000Z", i);
            r.host = Some(host.to_string());
            r.user = Some(if i % 2 == 0 { "jan" } else { "piet" }.into());
            r.prev = prev.clone();
            prev = r.write_line(&mut out).unwrap();
        }
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn newest_first_attempts_only_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        write_log(
            &live,
            &[
                (EventKind::PolicyLoaded, "-"),
                (EventKind::SessionStart, "-"),
                (EventKind::Blocked, "aliexpress.com"),
                (EventKind::Exempted, "www.tiktok.com"),
                (EventKind::Blocked, "m.aliexpress.com"),
                (EventKind::SessionEnd, "-"),
            ],
        );
        let files = Source::Local(log_files(&live).unwrap());
        let all = Filter::default();
        let n = newest(&files, &all, true, 2).unwrap();
        assert_eq!(n.matched, 3);
        assert_eq!(n.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 4]);
        let args = filter_args(&[("event".into(), "session_end".into()), ("log".into(), "/etc".into())]);
        assert!(args.logs.is_empty());
        let f = args.to_filter(SystemTime::now(), &crate::calendar::Zone::default()).unwrap();
        assert_eq!(newest(&files, &f, true, 10).unwrap().records[0].seq, 6);
        let f = filter_args(&[("host".into(), "aliexpress.com".into()), ("user".into(), "jan".into())])
            .to_filter(SystemTime::now(), &crate::calendar::Zone::default())
            .unwrap();
        assert_eq!(newest(&files, &f, true, 10).unwrap().records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 3]);
        let mut csv = Vec::new();
        assert_eq!(write_csv(&files, &all, true, &mut csv).unwrap(), 3);
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.starts_with("seq,ts,event,"), "{csv}");
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.contains("\r\n3,2026-11-23T10:00:02.000Z,blocked,"), "{csv}");
    }

    #[tokio::test]
    async fn verification_is_cached_until_forced() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        write_log(&live, &[(EventKind::Blocked, "a.com"), (EventKind::Blocked, "b.com")]);
        let cache = VerifyCache::new(&live, Duration::from_secs(3600));
        assert!(matches!(cache.get(false).await.result, Ok(Outcome::Intact(_))));
        let text = std::fs::read_to_string(&live).unwrap().replace("b.com", "c.com");
        std::fs::write(&live, text).unwrap();
        assert!(matches!(cache.get(false).await.result, Ok(Outcome::Intact(_))), "cached");
        match &cache.get(true).await.result {
            Ok(Outcome::Broken(b)) => assert_eq!(b.line, 2),
            other => panic!("{other:?}"),
        }
    }
}
