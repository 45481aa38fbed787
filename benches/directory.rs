//! Directory identity (issue 18), measured against a real OpenLDAP slapd
//! (the harness of tests/it/slapd.rs) and the real `serve` path:
//!
//! 1. An authenticated request on the cached path (`auth = "ldap"`, the
//!    check remembered) as a ratio to `auth = "none"`, in the same run:
//!    keep-alive clients through the proxy to a loopback origin, rounds of
//!    both alternated, median of the rounds. Target ≥ 0.9.
//! 2. LDAP checks per second on a cold cache: `Directory::check` (service
//!    search + a bind as the user, over LDAPS with the test CA), with
//!    several at once.
//!
//! `cargo bench --bench directory` (needs slapd: scripts/install-test-deps.sh).

#[path = "../tests/it/slapd.rs"]
mod slapd;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weerwal::config::{AuthMode, Config};
use weerwal::identity::ldap::{Directory, Verdict};
use weerwal::serve::Server;

const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
const CLIENTS: usize = 16;

/// A loopback origin answering every request with a small 200, keep-alive.
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut pending = Vec::new();
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::embedded();
    c.source = Some(dir.join("weerwal.toml"));
    c.proxy.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.policy.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
    c.audit.path = dir.join("logs/audit.jsonl");
    c.ca.dir = dir.join("certs");
    c
}

/// Requests per second through `proxy` with `CLIENTS` keep-alive clients.
async fn rate(proxy: SocketAddr, origin: SocketAddr, credentials: Option<(&str, &str)>) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + ROUND;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut p = reqwest::Proxy::http(format!("http://{proxy}")).unwrap();
        if let Some((u, pw)) = credentials {
            p = p.basic_auth(u, pw);
        }
        let client = reqwest::Client::builder().proxy(p).pool_max_idle_per_host(1).build().unwrap();
        let count = Arc::clone(&count);
        let url = format!("http://{origin}/");
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = client.get(&url).send().await.expect("request");
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / ROUND.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let slapd = slapd::Slapd::start();
    let origin = origin().await;
    let (dir_none, dir_ldap) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let none = Server::start(config(dir_none.path())).await.unwrap();
    let mut c = config(dir_ldap.path());
    c.identity.auth = AuthMode::Ldap;
    c.identity.ldap = Some(slapd.config(dir_ldap.path()));
    let ldap = Server::start(c.clone()).await.unwrap();
    let user = ("jdevries", "wachtwoord-jan");
    // Warm: the first request checks with the directory, the rest are cached.
    rate(ldap.proxy_addrs[0], origin, Some(user)).await;
    rate(none.proxy_addrs[0], origin, None).await;
    let (mut r_none, mut r_ldap) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        r_none.push(rate(none.proxy_addrs[0], origin, None).await);
        r_ldap.push(rate(ldap.proxy_addrs[0], origin, Some(user)).await);
    }
    let (n, l) = (median(r_none.clone()), median(r_ldap.clone()));
    println!("cached path: auth=none {n:.0} req/s, auth=ldap (cached) {l:.0} req/s, ratio {:.3}", l / n);
    println!("  rounds none {r_none:.0?}, ldap {r_ldap:.0?} ({CLIENTS} keep-alive clients, {ROUND:?} per round)");

    // Cold cache: every check asks the directory (search + bind).
    let directory = Arc::new(Directory::new(c.identity.ldap.as_ref().unwrap()).unwrap());
    for parallel in [1usize, 8] {
        let count = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + ROUND;
        let mut tasks = Vec::new();
        for i in 0..parallel {
            let (d, count) = (Arc::clone(&directory), Arc::clone(&count));
            tasks.push(tokio::spawn(async move {
                let users = slapd::USERS;
                let mut k = i;
                while Instant::now() < deadline {
                    let (u, pw) = users[k % users.len()];
                    k += 1;
                    let v = d.check(u, pw).await.expect("directory answers");
                    assert!(matches!(v, Verdict::Accepted(_)), "{v:?}");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let per_s = count.load(Ordering::Relaxed) as f64 / ROUND.as_secs_f64();
        println!("cold cache: {per_s:.0} LDAP checks/s with {parallel} at once (LDAPS, search + bind each)");
    }
    ldap.stop().await;
    none.stop().await;
}
