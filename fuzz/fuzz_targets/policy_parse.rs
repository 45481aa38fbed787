//! Feeds arbitrary text to the policy file parser and compiler. A policy file
//! is written by an administrator, but a broken one must give errors with
//! file and line, never a panic (a panic on reload would take the proxy
//! down). When the text compiles, the compiled policy must be consistent.
//! The checks live in `checks.rs`, shared with `tests/it/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::policy_parse(data));
