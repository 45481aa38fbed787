//! Cluster mode end to end: real `weerwal serve` processes (the binary
//! itself) sharing one real PostgreSQL started by the test
//! ([`crate::common::postgres`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::postgres::{free_port, Postgres, PASSWORD};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One node: a folder with its configuration, and its `serve` while it runs.
struct Node {
    name: String,
    dir: tempfile::TempDir,
    proxy_port: u16,
    admin_port: u16,
    gateway_port: Option<u16>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

/// What to put into a node's configuration besides the basics.
#[derive(Default, Clone)]
struct Extra {
    /// A `[compliance]`/`[gateway]` or other sections, appended.
    sections: String,
    /// The password written to db.pw (default: the right one).
    password: Option<String>,
    /// The database URL (default: the test server's).
    url: Option<String>,
}

impl Node {
    fn new(name: &str, pg: &Postgres, extra: Extra) -> Node {
        let dir = tempfile::Builder::new().prefix(&format!("weerwal-{name}-")).tempdir().unwrap();
        let [proxy_port, admin_port, gateway] = crate::common::postgres::free_ports::<3>();
        let gateway_port = extra.sections.contains("[gateway]").then_some(gateway);
        std::fs::write(dir.path().join("db.pw"), format!("{}\n", extra.password.as_deref().unwrap_or(PASSWORD)))
            .unwrap();
        let mut sections = extra.sections.clone();
        if let Some(g) = gateway_port {
            sections = sections.replace("GATEWAY_PORT", &g.to_string());
        }
        let config = format!(
            "[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\nhttps = \"reject\"\n\
             [policy]\ndir = \"{policy}\"\n\
             [audit]\ncoalesce_after = 0\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [cluster]\ndatabase = \"{url}\"\npassword_file = \"db.pw\"\nnode = \"{name}\"\n\
             {sections}\n",
            policy = repo().join("policy").display(),
            url = extra.url.clone().unwrap_or_else(|| pg.url()),
        );
        std::fs::write(dir.path().join("weerwal.toml"), config).unwrap();
        Node {
            name: name.into(),
            dir,
            proxy_port,
            admin_port,
            gateway_port,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("weerwal.toml")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weerwal"));
        c.current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .env_remove("WEERWAL_DATABASE_URL")
            .arg("--config")
            .arg(self.config_path());
        c
    }

    /// Runs a `weerwal` command with this node's configuration.
    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Starts `serve` and waits (up to 30 s) until the proxy answers. A
    /// port that another test took between choosing and binding it is
    /// chosen again (up to three times).
    fn start(&mut self) {
        for _ in 0..3 {
            match self.try_start() {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => self.choose_ports_again(),
                Err(log) => panic!("{} exited:\n{log}", self.name),
            }
        }
        panic!("{}: its ports were taken three times", self.name);
    }

    /// New free ports for this node, written into its configuration.
    fn choose_ports_again(&mut self) {
        let [proxy, admin, gateway] = crate::common::postgres::free_ports::<3>();
        let path = self.config_path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text = text.replace(&format!("127.0.0.1:{}\"", self.proxy_port), &format!("127.0.0.1:{proxy}\""));
        text = text.replace(&format!("127.0.0.1:{}\"", self.admin_port), &format!("127.0.0.1:{admin}\""));
        if let Some(g) = self.gateway_port {
            text = text.replace(&format!(":{g}\""), &format!(":{gateway}\""));
            self.gateway_port = Some(gateway);
        }
        std::fs::write(&path, text).unwrap();
        (self.proxy_port, self.admin_port) = (proxy, admin);
    }

    fn try_start(&mut self) -> Result<(), String> {
        let mut child = self.command().arg("serve").stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        // A fresh log per run (the lines of an earlier run are not this one's).
        self.log = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The gateway binds after the proxy: a node with one is ready once
        // both said so (else its first request may find no listener).
        let ready = |log: &str| {
            log.contains("weerwal proxy running")
                && (self.gateway_port.is_none() || log.contains("compliance gateway running"))
        };
        while !ready(&self.log_text()) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                // The stderr reader may still be collecting the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return Err(format!("{status}:\n{}", self.log_text()));
            }
            assert!(Instant::now() < deadline, "{} did not start:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Stops `serve` with SIGTERM (or SIGKILL) and waits for it.
    fn stop_with(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }

    fn proxy_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://127.0.0.1:{}", self.proxy_port)).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    async fn healthz(&self) -> String {
        let url = format!("http://127.0.0.1:{}/healthz", self.admin_port);
        match reqwest::Client::new().get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("unreachable: {e}"),
        }
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("logs/audit.jsonl")
    }

    /// `seq` of every record in the local log (all files).
    fn local_seqs(&self) -> Vec<i64> {
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(self.dir.path().join("logs")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    seqs.push(v["seq"].as_i64().unwrap());
                }
            }
        }
        seqs.sort();
        seqs
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_with("-KILL");
    }
}

/// Polls `f` until it returns true, up to `limit`.
async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn db_seqs(pg: &Postgres, node: &str) -> Vec<i64> {
    pg.psql_weerwal(&format!("SELECT seq FROM audit_records WHERE node = '{node}' ORDER BY seq"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

async fn blocked_request(node: &Node) -> u16 {
    node.proxy_client().get("http://aliexpress.com/").send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_twice_at_once_then_status_lists_nodes_and_exits_1_when_unreachable() {
    let mut pg = Postgres::start().await;
    let a = Node::new("proxy-a", &pg, Extra::default());
    // Before any migration: schema 0.
    let out = a.run(&["db", "status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema version: 0"), "{out:?}");
    // Two migrations at the same moment: the advisory lock lets one do it.
    let p1 = a.command().args(["db", "migrate"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let p2 = a.command().args(["db", "migrate"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (o1, o2) = (p1.wait_with_output().unwrap(), p2.wait_with_output().unwrap());
    assert!(o1.status.success() && o2.status.success(), "{o1:?} {o2:?}");
    let said = format!("{}{}", String::from_utf8_lossy(&o1.stdout), String::from_utf8_lossy(&o2.stdout));
    assert_eq!(said.matches("migrated from version 0 to 3").count(), 1, "{said}");
    assert_eq!(said.matches("schema version 3 is current").count(), 1, "{said}");
    assert_eq!(pg.psql_weerwal("SELECT count(*) FROM weerwal_schema").trim(), "3");

    // A node runs: status shows it with its heartbeat and policy digest.
    let mut a = a;
    a.start();
    let out = a.run(&["db", "status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("schema version: 3 (this weerwal: 3)"), "{text}");
    assert!(text.contains("proxy-a") && text.contains("alive"), "{text}");
    // Another node with a different policy digest is pointed out.
    pg.psql_weerwal(
        "INSERT INTO weerwal_nodes (node, version, policy_digest) VALUES ('proxy-b', '0.1.0', 'ffffffffffffffffffff'), ('proxy-c', '0.1.0', 'ffffffffffffffffffff')",
    );
    let text = String::from_utf8_lossy(&a.run(&["db", "status"]).stdout).into_owned();
    let line_a = text.lines().find(|l| l.starts_with("proxy-a")).unwrap();
    assert!(line_a.contains("POLICY DIFFERS"), "{text}");
    assert!(!text.lines().find(|l| l.starts_with("proxy-b")).unwrap().contains("POLICY DIFFERS"), "{text}");
    a.stop_with("-TERM");

    pg.stop();
    let out = a.run(&["db", "status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.database") && err.contains(&format!("127.0.0.1:{}", pg.port)), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_or_unreachable_host_is_exit_2_naming_the_setting() {
    let pg = Postgres::start().await;
    let wrong = Node::new("proxy-a", &pg, Extra { password: Some("not-the-password".into()), ..Extra::default() });
    let out = wrong.run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cluster.password_file") && err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    let nobody = free_port();
    let url = format!("postgres://weerwal:{PASSWORD}@127.0.0.1:{nobody}/weerwal");
    let unreachable = Node::new("proxy-b", &pg, Extra { url: Some(url), ..Extra::default() });
    let out = unreachable.run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cluster.database") && err.contains(&format!("127.0.0.1:{nobody}")), "{err}");
    assert!(!err.contains(PASSWORD), "the password in the URL is never shown: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_of_node_a_are_queried_on_node_b_and_the_witness_catches_a_rewrite() {
    let pg = Postgres::start().await;
    let mut a = Node::new("proxy-a", &pg, Extra::default());
    let mut b = Node::new("proxy-b", &pg, Extra::default());
    a.start();
    b.start();
    assert_eq!(blocked_request(&a).await, 403);
    // The record carries the node and reaches the database.
    let local = std::fs::read_to_string(a.audit_path()).unwrap();
    let blocked = local.lines().find(|l| l.contains("\"event\":\"blocked\"")).unwrap().to_string();
    assert!(blocked.contains("\"node\":\"proxy-a\""), "{blocked}");
    let a_seqs = a.local_seqs();
    wait_until("A's records in the database", Duration::from_secs(10), || db_seqs(&pg, "proxy-a") == a_seqs).await;
    // The officer on B sees A's record, with the same filters and output.
    let out = b.run(&["logs", "query", "--event", "blocked", "--format", "json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&blocked), "the line exactly as A wrote it: {text}");
    let out = b.run(&["logs", "query", "--host", "aliexpress.com"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("aliexpress.com") && table.contains("1 record(s), all nodes"), "{table}");
    let out = b.run(&["logs", "report", "--by", "app", "--format", "csv"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.lines().any(|l| l.starts_with("AliExpress,1,")), "{report}");
    // --log still reads local files only: B's own log has no blocked record.
    let out = b.run(&["logs", "query", "--event", "blocked", "--log", "logs"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 record(s)"), "{out:?}");

    // The witness agrees with an untouched log...
    a.stop_with("-TERM");
    let a_seqs = a.local_seqs();
    wait_until("A's last records shipped", Duration::from_secs(10), || db_seqs(&pg, "proxy-a") == a_seqs).await;
    let out = a.run(&["logs", "verify", "--witness"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("WITNESS OK: {} record(s) of node proxy-a", a_seqs.len())), "{text}");
    // ...and catches a chain rewritten on disk (every hash recomputed, so
    // the local verification alone passes).
    let rewritten = rechain(&std::fs::read_to_string(a.audit_path()).unwrap(), "aliexpress.com", "example.org");
    std::fs::write(a.audit_path(), rewritten).unwrap();
    let out = a.run(&["logs", "verify"]);
    assert!(out.status.success(), "the rewrite is self-consistent: {out:?}");
    let out = a.run(&["logs", "verify", "--witness"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let seq = serde_json::from_str::<serde_json::Value>(&blocked).unwrap()["seq"].as_i64().unwrap();
    assert!(
        text.contains(&format!("seq {seq} differs from the copy in the database")) && text.contains("audit.jsonl:"),
        "{text}"
    );
    b.stop_with("-TERM");
}

/// The log with `from` replaced by `to` and every hash and `prev` recomputed.
fn rechain(log: &str, from: &str, to: &str) -> String {
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    for line in log.lines() {
        let mut r: weerwal::audit::Record = serde_json::from_str(&line.replace(from, to)).unwrap();
        if r.seq == 1 {
            prev = r.prev.clone();
        }
        r.prev = prev.clone();
        r.hash.clear();
        let mut buf = Vec::new();
        prev = r.write_line(&mut buf).unwrap();
        out.push_str(&String::from_utf8(buf).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn database_stopped_mid_burst_then_back_every_record_arrives() {
    let mut pg = Postgres::start().await;
    let mut a = Node::new("proxy-a", &pg, Extra::default());
    a.start();
    for _ in 0..30 {
        assert_eq!(blocked_request(&a).await, 403);
    }
    pg.stop();
    // The proxy keeps blocking and writing its local log.
    for _ in 0..30 {
        assert_eq!(blocked_request(&a).await, 403);
    }
    let mut health = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !health.starts_with("degraded") {
        assert!(Instant::now() < deadline, "/healthz never said degraded: {health}\n{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
        health = a.healthz().await;
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", a.admin_port)).await.unwrap().text().await;
    assert!(metrics.unwrap().contains("weerwal_cluster_degraded 1"));
    for _ in 0..30 {
        assert_eq!(blocked_request(&a).await, 403);
    }
    // Said once, not per request.
    assert_eq!(a.log_text().matches("this node is degraded").count(), 1, "{}", a.log_text());
    pg.restart().await;
    for _ in 0..30 {
        assert_eq!(blocked_request(&a).await, 403);
    }
    let local = a.local_seqs();
    assert!(local.len() >= 120);
    assert_eq!(local, (1..=local.len() as i64).collect::<Vec<_>>(), "no seq missing locally");
    wait_until("every record in the database", Duration::from_secs(30), || db_seqs(&pg, "proxy-a") == local).await;
    wait_until("healthy again", Duration::from_secs(20), || a.log_text().contains("no longer degraded")).await;
    assert!(a.healthz().await.starts_with("ok"));

    // SIGKILL in the middle of shipping: at the next start every record
    // arrives (once: the database keys them by node and seq).
    pg.stop();
    for _ in 0..20 {
        assert_eq!(blocked_request(&a).await, 403);
    }
    a.stop_with("-KILL");
    pg.restart().await;
    a.start();
    let local = a.local_seqs();
    let deadline = Instant::now() + Duration::from_secs(30);
    while db_seqs(&pg, "proxy-a") != local {
        assert!(
            Instant::now() < deadline,
            "records written before SIGKILL: local {local:?}\ndatabase {:?}\n{}",
            db_seqs(&pg, "proxy-a"),
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop_with("-TERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_edited_by_hand_is_skipped_with_one_warning() {
    let pg = Postgres::start().await;
    let mut a = Node::new("proxy-a", &pg, Extra::default());
    a.start();
    for _ in 0..3 {
        assert_eq!(blocked_request(&a).await, 403);
    }
    let local = a.local_seqs();
    wait_until("records shipped", Duration::from_secs(10), || db_seqs(&pg, "proxy-a") == local).await;
    pg.psql_weerwal(
        "UPDATE audit_records SET line = '{\"seq\": broken' WHERE node = 'proxy-a' AND seq = (SELECT min(seq) FROM audit_records WHERE event = 'blocked')",
    );
    let out = a.run(&["logs", "query", "--event", "blocked"]);
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{err}");
    assert!(text.contains("2 record(s), all nodes"), "{text}");
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    assert!(err.contains("database:proxy-a:"), "{err}");
    a.stop_with("-TERM");
}

const WEBMAIL: &str = "webmail.gemeente.test";

/// `[compliance]` and a `[gateway]` in front of `upstream`.
fn gateway_sections(upstream: std::net::SocketAddr) -> String {
    format!(
        "[compliance]\nprotected = [\"{WEBMAIL}\"]\n\
         [gateway]\nlisten = \"127.0.0.1:GATEWAY_PORT\"\n\
         [[gateway.route]]\nhost = \"{WEBMAIL}\"\nupstream = \"http://{upstream}\"\n"
    )
}

/// A person on their own loopback address (127.0.0.N).
fn person(n: u8) -> std::net::IpAddr {
    format!("127.0.0.{n}").parse().unwrap()
}

fn client_from(ip: std::net::IpAddr, proxy: Option<&Node>) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .local_address(ip)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20));
    let b = match proxy {
        Some(n) => b.proxy(reqwest::Proxy::all(format!("http://127.0.0.1:{}", n.proxy_port)).unwrap()),
        None => b.no_proxy(),
    };
    b.build().unwrap()
}

/// GET webmail through `node`'s gateway from `ip`: status and page.
async fn via_gateway(node: &Node, ip: std::net::IpAddr, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", node.gateway_port.unwrap());
    let resp = client_from(ip, None).get(url).header("host", WEBMAIL).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Polls `node`'s gateway for `ip` until it answers `status` (up to `limit`);
/// returns how long that took and the last page.
async fn gateway_until(node: &Node, ip: std::net::IpAddr, status: u16, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    loop {
        let (s, html) = via_gateway(node, ip, "/poll").await;
        if s == status {
            return (started.elapsed(), html);
        }
        assert!(started.elapsed() < limit, "gateway of {} still answers {s} for {ip}, not {status}", node.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_on_a_is_refused_at_b_and_an_attestation_on_b_lifts_it_on_a() {
    let upstream = crate::common::Origin::start().await;
    let mut pg = Postgres::start().await;
    let extra = Extra { sections: gateway_sections(upstream.addr), ..Extra::default() };
    let mut a = Node::new("proxy-a", &pg, extra.clone());
    let mut b = Node::new("gateway-b", &pg, extra);
    a.start();
    b.start();
    let (p, q) = (person(2), person(3));
    // Nobody is flagged yet: both pass B's gateway.
    assert_eq!(via_gateway(&b, p, "/before").await.0, 200);

    // p tries AliExpress through A...
    let blocked = client_from(p, Some(&a)).get("http://aliexpress.com/").send().await.unwrap();
    assert_eq!(blocked.status(), 403);
    // ...and B's gateway refuses p with the remediation page; q passes.
    let (took, html) = gateway_until(&b, p, 403, Duration::from_secs(10)).await;
    assert!(html.contains("Geen toegang tot webmail.gemeente.test") && html.contains("AliExpress"), "{html}");
    eprintln!("flag on A in force on B after {took:?}");
    let before = upstream.requests().len();
    assert_eq!(via_gateway(&b, p, "/refused").await.0, 403);
    assert_eq!(via_gateway(&b, q, "/q").await.0, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), before + 1, "the upstream saw only q");
    assert_eq!(seen[before].uri, "/q");
    assert_eq!(seen[before].headers.get("x-forwarded-for").unwrap(), "127.0.0.3");
    // A's own gateway refuses p too.
    assert_eq!(via_gateway(&a, p, "/a").await.0, 403);

    // p attests on B: lifted on B at once and on A soon after.
    let at = html.find("name=\"token\" value=\"").expect("attestation form") + 20;
    let token = &html[at..at + 32];
    let resp = client_from(p, None)
        .post(format!("http://127.0.0.1:{}/.weerwal/attest", b.gateway_port.unwrap()))
        .header("host", WEBMAIL)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&return=%2Finbox&confirm=yes"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(via_gateway(&b, p, "/after").await.0, 200);
    gateway_until(&a, p, 200, Duration::from_secs(10)).await;

    // The database down: a flag raised on A meanwhile is kept and sent later.
    pg.stop();
    let r = person(4);
    assert_eq!(client_from(r, Some(&a)).get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    assert_eq!(via_gateway(&a, r, "/local").await.0, 403, "A itself knows at once");
    assert_eq!(via_gateway(&b, r, "/stale").await.0, 200, "last-known on B: not yet");
    pg.restart().await;
    gateway_until(&b, r, 403, Duration::from_secs(30)).await;

    // A row edited by hand into nonsense: skipped with one log line at the
    // next (re)load, the rest of the state still loaded.
    pg.psql_weerwal(
        "INSERT INTO compliance_flags (key, data, node) VALUES ('client:127.0.0.9', '{\"app\": 42', 'hand')",
    );
    b.stop_with("-TERM");
    b.start();
    wait_until("B reloaded", Duration::from_secs(10), || b.log_text().contains("compliance state loaded")).await;
    assert_eq!(b.log_text().matches("database row does not parse; skipped").count(), 1, "{}", b.log_text());
    assert_eq!(via_gateway(&b, r, "/still").await.0, 403);
    assert_eq!(via_gateway(&b, person(9), "/nine").await.0, 200);
    a.stop_with("-TERM");
    b.stop_with("-TERM");
}

/// GET webmail through `node`'s gateway from `ip` with a device cookie:
/// status, the `weerwal_device` cookie it set (if any), page.
async fn via_gateway_with(node: &Node, ip: std::net::IpAddr, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let url = format!("http://127.0.0.1:{}/mail", node.gateway_port.unwrap());
    let mut req = client_from(ip, None).get(url).header("host", WEBMAIL);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("weerwal_device={c}"));
    }
    let resp = req.send().await.unwrap();
    let set = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("weerwal_device=").map(|v| v.split(';').next().unwrap_or("").to_string()));
    (resp.status().as_u16(), set, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_cookie_issued_by_one_gateway_names_the_device_at_another() {
    let upstream = crate::common::Origin::start().await;
    let pg = Postgres::start().await;
    let extra = Extra { sections: gateway_sections(upstream.addr), ..Extra::default() };
    let mut a = Node::new("gateway-a", &pg, extra.clone());
    let mut b = Node::new("gateway-b", &pg, extra);
    a.start();
    b.start();
    let laptop = person(2);
    assert_eq!(client_from(laptop, Some(&a)).get("http://tiktok.com/").send().await.unwrap().status(), 403);
    // The laptop reaches B's gateway: refused once the flag raised on A is
    // in force there, and given a device cookie...
    gateway_until(&b, laptop, 403, Duration::from_secs(10)).await;
    let (status, cookie, _) = via_gateway_with(&b, laptop, None).await;
    assert_eq!(status, 403);
    let cookie = cookie.expect("B's gateway sets a device cookie");
    // ...which it sends back: the device itself is flagged on B.
    assert_eq!(via_gateway_with(&b, laptop, Some(&cookie)).await.0, 403);

    // The laptop moves (a new address, nobody flagged there) and reaches
    // A's gateway with the cookie B issued: A recognises the device.
    let moved = person(6);
    let started = Instant::now();
    let html = loop {
        let (status, reissued, html) = via_gateway_with(&a, moved, Some(cookie.as_str())).await;
        assert!(reissued.is_none(), "A verified B's cookie instead of issuing its own");
        if status == 403 {
            break html;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "A's gateway still lets the flagged device in ({status})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(html.contains("TikTok"), "{html}");
    // Another device at another address passes A's gateway.
    assert_eq!(via_gateway_with(&a, person(7), None).await.0, 200);

    // Both nodes took the same key from the database (one row).
    let keys = pg.psql_weerwal("SELECT count(*) FROM cluster_keys");
    assert_eq!(keys.trim(), "1", "{keys}");
    a.stop_with("-TERM");
    b.stop_with("-TERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_unavailable_deny_refuses_protected_hosts_while_the_database_is_down() {
    let upstream = crate::common::Origin::start().await;
    let mut pg = Postgres::start().await;
    let sections = format!("{}\n", gateway_sections(upstream.addr));
    let mut g = Node::new("gateway-d", &pg, Extra { sections, ..Extra::default() });
    std::fs::write(
        g.config_path(),
        std::fs::read_to_string(g.config_path())
            .unwrap()
            .replace("node = \"gateway-d\"", "node = \"gateway-d\"\non_unavailable = \"deny\""),
    )
    .unwrap();
    g.start();
    wait_until("state loaded", Duration::from_secs(10), || g.log_text().contains("compliance state loaded")).await;
    assert_eq!(via_gateway(&g, person(2), "/up").await.0, 200);
    pg.stop();
    gateway_until(&g, person(2), 403, Duration::from_secs(10)).await;
    pg.restart().await;
    gateway_until(&g, person(2), 200, Duration::from_secs(30)).await;
    g.stop_with("-TERM");
}

/// A CA and a certificate it signed for `localhost`: (CA PEM, cert PEM, key PEM).
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "weerwal test database CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_file_means_tls_with_the_certificate_and_host_name_verified() {
    let mut pg = Postgres::start().await;
    let (ca, cert, key) = test_pki();
    pg.enable_tls(&cert, &key).await;
    let url = format!("postgres://weerwal@localhost:{}/weerwal", pg.port);
    let with_ca = |name: &str, url: &str, ca_pem: &str| {
        let n = Node::new(name, &pg, Extra { url: Some(url.to_string()), ..Extra::default() });
        std::fs::write(n.dir.path().join("db-ca.pem"), ca_pem).unwrap();
        let text = std::fs::read_to_string(n.config_path()).unwrap();
        std::fs::write(n.config_path(), text.replace("[cluster]\n", "[cluster]\nca_file = \"db-ca.pem\"\n")).unwrap();
        n
    };
    // The right CA and name: the node runs over TLS.
    let mut a = with_ca("proxy-a", &url, &ca);
    a.start();
    let ssl = pg.psql_weerwal(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'weerwal%'",
    );
    assert_eq!(ssl.trim(), "t", "every weerwal connection uses TLS");
    a.stop_with("-TERM");
    // Another CA: refused at start, naming ca_file.
    let (other_ca, _, _) = test_pki();
    let out = with_ca("proxy-b", &url, &other_ca).run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cluster.ca_file"), "{err}");
    // The right CA but a name the certificate does not carry (verify-full).
    let by_ip = format!("postgres://weerwal@127.0.0.1:{}/weerwal", pg.port);
    let out = with_ca("proxy-c", &by_ip, &ca).run(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cluster.ca_file") && err.contains("certificate"), "{err}");
}

/// The least privileges docs/cluster.md gives a node's role, once the
/// schema's owner has migrated: enough to run, ship and share flags.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_runs_with_the_least_privileges_the_docs_give() {
    let upstream = crate::common::Origin::start().await;
    let pg = Postgres::start().await;
    let owner = Node::new("owner", &pg, Extra::default());
    let out = owner.run(&["db", "migrate"]);
    assert!(out.status.success(), "{out:?}");
    let docs = std::fs::read_to_string(repo().join("docs/cluster.md")).unwrap();
    let grants: Vec<&str> = docs.lines().filter(|l| l.starts_with("GRANT ")).collect();
    assert!(grants.len() >= 5, "{grants:?}");
    pg.psql(&format!("CREATE ROLE weerwal_node LOGIN PASSWORD '{PASSWORD}'"));
    for g in &grants {
        pg.psql_weerwal(g.split("--").next().unwrap());
    }
    let url = format!("postgres://weerwal_node@127.0.0.1:{}/weerwal", pg.port);
    let extra = Extra { url: Some(url), sections: gateway_sections(upstream.addr), ..Extra::default() };
    let mut n = Node::new("proxy-least", &pg, extra);
    n.start();
    assert_eq!(client_from(person(2), Some(&n)).get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    let local = n.local_seqs();
    wait_until("records shipped", Duration::from_secs(10), || db_seqs(&pg, "proxy-least") == local).await;
    wait_until("flag shared", Duration::from_secs(10), || {
        pg.psql_weerwal("SELECT count(*) FROM compliance_flags").trim() == "1"
    })
    .await;
    // The copy is a witness: this role cannot change it.
    assert!(pg.psql_weerwal("SELECT has_table_privilege('weerwal_node', 'audit_records', 'UPDATE')").trim() == "f");
    let status = n.run(&["db", "status"]);
    assert!(status.status.success(), "{status:?}");
    assert!(!n.log_text().contains("ERROR"), "{}", n.log_text());
    n.stop_with("-TERM");
}

/// A gateway names the user of a proxy session on another node: jan logs
/// in on A's proxy from one address and is blocked from another; B's
/// gateway refuses jan's first address too (it knows who is there).
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_names_the_user_of_a_session_on_another_node() {
    let upstream = crate::common::Origin::start().await;
    let pg = Postgres::start().await;
    let sections = gateway_sections(upstream.addr);
    let proxy_sections = format!("{sections}[identity]\nauth = \"basic\"\nusers_file = \"users.toml\"\n");
    let mut a = Node::new("proxy-a", &pg, Extra { sections: proxy_sections, ..Extra::default() });
    let mut b = Node::new("gateway-b", &pg, Extra { sections, ..Extra::default() });
    let mut add = a.command();
    add.args(["users", "add", "jan"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"jans-wachtwoord\n").unwrap();
    assert!(child.wait().unwrap().success());
    a.start();
    b.start();
    wait_until("B follows the state", Duration::from_secs(10), || b.log_text().contains("compliance state loaded"))
        .await;
    let jan_from = |ip: std::net::IpAddr| {
        reqwest::Client::builder()
            .local_address(ip)
            .proxy(
                reqwest::Proxy::all(format!("http://127.0.0.1:{}", a.proxy_port))
                    .unwrap()
                    .basic_auth("jan", "jans-wachtwoord"),
            )
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    };
    let (desk, laptop) = (person(5), person(6));
    // jan browses from the desk (allowed, not flagged)...
    let ok = jan_from(desk).get(format!("http://localhost:{}/desk", upstream.addr.port())).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(via_gateway(&b, desk, "/desk-before").await.0, 200);
    // ...and tries AliExpress from the laptop: jan is flagged.
    assert_eq!(jan_from(laptop).get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    // B's gateway refuses the desk too: it knows jan is there.
    let (_, html) = gateway_until(&b, desk, 403, Duration::from_secs(10)).await;
    assert!(html.contains("AliExpress"), "{html}");
    // Somebody else's address is not affected.
    assert_eq!(via_gateway(&b, person(7), "/other").await.0, 200);
    a.stop_with("-TERM");
    b.stop_with("-TERM");
}

/// A browser on a node's dashboard: cookies kept by hand (as in admin.rs).
struct Dashboard {
    base: String,
    client: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

impl Dashboard {
    fn new(node: &Node) -> Dashboard {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Dashboard { base: format!("http://127.0.0.1:{}", node.admin_port), client, cookies: Default::default() }
    }

    fn keep_cookies(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.trim().to_string(), v.trim().to_string());
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&resp);
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Logs in with the login form and its token.
    async fn login(&mut self, name: &str, password: &str) {
        let (_, page) = self.get("/login").await;
        let token = page.split("name=\"token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let body = format!("token={token}&name={name}&password={password}");
        let resp = self
            .client
            .post(format!("{}/login", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&resp);
        assert_eq!(resp.status().as_u16(), 303, "login: {}", resp.text().await.unwrap());
    }
}

/// Adds an officer to a node's users file (`weerwal users add`).
fn add_officer(node: &Node, name: &str, password: &str) {
    let mut add = node.command();
    add.args(["users", "add", name, "--role", "officer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 17, the dashboard: an officer on B's dashboard sees the blocked
/// attempt made through A (with its node) on the attempts page, in the CSV
/// export, the report and the charts; the nodes page warns that B runs
/// another policy; with PostgreSQL stopped, B's dashboard shows its own
/// log and says the database cannot be reached.
#[tokio::test(flavor = "multi_thread")]
async fn an_officer_on_b_sees_a_block_on_a_and_the_nodes_with_policy_drift() {
    let mut pg = Postgres::start().await;
    let users = "[identity]\nusers_file = \"users.toml\"\n".to_string();
    let mut a = Node::new("proxy-a", &pg, Extra::default());
    let mut b = Node::new("proxy-b", &pg, Extra { sections: users, ..Extra::default() });
    // B runs another policy: the same files but one.
    let policy_b = b.dir.path().join("policy");
    std::fs::create_dir(&policy_b).unwrap();
    for entry in std::fs::read_dir(repo().join("policy")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") && !p.ends_with("capcut.toml") {
            std::fs::copy(&p, policy_b.join(p.file_name().unwrap())).unwrap();
        }
    }
    let config = std::fs::read_to_string(b.config_path())
        .unwrap()
        .replace(&format!("dir = \"{}\"", repo().join("policy").display()), "dir = \"policy\"");
    assert!(config.contains("dir = \"policy\""), "{config}");
    std::fs::write(b.config_path(), config).unwrap();
    add_officer(&b, "fbakker", "officer-wachtwoord-1");
    a.start();
    b.start();

    assert_eq!(blocked_request(&a).await, 403);
    let a_seqs = a.local_seqs();
    wait_until("A's records in the database", Duration::from_secs(10), || db_seqs(&pg, "proxy-a") == a_seqs).await;
    let blocked = std::fs::read_to_string(a.audit_path())
        .unwrap()
        .lines()
        .find(|l| l.contains("\"event\":\"blocked\""))
        .unwrap()
        .to_string();
    let seq = serde_json::from_str::<serde_json::Value>(&blocked).unwrap()["seq"].as_i64().unwrap();

    let mut d = Dashboard::new(&b);
    d.login("fbakker", "officer-wachtwoord-1").await;
    // The attempts page: A's record, its node, and where the records came from.
    let (status, page) = d.get("/attempts?host=aliexpress.com").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Records van alle knooppunten"), "{page}");
    assert!(page.contains("1 van 1 treffers"), "{page}");
    assert!(page.contains("<td>aliexpress.com</td>") && page.contains("<td>proxy-a</td>"), "{page}");
    assert!(page.contains(">Knooppunt <span"), "the node column: {page}");
    // A filter that matches nothing on any node.
    let (_, page) = d.get("/attempts?host=tiktok.com").await;
    assert!(page.contains("0 van 0 treffers"), "{page}");
    // The CSV export: A's record with the columns of `logs query --format csv`.
    let (status, csv) = d.get("/attempts.csv?app=AliExpress").await;
    assert_eq!(status, 200);
    let out = b.run(&["logs", "query", "--app", "AliExpress", "--format", "csv"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(csv, String::from_utf8_lossy(&out.stdout), "the download is `logs query --format csv` on B");
    assert!(csv.lines().next().is_some_and(|h| h.ends_with(",hash,node")), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with(&format!("{seq},")) && l.ends_with(",proxy-a")), "{csv}");
    // The report and the charts count it too.
    let (_, page) = d.get("/report?by=app").await;
    assert!(page.contains("AliExpress") && page.contains("1 poging(en) in 1 groep(en)"), "{page}");
    let (status, page) = d.get("/charts").await;
    assert_eq!(status, 200);
    assert!(page.contains("AliExpress") && page.contains("Records van alle knooppunten"), "{page}");
    // The API says where its records came from.
    let (_, json) = d.get("/api/attempts?event=blocked").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["source"]["records_of"], "all_nodes", "{json}");
    assert_eq!(v["records"][0]["node"], "proxy-a", "{json}");
    let (_, json) = d.get("/api/sessions").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["source"]["records_of"], "all_nodes", "{json}");

    // Policy drift: both nodes listed with their heartbeat, B named.
    wait_until("both heartbeats", Duration::from_secs(10), || {
        pg.psql_weerwal("SELECT count(*) FROM weerwal_nodes").trim() == "2"
    })
    .await;
    let (status, page) = d.get("/nodes").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("proxy-a") && page.contains("proxy-b"), "{page}");
    assert!(page.contains("niet alle knooppunten draaien hetzelfde beleid"), "{page}");
    assert_eq!(page.matches("POLICY DIFFERS").count(), 1, "{page}");
    assert!(page.contains("(dit knooppunt / this node)"), "{page}");
    let (_, page) = d.get("/attempts").await;
    assert!(page.contains("role=\"alert\"") && page.contains("href=\"/nodes\""), "the warning on the overview: {page}");

    // The database is down: B's dashboard reads its own log and says so.
    pg.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let (status, page) = d.get("/attempts?host=aliexpress.com").await;
        assert_eq!(status, 200, "{page}");
        if page.contains("clusterdatabase is niet bereikbaar") {
            break page;
        }
        assert!(Instant::now() < deadline, "no fallback note: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains("0 van 0 treffers"), "B's own log has no blocked record: {page}");
    let (_, json) = d.get("/api/attempts").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["source"]["records_of"], "local_fallback", "{json}");
    assert!(v["source"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{json}");
    let (status, page) = d.get("/nodes").await;
    assert_eq!(status, 503);
    assert!(page.contains("niet bereikbaar"), "{page}");
    pg.restart().await;
    a.stop_with("-TERM");
    b.stop_with("-TERM");
}
