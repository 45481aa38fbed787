//! Limits, reload without restart, graceful shutdown and crash recovery,
//! against the real proxy (in process and as the real binary).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{raw_exchange, status_of, Origin, TestProxy};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn copy_policy(dir: &Path) -> PathBuf {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    for entry in std::fs::read_dir(crate::common::repo_policy_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, policy.join(p.file_name().unwrap())).unwrap();
    }
    policy
}

const EXTRA_BAN: &str = r#"
[[ban]]
app = "Nieuweapp"
domains = ["nieuw.test"]
advice = "NCSC"
reference = "test"
since = "2026-01-01"
"#;

#[tokio::test]
async fn reload_with_a_broken_policy_keeps_the_old_one() {
    let proxy =
        TestProxy::start_with(|c| c.policy.dir = copy_policy(c.audit.path.parent().unwrap().parent().unwrap())).await;
    let reloader = proxy.server.as_ref().unwrap().reloader();
    std::fs::write(
        proxy.config.policy.dir.join("aliexpress.toml"),
        "[[ban]]\napp = \"AliExpress\"\ndomains = [\"ali express.com\"]\n",
    )
    .unwrap();
    let err = reloader.reload().await.unwrap_err().to_string();
    assert!(err.contains("aliexpress.toml:"), "{err}");
    let resp = proxy.client().get("http://aliexpress.com/").send().await.unwrap();
    assert_eq!(resp.status(), 403, "the last good policy stays in force");
    assert_eq!(proxy.events("policy_loaded").len(), 1, "no new policy recorded");
    proxy.stop().await;
}

#[tokio::test]
async fn reload_adds_a_domain_without_disturbing_a_long_download() {
    let origin = Origin::start().await;
    let proxy =
        TestProxy::start_with(|c| c.policy.dir = copy_policy(c.audit.path.parent().unwrap().parent().unwrap())).await;
    let reloader = proxy.server.as_ref().unwrap().reloader();
    const SIZE: u64 = 96 * 1024 * 1024;
    let resp = proxy.client().get(origin.url(&format!("/bytes/{SIZE}"))).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let mut got = 0u64;
    // Part of the download first.
    while got < SIZE / 4 {
        got += stream.next().await.unwrap().unwrap().len() as u64;
    }
    assert_ne!(proxy.client().get("http://nieuw.test/").send().await.unwrap().status(), 403);
    std::fs::write(proxy.config.policy.dir.join("nieuw.toml"), EXTRA_BAN).unwrap();
    let report = reloader.reload().await.unwrap();
    assert!(report.policy_changed);
    assert!(report.needs_restart.is_empty(), "{:?}", report.needs_restart);
    let resp = proxy.client().get("http://www.nieuw.test/").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("Nieuweapp"));
    // The download goes on unharmed.
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, SIZE);
    let loaded = proxy.events("policy_loaded");
    assert_eq!(loaded.len(), 2);
    assert_ne!(loaded[0].detail.as_ref().unwrap()["digest"], loaded[1].detail.as_ref().unwrap()["digest"]);
    proxy.stop().await;
}

#[tokio::test]
async fn slowloris_is_closed_after_the_header_timeout_while_others_are_served() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.header_timeout = Duration::from_millis(800)).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nX-A: ").await.unwrap();
    let started = Instant::now();
    // Others are served meanwhile.
    assert_eq!(proxy.client().get(origin.url("/")).send().await.unwrap().status(), 200);
    let mut buf = Vec::new();
    // Keep dribbling; the proxy must still close the connection.
    let closed = async {
        loop {
            if slow.write_all(b"a").await.is_err() {
                return;
            }
            let mut b = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed).await.expect("slowloris connection closed");
    assert!(started.elapsed() >= Duration::from_millis(700));
    proxy.stop().await;
}

#[tokio::test]
async fn per_client_connection_cap_holds() {
    let proxy = TestProxy::start_with(|c| c.proxy.max_connections_per_client = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        // A request in progress keeps each connection open.
        s.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let raw = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(2)).await;
    assert_eq!(status_of(&raw), 503, "{raw}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw =
        raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(2))
            .await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    proxy.stop().await;
}

/// The real binary in a folder of its own.
struct Binary {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    /// serve's log lines (stderr), as they come.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Binary {
    fn start_in(dir: tempfile::TempDir) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        copy_policy(dir.path());
        std::fs::write(
            dir.path().join("weerwal.toml"),
            format!("[proxy]\nlisten = \"127.0.0.1:{port}\"\nmax_connections_per_client = 4096\n"),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_weerwal"))
            .current_dir(dir.path())
            .arg("serve")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "serve did not start");
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if line.contains("weerwal proxy running") {
                    break;
                }
            }
        }
        Binary { dir, port, child, lines: rx }
    }

    /// Waits for a log line containing `needle`; returns it.
    fn expect_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no log line with {needle:?}");
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
    }

    fn reload(&self) {
        let out =
            Command::new(env!("CARGO_BIN_EXE_weerwal")).current_dir(self.dir.path()).arg("reload").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "weerwal did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("logs/audit.jsonl")
    }
}

/// Fires `n` blocked requests; returns the reference numbers of the block
/// pages that came back.
async fn fire_blocked(addr: std::net::SocketAddr, n: usize) -> Vec<u64> {
    fire_blocked_counting(addr, n, Arc::default()).await
}

/// [`fire_blocked`], counting in `answered` each block page as it comes back.
async fn fire_blocked_counting(addr: std::net::SocketAddr, n: usize, answered: Arc<AtomicUsize>) -> Vec<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let answered = Arc::clone(&answered);
        tasks.spawn(async move {
            let req =
                format!("GET http://aliexpress.com/{i} HTTP/1.1\r\nHost: aliexpress.com\r\nConnection: close\r\n\r\n");
            let raw = raw_exchange(addr, req.as_bytes(), Duration::from_secs(10)).await;
            let marker = "Referentienummer: <strong>";
            let seq = raw.find(marker).and_then(|at| {
                let rest = &raw[at + marker.len()..];
                rest[..rest.find('<')?].parse::<u64>().ok()
            });
            if seq.is_some() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
            seq
        });
    }
    let mut refs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(seq)) = r {
            refs.push(seq);
        }
    }
    refs
}

#[tokio::test]
async fn sigterm_during_a_burst_keeps_every_decided_record() {
    let mut bin = Binary::start_in(tempfile::tempdir().unwrap());
    let addr = bin.addr();
    let counter = Arc::new(AtomicUsize::new(0));
    let burst = tokio::spawn(fire_blocked_counting(addr, 1000, Arc::clone(&counter)));
    // Signal once block pages are coming back, so the shutdown really falls
    // in the middle of the burst.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "no block pages came back before the signal");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bin.signal("-TERM");
    let before_signal = counter.load(Ordering::SeqCst);
    let answered = burst.await.unwrap();
    assert!(before_signal >= 20, "{before_signal}");
    assert!(before_signal < 1000, "the burst was over before the signal: the shutdown was not tested under load");
    assert!(answered.len() >= before_signal);
    let status = bin.wait();
    assert!(status.success(), "{status:?}");
    let records = crate::common::read_records(&bin.log());
    let seqs: std::collections::HashSet<u64> = records.iter().map(|r| r.seq).collect();
    for r in &answered {
        assert!(seqs.contains(r), "block page {r} was sent but its record is missing");
    }
    // Every line is a complete record, numbered without gaps.
    let ordered: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(ordered, (1..=records.len() as u64).collect::<Vec<_>>());
    eprintln!("{} block pages answered before shutdown, {} records", answered.len(), records.len());
}

#[tokio::test]
async fn kill_9_during_load_then_restart_resumes() {
    let mut bin = Binary::start_in(tempfile::tempdir().unwrap());
    let addr = bin.addr();
    let burst = tokio::spawn(fire_blocked(addr, 600));
    tokio::time::sleep(Duration::from_millis(40)).await;
    bin.signal("-KILL");
    let _ = burst.await;
    bin.wait();
    // Simulate the worst case too: a torn last line.
    let log = bin.log();
    let before = crate::common::read_records(&log);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":999999,\"ts\":\"20").unwrap();
    drop(f);
    let last = before.last().map(|r| r.seq).unwrap_or(0);

    let mut bin = Binary::start_in(bin.dir);
    let refs = fire_blocked(bin.addr(), 5).await;
    assert_eq!(refs.len(), 5, "serving resumed");
    bin.signal("-TERM");
    assert!(bin.wait().success());
    let after = crate::common::read_records(&bin.log());
    assert_eq!(&after[..before.len()], &before[..], "complete lines kept as they were");
    assert_eq!(after[before.len()].seq, last + 1, "seq continues");
    for pair in after.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash);
    }
    let torn = std::fs::read_to_string(bin.dir.path().join("logs/audit.jsonl.torn")).unwrap();
    assert!(torn.contains("999999"));
}

#[tokio::test]
async fn weerwal_reload_signals_the_running_server() {
    let mut bin = Binary::start_in(tempfile::tempdir().unwrap());
    let get = |host: &'static str, addr| async move {
        let req = format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        status_of(&raw_exchange(addr, req.as_bytes(), Duration::from_secs(5)).await)
    };
    assert_ne!(get("nieuw.test", bin.addr()).await, 403);
    std::fs::write(bin.dir.path().join("policy/nieuw.toml"), EXTRA_BAN).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weerwal")).current_dir(bin.dir.path()).arg("reload").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get("nieuw.test", bin.addr()).await != 403 {
        assert!(Instant::now() < deadline, "reload did not take effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bin.signal("-TERM");
    assert!(bin.wait().success());
    assert!(!bin.dir.path().join("logs/weerwal.pid").exists(), "pid file removed on exit");
}

#[tokio::test]
async fn remote_clients_cannot_reach_the_servers_own_loopback() {
    let origin = Origin::start().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| {
        c.proxy.allow_clients.push("10.0.0.0/8".parse().unwrap());
        c.proxy.connect_ports = vec![443, port];
    })
    .await;
    let client = proxy.client();
    for url in [origin.url("/"), format!("http://localhost:{port}/"), format!("http://[::ffff:127.0.0.1]:{port}/")] {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{url}");
    }
    let raw = raw_exchange(
        proxy.addr,
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status_of(&raw), 403, "{raw}");
    // A name that resolves to loopback: the tunnel is closed, never spliced.
    let mut t = TcpStream::connect(proxy.addr).await.unwrap();
    t.write_all(
        format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("hello from origin"));
    assert!(origin.requests().is_empty(), "nothing reached the server's loopback");
    // The dashboard's default address is never a destination.
    let resp = client.get("http://127.0.0.1:9090/metrics").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    proxy.stop().await;
}

#[tokio::test]
async fn reload_applies_proxy_settings_at_once_and_names_those_needing_a_restart() {
    let origin = Origin::start().await;
    let mut bin = Binary::start_in(tempfile::tempdir().unwrap());
    let config = bin.dir.path().join("weerwal.toml");
    let connect = |addr| async move {
        let req = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr.port());
        status_of(&raw_exchange(addr, req.as_bytes(), Duration::from_secs(3)).await)
    };
    assert_eq!(connect(bin.addr()).await, 403, "only port 443 at first");

    // A broken file: refused with file and line, nothing changes.
    std::fs::write(&config, format!("[proxy]\nlisten = \"127.0.0.1:{}\"\nconnect_portz = [1]\n", bin.port)).unwrap();
    // `weerwal reload` checks the file first and does not signal...
    let out = Command::new(env!("CARGO_BIN_EXE_weerwal")).current_dir(bin.dir.path()).arg("reload").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("weerwal.toml:3: connect_portz"));
    // ...and a SIGHUP sent by hand is refused by the server, with the place.
    bin.signal("-HUP");
    let line = bin.expect_log("reload refused");
    assert!(line.contains("weerwal.toml:3"), "{line}");
    assert_eq!(connect(bin.addr()).await, 403);

    // Ports apply at once; a new listen address and connection cap are reported, not applied.
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:1\"\nmax_connections = 7\nmax_connections_per_client = 4096\nconnect_ports = [443, {}]\n",
            origin.addr.port()
        ),
    )
    .unwrap();
    bin.reload();
    let line = bin.expect_log("take effect only after a restart");
    assert!(line.contains("proxy.listen") && line.contains("proxy.max_connections"), "{line}");
    assert!(!line.contains("connect_ports"), "{line}");
    bin.expect_log("reloaded");
    assert_eq!(connect(bin.addr()).await, 200, "the new port is allowed, on the old listen address");

    // Which clients are served applies at once too: 127.0.0.1 is no longer
    // one, also on a keep-alive connection opened before the reload.
    let mut kept = TcpStream::connect(bin.addr()).await.unwrap();
    let local = "GET /proxy.pac HTTP/1.1\r\nHost: x\r\n\r\n";
    kept.write_all(local.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    std::fs::write(
        &config,
        format!("[proxy]\nlisten = \"127.0.0.1:{}\"\nallow_clients = [\"127.0.0.2/32\"]\n", bin.port),
    )
    .unwrap();
    bin.reload();
    bin.expect_log("reloaded");
    assert_eq!(connect(bin.addr()).await, 403);
    let req = "GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let out = raw_exchange(bin.addr(), req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&out), 403, "{out}");
    kept.write_all(local.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), kept.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 403") && out.contains("does not serve your network"), "{out}");
    bin.signal("-TERM");
    assert!(bin.wait().success());
}

#[tokio::test]
async fn an_origin_that_stalls_mid_body_is_cut_off_after_the_idle_timeout() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.tunnel_idle_timeout = Duration::from_millis(800)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let url = origin.url("/stall");
    s.write_all(format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr).as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "the connection hung on a stalled origin");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("0123456789"), "the part that came is passed on: {text}");
    assert!(started.elapsed() >= Duration::from_millis(700), "not cut off before the idle time");
    proxy.stop().await;
}

/// A TCP echo server on loopback: every byte that comes in goes back out.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Reads until the end of a response head; returns the head as text.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            other => panic!("no complete response head ({other:?}): {:?}", String::from_utf8_lossy(&head)),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Opens a CONNECT tunnel to `target` through the proxy, and proves it is
/// spliced by an echo of bytes that are neither TLS nor HTTP.
async fn echo_tunnel(proxy: std::net::SocketAddr, target: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert_eq!(status_of(&head), 200, "{head}");
    // Not a handshake record, not a request line: tunnelled as it is.
    s.write_all(b"\x00ping").await.unwrap();
    let mut echo = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo)).await.expect("echo in time").unwrap();
    assert_eq!(&echo, b"\x00ping");
    s
}

/// Waits for the peer to close `s` (EOF or reset), up to `limit`; returns
/// whether it did.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 64];
    let ended = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    ended.await.is_ok()
}

#[tokio::test]
async fn tunnel_idle_timeout_closes_a_quiet_tunnel_and_spares_a_busy_one() {
    let echo = echo_server().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.tunnel_idle_timeout = Duration::from_millis(500);
        c.proxy.client_hello_timeout = Duration::from_millis(500);
        c.proxy.connect_ports = vec![443, echo.port()];
    })
    .await;
    // Silent from the start: after the ClientHello wait it is spliced (a
    // server-speaks-first protocol), then idles out.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    silent.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_head(&mut silent).await;
    assert_eq!(status_of(&head), 200, "{head}");
    let silent_since = Instant::now();
    let silent_task = tokio::spawn(async move {
        let closed = closed_within(&mut silent, Duration::from_secs(5)).await;
        (closed, silent_since.elapsed())
    });
    let mut quiet = echo_tunnel(proxy.addr, echo).await;
    let mut busy = echo_tunnel(proxy.addr, echo).await;
    let quiet_since = Instant::now();
    let quiet_task = tokio::spawn(async move {
        let closed = closed_within(&mut quiet, Duration::from_secs(5)).await;
        (closed, quiet_since.elapsed())
    });
    // The busy tunnel: one byte every 200 ms for 2 s, each echoed back.
    let busy_since = Instant::now();
    for i in 0..10u8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        busy.write_all(&[i])
            .await
            .unwrap_or_else(|e| panic!("busy tunnel closed after {:?}: {e}", busy_since.elapsed()));
        let mut one = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(2), busy.read(&mut one)).await {
            Ok(Ok(1)) => assert_eq!(one[0], i),
            other => panic!("busy tunnel cut off after {:?}: {other:?}", busy_since.elapsed()),
        }
    }
    let (closed, after) = quiet_task.await.unwrap();
    assert!(closed, "a quiet tunnel was still open after 5 s");
    assert!(after >= Duration::from_millis(450), "closed before the idle timeout: {after:?}");
    assert!(after <= Duration::from_secs(3), "closed only after {after:?}");
    let (closed, after) = silent_task.await.unwrap();
    assert!(closed, "a tunnel silent from the start was still open after 5 s");
    assert!(after >= Duration::from_millis(900), "closed before hello wait and idle timeout: {after:?}");
    assert!(after <= Duration::from_secs(3), "closed only after {after:?}");
    // Busy for 2 s, four times the idle timeout, and still open; once it
    // goes quiet it is closed as well.
    assert!(busy_since.elapsed() >= Duration::from_secs(2));
    let busy_quiet = Instant::now();
    assert!(closed_within(&mut busy, Duration::from_secs(5)).await, "the busy tunnel never idled out");
    assert!(busy_quiet.elapsed() >= Duration::from_millis(450), "{:?}", busy_quiet.elapsed());
    proxy.stop().await;
}

#[tokio::test]
async fn global_connection_cap_refuses_the_third_with_503_and_frees_a_slot_on_close() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        // A request head in progress keeps each connection open.
        s.write_all(format!("GET {} HTTP/1.1\r\n", origin.url("/held")).as_bytes()).await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", origin.url("/third"), origin.addr);
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut out)).await;
    let raw = String::from_utf8_lossy(&out);
    assert!(ended.is_ok(), "the refused connection was not closed: {raw}");
    assert_eq!(status_of(&raw), 503, "{raw}");
    assert!(raw.contains("too busy"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("connection: close"), "{raw}");
    assert!(origin.requests().is_empty(), "the refused request was forwarded");
    // One closes: a new connection is served while the other is still held.
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let raw = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(3)).await;
        if status_of(&raw) == 200 {
            assert!(raw.contains("hello from origin"), "{raw}");
            break;
        }
        assert_eq!(status_of(&raw), 503, "{raw}");
        assert!(Instant::now() < deadline, "no slot came free after a held connection closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection still held was never disturbed: it completes its request.
    let mut last = held.remove(0);
    last.write_all(format!("Host: {}\r\nConnection: close\r\n\r\n", origin.addr).as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), last.read_to_end(&mut out)).await;
    let raw = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&raw), 200, "{raw}");
    let paths: Vec<String> = origin.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(paths, ["/third", "/held"], "only the served requests reached the origin");
    proxy.stop().await;
}

/// A loopback address whose SYNs go unanswered: a listener with a backlog of
/// one that never accepts, its queue filled first. Linux drops a SYN for a
/// listener whose accept queue is full (it does not refuse it), so a connect
/// hangs until its own timeout. Returns the address and what keeps it so.
async fn unanswered_address() -> (std::net::SocketAddr, tokio::net::TcpListener, Vec<TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fill = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fill.push(s),
            Ok(Err(e)) => panic!("connecting to the backlog listener failed instead of hanging: {e}"),
            // Hanging: the queue is full. Check once more that it stays so.
            Err(_) => {
                let again = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
                assert!(again.is_err(), "a full accept queue answered a SYN");
                return (addr, listener, fill);
            }
        }
    }
    panic!("a listener with backlog 1 took 16 connections: no unanswered loopback address on this system");
}

#[tokio::test]
async fn an_origin_that_never_answers_the_connect_gives_exactly_504() {
    let (addr, _listener, _fill) = unanswered_address().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_timeout = Duration::from_millis(300);
        // Far beyond the test: a 504 in time can only be the connect timeout.
        c.proxy.response_timeout = Duration::from_secs(30);
    })
    .await;
    let request = format!("GET http://{addr}/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let started = Instant::now();
    let raw = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert_eq!(status_of(&raw), 504, "{raw}");
    assert!(raw.contains("did not answer in time"), "{raw}");
    assert!(took >= Duration::from_millis(250), "answered before the connect timeout: {took:?}");
    assert!(took < Duration::from_secs(3), "the connect timeout was not applied: {took:?}");
    // A port that refuses at once is a 502, not a 504.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let request = format!("GET http://{closed}/ HTTP/1.1\r\nHost: {closed}\r\nConnection: close\r\n\r\n");
    let raw = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(8)).await;
    assert_eq!(status_of(&raw), 502, "{raw}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_in_flight_finish_then_exits_0() {
    let origin = Origin::start().await;
    let mut bin = Binary::start_in(tempfile::tempdir().unwrap());
    let addr = bin.addr();
    // Keep-alive: after its answer the proxy must close the connection itself.
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.url("/slow"), origin.addr);
    let started = Instant::now();
    let slow = tokio::spawn(async move { raw_exchange(addr, request.as_bytes(), Duration::from_secs(15)).await });
    // In flight: the origin has the request (and waits 5 s before answering).
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.requests().is_empty() {
        assert!(Instant::now() < deadline, "the slow request never reached the origin");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bin.signal("-TERM");
    // Shutting down: new connections are no longer accepted.
    let deadline = Instant::now() + Duration::from_secs(3);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!slow.is_finished(), "the slow request ended before its origin answered");
    let raw = slow.await.unwrap();
    assert_eq!(status_of(&raw), 200, "the request in flight was cut off: {raw:?}");
    assert!(raw.ends_with("hello from origin"), "{raw}");
    assert!(started.elapsed() >= Duration::from_millis(4500), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(9), "the connection was not closed after the answer");
    let status = bin.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
    bin.expect_log("weerwal stopped");
}

#[tokio::test]
async fn sigint_shuts_down_like_sigterm_with_session_end_records() {
    let mut bin = Binary::start_in(tempfile::tempdir().unwrap());
    let refs = fire_blocked(bin.addr(), 1).await;
    assert_eq!(refs.len(), 1, "the blocked request was answered with a block page");
    bin.signal("-INT");
    let status = bin.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let records = crate::common::read_records(&bin.log());
    let blocked: Vec<_> = records.iter().filter(|r| r.event == weerwal::audit::EventKind::Blocked).collect();
    assert_eq!(blocked.len(), 1, "{records:?}");
    assert_eq!(blocked[0].seq, refs[0], "the block page names its record");
    let ends: Vec<_> = records.iter().filter(|r| r.event == weerwal::audit::EventKind::SessionEnd).collect();
    assert_eq!(ends.len(), 1, "one session_end for the one session that logged something: {records:?}");
    assert_eq!(ends[0].session, blocked[0].session);
    assert!(blocked[0].session.is_some());
    assert!(ends[0].seq > blocked[0].seq);
    assert_eq!(ends[0].detail.as_ref().unwrap()["attempts"], serde_json::json!({"AliExpress": 1}));
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev, pair[0].hash);
    }
    assert!(!bin.dir.path().join("logs/weerwal.pid").exists(), "pid file removed on exit");
}

#[tokio::test]
async fn a_connect_tunnel_keeps_its_connection_slot_until_it_closes() {
    let echo = echo_server().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.max_connections = 1;
        c.proxy.connect_ports = vec![443, echo.port()];
    })
    .await;
    let tunnel = echo_tunnel(proxy.addr, echo).await;
    // The HTTP connection became a tunnel; the tunnel still counts.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let raw = raw_exchange(proxy.addr, request, Duration::from_secs(3)).await;
    assert_eq!(status_of(&raw), 503, "{raw}");
    drop(tunnel);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let raw = raw_exchange(proxy.addr, request, Duration::from_secs(3)).await;
        if status_of(&raw) != 503 {
            assert_eq!(status_of(&raw), 200, "{raw}");
            break;
        }
        assert!(Instant::now() < deadline, "the closed tunnel never gave its slot back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}
