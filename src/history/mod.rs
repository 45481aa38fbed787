//! `weerwal history`: find and remove the browser-history entries of banned
//! sites on this device.
//!
//! The municipal rule asks everyone who ever visited a banned website on a
//! device used for council work to clear their browser history. Wiping all
//! history by hand is crude and nobody can check it was done; this module
//! finds exactly the entries whose host the policy bans — with the very
//! matcher the proxy uses ([`Policy::match_host`]) — and removes only those.
//!
//! Layout: [`profiles`] finds the databases, [`sqlite`] opens them safely
//! (read-only or a copy for scanning; exclusively, with a backup, for
//! purging), [`chrome`], [`firefox`] and [`safari`] know each browser's
//! tables, [`scan`] ties these together per profile, [`report`] renders the
//! result and [`cli`] is the command line.

pub mod chrome;
pub mod cli;
pub mod firefox;
pub mod profiles;
pub mod report;
pub mod safari;
pub mod scan;
pub mod sqlite;
pub mod time;
pub mod url;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::SystemTime;

use crate::policy::{Host, Policy};

pub use profiles::{discover, resolve_profile_path, Env, Os};
pub use scan::{purge_profile, scan_profile, PurgeOptions, PurgeOutcome, ScanOutcome};

/// A browser whose history weerwal can read. Chrome, Edge and Chromium share
/// one database format (the Chromium family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Browser {
    Chrome,
    Edge,
    Chromium,
    Firefox,
    Safari,
}

/// The database format a browser writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `History`: tables `urls`, `visits`, … (times in µs since 1601).
    Chromium,
    /// `places.sqlite`: tables `moz_places`, `moz_historyvisits`, … (µs since 1970).
    Firefox,
    /// `History.db`: tables `history_items`, `history_visits` (s since 2001).
    Safari,
}

impl Browser {
    pub const ALL: [Browser; 5] =
        [Browser::Chrome, Browser::Edge, Browser::Chromium, Browser::Firefox, Browser::Safari];

    pub fn family(self) -> Family {
        match self {
            Browser::Chrome | Browser::Edge | Browser::Chromium => Family::Chromium,
            Browser::Firefox => Family::Firefox,
            Browser::Safari => Family::Safari,
        }
    }

    /// Lower-case name, as on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Browser::Chrome => "chrome",
            Browser::Edge => "edge",
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
            Browser::Safari => "safari",
        }
    }

    /// The name a person knows, for messages such as "close Firefox".
    pub fn display_name(self) -> &'static str {
        match self {
            Browser::Chrome => "Google Chrome",
            Browser::Edge => "Microsoft Edge",
            Browser::Chromium => "Chromium",
            Browser::Firefox => "Firefox",
            Browser::Safari => "Safari",
        }
    }
}

impl Family {
    /// The history database's file name inside a profile folder.
    pub fn db_file_name(self) -> &'static str {
        match self {
            Family::Chromium => "History",
            Family::Firefox => "places.sqlite",
            Family::Safari => "History.db",
        }
    }
}

impl Family {
    /// The site-icon database beside the history, which records the address
    /// of every page an icon was shown for. Chromium and Firefox delete a
    /// page's icon links along with its history; so does purge.
    pub fn icons_file_name(self) -> Option<&'static str> {
        match self {
            Family::Chromium => Some("Favicons"),
            Family::Firefox => Some("favicons.sqlite"),
            Family::Safari => None,
        }
    }
}

impl std::fmt::Display for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One browser profile's history database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub browser: Browser,
    /// The profile folder (`…/Default`, `…/abcd1234.default-release`).
    pub dir: PathBuf,
    /// The database file inside it.
    pub db: PathBuf,
}

impl Profile {
    pub fn new(browser: Browser, db: PathBuf) -> Profile {
        let dir = db.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        Profile { browser, dir, db }
    }
}

/// One history entry (a URL row: `urls`, `moz_places`, `history_items`)
/// whose host the policy bans, with what is known about its visits.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Row id in the browser's URL table; what purge deletes by.
    pub id: i64,
    pub host: Host,
    pub app: String,
    /// The policy rule that matched (`aliexpress.com` for `m.aliexpress.com`).
    pub rule: String,
    /// Visit rows recorded for this entry.
    pub visits: u64,
    pub last_visit: Option<SystemTime>,
    /// Firefox only: the page is bookmarked, so its visits are removed but
    /// the bookmark (and the place row it needs) is kept.
    pub bookmarked: bool,
}

/// What a purge removed from one database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// URL rows (`urls`, `moz_places`, `history_items`).
    pub entries: u64,
    /// Visit rows.
    pub visits: u64,
    /// Page-to-icon links in the site-icon database (`Favicons`,
    /// `favicons.sqlite`), with the icons only those pages used.
    pub icon_links: u64,
}

/// Decides whether a URL from a history row is banned, the same way the
/// proxy decides: host extracted and normalised, then [`Policy::match_host`].
/// URLs that are not http(s), or whose host cannot be normalised, are not
/// banned (the proxy never let them through as a banned host either).
pub fn banned_host(policy: &Policy, url: &str) -> Option<(Host, crate::policy::Match)> {
    let host = url::http_host(url)?;
    let m = policy.match_host(&host)?;
    Some((host, m))
}

/// Everything that can go wrong reading or changing a history database.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: the history database is in use, so {browser} is still running. \
         Close every {browser} window (on Windows also check the icons next to the clock; \
         on a Mac choose {browser} > Quit), then run the command again",
        path.display(),
        browser = browser.display_name()
    )]
    Locked { path: PathBuf, browser: Browser },
    #[error(
        "{}: macOS does not let this program read Safari's history. Give the terminal \
         (or the program that runs weerwal) Full Disk Access in System Settings > \
         Privacy & Security > Full Disk Access, then run the command again",
        path.display()
    )]
    SafariPermission { path: PathBuf },
    #[error("{}: not a {browser} history database (table {table} is missing)", path.display(), browser = browser.display_name())]
    NotHistory { path: PathBuf, browser: Browser, table: &'static str },
    #[error("{}: no browser history database (History, places.sqlite or History.db) found there", path.display())]
    NoDatabase { path: PathBuf },
    #[error("{}: the database changed while weerwal was working on it; close the browser and run the command again", path.display())]
    Changed { path: PathBuf },
}

impl HistoryError {
    pub(crate) fn sqlite(path: &std::path::Path) -> impl FnOnce(rusqlite::Error) -> HistoryError + '_ {
        move |source| HistoryError::Sqlite { path: path.to_path_buf(), source }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
        move |source| HistoryError::Io { path: path.to_path_buf(), source }
    }
}
