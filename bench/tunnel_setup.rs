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

/// One whole cycle: connect, CONNECT, TLS handshake, GET, read to the end.
async fn one(args: &Args, tls: &tokio_rustls::TlsConnector, request: &[u8]) -> Result<(), String> {
    let mut tcp = TcpStream::connect(args.proxy.unwrap_or(args.origin)).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if args.proxy.is_some() {
        let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", args.origin);
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
    }
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
