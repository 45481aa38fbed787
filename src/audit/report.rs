//! `weerwal logs report`: attempts per user, session, app, day or device,
//! with first and last seen and the number of distinct hosts. It streams:
//! memory grows with the number of groups and their hosts, never with the
//! size of the log.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use super::output::{csv_row, Format, Table};
use super::query::{Filter, RunError, Skipped, View};
use super::reader::{each_line, LineVisitor, ReadError};
use super::record::EventKind;
use crate::calendar::Zone;

/// What to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    User,
    Session,
    App,
    /// The UTC day.
    Day,
    /// The device name (from `[[identity.device]]`), else the client address.
    Device,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::User => "user",
            GroupBy::Session => "session",
            GroupBy::App => "app",
            GroupBy::Day => "day",
            GroupBy::Device => "device",
        }
    }
}

/// The counts of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The user, session, app, day or device; `-` for records without one.
    pub key: String,
    /// Blocked, exempted and gateway-denied requests.
    pub attempts: u64,
    pub blocked: u64,
    pub exempted: u64,
    /// Requests that carried a banned app's own signature (each also counted
    /// as blocked).
    pub app_detected: u64,
    pub gateway_denied: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub hosts: HashSet<String>,
}

/// Groups the attempts in `files` that match `filter`. Records of other
/// events (sessions, policy loads, retention) are not attempts and are left
/// out. Groups come sorted: days in order, anything else by attempts, most first.
pub fn report(files: &[PathBuf], filter: &Filter, by: GroupBy) -> Result<(Vec<Group>, Skipped), RunError> {
    report_lines(|visit| each_line(files, visit), filter, by)
}

/// [`report`] over any source of lines (the cluster database's copy).
pub fn report_lines(
    source: impl FnOnce(LineVisitor<'_>) -> Result<(), ReadError>,
    filter: &Filter,
    by: GroupBy,
) -> Result<(Vec<Group>, Skipped), RunError> {
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut skipped = Skipped::default();
    source(&mut |line| {
        let Some(text) = line.text().filter(|_| line.complete) else {
            skipped.note(line.file, line.number);
            return ControlFlow::Continue(());
        };
        let Ok(v) = serde_json::from_str::<View>(text) else {
            skipped.note(line.file, line.number);
            return ControlFlow::Continue(());
        };
        if !matches!(
            v.event,
            EventKind::Blocked | EventKind::Exempted | EventKind::AppDetected | EventKind::GatewayDenied
        ) || !filter.matches(&v)
        {
            return ControlFlow::Continue(());
        }
        let (client, day);
        let key: &str = match by {
            GroupBy::User => v.user.as_deref().unwrap_or("-"),
            GroupBy::Session => v.session.as_deref().unwrap_or("-"),
            GroupBy::App => v.app.as_deref().unwrap_or("-"),
            GroupBy::Day => {
                // The day in `policy.timezone`, as the dashboard shows it.
                day = filter.zone.date_of(&v.ts).map(|d| d.to_string()).unwrap_or_else(|| "-".into());
                &day
            }
            GroupBy::Device => match (&v.device, v.client) {
                (Some(d), _) => d,
                (None, Some(c)) => {
                    client = c.to_string();
                    &client
                }
                (None, None) => "-",
            },
        };
        if !groups.contains_key(key) {
            groups.insert(key.to_string(), Group { key: key.to_string(), ..Group::default() });
        }
        let g = groups.get_mut(key).expect("inserted above");
        // A coalesced record stands for its count of attempts.
        let n = v.attempts();
        match v.event {
            EventKind::Blocked => g.blocked += n,
            EventKind::Exempted => g.exempted += n,
            EventKind::AppDetected => g.app_detected += n,
            _ => g.gateway_denied += n,
        }
        if v.event != EventKind::AppDetected {
            g.attempts += n;
        }
        if g.first_seen.is_empty() || *v.ts < *g.first_seen {
            g.first_seen = v.ts.to_string();
        }
        if *v.ts > *g.last_seen {
            g.last_seen = v.ts.to_string();
        }
        if let Some(h) = v.host.as_deref() {
            if !g.hosts.contains(h) {
                g.hosts.insert(h.to_string());
            }
        }
        ControlFlow::Continue(())
    })?;
    let mut groups: Vec<Group> = groups.into_values().collect();
    match by {
        GroupBy::Day => groups.sort_by(|a, b| a.key.cmp(&b.key)),
        _ => groups.sort_by(|a, b| b.attempts.cmp(&a.attempts).then_with(|| a.key.cmp(&b.key))),
    }
    Ok((groups, skipped))
}

/// Writes a report in `format`: the table shows times in `zone`, CSV and
/// JSON keep the log's UTC times.
pub fn write_report(
    groups: &[Group],
    by: GroupBy,
    format: Format,
    zone: &Zone,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let short_time = |ts: &str| zone.wall_clock_of(ts);
    match format {
        Format::Table => {
            let heading = by.name().to_ascii_uppercase();
            let (first, last) = (format!("FIRST SEEN ({zone})"), format!("LAST SEEN ({zone})"));
            let mut t = Table::new(&[
                (heading.as_str(), false),
                ("ATTEMPTS", true),
                ("BLOCKED", true),
                ("EXEMPTED", true),
                ("APP SIGNATURE", true),
                ("GATEWAY DENIED", true),
                (first.as_str(), false),
                (last.as_str(), false),
                ("HOSTS", true),
            ]);
            for g in groups {
                t.row(
                    out,
                    vec![
                        g.key.clone(),
                        g.attempts.to_string(),
                        g.blocked.to_string(),
                        g.exempted.to_string(),
                        g.app_detected.to_string(),
                        g.gateway_denied.to_string(),
                        short_time(&g.first_seen),
                        short_time(&g.last_seen),
                        g.hosts.len().to_string(),
                    ],
                )?;
            }
            t.finish(out)?;
            let total: u64 = groups.iter().map(|g| g.attempts).sum();
            writeln!(out, "\n{} attempt(s) in {} group(s) by {}", total, groups.len(), by.name())
        }
        Format::Csv => {
            csv_row(
                out,
                &[
                    by.name(),
                    "attempts",
                    "blocked",
                    "exempted",
                    "app_detected",
                    "gateway_denied",
                    "first_seen",
                    "last_seen",
                    "hosts",
                ],
            )?;
            for g in groups {
                csv_row(
                    out,
                    &[
                        g.key.clone(),
                        g.attempts.to_string(),
                        g.blocked.to_string(),
                        g.exempted.to_string(),
                        g.app_detected.to_string(),
                        g.gateway_denied.to_string(),
                        g.first_seen.clone(),
                        g.last_seen.clone(),
                        g.hosts.len().to_string(),
                    ],
                )?;
            }
            Ok(())
        }
        Format::Json => {
            let rows: Vec<serde_json::Value> = groups
                .iter()
                .map(|g| {
                    let mut hosts: Vec<&String> = g.hosts.iter().collect();
                    hosts.sort();
                    serde_json::json!({
                        "by": by.name(),
                        "key": g.key,
                        "attempts": g.attempts,
                        "blocked": g.blocked,
                        "exempted": g.exempted,
                        "app_detected": g.app_detected,
                        "gateway_denied": g.gateway_denied,
                        "first_seen": g.first_seen,
                        "last_seen": g.last_seen,
                        "hosts": g.hosts.len(),
                        "host_names": hosts,
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &rows)?;
            writeln!(out)
        }
    }
}
