//! `weerwal logs` with `[cluster]`: `query` and `report` read every node's
//! records from the database (same filters, same output as over the local
//! files), and `verify --witness` compares the local chain with the copy in
//! the database. `--log` still reads the files named; everything else is
//! the local command.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_postgres::Client;

use super::{node, Cluster, ClusterError};
use crate::audit::cli::{warn_skipped, LogsCommand};
use crate::audit::output::Format;
use crate::audit::query::query_lines;
use crate::audit::reader::{each_line, select, Line, LineVisitor, ReadError};
use crate::audit::report::{report_lines, write_report};
use crate::config::{ClusterConfig, Config};

/// Rows fetched per round trip.
const PAGE: i64 = 5000;
/// How long one page of records may take before the read fails (a
/// database that stopped answering must not hold a reader forever).
const PAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs a `logs` command, printing to stdout (the cluster-aware
/// `weerwal::audit::cli::run`).
pub fn run(cmd: LogsCommand, config: &Config) -> ExitCode {
    if config.cluster.is_none() {
        return crate::audit::cli::run(cmd, config);
    }
    crate::audit::cli::to_stdout(|out, err| run_to(cmd, config, SystemTime::now(), out, err))
}

/// [`run`] writing to `out` and `err`; returns the exit status.
pub fn run_to(cmd: LogsCommand, config: &Config, now: SystemTime, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Some(cluster) = &config.cluster else {
        return crate::audit::cli::run_to(cmd, config, now, out, err);
    };
    let result = match cmd {
        LogsCommand::Query { filter, format } if filter.logs.is_empty() => {
            let f = match filter.to_filter(now, &config.policy.timezone) {
                Ok(f) => f,
                Err(m) => return usage(err, &m),
            };
            with_database(cluster, |db| {
                let (matched, skipped) =
                    query_lines(|visit| db.each_record(&f.range, visit), &f, format, out).map_err(|e| e.to_string())?;
                if format == Format::Table {
                    writeln!(out, "\n{matched} record(s), all nodes").map_err(|e| e.to_string())?;
                }
                warn_skipped(err, &skipped);
                Ok(0)
            })
        }
        LogsCommand::Report { filter, by, format } if filter.logs.is_empty() => {
            let f = match filter.to_filter(now, &config.policy.timezone) {
                Ok(f) => f,
                Err(m) => return usage(err, &m),
            };
            with_database(cluster, |db| {
                let (groups, skipped) =
                    report_lines(|visit| db.each_record(&f.range, visit), &f, by).map_err(|e| e.to_string())?;
                write_report(&groups, by, format, &config.policy.timezone, out).map_err(|e| e.to_string())?;
                warn_skipped(err, &skipped);
                Ok(0)
            })
        }
        LogsCommand::Verify { paths, witness: true } => {
            let local = crate::audit::cli::run_to(
                LogsCommand::Verify { paths: paths.clone(), witness: false },
                config,
                now,
                out,
                err,
            );
            let selection = match select(&paths, &config.audit.path) {
                Ok(s) => s,
                Err(m) => return runtime(err, &m),
            };
            let node = node::node_name(cluster);
            with_database(cluster, |db| {
                let w = db.witness(&node, &selection.files)?;
                writeln!(out, "{w}").map_err(|e| e.to_string())?;
                Ok(if w.first_difference.is_some() || local != 0 { 1 } else { 0 })
            })
        }
        other => return crate::audit::cli::run_to(other, config, now, out, err),
    };
    match result {
        Ok(code) => code,
        Err(m) if m.contains("Broken pipe") => 0,
        Err(m) => runtime(err, &m),
    }
}

fn usage(err: &mut dyn Write, m: &str) -> u8 {
    let _ = writeln!(err, "weerwal: {m}");
    2
}

fn runtime(err: &mut dyn Write, m: &str) -> u8 {
    let _ = writeln!(err, "weerwal: {m}");
    1
}

/// The database's copy of every node's records, read from blocking code:
/// a command's own small runtime, or a `spawn_blocking` thread of the
/// server's runtime (the dashboard).
pub struct Db {
    rt: Runner,
    cluster: Arc<Cluster>,
    client: Arc<Client>,
}

/// What a [`Db`] runs its queries on.
enum Runner {
    Own(tokio::runtime::Runtime),
    Shared(tokio::runtime::Handle),
}

impl Db {
    /// Opens the database for blocking reads on the current runtime (the
    /// dashboard). Call [`Db::each_record`] from `spawn_blocking`, never
    /// from an async task.
    pub async fn open(cluster: Arc<Cluster>) -> Result<Db, ClusterError> {
        let client = cluster.client().await?;
        Ok(Db { rt: Runner::Shared(tokio::runtime::Handle::current()), cluster, client })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Runner::Own(rt) => rt.block_on(f),
            Runner::Shared(h) => h.block_on(f),
        }
    }
}

fn with_database(config: &ClusterConfig, f: impl FnOnce(&Db) -> Result<u8, String>) -> Result<u8, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (cluster, client) = rt
        .block_on(async {
            let cluster = Cluster::connect_only(config).await?;
            let client = cluster.client().await?;
            Ok::<_, ClusterError>((cluster, client))
        })
        .map_err(|e| e.to_string())?;
    f(&Db { rt: Runner::Own(rt), cluster, client })
}

fn db_read_error(e: impl std::fmt::Display) -> ReadError {
    ReadError { path: PathBuf::from("cluster database"), source: io::Error::other(e.to_string()) }
}

/// The result of `logs verify --witness`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Witness {
    pub node: String,
    /// Local records whose copy in the database is the same line.
    pub matched: u64,
    /// Local records not in the database yet (shipping behind).
    pub unshipped: u64,
    /// The first record that differs, said in full.
    pub first_difference: Option<String>,
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.first_difference {
            Some(d) => write!(f, "WITNESS FAILED (node {}): {d}", self.node),
            None => write!(
                f,
                "WITNESS OK: {} record(s) of node {} match their copy in the database{}",
                self.matched,
                self.node,
                if self.unshipped > 0 { format!("; {} not shipped yet", self.unshipped) } else { String::new() }
            ),
        }
    }
}

/// One local record being compared.
struct LocalRecord {
    seq: i64,
    hash: String,
    place: String,
}

impl Db {
    /// Every record in the database within (a superset of) `range`, ordered
    /// by time, node and `seq`, fetched a page at a time: the source of
    /// lines `logs query|report` and the dashboard read with `[cluster]`.
    pub fn each_record(&self, range: &crate::audit::time::TimeRange, visit: LineVisitor<'_>) -> Result<(), ReadError> {
        // Text bounds a little wider than the range; the filter is exact.
        let since = range
            .since
            .and_then(|t| t.checked_sub(std::time::Duration::from_secs(1)))
            .map(|t| humantime::format_rfc3339_millis(t).to_string())
            .unwrap_or_default();
        let until = range
            .until
            .and_then(|t| t.checked_add(std::time::Duration::from_secs(1)))
            .map(|t| humantime::format_rfc3339_millis(t).to_string())
            .unwrap_or_else(|| "~".into());
        let mut after: (String, String, i64) = (String::new(), String::new(), -1);
        loop {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&after.0, &after.1, &after.2, &since, &until, &PAGE];
            let page = self.client.query(
                "SELECT ts, node, seq, line FROM audit_records
                 WHERE (ts, node, seq) > ($1, $2, $3) AND ts >= $4 AND ts <= $5
                 ORDER BY ts, node, seq LIMIT $6",
                &params,
            );
            let rows = match self.block_on(async { tokio::time::timeout(PAGE_WAIT, page).await }) {
                Ok(r) => r.map_err(|e| db_read_error(self.cluster.settings.query_error(&e)))?,
                Err(_) => return Err(db_read_error(format!("no answer within {} s", PAGE_WAIT.as_secs()))),
            };
            let Some(last) = rows.last() else { return Ok(()) };
            after = (last.get(0), last.get(1), last.get(2));
            for row in &rows {
                let node: &str = row.get(1);
                let seq: i64 = row.get(2);
                let line: &str = row.get(3);
                let file = PathBuf::from(format!("database:{node}"));
                let shown = Line { file: &file, number: seq.max(0) as u64, bytes: line.as_bytes(), complete: true };
                if visit(shown).is_break() {
                    return Ok(());
                }
            }
            if (rows.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// Compares the local records of `files` with the database's copy of
    /// `node`'s records, in `seq` order, and names the first that differs:
    /// a changed line, a record the database has that the log lacks
    /// (removed or cut off), or a local record in a place the database
    /// holds another.
    pub fn witness(&self, node: &str, files: &[PathBuf]) -> Result<Witness, String> {
        let mut w = Witness { node: node.to_string(), ..Witness::default() };
        let mut chunk: Vec<LocalRecord> = Vec::with_capacity(PAGE as usize);
        let mut last_compared: Option<i64> = None;
        let mut failed: Option<String> = None;
        let read = each_line(files, |line| {
            let Some(text) = line.text().filter(|_| line.complete) else { return ControlFlow::Continue(()) };
            let Ok(head) = serde_json::from_str::<Head>(text) else { return ControlFlow::Continue(()) };
            let (Ok(seq), Some((hash, _))) = (i64::try_from(head.seq), crate::audit::record::line_hash(text)) else {
                return ControlFlow::Continue(());
            };
            chunk.push(LocalRecord { seq, hash: hash.to_string(), place: place(line.file, line.number) });
            if chunk.len() >= PAGE as usize {
                if let Err(e) = self.compare(node, &mut chunk, &mut last_compared, &mut w) {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
                if w.first_difference.is_some() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        read.map_err(|e| e.to_string())?;
        if let Some(e) = failed {
            return Err(e);
        }
        if w.first_difference.is_none() && !chunk.is_empty() {
            self.compare(node, &mut chunk, &mut last_compared, &mut w)?;
        }
        if w.first_difference.is_none() {
            // Records the database has after the local log's end: cut off.
            let after = last_compared.unwrap_or(-1);
            let row = self
                .block_on(self.client.query_opt(
                    "SELECT seq, ts FROM audit_records WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT 1",
                    &[&node, &after],
                ))
                .map_err(|e| self.cluster.settings.query_error(&e).to_string())?;
            if let Some(row) = row {
                let seq: i64 = row.get(0);
                let ts: String = row.get(1);
                w.first_difference = Some(format!(
                    "seq {seq} ({ts}) is in the database but not in the local log (the log was cut off or the record removed)"
                ));
            }
        }
        Ok(w)
    }

    fn compare(
        &self,
        node: &str,
        chunk: &mut Vec<LocalRecord>,
        last_compared: &mut Option<i64>,
        w: &mut Witness,
    ) -> Result<(), String> {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else { return Ok(()) };
        // From just after the previous chunk, so no database row falls between.
        let low = last_compared.map(|l| l + 1).unwrap_or(first.seq.min(0));
        let low = low.min(first.seq);
        let rows = self
            .block_on(self.client.query(
                "SELECT seq, hash, ts FROM audit_records WHERE node = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
                &[&node, &low, &last.seq],
            ))
            .map_err(|e| self.cluster.settings.query_error(&e).to_string())?;
        let mut db = rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, String>(2))).peekable();
        for local in chunk.iter() {
            // Rows the log lacks before this record: only below the oldest
            // local record may they be gone (removed by retention).
            while let Some((seq, _, ts)) = db.peek() {
                if *seq >= local.seq {
                    break;
                }
                if last_compared.is_some() || *seq >= first.seq {
                    w.first_difference = Some(format!(
                        "seq {seq} ({ts}) is in the database but missing from the local log before {}",
                        local.place
                    ));
                    return Ok(());
                }
                db.next();
            }
            match db.peek() {
                Some((seq, hash, _)) if *seq == local.seq => {
                    if *hash != local.hash {
                        w.first_difference = Some(format!(
                            "{}: seq {} differs from the copy in the database (local hash {}…, database {}…): the record was changed after it was shipped",
                            local.place,
                            local.seq,
                            &local.hash[..12.min(local.hash.len())],
                            &hash[..12.min(hash.len())]
                        ));
                        return Ok(());
                    }
                    w.matched += 1;
                    db.next();
                }
                _ => w.unshipped += 1,
            }
        }
        *last_compared = Some(last.seq);
        chunk.clear();
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Head {
    seq: u64,
}

fn place(file: &Path, line: u64) -> String {
    format!("{}:{line}", file.display())
}
