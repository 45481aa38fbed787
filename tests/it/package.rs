//! The Debian package and the systemd unit (issue 20), on the real thing.
//!
//! `debian_package_installs_runs_as_its_user_and_purge_keeps_the_audit_log`
//! builds the .deb with cargo-deb from the binary this `cargo test` already
//! built (`--no-build --profile dev`: no second, release build; stripped, so
//! the package is ~6 MiB), installs it with `dpkg -i` (root), checks files,
//! modes, conffiles and the system user, runs `systemd-analyze verify` and
//! `systemd-analyze security --offline=true` on the installed unit (the
//! exposure number must be below 5.0, "OK" or better), edits the installed
//! configuration like an administrator (only the listen port), starts the
//! installed `/usr/bin/weerwal` the way the unit does (its `ExecStart`,
//! `User`/`Group` via setpriv with no capabilities and no new privileges,
//! its `UMask`, `WorkingDirectory` and the environment systemd gives a
//! `Type=notify` service), waits for `READY=1` on a notify socket the test
//! listens on, sends a blocked request over HTTP and HTTPS through it, sends
//! `ExecReload`'s SIGHUP, stops it with SIGTERM, and purges the package: the
//! audit log stays in /var/log/weerwal.
//!
//! What runs where there is no running systemd (this test machine and CI:
//! PID 1 is not systemd): everything above. What cannot run without one:
//! `systemctl enable --now/reload/stop` themselves, and the sandbox systemd
//! builds from the unit (ProtectSystem, PrivateTmp, SystemCallFilter,
//! RestrictAddressFamilies, StateDirectory/LogsDirectory creation); those
//! are checked statically by `systemd-analyze`. The test says so in its
//! output. It needs root, dpkg, cargo-deb and systemd-analyze
//! (`scripts/install-test-deps.sh` installs the last two); it fails, never
//! silently passes, when one is missing, unless WEERWAL_SKIP_PACKAGE_TEST=1.
//!
//! `notify_socket_gets_ready_only_after_every_listener_accepts` runs
//! anywhere: the `NOTIFY_SOCKET` protocol with a datagram socket the test
//! owns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SKIP_VAR: &str = "WEERWAL_SKIP_PACKAGE_TEST";
const LOG_DIR: &str = "/var/log/weerwal";
const STATE_DIR: &str = "/var/lib/weerwal";
const UNIT: &str = "/usr/lib/systemd/system/weerwal.service";
/// Left in /var/log/weerwal by this test, so an interrupted run's leftovers
/// can be told from a real installation's audit trail (never touched).
const MARKER: &str = ".weerwal-package-test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A notify socket like the one systemd gives a `Type=notify` service.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    /// Binds it; `open_to_all` lets a service running as another user send.
    fn bind(open_to_all: bool) -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        if open_to_all {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        NotifySocket { _dir: dir, path, socket }
    }

    /// The next datagram, waiting at most `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Waits for a datagram with `READY=1`; panics with the service's log
    /// when none comes within a minute.
    fn wait_ready(&self, served: &mut Served) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(msg) = self.next(Duration::from_millis(500)) {
                if msg.lines().any(|l| l == "READY=1") {
                    return msg;
                }
            }
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!("weerwal exited ({status}) before READY=1:\n{}", served.log.text());
            }
            assert!(Instant::now() < deadline, "no READY=1 within 60 s:\n{}", served.log.text());
        }
    }
}

/// A child's stderr, collected by a thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(child: &mut Child) -> Lines {
        let lines = Lines::default();
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// A started `weerwal serve`, killed by its PID if the test fails first.
struct Served {
    child: Child,
    log: Lines,
}

impl Served {
    /// Spawns it with stderr collected and stdout discarded; from here on a
    /// failing assertion kills it (Drop), never leaves it running.
    fn spawn(cmd: &mut Command) -> Served {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Lines::collect(&mut child);
        Served { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then a clean exit within 20 s.
    fn stop(mut self) {
        assert!(Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "serve exited {status}:\n{}", self.log.text());
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM:\n{}", self.log.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A raw HTTP/1.1 request through the proxy; returns the status code.
fn status_through(proxy: SocketAddr, url: &str, host: &str) -> u16 {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn curl_status(proxy: SocketAddr, url: &str, cacert: &Path) -> String {
    let out = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "30",
        "-x",
        &format!("http://{proxy}"),
        "--cacert",
        &cacert.display().to_string(),
        url,
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn notify_socket_gets_ready_only_after_every_listener_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, admin, gateway) = (free_port(), free_port(), free_port());
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\n[policy]\ndir = \"{policy}\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [compliance]\nprotected = [\"webmail.gemeente.test\"]\n\
         [gateway]\nlisten = \"127.0.0.1:{gateway}\"\n[[gateway.route]]\nhost = \"webmail.gemeente.test\"\nupstream = \"http://127.0.0.1:9\"\n",
        policy = repo().join("policy").display()
    );
    std::fs::write(dir.path().join("weerwal.toml"), config).unwrap();
    let notify = NotifySocket::bind(false);
    let mut served = Served::spawn(
        Command::new(env!("CARGO_BIN_EXE_weerwal"))
            .args(["--config", "weerwal.toml", "serve"])
            .current_dir(dir.path())
            .env("NOTIFY_SOCKET", &notify.path)
            .env("RUST_LOG", "info"),
    );
    let ready = notify.wait_ready(&mut served);
    let log = served.log.clone();
    // At the moment READY=1 arrives every listener accepts, and the policy
    // decides: no retry, no wait.
    for port in [proxy, admin, gateway] {
        TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} not accepting at READY=1: {e}\n{}", log.text()));
    }
    let proxy_addr: SocketAddr = ([127, 0, 0, 1], proxy).into();
    assert_eq!(status_through(proxy_addr, "http://aliexpress.com/", "aliexpress.com"), 403, "{}", log.text());
    for port in [proxy, admin, gateway] {
        assert!(ready.contains(&format!("127.0.0.1:{port}")), "STATUS names every listener: {ready:?}");
    }
    assert!(ready.starts_with("READY=1\nSTATUS=serving on "), "{ready:?}");
    assert_eq!(notify.next(Duration::from_millis(200)), None, "READY=1 is sent once");
    served.stop();
    let stopping = notify.next(Duration::from_secs(5)).expect("STOPPING=1 on SIGTERM");
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
}

#[test]
fn a_notify_socket_nobody_listens_on_changes_nothing() {
    // A stale NOTIFY_SOCKET (e.g. inherited from a shell under systemd):
    // a warning, and serve runs as always.
    let dir = tempfile::tempdir().unwrap();
    let proxy = free_port();
    let config =
        format!("[proxy]\nlisten = \"127.0.0.1:{proxy}\"\n[policy]\ndir = \"{}\"\n", repo().join("policy").display());
    std::fs::write(dir.path().join("weerwal.toml"), config).unwrap();
    let served = Served::spawn(
        Command::new(env!("CARGO_BIN_EXE_weerwal"))
            .args(["--config", "weerwal.toml", "serve"])
            .current_dir(dir.path())
            .env("NOTIFY_SOCKET", dir.path().join("nobody-listens-here"))
            .env("RUST_LOG", "info"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !served.log.text().contains("could not notify the service manager") {
        assert!(Instant::now() < deadline, "no warning:\n{}", served.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let proxy_addr: SocketAddr = ([127, 0, 0, 1], proxy).into();
    assert_eq!(status_through(proxy_addr, "http://www.tiktok.com/", "www.tiktok.com"), 403);
    served.stop();
}

// ---------------------------------------------------------------------------
// The package itself.

/// The key=value lines of the unit's [Service] section (last one wins).
fn unit_service_keys(unit: &str) -> std::collections::HashMap<String, String> {
    let mut keys = std::collections::HashMap::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                keys.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    keys
}

/// `dpkg` with the arguments, retried while another package manager holds
/// the dpkg lock (another developer's `apt-get install` on this machine).
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = run(Command::new("dpkg").args(args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("lock") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn package_status() -> String {
    let out = run(Command::new("dpkg-query").args(["-W", "-f", "${Status}", "weerwal"]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether dpkg knows weerwal as installed, half-installed or with its
/// configuration files left.
fn package_present() -> bool {
    let s = package_status();
    !(s.is_empty() || s.ends_with("not-installed"))
}

fn user_exists(name: &str) -> bool {
    run(Command::new("getent").args(["passwd", name])).status.success()
}

/// One package test at a time on a machine (several checkouts may run the
/// suite at once): an exclusive lock held until dropped.
struct MachineLock(#[allow(dead_code)] std::fs::File);

impl MachineLock {
    fn take() -> MachineLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/weerwal-package-test.lock")
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open("/tmp/weerwal-package-test.lock")
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return MachineLock(file),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
                Err(e) => panic!("another package test has held the lock for 15 minutes: {e}"),
            }
        }
    }
}

/// Puts the machine back however the test ends: the package purged, the
/// audit folder the test made removed, the user removed when the test
/// created it.
struct Cleanup {
    created_user: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if package_present() {
            let _ = dpkg(&["--purge", "weerwal"]);
        }
        if Path::new(LOG_DIR).join(MARKER).exists() {
            let _ = std::fs::remove_dir_all(LOG_DIR);
        }
        if self.created_user {
            let _ = Command::new("userdel").arg("weerwal").output();
            let _ = Command::new("groupdel").arg("weerwal").output();
        }
    }
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).permissions().mode() & 0o7777
}

fn owner(path: &str) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).uid()
}

fn passwd_entry(name: &str) -> Vec<String> {
    let out = run_ok(Command::new("getent").args(["passwd", name]));
    String::from_utf8_lossy(&out.stdout).trim().split(':').map(str::to_string).collect()
}

/// The "Overall exposure level for weerwal.service: 1.2 OK" line, as its
/// number and its word.
fn exposure(security_output: &str) -> (f64, String) {
    let line = security_output
        .lines()
        .find(|l| l.contains("Overall exposure level for weerwal.service:"))
        .unwrap_or_else(|| panic!("no exposure line in:\n{security_output}"));
    let mut words = line.rsplit(':').next().unwrap().split_whitespace();
    let number = words.next().and_then(|n| n.parse::<f64>().ok()).unwrap_or_else(|| panic!("{line}"));
    let word = words.next().unwrap_or_else(|| panic!("{line}")).to_string();
    (number, word)
}

#[test]
fn exposure_line_is_read_as_a_number() {
    let (n, w) = exposure("...\n→ Overall exposure level for weerwal.service: 1.2 OK 🙂\n");
    assert_eq!((n, w.as_str()), (1.2, "OK"));
    let (n, w) = exposure("→ Overall exposure level for weerwal.service: 9.6 UNSAFE 😨");
    assert!(n > 5.0 && w == "UNSAFE");
}

#[test]
fn debian_package_installs_runs_as_its_user_and_purge_keeps_the_audit_log() {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: {SKIP_VAR}=1: the Debian package was not built, installed or checked");
        return;
    }
    let how_to_skip = format!("(set {SKIP_VAR}=1 to skip this test on a machine that cannot install packages)");
    let uid = String::from_utf8_lossy(&run_ok(Command::new("id").arg("-u")).stdout).trim().to_string();
    assert_eq!(uid, "0", "the package test installs a .deb and must run as root {how_to_skip}");
    for tool in ["dpkg", "dpkg-deb", "systemd-analyze", "setpriv", "curl"] {
        assert!(
            run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).status.success(),
            "{tool} is missing: run scripts/install-test-deps.sh {how_to_skip}"
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    assert!(
        run(Command::new(&cargo).args(["deb", "--version"])).status.success(),
        "cargo-deb is missing: run scripts/install-test-deps.sh {how_to_skip}"
    );
    let _lock = MachineLock::take();

    // Never replace or purge a real installation.
    let before = package_status();
    assert!(
        !package_present(),
        "weerwal is installed on this machine ({before}); this test installs and purges its own build {how_to_skip}"
    );
    if Path::new(LOG_DIR).exists() {
        assert!(
            Path::new(LOG_DIR).join(MARKER).exists(),
            "{LOG_DIR} exists (the audit trail of an earlier installation?): this test never touches it {how_to_skip}"
        );
        std::fs::remove_dir_all(LOG_DIR).unwrap();
    }
    let _cleanup = Cleanup { created_user: !user_exists("weerwal") };

    // Build: the binary this test run already built (target/debug), stripped.
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_weerwal"));
    let target_dir = binary.parent().and_then(Path::parent).unwrap().to_path_buf();
    let out_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    run_ok(
        Command::new(&cargo)
            .args(["deb", "--no-build", "--profile", "dev", "--strip", "--fast", "--locked", "-o"])
            .arg(out_dir.path())
            .current_dir(repo())
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    let build_time = started.elapsed();
    let debs: Vec<PathBuf> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, format!("weerwal_{}-1_amd64.deb", env!("CARGO_PKG_VERSION")));
    let size = std::fs::metadata(deb).unwrap().len();
    let fields = run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).args(["Package", "Depends", "Section"]));
    let fields = String::from_utf8_lossy(&fields.stdout);
    assert!(fields.contains("Package: weerwal") && fields.contains("adduser"), "{fields}");

    // Install.
    let started = Instant::now();
    let install = dpkg(&["-i", &deb.display().to_string()]);
    let install_out =
        format!("{}{}", String::from_utf8_lossy(&install.stdout), String::from_utf8_lossy(&install.stderr));
    assert!(install.status.success(), "dpkg -i failed:\n{install_out}");
    let install_time = started.elapsed();
    std::fs::write(Path::new(LOG_DIR).join(MARKER), "made by tests/it/package.rs\n").unwrap();
    assert!(install_out.contains("systemctl enable --now weerwal"), "postinst says what to do next:\n{install_out}");
    assert!(package_status().starts_with("install ok installed"), "{}", package_status());

    // Files and modes.
    assert_eq!((mode("/usr/bin/weerwal"), owner("/usr/bin/weerwal")), (0o755, 0));
    let installed_config = std::fs::read_to_string("/etc/weerwal/weerwal.toml").unwrap();
    assert_eq!(installed_config, std::fs::read_to_string(repo().join("packaging/weerwal.toml")).unwrap());
    assert_eq!(mode("/etc/weerwal/weerwal.toml"), 0o644);
    assert_eq!(
        std::fs::read_to_string(UNIT).unwrap(),
        std::fs::read_to_string(repo().join("packaging/weerwal.service")).unwrap()
    );
    for doc in ["README.md", "README.Debian", "copyright", "policy/README.md", "examples/weerwal.example.toml"] {
        let p = format!("/usr/share/doc/weerwal/{doc}");
        assert_eq!(mode(&p), 0o644, "{p}");
    }
    let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", "weerwal"]));
    let conffiles = String::from_utf8_lossy(&conffiles.stdout);
    assert!(conffiles.contains("/etc/weerwal/weerwal.toml "), "{conffiles}");
    let mut policies = 0;
    for entry in std::fs::read_dir(repo().join("policy")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let installed = Path::new("/etc/weerwal/policy").join(p.file_name().unwrap());
            assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&p).unwrap(), "{}", installed.display());
            assert!(
                conffiles.contains(&format!("{} ", installed.display())),
                "{} is a conffile: {conffiles}",
                installed.display()
            );
            policies += 1;
        }
    }
    assert!(policies >= 5, "the shipped policy files");

    // The system user and its folders.
    let user = passwd_entry("weerwal");
    let weerwal_uid: u32 = user[2].parse().unwrap();
    assert!(weerwal_uid > 0 && weerwal_uid < 1000, "a system user: {user:?}");
    assert_eq!(user[5], STATE_DIR, "home: {user:?}");
    assert!(user[6].ends_with("nologin"), "no login shell: {user:?}");
    assert!(run(Command::new("getent").args(["group", "weerwal"])).status.success(), "its own group");
    assert_eq!((mode(STATE_DIR), owner(STATE_DIR)), (0o700, weerwal_uid), "{STATE_DIR}");
    assert_eq!((mode(LOG_DIR), owner(LOG_DIR)), (0o750, weerwal_uid), "{LOG_DIR}");

    // The unit, as systemd would read it (no running systemd needed).
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify:\n{verify_err}");
    assert!(!verify_err.contains("weerwal.service"), "no warning about the unit:\n{verify_err}");
    let security = run(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager", UNIT]));
    let security_out = String::from_utf8_lossy(&security.stdout);
    let (exposure_level, word) = exposure(&security_out);
    assert!(
        exposure_level < 5.0 && ["OK", "SAFE", "PERFECT"].contains(&word.as_str()),
        "exposure {exposure_level} {word}: OK or better wanted:\n{security_out}"
    );

    // The administrator's edit: only where it listens (this machine's 3128
    // may be taken).
    let port = free_port();
    let edited = installed_config.replace("listen = \"0.0.0.0:3128\"", &format!("listen = \"127.0.0.1:{port}\""));
    assert_ne!(edited, installed_config);
    std::fs::write("/etc/weerwal/weerwal.toml", edited).unwrap();

    // Start it as the unit does.
    let unit = unit_service_keys(&std::fs::read_to_string(UNIT).unwrap());
    let key = |k: &str| unit.get(k).unwrap_or_else(|| panic!("the unit has no {k}=")).clone();
    assert_eq!(key("Type"), "notify");
    let exec_start: Vec<String> = key("ExecStart").split_whitespace().map(str::to_string).collect();
    assert_eq!(exec_start[0], "/usr/bin/weerwal");
    let notify = NotifySocket::bind(true);
    let mut served = Served::spawn(
        Command::new("setpriv")
            .args([
                &format!("--reuid={}", key("User")),
                &format!("--regid={}", key("Group")),
                "--init-groups",
                "--no-new-privs",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--",
                "/bin/sh",
                "-c",
                "umask \"$0\" && exec \"$@\"",
                &key("UMask"),
            ])
            .args(&exec_start)
            .current_dir(key("WorkingDirectory"))
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", STATE_DIR)
            .env("USER", "weerwal")
            .env("LOGNAME", "weerwal")
            .env("SHELL", "/usr/sbin/nologin")
            .env("STATE_DIRECTORY", STATE_DIR)
            .env("LOGS_DIRECTORY", LOG_DIR)
            .env("CONFIGURATION_DIRECTORY", "/etc/weerwal")
            .env("NOTIFY_SOCKET", &notify.path),
    );
    let ready = notify.wait_ready(&mut served);
    assert!(ready.contains(&format!("127.0.0.1:{port}")), "{ready:?}");
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", served.pid())).unwrap();
    let field = |name: &str| {
        proc_status.lines().find(|l| l.starts_with(name)).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
    };
    assert_eq!(field("Uid:"), Some(weerwal_uid.to_string()), "runs as weerwal:\n{proc_status}");
    assert_eq!(field("CapEff:"), Some("0000000000000000".into()), "no capabilities");
    assert_eq!(field("NoNewPrivs:"), Some("1".into()));

    // A blocked request over HTTP and over HTTPS (the CA it created).
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(status_through(proxy, "http://aliexpress.com/", "aliexpress.com"), 403, "{}", served.log.text());
    let ca_pem = format!("{STATE_DIR}/certs/ca.pem");
    assert_eq!(curl_status(proxy, "https://www.tiktok.com/", Path::new(&ca_pem)), "403", "{}", served.log.text());
    let ca_key = format!("{STATE_DIR}/certs/ca.key");
    assert_eq!((mode(&ca_key), owner(&ca_key)), (0o600, weerwal_uid), "the CA key, created on first start");
    assert_eq!(owner(&ca_pem), weerwal_uid);

    let audit = format!("{LOG_DIR}/audit.jsonl");
    let records = std::fs::read_to_string(&audit).unwrap();
    assert!(
        records.lines().any(|l| l.contains("\"event\":\"blocked\"") && l.contains("\"host\":\"aliexpress.com\"")),
        "{records}"
    );
    assert!(records.contains("\"host\":\"www.tiktok.com\""), "{records}");
    assert_eq!((mode(&audit), owner(&audit)), (0o600, weerwal_uid), "the audit log, under UMask=0077");

    // ExecReload: SIGHUP to $MAINPID after an administrator's policy edit
    // (in a conffile, so purge takes it away again); the new ban applies.
    let mut wechat = std::fs::read_to_string("/etc/weerwal/policy/wechat.toml").unwrap();
    wechat.push_str("\n[[ban]]\napp = \"Reloadtest\"\ndomains = [\"banned-after-reload.test\"]\nadvice = \"AIVD\"\nreference = \"test\"\nsince = \"2023-07-14\"\n");
    std::fs::write("/etc/weerwal/policy/wechat.toml", wechat).unwrap();
    let reload = key("ExecReload").replace("$MAINPID", &served.pid().to_string());
    let reload: Vec<&str> = reload.split_whitespace().collect();
    run_ok(Command::new(reload[0]).args(&reload[1..]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&audit).unwrap().matches("\"event\":\"policy_loaded\"").count() < 2 {
        assert!(Instant::now() < deadline, "no policy_loaded after ExecReload:\n{}", served.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The record may be written a moment before the new policy is in force.
    let host = "banned-after-reload.test";
    while status_through(proxy, &format!("http://{host}/"), host) != 403 {
        assert!(Instant::now() < deadline, "the reloaded ban is not applied:\n{}", served.log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    served.stop();
    // It wrote nowhere but its two folders: the only other places the
    // weerwal user could write are the world-writable ones, and there is
    // nothing of it there (so ProtectSystem=strict and PrivateTmp take
    // nothing it needs).
    let stray =
        run(Command::new("find").args(["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "-xdev", "-user", "weerwal"]));
    assert_eq!(String::from_utf8_lossy(&stray.stdout), "", "files weerwal wrote outside its folders");
    let audit_before_purge = std::fs::read(&audit).unwrap();

    // Purge: state, configuration and program go; the audit trail stays.
    let purge = dpkg(&["--purge", "weerwal"]);
    let purge_out = format!("{}{}", String::from_utf8_lossy(&purge.stdout), String::from_utf8_lossy(&purge.stderr));
    assert!(purge.status.success(), "dpkg --purge failed:\n{purge_out}");
    assert!(purge_out.contains("/var/log/weerwal is kept"), "purge says it keeps the audit trail:\n{purge_out}");
    assert_eq!(std::fs::read(&audit).unwrap(), audit_before_purge, "the audit log is kept as it was");
    for gone in ["/usr/bin/weerwal", "/etc/weerwal", STATE_DIR, UNIT] {
        assert!(!Path::new(gone).exists(), "{gone} is removed by purge");
    }
    assert!(!package_present(), "{}", package_status());

    eprintln!(
        "package test: .deb {:.1} MiB built in {:.1} s (cargo deb --no-build --profile dev --strip --fast), \
         installed in {:.1} s; exposure {exposure_level} {word}.\n\
         Checked: files, modes, conffiles, user, systemd-analyze verify and security, serve as the unit starts it \
         (user, umask, working directory, READY=1), HTTP and HTTPS blocks, ExecReload, purge keeps the audit log.\n\
         Not checked (no running systemd here): systemctl enable/start/reload/stop themselves and the sandbox \
         systemd builds from the unit (ProtectSystem, SystemCallFilter, …).",
        size as f64 / 1048576.0,
        build_time.as_secs_f64(),
        install_time.as_secs_f64()
    );
}
