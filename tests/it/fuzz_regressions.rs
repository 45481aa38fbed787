//! Regression table for the fuzz targets (`fuzz/run.sh`): every input a fuzz
//! run ever found goes here as a byte string, and runs through the very
//! same checks as the fuzz target (`fuzz/fuzz_targets/checks.rs`, included
//! by path), on stable, in the ordinary `cargo test`.
//!
//! Alongside them are the hand-picked spellings the targets were seeded
//! with: the forms a bypass would need (case, dots, IDNA, punycode, odd IPv4,
//! IPv6 brackets, ports, user info), malformed policy files, and for the
//! ClientHello reader the captured hellos in `tests/fixtures/`, a hello
//! minted by rustls, and what can be made of them (truncations, 1-byte
//! pieces, a first byte that is not a handshake, a hello over 16 KiB).

#[path = "../../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use weerwal::proxy::client_hello::{read_client_hello, ClientHello, ClientHelloRead, MAX_CLIENT_HELLO_BYTES};

/// Inputs for `host_decide`: one host or authority each.
const HOST_DECIDE: &[&[u8]] = &[
    // Found by fuzzing: none so far (60 s per target, and 10 minutes for
    // host_decide, on stable libFuzzer). Add each finding above this line.
    //
    // Seeds and hand-picked edge cases.
    b"",
    b".",
    b"..",
    b"aliexpress.com",
    b"M.AliExpress.COM.",
    b"aliexpress.com..",
    b".aliexpress.com",
    b"aliexpress.com:443",
    b"aliexpress.com:0",
    b"aliexpress.com:65536",
    b"aliexpress.com:",
    b"aliexpress.com:+80",
    b"user@vk.com:80",
    b"ali%65xpress.com",
    b"xn--aliexpress-.com",
    b"XN--BCHER-KVA.DE",
    "b\u{fc}cher.de".as_bytes(),
    "\u{ff41}\u{ff4c}\u{ff49}\u{ff45}\u{ff58}\u{ff50}\u{ff52}\u{ff45}\u{ff53}\u{ff53}.com".as_bytes(),
    "aliexpress\u{3002}com".as_bytes(),
    "aliexpress.com\u{3002}".as_bytes(),
    "v\u{212a}.com".as_bytes(),
    "\u{430}liexpress.com".as_bytes(),
    "\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}".as_bytes(),
    b"127.0.0.1",
    b"127.0.0.1.",
    b"127.1",
    b"0x7f.1",
    b"0X7F000001",
    b"0177.0.0.1",
    b"2130706433",
    b"256.1.1.1",
    b"a.1",
    b"0x",
    b"[::1]",
    b"[::1]:443",
    b"[::ffff:127.0.0.1]:8080",
    b"[0:0::1]",
    b"[fe80::1%25eth0]",
    b"[aliexpress.com]",
    b"[::1]x",
    b"[::1",
    b"::1",
    b"a..b",
    b"_x.aliexpress.com",
    b"-x.aliexpress.com",
    b"weixin.qq.com",
    b"qq.com",
    b"a.b.c.tiktokv.eu",
    b"\xff\xfe\x00aliexpress.com",
    b"aliexpress.com\x00",
    b"aliexpress .com",
    b"aliexpress\t.com",
];

/// Inputs for `policy_parse`: the first byte picks whether the shipped policy
/// is read first (odd: yes), the rest is one policy file.
const POLICY_PARSE: &[&[u8]] = &[
    // Found by fuzzing: none so far (60 s on stable libFuzzer). Add each
    // finding above this line.
    //
    // Seeds and hand-picked edge cases.
    b"",
    b"\x00",
    b"\x01",
    b"\x00[[ban]]",
    b"\x00[[ban]]\napp = \"\"\ndomains = []\nadvice = \"\"\nreference = \"\"\nsince = \"\"\n",
    b"\x00[[ban]]\napp = \"X\"\ndomains = [\"[::1]\", \"192.0.2.1\", \"Sub.Example.ORG.\"]\nadvice = \"NCSC\"\n\
      reference = \"r\"\nsince = \"2024-02-29\"\n",
    b"\x00[[ban]]\napp = \"X\"\ndomains = [\"a..b\", \"ali%65xpress.com\", \"\"]\nadvice = \"NCSC\"\n\
      reference = \"r\"\nsince = \"2023-02-29\"\n",
    b"\x01[[ban]]\napp = \"aliexpress\"\ndomains = [\"tiktok.com\"]\nadvice = \"NCSC\"\nreference = \"r\"\n\
      since = \"2024-01-01\"\n",
    b"\x00[[exemption]]\nwho = [\"user:\"]\napps = [\"Nope\"]\nreason = \" \"\nuntil = \"9999-12-31\"\n",
    b"\x01[[exemption]]\nwho = [\"group:toezicht\"]\napps = [\"TikTok\"]\nreason = \"toezicht\"\nuntil = \"2000-01-01\"\n",
    b"\x00[[ban]]\napp = \"X\"\ndomains = [\"x.example\"]\nuser_agents = [\"abc\", \"  \"]\nadvice = \"NCSC\"\n\
      reference = \"r\"\nsince = \"2024-01-01\"\nunknown = 1\n",
    b"\x00\xff\xfe[[ban]\n\x00",
    b"\x00a = \"\\u00e9\"\n[[ban]]\napp = 1\n",
    "\u{0}[[ban]]\napp = \"\u{e9}\"\ndomains = [\"b\u{fc}cher.de\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2024-01-01\"\n"
        .as_bytes(),
];

#[test]
fn host_decide_regressions() {
    for input in HOST_DECIDE {
        checks::host_decide(input);
    }
}

#[test]
fn policy_parse_regressions() {
    for input in POLICY_PARSE {
        checks::policy_parse(input);
    }
}

#[test]
fn shipped_policy_files_pass_the_policy_checks() {
    for (_, text) in weerwal::policy::EMBEDDED {
        for mode in [0u8, 1] {
            let mut input = vec![mode];
            input.extend_from_slice(text.as_bytes());
            checks::policy_parse(&input);
        }
    }
}

/// What the ClientHello parser must answer on a row of [`CLIENT_HELLO`].
#[derive(Debug, Clone, Copy)]
enum Expect {
    Incomplete,
    NotTls,
    NoSni,
    Sni(&'static str),
    Malformed,
}

impl Expect {
    fn holds(self, answer: &ClientHello) -> bool {
        match (self, answer) {
            (Expect::Incomplete, ClientHello::Incomplete)
            | (Expect::NotTls, ClientHello::NotTls)
            | (Expect::NoSni, ClientHello::NoSni)
            | (Expect::Malformed, ClientHello::Malformed) => true,
            (Expect::Sni(want), ClientHello::Sni(got)) => want == got,
            _ => false,
        }
    }
}

/// Inputs for `client_hello`: the first bytes of a CONNECT tunnel each, with
/// the answer the parser must give. The captured and generated hellos run in
/// the tests below the table.
const CLIENT_HELLO: &[(&[u8], Expect)] = &[
    // Found by fuzzing (fuzz/run.sh client_hello, seeded with
    // tests/fixtures): none recorded so far. Add each finding above this line.
    //
    // Hand-picked edge cases.
    (b"", Expect::Incomplete),
    (b"\x16", Expect::Incomplete),
    (b"\x16\x03", Expect::Incomplete),
    (b"\x16\x03\x01\x00", Expect::Incomplete),
    (b"\x16\x03\x01\x00\x3e", Expect::Incomplete),
    (b"\x16\x03\x01\x00\x3e\x01\x00\x00", Expect::Incomplete),
    // A minimal hello naming vk.com, and spellings of its name.
    (
        b"\x16\x03\x01\x00\x3e\x01\x00\x00\x3a\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00\x00\x0f\x00\x00\x00\x0b\x00\x09\x00\x00\x06vk.com",
        Expect::Sni("vk.com"),
    ),
    (
        b"\x16\x03\x01\x00\x3e\x01\x00\x00\x3a\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00\x00\x0f\x00\x00\x00\x0b\x00\x09\x00\x00\x06VK.COM",
        Expect::Sni("VK.COM"),
    ),
    (
        b"\x16\x03\x01\x00\x3e\x01\x00\x00\x3a\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00\x00\x0f\x00\x00\x00\x0b\x00\x09\x00\x00\x06vk com",
        Expect::Malformed,
    ),
    (
        b"\x16\x03\x01\x00\x3e\x01\x00\x00\x3a\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00\x00\x0f\x00\x00\x00\x0b\x00\x09\x00\x00\x06vk.c\x00m",
        Expect::Malformed,
    ),
    (
        b"\x16\x03\x01\x00\x3e\x01\x00\x00\x3a\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00\x00\x0f\x00\x00\x00\x0b\x00\x09\x00\x00\x06vk.c\xc3\xb6",
        Expect::Malformed,
    ),
    // A TLS 1.2 hello that ends after its compression methods: no extensions, no SNI.
    (
        b"\x16\x03\x01\x00\x2d\x01\x00\x00\x29\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00",
        Expect::NoSni,
    ),
    // The same hello with the server_name list one byte longer than its extension.
    (
        b"\x16\x03\x01\x00\x3e\x01\x00\x00\x3a\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00\x00\x0f\x00\x00\x00\x0b\x00\x0a\x00\x00\x06vk.com",
        Expect::Malformed,
    ),
    // The same hello, the handshake header claiming one byte more than the record holds.
    (
        b"\x16\x03\x01\x00\x3e\x01\x00\x00\x3b\x03\x03BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\
          \x00\x00\x02\x13\x01\x01\x00\x00\x0f\x00\x00\x00\x0b\x00\x09\x00\x00\x06vk.com",
        Expect::Incomplete,
    ),
    // Record layer: empty and oversized fragments, other versions.
    (b"\x16\x03\x01\x00\x00", Expect::Malformed),
    (b"\x16\x03\x01\x40\x01", Expect::Malformed),
    (b"\x16\x03\x01\xff\xff", Expect::Malformed),
    (b"\x16\x02\x00\x00\x05", Expect::NotTls),
    (b"\x16\x04\x01\x00\x05", Expect::NotTls),
    // Handshake layer: not a ClientHello, or one beyond the reader's cap.
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", Expect::Malformed),
    (b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", Expect::Malformed),
    (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", Expect::Malformed),
    // A first byte that is not a handshake record.
    (b"GET / HTTP/1.1\r\nHost: vk.com\r\n\r\n", Expect::NotTls),
    (b"CONNECT vk.com:443 HTTP/1.1\r\n\r\n", Expect::NotTls),
    (b"\x00", Expect::NotTls),
    (b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10", Expect::NotTls),
    (b"SSH-2.0-OpenSSH_9.6\r\n", Expect::NotTls),
    // Other TLS record types in front of the hello: decoys, never "not TLS".
    (b"\x17", Expect::Incomplete),
    (b"\x17\x03\x03\x00\x05hello", Expect::Malformed),
    (b"\x14\x03\x03\x00\x01\x01", Expect::Malformed),
    (b"\x15\x03\x03\x00\x02\x02\x28", Expect::Malformed),
    (b"\x17\x01", Expect::NotTls),
];

#[test]
fn client_hello_regressions() {
    for (input, expect) in CLIENT_HELLO {
        let answer = checks::client_hello(input);
        assert!(expect.holds(&answer), "{:?}: expected {expect:?}, got {answer:?}", String::from_utf8_lossy(input));
    }
}

/// Every captured ClientHello in `tests/fixtures/` (`clienthello-*.bin`),
/// with the answer its name promises: `-no-sni` none, `-sni-WORD` a host
/// name containing WORD.
fn fixture_hellos() -> Vec<(String, Vec<u8>, Option<String>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_prefix("clienthello-").and_then(|n| n.strip_suffix(".bin")) else { continue };
        let sni = if stem.ends_with("no-sni") {
            None
        } else {
            let word = stem.rsplit_once("sni-").map(|(_, w)| w.to_string());
            Some(word.unwrap_or_else(|| panic!("{name}: the name says neither -no-sni nor -sni-WORD")))
        };
        found.push((name, std::fs::read(&path).unwrap(), sni));
    }
    found.sort();
    assert!(found.len() >= 5, "the captured hellos are gone from {}", dir.display());
    found
}

/// A ClientHello as rustls (ring provider) sends it to `host`, written to a
/// buffer instead of a socket.
fn rustls_hello(host: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

/// Every hello to run: the fixtures and a rustls one, with the host name a
/// complete hello must give (a word of it for fixtures; `None`: no SNI).
fn all_hellos() -> Vec<(String, Vec<u8>, Option<String>)> {
    let mut hellos = fixture_hellos();
    hellos.push(("rustls-sni-www.tiktok.com".into(), rustls_hello("www.tiktok.com"), Some("www.tiktok.com".into())));
    hellos
}

fn assert_complete(name: &str, answer: &ClientHello, sni: &Option<String>) {
    match (answer, sni) {
        (ClientHello::Sni(got), Some(word)) => assert!(got.contains(word.as_str()), "{name}: SNI {got:?}"),
        (ClientHello::NoSni, None) => {}
        _ => panic!("{name}: expected SNI {sni:?}, got {answer:?}"),
    }
}

/// The handshake message carried by the records of `wire`.
fn handshake_message(wire: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    let mut rest = wire;
    while rest.len() >= 5 {
        assert_eq!(rest[0], 0x16, "not a handshake record");
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        message.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    let declared = 4 + (usize::from(message[1]) << 16 | usize::from(message[2]) << 8 | usize::from(message[3]));
    message.truncate(declared);
    message
}

/// `message` wrapped into handshake records of at most `fragment` bytes
/// (RFC 8446 §5.1 allows a handshake message to span records).
fn records(message: &[u8], fragment: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for chunk in message.chunks(fragment) {
        wire.extend([0x16, 0x03, 0x01]);
        wire.extend(u16::try_from(chunk.len()).unwrap().to_be_bytes());
        wire.extend(chunk);
    }
    wire
}

/// Where the extensions block (its u16 length) starts in a ClientHello body:
/// after legacy_version, random, session id, cipher suites and compression.
fn extensions_at(body: &[u8]) -> usize {
    let mut at = 2 + 32;
    at += 1 + usize::from(body[at]);
    at += 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
    at += 1 + usize::from(body[at]);
    at
}

/// `message` (a ClientHello) with `padding` (extension type, length) put in
/// front of its other extensions, every length field fixed up.
fn padded(message: &[u8], padding: &[(u16, usize)]) -> Vec<u8> {
    let body = &message[4..];
    let at = extensions_at(body);
    let old = &body[at + 2..];
    assert_eq!(old.len(), usize::from(u16::from_be_bytes([body[at], body[at + 1]])), "a hello with extensions");
    let mut block = Vec::new();
    for &(ext_type, len) in padding {
        block.extend(ext_type.to_be_bytes());
        block.extend(u16::try_from(len).unwrap().to_be_bytes());
        block.resize(block.len() + len, 0);
    }
    block.extend_from_slice(old);
    let mut new_body = body[..at].to_vec();
    new_body.extend(u16::try_from(block.len()).expect("the extensions fit their u16 length").to_be_bytes());
    new_body.extend(block);
    let len = u32::try_from(new_body.len()).unwrap().to_be_bytes();
    let mut out = vec![0x01, len[1], len[2], len[3]];
    out.extend(new_body);
    out
}

#[test]
fn captured_and_rustls_hellos_give_their_host_names() {
    for (name, wire, sni) in all_hellos() {
        assert_complete(&name, &checks::client_hello(&wire), &sni);
    }
    // The rustls hello names its host exactly.
    let wire = rustls_hello("m.aliexpress.com");
    assert_eq!(checks::client_hello(&wire), ClientHello::Sni("m.aliexpress.com".into()));
}

#[test]
fn truncated_hellos_are_incomplete_and_never_panic() {
    for (name, wire, _) in all_hellos() {
        // A sample of cut points: the first bytes (record and handshake
        // headers), every 97th byte, each record boundary, and the last bytes.
        let mut cuts: Vec<usize> = (0..16).chain((0..wire.len()).step_by(97)).collect();
        cuts.extend(wire.len().saturating_sub(16)..wire.len());
        let mut at = 0;
        while at + 5 <= wire.len() {
            cuts.extend([at, at + 1, at + 4, at + 5, at + 6]);
            at += 5 + usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
        }
        cuts.retain(|&c| c < wire.len());
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            let answer = checks::client_hello(&wire[..cut]);
            assert_eq!(answer, ClientHello::Incomplete, "{name} cut at {cut} of {}", wire.len());
        }
    }
}

#[test]
fn hellos_in_one_byte_pieces_give_their_host_names() {
    for (name, wire, sni) in all_hellos() {
        // As the reader sees a client that sends one byte per segment: the
        // buffer grows a byte at a time and is parsed again each time.
        for end in 0..wire.len() {
            assert_eq!(checks::client_hello(&wire[..end]), ClientHello::Incomplete, "{name} at {end}");
        }
        assert_complete(&name, &checks::client_hello(&wire), &sni);
        // The handshake message in records of one byte each (RFC 8446 §5.1
        // forbids only empty ones), where it stays under the reader's cap.
        let message = handshake_message(&wire);
        if message.len() * 6 < MAX_CLIENT_HELLO_BYTES {
            assert_complete(&format!("{name} in 1-byte records"), &checks::client_hello(&records(&message, 1)), &sni);
        }
    }
}

/// Hands out its bytes one at a time, and says "not yet" between them,
/// like a socket fed by a client that sends a byte per segment.
struct OneByteAtATime {
    bytes: Vec<u8>,
    at: usize,
    ready: bool,
}

impl tokio::io::AsyncRead for OneByteAtATime {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        if let Some(&b) = self.bytes.get(self.at) {
            buf.put_slice(&[b]);
            self.at += 1;
        }
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn the_reader_fed_one_byte_at_a_time_gives_the_host_name_and_every_byte() {
    for (name, wire, sni) in all_hellos() {
        let mut stream = OneByteAtATime { bytes: wire.clone(), at: 0, ready: false };
        let (read, outcome) = read_client_hello(&mut stream, Duration::from_secs(10)).await.unwrap();
        assert_eq!(read, wire, "{name}: the reader must hand back exactly the bytes it took");
        match (&outcome, &sni) {
            (ClientHelloRead::Sni(got), Some(word)) => assert!(got.contains(word.as_str()), "{name}: {got:?}"),
            (ClientHelloRead::NoSni, None) => {}
            _ => panic!("{name}: expected SNI {sni:?}, got {outcome:?}"),
        }
        // A client that stops one byte short: closed, never a host name.
        let mut stream = OneByteAtATime { bytes: wire[..wire.len() - 1].to_vec(), at: 0, ready: false };
        let (_, outcome) = read_client_hello(&mut stream, Duration::from_secs(10)).await.unwrap();
        assert_eq!(outcome, ClientHelloRead::Closed, "{name}");
    }
}

#[test]
fn a_first_byte_that_is_not_a_handshake_is_never_read_as_a_hello() {
    for (name, wire, _) in all_hellos() {
        for first in [0x00, 0x14, 0x15, 0x17, 0x18, 0x80, b'G', b'C', 0xff] {
            let mut bytes = wire.clone();
            bytes[0] = first;
            let answer = checks::client_hello(&bytes);
            // Another TLS record type is a decoy in front of the hello:
            // broken TLS. Anything else is not TLS at all.
            let expected =
                if matches!(first, 0x14 | 0x15 | 0x17) { ClientHello::Malformed } else { ClientHello::NotTls };
            assert_eq!(answer, expected, "{name} with first byte {first:#04x}");
        }
    }
}

#[test]
fn a_hello_over_16_kib_built_by_padding_an_extension() {
    let wire = rustls_hello("www.tiktok.com");
    let message = handshake_message(&wire);
    assert_eq!(checks::client_hello(&records(&message, 1 << 14)), ClientHello::Sni("www.tiktok.com".into()));

    // RFC 7685 padding (type 21) in front of the other extensions pushes
    // server_name past the first 2^14-byte record.
    let big = padded(&message, &[(21, 17 * 1024)]);
    assert!(big.len() > 16 * 1024);
    let wire = records(&big, 1 << 14);
    let sni_at = wire.windows(14).position(|w| w == b"www.tiktok.com").unwrap();
    assert!(sni_at > 5 + (1 << 14), "the host name is in the second record");
    assert_eq!(checks::client_hello(&wire), ClientHello::Sni("www.tiktok.com".into()));
    for cut in [5, 1 << 14, 5 + (1 << 14), 10 + (1 << 14), sni_at, wire.len() - 1] {
        assert_eq!(checks::client_hello(&wire[..cut]), ClientHello::Incomplete, "cut at {cut}");
    }
    // In smaller records too.
    assert_eq!(checks::client_hello(&records(&big, 1000)), ClientHello::Sni("www.tiktok.com".into()));
    // The same hello in one record: longer than TLS allows a record to be.
    assert_eq!(checks::client_hello(&records(&big, big.len())), ClientHello::Malformed);

    // Padded past the reader's cap: decided (malformed) at once, never
    // "incomplete", with or without the whole of it.
    // (The largest extensions block there is, 2^16 - 1 bytes, does it.)
    let extensions = message.len() - 4 - extensions_at(&message[4..]) - 2;
    let huge = padded(&message, &[(21, usize::from(u16::MAX) - 4 - extensions)]);
    assert!(huge.len() > MAX_CLIENT_HELLO_BYTES);
    let wire = records(&huge, 1 << 14);
    assert_eq!(checks::client_hello(&wire), ClientHello::Malformed);
    assert_eq!(checks::client_hello(&wire[..MAX_CLIENT_HELLO_BYTES]), ClientHello::Malformed);
    assert_eq!(checks::client_hello(&wire[..6 + (1 << 14)]), ClientHello::Malformed);
}
