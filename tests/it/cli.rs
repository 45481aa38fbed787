//! The `weerwal` binary as an administrator uses it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::history_fixtures;

fn weerwal(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weerwal"));
    c.current_dir(dir).env("RUST_LOG", "info").env_remove("RUST_BACKTRACE");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn ca_init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = weerwal(dir.path()).args(["ca", "init"]).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap();
    let again = weerwal(dir.path()).args(["ca", "init"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap(), pem, "unchanged");
    let forced = weerwal(dir.path()).args(["ca", "init", "--force"]).output().unwrap();
    assert!(forced.status.success());
    assert_ne!(std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap(), pem);

    let show = weerwal(dir.path()).args(["ca", "show"]).output().unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("SHA-256") || text.contains("sha256") || text.contains("fingerprint"), "{text}");
    let der = weerwal(dir.path()).args(["ca", "export", "--der"]).output().unwrap();
    assert!(der.status.success());
    assert_eq!(der.stdout[0], 0x30, "DER starts with a SEQUENCE");
    let pem_out = weerwal(dir.path()).args(["ca", "export"]).output().unwrap();
    assert!(String::from_utf8_lossy(&pem_out.stdout).starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn policy_check_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("bad.toml"),
        "[[ban]]\napp = \"X\"\ndomains = [\"x.com\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2023-01-01\"\nwebsite = \"x\"\n",
    )
    .unwrap();
    let out = weerwal(dir.path()).args(["policy", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:7: website:"), "{err}");

    let ok = weerwal(repo()).args(["policy", "check", "policy"]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: 5 files, 5 apps"));
}

#[test]
fn policy_explain_uses_the_proxy_decision() {
    let out = weerwal(repo()).args(["policy", "explain", "http://M.AliExpress.COM./cart"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "blocked: exit 3\n{text}");
    assert!(text.contains("action:  BLOCK"), "{text}");
    assert!(text.contains("reason:  banned_domain"), "{text}");
    assert!(text.contains("app:     AliExpress"));
    assert!(text.contains("rule:    aliexpress.com"));
    assert!(text.contains("advice:"));
    let out = weerwal(repo()).args(["policy", "explain", "notaliexpress.com"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("action:  FORWARD"));
    let out = weerwal(repo()).args(["policy", "explain", "http://2130706433/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSE (400)"));
    // A port outside proxy.connect_ports is explained as the proxy acts on it.
    let out = weerwal(repo()).args(["policy", "explain", "example.org:8443", "--method", "CONNECT"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reason:  port_not_allowed"));
    // A banned name in the SNI of a tunnel to an address is intercepted.
    let out = weerwal(repo())
        .args(["policy", "explain", "192.0.2.1:443", "--method", "CONNECT", "--sni", "www.tiktok.com"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("action:  INTERCEPT"), "{text}");
}

#[test]
fn bad_config_is_a_usage_error_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weerwal.toml"), "[proxy]\nlisten = \"127.0.0.1:0\"\nlisten_on = 1\n").unwrap();
    let out = weerwal(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("weerwal.toml:3: listen_on:"), "{err}");
}

#[test]
fn pac_command_prints_the_pac_file() {
    let out = weerwal(repo()).args(["pac"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("function FindProxyForURL(url, host)"));
    assert!(text.contains("\"aliexpress.com\":1"));
}

/// `serve` on the example configuration in a fresh folder: it starts, blocks,
/// records, and stops cleanly on SIGTERM.
/// Starts `weerwal serve` in `dir`; returns it with its log lines up to
/// the one that says it is running.
fn start_serve(dir: &Path) -> (std::process::Child, Vec<String>) {
    let mut child = weerwal(dir).arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut lines: Vec<String> = Vec::new();
    while !lines.iter().any(|l| l.contains("weerwal proxy running")) {
        assert!(started.elapsed() < Duration::from_secs(20), "no start line: {lines:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    (child, lines)
}

/// Sends SIGTERM and expects a clean exit within 15 s.
fn stop_with_sigterm(mut child: std::process::Child) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn serve_runs_blocks_records_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let example = std::fs::read_to_string(repo().join("weerwal.example.toml")).unwrap();
    let config = example.replace("listen = \"127.0.0.1:3128\"", &format!("listen = \"127.0.0.1:{port}\""));
    assert_ne!(config, example);
    std::fs::write(dir.path().join("weerwal.toml"), config).unwrap();
    // No policy/ beside it: an explicit config with a missing policy dir is an error...
    let out = weerwal(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // ...so give it the shipped policy.
    let policy = dir.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    for entry in std::fs::read_dir(repo().join("policy")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, policy.join(p.file_name().unwrap())).unwrap();
    }
    let (child, lines) = start_serve(dir.path());
    assert!(lines.iter().any(|l| l.contains("fingerprint")), "CA fingerprint printed: {lines:?}");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &format!("http://127.0.0.1:{port}"),
            "http://aliexpress.com/",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    stop_with_sigterm(child);
    let log = std::fs::read_to_string(dir.path().join("logs/audit.jsonl")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"event\":\"blocked\"") && l.contains("\"host\":\"aliexpress.com\"")),
        "{log}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("certs/ca.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn serve_without_any_configuration_runs_on_the_embedded_defaults() {
    // The README's first command, in an empty folder: proxy on
    // 127.0.0.1:3128, the policy built into the binary, logs/audit.jsonl.
    if std::net::TcpListener::bind("127.0.0.1:3128").is_err() {
        eprintln!("SKIPPED: 127.0.0.1:3128 is in use on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (child, lines) = start_serve(dir.path());
    let running = lines.iter().find(|l| l.contains("weerwal proxy running")).unwrap();
    assert!(running.contains("127.0.0.1:3128") && running.contains("logs/audit.jsonl"), "{running}");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://127.0.0.1:3128", "http://www.tiktok.com/"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "the embedded policy blocks");
    stop_with_sigterm(child);
    let log = std::fs::read_to_string(dir.path().join("logs/audit.jsonl")).unwrap();
    assert!(log.contains("\"host\":\"www.tiktok.com\""), "{log}");
    assert!(dir.path().join("certs/ca.pem").exists(), "the CA is created on first start");
}

/// `users add NAME` with the password on standard input.
fn users_add(dir: &Path, args: &[&str], password: &str) {
    use std::io::Write;
    let mut child = weerwal(dir)
        .args(["users", "add"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "users add {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn users_list(dir: &Path) -> String {
    let out = weerwal(dir).args(["users", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn users_remove_takes_the_user_out_and_the_file_stays_0600() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    users_add(dir.path(), &["jdevries", "--group", "raad"], "een-lang-wachtwoord");
    users_add(dir.path(), &["fbakker", "--role", "officer"], "nog-een-wachtwoord");
    assert_eq!(mode_of(&file), 0o600, "after add");
    let names = |list: &str| list.lines().map(|l| l.split('\t').next().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&users_list(dir.path())), ["fbakker", "jdevries"]);

    let out = weerwal(dir.path()).args(["users", "remove", "jdevries"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed user jdevries"));
    let list = users_list(dir.path());
    assert_eq!(names(&list), ["fbakker"], "{list}");
    assert!(list.contains("fbakker\tofficer\t"), "the other user is untouched: {list}");
    assert_eq!(mode_of(&file), 0o600, "after remove");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("jdevries"), "no trace of the removed user (nor its hash): {text}");
    let users = weerwal::identity::Users::load(&file).unwrap();
    assert!(users.verify("fbakker", "nog-een-wachtwoord").is_some(), "the remaining password still works");
    assert!(users.get("jdevries").is_none());

    // Removing a user that does not exist: usage error, file unchanged.
    let out = weerwal(dir.path()).args(["users", "remove", "jdevries"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jdevries"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert_eq!(mode_of(&file), 0o600);
    assert!(!dir.path().join(".users.toml.tmp").exists(), "no temporary file left behind");

    // A file someone loosened by hand is written back as 0600.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = weerwal(dir.path()).args(["users", "remove", "fbakker"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(users_list(dir.path()), "");
    assert_eq!(mode_of(&file), 0o600, "a loosened file is tightened again");
}

/// The users file is written through `.users.toml.tmp`; a stale one (left
/// by a copy, a restore or another tool, with a looser mode) must not pass
/// its mode on to the file that holds the password hashes.
#[test]
fn users_file_is_0600_even_over_a_stale_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    users_add(dir.path(), &["jdevries"], "een-lang-wachtwoord");
    users_add(dir.path(), &["fbakker"], "nog-een-wachtwoord");
    let tmp = dir.path().join(".users.toml.tmp");
    std::fs::write(&tmp, "stale").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = weerwal(dir.path()).args(["users", "remove", "jdevries"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(users_list(dir.path()), "fbakker\tuser\t\n");
    assert_eq!(mode_of(&file), 0o600, "users.toml (argon2 hashes) took the stale temporary file's mode");
}

/// A Chromium profile with two banned sites and an allowed one.
fn history_profile(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("User Data/Default/History");
    history_fixtures::chrome_history_with(
        &db,
        &[
            ("https://aliexpress.com/item/1005.html", 2),
            ("https://example.org/news", 1),
            ("https://www.tiktok.com/@x", 1),
        ],
    );
    db
}

fn history_urls(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = c.prepare("SELECT url FROM urls ORDER BY id").unwrap();
    let urls = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    urls
}

/// `history scan`, `purge`, `scan` as a login script runs them: the real
/// binary, in a folder without configuration (the built-in policy), on a
/// profile given with `--profile`.
#[test]
fn history_scan_exits_3_purge_backs_up_and_cleans_scan_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = history_profile(dir.path());
    let profile = db.to_str().unwrap();

    let scan =
        weerwal(dir.path()).args(["history", "scan", "--profile", profile, "--format", "json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&scan.stderr);
    assert_eq!(scan.status.code(), Some(3), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&scan.stdout).unwrap();
    assert_eq!(json["command"], "scan");
    assert_eq!(json["banned_entries"], 2, "{json}");
    assert_eq!(json["errors"], serde_json::json!([]));
    let hosts = &json["profiles"][0]["hosts"];
    assert_eq!(hosts[0]["host"], "aliexpress.com", "{json}");
    assert_eq!(hosts[0]["app"], "AliExpress");
    assert_eq!(hosts[0]["visits"], 2);
    assert_eq!(hosts[0]["last_visit"], "2024-01-01T00:01:40Z");
    assert_eq!(hosts[1]["host"], "www.tiktok.com", "{json}");
    assert_eq!(hosts.as_array().unwrap().len(), 2, "example.org is allowed: {json}");
    assert!(!String::from_utf8_lossy(&scan.stdout).contains("/item/1005"), "only hosts, never page addresses");

    // No confirmation to answer: purge runs unattended.
    let purge =
        weerwal(dir.path()).args(["history", "purge", "--profile", profile]).stdin(Stdio::null()).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&purge.stdout), String::from_utf8_lossy(&purge.stderr));
    assert_eq!(purge.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("Removed from the browser history:"), "{out}");
    let backups: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("History.weerwal-backup-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(out.contains(&*backups[0].to_string_lossy()), "the backup is named: {out}");
    assert_eq!(history_urls(&db), ["https://example.org/news"], "only the allowed entry is left");
    assert_eq!(history_urls(&backups[0]).len(), 3, "the backup holds the history as it was");

    let again =
        weerwal(dir.path()).args(["history", "scan", "--profile", profile, "--format", "json"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["banned_entries"], 0, "{json}");
}

/// Every error of `weerwal history` exits 1 (3 means "found"), whatever
/// part of weerwal notices it; other commands keep 2 for usage errors.
#[test]
fn history_errors_exit_1_other_commands_keep_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = history_profile(dir.path());
    let profile = db.to_str().unwrap();
    let code_and_err = |cwd: &Path, args: &[&str]| {
        let out = weerwal(cwd).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // A broken --config, before or after the subcommand.
    let bad = dir.path().join("broken.toml");
    std::fs::write(&bad, "[proxy]\nlisten = \"127.0.0.1:0\"\nlisten_on = 1\n").unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        ["--config", bad, "history", "scan", "--profile", profile],
        ["history", "purge", "--profile", profile, "--config", bad],
    ] {
        let (code, err) = code_and_err(dir.path(), &args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("broken.toml:3: listen_on:"), "{err}");
    }
    let (code, _) = code_and_err(dir.path(), &["history", "scan", "--profile", profile, "--config", "missing.toml"]);
    assert_eq!(code, Some(1));

    // A broken policy in the policy/ folder of the working directory.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policy")).unwrap();
    std::fs::write(work.path().join("policy/broken.toml"), "[[ban]]\napp = \n").unwrap();
    let (code, err) = code_and_err(work.path(), &["history", "scan", "--profile", profile]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("broken.toml"), "{err}");

    // A --profile that names nothing readable.
    let (code, err) = code_and_err(dir.path(), &["history", "purge", "--profile", "no-such-profile"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no-such-profile"), "{err}");
    std::fs::write(dir.path().join("not-a-db"), "just text").unwrap();
    let (code, err) = code_and_err(dir.path(), &["history", "scan", "--browser", "chrome", "--profile", "not-a-db"]);
    assert_eq!(code, Some(1), "{err}");

    // Wrong options, as clap reports them.
    for args in [
        &["history", "scan", "--browser", "opera"][..],
        &["history", "purge", "--bogus"],
        &["history", "scan", "--format"],
        &["history"],
        &["history", "erase"],
        &["--config", bad, "history", "scan", "--format", "xml"],
    ] {
        let (code, err) = code_and_err(dir.path(), args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        // clap's own message (or the help, for `history` alone).
        assert!(err.starts_with("error:") || err.contains("Usage: weerwal history"), "{args:?}: {err}");
    }
    // Help is not an error.
    let help = weerwal(dir.path()).args(["history", "scan", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status: 0 nothing found"));

    // Other commands: unchanged.
    assert_eq!(code_and_err(dir.path(), &["--config", bad, "pac"]).0, Some(2));
    assert_eq!(code_and_err(dir.path(), &["pac", "--bogus"]).0, Some(2));
    assert_eq!(code_and_err(dir.path(), &["policy", "explain"]).0, Some(2));
    assert_eq!(code_and_err(dir.path(), &["--config", bad, "--bogus"]).0, Some(2));
    // The database was never touched.
    assert_eq!(history_urls(&db).len(), 3);
}
