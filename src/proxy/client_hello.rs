//! Reads a TLS ClientHello off a CONNECT tunnel without consuming it.
//!
//! After answering `CONNECT host:443` with `200`, the proxy must know which
//! host the client *really* talks to before it decides: the CONNECT line can
//! name an innocent host while the TLS server_name names a banned one. So we
//! buffer the client's first bytes, take the SNI host name from them, and hand
//! the bytes back so the caller can either replay them to the origin (then
//! splice) or feed them to its own TLS acceptor (interception).
//!
//! Layout references: RFC 8446 §5.1 (record layer), §4 (handshake header),
//! §4.1.2 (ClientHello), §4.2 (extensions); RFC 6066 §3 (server_name).

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The most bytes we buffer while waiting for a complete ClientHello.
///
/// A ClientHello is normally well under 2 KiB, but post-quantum key shares
/// (X25519MLKEM768 adds 1.2 KB per share) and large ALPN/padding lists can
/// push it past one 16 KiB record. 64 KiB leaves ample room for that while
/// bounding the memory a silent or hostile client can pin per connection.
/// The parser answers [`ClientHello::Malformed`] rather than
/// [`ClientHello::Incomplete`] for anything that would not fit.
pub const MAX_CLIENT_HELLO_BYTES: usize = 64 * 1024;

/// RFC 8446 §5.1: ContentType `handshake(22)`.
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// RFC 8446 §5.1: every TLS version from SSL 3.0 to TLS 1.3 uses major 3 in
/// `legacy_record_version`; anything else is not TLS (e.g. SSLv2).
const RECORD_VERSION_MAJOR: u8 = 3;
/// RFC 8446 §5.1: type (1) + legacy_record_version (2) + length (2).
const RECORD_HEADER_LEN: usize = 5;
/// RFC 8446 §5.1: "The length MUST NOT exceed 2^14 bytes."
const MAX_RECORD_FRAGMENT: usize = 1 << 14;
/// RFC 8446 §4: msg_type (1) + uint24 length (3).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 §4: HandshakeType `client_hello(1)`.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// RFC 8446 §4.1.2: `opaque legacy_session_id<0..32>`.
const MAX_SESSION_ID_LEN: usize = 32;
/// RFC 6066 §3: ExtensionType `server_name(0)`.
const EXTENSION_SERVER_NAME: u16 = 0;
/// RFC 6066 §3: NameType `host_name(0)`.
const NAME_TYPE_HOST_NAME: u8 = 0;
/// How much we ask the socket for per read; most ClientHellos fit in one.
const READ_CHUNK: usize = 4096;

/// What the bytes buffered so far say about the client's ClientHello.
///
/// Exists so the caller can tell "wait for more bytes" apart from the final
/// answers, and "no SNI" apart from "not TLS at all" (plain HTTP through a
/// CONNECT tunnel) and from "broken or hostile TLS". Every answer other than
/// `Incomplete` is final: more bytes never change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// The bytes so far are a valid prefix of a ClientHello; read more.
    Incomplete,
    /// The first bytes are not a TLS handshake record (e.g. `GET / HTTP/1.1`).
    NotTls,
    /// A complete ClientHello without a server_name host name.
    NoSni,
    /// The host_name from the server_name extension, exactly as sent
    /// (visible ASCII; the caller lower-cases and strips a trailing dot).
    Sni(String),
    /// Claims to be a TLS handshake, but the lengths or types are
    /// inconsistent, or it would exceed [`MAX_CLIENT_HELLO_BYTES`].
    Malformed,
}

/// Parses the TLS records at the start of `buf` as a ClientHello.
///
/// Pure and stateless so it can be called again on the whole buffer after
/// every read (the buffer may arrive split at any byte), unit-tested on
/// captured bytes, and fuzzed. The ClientHello may span several records
/// (RFC 8446 §5.1 allows a handshake message to be fragmented), which large
/// post-quantum hellos do. Bytes after the ClientHello are ignored.
///
/// ```
/// use weerwal::proxy::client_hello::{parse_client_hello, ClientHello};
/// assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), ClientHello::NotTls);
/// assert_eq!(parse_client_hello(&[0x16, 0x03]), ClientHello::Incomplete);
/// ```
#[must_use]
pub fn parse_client_hello(buf: &[u8]) -> ClientHello {
    match reassemble_handshake(buf) {
        Ok(body) => parse_body(&body),
        Err(answer) => answer,
    }
}

/// Collects the ClientHello handshake message body from the records in
/// `buf`, or says why it cannot (yet).
fn reassemble_handshake(buf: &[u8]) -> Result<Cow<'_, [u8]>, ClientHello> {
    use ClientHello::{Incomplete, Malformed, NotTls};

    let mut records = Cursor::new(buf);
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        let first = message.is_empty();
        // A record whose header alone would pass the cap can never complete;
        // this also guarantees `Incomplete` only below the cap, so a reader
        // that stops at the cap always has a final answer.
        if records.offset(buf) + RECORD_HEADER_LEN > MAX_CLIENT_HELLO_BYTES {
            return Err(Malformed);
        }

        // RFC 8446 §5.1: handshake messages "MUST NOT be interleaved with
        // other record types", so a later non-handshake record is broken
        // TLS, while a first one means this is not a TLS handshake at all.
        let not_handshake = if first { NotTls } else { Malformed };
        match records.u8() {
            None => return Err(Incomplete),
            Some(CONTENT_TYPE_HANDSHAKE) => {}
            // Another TLS record type (change_cipher_spec, alert,
            // application_data) before the ClientHello is TLS that hides
            // its hello behind a decoy record: broken, never "not TLS",
            // or it would be tunnelled unchecked.
            Some(20 | 21 | 23) if first => {
                return Err(match buf.get(1) {
                    None => Incomplete,
                    Some(&RECORD_VERSION_MAJOR) => Malformed,
                    Some(_) => NotTls,
                })
            }
            Some(_) => return Err(not_handshake),
        }
        match records.u8() {
            None => return Err(Incomplete),
            Some(RECORD_VERSION_MAJOR) => {}
            Some(_) => return Err(not_handshake),
        }
        // The minor version is deliberately not checked: clients send 0x0301
        // (TLS 1.0) here for compatibility even when offering TLS 1.3.
        let (Some(_minor), Some(len)) = (records.u8(), records.u16()) else {
            return Err(Incomplete);
        };
        let len = usize::from(len);
        // RFC 8446 §5.1: "Implementations MUST NOT send zero-length fragments
        // of Handshake types"; they also cannot exceed 2^14.
        if len == 0 || len > MAX_RECORD_FRAGMENT {
            return Err(Malformed);
        }
        if records.offset(buf) + len > MAX_CLIENT_HELLO_BYTES {
            return Err(Malformed);
        }
        let Some(fragment) = records.take(len) else {
            return Err(Incomplete);
        };
        if first {
            message = Cow::Borrowed(fragment);
        } else {
            message.to_mut().extend_from_slice(fragment);
        }

        // RFC 8446 §4: the handshake header, possibly itself split over
        // records; wait until all four bytes are in.
        let mut header = Cursor::new(&message);
        let (Some(msg_type), Some(body_len)) = (header.u8(), header.u24()) else {
            continue;
        };
        let end = HANDSHAKE_HEADER_LEN + body_len;
        if msg_type != HANDSHAKE_CLIENT_HELLO || end > MAX_CLIENT_HELLO_BYTES {
            return Err(Malformed);
        }
        if message.len() >= end {
            let body = match message {
                Cow::Borrowed(m) => m.get(HANDSHAKE_HEADER_LEN..end).map(Cow::Borrowed),
                Cow::Owned(m) => m.get(HANDSHAKE_HEADER_LEN..end).map(|body| Cow::Owned(body.to_vec())),
            };
            return body.ok_or(Malformed);
        }
    }
}

/// Walks a complete ClientHello body (RFC 8446 §4.1.2) to its extensions.
fn parse_body(body: &[u8]) -> ClientHello {
    let mut hello = Cursor::new(body);
    let extensions = (|| {
        hello.take(2)?; // legacy_version
        hello.take(32)?; // random
        let session_id = hello.vec8()?;
        if session_id.len() > MAX_SESSION_ID_LEN {
            return None;
        }
        // cipher_suites<2..2^16-2>: pairs of bytes, at least one suite.
        let suites = hello.vec16()?;
        if suites.is_empty() || suites.len() % 2 != 0 {
            return None;
        }
        // legacy_compression_methods<1..2^8-1>
        if hello.vec8()?.is_empty() {
            return None;
        }
        // RFC 5246 §7.4.1.2: a TLS 1.2 ClientHello may end here, without
        // any extensions block.
        if hello.is_empty() {
            return Some(&[][..]);
        }
        let extensions = hello.vec16()?;
        // The extensions block must end exactly where the message ends.
        hello.is_empty().then_some(extensions)
    })();
    match extensions {
        Some(extensions) => find_server_name(extensions),
        None => ClientHello::Malformed,
    }
}

/// Finds the server_name extension (RFC 8446 §4.2), checking that every
/// extension's length is consistent on the way.
fn find_server_name(extensions: &[u8]) -> ClientHello {
    let mut list = Cursor::new(extensions);
    let mut server_name = None;
    while !list.is_empty() {
        let (Some(ext_type), Some(data)) = (list.u16(), list.vec16()) else {
            return ClientHello::Malformed;
        };
        if ext_type == EXTENSION_SERVER_NAME {
            // RFC 8446 §4.2: "There MUST NOT be more than one extension of
            // the same type." A second server_name could make us judge one
            // name while the origin serves another.
            if server_name.is_some() {
                return ClientHello::Malformed;
            }
            server_name = Some(parse_server_name(data));
        }
    }
    server_name.unwrap_or(ClientHello::NoSni)
}

/// Parses the server_name extension data (RFC 6066 §3):
/// `ServerName server_name_list<1..2^16-1>`, each entry
/// `NameType name_type; opaque HostName<1..2^16-1>`.
fn parse_server_name(data: &[u8]) -> ClientHello {
    let mut outer = Cursor::new(data);
    let Some(names) = outer.vec16().filter(|names| !names.is_empty()) else {
        return ClientHello::Malformed;
    };
    if !outer.is_empty() {
        return ClientHello::Malformed;
    }
    let mut names = Cursor::new(names);
    let mut host_name = None;
    while !names.is_empty() {
        // Only host_name is defined; other types are skipped on the
        // assumption (shared by every TLS stack) that they are also
        // 16-bit length-prefixed.
        let (Some(name_type), Some(name)) = (names.u8(), names.vec16()) else {
            return ClientHello::Malformed;
        };
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        // RFC 6066 §3: "The ServerNameList MUST NOT contain more than one
        // name of the same name_type."
        if host_name.is_some() {
            return ClientHello::Malformed;
        }
        host_name = Some(name);
    }
    let Some(name) = host_name else {
        return ClientHello::NoSni;
    };
    // RFC 6066 §3: HostName is a DNS name in ASCII. Refusing anything but
    // visible ASCII keeps control characters and spaces out of the policy
    // matcher and the audit log.
    if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
        return ClientHello::Malformed;
    }
    match std::str::from_utf8(name) {
        Ok(name) => ClientHello::Sni(name.to_owned()),
        Err(_) => ClientHello::Malformed,
    }
}

/// The final outcome of [`read_client_hello`].
///
/// Separate from [`ClientHello`] because a reader never returns
/// "incomplete": it either got a final answer from the parser, or the client
/// stopped (closed or went silent) before giving one. Each case leads to a
/// different action (decide on SNI, tunnel or handle plain HTTP, refuse,
/// or just drop the connection), so they are kept apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHelloRead {
    /// A complete ClientHello naming this host (see [`ClientHello::Sni`]).
    Sni(String),
    /// A complete ClientHello without a host name.
    NoSni,
    /// The client does not speak TLS (e.g. plain HTTP inside the tunnel).
    NotTls,
    /// Broken or oversized TLS; see [`ClientHello::Malformed`].
    Malformed,
    /// No final answer before the timeout (silent or trickling client).
    TimedOut,
    /// The client closed its side before a final answer.
    Closed,
}

impl ClientHelloRead {
    /// Maps a final parser answer to the read outcome; `None` for
    /// [`ClientHello::Incomplete`], which means "keep reading".
    fn from_parsed(parsed: ClientHello) -> Option<Self> {
        match parsed {
            ClientHello::Incomplete => None,
            ClientHello::NotTls => Some(Self::NotTls),
            ClientHello::NoSni => Some(Self::NoSni),
            ClientHello::Sni(name) => Some(Self::Sni(name)),
            ClientHello::Malformed => Some(Self::Malformed),
        }
    }
}

/// Reads from `stream` until the ClientHello can be judged, the client
/// closes, or `timeout` passes, and returns every byte read with the outcome.
///
/// Exists because the proxy must look at the ClientHello *before* choosing
/// between splicing to the origin and terminating TLS itself, yet must not
/// lose a byte: the returned buffer is exactly what the client sent so far
/// (possibly more than the ClientHello, never more than
/// [`MAX_CLIENT_HELLO_BYTES`]), ready to be replayed.
///
/// The timeout bounds the whole read, not each read call, so a client that
/// trickles one byte at a time cannot hold the connection open forever. An
/// I/O error is returned as `Err` and the buffered bytes are dropped with it,
/// since the connection is unusable then anyway.
///
/// # Errors
///
/// Any error from reading `stream`. Timeouts and EOF are not errors: they are
/// [`ClientHelloRead::TimedOut`] and [`ClientHelloRead::Closed`].
pub async fn read_client_hello<S>(stream: &mut S, timeout: Duration) -> io::Result<(Vec<u8>, ClientHelloRead)>
where
    S: AsyncRead + Unpin,
{
    let started = Instant::now();
    let mut buf = Vec::new();
    loop {
        let filled = buf.len();
        // The parser never says Incomplete at the cap, so `room` is only 0 if
        // that promise breaks; answer Malformed rather than read 0 bytes and
        // mistake that for EOF.
        let room = MAX_CLIENT_HELLO_BYTES.saturating_sub(filled).min(READ_CHUNK);
        if room == 0 {
            return Ok((buf, ClientHelloRead::Malformed));
        }
        buf.resize(filled + room, 0);
        let left = timeout.saturating_sub(started.elapsed());
        // Dropping a pending read on timeout loses no data: tokio's reads
        // only fill the buffer when they complete.
        let read = tokio::time::timeout(left, stream.read(&mut buf[filled..])).await;
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(err)) => return Err(err),
            Err(_elapsed) => {
                buf.truncate(filled);
                return Ok((buf, ClientHelloRead::TimedOut));
            }
        };
        buf.truncate(filled + n);
        if n == 0 {
            return Ok((buf, ClientHelloRead::Closed));
        }
        if let Some(outcome) = ClientHelloRead::from_parsed(parse_client_hello(&buf)) {
            return Ok((buf, outcome));
        }
    }
}

/// A bounds-checked reader over a byte slice: every accessor returns `None`
/// instead of panicking when the bytes run out, which the parser maps to
/// `Incomplete` or `Malformed` depending on where it is.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// How far this cursor has moved into `whole`, the slice it was made from.
    fn offset(&self, whole: &[u8]) -> usize {
        whole.len() - self.rest.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        let (&byte, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(byte)
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes(bytes.try_into().ok()?))
    }

    fn u24(&mut self) -> Option<usize> {
        let bytes = self.take(3)?;
        Some(bytes.iter().fold(0, |n, &b| (n << 8) | usize::from(b)))
    }

    /// An opaque vector with a one-byte length prefix (RFC 8446 §3.4).
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// An opaque vector with a two-byte length prefix (RFC 8446 §3.4).
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
#[path = "client_hello_tests.rs"]
mod tests;
