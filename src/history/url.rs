//! The host of a URL stored in a history row.
//!
//! Browsers store canonical URLs, but history files are data from disk, so the
//! parse is defensive: only `http` and `https` count (a `chrome://`, `file:`,
//! `about:` or `moz-extension:` entry was never a visit to a website), user
//! information and port are stripped, IPv6 stays in its brackets, and the
//! host goes through [`normalise_host`] like every host the proxy sees. A
//! host that cannot be normalised yields `None`: it is not a banned host.

use crate::policy::{normalise_host, Host};

/// The normalised host of an `http(s)://` URL, or `None`.
pub fn http_host(url: &str) -> Option<Host> {
    let (scheme, rest) = url.split_once(':')?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    // WHATWG URL treats `\` like `/` in special schemes, and tolerates any
    // number of slashes after the scheme.
    let rest = rest.trim_start_matches(['/', '\\']);
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // User information ends at the last `@` of the authority.
    let host_port = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = strip_port(host_port)?;
    normalise_host(host).ok()
}

/// `host[:port]` → `host`, keeping IPv6 brackets; `None` when malformed.
fn strip_port(host_port: &str) -> Option<&str> {
    if host_port.starts_with('[') {
        let close = host_port.find(']')?;
        let after = &host_port[close + 1..];
        if after.is_empty() || valid_port(after.strip_prefix(':')?) {
            return Some(&host_port[..=close]);
        }
        return None;
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if valid_port(port) => Some(host),
        Some(_) => None,
        None => Some(host_port),
    }
}

/// An empty port (`http://host:/`) is allowed by URLs and means the default.
fn valid_port(p: &str) -> bool {
    p.is_empty() || (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
}
