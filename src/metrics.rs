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
        let mut out = String::with_capacity(4096);
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (dns, cluster) = (&self.dns, self.cluster.load(Ordering::Relaxed));
        use Kind::{Counter, Gauge};
        // (kind, name, help, value), in the order they are rendered.
        let scalars: [(Kind, &str, &str, u64); 10] = [
            (Counter, "weerwal_requests_total", "Requests handled by the proxy.", n(&self.requests)),
            (
                Counter,
                "weerwal_connect_requests_total",
                "CONNECT requests handled by the proxy.",
                n(&self.connect_requests),
            ),
            (Counter, "weerwal_exempted_total", "Exempted attempts let through.", n(&self.exempted)),
            (
                Counter,
                "weerwal_gateway_denied_total",
                "Requests to protected systems answered with the remediation page.",
                n(&self.gateway_denied),
            ),
            (Counter, "weerwal_auth_failed_total", "Failed proxy logins.", n(&self.auth_failed)),
            (
                Counter,
                "weerwal_directory_errors_total",
                "Directory (LDAP) requests that failed: unreachable, TLS refused, service account refused.",
                n(&self.directory_errors),
            ),
            (
                Gauge,
                "weerwal_audit_free_bytes",
                "Free space on the audit log's volume (alert well before it reaches audit.free_space_refuse_mb).",
                n(&self.audit_free_bytes),
            ),
            (
                Counter,
                "weerwal_audit_coalesced_total",
                "Repeated identical attempts counted instead of written one by one.",
                n(&self.audit_coalesced),
            ),
            (Gauge, "weerwal_live_sessions", "Sessions currently live.", live_sessions as u64),
            (
                Gauge,
                "weerwal_flagged_subjects",
                "Subjects refused protected systems until they attest.",
                flagged as u64,
            ),
        ];
        for (kind, name, help, v) in scalars {
            metric(&mut out, kind, name, help, v);
        }
        by_app(&mut out, "weerwal_blocked_total", "Blocked attempts by app.", &self.blocked);
        if cluster != CLUSTER_OFF {
            let help = "1 while the cluster database cannot be reached.";
            metric(&mut out, Gauge, "weerwal_cluster_degraded", help, u64::from(cluster == CLUSTER_DEGRADED));
        }
        let help = "Time from handing a record to the writer until it is written.";
        histogram(&mut out, "weerwal_audit_write_seconds", help, &self.audit_write);
        let dns_counters: [(&str, &str, u64); 6] = [
            ("weerwal_dns_queries_total", "DNS questions from allowed clients.", n(&dns.queries)),
            ("weerwal_dns_forwarded_total", "DNS questions answered by the upstream resolver.", n(&dns.forwarded)),
            (
                "weerwal_dns_upstream_errors_total",
                "Upstream resolvers that failed or timed out on a question.",
                n(&dns.upstream_errors),
            ),
            (
                "weerwal_dns_refused_total",
                "DNS questions refused: the client is outside allow_clients.",
                n(&dns.refused),
            ),
            (
                "weerwal_dns_malformed_total",
                "DNS packets answered with an error before any policy question.",
                n(&dns.malformed),
            ),
            ("weerwal_dns_dropped_total", "DNS queries dropped: too many in flight.", n(&dns.dropped)),
        ];
        for (name, help, v) in dns_counters {
            metric(&mut out, Counter, name, help, v);
        }
        by_app(&mut out, "weerwal_dns_blocked_total", "DNS questions for banned names, by app.", &dns.blocked);
        let help = "Time the upstream resolver took to answer.";
        histogram(&mut out, "weerwal_dns_upstream_seconds", help, &dns.upstream_latency);
        out
    }
}

/// A Prometheus metric type.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric without labels, with its help and type lines.
fn metric(out: &mut String, kind: Kind, name: &str, help: &str, v: u64) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
}

/// A counter family labelled by app, apps in name order.
fn by_app(out: &mut String, name: &str, help: &str, map: &DashMap<String, AtomicU64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    let mut apps: Vec<(String, u64)> =
        map.iter().map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed))).collect();
    apps.sort();
    for (app, n) in apps {
        let _ = writeln!(out, "{name}{{app=\"{}\"}} {n}", label(&app));
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
