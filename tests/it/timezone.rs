//! `policy.timezone` (issue 15 item 13): an exemption's `until` is a day in
//! the municipality's zone, not in UTC, and `weerwal logs` reads dates as
//! local days and shows local times. Through the real binary.

use std::path::Path;
use std::process::Command;

use weerwal::audit::{EventKind, Record};

fn weerwal(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weerwal"));
    c.current_dir(dir).env("RUST_LOG", "warn").env_remove("RUST_BACKTRACE").env_remove("TZ");
    c
}

const BAN: &str = r#"
[[ban]]
app = "TikTok"
domains = ["tiktok.com"]
advice = "AIVD"
reference = "Kamerbrief 2023"
since = "2023-03-09"
"#;

/// A directory with `weerwal.toml` naming `zone` and a policy whose one
/// exemption (user `inspecteur1`, TikTok) runs until `until`.
fn setup(zone: &str, until: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    let policy = format!(
        "{BAN}\n[[exemption]]\nwho = [\"user:inspecteur1\"]\napps = [\"TikTok\"]\nreason = \"toezicht\"\nuntil = \"{until}\"\n"
    );
    std::fs::write(dir.path().join("policy/tiktok.toml"), policy).unwrap();
    std::fs::write(dir.path().join("weerwal.toml"), format!("[policy]\ndir = \"policy\"\ntimezone = \"{zone}\"\n"))
        .unwrap();
    dir
}

/// `policy explain` for inspecteur1 asking for TikTok: whether it is let
/// through as an exemption (exit 0, "exempted") or refused (exit 3).
fn exempted(dir: &Path) -> (bool, String) {
    let out =
        weerwal(dir).args(["policy", "explain", "http://www.tiktok.com/", "--user", "inspecteur1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => {
            assert!(text.to_lowercase().contains("exempt"), "{text}");
            (true, text)
        }
        Some(3) => (false, text),
        other => panic!("exit {other:?}: {text}\n{}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// The real clock cannot be set, so the zone is chosen to make the zone's
/// date differ from the UTC date right now: on Kiritimati (UTC+14) it is
/// already tomorrow from 10:00 UTC, on Pago Pago (UTC-11) still yesterday
/// before 11:00 UTC. An exemption until the UTC date (or the day before)
/// must then follow the zone's date. Before the fix the UTC date was used
/// and both cases came out the other way.
#[test]
fn an_exemption_until_a_day_follows_the_configured_zone_not_utc() {
    let now = jiff::tz::TimeZone::UTC.to_datetime(jiff::Timestamp::now());
    let utc_today = now.date();
    let (zone, until, expect_exempt) = if now.hour() >= 10 {
        // Kiritimati: tomorrow already, so an exemption until (UTC) today has ended.
        ("Pacific/Kiritimati", utc_today, false)
    } else {
        // Pago Pago: still yesterday, so an exemption until yesterday still holds.
        ("Pacific/Pago_Pago", utc_today.yesterday().unwrap(), true)
    };
    let dir = setup(zone, &until.to_string());
    let (exempt, text) = exempted(dir.path());
    assert_eq!(exempt, expect_exempt, "{zone}, until {until}: {text}");
    // And in UTC the same exemption is judged on the UTC date.
    let dir = setup("UTC", &until.to_string());
    let (exempt, text) = exempted(dir.path());
    let utc_exempt = until >= utc_today;
    assert_eq!(exempt, utc_exempt, "UTC, until {until}: {text}");
    assert_ne!(utc_exempt, expect_exempt, "the test must tell the zones apart");
}

#[test]
fn an_unknown_zone_is_a_usage_error_naming_the_key() {
    let dir = setup("Europe/Amsterdan", "2030-01-01");
    let out = weerwal(dir.path()).args(["policy", "check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("timezone") && err.contains("Europe/Amsterdan"), "{err}");
}

fn record(seq: u64, ts: &str, user: &str) -> String {
    let mut r = Record::new(EventKind::Blocked);
    r.seq = seq;
    r.ts = ts.into();
    r.user = Some(user.into());
    r.app = Some("TikTok".into());
    r.host = Some("www.tiktok.com".into());
    serde_json::to_string(&r).unwrap()
}

/// `--since`/`--until` dates are days in `policy.timezone`, and the table
/// shows wall-clock times there; CSV keeps the log's UTC times.
#[test]
fn logs_query_reads_dates_as_local_days_and_shows_local_times() {
    let dir = setup("Europe/Amsterdam", "2030-01-01");
    let log = dir.path().join("audit.jsonl");
    let lines = [
        record(1, "2026-12-02T22:30:00.000Z", "before"), // 23:30 on 2 December in Amsterdam
        record(2, "2026-12-02T23:30:00.000Z", "early"),  // 00:30 on 3 December in Amsterdam
        record(3, "2026-12-03T22:59:59.000Z", "late"),   // 23:59:59 on 3 December
        record(4, "2026-12-03T23:00:00.000Z", "after"),  // midnight, 4 December
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let query = |format: &str| {
        let out = weerwal(dir.path())
            .args(["logs", "query", "--log"])
            .arg(&log)
            .args(["--since", "2026-12-03", "--until", "2026-12-03", "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = query("table");
    assert!(table.contains("TIME (Europe/Amsterdam)"), "{table}");
    assert!(table.contains("2026-12-03 00:30:00") && table.contains("early"), "{table}");
    assert!(table.contains("2026-12-03 23:59:59") && table.contains("late"), "{table}");
    assert!(!table.contains("before") && !table.contains("after"), "{table}");
    assert!(table.contains("2 record(s)"), "{table}");
    let csv = query("csv");
    assert!(csv.contains("2026-12-02T23:30:00.000Z"), "{csv}");
    // Grouped by day: the local day.
    let out = weerwal(dir.path()).args(["logs", "report", "--by", "day", "--log"]).arg(&log).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let days: Vec<&str> = report.lines().filter(|l| l.starts_with("2026-")).collect();
    assert_eq!(days.len(), 3, "{report}");
    assert!(days[0].starts_with("2026-12-02 ") && days[1].starts_with("2026-12-03 "), "{report}");
}
