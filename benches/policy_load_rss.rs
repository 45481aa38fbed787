//! Loading a policy of 1,000,000 domains from disk, in a process of its own
//! so its memory can be read honestly from `/proc/self/status`: the
//! resident set before, at its peak (VmHWM) and after loading, and the
//! wall time of `policy::load_dir` (read + parse + check + compile).
//!
//! `cargo bench --bench policy_load_rss` (no criterion: one measured load;
//! `DOMAINS=` and `PER_APP=` change the size and the split into files).

use std::time::Instant;

use weerwal::policy::{self, Zone};

#[path = "../bench/synthetic.rs"]
mod synthetic;

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    // The load runs in a child process with a fresh heap, so the text this
    // process generated does not sit in the numbers.
    if let Ok(dir) = std::env::var("WEERWAL_BENCH_POLICY_DIR") {
        return load(std::path::Path::new(&dir));
    }
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    // 100 apps of 10,000 domains, one file each, like a large blocklist split per app.
    let (n, per_app) = (env("DOMAINS", 1_000_000), env("PER_APP", 10_000));
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in synthetic::files(n, per_app) {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    for (name, text) in policy::EMBEDDED {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    // The files were just written, so they are in the page cache: the load
    // measures weerwal, not the disk.
    let exe = std::env::current_exe().unwrap();
    let status =
        std::process::Command::new(&exe).env("WEERWAL_BENCH_POLICY_DIR", dir.path()).status().expect("child runs");
    assert!(status.success());
}

fn load(dir: &std::path::Path) {
    let bytes: u64 = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let before = status_kib("VmRSS:");
    let t = Instant::now();
    let (policy, _warnings) = policy::load_dir(dir, &Zone::default()).expect("policy loads");
    let secs = t.elapsed().as_secs_f64();
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    println!(
        "policy_load_rss: {} domains ({:.1} MiB of TOML in {} files) loaded in {:.3} s; \
         RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB (policy resident: +{:.1} MiB)",
        policy.domain_count(),
        bytes as f64 / 1048576.0,
        policy.files().len(),
        secs,
        mib(before),
        mib(peak),
        mib(after),
        mib(after.saturating_sub(before)),
    );
    std::hint::black_box(&policy);
}
