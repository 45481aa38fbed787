//! Small pieces of HTTP the dashboard needs and no crate of ours provides:
//! `application/x-www-form-urlencoded` (query strings and form bodies),
//! percent-encoding for links, and the `Cookie` header.

use http::HeaderMap;

/// Decodes `a=1&b=x+y%21` into pairs. Malformed escapes are kept as
/// written; invalid UTF-8 is replaced (a filter value is then simply wrong,
/// never dangerous: it is escaped wherever it is shown).
pub fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex_val(b.get(i + 1)), hex_val(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: Option<&u8>) -> Option<u8> {
    match c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&k2=v2` from pairs, leaving out empty values.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Compares two secrets without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_round_trip_and_odd_input() {
        let pairs = parse_urlencoded("user=j+de+vries&host=m.aliexpress.com&x=%3Cb%3E&bad=%zz%4&empty=&flag");
        assert_eq!(
            pairs,
            vec![
                ("user".into(), "j de vries".into()),
                ("host".into(), "m.aliexpress.com".into()),
                ("x".into(), "<b>".into()),
                ("bad".into(), "%zz%4".into()),
                ("empty".into(), String::new()),
                ("flag".into(), String::new()),
            ]
        );
        let q = query_string([("since", "2026-11-23T10:00:00+01:00"), ("user", ""), ("app", "Ali Express&x")]);
        assert_eq!(q, "since=2026-11-23T10%3A00%3A00%2B01%3A00&app=Ali%20Express%26x");
        assert_eq!(parse_urlencoded(&q)[0].1, "2026-11-23T10:00:00+01:00");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("a%4"), "a%4");
        assert_eq!(decode("%41"), "A");
    }

    #[test]
    fn cookies_and_constant_time_compare() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; weerwal_admin=abc".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "weerwal_admin"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "weerwal"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
