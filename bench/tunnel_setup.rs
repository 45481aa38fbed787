//! Tunnel set-up load tool for `bench/load.sh` (issue 21): each worker, in a
//! loop, opens a new TCP connection, sends `CONNECT origin` to the proxy
//! (none for the direct baseline), does a full TLS handshake with the
//! origin through the tunnel (no session resumption: every tunnel is a new
//! site to the proxy), sends one `GET`, reads the whole answer and closes.
//! It prints one JSON line: tunnels completed, errors, tunnels/s and the
//! p50/p99 time of a whole cycle.
//!
//! A binary that only `--features bench-tools` builds, so the default build
//! and test build never compile it; `bench/load.sh` builds it with
//! `cargo build --release --features bench-tools --bin tunnel_setup`.
//!
//! ```text
//! tunnel_setup --ca CA.pem --origin 127.0.0.1:8443 [--proxy 127.0.0.1:3128]
//!              [--name localhost] [--path /1k] [--conns 32] [--secs 10]
//! ```
//!
//! Two more modes measure many open tunnels (issue 21, "many tunnels"):
//!
//! ```text
//! tunnel_setup echo 127.0.0.1:7000
//! tunnel_setup hold --proxy 127.0.0.1:3128 --origin 127.0.0.1:7000
//!              --tunnels 5000 --every-ms 2000 --secs 20 --ready FILE
//! ```
//!
//! `echo` is a loopback origin that sends every byte back. `hold` opens
//! `--tunnels` CONNECT tunnels to it (100 set-ups at a time), each starting
//! with a real TLS ClientHello (SNI `localhost`) as a browser's would, so
//! the proxy decides and splices them as it does HTTPS; then every
//! tunnel sends 16 bytes every `--every-ms` (each tunnel at its own phase)
//! and reads them back, for `--secs`; it creates the `--ready` file once
//! all tunnels are open, so the caller can sample the proxy's memory and
//! CPU while they trickle. It prints one JSON line: tunnels opened, failed
//! set-ups, echoes completed and failed, and whether all stayed open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    ca: String,
    origin: SocketAddr,
    proxy: Option<SocketAddr>,
    name: String,
    path: String,
    conns: usize,
    secs: u64,
}

fn parse() -> Result<Option<Args>, String> {
    let mut it = std::env::args().skip(1);
    let (mut ca, mut origin, mut proxy) = (None, None, None);
    let (mut name, mut path, mut conns, mut secs) = ("localhost".to_string(), "/1k".to_string(), 32, 10);
    let mut any = false;
    while let Some(flag) = it.next() {
        any = true;
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let addr = |v: &str| v.parse::<SocketAddr>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--ca" => ca = Some(value),
            "--origin" => origin = Some(addr(&value)?),
            "--proxy" => proxy = Some(addr(&value)?),
            "--name" => name = value,
            "--path" => path = value,
            "--conns" => conns = value.parse().map_err(|e| format!("--conns {value}: {e}"))?,
            "--secs" => secs = value.parse().map_err(|e| format!("--secs {value}: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(Args {
        ca: ca.ok_or("--ca is required")?,
        origin: origin.ok_or("--origin is required")?,
        proxy,
        name,
        path,
        conns,
        secs,
    }))
}

/// A TCP connection to `proxy` with a CONNECT tunnel to `origin` open on it.
async fn connect_through(proxy: SocketAddr, origin: SocketAddr) -> Result<TcpStream, String> {
    let mut tcp = TcpStream::connect(proxy).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let connect = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.map_err(|e| format!("CONNECT: {e}"))?;
    // Read the answer's head byte by byte: nothing past it may be consumed.
    let mut head = Vec::with_capacity(128);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await.map_err(|e| format!("CONNECT answer: {e}"))? == 0 || head.len() > 4096 {
            return Err(format!("CONNECT answer: {:?}", String::from_utf8_lossy(&head)));
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(format!("CONNECT refused: {:?}", String::from_utf8_lossy(&head)));
    }
    Ok(tcp)
}

/// One whole cycle: connect, CONNECT, TLS handshake, GET, read to the end.
async fn one(args: &Args, tls: &tokio_rustls::TlsConnector, request: &[u8]) -> Result<(), String> {
    let tcp = match args.proxy {
        Some(proxy) => connect_through(proxy, args.origin).await?,
        None => TcpStream::connect(args.origin).await.map_err(|e| format!("connect: {e}"))?,
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(args.name.clone()).map_err(|e| e.to_string())?;
    let mut s = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    s.write_all(request).await.map_err(|e| format!("GET: {e}"))?;
    let mut answer = Vec::with_capacity(2048);
    // A server may close without close_notify; what was read counts.
    let _ = s.read_to_end(&mut answer).await;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(format!("GET answer: {:?}", String::from_utf8_lossy(&answer[..answer.len().min(200)])));
    }
    Ok(())
}

fn main() {
    let mode: Vec<String> = std::env::args().skip(1).take(1).collect();
    match mode.first().map(String::as_str) {
        Some("echo") => return echo_main(),
        Some("hold") => return hold_main(),
        _ => {}
    }
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("tunnel_setup: a load tool run by bench/load.sh; see the header of bench/tunnel_setup.rs");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("tunnel_setup: {e}");
            std::process::exit(2);
        }
    };
    let pem = std::fs::read(&args.ca).unwrap_or_else(|e| {
        eprintln!("tunnel_setup: {}: {e}", args.ca);
        std::process::exit(2)
    });
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every tunnel a full handshake, as to a site not seen before.
    let mut config = config;
    config.resumption = rustls::client::Resumption::disabled();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", args.path, args.name).into_bytes();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let args = Arc::new(args);
    let (done, errors, mut lat, secs) = rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        for _ in 0..args.conns {
            let (args, tls, request, stop) = (Arc::clone(&args), tls.clone(), request.clone(), Arc::clone(&stop));
            tasks.spawn(async move {
                let (mut lat, mut errors, mut first_error) = (Vec::new(), 0u64, None);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(10), one(&args, &tls, &request)).await {
                        Ok(Ok(())) => lat.push(t0.elapsed().as_micros() as u32),
                        Ok(Err(e)) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                        Err(_) => {
                            errors += 1;
                            first_error.get_or_insert("timed out".to_string());
                        }
                    }
                }
                (lat, errors, first_error)
            });
        }
        tokio::time::sleep(Duration::from_secs(args.secs)).await;
        stop.store(true, Ordering::Relaxed);
        let (mut all, mut errors) = (Vec::new(), 0);
        while let Some(Ok((lat, e, first))) = tasks.join_next().await {
            all.extend(lat);
            errors += e;
            if let Some(first) = first {
                eprintln!("tunnel_setup: {e} error(s), first: {first}");
            }
        }
        // Cycles in flight at the stop finish and count: so does their time.
        (all.len(), errors, all, started.elapsed().as_secs_f64())
    });
    lat.sort_unstable();
    let pct = |p: f64| if lat.is_empty() { 0 } else { lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] };
    println!(
        "{{\"tunnels\":{done},\"errors\":{errors},\"secs\":{secs:.3},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{}}}",
        done as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}

fn fail(msg: String) -> ! {
    eprintln!("tunnel_setup: {msg}");
    std::process::exit(2)
}

/// `echo ADDR`: sends back every byte received, on every connection.
fn echo_main() {
    let addr: SocketAddr = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail("echo needs a listen address (127.0.0.1:7000)".into()));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| fail(format!("bind {addr}: {e}")));
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

struct Hold {
    proxy: SocketAddr,
    origin: SocketAddr,
    tunnels: usize,
    every: Duration,
    secs: u64,
    ready: Option<String>,
}

fn parse_hold() -> Result<Hold, String> {
    let mut it = std::env::args().skip(2);
    let (mut proxy, mut origin, mut ready) = (None, None, None);
    let (mut tunnels, mut every_ms, mut secs) = (5000usize, 2000u64, 20u64);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let addr = |v: &str| v.parse::<SocketAddr>().map_err(|e| format!("{flag} {v}: {e}"));
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--proxy" => proxy = Some(addr(&value)?),
            "--origin" => origin = Some(addr(&value)?),
            "--tunnels" => tunnels = num(&value)? as usize,
            "--every-ms" => every_ms = num(&value)?.max(1),
            "--secs" => secs = num(&value)?,
            "--ready" => ready = Some(value),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Hold {
        proxy: proxy.ok_or("--proxy is required")?,
        origin: origin.ok_or("--origin is required")?,
        tunnels,
        every: Duration::from_millis(every_ms),
        secs,
        ready,
    })
}

/// A browser-like TLS ClientHello for `localhost` (rustls'), as bytes.
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("ClientHello");
    }
    hello
}

/// Opens one tunnel through the proxy and checks it carries bytes.
async fn open_tunnel(h: &Hold, hello: &[u8]) -> Result<TcpStream, String> {
    let mut tcp = connect_through(h.proxy, h.origin).await?;
    // The proxy reads the ClientHello, decides on its SNI, replays it to the
    // origin and splices; the echo origin sends it back.
    tcp.write_all(hello).await.map_err(|e| format!("ClientHello: {e}"))?;
    let mut back = vec![0u8; hello.len()];
    tcp.read_exact(&mut back).await.map_err(|e| format!("ClientHello echo: {e}"))?;
    if back != hello {
        return Err("ClientHello echo differs".into());
    }
    echo_once(&mut tcp).await?;
    Ok(tcp)
}

/// Sends 16 bytes (inside the tunnel, after the ClientHello, the proxy
/// carries them as they are) and reads them back.
async fn echo_once(tcp: &mut TcpStream) -> Result<(), String> {
    const PING: &[u8; 16] = b"\x00weerwal-trickle";
    tcp.write_all(PING).await.map_err(|e| format!("send: {e}"))?;
    let mut back = [0u8; 16];
    tcp.read_exact(&mut back).await.map_err(|e| format!("echo: {e}"))?;
    if &back != PING {
        return Err("echo differs".into());
    }
    Ok(())
}

/// `hold`: many open tunnels, each moving a trickle (see the file's header).
fn hold_main() {
    let h = Arc::new(parse_hold().unwrap_or_else(|e| fail(e)));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        // Set-ups 100 at a time, as a browser-heavy office would open them.
        let gate = Arc::new(tokio::sync::Semaphore::new(100));
        let hello: Arc<[u8]> = client_hello().into();
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..h.tunnels {
            let (h, gate, hello) = (Arc::clone(&h), Arc::clone(&gate), Arc::clone(&hello));
            opening.spawn(async move {
                let _turn = gate.acquire_owned().await;
                tokio::time::timeout(Duration::from_secs(30), open_tunnel(&h, &hello))
                    .await
                    .unwrap_or(Err("timed out".into()))
            });
        }
        let (mut open, mut failed, mut first_error) = (Vec::new(), 0usize, None);
        while let Some(r) = opening.join_next().await {
            match r {
                Ok(Ok(s)) => open.push(s),
                Ok(Err(e)) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        if let Some(e) = &first_error {
            eprintln!("tunnel_setup hold: {failed} set-up(s) failed, first: {e}");
        }
        let opened = open.len();
        if let Some(ready) = &h.ready {
            let _ = std::fs::write(ready, format!("{opened}\n"));
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(h.secs);
        let mut trickling = tokio::task::JoinSet::new();
        for (i, mut s) in open.into_iter().enumerate() {
            let every = h.every;
            // Spread the tunnels' phases over the interval.
            let phase = every.mul_f64(i as f64 / opened.max(1) as f64);
            trickling.spawn(async move {
                let (mut ok, mut bad) = (0u64, 0u64);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = tick.tick() => {
                            match tokio::time::timeout(Duration::from_secs(10), echo_once(&mut s)).await {
                                Ok(Ok(())) => ok += 1,
                                _ => { bad += 1; break; }
                            }
                        }
                    }
                }
                (ok, bad)
            });
        }
        let (mut echoes, mut echo_errors) = (0u64, 0u64);
        while let Some(Ok((ok, bad))) = trickling.join_next().await {
            echoes += ok;
            echo_errors += bad;
        }
        println!(
            "{{\"tunnels\":{opened},\"failed\":{failed},\"echoes\":{echoes},\"echo_errors\":{echo_errors},\"every_ms\":{}}}",
            h.every.as_millis()
        );
    });
}
