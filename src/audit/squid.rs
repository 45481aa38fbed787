//! Blocked and exempted attempts as native Squid `access.log` lines, so the
//! report tools municipalities already run on Squid logs (SARG, LightSquid,
//! SquidAnalyzer) read them unchanged. Squid's default `squid` logformat:
//!
//! ```text
//! %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
//! 1732357002.123      0 10.1.2.3 TCP_DENIED/403 0 GET http://aliexpress.com/ jdevries HIER_NONE/- text/html
//! ```
//!
//! What weerwal does not know at record time is written as Squid writes an
//! unknown: the elapsed time and reply size as `0`. Every field is made free
//! of spaces and control characters (percent-encoded), so a line always has
//! exactly ten fields.

use std::io::Write;
use std::time::SystemTime;

use super::record::{EventKind, Record};
use super::time::unix_millis;

/// Appends the access-log line of `record` (written at `at`) to `out`;
/// returns false, writing nothing, for events Squid would not log.
pub fn access_line(out: &mut Vec<u8>, record: &Record, at: SystemTime) -> bool {
    let (code, status, hierarchy, mime) = match record.event {
        EventKind::Blocked => ("TCP_DENIED", 403, "HIER_NONE/-".to_string(), "text/html"),
        EventKind::Exempted => {
            let host = record.host.as_deref().map(|h| field(h, true)).unwrap_or_else(|| "-".into());
            ("TCP_MISS", 200, format!("HIER_DIRECT/{host}"), "-")
        }
        _ => return false,
    };
    let ms = unix_millis(at).max(0);
    let client = record.client.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
    let method = record.method.as_deref().map(|m| field(m, true)).unwrap_or_else(|| "-".into());
    let user = record.user.as_deref().map(|u| field(u, true)).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "{}.{:03} {:>6} {client} {code}/{status:03} 0 {method} {} {user} {hierarchy} {mime}",
        ms / 1000,
        ms % 1000,
        0,
        url(record),
    );
    true
}

/// `%ru`: `host:port` for CONNECT, else the URL (path only when recorded).
/// Requests on port 443 that are not CONNECT came through an intercepted
/// tunnel, so they are `https`.
fn url(r: &Record) -> String {
    let Some(host) = r.host.as_deref().filter(|h| !h.is_empty()) else { return "-".into() };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    let connect = r.method.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"));
    let url = if connect {
        format!("{host}:{}", r.port.unwrap_or(443))
    } else {
        let (scheme, default_port) = if r.port == Some(443) { ("https", 443) } else { ("http", 80) };
        let port = r.port.filter(|&p| p != default_port).map(|p| format!(":{p}")).unwrap_or_default();
        let path = r.path.as_deref().unwrap_or("/");
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("{scheme}://{host}{port}{slash}{path}")
    };
    field(&url, false)
}

/// A field without spaces, control characters or quotes: those bytes (and
/// non-ASCII, and `%` itself when `encode_percent`) are percent-encoded.
fn field(s: &str, encode_percent: bool) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b <= b' ' || b >= 0x7f || b == b'"' || (encode_percent && b == b'%') {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> SystemTime {
        humantime::parse_rfc3339("2024-11-23T10:16:42.123Z").unwrap()
    }

    #[test]
    fn blocked_get_and_exempted_connect() {
        let mut r = Record::new(EventKind::Blocked);
        r.client = Some("10.1.2.3".parse().unwrap());
        r.user = Some("jdevries".into());
        r.host = Some("aliexpress.com".into());
        r.port = Some(80);
        r.method = Some("GET".into());
        let mut out = Vec::new();
        assert!(access_line(&mut out, &r, at()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1732357002.123      0 10.1.2.3 TCP_DENIED/403 0 GET http://aliexpress.com/ jdevries HIER_NONE/- text/html\n"
        );
        let mut r = Record::new(EventKind::Exempted);
        r.host = Some("www.tiktok.com".into());
        r.port = Some(443);
        r.method = Some("CONNECT".into());
        r.user = Some("Jan de Vries%".into());
        let mut out = Vec::new();
        assert!(access_line(&mut out, &r, at()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1732357002.123      0 - TCP_MISS/200 0 CONNECT www.tiktok.com:443 Jan%20de%20Vries%25 HIER_DIRECT/www.tiktok.com -\n"
        );
        assert!(!access_line(&mut Vec::new(), &Record::new(EventKind::SessionStart), at()));
    }
}
