//! The checks behind the fuzz targets `client_hello`, `host_decide` and
//! `policy_parse`, as plain functions: the fuzz targets call them on
//! generated inputs, and
//! `tests/it/fuzz_regressions.rs` (which includes this file by path) calls them
//! on every input a fuzz run ever found, so both always check the same thing.
//! No libFuzzer here: this file must build in the main crate's tests too.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use weerwal::policy::{
    load_embedded, normalise_host, parse_authority, Date, Host, Policy, PolicyBuilder, PolicyError, Rule, Subject,
    Target, Verdict, Zone, EMBEDDED,
};
use weerwal::proxy::client_hello::{parse_client_hello, ClientHello, MAX_CLIENT_HELLO_BYTES};

fn policy() -> &'static (Policy, Date) {
    static POLICY: OnceLock<(Policy, Date)> = OnceLock::new();
    POLICY.get_or_init(|| {
        let (policy, _warnings) = load_embedded(&Zone::default()).expect("the embedded policy loads");
        let today = policy.today();
        (policy, today)
    })
}

/// The `host_decide` fuzz target: arbitrary bytes as a host or authority.
pub fn host_decide(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(host) = normalise_host(&text) {
        check(&host, &text);
    }
    for default_port in [None, Some(80)] {
        if let Ok((host, port)) = parse_authority(&text, default_port) {
            assert_ne!(port, 0, "{text:?}: port 0 accepted");
            check(&host, &text);
        }
    }
}

/// The invariants of a normalised host, and of the decision on it.
fn check(host: &Host, input: &str) {
    match host {
        Host::Name(name) => {
            assert!(!name.is_empty(), "{input:?}: empty name");
            assert!(name.is_ascii(), "{input:?} -> {name:?}: not ASCII");
            assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{input:?} -> {name:?}: not lower case");
            assert!(!name.ends_with('.'), "{input:?} -> {name:?}: trailing dot");
            assert!(!name.starts_with('.') && !name.contains(".."), "{input:?} -> {name:?}: empty label");
            assert!(name.len() <= 253, "{input:?} -> {name:?}: longer than 253");
            assert_eq!(host.as_key(), name.as_str());
        }
        Host::Ip(_) => {}
    }
    // Idempotence: the canonical spelling normalises to itself, both as a
    // bare host and as an authority (IPv6 in brackets).
    let written = host.to_string();
    assert_eq!(normalise_host(&written).as_ref(), Ok(host), "{input:?} -> {written:?} does not re-normalise to itself");
    assert_eq!(
        parse_authority(&written, Some(443)).map(|(h, _)| h).as_ref(),
        Ok(host),
        "{input:?} -> {written:?} does not re-parse as an authority"
    );

    let (policy, today) = policy();
    let subject = Subject::anonymous(IpAddr::from([127, 0, 0, 1]));
    let verdict = policy.decide(&subject, &Target { host, user_agent: None, date: *today });
    let key = host.as_key();
    match &verdict {
        // Nobody is exempt without a user, group or device.
        Verdict::Exempt { .. } => panic!("{input:?}: an anonymous subject was exempted"),
        Verdict::Block(m) => {
            let Rule::Domain(rule) = &m.rule else { panic!("{input:?}: blocked by a user-agent rule without one") };
            // A rule matches the name itself or a subdomain, on a label boundary.
            assert!(
                *key == **rule || key.ends_with(&format!(".{rule}")),
                "{input:?}: {key} blocked by {rule}, which is not a suffix on a label boundary"
            );
            // ...and so every subdomain of a blocked name is blocked too.
            if let Host::Name(name) = host {
                let sub = format!("x.{name}");
                if let Ok(sub_host) = normalise_host(&sub) {
                    let v = policy.decide(&subject, &Target { host: &sub_host, user_agent: None, date: *today });
                    assert!(matches!(v, Verdict::Block(_)), "{input:?}: {name} is blocked but {sub} is not");
                }
            }
        }
        Verdict::Allow => {
            // Not banned: no parent domain is a banned domain either.
            if let Host::Name(name) = host {
                let mut rest = name.as_str();
                while let Some((_, parent)) = rest.split_once('.') {
                    assert!(
                        policy.domains().all(|(d, _)| d != parent),
                        "{input:?}: {name} allowed although its parent {parent} is banned"
                    );
                    rest = parent;
                }
            }
        }
    }
    // The same host with the fuzz input as User-Agent: the signature scan
    // must not panic, and a domain block stays a block.
    let with_ua = policy.decide(&subject, &Target { host, user_agent: Some(input), date: *today });
    if matches!(verdict, Verdict::Block(_)) {
        assert_eq!(with_ua, verdict, "{input:?}: a User-Agent changed a domain block");
    }
}

/// The `policy_parse` fuzz target: the first byte chooses whether the shipped
/// policy is read first; the rest is one policy file.
pub fn policy_parse(data: &[u8]) {
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
}

/// The `client_hello` fuzz target: arbitrary bytes as the first bytes of a
/// CONNECT tunnel. They come straight from untrusted clients, so the parser
/// must never panic, and its final answers must be final, because the reader
/// stops and acts on the first one it gets. Returns the answer on `data`.
pub fn client_hello(data: &[u8]) -> ClientHello {
    let answer = parse_client_hello(data);

    // The reader never buffers more than the cap, so at the cap the parser
    // must have decided.
    if data.len() >= MAX_CLIENT_HELLO_BYTES {
        assert_ne!(answer, ClientHello::Incomplete, "undecided at the cap ({} bytes)", data.len());
    }

    // More bytes must not change a final answer (checked on a cheap prefix:
    // half the input).
    let prefix = parse_client_hello(&data[..data.len() / 2]);
    if prefix != ClientHello::Incomplete {
        assert_eq!(
            prefix,
            answer,
            "the first {} of {} bytes gave a different final answer",
            data.len() / 2,
            data.len()
        );
    }

    // ...nor do bytes after it: the reader may have read past the hello.
    if answer != ClientHello::Incomplete {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0x16, 0x03, 0x01, 0x00]);
        assert_eq!(parse_client_hello(&longer), answer, "bytes after a final answer changed it");
    }

    // A host name is handed to the policy as it is: never empty, never
    // anything but visible ASCII (no spaces, controls or UTF-8).
    if let ClientHello::Sni(name) = &answer {
        assert!(!name.is_empty(), "empty SNI accepted");
        assert!(name.bytes().all(|b| b.is_ascii_graphic()), "SNI {name:?} is not visible ASCII");
    }
    answer
}
