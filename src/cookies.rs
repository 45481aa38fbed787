//! The `Cookie` request header, read with the `cookie` crate, for the
//! dashboard's sessions and the gateway's device id (`Set-Cookie` values
//! are built with `cookie::Cookie::build` where they are sent).

use cookie::Cookie;
use http::HeaderMap;

/// The value of cookie `name` in the request's `Cookie` headers (the first
/// one, surrounding double quotes removed).
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; weerwal_admin=abc".parse().unwrap());
        h.append(http::header::COOKIE, "b=\"2\"; broken; c=3".parse().unwrap());
        assert_eq!(get(&h, "weerwal_admin").as_deref(), Some("abc"));
        assert_eq!(get(&h, "b").as_deref(), Some("2"));
        assert_eq!(get(&h, "c").as_deref(), Some("3"));
        assert_eq!(get(&h, "weerwal"), None);
    }
}
