//! Readiness for a service manager: under systemd (`Type=notify`) weerwal
//! says `READY=1` once every listener is bound and the policy is loaded, so
//! `systemctl start` returns only when the proxy answers, and units ordered
//! after it start against a working proxy. Outside systemd (no
//! `NOTIFY_SOCKET` in the environment) these calls do nothing.

use std::net::SocketAddr;

/// Tells the service manager that weerwal is ready: called once, after
/// `serve` has bound every listener (proxy, gateway, dashboard) and loaded
/// the policy. `listening` goes into the `STATUS=` line `systemctl status`
/// shows. A failure to notify is logged, never fatal: the proxy works.
pub fn ready(listening: &[SocketAddr]) {
    let addrs: Vec<String> = listening.iter().map(|a| a.to_string()).collect();
    let status = format!("serving on {}", addrs.join(", "));
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
}

/// Tells the service manager that weerwal is stopping (requests in flight
/// are finishing and the audit log is being flushed).
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("stopping: finishing requests in flight")]);
}

fn send(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}
