//! Scan and purge one profile. The order of a purge is what makes it safe:
//! look first (read-only, so a clean profile is never touched and the browser
//! may keep running), then take the exclusive lock or refuse, write the
//! backup, and find-and-delete again inside one transaction, so what is
//! removed is exactly what the locked database holds, and a failure at any
//! statement rolls everything back.

use std::path::PathBuf;

use rusqlite::Connection;

use super::{chrome, firefox, safari, sqlite, Family, Finding, HistoryError, Profile, Removed};
use crate::policy::Policy;

/// What a scan of one profile found.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    pub profile: Profile,
    /// A private copy was read (always for the Chromium family and Firefox,
    /// see [`sqlite`]).
    pub copied: bool,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy)]
pub struct PurgeOptions {
    /// Write `<db>.weerwal-backup-<time>` before changing anything.
    pub backup: bool,
}

impl Default for PurgeOptions {
    fn default() -> Self {
        PurgeOptions { backup: true }
    }
}

/// What a purge of one profile did.
#[derive(Debug, Clone)]
pub struct PurgeOutcome {
    pub profile: Profile,
    /// The entries removed (empty when the profile was clean).
    pub findings: Vec<Finding>,
    pub removed: Removed,
    /// Backups written: the history database, and the site-icon database
    /// when the profile has one.
    pub backups: Vec<PathBuf>,
}

/// Lists the banned entries of one profile without changing anything.
pub fn scan_profile(profile: &Profile, policy: &Policy) -> Result<ScanOutcome, HistoryError> {
    let reader = sqlite::open_read_only(profile)?;
    let findings = find(&reader.conn, profile, policy)?;
    Ok(ScanOutcome { profile: profile.clone(), copied: reader.copied, findings })
}

/// Removes the banned entries of one profile, or refuses with
/// [`HistoryError::Locked`] while the browser has the database open.
pub fn purge_profile(profile: &Profile, policy: &Policy, opts: PurgeOptions) -> Result<PurgeOutcome, HistoryError> {
    let clean = |profile: &Profile| PurgeOutcome {
        profile: profile.clone(),
        findings: Vec::new(),
        removed: Removed::default(),
        backups: Vec::new(),
    };
    if scan_profile(profile, policy)?.findings.is_empty() {
        return Ok(clean(profile));
    }
    let icons =
        profile.browser.family().icons_file_name().map(|name| profile.db.with_file_name(name)).filter(|p| p.is_file());
    let mut conn = sqlite::open_exclusive(profile, icons.as_deref())?;
    let mut backups = Vec::new();
    if opts.backup {
        backups.push(sqlite::backup(&conn, "main", &profile.db)?);
        if let Some(icons) = &icons {
            backups.push(sqlite::backup(&conn, sqlite::ICONS, icons)?);
        }
    }
    // One transaction over the history and the icon database: with rollback
    // journals (Chromium) SQLite commits both or neither; with WAL (Firefox)
    // each file is committed whole, one after the other.
    let tx = conn.transaction().map_err(HistoryError::sqlite(&profile.db))?;
    let findings = find(&tx, profile, policy)?;
    // Dropping `tx` on an error below rolls the transaction back.
    let removed = delete(&tx, profile, policy, &findings)?;
    tx.commit().map_err(|e| {
        if sqlite::is_busy(&e) {
            HistoryError::Locked { path: profile.db.clone(), browser: profile.browser }
        } else {
            HistoryError::sqlite(&profile.db)(e)
        }
    })?;
    Ok(PurgeOutcome { findings, removed, backups, ..clean(profile) })
}

fn find(conn: &Connection, profile: &Profile, policy: &Policy) -> Result<Vec<Finding>, HistoryError> {
    match profile.browser.family() {
        Family::Chromium => chrome::find(conn, profile, policy),
        Family::Firefox => firefox::find(conn, profile, policy),
        Family::Safari => safari::find(conn, profile, policy),
    }
}

fn delete(conn: &Connection, profile: &Profile, policy: &Policy, found: &[Finding]) -> Result<Removed, HistoryError> {
    match profile.browser.family() {
        Family::Chromium => chrome::delete(conn, profile, policy, found),
        Family::Firefox => firefox::delete(conn, profile, policy, found),
        Family::Safari => safari::delete(conn, profile, policy, found),
    }
}
