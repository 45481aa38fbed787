//! `weerwal logs verify | query | report`: the security officer's view of
//! the audit log. Exit status: 0 ok, 1 a broken chain or an unreadable log,
//! 2 bad arguments.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use super::output::Format;
use super::query::{parse_client, parse_event, query, Filter, RunError, Skipped};
use super::reader::select;
use super::report::{report, write_report, GroupBy};
use super::time::{parse_time_arg, Edge, TimeRange};
use super::verify::{verify, Outcome};
use crate::calendar::Zone;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Check that nobody edited, removed, inserted, reordered or cut off a
    /// record: prints OK with the number of records and their time range, or
    /// the first broken place (file and line). Exit status 1 when broken.
    Verify {
        /// Log folders or files (default: the configured audit log and its
        /// rotated files).
        #[arg(value_name = "DIR|FILE")]
        paths: Vec<PathBuf>,
        /// Also compare every record with its copy in the cluster database
        /// (`[cluster]`) and name the first that differs: a chain rewritten
        /// on disk after it was shipped is caught.
        #[arg(long)]
        witness: bool,
    },
    /// List the records that match every filter given, across rotated files.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Count attempts (blocked, exempted, gateway denied) per group, with
    /// first and last seen and the number of distinct hosts.
    Report {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum, default_value_t = GroupBy::User)]
        by: GroupBy,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// The filters shared by `query` and `report`. Times are RFC 3339
/// (`2026-11-23T10:00:00Z`; without an offset: UTC), a date (`2026-11-23`,
/// the whole day) or an age (`7d`, `12h`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this session (its id, or the first characters the table shows).
    #[arg(long)]
    pub session: Option<String>,
    /// Only this app (e.g. AliExpress).
    #[arg(long)]
    pub app: Option<String>,
    /// Only this host and its subdomains.
    #[arg(long)]
    pub host: Option<String>,
    /// Only this client address or network.
    #[arg(long, value_name = "IP|CIDR")]
    pub client: Option<String>,
    /// Only this event (blocked, exempted, app_detected, session_start, …).
    #[arg(long)]
    pub event: Option<String>,
    /// From this time on.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Up to and including this time (a date: that whole day).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Read these log folders or files instead of the configured log (repeatable).
    #[arg(long = "log", value_name = "DIR|FILE")]
    pub logs: Vec<PathBuf>,
}

impl FilterArgs {
    /// The filter these arguments describe; ages count back from `now`.
    pub fn to_filter(&self, now: SystemTime, zone: &Zone) -> Result<Filter, String> {
        let time = |s: &Option<String>, edge| s.as_deref().map(|s| parse_time_arg(s, now, edge, zone)).transpose();
        let range = TimeRange { since: time(&self.since, Edge::Since)?, until: time(&self.until, Edge::Until)? };
        if let (Some(s), Some(u)) = (range.since, range.until) {
            if s >= u {
                return Err("--since is not before --until: nothing can match".into());
            }
        }
        Ok(Filter {
            user: self.user.clone(),
            session: self.session.clone(),
            app: self.app.clone(),
            host: self.host.as_deref().map(|h| h.trim().to_ascii_lowercase()),
            client: self.client.as_deref().map(parse_client).transpose()?,
            event: self.event.as_deref().map(parse_event).transpose()?,
            range,
            zone: zone.clone(),
        })
    }
}

/// Runs a `logs` command with the configured log, printing to stdout.
pub fn run(cmd: LogsCommand, config: &Config) -> ExitCode {
    to_stdout(|out, err| run_to(cmd, config, SystemTime::now(), out, err))
}

/// Runs `command` with a buffered stdout and stderr: the exit code it gives,
/// or 1 when stdout cannot take the rest (a closed pipe is not an error:
/// `logs query | head` is normal use).
pub fn to_stdout(command: impl FnOnce(&mut dyn Write, &mut dyn Write) -> u8) -> ExitCode {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut code = command(&mut out, &mut io::stderr());
    if let Err(e) = out.flush() {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("weerwal: {e}");
            code = 1;
        }
    }
    ExitCode::from(code)
}

enum Fail {
    Usage(String),
    Runtime(String),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Runtime(e.to_string())
    }
}

impl From<RunError> for Fail {
    fn from(e: RunError) -> Fail {
        Fail::Runtime(e.to_string())
    }
}

/// Runs a `logs` command writing to `out` and `err`; returns the exit status.
pub fn run_to(cmd: LogsCommand, config: &Config, now: SystemTime, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match execute(cmd, config, now, out, err) {
        Ok(code) => code,
        Err(Fail::Usage(m)) => {
            let _ = writeln!(err, "weerwal: {m}");
            2
        }
        // Output cut short by `| head` is not a failure.
        Err(Fail::Runtime(m)) if m.contains("Broken pipe") => 0,
        Err(Fail::Runtime(m)) => {
            let _ = writeln!(err, "weerwal: {m}");
            1
        }
    }
}

fn execute(
    cmd: LogsCommand,
    config: &Config,
    now: SystemTime,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Fail> {
    let live = &config.audit.path;
    match cmd {
        LogsCommand::Verify { witness: true, .. } => Err(Fail::Usage(
            "--witness compares the log with its copy in the cluster database: configure [cluster] first".into(),
        )),
        LogsCommand::Verify { paths, .. } => {
            let selection = select(&paths, live).map_err(Fail::Runtime)?;
            match verify(&selection).map_err(|e| Fail::Runtime(e.to_string()))? {
                Outcome::Intact(summary) => {
                    writeln!(out, "{summary}")?;
                    Ok(0)
                }
                Outcome::Broken(b) => {
                    writeln!(out, "FAILED: {b}")?;
                    if b.verified > 0 {
                        writeln!(out, "({} record(s) before it verified)", b.verified)?;
                    }
                    Ok(1)
                }
            }
        }
        LogsCommand::Query { filter, format } => {
            let f = filter.to_filter(now, &config.policy.timezone).map_err(Fail::Usage)?;
            let selection = select(&filter.logs, live).map_err(Fail::Runtime)?;
            let (matched, skipped) = query(&selection.files, &f, format, out)?;
            if format == Format::Table {
                writeln!(out, "\n{matched} record(s)")?;
            }
            warn_skipped(err, &skipped);
            Ok(0)
        }
        LogsCommand::Report { filter, by, format } => {
            let f = filter.to_filter(now, &config.policy.timezone).map_err(Fail::Usage)?;
            let selection = select(&filter.logs, live).map_err(Fail::Runtime)?;
            let (groups, skipped) = report(&selection.files, &f, by)?;
            write_report(&groups, by, format, &config.policy.timezone, out)?;
            warn_skipped(err, &skipped);
            Ok(0)
        }
    }
}

/// Warns about lines left out of a query or report.
pub fn warn_skipped(err: &mut dyn Write, skipped: &Skipped) {
    if let Some(first) = &skipped.first {
        let _ = writeln!(
            err,
            "weerwal: warning: {} line(s) are not complete records and were left out (the first at {first}); run `weerwal logs verify`",
            skipped.lines
        );
    }
}
