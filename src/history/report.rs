//! What `weerwal history` prints: a table for the person at the laptop, JSON
//! for a login script or Intune. Only hosts are shown, never full URLs: the
//! host is what the rule is about, and paths could reveal more about the
//! person than the compliance check needs.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::SystemTime;

use serde::Serialize;

use super::{time, Finding, HistoryError, Profile, PurgeOutcome, Removed, ScanOutcome};

/// The findings of one profile for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostLine {
    pub host: String,
    pub app: String,
    pub rule: String,
    /// URL rows for this host.
    pub entries: usize,
    pub visits: u64,
    /// RFC 3339, UTC; `null` when the browser recorded no time.
    pub last_visit: Option<String>,
}

/// Groups findings by host, sorted by host name.
pub fn by_host(findings: &[Finding]) -> Vec<HostLine> {
    let mut groups: BTreeMap<String, (HostLine, Option<SystemTime>)> = BTreeMap::new();
    for f in findings {
        let key = f.host.as_key().into_owned();
        let (line, last) = groups.entry(key.clone()).or_insert_with(|| {
            let line = HostLine {
                host: key,
                app: f.app.clone(),
                rule: f.rule.clone(),
                entries: 0,
                visits: 0,
                last_visit: None,
            };
            (line, None)
        });
        line.entries += 1;
        line.visits += f.visits;
        *last = (*last).max(f.last_visit);
    }
    groups
        .into_values()
        .map(|(mut line, last)| {
            line.last_visit = last.map(|t| time::format(Some(t)));
            line
        })
        .collect()
}

#[derive(Serialize)]
struct ProfileJson<'a> {
    browser: &'a str,
    profile: String,
    database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_from_copy: Option<bool>,
    hosts: Vec<HostLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed: Option<Removed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backups: Option<Vec<String>>,
}

#[derive(Serialize)]
struct ErrorJson {
    browser: String,
    database: String,
    error: String,
}

#[derive(Serialize)]
struct Json<'a> {
    command: &'a str,
    /// Banned entries found (scan) or removed (purge), over all profiles.
    banned_entries: usize,
    profiles: Vec<ProfileJson<'a>>,
    errors: Vec<ErrorJson>,
}

fn errors_json(errors: &[(Profile, HistoryError)]) -> Vec<ErrorJson> {
    errors
        .iter()
        .map(|(p, e)| ErrorJson {
            browser: p.browser.as_str().to_string(),
            database: p.db.display().to_string(),
            error: e.to_string(),
        })
        .collect()
}

/// `weerwal history scan --format json`.
pub fn scan_json(out: &mut dyn Write, scans: &[ScanOutcome], errors: &[(Profile, HistoryError)]) -> io::Result<()> {
    let json = Json {
        command: "scan",
        banned_entries: scans.iter().map(|s| s.findings.len()).sum(),
        profiles: scans
            .iter()
            .map(|s| ProfileJson {
                browser: s.profile.browser.as_str(),
                profile: s.profile.dir.display().to_string(),
                database: s.profile.db.display().to_string(),
                read_from_copy: Some(s.copied),
                hosts: by_host(&s.findings),
                removed: None,
                backups: None,
            })
            .collect(),
        errors: errors_json(errors),
    };
    serde_json::to_writer_pretty(&mut *out, &json)?;
    writeln!(out)
}

/// `weerwal history purge --format json`.
pub fn purge_json(out: &mut dyn Write, purges: &[PurgeOutcome], errors: &[(Profile, HistoryError)]) -> io::Result<()> {
    let json = Json {
        command: "purge",
        banned_entries: purges.iter().map(|p| p.findings.len()).sum(),
        profiles: purges
            .iter()
            .map(|p| ProfileJson {
                browser: p.profile.browser.as_str(),
                profile: p.profile.dir.display().to_string(),
                database: p.profile.db.display().to_string(),
                read_from_copy: None,
                hosts: by_host(&p.findings),
                removed: Some(p.removed),
                backups: Some(p.backups.iter().map(|b| b.display().to_string()).collect()),
            })
            .collect(),
        errors: errors_json(errors),
    };
    serde_json::to_writer_pretty(&mut *out, &json)?;
    writeln!(out)
}

const NOTHING_FOUND: &str =
    "No browser history found for this user (looked for Chrome, Edge, Chromium, Firefox and Safari).";

/// `weerwal history scan` for a person: one line per banned host per
/// profile, then what it means and what to do.
pub fn scan_table(out: &mut dyn Write, scans: &[ScanOutcome], errors: &[(Profile, HistoryError)]) -> io::Result<()> {
    let mut rows = Vec::new();
    for s in scans {
        for h in by_host(&s.findings) {
            rows.push([
                s.profile.browser.as_str().to_string(),
                h.host,
                h.app,
                h.visits.to_string(),
                h.last_visit.unwrap_or_else(|| "-".into()),
                s.profile.dir.display().to_string(),
            ]);
        }
    }
    let hosts = rows.len();
    if scans.is_empty() {
        // With errors, stderr says what went wrong; there is nothing to list.
        if errors.is_empty() {
            writeln!(out, "{NOTHING_FOUND}")?;
        }
        return Ok(());
    }
    if hosts > 0 {
        table(out, ["BROWSER", "HOST", "APP", "VISITS", "LAST VISIT", "PROFILE"], &rows)?;
        writeln!(out)?;
        let profiles = scans.iter().filter(|s| !s.findings.is_empty()).count();
        writeln!(out, "Found visits to {hosts} banned site(s) in {profiles} of {} browser profile(s).", scans.len())?;
        writeln!(out, "To remove exactly these entries: close the browser(s), then run `weerwal history purge`.")?;
    } else {
        writeln!(out, "No visits to banned sites in {} browser profile(s):", scans.len())?;
        for s in scans {
            writeln!(out, "  {:<9} {}", s.profile.browser.as_str(), s.profile.dir.display())?;
        }
    }
    Ok(())
}

/// `weerwal history purge` for a person: what was removed and where the
/// backup is.
pub fn purge_table(out: &mut dyn Write, purges: &[PurgeOutcome], errors: &[(Profile, HistoryError)]) -> io::Result<()> {
    if purges.is_empty() {
        // With errors, stderr says what went wrong; there is nothing to list.
        if errors.is_empty() {
            writeln!(out, "{NOTHING_FOUND}")?;
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for p in purges {
        for h in by_host(&p.findings) {
            rows.push([
                p.profile.browser.as_str().to_string(),
                h.host,
                h.app,
                h.visits.to_string(),
                p.profile.dir.display().to_string(),
            ]);
        }
    }
    if rows.is_empty() {
        writeln!(out, "Nothing to remove: no visits to banned sites in {} browser profile(s).", purges.len())?;
        return Ok(());
    }
    writeln!(out, "Removed from the browser history:")?;
    table(out, ["BROWSER", "HOST", "APP", "VISITS", "PROFILE"], &rows)?;
    writeln!(out)?;
    for p in purges.iter().filter(|p| !p.findings.is_empty()) {
        writeln!(
            out,
            "{} ({}): removed {} entr{} and {} visit(s); every other entry is untouched.",
            p.profile.browser.display_name(),
            p.profile.dir.display(),
            p.removed.entries,
            if p.removed.entries == 1 { "y" } else { "ies" },
            p.removed.visits
        )?;
        if p.findings.iter().any(|f| f.bookmarked) {
            writeln!(out, "  Bookmarks of banned sites were kept (only their history was removed); delete those bookmarks yourself.")?;
        }
        if p.removed.icon_links > 0 {
            writeln!(out, "  Their site icons were removed from the browser's icon store as well.")?;
        }
        match p.backups.as_slice() {
            [] => {}
            [one] => writeln!(
                out,
                "  Backup of the old history (it still contains the removed entries): {}\n  \
                 Delete it once the browser works normally.",
                one.display()
            )?,
            many => {
                writeln!(out, "  Backups of the old history (they still contain the removed entries):")?;
                for b in many {
                    writeln!(out, "    {}", b.display())?;
                }
                writeln!(out, "  Delete them once the browser works normally.")?;
            }
        }
    }
    Ok(())
}

fn table<const N: usize>(out: &mut dyn Write, header: [&str; N], rows: &[[String; N]]) -> io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[&str]| -> io::Result<()> {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &header)?;
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(out, &cells)?;
    }
    Ok(())
}
