//! Feeds arbitrary text to the policy file parser and compiler. A policy file
//! is written by an administrator, but a broken one must give errors with
//! file and line, never a panic (a panic on reload would take the proxy
//! down). When the text compiles, the compiled policy must be consistent.
#![no_main]

use std::net::IpAddr;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weerwal::policy::{normalise_host, Date, Host, PolicyBuilder, PolicyError, Subject, Target, Verdict, EMBEDDED};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let today = Date::parse("2026-01-15").unwrap();
    let mut builder = PolicyBuilder::new();
    // Half of the inputs are read after the shipped policy, so duplicate
    // apps and domains across files are exercised too.
    if mode & 1 == 1 {
        for (name, shipped) in EMBEDDED {
            builder.add_source(Path::new(name), shipped);
        }
    }
    builder.add_source(Path::new("fuzz.toml"), &text);
    let (policy, _warnings) = match builder.build(today) {
        Ok(built) => built,
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result without errors");
            for e in &errors.0 {
                if let PolicyError::Invalid { line, .. } = e {
                    assert!(*line >= 1, "line numbers start at 1");
                }
                let _ = e.to_string();
            }
            return;
        }
    };
    let subject = Subject::anonymous(IpAddr::from([10, 0, 0, 1]));
    for (domain, app) in policy.domains() {
        // Every compiled domain is canonical and blocks its own app.
        // Keys are written without brackets, so an IPv6 key needs them back.
        let host = normalise_host(domain)
            .or_else(|_| normalise_host(&format!("[{domain}]")))
            .unwrap_or_else(|e| panic!("compiled domain {domain:?} does not normalise: {e}"));
        match &host {
            Host::Name(n) => assert_eq!(n, domain, "compiled domain is not canonical"),
            Host::Ip(ip) => assert_eq!(ip.to_string(), domain, "compiled IP is not canonical"),
        }
        match policy.decide(&subject, &Target { host: &host, user_agent: None, date: today }) {
            Verdict::Block(m) => assert_eq!(m.app.name, app.name, "{domain} blocks the wrong app"),
            other => panic!("{domain} is in the policy but decides {other:?}"),
        }
    }
    for app in policy.apps() {
        assert!(!app.name.trim().is_empty());
        for sig in &app.user_agents {
            assert!(sig.len() >= 4 && *sig == sig.to_ascii_lowercase(), "signature {sig:?}");
        }
    }
    let _ = policy.digest();
});
