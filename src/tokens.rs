//! Form tokens bound to something (a pre-session cookie, a flagged person)
//! by a process secret: HMAC-SHA-256 (the `hmac` crate), cut to 128 bits and
//! written in hex, and checked in constant time (`subtle`, through
//! `hmac`'s own verification). Used by the dashboard's login form and the
//! attestation form of the remediation page.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC a token carries.
const TOKEN_BYTES: usize = 16;

fn mac(secret: &[u8; 32], context: &[u8], bound_to: &[u8]) -> HmacSha256 {
    // A 32-byte key is always accepted (any length is).
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(context);
    mac.update(b"\0");
    mac.update(bound_to);
    mac
}

/// The token for `bound_to` in `context` (which keeps tokens of one use
/// from being valid for another).
pub fn token(secret: &[u8; 32], context: &str, bound_to: &str) -> String {
    hex::encode(&mac(secret, context.as_bytes(), bound_to.as_bytes()).finalize().into_bytes()[..TOKEN_BYTES])
}

/// Whether `token` is the token for `bound_to` in `context`, compared in
/// constant time.
pub fn token_ok(secret: &[u8; 32], context: &str, bound_to: &str, token: &str) -> bool {
    let Ok(given) = hex::decode(token) else { return false };
    given.len() == TOKEN_BYTES
        && mac(secret, context.as_bytes(), bound_to.as_bytes()).verify_truncated_left(&given).is_ok()
}

/// Compares two secrets (session CSRF tokens) without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_is_rfc_4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; padded with zeros to 32
        // bytes it is the same HMAC (keys shorter than the block are padded).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mut m = HmacSha256::new_from_slice(&key).unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_are_bound_to_secret_context_and_subject() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let t = token(&a, "attest", "10.0.0.7");
        assert_eq!(t.len(), 32);
        assert!(token_ok(&a, "attest", "10.0.0.7", &t));
        assert!(!token_ok(&b, "attest", "10.0.0.7", &t));
        assert!(!token_ok(&a, "login", "10.0.0.7", &t));
        assert!(!token_ok(&a, "attest", "10.0.0.8", &t));
        assert!(!token_ok(&a, "attest", "10.0.0.7", &t[..30]));
        assert!(!token_ok(&a, "attest", "10.0.0.7", "zz"));
        assert!(!token_ok(&a, "attest", "10.0.0.7", ""));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
