//! Arbitrary bytes as a DNS client's packet, through what the DNS listener
//! runs before any socket: `inspect`, then `plan` with the shipped policy.
//! The invariants are in `dns_checks.rs`, shared with `tests/it/dns.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "dns_checks.rs"]
mod dns_checks;

fuzz_target!(|data: &[u8]| dns_checks::dns_query(data));
