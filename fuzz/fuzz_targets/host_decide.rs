//! Feeds arbitrary text to host normalisation and, when it normalises, to
//! `Policy::decide` on the shipped policy: the text comes from untrusted
//! request lines, Host headers and SNI, so nothing here may panic, and a
//! normalised host must really be canonical, or a banned name could be
//! spelled past the matcher.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weerwal::policy::{load_embedded, normalise_host, parse_authority, Date, Host, Policy, Rule, Subject, Target, Verdict};

fn policy() -> &'static (Policy, Date) {
    static POLICY: OnceLock<(Policy, Date)> = OnceLock::new();
    POLICY.get_or_init(|| {
        let today = Date::today();
        let (policy, _warnings) = load_embedded(today).expect("the embedded policy loads");
        (policy, today)
    })
}

fuzz_target!(|data: &[u8]| {
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
});

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
