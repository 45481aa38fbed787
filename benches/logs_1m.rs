//! `weerwal logs verify | report | query` over an audit log of 1,000,000
//! records in rotated files (`bench/synthetic_log.rs`, the generator
//! `tests/audit_logs.rs` uses too). Each command runs in a fresh child
//! process (this bench run again), through the same `run_to` the binary
//! calls, writing its output to a counter; the child reads its own wall time
//! and resident set (`VmRSS` at start, peak `VmHWM`) from
//! `/proc/self/status`, so the memory of the generator does not count and
//! the peak shows whether the command streams.
//!
//! `cargo bench --bench logs_1m` (no criterion: one measured run of each;
//! `RECORDS=` and `PER_FILE=` change the size and the split into files).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime};

use weerwal::audit::cli::{run_to, FilterArgs, LogsCommand};
use weerwal::audit::output::Format;
use weerwal::audit::reader::select;
use weerwal::audit::report::GroupBy;
use weerwal::config::{AuditConfig, Config};

#[path = "../bench/synthetic_log.rs"]
mod synthetic_log;

/// In a child: the live file of the log to read.
const CHILD_LOG: &str = "WEERWAL_BENCH_LOGS_LIVE";
/// In a child: which command to run (an index into `COMMANDS`).
const CHILD_CMD: &str = "WEERWAL_BENCH_LOGS_CMD";

/// What each child runs, as the officer would type it.
const COMMANDS: [&str; 3] =
    ["weerwal logs verify", "weerwal logs report --by user", "weerwal logs query --user jdevries --format csv"];

fn command(i: usize) -> LogsCommand {
    match i {
        0 => LogsCommand::Verify { paths: Vec::new(), witness: false },
        1 => LogsCommand::Report { filter: FilterArgs::default(), by: GroupBy::User, format: Format::Table },
        _ => LogsCommand::Query {
            filter: FilterArgs { user: Some("jdevries".into()), ..FilterArgs::default() },
            format: Format::Csv,
        },
    }
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Counts what a command prints, and keeps its first and last line.
#[derive(Default)]
struct Counter {
    bytes: u64,
    lines: u64,
    first: Vec<u8>,
    line: Vec<u8>,
    last: Vec<u8>,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.lines == 0 {
                self.first = self.line.clone();
            }
            if !self.line.is_empty() {
                std::mem::swap(&mut self.last, &mut self.line);
            }
            self.line.clear();
            self.lines += 1;
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    if let (Some(live), Ok(cmd)) = (std::env::var_os(CHILD_LOG), std::env::var(CHILD_CMD)) {
        return child(PathBuf::from(live), cmd.parse().unwrap());
    }
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, per_file) = (env("RECORDS", 1_000_000), env("PER_FILE", 100_000));
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let live = synthetic_log::big_log(dir.path(), n, per_file);
    let generated = t.elapsed().as_secs_f64();
    let files = select(&[], &live).unwrap().files;
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    println!(
        "logs_1m: {n} records, {:.1} MiB of JSONL in {} files (generated in {generated:.1} s); \
         each command in a fresh process, files in the page cache",
        bytes as f64 / 1048576.0,
        files.len(),
    );
    println!();
    println!("| command | wall time | records/s | peak RSS (VmHWM) | RSS at start | output |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    // The files were just written, so they are in the page cache: the
    // commands measure weerwal, not the disk.
    let exe = std::env::current_exe().unwrap();
    for (i, name) in COMMANDS.iter().enumerate() {
        let out = Command::new(&exe)
            .env(CHILD_LOG, &live)
            .env(CHILD_CMD, i.to_string())
            .env("RECORDS", n.to_string())
            .output()
            .expect("child runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let line = stdout.lines().find_map(|l| l.strip_prefix("logs_1m child: ")).expect("the child measured");
        let (numbers, output) = line.split_once(" | ").unwrap();
        let numbers: Vec<f64> = numbers.split(' ').map(|x| x.parse().unwrap()).collect();
        let (secs, start, peak) = (numbers[0], numbers[1] as u64, numbers[2] as u64);
        println!(
            "| `{name}` | {secs:.2} s | {} | {:.1} MiB | {:.1} MiB | {output} |",
            thousands((n as f64 / secs) as u64),
            mib(peak),
            mib(start)
        );
    }
}

/// Runs one command over the log and prints
/// `logs_1m child: SECS START_KIB PEAK_KIB | WHAT IT PRINTED`.
fn child(live: PathBuf, i: usize) {
    let n: u64 = std::env::var("RECORDS").unwrap().parse().unwrap();
    let config = Config { audit: AuditConfig { path: live, ..AuditConfig::default() }, ..Config::default() };
    let cmd = command(i);
    let (mut out, mut err) = (Counter::default(), Vec::new());
    let start = status_kib("VmRSS:");
    let t = Instant::now();
    let code = run_to(cmd, &config, SystemTime::now(), &mut out, &mut err);
    let secs = t.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let (first, last) = (String::from_utf8_lossy(&out.first), String::from_utf8_lossy(&out.last));
    let printed = match i {
        0 => {
            assert!(first.starts_with(&format!("OK: {n} records, seq 1..{n},")), "{first}");
            first.split(", from").next().unwrap().to_string()
        }
        1 => {
            assert_eq!(last, format!("{n} attempt(s) in 4 group(s) by user"));
            last.to_string()
        }
        _ => {
            // The CSV heading, then every fourth record.
            assert_eq!(out.lines, n / 4 + 1);
            format!("{} CSV rows, {:.1} MiB", thousands(out.lines - 1), out.bytes as f64 / 1048576.0)
        }
    };
    println!("logs_1m child: {secs:.6} {start} {peak} | {printed}");
}
