//! Host normalisation: one canonical spelling per host, so that a banned name
//! cannot slip past the matcher dressed up as `M.AliExpress.COM.`, as punycode
//! or as an odd IPv4 form. Anything that cannot be normalised is refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A host in canonical form: lower-case ASCII (IDNA applied, no trailing dot)
/// or a parsed IP address. Only values of this type reach the matcher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// The form used for matching, logging and certificates: the name, or the
    /// IP address without brackets.
    pub fn as_key(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Host::Name(n) => std::borrow::Cow::Borrowed(n),
            Host::Ip(ip) => std::borrow::Cow::Owned(ip.to_string()),
        }
    }
}

impl fmt::Display for Host {
    /// Writes the host as it goes into a URI authority (IPv6 in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
        }
    }
}

/// Why a host was refused. Every variant means "400, never allowed".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("host contains a character that is not allowed: {0:?}")]
    BadCharacter(char),
    #[error("percent-encoded hosts are refused")]
    PercentEncoded,
    #[error("user information (`@`) in the authority is refused")]
    UserInfo,
    #[error("IPv4 address in a non-standard form (decimal, hex, octal or short) is refused")]
    AmbiguousIpv4,
    #[error("invalid IPv6 literal")]
    BadIpv6,
    #[error("invalid international domain name")]
    Idna,
    #[error("host label empty or longer than 63 characters")]
    BadLabel,
    #[error("host name longer than 253 characters")]
    TooLong,
    #[error("missing port")]
    MissingPort,
    #[error("invalid port")]
    BadPort,
}

/// Normalises a bare host (no port): the single place where DESIGN.md's
/// normalisation rules live, shared by the proxy, the policy loader and the
/// history scanner.
pub fn normalise_host(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
        // Zone identifiers (`%25eth0`) make no sense to a proxy and are refused.
        return inner.parse::<Ipv6Addr>().map(|ip| Host::Ip(IpAddr::V6(ip))).map_err(|_| HostError::BadIpv6);
    }
    for c in raw.chars() {
        match c {
            '%' => return Err(HostError::PercentEncoded),
            '@' => return Err(HostError::UserInfo),
            c if c.is_control() || c.is_whitespace() => return Err(HostError::BadCharacter(c)),
            '/' | '\\' | '?' | '#' | ':' | '[' | ']' | '<' | '>' | '"' | '^' | '|' | '{' | '}' | '`' | '*' | '!'
            | '$' | '&' | '\'' | '(' | ')' | '+' | ',' | ';' | '=' | '~' => return Err(HostError::BadCharacter(c)),
            _ => {}
        }
    }
    // One trailing dot is the fully-qualified spelling of the same name.
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() {
        return Err(HostError::Empty);
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_strict(trimmed).map_err(|_| HostError::Idna)?
    };
    // Punycode labels that decode to something invalid are refused too.
    let ascii = if ascii.split('.').any(|l| l.starts_with("xn--")) {
        idna::domain_to_ascii_strict(&ascii).map_err(|_| HostError::Idna)?
    } else {
        ascii
    };
    if ascii.len() > 253 {
        return Err(HostError::TooLong);
    }
    let last = ascii.rsplit('.').next().unwrap_or("");
    if looks_numeric(last) {
        return strict_ipv4(&ascii).map(|ip| Host::Ip(IpAddr::V4(ip)));
    }
    for label in ascii.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostError::BadLabel);
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(HostError::BadCharacter(c));
        }
    }
    Ok(Host::Name(ascii))
}

/// WHATWG URL's "ends in a number" test: browsers treat such a host as IPv4,
/// so we must too, or `0x7f.1` would be a name to us and an address to them.
fn looks_numeric(label: &str) -> bool {
    if label.is_empty() {
        return false;
    }
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let hex = label.strip_prefix("0x").or_else(|| label.strip_prefix("0X"));
    matches!(hex, Some(h) if h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Only the plain dotted-quad with decimal octets and no leading zeros is an
/// address we accept; every other numeric spelling is ambiguous between
/// clients and is refused.
fn strict_ipv4(s: &str) -> Result<Ipv4Addr, HostError> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return Err(HostError::AmbiguousIpv4);
    }
    let mut octets = [0u8; 4];
    for (slot, part) in octets.iter_mut().zip(&parts) {
        let canonical = !part.is_empty()
            && part.len() <= 3
            && part.bytes().all(|b| b.is_ascii_digit())
            && !(part.len() > 1 && part.starts_with('0'));
        if !canonical {
            return Err(HostError::AmbiguousIpv4);
        }
        *slot = part.parse().map_err(|_| HostError::AmbiguousIpv4)?;
    }
    Ok(Ipv4Addr::from(octets))
}

/// Splits `host[:port]` (IPv6 in brackets) and normalises the host. A port
/// that is present must be a valid number; `default_port` fills in when it is
/// absent, and `None` means the port is required (CONNECT).
pub fn parse_authority(raw: &str, default_port: Option<u16>) -> Result<(Host, u16), HostError> {
    if raw.contains('@') {
        return Err(HostError::UserInfo);
    }
    let (host_part, port_part) = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => {
                let rest = &raw[end + 1..];
                match rest.strip_prefix(':') {
                    Some(p) => (&raw[..=end], Some(p)),
                    None if rest.is_empty() => (&raw[..=end], None),
                    None => return Err(HostError::BadIpv6),
                }
            }
            None => return Err(HostError::BadIpv6),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port_part {
        Some(p) => parse_port(p)?,
        None => default_port.ok_or(HostError::MissingPort)?,
    };
    Ok((normalise_host(host_part)?, port))
}

fn parse_port(p: &str) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::BadPort),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_string())
    }

    #[test]
    fn case_and_trailing_dot_fold_to_one_name() {
        assert_eq!(normalise_host("M.AliExpress.COM."), Ok(name("m.aliexpress.com")));
        assert_eq!(normalise_host("aliexpress.com"), Ok(name("aliexpress.com")));
    }

    #[test]
    fn unicode_names_become_punycode() {
        assert_eq!(normalise_host("bücher.de"), Ok(name("xn--bcher-kva.de")));
        assert_eq!(normalise_host("XN--BCHER-KVA.de"), Ok(name("xn--bcher-kva.de")));
    }

    #[test]
    fn ip_literals_are_parsed_canonically() {
        assert_eq!(normalise_host("127.0.0.1"), Ok(Host::Ip("127.0.0.1".parse().unwrap())));
        assert_eq!(normalise_host("[0:0::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(Host::Ip("::1".parse().unwrap()).to_string(), "[::1]");
    }

    #[test]
    fn odd_ipv4_forms_are_refused() {
        for bad in
            ["2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.1", "127.0.0.01", "1.2.3.4.5", "0x7f000001", "256.1.1.1"]
        {
            assert_eq!(normalise_host(bad), Err(HostError::AmbiguousIpv4), "{bad}");
        }
    }

    #[test]
    fn hostile_spellings_are_refused() {
        assert_eq!(normalise_host("ali%65xpress.com"), Err(HostError::PercentEncoded));
        assert_eq!(normalise_host("a@b.com"), Err(HostError::UserInfo));
        assert!(normalise_host("aliexpress .com").is_err());
        assert!(normalise_host("aliexpress\t.com").is_err());
        assert!(normalise_host("aliexpress..com").is_err());
        assert!(normalise_host("..").is_err());
        assert!(normalise_host("").is_err());
        assert!(normalise_host("a/b").is_err());
        assert!(normalise_host("[::1").is_err());
        assert!(normalise_host("[fe80::1%25eth0]").is_err());
    }

    #[test]
    fn authority_ports() {
        assert_eq!(parse_authority("vk.com:80", Some(80)), Ok((name("vk.com"), 80)));
        assert_eq!(parse_authority("vk.com", Some(80)), Ok((name("vk.com"), 80)));
        assert_eq!(parse_authority("vk.com", None), Err(HostError::MissingPort));
        assert_eq!(parse_authority("vk.com:", Some(80)), Err(HostError::BadPort));
        assert_eq!(parse_authority("vk.com:99999", Some(80)), Err(HostError::BadPort));
        assert_eq!(parse_authority("[::1]:443", None), Ok((Host::Ip("::1".parse().unwrap()), 443)));
        assert_eq!(parse_authority("u@vk.com:80", None), Err(HostError::UserInfo));
    }
}
