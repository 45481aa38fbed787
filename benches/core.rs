//! Micro-benchmarks of the per-request work (issue 8): host normalisation and
//! `Policy::decide` with the shipped policy and with 1,000,000 synthetic
//! domains, loading 1,000,000 domains, leaf certificate minting (cold) and
//! cache hits, and audit record serialisation + hashing.
//!
//! `cargo bench --bench core`; filter with e.g. `cargo bench --bench core -- decide`.
//! Loading 1,000,000 domains (time, peak and resident memory) is measured
//! once, in a process of its own: `cargo bench --bench policy_load_rss`.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use weerwal::audit::record::GENESIS;
use weerwal::audit::{EventKind, Record, Via};
use weerwal::ca::{CertificateAuthority, LeafCache};
use weerwal::policy::{self, normalise_host, Date, Policy, PolicyBuilder, Subject, Target, Zone};

#[path = "../bench/synthetic.rs"]
mod synthetic;

/// What a current desktop browser sends; the proxy passes it to `decide`,
/// which scans it for app signatures.
const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                         Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";

const MILLION: usize = 1_000_000;

/// A policy of `n` synthetic domains plus the shipped policy. Split into
/// apps of `per_app` domains, one file each: loading costs time quadratic in
/// the size of one file (see bench/RESULTS.md), so the decision benchmarks
/// use 1,000 files of 1,000 domains (`WEERWAL_BENCH_PER_APP` changes it) to
/// keep their set-up short. The domain lookup is one map whatever the split;
/// the User-Agent scan walks every app, so the `+ua` cases of the 1M group
/// also pay for 1,000 (signature-less) apps.
fn synthetic_policy(n: usize, per_app: usize) -> Policy {
    let mut b = PolicyBuilder::new();
    for (name, text) in synthetic::files(n, per_app) {
        b.add_source(Path::new(&name), &text);
    }
    for (name, text) in policy::EMBEDDED {
        b.add_source(Path::new(name), text);
    }
    b.build(Zone::default().today()).expect("synthetic policy builds").0
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .without_plots()
}

/// Normalise + decide, as the proxy does per request.
fn decide_once(policy: &Policy, subject: &Subject, raw: &str, ua: Option<&str>, date: Date) -> bool {
    let host = normalise_host(raw).expect("valid host");
    let v = policy.decide(subject, &Target { host: &host, user_agent: ua, date });
    matches!(v, policy::Verdict::Allow)
}

fn policy_benches(c: &mut Criterion) {
    let today = Zone::default().today();
    let subject = Subject::anonymous(IpAddr::from([10, 1, 2, 3]));
    let shipped = policy::load_embedded(&Zone::default()).expect("shipped policy").0;
    let t = Instant::now();
    let per_app = std::env::var("WEERWAL_BENCH_PER_APP").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let million = synthetic_policy(MILLION, per_app);
    eprintln!("(built the 1,000,000-domain policy in {:.2} s)", t.elapsed().as_secs_f64());
    assert!(million.domain_count() >= MILLION);

    let mut g = c.benchmark_group("normalise");
    for (name, raw) in [
        ("name", "www.example.org"),
        ("mixed_case_trailing_dot", "M.AliExpress.COM."),
        ("ipv4", "127.0.0.1"),
        ("idn", "bücher.example"),
    ] {
        g.bench_function(name, |b| b.iter(|| normalise_host(black_box(raw))));
    }
    g.finish();

    // (policy label, policy, allowed host, banned host)
    let banned_synthetic = format!("m.{}", synthetic::domain(777_777));
    let cases: [(&str, &Policy, &str); 2] =
        [("shipped", &shipped, "m.aliexpress.com"), ("1M", &million, banned_synthetic.as_str())];
    for (label, pol, banned) in cases {
        let mut g = c.benchmark_group(format!("decide_{label}"));
        for (case, raw) in [
            ("allowed_name", "www.nos.nl"),
            ("allowed_deep_name", "a.b.c.static.example.co.uk"),
            ("allowed_ipv4", "127.0.0.1"),
            ("banned", banned),
        ] {
            assert_eq!(decide_once(pol, &subject, raw, None, today), case != "banned", "{label} {raw}");
            // The decision alone, host already normalised, no User-Agent.
            let host = normalise_host(raw).unwrap();
            g.bench_function(format!("{case}/decide_only"), |b| {
                b.iter(|| {
                    pol.decide(black_box(&subject), &Target { host: black_box(&host), user_agent: None, date: today })
                })
            });
            // Normalise the raw host, then decide (no User-Agent).
            g.bench_function(format!("{case}/normalise+decide"), |b| {
                b.iter(|| decide_once(pol, black_box(&subject), black_box(raw), None, today))
            });
            // What the proxy does per request: normalise, then decide with the browser's User-Agent.
            g.bench_function(format!("{case}/normalise+decide+ua"), |b| {
                b.iter(|| decide_once(pol, black_box(&subject), black_box(raw), Some(black_box(CHROME_UA)), today))
            });
        }
        g.finish();
    }
    drop(million);
}

fn ca_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(CertificateAuthority::init(&dir.path().join("certs"), "Gemeente Bench", false).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cache = LeafCache::new(Arc::clone(&ca));
    let counter = AtomicU64::new(0);
    // Warm the shared leaf key so "cold" is what a new banned host costs.
    rt.block_on(cache.server_config("warm.aliexpress.com")).unwrap();

    let mut g = c.benchmark_group("leaf");
    g.sample_size(20);
    g.bench_function("mint_cold_new_host", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    black_box(cache.server_config(&format!("h{n}.aliexpress.com")).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    // The very first mint after start: also generates the shared P-256 leaf key.
    g.bench_function("mint_first_after_start", |b| {
        b.iter_batched(
            || LeafCache::new(Arc::clone(&ca)),
            |fresh| rt.block_on(async { black_box(fresh.server_config("aliexpress.com").await.unwrap()) }),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("cache_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cache.server_config(black_box("warm.aliexpress.com")).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn audit_benches(c: &mut Criterion) {
    let mut r = Record::new(EventKind::Blocked);
    r.seq = 1_234_567;
    r.ts = "2026-11-23T10:15:02.123Z".into();
    r.session = Some("8f3c2a9d0b1e4f5a6c7d8e9f0a1b2c3d".into());
    r.client = Some(IpAddr::from([10, 1, 2, 3]));
    r.device = Some("raadslaptops".into());
    r.app = Some("AliExpress".into());
    r.rule = Some("aliexpress.com".into());
    r.host = Some("m.aliexpress.com".into());
    r.port = Some(443);
    r.method = Some("CONNECT".into());
    r.via = Some(Via::Proxy);
    r.user_agent = Some(CHROME_UA.into());
    r.prev = GENESIS.into();
    let mut buf = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("audit");
    g.bench_function("record_write_line", |b| {
        b.iter(|| {
            buf.clear();
            black_box(black_box(&r).write_line(&mut buf).unwrap())
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = policy_benches, ca_benches, audit_benches }
criterion_main!(benches);
