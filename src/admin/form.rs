//! Query strings and form bodies of the dashboard
//! (`application/x-www-form-urlencoded`, with `form_urlencoded`), and
//! percent-encoding for the links it writes (`percent-encoding`).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Decodes `a=1&b=x+y%21` into pairs. Malformed escapes are kept as
/// written; invalid UTF-8 is replaced (a filter value is then simply wrong,
/// never dangerous: it is escaped wherever it is shown).
pub fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes()).into_owned().collect()
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
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
        let one = |s: &str| parse_urlencoded(&format!("v={s}"))[0].1.clone();
        assert_eq!(one("%"), "%");
        assert_eq!(one("a%4"), "a%4");
        assert_eq!(one("%41"), "A");
    }
}
