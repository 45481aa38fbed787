//! Feeds arbitrary text to host normalisation and, when it normalises, to
//! `Policy::decide` on the shipped policy: the text comes from untrusted
//! request lines, Host headers and SNI, so nothing here may panic, and a
//! normalised host must really be canonical (lower-case ASCII, no trailing
//! dot, normalising to itself again), or a banned name could be spelled past
//! the matcher. The checks live in `checks.rs`, shared with
//! `tests/it/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::host_decide(data));
