//! Synthetic audit logs for the tests and the benchmarks: records shaped
//! like the proxy's own (four users, one of them absent; three banned
//! sites; six sessions; every fifth attempt exempted), and a generator that
//! writes a long hash chain of them straight to rotated files. Included with
//! `#[path]` by `tests/it/audit_logs.rs` and `benches/logs_1m.rs`.

use std::path::{Path, PathBuf};

use weerwal::audit::files::LogFiles;
use weerwal::audit::record::GENESIS;
use weerwal::audit::time::from_unix_millis;
use weerwal::audit::{EventKind, Record, Via};

/// 2026-11-20T08:00:00Z
pub const BASE_MS: i64 = 1_795_161_600_000;

/// Six sessions, told apart by their first characters.
pub fn session_id(i: usize) -> String {
    format!("{:x}8f3c1a2b9d8e7f6a5b4c3d2e1f0a9b8", i % 6)
}

/// The `i`-th attempt: user `i % 4` of jdevries, "Jan de Vries", none and
/// m.jansen; site `i % 3` of m.aliexpress.com (GET), www.tiktok.com
/// (CONNECT) and aliexpress.com (GET); device named for even `i`.
pub fn attempt(event: EventKind, i: usize) -> Record {
    const USERS: [Option<&str>; 4] = [Some("jdevries"), Some("Jan de Vries"), None, Some("m.jansen")];
    const SITES: [(&str, &str); 3] =
        [("AliExpress", "m.aliexpress.com"), ("TikTok", "www.tiktok.com"), ("AliExpress", "aliexpress.com")];
    let mut r = Record::new(event);
    let (app, host) = SITES[i % 3];
    r.user = USERS[i % 4].map(str::to_string);
    r.session = Some(session_id(i));
    r.client =
        Some(if i % 4 == 3 { "2001:db8::7".parse().unwrap() } else { format!("10.1.2.{}", i % 4).parse().unwrap() });
    r.device = (i % 2 == 0).then(|| "raadslaptops".to_string());
    r.app = Some(app.into());
    r.rule = Some(host.trim_start_matches("m.").trim_start_matches("www.").into());
    r.host = Some(host.into());
    let connect = i % 3 == 1;
    r.port = Some(if connect { 443 } else { 80 });
    r.method = Some(if connect { "CONNECT" } else { "GET" }.into());
    r.via = Some(Via::Proxy);
    r.user_agent = Some(format!("Mozilla/5.0 (test, {i}) \"quoted\""));
    if event == EventKind::Exempted {
        r.reason = Some("inspectie en toezicht".into());
    }
    r
}

/// Writes `n` chained attempts (`seq` 1..=n, 250 ms apart from `BASE_MS`,
/// every fifth exempted, the rest blocked) straight to rotated files of
/// `per_file` records in `dir`, the last of them as the live `audit.jsonl`;
/// returns the live file's path. Faster than the writer for a big log; the
/// writer's own output is tested in `tests/it/audit_logs.rs`.
pub fn big_log(dir: &Path, n: u64, per_file: u64) -> PathBuf {
    let live = dir.join("audit.jsonl");
    let files = LogFiles::new(&live);
    let mut prev = GENESIS.to_string();
    let mut buf = Vec::with_capacity(per_file.min(n) as usize * 400);
    let mut first = (1, BASE_MS);
    for seq in 1..=n {
        let ms = BASE_MS + seq as i64 * 250;
        let mut r = attempt(if seq % 5 == 0 { EventKind::Exempted } else { EventKind::Blocked }, seq as usize);
        r.seq = seq;
        r.ts = humantime::format_rfc3339_millis(from_unix_millis(ms)).to_string();
        r.prev = std::mem::take(&mut prev);
        prev = r.write_line(&mut buf).unwrap();
        if seq % per_file == 0 || seq == n {
            let path = if seq == n { live.clone() } else { files.rotated_path(from_unix_millis(first.1), first.0) };
            std::fs::write(path, &buf).unwrap();
            buf.clear();
            first = (seq + 1, ms + 250);
        }
    }
    live
}
