//! CONNECT tunnels copied in the kernel (`splice(2)` through a pipe each
//! way), against the real binary so its descriptors can be counted in
//! `/proc/PID/fd`: two pipes while bytes move, given back to a pool when
//! the tunnel is quiet or done and reused by the next tunnel (many quiet
//! tunnels hold no pipes of their own); bytes the client sent with the
//! CONNECT, a large transfer both ways and a half close all arrive; a
//! quiet tunnel idles out; and when the descriptors are spoken for, a
//! tunnel is copied through user space instead (no pipes) while the
//! connection cap keeps the process within its limit.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `weerwal serve` as its own process in a temporary folder.
struct Serve {
    _dir: tempfile::TempDir,
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    /// Starts the binary with `extra` added to `[proxy]`, under `ulimit -n`
    /// `nofile` when given; waits until it says it runs.
    fn start(origin_port: u16, extra: &str, nofile: Option<u32>) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy");
        std::fs::create_dir_all(&policy).unwrap();
        for entry in std::fs::read_dir(crate::common::repo_policy_dir()).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, policy.join(p.file_name().unwrap())).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(
            dir.path().join("weerwal.toml"),
            format!("[proxy]\nlisten = \"127.0.0.1:{port}\"\nconnect_ports = [443, {origin_port}]\n{extra}\n"),
        )
        .unwrap();
        let bin = env!("CARGO_BIN_EXE_weerwal");
        let mut cmd = match nofile {
            // The shell lowers its own limit, then becomes weerwal.
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" serve"), bin]);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.arg("serve");
                c
            }
        };
        let mut child = cmd
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
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
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "serve did not start: {seen:?}");
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if line.contains("weerwal proxy running") {
                    break;
                }
                seen.push(line);
            }
        }
        Serve { _dir: dir, child, addr: format!("127.0.0.1:{port}").parse().unwrap() }
    }

    /// How many pipe ends the process holds.
    fn pipes(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("pipe:"))
            .count()
    }

    /// Waits (up to 10 s) until the process holds `n` pipe ends.
    async fn wait_pipes(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pipes() != n {
            assert!(Instant::now() < deadline, "the proxy holds {} pipe ends, not {n}", self.pipes());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An origin that echoes what it reads; at the client's end of sending it
/// answers `bye` and closes.
async fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(b"bye").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `CONNECT origin` with `early` in the same write; returns the
/// stream after the `200` and whatever came after its head.
async fn connect_with(proxy: SocketAddr, origin: SocketAddr, early: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut req = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").into_bytes();
    req.extend_from_slice(early);
    s.write_all(&req).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "proxy closed before answering: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (s, got[end..].to_vec())
}

/// Reads until `want` bytes are in `got` (10 s at most).
async fn read_to(s: &mut TcpStream, got: &mut Vec<u8>, want: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < want {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "tunnel closed after {} of {want} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_tunnel_is_copied_in_the_kernel_with_early_bytes_a_large_transfer_and_a_half_close() {
    let origin = echo_origin().await;
    let serve = Serve::start(origin.port(), "", None);
    let before = serve.pipes();

    // Bytes sent together with the CONNECT (hyper has already read them)
    // are the first the origin sees. Not TLS, not HTTP: tunnelled as is.
    let hello = b"SSH-2.0-weerwal-test\r\n";
    let (mut s, mut got) = connect_with(serve.addr, origin, hello).await;
    read_to(&mut s, &mut got, hello.len()).await;
    assert_eq!(&got[..], hello);
    serve.wait_pipes(before + 4).await;

    // 16 MiB both ways at once, echoed back intact.
    let data = crate::common::pattern(16 * 1024 * 1024 + 7);
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        // Half close: the origin sees the end, answers, and closes.
        w.shutdown().await.unwrap();
        w
    });
    let mut echoed = Vec::with_capacity(data.len() + 3);
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut echoed)).await.unwrap().unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(echoed.len(), data.len() + 3, "echo and bye");
    assert!(echoed[..data.len()] == data[..], "payload intact");
    assert_eq!(&echoed[data.len()..], b"bye", "the origin's answer after the client's half close");
    // Both directions ended cleanly: the pipes are kept, empty, in the
    // pool (closed, they would be gone from /proc/PID/fd), for the next
    // tunnel to use rather than new ones.
    assert_eq!(serve.pipes(), before + 4, "the ended tunnel's pipes are pooled, not closed");
    let (mut s2, mut got2) = connect_with(serve.addr, origin, b"SSH-2.0-again\r\n").await;
    read_to(&mut s2, &mut got2, 15).await;
    assert_eq!(&got2[..], b"SSH-2.0-again\r\n");
    assert_eq!(serve.pipes(), before + 4, "the second tunnel used the pooled pipes");
}

#[tokio::test]
async fn quiet_kernel_copied_tunnels_hold_no_pipes_and_idle_out() {
    let origin = echo_origin().await;
    let serve = Serve::start(origin.port(), "tunnel_idle_timeout = \"2s\"", None);
    let before = serve.pipes();
    // Six tunnels open at once, each moving bytes in turn: a quiet tunnel
    // gives its pipes back, so they share the pooled pairs (one, unless a
    // tunnel asks before the last one has given its pair back: a second)
    // instead of holding two pipes each (24 pipe ends).
    let mut open = Vec::new();
    for round in 0..2 {
        for i in 0..6 {
            let hello = format!("SSH-2.0-quiet-{i}\r\n");
            if round == 0 {
                let (s, mut got) = connect_with(serve.addr, origin, hello.as_bytes()).await;
                open.push(s);
                read_to(open.last_mut().unwrap(), &mut got, hello.len()).await;
                assert_eq!(got, hello.as_bytes());
            } else {
                let s = &mut open[i];
                s.write_all(hello.as_bytes()).await.unwrap();
                let mut got = Vec::new();
                read_to(s, &mut got, hello.len()).await;
                assert_eq!(got, hello.as_bytes());
            }
            let pipes = serve.pipes();
            assert!(pipes <= before + 8, "{} pipe ends for {} open tunnels", pipes - before, open.len());
        }
    }
    // Then quiet: every tunnel is closed by the idle timeout.
    let quiet = Instant::now();
    for mut s in open {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut rest)).await.unwrap().ok();
        assert!(rest.is_empty(), "{rest:?}");
    }
    assert!(quiet.elapsed() >= Duration::from_millis(1800), "closed before the idle timeout: {:?}", quiet.elapsed());
    let pipes = serve.pipes();
    assert!((before + 4..=before + 8).contains(&pipes), "the pairs stay pooled: {} pipe ends", pipes - before);
}

#[tokio::test]
async fn without_descriptors_to_spare_a_tunnel_is_copied_through_user_space_and_the_cap_holds() {
    let origin = echo_origin().await;
    // 300 descriptors: 128 kept in reserve, 86 pairs for connections and pipes.
    let serve = Serve::start(origin.port(), "", Some(300));
    let before = serve.pipes();
    // 85 connections take 85 pairs: each sends half a request head and
    // waits (within the header timeout). The 87th connection's refusal
    // below shows they were all admitted and still held.
    let mut held = Vec::new();
    for _ in 0..85 {
        let mut c = TcpStream::connect(serve.addr).await.unwrap();
        c.write_all(b"GET http://aliexpress.com/ HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    // The 86th pair is the tunnel's own: no two more for pipes.
    let (mut s, mut got) = connect_with(serve.addr, origin, b"SSH-2.0-user-space\r\n").await;
    read_to(&mut s, &mut got, 20).await;
    let data = crate::common::pattern(1024 * 1024);
    s.write_all(&data).await.unwrap();
    let mut echoed = Vec::new();
    read_to(&mut s, &mut echoed, data.len()).await;
    assert!(echoed == data, "payload intact through user space");
    assert_eq!(serve.pipes(), before, "no pipes for a tunnel without descriptors to spare");
    // And no 87th connection: refused, not left to run out of descriptors.
    let raw = crate::common::raw_exchange(
        serve.addr,
        b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(crate::common::status_of(&raw), 503, "{raw}");
    drop(held);
}
