//! The integration tests, as one binary (one link of the crate instead of
//! one per file): each module starts real servers and real clients on
//! loopback. Run one module with `cargo test --test it bypass::`.

mod common;

mod admin;
mod admin_browser;
mod audit_logs;
mod bypass;
mod cli;
mod cluster;
mod directory;
mod dns;
mod explain;
mod fuzz_regressions;
mod gate;
mod gateway;
mod hardening;
mod hardening2;
mod history;
#[cfg(unix)]
mod history_browsers;
mod identity;
mod own_host;
mod pac;
#[cfg(target_os = "linux")]
mod package;
mod proxy_http;
mod proxy_https;
mod slapd;
mod timezone;
mod tunnel_splice;
