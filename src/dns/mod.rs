//! The DNS listener (`[dns]`): the policy for devices that do not use the
//! proxy. A phone on the municipal Wi-Fi asks its resolver for
//! `api16-normal-c-useast1a.tiktokv.com` before the TikTok app sends a byte;
//! weerwal answers that question itself (NXDOMAIN or the block page's
//! address), records it as a `blocked` attempt `via` dns and flags the
//! device for the compliance gateway, exactly as a proxy block would. Every
//! other question goes to the municipality's resolver and its answer comes
//! back unchanged, unrecorded: ordinary look-ups are nobody's business.
//!
//! [`message`] reads and answers (pure, fuzzed); [`upstream`] forwards;
//! [`server`] runs the UDP and TCP sockets. This module ties them together.

pub mod message;
mod pool;
pub mod server;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, EventKind, Record, Via};
use crate::compliance::{subject_key, Compliance};
use crate::config::{Config, DnsConfig};
use crate::decision::{flags_subject, Fetch};
use crate::identity::{canonical_ip, Identity};
use crate::policy::{Match, Policy, Subject};
use message::{Inspection, Plan, Question, Settings};
use upstream::Transport;

/// What the DNS listener shares with the rest of the server.
pub struct Shared {
    pub policy: Arc<ArcSwap<Policy>>,
    pub audit: AuditLog,
    pub identity: Arc<Identity>,
    pub compliance: Option<Arc<Compliance>>,
}

/// Everything a query needs, shared by the UDP and TCP listeners.
pub struct DnsState {
    pub policy: Arc<ArcSwap<Policy>>,
    pub audit: AuditLog,
    pub identity: Arc<Identity>,
    pub compliance: Option<Arc<Compliance>>,
    pub upstreams: Vec<upstream::Upstream>,
    pub allow_clients: Vec<IpNet>,
    pub settings: Settings,
    pub upstream_timeout: Duration,
}

impl DnsState {
    /// The listener's state from `[dns]` (allow_clients defaulting to the
    /// proxy's) and the server's shared parts; opens the upstream sockets,
    /// whose receivers end with `shutdown`.
    pub async fn new(
        config: &Config,
        dns: &DnsConfig,
        shared: Shared,
        shutdown: &CancellationToken,
    ) -> std::io::Result<DnsState> {
        let Shared { policy, audit, identity, compliance } = shared;
        let mut upstreams = Vec::with_capacity(dns.upstream.len());
        for &addr in &dns.upstream {
            upstreams.push(upstream::Upstream::connect(addr, shutdown).await?);
        }
        Ok(DnsState {
            policy,
            audit,
            identity,
            compliance,
            upstreams,
            allow_clients: dns.allow_clients.clone().unwrap_or_else(|| config.proxy.allow_clients.clone()),
            settings: Settings { block_answer: dns.block_answer, doh_canary: dns.doh_canary },
            upstream_timeout: dns.upstream_timeout,
        })
    }

    /// Whether a client may be answered at all (for packets that are not
    /// even a query: outsiders get silence).
    fn allows(&self, client: IpAddr) -> bool {
        self.allow_clients.iter().any(|net| net.contains(&client))
    }
}

/// Answers one client packet: `None` means no answer at all.
pub async fn handle(state: &DnsState, peer: SocketAddr, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let metrics = &crate::metrics::metrics().dns;
    let client = canonical_ip(peer.ip());
    let q = match message::inspect(packet) {
        Inspection::Ignore => return None,
        Inspection::Reply(bytes) => {
            metrics.malformed.fetch_add(1, Ordering::Relaxed);
            // Outsiders get no answer to what is not even a query.
            return state.allows(client).then_some(bytes);
        }
        Inspection::Question(q) => q,
    };
    let subject = state.identity.devices.subject(client);
    let policy = state.policy.load();
    let plan = message::plan(&q, &policy, &state.allow_clients, &subject, policy.today(), state.settings);
    if !matches!(plan, Plan::Refuse(_)) {
        metrics.queries.fetch_add(1, Ordering::Relaxed);
    }
    match plan {
        Plan::Refuse(bytes) => {
            metrics.refused.fetch_add(1, Ordering::Relaxed);
            Some(bytes)
        }
        Plan::Forward => Some(forward(state, &q, packet, transport).await),
        Plan::Reply(bytes) => Some(bytes),
        Plan::Block { reply, matched } => {
            record_block(state, &subject, &q, &matched).await;
            Some(reply)
        }
        Plan::Exempt { matched, reason } => {
            record_exempt(state, &subject, &q, &matched, reason).await;
            Some(forward(state, &q, packet, transport).await)
        }
    }
}

/// The upstream's answer, or SERVFAIL when none came. Never logs the name.
async fn forward(state: &DnsState, q: &Question, packet: &[u8], transport: Transport) -> Vec<u8> {
    let metrics = &crate::metrics::metrics().dns;
    match upstream::forward(&state.upstreams, packet, transport, state.upstream_timeout).await {
        Ok(answer) => {
            metrics.forwarded.fetch_add(1, Ordering::Relaxed);
            answer
        }
        Err(e) => {
            tracing::warn!(error = %e, "DNS upstream failed; answered SERVFAIL");
            message::servfail(q)
        }
    }
}

/// The audit record of a DNS attempt.
fn attempt_record(event: EventKind, subject: &Subject, session: &str, q: &Question, matched: &Match) -> Record {
    let mut r = Record::new(event);
    r.session = Some(session.to_string());
    r.client = Some(subject.client);
    r.device.clone_from(&subject.device);
    r.app = Some(matched.app.name.clone());
    r.rule = Some(matched.rule.as_str().to_string());
    r.host = Some(q.name().to_ascii_lowercase());
    r.method = Some("DNS".to_string());
    r.via = Some(Via::Dns);
    r.detail = Some(serde_json::json!({ "qtype": q.qtype().to_string() }));
    r
}

/// Session bookkeeping shared with the proxy: the attempt counts in the
/// device's session, whose first attempt writes `session_start`.
async fn session_for(state: &DnsState, subject: &Subject, matched: &Match, host: &str) -> Arc<str> {
    let sessions = &state.identity.sessions;
    let touched = sessions.touch(subject.client, None, subject.device.as_deref(), None);
    if let Some(ended) = touched.ended {
        if let Err(e) = state.audit.record(ended).await {
            tracing::error!(error = %e, "could not write session_end record");
        }
    }
    if let Some(start) = sessions.note_attempt(subject.client, None, &matched.app.name, host) {
        if let Err(e) = state.audit.record(start).await {
            tracing::error!(error = %e, "could not write session_start record");
        }
    }
    touched.id
}

/// Records a blocked query and flags the device, before the answer goes
/// out: a phone that asked for TikTok's API is refused webmail from then on.
async fn record_block(state: &DnsState, subject: &Subject, q: &Question, matched: &Match) {
    crate::metrics::metrics().dns.blocked(&matched.app.name);
    let host = q.name().to_ascii_lowercase();
    let session = session_for(state, subject, matched, &host).await;
    // The proxy's rule: a DNS question says nothing about navigation, so it
    // flags like an app's own request, except for hosts the ban marks
    // `embedded` (a pixel, an image CDN), which never flag.
    let flags = state.compliance.is_some().then(|| flags_subject(matched, Fetch::Unknown));
    let mut record = attempt_record(EventKind::Blocked, subject, &session, q, matched);
    record.flagged = flags;
    let seq = match state.audit.record(record).await {
        Ok(seq) => Some(seq),
        Err(e) => {
            tracing::error!(error = %e, "could not write audit record; blocking anyway");
            None
        }
    };
    let (Some(compliance), Some(true)) = (state.compliance.clone(), flags) else { return };
    let key = subject_key(subject);
    let app = matched.app.name.clone();
    // Flagging may write the state file: off the runtime's threads.
    let flagged = tokio::task::spawn_blocking(move || compliance.flag(&key, &app, &host, seq)).await;
    if let Err(e) = flagged {
        tracing::error!(error = %e, "could not flag the client for the compliance gateway");
    }
}

/// Records a query an exemption lets through.
async fn record_exempt(state: &DnsState, subject: &Subject, q: &Question, matched: &Match, reason: String) {
    crate::metrics::metrics().exempted.fetch_add(1, Ordering::Relaxed);
    let host = q.name().to_ascii_lowercase();
    let session = session_for(state, subject, matched, &host).await;
    let mut r = attempt_record(EventKind::Exempted, subject, &session, q, matched);
    r.reason = Some(reason);
    if let Err(e) = state.audit.record(r).await {
        tracing::error!(error = %e, "could not write exempted record");
    }
}
