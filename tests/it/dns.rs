//! DNS end to end: the exported policy checked by the programs that consume
//! it and loaded by a real Unbound; weerwal's `[dns]` listener in front of a
//! real Unbound, queried with `dig` over UDP and TCP.
//!
//! Unbound runs in the foreground from a temporary directory with its own
//! configuration, on a free loopback port, and is stopped by its PID.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Origin, TestProxy};
use weerwal::config::{ComplianceConfig, DnsConfig, GatewayConfig, GatewayRoute};

/// Names the test Unbound answers itself (no internet needed).
const LOCAL_DATA: &str = r#"
    local-zone: "gemeente.test." static
    local-data: "www.gemeente.test. 300 IN A 192.0.2.10"
    local-data: "tiktokv.com.gemeente.test. 300 IN A 192.0.2.11"
"#;

/// A real Unbound on 127.0.0.1, stopped (by PID) when dropped.
struct Unbound {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Unbound {
    /// Starts Unbound with `extra` appended to its `server:` clause and
    /// `tail` after it (e.g. an `rpz:` clause); waits until it answers.
    fn start(extra: &str, tail: &str) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Many TXT records: more than 512 bytes, so a UDP client without
        // EDNS gets a truncated answer and must ask again over TCP.
        let big: String = (0..40)
            .map(|i| {
                format!("    local-data: 'big.gemeente.test. 300 IN TXT \"record {i:02} padding padding padding\"'\n")
            })
            .collect();
        let conf = format!(
            r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: "{d}/unbound.log"
    use-syslog: no
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    module-config: "respip iterator"
    edns-buffer-size: 1232
{LOCAL_DATA}{big}{extra}
remote-control:
    control-enable: no
{tail}"#,
            d = dir.path().display()
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let check = Command::new("unbound-checkconf").arg(&path).output().expect("unbound-checkconf is installed");
        assert!(check.status.success(), "unbound-checkconf: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unbound is installed (scripts/install-test-deps.sh)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut u = Unbound { child, addr, dir };
        u.wait_ready();
        u
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default();
                panic!("unbound exited with {status}: {log}");
            }
            if dig(self.addr, &["www.gemeente.test", "A"]).contains("192.0.2.10") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("unbound did not answer within 30 s");
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `dig` against a server and returns its output (the full answer
/// with header, so the status can be read). One try, a generous timeout.
fn dig(server: SocketAddr, args: &[&str]) -> String {
    dig_from(server, None, args)
}

fn dig_from(server: SocketAddr, source: Option<IpAddr>, args: &[&str]) -> String {
    let mut c = Command::new("dig");
    c.arg(format!("@{}", server.ip())).arg("-p").arg(server.port().to_string());
    c.args(["+tries=1", "+time=10", "+nocookie"]);
    if let Some(ip) = source {
        c.arg("-b").arg(ip.to_string());
    }
    let out = c.args(args).output().expect("dig is installed (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(dig_output: &str) -> &str {
    dig_output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output: {dig_output}"))
}

fn export(format: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weerwal"))
        .args(["policy", "export", "--format", format])
        .args(extra)
        .env("RUST_LOG", "error")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "export {format}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-test-deps.sh installs it)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn every_export_format_passes_the_check_of_the_program_that_consumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for answer in [&["--doh-canary"][..], &["--answer", "10.0.0.80"], &["--answer", "2001:db8::80", "--doh-canary"]] {
        let zone = write(d, "rpz.zone", &export("rpz", answer));
        let (ok, out) = run(Command::new("named-checkzone").args(["rpz.weerwal"]).arg(&zone));
        assert!(ok && out.contains("OK"), "named-checkzone {answer:?}: {out}");

        let conf = write(d, "weerwal.conf", &export("unbound", answer));
        let (ok, out) = run(Command::new("unbound-checkconf").arg(&conf));
        assert!(ok, "unbound-checkconf {answer:?}: {out}");

        let conf = write(d, "dnsmasq.conf", &export("dnsmasq", answer));
        let (ok, out) = run(Command::new("dnsmasq").arg("--test").arg(format!("--conf-file={}", conf.display())));
        assert!(ok && out.contains("syntax check OK"), "dnsmasq --test {answer:?}: {out}");
    }
    // A broken line is caught by the same checks: they can fail.
    let zone = write(d, "bad.zone", &export("rpz", &[]).replace("CNAME .", "CNAME"));
    assert!(!run(Command::new("named-checkzone").arg("rpz.weerwal").arg(&zone)).0);
    let conf = write(d, "bad.conf", &export("dnsmasq", &[]).replacen("\naddress=/", "\nadress=/", 1));
    assert!(!run(Command::new("dnsmasq").arg("--test").arg(format!("--conf-file={}", conf.display()))).0);

    // Squid: the ACL file in a squid.conf of its own; no warning either
    // (Squid warns when a listed domain is a subdomain of another).
    let acl = write(d, "weerwal-banned.acl", &export("squid", &[]));
    let squid_conf = format!(
        "http_port 127.0.0.1:{}\nacl weerwal_banned dstdomain \"{}\"\nhttp_access deny weerwal_banned\nhttp_access deny all\ncache_log {}/cache.log\npid_filename {}/squid.pid\n",
        free_port(),
        acl.display(),
        d.display(),
        d.display()
    );
    let conf = write(d, "squid.conf", &squid_conf);
    let (ok, out) = run(Command::new("squid").arg("-k").arg("parse").arg("-f").arg(&conf));
    assert!(ok && out.contains("Processing: acl weerwal_banned dstdomain"), "squid -k parse: {out}");
    assert!(!out.contains("WARNING") && !out.contains("ERROR"), "squid -k parse: {out}");

    // Hosts and AdGuard have no checker in Debian: their shape is checked here.
    let hosts = export("hosts", &[]);
    assert!(hosts.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).all(|l| l.starts_with("0.0.0.0 ")));
    assert!(hosts.contains("\n0.0.0.0 tiktokv.com\n") && hosts.contains("CANNOT block subdomains"));
    let adguard = export("adguard", &[]);
    assert!(adguard.lines().filter(|l| !l.starts_with('!') && !l.is_empty()).all(|l| l.starts_with("||")));
    assert!(adguard.contains("\n||tiktokv.com^$dnsrewrite=NXDOMAIN;;\n"));
}

#[test]
fn exported_rpz_zone_is_enforced_by_a_real_unbound() {
    let dir = tempfile::tempdir().unwrap();
    let zone = write(dir.path(), "rpz.weerwal.zone", &export("rpz", &["--doh-canary"]));
    let (ok, out) = run(Command::new("named-checkzone").arg("rpz.weerwal").arg(&zone));
    assert!(ok, "{out}");
    let tail = format!("rpz:\n    name: \"rpz.weerwal.\"\n    zonefile: \"{}\"\n    rpz-log: yes\n", zone.display());
    let unbound = Unbound::start("", &tail);
    for banned in ["tiktokv.com", "api16-normal-c-useast1a.tiktokv.com", "m.aliexpress.com", "use-application-dns.net"]
    {
        let out = dig(unbound.addr, &[banned, "A"]);
        assert_eq!(status(&out), "NXDOMAIN", "{banned}: {out}");
    }
    let out = dig(unbound.addr, &["www.gemeente.test", "A"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(out.contains("192.0.2.10"), "{out}");
    // A banned domain inside another name is not that domain.
    assert!(dig(unbound.addr, &["tiktokv.com.gemeente.test", "A"]).contains("192.0.2.11"));

    // With --answer: the block page's address.
    let zone = write(dir.path(), "rpz2.zone", &export("rpz", &["--answer", "10.0.0.80"]));
    let tail = format!("rpz:\n    name: \"rpz.weerwal.\"\n    zonefile: \"{}\"\n", zone.display());
    let unbound = Unbound::start("", &tail);
    let out = dig(unbound.addr, &["www.tiktok.com", "A"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(out.contains("10.0.0.80"), "{out}");
}

/// weerwal with `[dns]` in front of a real Unbound.
async fn dns_proxy(upstream: SocketAddr, adjust: impl FnOnce(&mut weerwal::config::Config)) -> (TestProxy, SocketAddr) {
    let proxy = TestProxy::start_with(|c| {
        c.dns = Some(DnsConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstream: vec![upstream],
            ..DnsConfig::default()
        });
        adjust(c);
    })
    .await;
    let addr = proxy.server.as_ref().unwrap().dns_addrs[0];
    (proxy, addr)
}

/// `dig` is blocking: run it off the runtime so weerwal keeps serving.
async fn adig(server: SocketAddr, source: Option<IpAddr>, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dig_from(server, source, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_names_are_blocked_and_recorded_allowed_names_answered_by_the_upstream_unrecorded() {
    let unbound = Unbound::start("", "");
    let (proxy, dns) = dns_proxy(unbound.addr, |_| {}).await;

    for transport in ["+notcp", "+tcp"] {
        let out = adig(dns, None, &[transport, "api16-normal-c-useast1a.TikTokV.com", "A"]).await;
        assert_eq!(status(&out), "NXDOMAIN", "{transport}: {out}");
        assert!(out.contains("EDE: 15 (Blocked)") && out.contains("TikTok"), "{out}");

        let out = adig(dns, None, &[transport, "www.gemeente.test", "A"]).await;
        assert_eq!(status(&out), "NOERROR", "{transport}: {out}");
        assert!(out.contains("192.0.2.10"), "{out}");
    }
    let blocked = proxy.events("blocked");
    assert_eq!(blocked.len(), 2, "{blocked:?}");
    for r in &blocked {
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["via"], "dns");
        assert_eq!(v["method"], "DNS");
        assert_eq!(v["host"], "api16-normal-c-useast1a.tiktokv.com");
        assert_eq!(v["app"], "TikTok");
        assert_eq!(v["rule"], "tiktokv.com");
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["detail"]["qtype"], "A");
    }
    let text = std::fs::read_to_string(proxy.audit_path()).unwrap();
    assert!(!text.contains("gemeente.test"), "an allowed look-up is never recorded");

    // A large answer: truncated over UDP without EDNS, dig asks again over
    // TCP through weerwal and gets all of it.
    let out = adig(dns, None, &["+noedns", "+notcp", "big.gemeente.test", "TXT"]).await;
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert_eq!(out.matches("padding padding padding").count(), 40, "{out}");
    // With EDNS the upstream's answer comes back as it sent it.
    let direct = dig(unbound.addr, &["+noall", "+answer", "big.gemeente.test", "TXT"]);
    let via = adig(dns, None, &["+noall", "+answer", "big.gemeente.test", "TXT"]).await;
    assert_eq!(direct.lines().count(), 40);
    assert_eq!(sorted_lines(&via), sorted_lines(&direct));

    let metrics = weerwal::metrics::metrics().render(0, 0);
    assert!(metrics.contains("weerwal_dns_blocked_total{app=\"TikTok\"}"), "{metrics}");
    proxy.stop().await;
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_get_an_error_or_silence_and_the_listener_keeps_answering() {
    let unbound = Unbound::start("", "");
    let (proxy, dns) = dns_proxy(unbound.addr, |_| {}).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |packet: Vec<u8>| {
        let sock = &sock;
        async move {
            sock.send_to(&packet, dns).await.unwrap();
            let mut buf = vec![0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
                _ => None,
            }
        }
    };
    // Shorter than a header: silence.
    assert_eq!(ask(vec![0x12]).await, None);
    // A header that promises a question that is not there: FORMERR (rcode 1).
    let r = ask(vec![0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.expect("an answer");
    assert_eq!((r[0], r[1], r[3] & 0x0f), (0xab, 0xcd, 1));
    // Two questions, one of them banned: FORMERR, nothing forwarded.
    let mut two = vec![0, 7, 0x01, 0, 0, 2, 0, 0, 0, 0, 0, 0];
    for name in [&b"\x03www\x08gemeente\x04test\x00"[..], b"\x07tiktokv\x03com\x00"] {
        two.extend_from_slice(name);
        two.extend_from_slice(&[0, 1, 0, 1]);
    }
    assert_eq!(ask(two).await.expect("an answer")[3] & 0x0f, 1);
    // A name longer than 255 bytes: FORMERR.
    let mut long = vec![0, 8, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(ask(long).await.expect("an answer")[3] & 0x0f, 1);
    // A compression pointer to itself, and random bytes.
    assert_eq!(ask(vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]).await.unwrap()[3] & 0x0f, 1);
    let _ = ask((0..300u32).map(|i| (i * 7919 % 251) as u8).collect()).await;
    // Over TCP: a length prefix promising more than is sent, then a close.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(dns).await.unwrap();
        s.write_all(&[0x10, 0x00, 1, 2, 3]).await.unwrap();
    }
    // Still answering, over both transports.
    for transport in ["+notcp", "+tcp"] {
        let out = adig(dns, None, &[transport, "www.gemeente.test", "A"]).await;
        assert!(out.contains("192.0.2.10"), "{out}");
    }
    assert!(proxy.events("blocked").is_empty(), "a malformed packet is not an attempt");
    let metrics = weerwal::metrics::metrics().render(0, 0);
    assert!(!metrics.contains("weerwal_dns_malformed_total 0\n"), "{metrics}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_allow_clients_is_refused_never_an_open_resolver() {
    let unbound = Unbound::start("", "");
    let (proxy, dns) = dns_proxy(unbound.addr, |c| {
        c.dns.as_mut().unwrap().allow_clients = Some(vec!["127.0.0.2/32".parse().unwrap()]);
    })
    .await;
    let inside: IpAddr = "127.0.0.2".parse().unwrap();
    let outside: IpAddr = "127.0.0.3".parse().unwrap();
    for transport in ["+notcp", "+tcp"] {
        let out = adig(dns, Some(outside), &[transport, "www.gemeente.test", "A"]).await;
        assert_eq!(status(&out), "REFUSED", "{out}");
        let out = adig(dns, Some(outside), &[transport, "tiktokv.com", "A"]).await;
        assert_eq!(status(&out), "REFUSED", "{out}");
        let out = adig(dns, Some(inside), &[transport, "www.gemeente.test", "A"]).await;
        assert!(out.contains("192.0.2.10"), "{out}");
    }
    assert!(proxy.events("blocked").is_empty(), "an outsider's query is not decided at all");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_block_sends_the_same_device_to_the_remediation_page_at_the_gateway() {
    const WEBMAIL: &str = "webmail.gemeente.test";
    let unbound = Unbound::start("", "");
    let webmail = Origin::start().await;
    let (proxy, dns) = dns_proxy(unbound.addr, |c| {
        c.compliance = Some(ComplianceConfig {
            protected: vec![WEBMAIL.into()],
            quarantine: "until-attested".into(),
            ..ComplianceConfig::default()
        });
        c.gateway = Some(GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: None,
            key: None,
            trusted_proxies: vec![],
            route: vec![GatewayRoute { host: WEBMAIL.into(), upstream: format!("http://{}", webmail.addr) }],
        });
    })
    .await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let phone: IpAddr = "127.0.0.5".parse().unwrap();
    let other: IpAddr = "127.0.0.6".parse().unwrap();
    let get = |ip: IpAddr| async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(ip)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let resp = client.get(format!("http://{gw}/inbox")).header("host", WEBMAIL).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    // Before: both reach webmail.
    assert_eq!(get(phone).await.0, 200);

    // A host the ban marks `embedded` (the TikTok Pixel, on many ordinary
    // sites) is blocked and recorded, but flags nobody.
    let out = adig(dns, Some(other), &["analytics.tiktok.com", "A"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert_eq!(get(other).await.0, 200, "an embedded host never flags");
    let pixel = proxy.events("blocked");
    assert_eq!(pixel.len(), 1);
    assert_eq!((pixel[0].client, pixel[0].flagged), (Some(other), Some(false)));

    // The phone's TikTok app asks for its API host.
    let out = adig(dns, Some(phone), &["api16-normal-c-useast1a.tiktokv.com", "A"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    let (code, html) = get(phone).await;
    assert_eq!(code, 403, "{html}");
    assert!(html.contains("Geen toegang tot webmail.gemeente.test") && html.contains("TikTok"), "{html}");
    assert!(html.contains("Ik heb de app verwijderd"), "the remediation page: {html}");
    assert_eq!(get(other).await.0, 200, "another device is not affected");
    let blocked = proxy.events("blocked");
    let denied = proxy.events("gateway_denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].client, Some(phone));
    assert_eq!(blocked.len(), 2);
    assert_eq!((blocked[1].client, blocked[1].flagged), (Some(phone), Some(true)));
    assert_eq!(webmail.requests().len(), 3, "the flagged phone's request never reached webmail");
    proxy.stop().await;
}

#[path = "../../fuzz/fuzz_targets/dns_checks.rs"]
mod dns_checks;

/// The fuzz target's invariants over its seeds and hand-made hard cases:
/// odd spellings of banned names, broken packets, and every prefix of them.
#[test]
fn dns_fuzz_checks_hold_for_seeds_and_hard_cases() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/dns_query");
    let mut inputs: Vec<Vec<u8>> =
        std::fs::read_dir(seeds).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert!(inputs.len() >= 5);
    let header = |qd: u8| vec![0x12, 0x34, 0x01, 0x00, 0, qd, 0, 0, 0, 0, 0, 0];
    let question = |labels: &[&[u8]]| {
        let mut p = header(1);
        for l in labels {
            p.push(l.len() as u8);
            p.extend_from_slice(l);
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        p
    };
    inputs.push(question(&[b"TIKTOKV", b"COM"]));
    inputs.push(question(&[b"a.b", b"tiktokv", b"com"]));
    inputs.push(question(&[b"\xff\x00", b"vk", b"com"]));
    inputs.push(question(&[b"xn--tiktok-", b"tiktokv", b"com"]));
    inputs.push(question(&[b"tiktokv\x00", b"com"]));
    // Compression: the name is a pointer to "tiktokv.com" stored earlier.
    let mut p = header(1);
    p.extend_from_slice(&[0xc0, 14, 7]);
    p.extend_from_slice(b"tiktokv\x03com\x00\x00\x01\x00\x01");
    inputs.push(p);
    for input in inputs.clone() {
        for cut in 0..input.len() {
            inputs.push(input[..cut].to_vec());
        }
    }
    for input in &inputs {
        dns_checks::dns_query(input);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_skipped_and_with_none_left_the_answer_is_servfail() {
    let unbound = Unbound::start("", "");
    // Bound but never answering: every query to it times out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (proxy, dns) = dns_proxy(unbound.addr, |c| {
        let d = c.dns.as_mut().unwrap();
        d.upstream = vec![silent_addr, unbound.addr];
        d.upstream_timeout = Duration::from_millis(500);
    })
    .await;
    for transport in ["+notcp", "+tcp"] {
        let out = adig(dns, None, &[transport, "www.gemeente.test", "A"]).await;
        assert!(out.contains("192.0.2.10"), "{transport}: {out}");
    }
    proxy.stop().await;

    let (proxy, dns) =
        dns_proxy(silent_addr, |c| c.dns.as_mut().unwrap().upstream_timeout = Duration::from_millis(500)).await;
    let out = adig(dns, None, &["www.gemeente.test", "A"]).await;
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    let metrics = weerwal::metrics::metrics().render(0, 0);
    assert!(!metrics.contains("weerwal_dns_upstream_errors_total 0\n"), "{metrics}");
    drop(silent);
    proxy.stop().await;
}

#[test]
fn export_refuses_a_bad_answer_or_zone_with_exit_2() {
    for args in [&["--answer", "sinkhole"][..], &["--zone", "not a zone"], &["--format", "bind"]] {
        let mut a = vec!["policy", "export"];
        if args[0] != "--format" {
            a.extend(["--format", "rpz"]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_weerwal"))
            .args(&a)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty());
    }
}
