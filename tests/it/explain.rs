//! `weerwal policy explain` and the proxy agree: each row is asked of the
//! real binary (`policy explain … --config`) and sent to a real `serve` on
//! the same configuration, policy and compliance state, from the same
//! client address; what the proxy did must be what explain said, and
//! explain's exit status must be 0 exactly when the request got through.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{repo_policy_dir, Origin, TestProxy};
use weerwal::config::Config;

/// One request: how it is sent, from where.
struct Row {
    client: &'static str,
    /// `GET http://…` (absolute form) or `CONNECT host:port`.
    method: &'static str,
    target: String,
    user_agent: Option<&'static str>,
}

const FLAGGED: &str = "127.0.0.66";
const CLEAN: &str = "127.0.0.77";
const EXEMPT_DEVICE: &str = "127.0.0.88";

fn write_setup(dir: &Path, origin_port: u16) -> Config {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    for f in std::fs::read_dir(repo_policy_dir()).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&f, policy.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        policy.join("zz-exemptions.toml"),
        "[[exemption]]\nwho = [\"device:toezicht\"]\napps = [\"TikTok\"]\nreason = \"inspectie en toezicht\"\nuntil = \"2099-12-31\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let flag = serde_json::json!({ "flags": { format!("client:{FLAGGED}"): {
        "app": "TikTok", "host": "www.tiktok.com", "since": "2026-12-01T10:00:00Z",
        "since_unix": 4_102_444_800u64, "seq": 7 } } });
    std::fs::write(dir.join("logs/compliance.json"), flag.to_string()).unwrap();
    let toml = format!(
        r#"[proxy]
listen = "127.0.0.1:0"
allow_clients = ["127.0.0.0/8"]
connect_ports = [443, {origin_port}, 9090]
deny_destinations = ["10.99.0.0/16", "169.254.0.0/16"]
connect_timeout = "2s"
client_hello_timeout = "2s"

[policy]
dir = "policy"

[audit]
path = "logs/audit.jsonl"

[ca]
dir = "certs"

[identity]
[[identity.device]]
cidr = "{EXEMPT_DEVICE}/32"
name = "toezicht"

[compliance]
protected = ["webmail.gemeente.test"]
"#
    );
    let path = dir.join("weerwal.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(&path).unwrap()
}

fn rows(origin: u16) -> Vec<Row> {
    let get = |client, target: &str| Row { client, method: "GET", target: target.to_string(), user_agent: None };
    let connect =
        |client, target: &str| Row { client, method: "CONNECT", target: target.to_string(), user_agent: None };
    let mut rows = vec![
        get("127.0.0.1", &format!("http://127.0.0.1:{origin}/")),
        get("127.0.0.1", &format!("http://localhost:{origin}/page")),
        get("127.0.0.1", "http://aliexpress.com/"),
        get("127.0.0.1", "http://m.aliexpress.com/cart"),
        get("127.0.0.1", "http://AliExpress.COM./"),
        get("127.0.0.1", "http://www.tiktok.com/x.gif"),
        get("127.0.0.1", "http://vk.com/"),
        get("127.0.0.1", "http://wechat.com/"),
        get("127.0.0.1", "http://www.capcut.com/"),
        get("127.0.0.1", "http://aliexpress.us/"),
        get("127.0.0.1", "http://aliexpress.ru/"),
        get("127.0.0.1", "http://notaliexpress.com.invalid/"),
        get("127.0.0.1", "http://aliexpress.com.invalid/"),
        get("127.0.0.1", "http://127.0.0.1:9090/login"),
        get("127.0.0.1", "http://localhost:9090/"),
        get("127.0.0.1", "http://10.99.0.1/"),
        get("127.0.0.1", "http://169.254.169.254/latest/meta-data/"),
        get("127.0.0.1", "http://2130706433/"),
        get(FLAGGED, "http://webmail.gemeente.test/"),
        get(FLAGGED, "http://mail.webmail.gemeente.test/inbox"),
        get(CLEAN, "http://webmail.gemeente.test/"),
        get(FLAGGED, "http://example.invalid/"),
        get(EXEMPT_DEVICE, "http://www.tiktok.com/"),
        get(EXEMPT_DEVICE, "http://aliexpress.com/"),
        connect("127.0.0.1", &format!("127.0.0.1:{origin}")),
        connect("127.0.0.1", &format!("localhost:{origin}")),
        connect("127.0.0.1", "127.0.0.1:22"),
        connect("127.0.0.1", "example.invalid:8443"),
        connect("127.0.0.1", "aliexpress.com:443"),
        connect("127.0.0.1", "www.tiktok.com:443"),
        connect("127.0.0.1", "vk.com:443"),
        connect("127.0.0.1", "m.aliexpress.com:443"),
        connect("127.0.0.1", "10.99.0.1:443"),
        connect("127.0.0.1", "127.0.0.1:9090"),
        connect("127.0.0.1", "localhost:9090"),
        connect(CLEAN, "webmail.gemeente.test:443"),
        connect(FLAGGED, "webmail.gemeente.test:443"),
        connect(EXEMPT_DEVICE, "aliexpress.com:443"),
        connect("127.0.0.1", "[::ffff:10.99.0.1]:443"),
    ];
    for ua in ["Mozilla/5.0 AliApp(AE/8.1.0)", "com.lemon.lvoverseas/9.0 (Linux; Android 13)"] {
        rows.push(Row { user_agent: Some(ua), ..get("127.0.0.1", &format!("http://127.0.0.1:{origin}/")) });
    }
    rows.push(Row {
        user_agent: Some("Mozilla/5.0 Firefox/128.0"),
        ..get("127.0.0.1", &format!("http://127.0.0.1:{origin}/"))
    });
    rows
}

/// What explain says: its action label and exit status.
fn explain(config_path: &Path, row: &Row) -> (String, Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_weerwal"));
    cmd.args(["--config", config_path.to_str().unwrap(), "policy", "explain", &row.target, "--client", row.client]);
    if row.method == "CONNECT" {
        cmd.args(["--method", "CONNECT"]);
    }
    if let Some(ua) = row.user_agent {
        cmd.args(["--user-agent", ua]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let action = text
        .lines()
        .find_map(|l| l.strip_prefix("action:"))
        .and_then(|l| l.split_whitespace().next())
        .map(|s| s.trim_end_matches(':').to_string())
        .unwrap_or_else(|| format!("(none: {text} {})", String::from_utf8_lossy(&out.stderr)));
    (action, out.status.code(), text)
}

async fn connect_from(client: &str, proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(client.parse::<IpAddr>().unwrap(), 0)).unwrap();
    socket.connect(proxy).await.unwrap()
}

/// Reads until the peer closes, the head and body are in, or `wait` passes.
async fn read_some(stream: &mut TcpStream, wait: Duration) -> String {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if text.contains("</html>")
                    || (text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n") && text.contains("CONNECT"))
                {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

/// What the proxy did, in explain's vocabulary.
async fn proxy_did(proxy: SocketAddr, row: &Row) -> String {
    let mut s = connect_from(row.client, proxy).await;
    let ua = row.user_agent.map(|u| format!("User-Agent: {u}\r\n")).unwrap_or_default();
    if row.method == "GET" {
        let host = row.target.split('/').nth(2).unwrap_or("");
        let req = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n{ua}Connection: close\r\n\r\n", row.target);
        s.write_all(req.as_bytes()).await.unwrap();
        let resp = read_some(&mut s, Duration::from_secs(15)).await;
        return classify_answer(&resp, "FORWARD");
    }
    let req = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n{ua}\r\n", row.target);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        // The refusal's page follows the head.
        let rest = read_some(&mut s, Duration::from_secs(5)).await;
        return classify_answer(&format!("{head}{rest}"), "TUNNEL");
    }
    // Plain HTTP through the tunnel: an allowed tunnel reaches the origin,
    // an intercepted one answers with the block page, a remediation tunnel
    // (which expects TLS) says nothing.
    let host = row.target.rsplit_once(':').map(|(h, _)| h).unwrap_or(&row.target);
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let resp = read_some(&mut s, Duration::from_secs(10)).await;
    if !resp.starts_with("HTTP/") {
        // Nothing, or a TLS alert: a remediation tunnel expects TLS.
        return "REMEDIATE-OR-CLOSED".into();
    }
    match classify_answer(&resp, "TUNNEL").as_str() {
        "BLOCK" => "INTERCEPT".into(),
        other => other.into(),
    }
}

fn classify_answer(resp: &str, allowed: &str) -> String {
    let status: u16 = resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    match status {
        403 if resp.contains("/.weerwal/attest") => "REMEDIATE".into(),
        403 if resp.contains("Referentienummer") => "BLOCK".into(),
        400 | 403 | 404 => "REFUSE".into(),
        407 => "CHALLENGE".into(),
        // Forwarded: the origin's answer, or a 502/504 because the origin
        // (an invalid name, no network here) cannot be reached.
        200 | 502 | 504 => allowed.into(),
        _ => format!("unexpected answer: {}", resp.lines().next().unwrap_or("(nothing)")),
    }
}

/// Explain's label as the proxy can show it.
fn expected(label: &str, row: &Row) -> String {
    match (label, row.method) {
        ("EXEMPT", "GET") => "FORWARD".into(),
        ("EXEMPT", _) => "TUNNEL".into(),
        ("REMEDIATE", "CONNECT") => "REMEDIATE-OR-CLOSED".into(),
        (l, _) => l.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_the_proxy_agree_on_every_row() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(dir.path(), origin.addr.port());
    let config_path = dir.path().join("weerwal.toml");
    let proxy = TestProxy::start_config(config, tempfile::tempdir().unwrap()).await;
    let rows = rows(origin.addr.port());
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let mut wrong = Vec::new();
    let mut table = String::new();
    for row in &rows {
        let path = config_path.clone();
        let (label, code, text) = {
            let r = Row { target: row.target.clone(), ..*row };
            tokio::task::spawn_blocking(move || explain(&path, &r)).await.unwrap()
        };
        let did = proxy_did(proxy.addr, row).await;
        let want = expected(&label, row);
        let allowed = matches!(label.as_str(), "FORWARD" | "TUNNEL" | "EXEMPT");
        let code_ok = code == Some(if allowed { 0 } else { 3 });
        table.push_str(&format!(
            "{:<12} {:<8} {:<45} explain {:<10} proxy {}\n",
            row.client, row.method, row.target, label, did
        ));
        // A flagged client's tunnel to an address answers plain HTTP inside
        // it with the remediation page.
        let same = did == want || (want == "REMEDIATE-OR-CLOSED" && did == "REMEDIATE");
        if !same || !code_ok {
            wrong.push(format!(
                "{} {} from {}: explain {label} (exit {code:?}), proxy {did}\n{text}",
                row.method, row.target, row.client
            ));
        }
    }
    println!("{table}");
    assert!(wrong.is_empty(), "{} rows disagree:\n{}", wrong.len(), wrong.join("\n"));
    proxy.stop().await;
}
