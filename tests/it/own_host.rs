//! The proxy is never a way into its own host (issue 15, item 1): inside a
//! network namespace the test creates, weerwal serves LAN clients on a
//! second address (10.77.0.1), with the dashboard and another service on
//! that address. Through the proxy, neither is reachable, whatever the
//! notation (IPv4-mapped IPv6) or name (one that resolves to the address).
//! Needs root (`ip netns`); CI runs as root.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Namespace {
    name: String,
    children: Vec<Child>,
}

impl Namespace {
    fn create() -> Namespace {
        let name = format!("weerwal-it-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip (iproute2) runs");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        ip(&["netns", "add", &name]);
        let ns = Namespace { name, children: Vec::new() };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.name, "addr", "add", "10.77.0.1/24", "dev", "lo"]);
        // `ip netns exec` shows this file as /etc/hosts inside.
        let etc = format!("/etc/netns/{}", ns.name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(format!("{etc}/hosts"), "127.0.0.1 localhost\n10.77.0.1 proxy.gemeente.test\n").unwrap();
        ns
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn spawn(&mut self, mut c: Command) {
        self.children.push(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// The status curl gets for `url` through the proxy at 10.77.0.1:3128.
fn through_proxy(ns: &Namespace, url: &str) -> String {
    let out = ns
        .command("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-g"])
        .args(["-x", "http://10.77.0.1:3128", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(ns: &Namespace, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let out = ns.command("curl").args(["-s", "-o", "/dev/null", "--max-time", "2", url]).status().unwrap();
        if out.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{url} did not answer within 60 s");
}

#[test]
fn the_servers_own_addresses_are_never_reached_through_the_proxy() {
    if std::env::var_os("WEERWAL_SKIP_NETNS_TESTS").is_some() {
        eprintln!("skipped: WEERWAL_SKIP_NETNS_TESTS is set");
        return;
    }
    let mut ns = Namespace::create();
    let dir = tempfile::tempdir().unwrap();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
    std::fs::write(
        dir.path().join("weerwal.toml"),
        format!(
            "[proxy]\nlisten = \"10.77.0.1:3128\"\nallow_clients = [\"10.77.0.0/24\"]\n\
             [policy]\ndir = {policy:?}\n[audit]\npath = \"logs/audit.jsonl\"\n[ca]\ndir = \"certs\"\n\
             [admin]\nlisten = \"10.77.0.1:9090\"\n\
             # Plain HTTP off loopback must be asked for (issue 18).\n\
             allow_plaintext = true\n"
        ),
    )
    .unwrap();
    let mut serve = ns.command(env!("CARGO_BIN_EXE_weerwal"));
    serve.current_dir(dir.path()).args(["serve"]);
    ns.spawn(serve);
    // Another service on the server's LAN address.
    let mut other = ns.command("python3");
    other.args(["-m", "http.server", "8080", "--bind", "10.77.0.1"]);
    ns.spawn(other);
    wait_for(&ns, "http://10.77.0.1:9090/healthz");
    wait_for(&ns, "http://10.77.0.1:8080/");

    let rows = [
        ("http://10.77.0.1:9090/login", "the dashboard by its address"),
        ("http://[::ffff:10.77.0.1]:9090/login", "the dashboard, IPv4-mapped IPv6"),
        ("http://proxy.gemeente.test:9090/login", "the dashboard by a name for the address"),
        ("http://10.77.0.1:8080/", "another service on the address"),
        ("http://[::ffff:10.77.0.1]:8080/", "another service, IPv4-mapped IPv6"),
        ("http://proxy.gemeente.test:8080/", "another service by name"),
        ("http://127.0.0.1:8080/", "loopback"),
    ];
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|(url, what)| {
            let status = through_proxy(&ns, url);
            (status != "403").then(|| format!("{what} ({url}): {status}, want 403"))
        })
        .collect();
    // A CONNECT to the address (IPv4-mapped too) is refused the same way.
    for target in ["http://10.77.0.1:443/", "http://[::ffff:10.77.0.1]:443/"] {
        let out = ns
            .command("curl")
            .args(["-s", "-g", "-o", "/dev/null", "-w", "%{http_connect}", "--max-time", "10", "-p"])
            .args(["-x", "http://10.77.0.1:3128", target])
            .output()
            .unwrap();
        let connect = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(connect, "403", "CONNECT {target}");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
