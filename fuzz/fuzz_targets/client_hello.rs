//! Feeds arbitrary bytes to the ClientHello parser: they come straight from
//! untrusted clients, so it must never panic, and its final answers must be
//! final, because the reader stops and acts on the first one it gets.
//! The checks live in `checks.rs`, shared with `tests/it/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::client_hello(data);
});
