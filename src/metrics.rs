//! Counters for `/metrics` (Prometheus text format): cheap atomics bumped on
//! the request path, rendered only when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds (seconds) of the audit write latency buckets: from a
/// page-cache write (tens of µs) to a slow fsync.
const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub connect_requests: AtomicU64,
    pub blocked: DashMap<String, AtomicU64>,
    pub exempted: AtomicU64,
    pub gateway_denied: AtomicU64,
    pub auth_failed: AtomicU64,
    /// Directory requests that failed (unreachable, TLS, service account refused).
    pub directory_errors: AtomicU64,
    pub audit_write: Histogram,
    /// [`CLUSTER_OFF`], [`CLUSTER_OK`] or [`CLUSTER_DEGRADED`].
    pub cluster: AtomicU64,
    /// Free bytes on the audit volume, as last looked at by the writer.
    pub audit_free_bytes: AtomicU64,
    /// Repeated attempts counted instead of written one by one.
    pub audit_coalesced: AtomicU64,
    pub dns: DnsMetrics,
}

/// The DNS listener's counters (`[dns]`).
#[derive(Default)]
pub struct DnsMetrics {
    /// Well-formed questions from allowed clients.
    pub queries: AtomicU64,
    pub blocked: DashMap<String, AtomicU64>,
    pub forwarded: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Clients outside `allow_clients`.
    pub refused: AtomicU64,
    /// Packets answered FORMERR/NOTIMP/REFUSED before any policy question.
    pub malformed: AtomicU64,
    /// UDP queries dropped because too many were in flight.
    pub dropped: AtomicU64,
    pub upstream_latency: Histogram,
}

impl DnsMetrics {
    pub fn blocked(&self, app: &str) {
        count_app(&self.blocked, app);
    }
}

fn count_app(map: &DashMap<String, AtomicU64>, app: &str) {
    if let Some(c) = map.get(app) {
        c.fetch_add(1, Ordering::Relaxed);
        return;
    }
    map.entry(app.to_string()).or_default().fetch_add(1, Ordering::Relaxed);
}

/// No `[cluster]` configured.
pub const CLUSTER_OFF: u64 = 0;
/// `[cluster]` configured and its database reachable.
pub const CLUSTER_OK: u64 = 1;
/// `[cluster]` configured and its database unreachable.
pub const CLUSTER_DEGRADED: u64 = 2;

/// The process's metrics. One process serves one configuration, so one set.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    pub fn blocked(&self, app: &str) {
        count_app(&self.blocked, app);
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, live_sessions: usize, flagged: usize) -> String {
        let mut out = String::with_capacity(2048);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut out,
            "weerwal_requests_total",
            "Requests handled by the proxy.",
            self.requests.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_connect_requests_total",
            "CONNECT requests handled by the proxy.",
            self.connect_requests.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP weerwal_blocked_total Blocked attempts by app.\n# TYPE weerwal_blocked_total counter"
        );
        let mut apps: Vec<(String, u64)> =
            self.blocked.iter().map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed))).collect();
        apps.sort();
        for (app, n) in apps {
            let _ = writeln!(out, "weerwal_blocked_total{{app=\"{}\"}} {n}", label(&app));
        }
        counter(
            &mut out,
            "weerwal_exempted_total",
            "Exempted attempts let through.",
            self.exempted.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_gateway_denied_total",
            "Requests to protected systems answered with the remediation page.",
            self.gateway_denied.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_auth_failed_total",
            "Failed proxy logins.",
            self.auth_failed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_directory_errors_total",
            "Directory (LDAP) requests that failed: unreachable, TLS refused, service account refused.",
            self.directory_errors.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP weerwal_audit_free_bytes Free space on the audit log's volume (alert well before it reaches audit.free_space_refuse_mb).\n# TYPE weerwal_audit_free_bytes gauge\nweerwal_audit_free_bytes {}", self.audit_free_bytes.load(Ordering::Relaxed));
        counter(
            &mut out,
            "weerwal_audit_coalesced_total",
            "Repeated identical attempts counted instead of written one by one.",
            self.audit_coalesced.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP weerwal_live_sessions Sessions currently live.\n# TYPE weerwal_live_sessions gauge\nweerwal_live_sessions {live_sessions}");
        let _ = writeln!(out, "# HELP weerwal_flagged_subjects Subjects refused protected systems until they attest.\n# TYPE weerwal_flagged_subjects gauge\nweerwal_flagged_subjects {flagged}");
        let cluster = self.cluster.load(Ordering::Relaxed);
        if cluster != CLUSTER_OFF {
            let _ = writeln!(out, "# HELP weerwal_cluster_degraded 1 while the cluster database cannot be reached.\n# TYPE weerwal_cluster_degraded gauge\nweerwal_cluster_degraded {}", u64::from(cluster == CLUSTER_DEGRADED));
        }
        histogram(
            &mut out,
            "weerwal_audit_write_seconds",
            "Time from handing a record to the writer until it is written.",
            &self.audit_write,
        );
        let dns = &self.dns;
        counter(
            &mut out,
            "weerwal_dns_queries_total",
            "DNS questions from allowed clients.",
            dns.queries.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP weerwal_dns_blocked_total DNS questions for banned names, by app.\n# TYPE weerwal_dns_blocked_total counter"
        );
        let mut apps: Vec<(String, u64)> =
            dns.blocked.iter().map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed))).collect();
        apps.sort();
        for (app, n) in apps {
            let _ = writeln!(out, "weerwal_dns_blocked_total{{app=\"{}\"}} {n}", label(&app));
        }
        counter(
            &mut out,
            "weerwal_dns_forwarded_total",
            "DNS questions answered by the upstream resolver.",
            dns.forwarded.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_dns_upstream_errors_total",
            "Upstream resolvers that failed or timed out on a question.",
            dns.upstream_errors.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_dns_refused_total",
            "DNS questions refused: the client is outside allow_clients.",
            dns.refused.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_dns_malformed_total",
            "DNS packets answered with an error before any policy question.",
            dns.malformed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "weerwal_dns_dropped_total",
            "DNS queries dropped: too many in flight.",
            dns.dropped.load(Ordering::Relaxed),
        );
        histogram(
            &mut out,
            "weerwal_dns_upstream_seconds",
            "Time the upstream resolver took to answer.",
            &dns.upstream_latency,
        );
        out
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
}

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.blocked("TikTok");
        m.blocked("TikTok");
        m.blocked("Ali\"Express");
        m.audit_write.observe(Duration::from_micros(50));
        m.audit_write.observe(Duration::from_millis(3));
        let text = m.render(2, 1);
        assert!(text.contains("weerwal_blocked_total{app=\"TikTok\"} 2"));
        assert!(text.contains("weerwal_blocked_total{app=\"Ali\\\"Express\"} 1"));
        assert!(text.contains("weerwal_audit_write_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("weerwal_audit_write_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("weerwal_audit_write_seconds_count 2"));
        assert!(text.contains("weerwal_live_sessions 2"));
        m.dns.blocked("TikTok");
        m.dns.upstream_latency.observe(Duration::from_millis(2));
        let text = m.render(0, 0);
        assert!(text.contains("weerwal_dns_blocked_total{app=\"TikTok\"} 1"));
        assert!(text.contains("weerwal_dns_upstream_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("# TYPE weerwal_dns_forwarded_total counter\nweerwal_dns_forwarded_total 0"));
    }
}
