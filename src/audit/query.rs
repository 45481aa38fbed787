//! `weerwal logs query`: the records that match every filter given, streamed
//! from the log's files in order, as a table, CSV or JSON.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::output::{csv_row, Format, Table};
use super::reader::{each_line, LineVisitor, ReadError};
use super::record::{EventKind, Record};
use super::time::{parse_rfc3339, TimeRange};
use crate::calendar::Zone;

/// The filters of `logs query` and `logs report`; all that are set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact user name.
    pub user: Option<String>,
    /// A session id, or its first characters (as the table shows them).
    pub session: Option<String>,
    /// App name, any case.
    pub app: Option<String>,
    /// A host and its subdomains: `aliexpress.com` matches `m.aliexpress.com`.
    pub host: Option<String>,
    /// A client address or network.
    pub client: Option<IpNet>,
    pub event: Option<EventKind>,
    pub range: TimeRange,
    /// The zone whose days dates mean and whose wall-clock times tables
    /// show (`policy.timezone`); the log itself is in UTC.
    pub zone: Zone,
}

/// The fields filters and reports look at, borrowed from the line where
/// possible so most records are never fully parsed.
#[derive(Debug, Deserialize)]
pub struct View<'a> {
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    pub event: EventKind,
    #[serde(default, borrow)]
    pub session: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub user: Option<Cow<'a, str>>,
    #[serde(default)]
    pub client: Option<IpAddr>,
    #[serde(default, borrow)]
    pub device: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub app: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub host: Option<Cow<'a, str>>,
    /// Only what reports need of `detail`: a coalesced record's count.
    #[serde(default)]
    pub detail: Option<ViewDetail>,
}

/// `detail.coalesced` of a record that stands for repeated attempts.
#[derive(Debug, Default, Deserialize)]
pub struct ViewDetail {
    #[serde(default)]
    pub coalesced: Option<u64>,
}

impl View<'_> {
    /// How many attempts this record stands for (see [`super::coalesce`]).
    pub fn attempts(&self) -> u64 {
        self.detail.as_ref().and_then(|d| d.coalesced).unwrap_or(1)
    }
}

/// An event name as written in the log (`blocked`, `session_start`, …).
pub fn parse_event(s: &str) -> Result<EventKind, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_lowercase())).map_err(|_| {
        format!("unknown event {s:?}; events are: blocked, exempted, app_detected, session_start, session_end, gateway_denied, attested, flag_cleared, policy_loaded, auth_failed, retention")
    })
}

/// An address (`10.1.2.3`) or network (`10.1.2.0/24`).
pub fn parse_client(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or network (write 10.1.2.3 or 10.1.2.0/24)"))
}

impl Filter {
    pub fn matches(&self, v: &View<'_>) -> bool {
        fn opt<'a>(v: &'a Option<Cow<'_, str>>) -> Option<&'a str> {
            v.as_deref()
        }
        if self.event.is_some_and(|e| e != v.event) {
            return false;
        }
        if let Some(u) = &self.user {
            if opt(&v.user) != Some(u.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.session {
            if !opt(&v.session).is_some_and(|id| id.starts_with(s.as_str())) {
                return false;
            }
        }
        if let Some(a) = &self.app {
            if !opt(&v.app).is_some_and(|app| app.eq_ignore_ascii_case(a)) {
                return false;
            }
        }
        if let Some(h) = &self.host {
            if !opt(&v.host).is_some_and(|host| host_within(host, h.trim_end_matches('.'))) {
                return false;
            }
        }
        if let Some(net) = &self.client {
            if !v.client.is_some_and(|c| net.contains(&c)) {
                return false;
            }
        }
        if !self.range.is_unbounded() && !parse_rfc3339(&v.ts).is_some_and(|t| self.range.contains(t)) {
            return false;
        }
        true
    }
}

/// Whether `host` is `domain` or one of its subdomains, in any case.
fn host_within(host: &str, domain: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case(domain) {
        return true;
    }
    match host.len().checked_sub(domain.len()).and_then(|i| host.split_at_checked(i)) {
        Some((head, tail)) => head.ends_with('.') && tail.eq_ignore_ascii_case(domain),
        None => false,
    }
}

/// What a read over the log found besides the records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Lines that are not records (damaged or cut off): left out.
    pub lines: u64,
    /// The first of them, as `file:line`.
    pub first: Option<String>,
}

impl Skipped {
    pub(crate) fn note(&mut self, file: &std::path::Path, line: u64) {
        self.lines += 1;
        if self.first.is_none() {
            self.first = Some(format!("{}:{line}", file.display()));
        }
    }
}

/// Why a query or report stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] io::Error),
}

/// The columns of the CSV export (`logs query --format csv`, and the
/// dashboard's CSV download).
pub const COLUMNS: [&str; 20] = [
    "seq",
    "ts",
    "event",
    "session",
    "user",
    "client",
    "device",
    "app",
    "rule",
    "host",
    "port",
    "method",
    "path",
    "via",
    "user_agent",
    "reason",
    "detail",
    "prev",
    "hash",
    // Last, so that readers by position keep working: empty on one node.
    "node",
];

fn to_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// One record as the fields of [`COLUMNS`].
pub fn csv_fields(r: &Record) -> Vec<String> {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        r.seq.to_string(),
        r.ts.clone(),
        to_name(&r.event),
        s(&r.session),
        s(&r.user),
        r.client.map(|c| c.to_string()).unwrap_or_default(),
        s(&r.device),
        s(&r.app),
        s(&r.rule),
        s(&r.host),
        r.port.map(|p| p.to_string()).unwrap_or_default(),
        s(&r.method),
        s(&r.path),
        r.via.as_ref().map(to_name).unwrap_or_default(),
        s(&r.user_agent),
        s(&r.reason),
        r.detail.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        r.prev.clone(),
        r.hash.clone(),
        s(&r.node),
    ]
}

fn table(zone: &Zone) -> Table {
    let time = format!("TIME ({zone})");
    Table::new(&[
        ("SEQ", true),
        (&time, false),
        ("EVENT", false),
        ("USER", false),
        ("CLIENT", false),
        ("DEVICE", false),
        ("APP", false),
        ("HOST", false),
        ("METHOD", false),
        ("SESSION", false),
    ])
}

fn table_cells(r: &Record, zone: &Zone) -> Vec<String> {
    let d = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    vec![
        r.seq.to_string(),
        zone.wall_clock_of(&r.ts),
        to_name(&r.event),
        d(&r.user),
        r.client.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
        d(&r.device),
        d(&r.app),
        d(&r.host),
        d(&r.method),
        r.session.as_deref().map(|s| s.chars().take(8).collect()).unwrap_or_else(|| "-".into()),
    ]
}

/// Writes the records of `files` that match `filter` to `out`; returns how
/// many matched and which lines could not be read as records.
pub fn query(
    files: &[PathBuf],
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> Result<(u64, Skipped), RunError> {
    query_lines(|visit| each_line(files, visit), filter, format, out)
}

/// [`query`] over any source of lines (the cluster database's copy).
pub fn query_lines(
    source: impl FnOnce(LineVisitor<'_>) -> Result<(), ReadError>,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> Result<(u64, Skipped), RunError> {
    let mut matched = 0u64;
    let mut skipped = Skipped::default();
    let mut table = table(&filter.zone);
    let mut failed: Option<io::Error> = None;
    if format == Format::Csv {
        csv_row(out, &COLUMNS)?;
    }
    if format == Format::Json {
        out.write_all(b"[")?;
    }
    source(&mut |line| {
        let Some(text) = line.text().filter(|_| line.complete) else {
            skipped.note(line.file, line.number);
            return ControlFlow::Continue(());
        };
        let Ok(view) = serde_json::from_str::<View>(text) else {
            skipped.note(line.file, line.number);
            return ControlFlow::Continue(());
        };
        if !filter.matches(&view) {
            return ControlFlow::Continue(());
        }
        let written = match format {
            // The line itself: the record exactly as written, hash included.
            Format::Json => {
                let sep: &[u8] = if matched == 0 { b"\n" } else { b",\n" };
                out.write_all(sep).and_then(|()| out.write_all(text.as_bytes()))
            }
            Format::Csv | Format::Table => match serde_json::from_str::<Record>(text) {
                Ok(r) if format == Format::Csv => csv_row(out, &csv_fields(&r)),
                Ok(r) => table.row(out, table_cells(&r, &filter.zone)),
                Err(_) => {
                    skipped.note(line.file, line.number);
                    return ControlFlow::Continue(());
                }
            },
        };
        matched += 1;
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    match format {
        Format::Json => out.write_all(if matched == 0 { b"]\n" } else { b"\n]\n" })?,
        Format::Table => table.finish(out)?,
        Format::Csv => {}
    }
    Ok((matched, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: &str) -> View<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn filters() {
        let v = view(
            r#"{"seq":1,"ts":"2026-11-23T10:15:02.123Z","event":"blocked","session":"8f3c1a2b","user":"jdevries","client":"10.1.2.3","app":"AliExpress","host":"m.aliexpress.com","prev":"x","hash":"y"}"#,
        );
        let yes = |f: Filter| assert!(f.matches(&v), "{f:?}");
        let no = |f: Filter| assert!(!f.matches(&v), "{f:?}");
        yes(Filter::default());
        yes(Filter { user: Some("jdevries".into()), ..Filter::default() });
        no(Filter { user: Some("jdevrie".into()), ..Filter::default() });
        yes(Filter { session: Some("8f3c".into()), ..Filter::default() });
        yes(Filter { app: Some("aliexpress".into()), ..Filter::default() });
        yes(Filter { host: Some("aliexpress.com".into()), ..Filter::default() });
        yes(Filter { host: Some("M.AliExpress.com.".into()), ..Filter::default() });
        no(Filter { host: Some("express.com".into()), ..Filter::default() });
        yes(Filter { client: Some(parse_client("10.1.2.0/24").unwrap()), ..Filter::default() });
        no(Filter { client: Some(parse_client("10.1.2.4").unwrap()), ..Filter::default() });
        yes(Filter { event: Some(parse_event("Blocked").unwrap()), ..Filter::default() });
        no(Filter { event: Some(parse_event("exempted").unwrap()), ..Filter::default() });
        assert!(parse_event("blokked").is_err());
        let at = |s| Some(parse_rfc3339(s).unwrap());
        yes(Filter { range: TimeRange { since: at("2026-11-23T10:15:02.123Z"), until: None }, ..Filter::default() });
        no(Filter { range: TimeRange { since: None, until: at("2026-11-23T10:15:02.123Z") }, ..Filter::default() });
    }
}
