//! Cluster mode's numbers (issue 17), against a real PostgreSQL started here
//! (`tests/it/common/postgres.rs`) and real `weerwal serve` processes (the
//! binary this bench builds):
//!
//! 1. flag on node A to refusal at node B's gateway: p50 and p99 over 200
//!    flags (each a new client address; B's gateway polled every 2 ms);
//! 2. blocked requests per second with `[cluster]` on, as a ratio to the
//!    same node without `[cluster]`, in the same run;
//! 3. allowed GET throughput with `[cluster]` on vs off (an origin on loopback);
//! 4. start-up of a node with 100,000 flags and 1,000,000 shipped records
//!    in the database: time until the state is loaded, and peak RSS.
//!
//! `cargo bench --bench cluster` (no criterion; `SECONDS=` sets each
//! throughput run's length, default 5; `ROUNDS=` how many off/on pairs are
//! run, alternating, default 3: medians and the median of the per-round
//! ratios are printed; `FLAGS=` the number of flags, 200). The load
//! average is printed at the start and the end (the machine is shared).
//! `COALESCE=0` sets `[audit] coalesce_after = 0` on every node: each
//! blocked attempt is then its own record, and the shipper copies all of
//! them to the database during the blocked runs.

#[path = "../tests/it/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Postgres, PASSWORD};

const WEBMAIL: &str = "webmail.gemeente.test";
const OFFICER_PASSWORD: &str = "officer-wachtwoord-1\n";

struct Node {
    dir: tempfile::TempDir,
    proxy: u16,
    gateway: u16,
    admin: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn new(name: &str, pg: Option<&Postgres>, upstream: SocketAddr) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let [proxy, gateway, admin] = postgres::free_ports::<3>();
        std::fs::write(dir.path().join("db.pw"), format!("{PASSWORD}\n")).unwrap();
        let cluster = match pg {
            Some(pg) => {
                format!("[cluster]\ndatabase = \"{}\"\npassword_file = \"db.pw\"\nnode = \"{name}\"\n", pg.url())
            }
            None => String::new(),
        };
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
        // COALESCE=0: every blocked attempt is its own record (and shipped).
        let audit = match std::env::var("COALESCE") {
            Ok(n) => format!("[audit]\ncoalesce_after = {}\n", n.trim()),
            Err(_) => String::new(),
        };
        let config = format!(
            "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\nhttps = \"reject\"\nmax_connections_per_client = 10000\n\
             [policy]\ndir = \"{}\"\n{cluster}{audit}\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[identity]\nusers_file = \"users.toml\"\n\
             [compliance]\nprotected = [\"{WEBMAIL}\"]\n\
             [gateway]\nlisten = \"127.0.0.1:{gateway}\"\n[[gateway.route]]\nhost = \"{WEBMAIL}\"\nupstream = \"http://{upstream}\"\n",
            policy.display()
        );
        std::fs::write(dir.path().join("weerwal.toml"), config).unwrap();
        add_officer(dir.path());
        Node { dir, proxy, gateway, admin, child: None, log: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Starts serve; returns the time until `ready` appears in its log.
    fn start(&mut self, ready: &str) -> Duration {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_weerwal"))
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.dir.path().join("weerwal.toml"))
            .arg("serve")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        self.log = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(300);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(ready)) {
            assert!(Instant::now() < deadline, "no {ready:?}: {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    }

    /// Logs in to the dashboard; returns the `Cookie` header of the session.
    async fn dashboard_session(&self) -> String {
        let c = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = format!("http://127.0.0.1:{}", self.admin);
        let cookies = |r: &reqwest::Response| -> Vec<String> {
            r.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
                .collect()
        };
        let r = c.get(format!("{base}/login")).send().await.unwrap();
        let pre = cookies(&r).join("; ");
        let page = r.text().await.unwrap();
        let token = page.split("name=\"token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let r = c
            .post(format!("{base}/login"))
            .header("cookie", &pre)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&name=fbakker&password={}", OFFICER_PASSWORD.trim()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        cookies(&r).into_iter().filter(|c| !c.ends_with('=')).collect::<Vec<_>>().join("; ")
    }

    fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Adds an officer to a node's users file (`weerwal users add`), so its
/// dashboard can be read.
fn add_officer(dir: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weerwal"))
        .current_dir(dir)
        .arg("--config")
        .arg(dir.join("weerwal.toml"))
        .args(["users", "add", "fbakker", "--role", "officer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), OFFICER_PASSWORD.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

fn client(from: IpAddr, proxy: Option<u16>) -> reqwest::Client {
    let b = reqwest::Client::builder().local_address(from).timeout(Duration::from_secs(20));
    match proxy {
        Some(p) => b.proxy(reqwest::Proxy::all(format!("http://127.0.0.1:{p}")).unwrap()),
        None => b.no_proxy(),
    }
    .build()
    .unwrap()
}

/// A minimal origin: answers every request with 200 and a short body.
async fn origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"hello\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Requests per second of `url` through `proxy`, 32 at a time, for `secs`.
async fn throughput(proxy: u16, url: &str, expect: u16, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let (done, url) = (Arc::clone(&done), url.to_string());
        let c = client(format!("127.0.1.{}", i + 1).parse().unwrap(), Some(proxy));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status().as_u16(), expect);
                let _ = r.bytes().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `/proc/loadavg`'s first three fields.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let flags: usize = std::env::var("FLAGS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    println!("load average at the start: {}", loadavg());
    let upstream = origin().await;
    let pg = Postgres::start().await;
    let mut a = Node::new("proxy-a", Some(&pg), upstream);
    let mut b = Node::new("gateway-b", Some(&pg), upstream);
    a.start("weerwal proxy running");
    b.start("compliance state loaded");

    // 1. Flag on A to refusal at B.
    let mut latencies = Vec::with_capacity(flags);
    for i in 0..flags {
        let ip: IpAddr = format!("127.0.{}.{}", 10 + i / 250, 1 + i % 250).parse().unwrap();
        let c = client(ip, Some(a.proxy));
        let gw = client(ip, None);
        assert_eq!(c.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
        let flagged = Instant::now();
        loop {
            let s = gw
                .get(format!("http://127.0.0.1:{}/", b.gateway))
                .header("host", WEBMAIL)
                .send()
                .await
                .unwrap()
                .status();
            if s == 403 {
                break;
            }
            assert!(flagged.elapsed() < Duration::from_secs(30), "flag {i} never reached B");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(flagged.elapsed());
    }
    latencies.sort();
    println!(
        "flag on A -> refused at B ({flags} flags): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    b.stop();

    // 2 and 3. Throughput with and without [cluster]: rounds of off/on
    // pairs, alternating which goes first, in the same run.
    let mut off = Node::new("off", None, upstream);
    off.start("weerwal proxy running");
    let allowed = format!("http://localhost:{}/", upstream.port());
    let shipped_before = pg.psql_weerwal("SELECT count(*) FROM audit_records WHERE node = 'proxy-a'");
    for (what, url, status) in [("blocked", "http://aliexpress.com/", 403), ("allowed GET", allowed.as_str(), 200)] {
        let (mut offs, mut ons, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (o, n) = if round % 2 == 0 {
                let o = throughput(off.proxy, url, status, secs).await;
                (o, throughput(a.proxy, url, status, secs).await)
            } else {
                let n = throughput(a.proxy, url, status, secs).await;
                (throughput(off.proxy, url, status, secs).await, n)
            };
            println!("  {what} round {}: off {o:.0}/s, on {n:.0}/s, ratio {:.3}", round + 1, n / o);
            offs.push(o);
            ons.push(n);
            ratios.push(n / o);
        }
        println!(
            "{what} req/s (median of {rounds}): cluster off {:.0}, on {:.0}, ratio {:.3} (median of the per-round ratios)",
            median(offs),
            median(ons),
            median(ratios)
        );
    }
    off.stop();
    a.stop();
    let shipped_after = pg.psql_weerwal("SELECT count(*) FROM audit_records WHERE node = 'proxy-a'");
    println!(
        "records of node A in the database: {} before the throughput runs, {} after",
        shipped_before.trim(),
        shipped_after.trim()
    );

    // 4. Start-up with 100,000 flags and 1,000,000 shipped records.
    pg.psql_weerwal(
        "INSERT INTO compliance_flags (key, data, node) SELECT 'client:10.' || (g / 65536) || '.' || (g / 256 % 256) || '.' || (g % 256), \
         '{\"app\":\"AliExpress\",\"host\":\"aliexpress.com\",\"since\":\"2026-12-01T10:00:00.000Z\",\"since_unix\":1796119200,\"seq\":' || g || '}', 'bulk' \
         FROM generate_series(1, 100000) g ON CONFLICT DO NOTHING",
    );
    pg.psql_weerwal(
        "INSERT INTO audit_records (node, seq, ts, event, hash, line) \
         SELECT 'bulk', g, t, 'blocked', h, \
         '{\"seq\":' || g || ',\"ts\":\"' || t || '\",\"event\":\"blocked\",\"user\":\"user' || (g % 500) || \
         '\",\"client\":\"10.1.' || (g / 256 % 256) || '.' || (g % 256) || '\",\"app\":\"AliExpress\",\"rule\":\"aliexpress.com\",\
         \"host\":\"aliexpress.com\",\"port\":443,\"method\":\"CONNECT\",\"via\":\"proxy\",\"navigation\":true,\"flagged\":true,\
         \"node\":\"bulk\",\"prev\":\"' || md5((g - 1)::text) || md5(g::text) || '\",\"hash\":\"' || h || '\"}' \
         FROM (SELECT g, to_char(timestamp '2026-11-20' + g * interval '500 ms', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS t, \
                      md5(g::text) || md5((g + 1)::text) AS h FROM generate_series(1, 1000000) g) s",
    );
    // What autovacuum does to a table that filled over months: statistics
    // and visibility (hint bits) in place, so the first read is not the one
    // that rewrites a million fresh rows.
    pg.psql_weerwal("VACUUM ANALYZE audit_records");
    pg.psql_weerwal("VACUUM ANALYZE compliance_flags");
    let mut c = Node::new("startup", Some(&pg), upstream);
    let took = c.start("compliance state loaded");
    let loaded =
        c.log.lock().unwrap().iter().find(|l| l.contains("compliance state loaded")).cloned().unwrap_or_default();
    let count: usize = loaded
        .split("flags=")
        .nth(1)
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(count >= 100_000, "not every flag was loaded: {loaded}");
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "start-up with 100,000 flags and 1,000,000 shipped records: state loaded after {:.2} s (process start to \"compliance state loaded\", {count} flags), peak RSS {:.1} MiB",
        took.as_secs_f64(),
        c.peak_rss_kib() as f64 / 1024.0
    );

    // 5. The dashboard over the same 1,000,000 records: the attempts page
    // (newest 200 of every node) and the CSV export read them all.
    let session = c.dashboard_session().await;
    let dash = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(600)).build().unwrap();
    for (what, path) in [
        ("attempts page", "/attempts"),
        ("report page (per user)", "/report"),
        ("charts page", "/charts"),
        ("attempts page with since= (the newest 49,600 bulk records)", "/attempts?since=2026-11-25T12:00:00Z"),
        ("CSV export", "/attempts.csv"),
    ] {
        let started = Instant::now();
        let r =
            dash.get(format!("http://127.0.0.1:{}{path}", c.admin)).header("cookie", &session).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&body[..body.len().min(200_000)]).into_owned();
        assert!(text.contains("aliexpress.com") || text.contains("AliExpress"), "{what}: {text}");
        println!(
            "dashboard {what} over 1,000,000 records in the database: {:.2} s, {:.1} MiB",
            started.elapsed().as_secs_f64(),
            body.len() as f64 / 1048576.0
        );
    }
    println!("peak RSS of that node after the dashboard reads: {:.1} MiB", c.peak_rss_kib() as f64 / 1024.0);
    c.stop();
    println!("load average at the end: {}", loadavg());
}
