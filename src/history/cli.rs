//! `weerwal history scan|purge`. `main.rs` wires the subcommand to [`run`]
//! with the loaded policy; [`execute`] is the same with its surroundings
//! passed in, so tests drive exactly what the binary does.
//!
//! Exit status: 0 clean (or everything purged), 3 banned entries found by a
//! scan (so a login script or Intune can act on it), 1 on any error,
//! including a purge refused because the browser is running. `main.rs` keeps
//! to this for the errors that come before [`run`] too: a wrong option, a bad
//! `--config`, a broken policy.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::profiles::{discover, resolve_profile_path, Env};
use super::{report, scan, Browser, HistoryError, Profile, PurgeOptions};
use crate::policy::Policy;

pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_FOUND: u8 = 3;

/// The exit status, under `--help` of `history`, `scan` and `purge`.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 nothing found (or everything removed), 3 banned entries \
     found by `scan`, 1 on any error (a wrong option, a bad --config or policy, an unreadable profile, \
     a `purge` refused because the browser is open).";

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HistoryCommand {
    /// List visits to banned sites in this user's browser history (exit 3 when found).
    #[command(after_help = EXIT_STATUS_HELP)]
    Scan(SelectArgs),
    /// Remove exactly those entries (close the browser first).
    #[command(after_help = EXIT_STATUS_HELP)]
    Purge(PurgeArgs),
}

/// Which browser, which profiles, which output.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectArgs {
    /// Browser whose history to look at.
    #[arg(long, value_enum, default_value_t = BrowserChoice::All)]
    pub browser: BrowserChoice,
    /// A profile folder or history database (History, places.sqlite,
    /// History.db) instead of the standard places; repeatable.
    #[arg(long = "profile", value_name = "PATH")]
    pub profiles: Vec<PathBuf>,
    /// Output for people (table) or for scripts (json).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Do not write a backup copy of the history database first.
    #[arg(long)]
    pub no_backup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrowserChoice {
    Chrome,
    Edge,
    Chromium,
    Firefox,
    Safari,
    All,
}

impl BrowserChoice {
    fn browsers(self) -> Vec<Browser> {
        match self.single() {
            Some(b) => vec![b],
            None => Browser::ALL.to_vec(),
        }
    }

    fn single(self) -> Option<Browser> {
        match self {
            BrowserChoice::Chrome => Some(Browser::Chrome),
            BrowserChoice::Edge => Some(Browser::Edge),
            BrowserChoice::Chromium => Some(Browser::Chromium),
            BrowserChoice::Firefox => Some(Browser::Firefox),
            BrowserChoice::Safari => Some(Browser::Safari),
            BrowserChoice::All => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Runs a history command for the current user, printing to stdout/stderr.
pub fn run(cmd: HistoryCommand, policy: &Policy) -> ExitCode {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    ExitCode::from(execute(cmd, policy, &Env::current(), &mut stdout.lock(), &mut stderr.lock()))
}

/// [`run`] with the user's folders and the output streams passed in.
/// Returns the exit status.
pub fn execute(cmd: HistoryCommand, policy: &Policy, env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let select = match &cmd {
        HistoryCommand::Scan(s) => s,
        HistoryCommand::Purge(p) => &p.select,
    };
    let (profiles, mut errors) = select_profiles(select, env);
    let format = select.format;
    let (printed, found) = match &cmd {
        HistoryCommand::Scan(_) => {
            let mut scans = Vec::new();
            for p in profiles {
                match scan::scan_profile(&p, policy) {
                    Ok(s) => scans.push(s),
                    Err(e) => errors.push((p, e)),
                }
            }
            let found = scans.iter().any(|s| !s.findings.is_empty());
            let printed = match format {
                Format::Table => report::scan_table(out, &scans, &errors),
                Format::Json => report::scan_json(out, &scans, &errors),
            };
            (printed, found)
        }
        HistoryCommand::Purge(args) => {
            let opts = PurgeOptions { backup: !args.no_backup };
            let mut purges = Vec::new();
            for p in profiles {
                match scan::purge_profile(&p, policy, opts) {
                    Ok(o) => purges.push(o),
                    Err(e) => errors.push((p, e)),
                }
            }
            let printed = match format {
                Format::Table => report::purge_table(out, &purges, &errors),
                Format::Json => report::purge_json(out, &purges, &errors),
            };
            // After a purge, what was found has been removed.
            (printed, false)
        }
    };
    for (_, e) in &errors {
        let _ = writeln!(err, "weerwal: {e}");
    }
    if let Err(e) = printed.and_then(|()| out.flush()) {
        let _ = writeln!(err, "weerwal: writing the report: {e}");
        return EXIT_ERROR;
    }
    if found {
        EXIT_FOUND
    } else if !errors.is_empty() {
        EXIT_ERROR
    } else {
        EXIT_CLEAN
    }
}

/// The profiles named with `--profile`, or else those found in the standard
/// places. A `--profile` that names no database is an error for that path.
fn select_profiles(select: &SelectArgs, env: &Env) -> (Vec<Profile>, Vec<(Profile, HistoryError)>) {
    if select.profiles.is_empty() {
        return (discover(env, &select.browser.browsers()), Vec::new());
    }
    let hint = select.browser.single();
    let mut profiles = Vec::new();
    let mut errors = Vec::new();
    for path in &select.profiles {
        match resolve_profile_path(path, hint) {
            Ok(found) => profiles.extend(found),
            Err(e) => {
                let browser = hint.unwrap_or(Browser::Chromium);
                errors.push((Profile { browser, dir: path.clone(), db: path.clone() }, e));
            }
        }
    }
    // The same database named twice (a file and its folder) is handled once.
    let mut seen = std::collections::HashSet::new();
    profiles.retain(|p| seen.insert(p.db.canonicalize().unwrap_or_else(|_| p.db.clone())));
    (profiles, errors)
}
