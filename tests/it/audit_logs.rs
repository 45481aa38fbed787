//! The audit log as a security officer relies on it: written by the real
//! writer across rotated files, verified (and every kind of tampering found
//! at its file and line), queried and reported with known counts, thinned
//! by retention without breaking the chain, mirrored into a Squid
//! access.log that a strict reader of Squid's format accepts, and reported
//! in memory that does not grow with the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use weerwal::audit::cli::{run_to, FilterArgs, LogsCommand};
use weerwal::audit::files::LogFiles;
use weerwal::audit::output::Format;
use weerwal::audit::query::{query, Filter};
use weerwal::audit::reader::{select, Selection};
use weerwal::audit::record::GENESIS;
use weerwal::audit::report::{report, GroupBy};
use weerwal::audit::time::{from_unix_millis, parse_rfc3339};
use weerwal::audit::verify::{verify, Outcome, Start};
use weerwal::audit::{AuditLog, Clock, EventKind, Record};
use weerwal::config::{AuditConfig, Config, SyncMode};

#[path = "../../bench/synthetic_log.rs"]
mod synthetic_log;
use synthetic_log::{attempt, big_log, session_id, BASE_MS};

const DAY_MS: i64 = 86_400_000;

struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn new(ms: i64) -> TestClock {
        TestClock(Arc::new(AtomicI64::new(ms)))
    }
    fn clock(&self) -> Clock {
        let now = Arc::clone(&self.0);
        Arc::new(move || from_unix_millis(now.load(Ordering::SeqCst)))
    }
    fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

fn audit_config(dir: &Path) -> AuditConfig {
    AuditConfig {
        path: dir.join("logs/audit.jsonl"),
        sync: SyncMode::Write,
        retention_days: 365,
        rotate: weerwal::config::Rotate { daily: true, max_bytes: 6 * 1024 },
        squid_log: Some(dir.join("logs/access.log")),
        // The model counts one record per attempt (coalescing: hardening2.rs).
        coalesce_after: 0,
        ..AuditConfig::default()
    }
}

/// What the generator wrote, counted independently of the code under test.
#[derive(Default)]
struct Model {
    records: u64,
    by_user: BTreeMap<String, (u64, u64, u64)>,
    by_app: BTreeMap<String, (u64, BTreeSet<String>)>,
    by_day: BTreeMap<String, u64>,
    blocked: u64,
    exempted: u64,
    squid: Vec<Record>,
}

/// Writes `n` attempts with the real writer over `days` days (rotating by
/// day and by size), plus a session_start now and then.
async fn generate(config: &AuditConfig, clock: &TestClock, n: usize, days: i64) -> Model {
    let mut model = Model::default();
    clock.set(BASE_MS);
    let (log, handle, _) = AuditLog::open_with_clock(config, clock.clock()).unwrap();
    for i in 0..n {
        let day = i as i64 * days / n as i64;
        clock.set(BASE_MS + day * DAY_MS + i as i64 * 1000);
        if i % 10 == 0 {
            let mut s = Record::new(EventKind::SessionStart);
            s.session = Some(session_id(i));
            log.record(s).await.unwrap();
            model.records += 1;
        }
        let event = if i % 5 == 0 { EventKind::Exempted } else { EventKind::Blocked };
        let r = attempt(event, i);
        let user = r.user.clone().unwrap_or_else(|| "-".into());
        let e = model.by_user.entry(user).or_default();
        e.0 += 1;
        if event == EventKind::Blocked {
            e.1 += 1;
            model.blocked += 1;
        } else {
            e.2 += 1;
            model.exempted += 1;
        }
        let a = model.by_app.entry(r.app.clone().unwrap()).or_default();
        a.0 += 1;
        a.1.insert(r.host.clone().unwrap());
        let ts =
            humantime::format_rfc3339_millis(from_unix_millis(BASE_MS + day * DAY_MS + i as i64 * 1000)).to_string();
        *model.by_day.entry(ts[..10].to_string()).or_default() += 1;
        let seq = log.record(r.clone()).await.unwrap();
        model.records += 1;
        let mut written = r;
        written.seq = seq;
        written.ts = ts;
        model.squid.push(written);
    }
    drop(log);
    handle.join();
    model
}

fn whole(config: &AuditConfig) -> Selection {
    select(&[], &config.path).unwrap()
}

fn intact(sel: &Selection) -> weerwal::audit::verify::Summary {
    match verify(sel).unwrap() {
        Outcome::Intact(s) => s,
        Outcome::Broken(b) => panic!("expected an intact chain, got {b}"),
    }
}

fn broken(sel: &Selection) -> weerwal::audit::verify::Break {
    match verify(sel).unwrap() {
        Outcome::Broken(b) => b,
        Outcome::Intact(s) => panic!("expected a break, verified: {s}"),
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// A copy of the log's folder to damage.
fn copy_log(config: &AuditConfig) -> (tempfile::TempDir, AuditConfig) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for entry in std::fs::read_dir(config.path.parent().unwrap()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), logs.join(entry.file_name())).unwrap();
    }
    let c = AuditConfig { path: logs.join("audit.jsonl"), ..config.clone() };
    (dir, c)
}

fn config_for(audit: &AuditConfig) -> Config {
    Config { audit: audit.clone(), ..Config::default() }
}

fn cli(cmd: LogsCommand, audit: &AuditConfig) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let now = from_unix_millis(BASE_MS + 30 * DAY_MS);
    let code = run_to(cmd, &config_for(audit), now, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn a_log_spanning_rotated_files_verifies_and_every_kind_of_damage_is_found_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = audit_config(dir.path());
    let clock = TestClock::new(BASE_MS);
    let model = generate(&config, &clock, 300, 3).await;
    let sel = whole(&config);
    assert!(sel.files.len() >= 5, "expected daily and size rotation: {:?}", sel.files);
    assert_eq!(sel.files.last().unwrap(), &config.path);
    let summary = intact(&sel);
    assert_eq!((summary.records, summary.first_seq, summary.last_seq), (model.records, 1, model.records));
    assert_eq!(summary.start, Start::Genesis);
    // Each file is within the size limit (one batch = one record here) and
    // the files of different days never mix.
    for f in &sel.files {
        assert!(std::fs::metadata(f).unwrap().len() <= config.rotate.max_bytes, "{}", f.display());
        let days: BTreeSet<String> =
            read_lines(f).iter().map(|l| serde_json::from_str::<Record>(l).unwrap().ts[..10].to_string()).collect();
        assert_eq!(days.len(), 1, "{}: {days:?}", f.display());
    }

    // The command: OK line with count, seq range and time range.
    let (code, out, _) = cli(LogsCommand::Verify { paths: vec![], witness: false }, &config);
    assert_eq!(code, 0, "{out}");
    let first_line = out.lines().next().unwrap();
    assert_eq!(
        first_line,
        format!("OK: {n} records, seq 1..{n}, from {} to {}", summary.first_ts, summary.last_ts, n = model.records)
    );
    assert!(summary.first_ts.starts_with("2026-11-20T08:00:00") && summary.last_ts.starts_with("2026-11-22"));

    let middle = sel.files[2].clone();
    let name = |c: &AuditConfig, p: &Path| c.path.parent().unwrap().join(p.file_name().unwrap());

    // One field edited.
    let (_d, c) = copy_log(&config);
    let target = name(&c, &middle);
    let mut lines = read_lines(&target);
    let edited = lines[2].replacen("\"ts\":\"2026-", "\"ts\":\"2025-", 1);
    assert_ne!(edited, lines[2]);
    lines[2] = edited;
    write_lines(&target, &lines);
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (target.clone(), 3));
    assert!(b.message.contains("hash mismatch"), "{b}");
    let (code, out, _) = cli(LogsCommand::Verify { paths: vec![], witness: false }, &c);
    assert_eq!(code, 1);
    assert!(out.starts_with(&format!("FAILED: {}:3: hash mismatch", target.display())), "{out}");

    // One line deleted.
    let (_d, c) = copy_log(&config);
    let target = name(&c, &middle);
    let mut lines = read_lines(&target);
    lines.remove(3);
    write_lines(&target, &lines);
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (target.clone(), 4));
    assert!(b.message.contains("1 record(s) missing"), "{b}");

    // Two lines swapped.
    let (_d, c) = copy_log(&config);
    let target = name(&c, &middle);
    let mut lines = read_lines(&target);
    lines.swap(1, 2);
    write_lines(&target, &lines);
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (target.clone(), 2));

    // A line inserted (a copy of another record): caught where it stands.
    let (_d, c) = copy_log(&config);
    let target = name(&c, &middle);
    let mut lines = read_lines(&target);
    let copy = lines[5].clone();
    lines.insert(2, copy);
    write_lines(&target, &lines);
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (target.clone(), 3), "{b}");

    // A line rewritten with a fresh, self-consistent hash: caught by the next line.
    let (_d, c) = copy_log(&config);
    let target = name(&c, &middle);
    let mut lines = read_lines(&target);
    let mut forged: Record = serde_json::from_str(&lines[1]).unwrap();
    forged.user = Some("iemand-anders".into());
    forged.hash.clear();
    let mut out = Vec::new();
    forged.write_line(&mut out).unwrap();
    lines[1] = String::from_utf8(out).unwrap().trim_end().to_string();
    write_lines(&target, &lines);
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (target.clone(), 3));
    assert!(b.message.contains("prev does not match the hash of line 2"), "{b}");

    // The last line cut off.
    let (_d, c) = copy_log(&config);
    let text = std::fs::read_to_string(&c.path).unwrap();
    let n = text.lines().count() as u64;
    std::fs::write(&c.path, &text[..text.len() - 20]).unwrap();
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (c.path.clone(), n));
    assert!(b.message.contains("not a complete record"), "{b}");

    // A whole rotated file removed.
    let (_d, c) = copy_log(&config);
    std::fs::remove_file(name(&c, &middle)).unwrap();
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (name(&c, &sel.files[3]), 1));
    assert!(b.message.contains(&format!("the last line of {}", name(&c, &sel.files[1]).display())), "{b}");

    // The very first line removed: the chain no longer starts at the beginning.
    let (_d, c) = copy_log(&config);
    let target = name(&c, &sel.files[0]);
    let mut lines = read_lines(&target);
    lines.remove(0);
    write_lines(&target, &lines);
    let b = broken(&whole(&c));
    assert_eq!((b.file.clone(), b.line), (target, 1));
    assert!(b.message.contains("does not start here"), "{b}");

    // Files picked by hand: the chain into them cannot be checked, and says so.
    let (code, out, _) = cli(LogsCommand::Verify { paths: vec![middle.clone()], witness: false }, &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NOTE: seq") && out.contains("chains to a record not given"), "{out}");
    // A folder is the whole log.
    let (code, out, _) =
        cli(LogsCommand::Verify { paths: vec![config.path.parent().unwrap().to_path_buf()], witness: false }, &config);
    assert_eq!((code, out.lines().next().unwrap()), (0, first_line));
}

#[tokio::test]
async fn query_and_report_give_the_known_counts_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = audit_config(dir.path());
    let clock = TestClock::new(BASE_MS);
    let model = generate(&config, &clock, 240, 4).await;
    let files = whole(&config).files;
    assert!(files.len() >= 4);

    // Report by user, app and day.
    let (groups, skipped) = report(&files, &Filter::default(), GroupBy::User).unwrap();
    assert_eq!(skipped.lines, 0);
    let got: BTreeMap<String, (u64, u64, u64)> =
        groups.iter().map(|g| (g.key.clone(), (g.attempts, g.blocked, g.exempted))).collect();
    assert_eq!(got, model.by_user);
    assert!(groups.windows(2).all(|w| w[0].attempts >= w[1].attempts));
    let (groups, _) = report(&files, &Filter::default(), GroupBy::App).unwrap();
    for g in &groups {
        let (n, hosts) = &model.by_app[&g.key];
        assert_eq!((g.attempts, g.hosts.len()), (*n, hosts.len()), "{}", g.key);
    }
    let (groups, _) = report(&files, &Filter::default(), GroupBy::Day).unwrap();
    let got: BTreeMap<String, u64> = groups.iter().map(|g| (g.key.clone(), g.attempts)).collect();
    assert_eq!(got, model.by_day);
    assert_eq!(got.len(), 4);
    let day2 = groups[1].clone();
    assert!(day2.first_seen.starts_with(&day2.key) && day2.last_seen.starts_with(&day2.key));

    // The same through the command, as CSV: a strict reader agrees.
    let report_cmd = |by, format, since: Option<&str>, until: Option<&str>| LogsCommand::Report {
        filter: FilterArgs { since: since.map(Into::into), until: until.map(Into::into), ..FilterArgs::default() },
        by,
        format,
    };
    let (code, out, err) = cli(report_cmd(GroupBy::User, Format::Csv, None, None), &config);
    assert_eq!(code, 0, "{err}");
    let rows = parse_csv(&out);
    assert_eq!(rows[0][..4], ["user", "attempts", "blocked", "exempted"]);
    assert_eq!(rows.len(), model.by_user.len() + 1);
    for row in &rows[1..] {
        let (n, b, e) = model.by_user[&row[0]];
        assert_eq!(row[1..4], [n.to_string(), b.to_string(), e.to_string()], "{row:?}");
    }
    // A date range is whole days: the second and third day.
    let (_, out, _) = cli(report_cmd(GroupBy::Day, Format::Json, Some("2026-11-21"), Some("2026-11-22")), &config);
    let days: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = days.iter().map(|d| d["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["2026-11-21", "2026-11-22"]);
    assert_eq!(days[0]["attempts"], model.by_day["2026-11-21"]);
    // Relative ages count back from now (here: 30 days after the start).
    let (_, out, _) = cli(report_cmd(GroupBy::Day, Format::Json, Some("28d"), None), &config);
    let days: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(days.len(), 2, "{out}");
    let (_, out, _) = cli(report_cmd(GroupBy::App, Format::Table, None, None), &config);
    let header = out.lines().next().unwrap();
    assert!(header.starts_with("APP") && header.contains("ATTEMPTS") && header.contains("HOSTS"), "{out}");
    let col = header.find("ATTEMPTS").unwrap() + "ATTEMPTS".len();
    // Numbers are right-aligned under their heading.
    for line in out.lines().skip(2).take_while(|l| !l.is_empty()) {
        assert!(line.as_bytes()[col - 1].is_ascii_digit(), "{line:?}");
    }

    // Query: one user, as JSON (the lines as written) and as CSV.
    let q = |filter: FilterArgs, format| cli(LogsCommand::Query { filter, format }, &config);
    let jdevries = FilterArgs { user: Some("jdevries".into()), ..FilterArgs::default() };
    let (code, out, _) = q(jdevries.clone(), Format::Json);
    assert_eq!(code, 0);
    let records: Vec<Record> = serde_json::from_str(&out).unwrap();
    assert_eq!(records.len() as u64, model.by_user["jdevries"].0);
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
    let (_, out, _) = q(jdevries, Format::Csv);
    let rows = parse_csv(&out);
    assert_eq!(rows.len() as u64, model.by_user["jdevries"].0 + 1);
    let ua = rows[0].iter().position(|c| c == "user_agent").unwrap();
    assert!(rows[1][ua].contains("\"quoted\"") && rows[1][ua].contains(", "), "{:?}", rows[1]);
    // Other filters, through the library.
    let count = |f: Filter| {
        let mut sink = Vec::new();
        query(&files, &f, Format::Json, &mut sink).unwrap().0
    };
    let exempted = Filter { event: Some(EventKind::Exempted), ..Filter::default() };
    assert_eq!(count(exempted), model.exempted);
    let aliexpress = Filter { host: Some("aliexpress.com".into()), ..Filter::default() };
    assert_eq!(count(aliexpress), model.by_app["AliExpress"].0);
    let v6 = Filter { client: Some("2001:db8::/32".parse().unwrap()), ..Filter::default() };
    assert_eq!(count(v6), model.by_user["m.jansen"].0);
    let session =
        Filter { session: Some(session_id(4)[..8].to_string()), event: Some(EventKind::Blocked), ..Filter::default() };
    assert_eq!(count(session), (0..240).filter(|i| i % 6 == 4 && i % 5 != 0).count() as u64);
    // Table output: aligned columns, a count at the end.
    let (_, out, _) = q(FilterArgs { app: Some("tiktok".into()), ..FilterArgs::default() }, Format::Table);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].trim_start().starts_with("SEQ") && lines[1].starts_with("--"), "{out}");
    assert_eq!(*lines.last().unwrap(), format!("{} record(s)", model.by_app["TikTok"].0));
    let host_col = lines[0].find("HOST").unwrap();
    assert!(lines[2..lines.len() - 2].iter().all(|l| l[host_col..].starts_with("www.tiktok.com")), "{out}");
    // Bad arguments are usage errors.
    let (code, _, err) = q(FilterArgs { since: Some("vorige week".into()), ..FilterArgs::default() }, Format::Table);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the time"), "{err}");
    let (code, _, err) = q(FilterArgs { event: Some("blokked".into()), ..FilterArgs::default() }, Format::Table);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn retention_removes_old_files_after_a_checkpoint_and_the_rest_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = audit_config(dir.path());
    config.rotate.max_bytes = 0;
    let clock = TestClock::new(BASE_MS);
    generate(&config, &clock, 100, 10).await;
    let before = whole(&config);
    assert_eq!(before.files.len(), 10, "{:?}", before.files);
    let total = intact(&before).records;
    let last_of: HashMap<PathBuf, Record> = before
        .files
        .iter()
        .map(|f| (f.clone(), serde_json::from_str(read_lines(f).last().unwrap()).unwrap()))
        .collect();

    // Restart 13 days after the start with 5 days of retention: the files
    // of the first days are past it.
    config.retention_days = 5;
    clock.set(BASE_MS + 13 * DAY_MS + 3_600_000);
    let (log, handle, resume) = AuditLog::open_with_clock(&config, clock.clock()).unwrap();
    drop(log);
    handle.join();
    assert_eq!(resume.next_seq, total + 2);
    let after = whole(&config);
    assert!(after.files.len() < before.files.len());
    let removed: Vec<&PathBuf> = before.files.iter().filter(|f| !after.files.contains(f)).collect();
    // Every file whose newest record is more than 5 days old, and only those.
    let cutoff = from_unix_millis(BASE_MS + 8 * DAY_MS + 3_600_000);
    for f in &before.files {
        let last = &last_of[f];
        assert_eq!(removed.contains(&f), parse_rfc3339(&last.ts).unwrap() < cutoff, "{}", f.display());
    }
    assert!(removed.len() >= 6);
    let retention: Record = serde_json::from_str(read_lines(&config.path).last().unwrap()).unwrap();
    assert_eq!(retention.event, EventKind::Retention);
    let detail = retention.detail.clone().unwrap();
    assert_eq!(detail["removed"].as_array().unwrap().len(), removed.len());
    let newest_removed = &last_of[*removed.last().unwrap()];
    assert_eq!(detail["last_hash"], newest_removed.hash.as_str());
    assert_eq!(detail["last_seq"], newest_removed.seq);

    let summary = intact(&after);
    assert_eq!(summary.start, Start::Checkpoint { retention_seq: retention.seq });
    assert_eq!(summary.first_seq, newest_removed.seq + 1);
    assert_eq!(summary.last_seq, retention.seq);
    let (code, out, _) = cli(LogsCommand::Verify { paths: vec![], witness: false }, &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed by retention"), "{out}");

    // Removing one more file by hand is not covered by the checkpoint.
    let (_d, c) = copy_log(&config);
    let oldest = whole(&c).files[0].clone();
    std::fs::remove_file(&oldest).unwrap();
    let b = broken(&whole(&c));
    assert_eq!(b.line, 1);
    assert!(b.message.contains("does not start here"), "{b}");

    // Retention with everything expired and an empty live file (a crash
    // just after a rotation): the checkpoint is the first record kept.
    let dir = tempfile::tempdir().unwrap();
    let mut config = audit_config(dir.path());
    config.rotate.max_bytes = 0;
    generate(&config, &clock, 30, 3).await;
    let live = config.path.clone();
    let files = LogFiles::new(&live);
    let first: Record = serde_json::from_str(&read_lines(&live)[0]).unwrap();
    std::fs::rename(&live, files.rotated_path(parse_rfc3339(&first.ts).unwrap(), first.seq)).unwrap();
    std::fs::write(&live, "").unwrap();
    config.retention_days = 1;
    clock.set(BASE_MS + 40 * DAY_MS);
    let (log, handle, _) = AuditLog::open_with_clock(&config, clock.clock()).unwrap();
    log.record(Record::new(EventKind::PolicyLoaded)).await.unwrap();
    drop(log);
    handle.join();
    let kept = whole(&config);
    assert_eq!(kept.files, vec![live.clone()]);
    let summary = intact(&kept);
    assert_eq!(summary.records, 2);
    assert!(matches!(summary.start, Start::Checkpoint { .. }));
    assert_ne!(serde_json::from_str::<Record>(&read_lines(&live)[0]).unwrap().prev, GENESIS);
}

/// One line of Squid's native `access.log`, read strictly:
/// `%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt`.
#[derive(Debug)]
struct SquidLine {
    time_ms: u64,
    client: Option<IpAddr>,
    code: String,
    status: u16,
    method: String,
    url: String,
    user: Option<String>,
    hierarchy: String,
    peer: String,
    mime: String,
}

fn parse_squid(line: &str) -> Result<SquidLine, String> {
    let (ts, rest) = line.split_once(' ').ok_or("no fields")?;
    let (secs, ms) = ts.split_once('.').ok_or("time without milliseconds")?;
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || ms.len() != 3
        || !ms.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("bad time {ts:?}"));
    }
    // %6tr: at least six characters, right-aligned.
    let elapsed_end =
        rest.char_indices().find(|&(i, c)| i >= 6 && c == ' ').map(|(i, _)| i).ok_or("no elapsed field")?;
    let elapsed = &rest[..elapsed_end];
    let number = elapsed.trim_start_matches(' ');
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || (elapsed.len() > 6 && number != elapsed) {
        return Err(format!("bad elapsed field {elapsed:?}"));
    }
    let fields: Vec<&str> = rest[elapsed_end + 1..].split(' ').collect();
    if fields.len() != 8 || fields.iter().any(|f| f.is_empty() || f.chars().any(char::is_whitespace)) {
        return Err(format!("expected 8 fields after the elapsed time, got {:?}", fields));
    }
    let client = match fields[0] {
        "-" => None,
        c => Some(c.parse().map_err(|_| format!("bad client {c:?}"))?),
    };
    let (code, status) = fields[1].split_once('/').ok_or("no result code/status")?;
    if !code.starts_with("TCP_") || !code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') || status.len() != 3 {
        return Err(format!("bad result {:?}", fields[1]));
    }
    fields[2].parse::<u64>().map_err(|_| format!("bad size {:?}", fields[2]))?;
    if !fields[3].bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("bad method {:?}", fields[3]));
    }
    let url = fields[4];
    let url_ok = if fields[3] == "CONNECT" {
        url.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    } else {
        url.starts_with("http://") || url.starts_with("https://")
    };
    if !url_ok {
        return Err(format!("bad URL {url:?} for {}", fields[3]));
    }
    let user = match fields[5] {
        "-" => None,
        u => Some(percent_decode(u)?),
    };
    let (hierarchy, peer) = fields[6].split_once('/').ok_or("no hierarchy/peer")?;
    if !hierarchy.starts_with("HIER_") {
        return Err(format!("bad hierarchy {:?}", fields[6]));
    }
    let mime = fields[7];
    if mime != "-" && !mime.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()) {
        return Err(format!("bad content type {mime:?}"));
    }
    Ok(SquidLine {
        time_ms: secs.parse::<u64>().unwrap() * 1000 + ms.parse::<u64>().unwrap(),
        client,
        code: code.into(),
        status: status.parse().map_err(|_| "bad status")?,
        method: fields[3].into(),
        url: url.into(),
        user,
        hierarchy: hierarchy.into(),
        peer: peer.into(),
        mime: mime.into(),
    })
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("short escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

#[tokio::test]
async fn blocked_and_exempted_attempts_are_written_as_squid_access_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = audit_config(dir.path());
    let clock = TestClock::new(BASE_MS);
    let model = generate(&config, &clock, 60, 2).await;
    let text = std::fs::read_to_string(config.squid_log.as_ref().unwrap()).unwrap();
    let lines: Vec<SquidLine> = text.lines().map(|l| parse_squid(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect();
    // Only attempts: no session or policy records.
    assert_eq!(lines.len(), model.squid.len());
    assert_eq!(lines.len() as u64, model.blocked + model.exempted);
    for (l, r) in lines.iter().zip(&model.squid) {
        assert_eq!(l.time_ms as i64, weerwal::audit::time::unix_millis(parse_rfc3339(&r.ts).unwrap()));
        assert_eq!(l.client, r.client);
        assert_eq!(l.user, r.user);
        assert_eq!(l.method, r.method.clone().unwrap());
        let host = r.host.clone().unwrap();
        if l.method == "CONNECT" {
            assert_eq!(l.url, format!("{host}:443"));
        } else {
            assert_eq!(l.url, format!("http://{host}/"));
        }
        match r.event {
            EventKind::Blocked => {
                assert_eq!(
                    (l.code.as_str(), l.status, l.hierarchy.as_str(), l.peer.as_str()),
                    ("TCP_DENIED", 403, "HIER_NONE", "-")
                );
                assert_eq!(l.mime, "text/html");
            }
            _ => assert_eq!(
                (l.code.as_str(), l.status, l.hierarchy.as_str(), l.peer.as_str()),
                ("TCP_MISS", 200, "HIER_DIRECT", host.as_str())
            ),
        }
    }
    assert!(text.contains(" Jan%20de%20Vries "), "user names with spaces keep the field count");
    // The strict reader does reject what is not Squid's format.
    for bad in [
        "1732357002.123 0 10.1.2.3 TCP_DENIED/403 0 GET http://a/ - HIER_NONE/- text/html",
        "1732357002.123      0 10.1.2.3 TCP_DENIED/403 0 GET http://a/ Jan de Vries HIER_NONE/- text/html",
        "1732357002      0 10.1.2.3 TCP_DENIED/403 0 GET http://a/ - HIER_NONE/- text/html",
    ] {
        assert!(parse_squid(bad).is_err(), "{bad}");
    }
}

/// A strict RFC 4180 reader (CRLF records, quoted fields, doubled quotes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    quoted = false;
                    assert!(matches!(chars.peek(), Some(',' | '\r')), "text after a closing quote");
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                assert!(field.is_empty(), "a quote inside an unquoted field");
                quoted = true;
            }
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            '\n' => panic!("a bare LF outside quotes"),
            c => field.push(c),
        }
    }
    assert!(!quoted && row.is_empty() && field.is_empty(), "the last record is not ended");
    let width = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == width), "rows of different widths");
    rows
}

#[test]
fn a_generated_log_over_several_files_reports_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let live = big_log(dir.path(), 5_000, 700);
    let files = select(&[], &live).unwrap();
    assert_eq!(files.files.len(), 8);
    assert_eq!(intact(&files).records, 5_000);
    let (groups, _) = report(&files.files, &Filter::default(), GroupBy::User).unwrap();
    let counts: HashMap<String, u64> = groups.iter().map(|g| (g.key.clone(), g.attempts)).collect();
    assert_eq!(counts["jdevries"], 1_250);
    assert_eq!(counts["-"], 1_250);
    let (groups, _) = report(&files.files, &Filter::default(), GroupBy::Session).unwrap();
    assert_eq!(groups.len(), 6, "six sessions");
    assert_eq!(groups.iter().map(|g| g.attempts).sum::<u64>(), 5_000);
    assert!(groups.iter().all(|g| g.key.len() == 32), "{:?}", groups.iter().map(|g| &g.key).collect::<Vec<_>>());
    let (groups, _) =
        report(&files.files, &Filter { event: Some(EventKind::Exempted), ..Filter::default() }, GroupBy::App).unwrap();
    assert_eq!(groups.iter().map(|g| g.exempted).sum::<u64>(), 1_000);
}

/// `logs report` holds its groups, never the log: over a log of 73 MiB its
/// peak resident set stays below a quarter of that (it is about 6.5 MiB). The
/// report runs in a fresh process (this test binary run again, for this test
/// alone), so neither the generator's memory nor other tests count; the
/// child reads its own `VmHWM`. Not timed: speed is `benches/logs_1m.rs`.
#[test]
#[cfg(target_os = "linux")]
fn report_streams_a_log_far_larger_than_its_memory() {
    /// Set in the child: the live file of the log to report on.
    const CHILD: &str = "WEERWAL_TEST_REPORT_STREAMS_LOG";
    /// A value from this process's `/proc/self/status`, in KiB.
    fn status_kib(key: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap()
    }
    const N: u64 = 160_000;
    if let Some(live) = std::env::var_os(CHILD) {
        let audit = AuditConfig { path: PathBuf::from(live), ..AuditConfig::default() };
        let before = status_kib("VmRSS:");
        let cmd = LogsCommand::Report { filter: FilterArgs::default(), by: GroupBy::User, format: Format::Csv };
        let (code, out, err) = cli(cmd, &audit);
        let peak = status_kib("VmHWM:");
        assert_eq!((code, err.as_str()), (0, ""));
        let rows = parse_csv(&out);
        assert_eq!(rows[0][..4], ["user", "attempts", "blocked", "exempted"]);
        let counts: HashMap<&str, &str> = rows[1..].iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
        let quarter = (N / 4).to_string();
        let expected: HashMap<&str, &str> =
            ["jdevries", "Jan de Vries", "-", "m.jansen"].into_iter().map(|u| (u, quarter.as_str())).collect();
        assert_eq!(counts, expected);
        println!("report-rss-kib before={before} peak={peak}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Four files of ≤ 23 MiB: reading even one of them whole would break the limit.
    let live = big_log(dir.path(), N, 50_000);
    let files = select(&[], &live).unwrap().files;
    assert_eq!(files.len(), 4);
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(bytes > 60 << 20, "the log is big enough to tell streaming from reading it whole: {bytes} bytes");
    let name = "audit_logs::report_streams_a_log_far_larger_than_its_memory";
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &live)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&child.stderr));
    // libtest may print "test NAME ... " on the same line first.
    let line = stdout.lines().find_map(|l| Some(l.split_once("report-rss-kib ")?.1)).expect("the child ran the report");
    let kib = |key: &str| -> u64 {
        line.split(' ').find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap()
    };
    let (before, peak) = (kib("before"), kib("peak"));
    eprintln!("report over {N} records, {:.1} MiB: RSS {before} KiB before, peak {peak} KiB", bytes as f64 / 1048576.0);
    assert!(
        peak * 1024 < bytes / 4,
        "report's peak RSS {peak} KiB is not well below the log's {} KiB: does it read the log whole?",
        bytes / 1024
    );
}
