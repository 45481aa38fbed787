//! The bypass table (issue 9): ways people try to get around a domain block,
//! each one a row with the raw bytes sent (or a scripted client action) and
//! the outcome it must have, each run against the real proxy over loopback.
//!
//! Outcomes:
//! - **Blocked**: the `403` block page (when the client can still be
//!   answered) and a `blocked` audit record for the app;
//! - **Refused**: a `4xx` that is not the block page; in a CONNECT tunnel,
//!   whose `200` has already been sent, the tunnel is closed instead. Nothing
//!   is forwarded or tunnelled;
//! - **Denied**: Blocked or Refused, where either is a correct answer;
//! - **Local**: the proxy answers itself (status page, 404, 405): a request in
//!   origin-form is for the proxy and is never forwarded anywhere;
//! - **Forwarded** / **Tunnelled**: control rows that show *what* a
//!   harmless-looking trick really reaches (the loopback origin, never a
//!   banned site).
//!
//! Every row gets its own loopback origin, and every row checks what reached
//! that origin: nothing at all for Blocked, Refused, Denied and Local rows,
//! and never a request naming a banned host. Rows whose nominal target is a
//! banned name would, if they leaked, make the proxy try the real site (no
//! network here: a 502), which fails the row as well.
//!
//! The test prints the whole table and fails listing every row that did not
//! behave.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::{Origin, Seen, TestProxy};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Names that must never appear in what an origin sees.
const BANNED_MARKERS: &[&str] = &["aliexpress", "tiktok", "vk.com", "wechat", "weixin"];

#[derive(Debug, Clone)]
enum Expect {
    Blocked(&'static str),
    Refused,
    /// The connection is closed without an answer; nothing is forwarded.
    Closed,
    Denied(&'static str),
    Local,
    /// Control: reaches the origin, which sees exactly this `Host`.
    Forwarded(String),
    /// Control: a tunnel to the origin is opened; nothing is blocked.
    Tunnelled,
    /// Smuggling: the origin sees only the outer request (with this path and
    /// an empty body); the hidden one is blocked or dropped.
    OuterOnly(&'static str),
}

impl Expect {
    fn label(&self) -> String {
        match self {
            Expect::Blocked(app) => format!("Blocked ({app})"),
            Expect::Refused => "Refused".into(),
            Expect::Closed => "Refused (connection closed)".into(),
            Expect::Denied(app) => format!("Blocked ({app}) or Refused"),
            Expect::Local => "Local (never forwarded)".into(),
            Expect::Forwarded(h) => format!("control: Forwarded, Host {h}"),
            Expect::Tunnelled => "control: Tunnelled, not blocked".into(),
            Expect::OuterOnly(p) => format!("outer {p} only; hidden request never forwarded"),
        }
    }
}

/// What the client does after a CONNECT was answered `200`.
enum Inner {
    /// These bytes, then read the answers.
    Raw(Vec<u8>),
    /// A real TLS client (rustls, trusting the weerwal CA) with this SNI,
    /// then `GET /` when the handshake succeeds.
    Tls(String),
    /// Hand-made TLS bytes (any SNI, any record layout); `trickle` sends them
    /// one byte at a time.
    Hello { bytes: Vec<u8>, trickle: bool },
    /// These bytes first, then a real TLS client with this SNI that trusts
    /// the TLS origin's certificate, then `GET /`.
    TlsAfter { prefix: Vec<u8>, sni: String },
    /// Nothing at all, until the proxy gives up waiting for a ClientHello.
    Silence,
}

enum Action {
    /// Bytes on a fresh connection to the proxy.
    Raw(Vec<u8>),
    /// A CONNECT request (raw bytes), then `inner` if it is answered `200`.
    Connect(Vec<u8>, Inner),
}

struct Plan {
    action: Action,
    expect: Expect,
    /// How many responses to wait for (pipelined requests).
    responses: usize,
    /// Requests the origin may see before the attempt (keep-alive rows).
    origin_ok: usize,
    /// The row aims at the shared TLS origin instead of its own plain one.
    tls_origin: bool,
}

struct Case {
    name: &'static str,
    plan: fn(SocketAddr) -> Plan,
}

fn plan(action: Action, expect: Expect) -> Plan {
    Plan { action, expect, responses: 1, origin_ok: 0, tls_origin: false }
}

fn raw(text: impl Into<Vec<u8>>, expect: Expect) -> Plan {
    plan(Action::Raw(text.into()), expect)
}

/// A `GET` of `target` with the given header lines (each ending in CRLF).
fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\n{headers}\r\n").into_bytes()
}

fn connect_req(authority: &str) -> Vec<u8> {
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes()
}

fn tunnel(authority: &str, inner: Inner, expect: Expect) -> Plan {
    plan(Action::Connect(connect_req(authority), inner), expect)
}

fn hello(sni: &[u8]) -> Inner {
    Inner::Hello { bytes: client_hello_records(sni, None), trickle: false }
}

const ALI: Expect = Expect::Blocked("AliExpress");

/// The table. Each row gets the address of its own origin.
fn cases() -> Vec<Case> {
    vec![
        // --- Spelling of the host name -------------------------------------------------
        Case { name: "upper case host", plan: |_| raw(get("http://ALIEXPRESS.COM/", "Host: ALIEXPRESS.COM\r\n"), ALI) },
        Case {
            name: "mixed case subdomain",
            plan: |_| raw(get("http://Nl.AliExpress.Com/", "Host: nl.aliexpress.com\r\n"), ALI),
        },
        Case {
            name: "upper case scheme and host",
            plan: |_| raw(get("HTTP://ALIEXPRESS.COM/", "Host: aliexpress.com\r\n"), ALI),
        },
        Case { name: "one trailing dot", plan: |_| raw(get("http://aliexpress.com./", "Host: x\r\n"), ALI) },
        Case {
            name: "two trailing dots",
            plan: |_| raw(get("http://aliexpress.com../", "Host: x\r\n"), Expect::Refused),
        },
        Case { name: "leading dot", plan: |_| raw(get("http://.aliexpress.com/", "Host: x\r\n"), Expect::Refused) },
        Case { name: "empty label inside", plan: |_| raw(get("http://m..aliexpress.com/", ""), Expect::Refused) },
        Case { name: "underscore subdomain", plan: |_| raw(get("http://_x.aliexpress.com/", ""), ALI) },
        Case {
            name: "deep subdomain chain (a.a.a....aliexpress.com, 214 chars)",
            plan: |_| raw(get(&format!("http://{}aliexpress.com/", "a.".repeat(100)), ""), ALI),
        },
        Case {
            name: "subdomain chain longer than 253 characters",
            plan: |_| raw(get(&format!("http://{}aliexpress.com/", "a.".repeat(125)), ""), Expect::Refused),
        },
        Case {
            name: "label longer than 63 characters",
            plan: |_| raw(get(&format!("http://{}.aliexpress.com/", "a".repeat(64)), ""), Expect::Refused),
        },
        // --- IDN --------------------------------------------------------------------------
        Case {
            name: "Unicode (fullwidth) name as raw UTF-8 in the request target",
            plan: |_| raw(get("http://ａｌｉｅｘｐｒｅｓｓ.com/", ""), Expect::Refused),
        },
        Case {
            name: "punycode of an all-ASCII label (xn--aliexpress-)",
            plan: |_| raw(get("http://xn--aliexpress-.com/", ""), Expect::Refused),
        },
        Case {
            name: "punycode with upper-case XN-- of an all-ASCII label",
            plan: |_| raw(get("http://XN--ALIEXPRESS-.COM/", ""), Expect::Refused),
        },
        Case {
            name: "invalid punycode label",
            plan: |_| raw(get("http://xn--ab-.aliexpress.com/", ""), Expect::Refused),
        },
        // --- userinfo and URL confusion ------------------------------------------------------
        Case {
            name: "userinfo user@aliexpress.com",
            plan: |_| raw(get("http://user@aliexpress.com/", ""), Expect::Refused),
        },
        Case {
            name: "userinfo user:pass@aliexpress.com",
            plan: |_| raw(get("http://user:pass@aliexpress.com/", ""), Expect::Refused),
        },
        Case {
            name: "aliexpress.com@<origin> (banned name as userinfo)",
            plan: |o| raw(get(&format!("http://aliexpress.com@{o}/"), ""), Expect::Refused),
        },
        Case {
            name: "<origin>@aliexpress.com (origin as userinfo)",
            plan: |o| raw(get(&format!("http://{o}@aliexpress.com/"), ""), Expect::Refused),
        },
        Case {
            name: "backslash: aliexpress.com\\@<origin>",
            plan: |o| raw(get(&format!("http://aliexpress.com\\@{o}/"), ""), Expect::Refused),
        },
        Case {
            name: "fragment: aliexpress.com#@<origin> (the authority ends at #)",
            plan: |o| raw(get(&format!("http://aliexpress.com#@{o}/"), ""), ALI),
        },
        Case {
            name: "percent-encoded letter ali%65xpress.com",
            plan: |_| raw(get("http://ali%65xpress.com/", ""), Expect::Refused),
        },
        Case {
            name: "percent-encoded dot aliexpress%2Ecom",
            plan: |_| raw(get("http://aliexpress%2Ecom/", ""), Expect::Refused),
        },
        Case {
            name: "percent-encoded NUL aliexpress.com%00.<origin>",
            plan: |o| raw(get(&format!("http://aliexpress.com%00.{}/", o.ip()), ""), Expect::Refused),
        },
        Case {
            name: "space inside the authority",
            plan: |_| raw(b"GET http://aliexpress .com/ HTTP/1.1\r\n\r\n".to_vec(), Expect::Refused),
        },
        Case {
            name: "tab inside the authority",
            plan: |_| raw(b"GET http://aliexpress\t.com/ HTTP/1.1\r\n\r\n".to_vec(), Expect::Refused),
        },
        Case {
            name: "double space before the target",
            plan: |_| raw(b"GET  http://aliexpress.com/ HTTP/1.1\r\n\r\n".to_vec(), Expect::Refused),
        },
        // --- request target vs Host ------------------------------------------------------
        Case {
            name: "target banned, Host is the origin",
            plan: |o| raw(get("http://aliexpress.com/", &format!("Host: {o}\r\n")), ALI),
        },
        Case {
            name: "target is the origin, Host banned (Host rewritten)",
            plan: |o| raw(get(&format!("http://{o}/"), "Host: aliexpress.com\r\n"), Expect::Forwarded(o.to_string())),
        },
        Case {
            name: "duplicate Host headers, target banned",
            plan: |o| raw(get("http://aliexpress.com/", &format!("Host: {o}\r\nHost: {o}\r\n")), ALI),
        },
        Case {
            name: "duplicate Host headers (origin, banned), target the origin: 400 (RFC 9112 3.2)",
            plan: |o| {
                raw(get(&format!("http://{o}/"), &format!("Host: {o}\r\nHost: aliexpress.com\r\n")), Expect::Refused)
            },
        },
        Case {
            name: "X-Forwarded-Host banned, target the origin (target decides)",
            plan: |o| {
                raw(
                    get(&format!("http://{o}/"), &format!("Host: {o}\r\nX-Forwarded-Host: aliexpress.com\r\n")),
                    Expect::Forwarded(o.to_string()),
                )
            },
        },
        Case {
            name: "X-Forwarded-Host the origin, target banned",
            plan: |o| {
                raw(get("http://aliexpress.com/", &format!("Host: aliexpress.com\r\nX-Forwarded-Host: {o}\r\n")), ALI)
            },
        },
        Case {
            name: "HTTP/1.0 absolute-form without Host",
            plan: |_| raw(b"GET http://aliexpress.com/ HTTP/1.0\r\n\r\n".to_vec(), ALI),
        },
        Case {
            name: "HTTP/1.0 absolute-form with Host",
            plan: |_| raw(b"GET http://aliexpress.com/ HTTP/1.0\r\nHost: aliexpress.com\r\n\r\n".to_vec(), ALI),
        },
        Case {
            name: "HTTP/1.1 absolute-form without Host",
            plan: |_| raw(b"GET http://aliexpress.com/ HTTP/1.1\r\n\r\n".to_vec(), ALI),
        },
        Case {
            name: "HTTP/1.0 origin-form without Host",
            plan: |_| raw(b"GET / HTTP/1.0\r\n\r\n".to_vec(), Expect::Local),
        },
        Case {
            name: "origin-form with Host: aliexpress.com",
            plan: |_| raw(get("/", "Host: aliexpress.com\r\n"), Expect::Local),
        },
        Case {
            name: "origin-form with Host: <origin>",
            plan: |o| raw(get("/x", &format!("Host: {o}\r\n")), Expect::Local),
        },
        Case {
            name: "GET //aliexpress.com/ (network-path reference)",
            plan: |_| raw(get("//aliexpress.com/", "Host: aliexpress.com\r\n"), Expect::Local),
        },
        Case {
            name: "OPTIONS * with Host: aliexpress.com",
            plan: |_| raw(b"OPTIONS * HTTP/1.1\r\nHost: aliexpress.com\r\n\r\n".to_vec(), Expect::Local),
        },
        Case {
            name: "origin-form, Host with tabs and spaces around aliexpress.com",
            plan: |_| raw(get("/", "Host: \t aliexpress.com \t\r\n"), Expect::Local),
        },
        Case {
            name: "authority-form target with GET (GET aliexpress.com:80)",
            plan: |_| raw(get("aliexpress.com:80", "Host: aliexpress.com\r\n"), ALI),
        },
        Case {
            name: "lower-case method connect aliexpress.com:443",
            plan: |_| raw(b"connect aliexpress.com:443 HTTP/1.1\r\nHost: aliexpress.com:443\r\n\r\n".to_vec(), ALI),
        },
        Case {
            name: "HTTP/0.9-style request line without version",
            plan: |_| raw(b"GET http://aliexpress.com/\r\n\r\n".to_vec(), Expect::Refused),
        },
        Case {
            name: "keep-alive: allowed request, then a banned one on the same connection",
            plan: |o| {
                let mut bytes = get(&format!("http://{o}/first"), &format!("Host: {o}\r\n"));
                bytes.extend(get("http://aliexpress.com/", "Host: aliexpress.com\r\n"));
                Plan { responses: 2, origin_ok: 1, ..raw(bytes, ALI) }
            },
        },
        // --- schemes and upgrades ---------------------------------------------------------
        Case {
            name: "https:// absolute URI over the plain proxy (blocked, not 'use CONNECT')",
            plan: |_| raw(get("https://aliexpress.com/", "Host: aliexpress.com\r\n"), ALI),
        },
        Case { name: "ws:// absolute URI", plan: |_| raw(get("ws://aliexpress.com/chat", ""), ALI) },
        Case { name: "ftp:// absolute URI", plan: |_| raw(get("ftp://aliexpress.com/", ""), ALI) },
        Case {
            name: "Upgrade: websocket GET to a banned host",
            plan: |_| {
                raw(
                    get(
                        "http://aliexpress.com/ws",
                        "Host: aliexpress.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
                    ),
                    ALI,
                )
            },
        },
        Case {
            name: "Upgrade: h2c GET to a banned host",
            plan: |_| {
                raw(
                    get(
                        "http://aliexpress.com/",
                        "Host: aliexpress.com\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
                    ),
                    ALI,
                )
            },
        },
        Case {
            name: "HTTP/2 prior-knowledge preface to the proxy",
            plan: |_| raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Expect::Closed),
        },
        // --- ports ------------------------------------------------------------------------
        Case {
            name: "aliexpress.com:443 in an http:// URL",
            plan: |_| raw(get("http://aliexpress.com:443/", ""), ALI),
        },
        Case { name: "aliexpress.com:8080", plan: |_| raw(get("http://aliexpress.com:8080/", ""), ALI) },
        Case { name: "port 0", plan: |_| raw(get("http://aliexpress.com:0/", ""), Expect::Refused) },
        Case { name: "port 99999", plan: |_| raw(get("http://aliexpress.com:99999/", ""), Expect::Refused) },
        Case { name: "empty port", plan: |_| raw(get("http://aliexpress.com:/", ""), Expect::Refused) },
        Case { name: "port with a sign (+80)", plan: |_| raw(get("http://aliexpress.com:+80/", ""), Expect::Refused) },
        Case { name: "two ports", plan: |_| raw(get("http://aliexpress.com:80:80/", ""), Expect::Refused) },
        // --- IP literals --------------------------------------------------------------------
        Case {
            name: "decimal IPv4 (2130706433 = 127.0.0.1)",
            plan: |o| raw(get(&format!("http://2130706433:{}/", o.port()), ""), Expect::Refused),
        },
        Case {
            name: "hex IPv4 0x7f000001",
            plan: |o| raw(get(&format!("http://0x7f000001:{}/", o.port()), ""), Expect::Refused),
        },
        Case {
            name: "octal IPv4 0177.0.0.1",
            plan: |o| raw(get(&format!("http://0177.0.0.1:{}/", o.port()), ""), Expect::Refused),
        },
        Case {
            name: "short IPv4 127.1",
            plan: |o| raw(get(&format!("http://127.1:{}/", o.port()), ""), Expect::Refused),
        },
        Case {
            name: "dotted hex IPv4 0x7f.0.0.1",
            plan: |o| raw(get(&format!("http://0x7f.0.0.1:{}/", o.port()), ""), Expect::Refused),
        },
        Case {
            name: "zero-padded IPv4 127.000.000.001",
            plan: |o| raw(get(&format!("http://127.000.000.001:{}/", o.port()), ""), Expect::Refused),
        },
        Case {
            name: "IPv4 with a trailing dot 127.0.0.1. (canonical, as browsers read it)",
            plan: |o| raw(get(&format!("http://127.0.0.1.:{}/", o.port()), ""), Expect::Forwarded(o.to_string())),
        },
        Case {
            name: "IPv4-mapped IPv6 [::ffff:127.0.0.1] with Host banned (Host rewritten)",
            plan: |o| {
                raw(
                    get(&format!("http://[::ffff:127.0.0.1]:{}/", o.port()), "Host: aliexpress.com\r\n"),
                    Expect::Forwarded(format!("[::ffff:127.0.0.1]:{}", o.port())),
                )
            },
        },
        Case {
            name: "IPv6 brackets around a name",
            plan: |_| raw(get("http://[aliexpress.com]/", ""), Expect::Refused),
        },
        Case { name: "IPv6 with a zone id", plan: |_| raw(get("http://[fe80::1%25lo]/", ""), Expect::Refused) },
        Case { name: "IPv6 unclosed bracket", plan: |_| raw(get("http://[::1/", ""), Expect::Refused) },
        // --- header tricks -------------------------------------------------------------------
        Case {
            name: "obs-fold continuation line in a request to a banned host",
            plan: |_| raw(get("http://aliexpress.com/", "Host: aliexpress.com\r\nX-A: a\r\n b\r\n"), Expect::Refused),
        },
        Case {
            name: "obs-fold hiding the WeChat signature (request to the origin)",
            plan: |o| {
                raw(
                    get(
                        &format!("http://{o}/"),
                        &format!("Host: {o}\r\nUser-Agent: Mozilla/5.0\r\n MicroMessenger/8.0.40\r\n"),
                    ),
                    Expect::Refused,
                )
            },
        },
        Case {
            name: "space before the colon of Host",
            plan: |_| raw(get("http://aliexpress.com/", "Host : aliexpress.com\r\n"), Expect::Refused),
        },
        Case {
            name: "app signature (MicroMessenger) in User-Agent, to an allowed origin",
            plan: |o| {
                raw(
                    get(
                        &format!("http://{o}/"),
                        &format!(
                            "Host: {o}\r\nUser-Agent: Mozilla/5.0 (Linux; Android 13) MicroMessenger/8.0.40.2420\r\n"
                        ),
                    ),
                    Expect::Blocked("WeChat"),
                )
            },
        },
        Case {
            name: "app signature in lower case (micromessenger)",
            plan: |o| {
                raw(
                    get(&format!("http://{o}/"), &format!("Host: {o}\r\nUser-Agent: mozilla micromessenger/8\r\n")),
                    Expect::Blocked("WeChat"),
                )
            },
        },
        // --- request smuggling -------------------------------------------------------------
        Case {
            name: "Transfer-Encoding + Content-Length to a banned host",
            plan: |_| {
                raw(
                    b"POST http://aliexpress.com/ HTTP/1.1\r\nHost: aliexpress.com\r\nContent-Length: 5\r\n\
                      Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                        .to_vec(),
                    ALI,
                )
            },
        },
        Case {
            name: "CL.TE: banned request hidden after an allowed chunked body",
            plan: |o| {
                let hidden = "GET http://aliexpress.com/ HTTP/1.1\r\nHost: aliexpress.com\r\n\r\n";
                let body = format!("0\r\n\r\n{hidden}");
                let bytes = format!(
                    "POST http://{o}/outer HTTP/1.1\r\nHost: {o}\r\nContent-Length: {}\r\n\
                     Transfer-Encoding: chunked\r\n\r\n{body}",
                    body.len()
                );
                Plan { responses: 2, origin_ok: 1, ..raw(bytes, Expect::OuterOnly("/outer")) }
            },
        },
        Case {
            name: "obfuscated Transfer-Encoding (xchunked) to a banned host",
            plan: |_| {
                raw(
                    b"POST http://aliexpress.com/ HTTP/1.1\r\nHost: aliexpress.com\r\n\
                      Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
                        .to_vec(),
                    Expect::Refused,
                )
            },
        },
        Case {
            name: "two different Content-Length headers to the origin",
            plan: |o| {
                raw(
                    format!(
                        "POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\nContent-Length: 3\r\nContent-Length: 60\r\n\r\nabc"
                    ),
                    Expect::Refused,
                )
            },
        },
        // --- CONNECT -----------------------------------------------------------------------
        Case {
            name: "CONNECT <origin IP> with TLS SNI aliexpress.com (real TLS client)",
            plan: |o| tunnel(&o.to_string(), Inner::Tls("aliexpress.com".into()), ALI),
        },
        Case {
            name: "CONNECT <origin IP> with TLS SNI Www.AliExpress.COM (real TLS client)",
            plan: |o| tunnel(&o.to_string(), Inner::Tls("Www.AliExpress.COM".into()), ALI),
        },
        Case {
            name: "CONNECT <origin IP>, hand-made ClientHello, SNI ALIEXPRESS.COM",
            plan: |o| tunnel(&o.to_string(), hello(b"ALIEXPRESS.COM"), ALI),
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello SNI with trailing dot",
            plan: |o| tunnel(&o.to_string(), hello(b"aliexpress.com."), ALI),
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello SNI with two trailing dots",
            plan: |o| tunnel(&o.to_string(), hello(b"aliexpress.com.."), Expect::Refused),
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello SNI percent-encoded",
            plan: |o| tunnel(&o.to_string(), hello(b"ali%65xpress.com"), Expect::Refused),
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello SNI with a NUL byte",
            plan: |o| tunnel(&o.to_string(), hello(b"aliexpress.com\0.example.org"), Expect::Refused),
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello SNI in UTF-8 (fullwidth)",
            plan: |o| tunnel(&o.to_string(), hello("ａｌｉｅｘｐｒｅｓｓ.com".as_bytes()), Expect::Refused),
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello split over two TLS records",
            plan: |o| {
                let bytes = client_hello_records(b"m.aliexpress.com", Some(20));
                tunnel(&o.to_string(), Inner::Hello { bytes, trickle: false }, ALI)
            },
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello trickled one byte at a time",
            plan: |o| {
                let bytes = client_hello_records(b"aliexpress.com", None);
                tunnel(&o.to_string(), Inner::Hello { bytes, trickle: true }, ALI)
            },
        },
        Case {
            name: "CONNECT <origin IP>, ClientHello with two server_name extensions",
            plan: |o| {
                let bytes = client_hello_two_sni(b"localhost", b"aliexpress.com");
                tunnel(&o.to_string(), Inner::Hello { bytes, trickle: false }, Expect::Denied("AliExpress"))
            },
        },
        Case {
            name: "CONNECT <TLS origin IP>, real TLS client with SNI aliexpress.com",
            plan: |_| {
                let inner = Inner::TlsAfter { prefix: Vec::new(), sni: "aliexpress.com".into() };
                Plan { tls_origin: true, ..tunnel(&tls_origin().addr.to_string(), inner, ALI) }
            },
        },
        Case {
            name: "CONNECT <TLS origin IP>, TLS warning alert record, then a real TLS client with SNI aliexpress.com",
            plan: |_| {
                // An alert record (warning, user_canceled) before the
                // ClientHello: rustls and Go's crypto/tls skip warning alerts
                // before the version is negotiated (OpenSSL 3 refuses them).
                let prefix = vec![0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x5a];
                let inner = Inner::TlsAfter { prefix, sni: "aliexpress.com".into() };
                Plan { tls_origin: true, ..tunnel(&tls_origin().addr.to_string(), inner, Expect::Denied("AliExpress")) }
            },
        },
        Case {
            name: "CONNECT [::ffff:127.0.0.1]:<port> with TLS SNI aliexpress.com",
            plan: |o| tunnel(&format!("[::ffff:127.0.0.1]:{}", o.port()), Inner::Tls("aliexpress.com".into()), ALI),
        },
        Case {
            name: "CONNECT <origin IP>, punycode of a Cyrillic lookalike as SNI (not a banned name)",
            plan: |o| {
                let lookalike = idna::domain_to_ascii("\u{430}liexpress.com").unwrap();
                assert!(lookalike.starts_with("xn--"), "{lookalike}");
                tunnel(&o.to_string(), hello(lookalike.as_bytes()), Expect::Tunnelled)
            },
        },
        Case {
            name: "CONNECT AliExpress.COM.:443 (mixed case, trailing dot), plain HTTP inside",
            plan: |_| tunnel("AliExpress.COM.:443", Inner::Raw(get("/", "Host: aliexpress.com\r\n")), ALI),
        },
        Case {
            name: "CONNECT aliexpress.com:443 with an allowed SNI (localhost) inside",
            plan: |_| tunnel("aliexpress.com:443", Inner::Tls("localhost".into()), ALI),
        },
        Case {
            name: "CONNECT aliexpress.com:443, then silence (no ClientHello)",
            plan: |_| tunnel("aliexpress.com:443", Inner::Silence, ALI),
        },
        Case {
            name: "CONNECT aliexpress.com:443, plain HTTP inside the tunnel",
            plan: |_| tunnel("aliexpress.com:443", Inner::Raw(get("/", "Host: aliexpress.com\r\n")), ALI),
        },
        Case {
            name: "CONNECT aliexpress.com:443, plain HTTP inside naming the origin",
            plan: |o| tunnel("aliexpress.com:443", Inner::Raw(get("/", &format!("Host: {o}\r\n"))), ALI),
        },
        Case {
            name: "CONNECT aliexpress.com:443 over HTTP/1.0",
            plan: |_| {
                plan(
                    Action::Connect(
                        b"CONNECT aliexpress.com:443 HTTP/1.0\r\n\r\n".to_vec(),
                        Inner::Raw(get("/", "Host: aliexpress.com\r\n")),
                    ),
                    ALI,
                )
            },
        },
        Case {
            name: "CONNECT <origin> with Host: aliexpress.com:443 (authority decides)",
            plan: |o| {
                plan(
                    Action::Connect(
                        format!("CONNECT {o} HTTP/1.1\r\nHost: aliexpress.com:443\r\n\r\n").into_bytes(),
                        Inner::Raw(get("/", &format!("Host: {o}\r\n"))),
                    ),
                    Expect::Tunnelled,
                )
            },
        },
        Case {
            name: "CONNECT aliexpress.com:8443 (port not in connect_ports)",
            plan: |_| tunnel("aliexpress.com:8443", Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT aliexpress.com without a port",
            plan: |_| tunnel("aliexpress.com", Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT aliexpress.com:0",
            plan: |_| tunnel("aliexpress.com:0", Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT aliexpress.com:99999",
            plan: |_| tunnel("aliexpress.com:99999", Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT ali%65xpress.com:443",
            plan: |_| tunnel("ali%65xpress.com:443", Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT user@aliexpress.com:443",
            plan: |_| tunnel("user@aliexpress.com:443", Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT aliexpress.com:443:443",
            plan: |_| tunnel("aliexpress.com:443:443", Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT 2130706433:<port> (decimal IPv4)",
            plan: |o| tunnel(&format!("2130706433:{}", o.port()), Inner::Silence, Expect::Refused),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside with Host: aliexpress.com",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("/", "Host: aliexpress.com\r\n")), ALI),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, absolute target aliexpress.com, Host the origin",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("http://aliexpress.com/", &format!("Host: {o}\r\n"))), ALI),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, Host ALIEXPRESS.COM. with tabs",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("/", "Host:\tALIEXPRESS.COM.\t\r\n")), ALI),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, Host in Unicode (fullwidth)",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("/", "Host: ａｌｉｅｘｐｒｅｓｓ.com\r\n")), ALI),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, Host v\u{212a}.com (Kelvin sign K)",
            plan: |o| {
                tunnel(&o.to_string(), Inner::Raw(get("/", "Host: v\u{212a}.com\r\n")), Expect::Blocked("VKontakte"))
            },
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, a leading space before the request line, Host aliexpress.com",
            plan: |o| {
                tunnel(
                    &o.to_string(),
                    Inner::Raw(b" GET / HTTP/1.1\r\nHost: aliexpress.com\r\n\r\n".to_vec()),
                    Expect::Denied("AliExpress"),
                )
            },
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, tabs in the request line, Host aliexpress.com",
            plan: |o| {
                tunnel(
                    &o.to_string(),
                    Inner::Raw(b"GET\t/\tHTTP/1.1\r\nHost: aliexpress.com\r\n\r\n".to_vec()),
                    Expect::Denied("AliExpress"),
                )
            },
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside naming another allowed host (forwarded under another name)",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("/", "Host: example.org\r\n")), Expect::Refused),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, Host ali%65xpress.com",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("/", "Host: ali%65xpress.com\r\n")), Expect::Refused),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, obs-fold Host",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("/", "Host:\r\n aliexpress.com\r\n")), Expect::Refused),
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside, duplicate Host (origin, then aliexpress.com)",
            plan: |o| {
                let inner = get("/", &format!("Host: {o}\r\nHost: aliexpress.com\r\n"));
                tunnel(&o.to_string(), Inner::Raw(inner), Expect::Denied("AliExpress"))
            },
        },
        Case {
            name: "CONNECT <origin> with the WeChat User-Agent, plain HTTP inside",
            plan: |o| {
                plan(
                    Action::Connect(
                        format!("CONNECT {o} HTTP/1.1\r\nHost: {o}\r\nUser-Agent: MicroMessenger/8.0\r\n\r\n")
                            .into_bytes(),
                        Inner::Raw(get("/", &format!("Host: {o}\r\n"))),
                    ),
                    Expect::Blocked("WeChat"),
                )
            },
        },
        Case {
            name: "CONNECT <origin>, plain HTTP inside with an allowed Host (control)",
            plan: |o| tunnel(&o.to_string(), Inner::Raw(get("/inside", &format!("Host: {o}\r\n"))), Expect::Tunnelled),
        },
    ]
}

// ----------------------------------------------------------------------------------------
// A TLS origin that holds a certificate for aliexpress.com: it stands in for
// the banned site, so a row can show whether a TLS session with that name
// could be completed through the proxy.

struct TlsOrigin {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

static TLS_ORIGIN: OnceLock<TlsOrigin> = OnceLock::new();

fn tls_origin() -> &'static TlsOrigin {
    TLS_ORIGIN.get().expect("the TLS origin is started first")
}

async fn start_tls_origin() -> TlsOrigin {
    let cert = rcgen::generate_simple_self_signed(vec!["aliexpress.com".to_string()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, c) = (Arc::clone(&seen), Arc::clone(&connections));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let (acceptor, s) = (acceptor.clone(), Arc::clone(&s));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = Arc::clone(&s);
                    async move {
                        s.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            uri: req.uri().to_string(),
                            headers: req.headers().clone(),
                            body_len: 0,
                        });
                        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"hello from the TLS origin"));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsOrigin { addr, cert: der, seen, connections }
}

// ----------------------------------------------------------------------------------------
// Hand-made TLS ClientHellos.

fn u16be(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

fn server_name_ext(sni: &[u8]) -> Vec<u8> {
    let mut entry = vec![0u8]; // host_name
    entry.extend(u16be(sni.len()));
    entry.extend(sni);
    let mut data = u16be(entry.len()).to_vec();
    data.extend(entry);
    let mut ext = vec![0x00, 0x00];
    ext.extend(u16be(data.len()));
    ext.extend(data);
    ext
}

/// A TLS 1.2 ClientHello handshake message with the given extensions.
fn client_hello_message(extensions: &[u8]) -> Vec<u8> {
    let mut ext = extensions.to_vec();
    // supported_groups: x25519, secp256r1
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext.extend([0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    let mut body = vec![0x03, 0x03];
    body.extend([0x42u8; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE-ECDSA/RSA-AES128-GCM-SHA256
    body.extend([0x01, 0x00]); // compression: null
    body.extend(u16be(ext.len()));
    body.extend(ext);
    let mut msg = vec![0x01];
    msg.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    msg.extend(body);
    msg
}

/// Wraps a handshake message in TLS records, split after `split` bytes.
fn records(msg: &[u8], split: Option<usize>) -> Vec<u8> {
    let parts: Vec<&[u8]> = match split {
        Some(n) => vec![&msg[..n], &msg[n..]],
        None => vec![msg],
    };
    let mut out = Vec::new();
    for p in parts {
        out.extend([0x16, 0x03, 0x01]);
        out.extend(u16be(p.len()));
        out.extend(p);
    }
    out
}

fn client_hello_records(sni: &[u8], split: Option<usize>) -> Vec<u8> {
    records(&client_hello_message(&server_name_ext(sni)), split)
}

fn client_hello_two_sni(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut ext = server_name_ext(first);
    ext.extend(server_name_ext(second));
    records(&client_hello_message(&ext), None)
}

// ----------------------------------------------------------------------------------------
// Reading responses.

#[derive(Debug)]
struct Resp {
    status: u16,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn is_block_page(&self) -> bool {
        self.status == 403 && self.text().contains("Geblokkeerd:")
    }
}

/// Parses one response at the start of `buf`: `(response, bytes used)`.
/// `eof` allows a body delimited by the end of the connection.
fn parse_response(buf: &[u8], connect: bool, eof: bool) -> Option<(Resp, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = r.code.unwrap_or(0);
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &buf[head_len..];
    if (100..200).contains(&status) || status == 204 || status == 304 || (connect && (200..300).contains(&status)) {
        return Some((Resp { status, body: Vec::new() }, head_len));
    }
    if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&rest[at..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                let end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at + 2;
                return Some((Resp { status, body }, head_len + end));
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    }
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        return (rest.len() >= len).then(|| (Resp { status, body: rest[..len].to_vec() }, head_len + len));
    }
    eof.then(|| (Resp { status, body: rest.to_vec() }, buf.len()))
}

/// Reads until `want` responses have arrived, the peer closes, or `wait`
/// passes. Returns the responses and whether the peer closed.
async fn read_responses<S: AsyncRead + Unpin>(
    s: &mut S,
    want: usize,
    connect: bool,
    wait: Duration,
) -> (Vec<Resp>, bool) {
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some((resp, used)) = parse_response(&buf, connect, false) {
            buf.drain(..used);
            out.push(resp);
        }
        if out.len() >= want {
            return (out, false);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                if let Some((resp, _)) = parse_response(&buf, connect, true) {
                    out.push(resp);
                }
                return (out, true);
            }
            Err(_) => return (out, false),
        }
    }
}

// ----------------------------------------------------------------------------------------
// Running a row.

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_cert(pem: &str) -> CertificateDer<'static> {
    rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A TLS client that trusts exactly `root`.
fn tls_client(root: CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    store.add(root).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What a row did, as seen from outside.
struct Observed {
    responses: Vec<Resp>,
    /// The CONNECT was answered `200`.
    tunnel_opened: bool,
    /// Whether the action could still be answered with a page (plain HTTP,
    /// or TLS that completed its handshake).
    answerable: bool,
    note: String,
}

async fn send_all<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    // The proxy may answer and close before everything is written.
    let _ = s.write_all(bytes).await;
    let _ = s.flush().await;
}

async fn run_action(proxy: &TestProxy, plan: &Plan) -> Observed {
    let wait = Duration::from_secs(5);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let (connect, inner) = match &plan.action {
        Action::Raw(bytes) => {
            send_all(&mut s, bytes).await;
            let (responses, _) = read_responses(&mut s, plan.responses, false, wait).await;
            return Observed { responses, tunnel_opened: false, answerable: true, note: String::new() };
        }
        Action::Connect(connect, inner) => (connect, inner),
    };
    send_all(&mut s, connect).await;
    let (mut responses, _) = read_responses(&mut s, 1, true, wait).await;
    if responses.first().map(|r| r.status) != Some(200) {
        return Observed { responses, tunnel_opened: false, answerable: true, note: String::new() };
    }
    let mut obs = Observed { responses: Vec::new(), tunnel_opened: true, answerable: false, note: String::new() };
    match inner {
        Inner::Raw(bytes) => {
            send_all(&mut s, bytes).await;
            let (inner, closed) = read_responses(&mut s, plan.responses, false, wait).await;
            responses.extend(inner);
            obs.answerable = true;
            if closed {
                obs.note = "tunnel closed".into();
            }
        }
        Inner::Tls(_) | Inner::TlsAfter { .. } => {
            let (sni, root) = match inner {
                Inner::Tls(sni) => (sni, pem_cert(&proxy.ca_pem())),
                Inner::TlsAfter { prefix, sni } => {
                    send_all(&mut s, prefix).await;
                    (sni, tls_origin().cert.clone())
                }
                _ => unreachable!(),
            };
            let name = ServerName::try_from(sni.clone()).unwrap();
            let handshake = tokio::time::timeout(wait, tls_client(root).connect(name, s)).await;
            match handshake {
                Ok(Ok(mut tls)) => {
                    obs.answerable = true;
                    send_all(
                        &mut tls,
                        format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
                    let (inner, _) = read_responses(&mut tls, 1, false, wait).await;
                    responses.extend(inner);
                }
                Ok(Err(e)) => obs.note = format!("TLS handshake failed: {e}"),
                Err(_) => obs.note = "TLS handshake timed out".into(),
            }
        }
        Inner::Hello { bytes, trickle } => {
            if *trickle {
                for b in bytes {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            } else {
                send_all(&mut s, bytes).await;
            }
            // Whatever comes back (a ServerHello, an alert, the origin's
            // answer to TLS bytes), then hang up.
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_millis(800);
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            obs.note = match got.first() {
                None => "nothing back".into(),
                Some(0x16) => format!("TLS handshake bytes back ({} B)", got.len()),
                Some(0x15) => "TLS alert back".into(),
                Some(_) => format!("{:?}", String::from_utf8_lossy(&got[..got.len().min(40)])),
            };
        }
        Inner::Silence => {
            let timeout = proxy.config.proxy.client_hello_timeout;
            let mut chunk = [0u8; 64];
            let _ = tokio::time::timeout(timeout + Duration::from_millis(500), s.read(&mut chunk)).await;
        }
    }
    obs.responses = responses;
    obs
}

/// Waits up to `limit` for `check` to hold.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mentions_banned(seen: &Seen) -> bool {
    let host = seen.headers.get_all("host").iter().map(|v| String::from_utf8_lossy(v.as_bytes()).to_lowercase());
    let texts: Vec<String> = host.chain([seen.uri.to_lowercase()]).collect();
    texts.iter().any(|t| BANNED_MARKERS.iter().any(|m| t.contains(m)))
}

fn describe(obs: &Observed, blocked: &[weerwal::audit::Record], reqs: usize, conns: usize) -> String {
    let mut d = String::new();
    match obs.responses.last() {
        Some(r) if r.is_block_page() => d.push_str("403 block page"),
        Some(r) if r.text().contains("hello from origin") => {
            let _ = write!(d, "{} from origin", r.status);
        }
        Some(r) if r.text().contains("hello from the TLS origin") => {
            let _ = write!(d, "{} from the TLS origin (aliexpress.com certificate)", r.status);
        }
        Some(r) if obs.tunnel_opened && obs.responses.len() == 1 => {
            let _ = write!(d, "CONNECT {}", r.status);
        }
        Some(r) => {
            let _ = write!(d, "{}", r.status);
        }
        None => d.push_str("no response"),
    }
    if obs.responses.len() > 1 {
        let all: Vec<String> = obs.responses.iter().map(|r| r.status.to_string()).collect();
        let _ = write!(d, " [{}]", all.join(","));
    }
    if !obs.note.is_empty() {
        let _ = write!(d, "; {}", obs.note);
    }
    let apps: Vec<&str> = blocked.iter().filter_map(|r| r.app.as_deref()).collect();
    if !apps.is_empty() {
        let _ = write!(d, "; blocked record: {}", apps.join(","));
    }
    let _ = write!(d, "; origin {reqs} req/{conns} conn");
    d
}

/// Judges a row; `Err` says what is wrong.
fn judge(
    plan: &Plan,
    obs: &Observed,
    blocked: &[weerwal::audit::Record],
    seen: &[Seen],
    conns: usize,
) -> Result<(), String> {
    if let Some(bad) = seen.iter().find(|s| mentions_banned(s)) {
        return Err(format!("the origin saw a request naming a banned host: {} {}", bad.method, bad.uri));
    }
    let last = obs.responses.last();
    let untouched = || {
        if seen.len() > plan.origin_ok || (plan.origin_ok == 0 && conns > 0) {
            Err(format!("the origin was reached ({} requests, {conns} connections)", seen.len()))
        } else {
            Ok(())
        }
    };
    let blocked_ok = |app: &str| -> Result<(), String> {
        if !blocked.iter().any(|r| r.app.as_deref() == Some(app)) {
            return Err(format!("no `blocked` record for {app}"));
        }
        if obs.answerable {
            match last {
                Some(r) if r.is_block_page() && r.text().contains(&format!("Geblokkeerd: {app}")) => {}
                Some(r) => return Err(format!("expected the {app} block page, got {}", r.status)),
                None => return Err("expected the block page, got no response".into()),
            }
        } else if let Some(r) = last.filter(|_| !obs.tunnel_opened || obs.responses.len() > 1) {
            if !r.is_block_page() {
                return Err(format!("expected the block page or nothing, got {}", r.status));
            }
        }
        untouched()
    };
    let refused_ok = || -> Result<(), String> {
        match last {
            Some(r) if r.is_block_page() => return Err("the block page, expected a refusal".into()),
            // The tunnel's `200` was sent; refusing means closing it unused.
            Some(r) if obs.tunnel_opened && obs.responses.len() == 1 && r.status == 200 => {}
            Some(r) if (400..500).contains(&r.status) => {}
            Some(r) => return Err(format!("expected a 4xx, got {}", r.status)),
            None if obs.tunnel_opened => {}
            None => return Err("expected a 4xx, got no response".into()),
        }
        untouched()
    };
    match &plan.expect {
        Expect::Blocked(app) => blocked_ok(app),
        Expect::Refused => refused_ok(),
        Expect::Closed => match last {
            Some(r) => Err(format!("expected the connection closed, got {}", r.status)),
            None => untouched(),
        },
        Expect::Denied(app) => blocked_ok(app).or_else(|e1| refused_ok().map_err(|e2| format!("{e1}; {e2}"))),
        Expect::Local => {
            match last {
                Some(r) if r.is_block_page() => return Err("the block page, expected the proxy's own answer".into()),
                Some(r) if [200, 404, 405].contains(&r.status) && !r.text().contains("hello from origin") => {}
                Some(r) => return Err(format!("expected the status page, 404 or 405, got {}", r.status)),
                None => return Err("no response".into()),
            }
            untouched()
        }
        Expect::Forwarded(host) => {
            if !blocked.is_empty() {
                return Err("blocked, expected forwarding".into());
            }
            match last {
                Some(r) if r.status == 200 && r.text().contains("hello from origin") => {}
                Some(r) => return Err(format!("expected the origin's 200, got {}", r.status)),
                None => return Err("no response".into()),
            }
            let [one] = seen else { return Err(format!("the origin saw {} requests, expected 1", seen.len())) };
            let hosts: Vec<_> = one.headers.get_all("host").iter().collect();
            if hosts.len() != 1 || hosts[0] != host.as_str() {
                return Err(format!("the origin saw Host {hosts:?}, expected {host:?}"));
            }
            Ok(())
        }
        Expect::Tunnelled => {
            if !blocked.is_empty() {
                return Err("blocked, expected a tunnel".into());
            }
            if conns == 0 {
                return Err("no tunnel to the origin was opened".into());
            }
            Ok(())
        }
        Expect::OuterOnly(path) => {
            let [one] = seen else { return Err(format!("the origin saw {} requests, expected 1", seen.len())) };
            if one.uri != *path || one.body_len != 0 {
                return Err(format!("the origin saw {} with a {}-byte body", one.uri, one.body_len));
            }
            if let Some(r) = obs.responses.get(1) {
                if !(r.is_block_page() || (400..500).contains(&r.status)) {
                    return Err(format!("the hidden request got {}", r.status));
                }
            }
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bypass_table() {
    let cases = cases();
    // One origin per row, all of them allowed as CONNECT ports, so that each
    // row can tell exactly what reached its own origin.
    let mut origins = Vec::new();
    for _ in &cases {
        origins.push(Origin::start().await);
    }
    let started = start_tls_origin().await;
    let tls_port = started.addr.port();
    assert!(TLS_ORIGIN.set(started).is_ok(), "one TLS origin per test binary");
    let ports: Vec<u16> = origins.iter().map(|o| o.addr.port()).chain([tls_port]).collect();
    let proxy = TestProxy::start_with(move |c| {
        c.proxy.connect_ports = [443].into_iter().chain(ports).collect();
    })
    .await;

    let mut table = String::new();
    let mut failures = Vec::new();
    let _ = writeln!(table, "\n{:>3} | {:<78} | {:<34} | observed", "#", "attempt", "expected");
    let _ = writeln!(table, "{}", "-".repeat(190));
    let (mut attempts, mut controls) = (0, 0);
    for (i, (case, origin)) in cases.iter().zip(&origins).enumerate() {
        let plan = (case.plan)(origin.addr);
        match plan.expect {
            Expect::Forwarded(_) | Expect::Tunnelled => controls += 1,
            _ => attempts += 1,
        }
        let before = proxy.events("blocked").len();
        let tls = tls_origin();
        let (tls_seen_before, tls_conns_before) =
            (tls.seen.lock().unwrap().len(), tls.connections.load(Ordering::SeqCst));
        let obs = run_action(&proxy, &plan).await;
        let conns = || {
            if plan.tls_origin {
                tls.connections.load(Ordering::SeqCst) - tls_conns_before
            } else {
                origin.connections.load(Ordering::SeqCst)
            }
        };
        match plan.expect {
            Expect::Blocked(_) | Expect::Denied(_) => {
                eventually(Duration::from_secs(3), || proxy.events("blocked").len() > before).await;
            }
            Expect::Tunnelled => {
                eventually(Duration::from_secs(3), || conns() > 0).await;
            }
            _ => {}
        }
        // Give anything that leaked time to arrive at the origin.
        tokio::time::sleep(Duration::from_millis(if obs.tunnel_opened { 300 } else { 50 })).await;
        let blocked: Vec<_> = proxy.events("blocked").into_iter().skip(before).collect();
        let seen =
            if plan.tls_origin { tls.seen.lock().unwrap()[tls_seen_before..].to_vec() } else { origin.requests() };
        let conns = conns();
        let verdict = judge(&plan, &obs, &blocked, &seen, conns);
        let observed = describe(&obs, &blocked, seen.len(), conns);
        let mark = if verdict.is_ok() { "ok" } else { "FAIL" };
        let _ = writeln!(table, "{:>3} | {:<78} | {:<34} | {mark}: {observed}", i + 1, case.name, plan.expect.label());
        if let Err(why) = verdict {
            failures.push(format!("#{} {}: {why} (observed: {observed})", i + 1, case.name));
        }
    }
    let _ = writeln!(table, "\n{attempts} bypass attempts, {controls} control rows, {} failed", failures.len());
    println!("{table}");
    proxy.stop().await;
    assert!(attempts >= 30, "the table needs at least 30 bypass attempts");
    assert!(failures.is_empty(), "{} rows did not behave:\n{}", failures.len(), failures.join("\n"));
}
