//! The decision table as fast unit tests: the same function the proxy and
//! `policy explain` call, over facts written out by hand. The socket tests
//! (tests/it/bypass.rs, tests/it/explain.rs) are the end-to-end layer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::config::ProxyConfig;
use crate::policy::{load_embedded, normalise_host, Date};

struct Gate {
    protected: Vec<String>,
    flags: HashMap<String, Flag>,
}

impl ComplianceView for Gate {
    fn is_protected(&self, host: &Host) -> bool {
        let key = host.as_key();
        self.protected.iter().any(|p| *key == **p || key.ends_with(&format!(".{p}")))
    }
    fn flag_of(&self, key: &str) -> Option<Flag> {
        self.flags.get(key).cloned()
    }
}

fn today() -> Date {
    Date::parse("2026-12-03").unwrap()
}

fn flag() -> Flag {
    Flag {
        app: "TikTok".into(),
        host: "www.tiktok.com".into(),
        since: "2026-12-01T10:00:00Z".into(),
        since_unix: 0,
        seq: Some(7),
    }
}

struct World {
    policy: Policy,
    proxy: ProxyConfig,
    denied: DeniedDestinations,
    own: Vec<SocketAddr>,
    gate: Gate,
}

fn world() -> World {
    let (policy, _) = load_embedded(&crate::policy::Zone::default()).unwrap();
    let proxy = ProxyConfig {
        allow_clients: vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.0/8".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let denied = DeniedDestinations::from_config(&proxy);
    let gate = Gate {
        protected: vec!["webmail.gemeente.nl".into()],
        flags: [("client:10.0.0.66".to_string(), flag())].into_iter().collect(),
    };
    World {
        policy,
        denied,
        own: vec!["10.0.0.1:3128".parse().unwrap(), "127.0.0.1:9090".parse().unwrap()],
        proxy,
        gate,
    }
}

impl World {
    fn rules(&self) -> Rules<'_> {
        Rules {
            policy: &self.policy,
            allow_clients: &self.proxy.allow_clients,
            connect_ports: &self.proxy.connect_ports,
            https: self.proxy.https,
            can_intercept: true,
            denied: &self.denied,
            own_addrs: &self.own,
            compliance: Some(&self.gate),
        }
    }
}

fn host(s: &str) -> Host {
    normalise_host(s).unwrap()
}

/// Decides `stage` for `target` from `client` as a known, anonymous subject.
fn decide_as(w: &World, stage: Stage<'_>, target: &str, port: u16, client: &str, ua: Option<&str>) -> Action {
    let client: IpAddr = client.parse().unwrap();
    let subject = Subject::anonymous(client);
    let h = host(target);
    let facts = Facts { stage, client, host: &h, port, user_agent: ua, who: Who::Known(&subject), today: today() };
    decide(&w.rules(), &facts)
}

fn label(a: &Action) -> String {
    format!("{} {}", a.label(), a.reason().label())
}

#[test]
fn the_decision_table() {
    let w = world();
    let get = Stage::Request { https: false, looped: false };
    let rows: Vec<(&str, Action, &str)> = vec![
        ("allowed host", decide_as(&w, get, "example.org", 80, "10.1.2.3", None), "FORWARD no_rule_matches"),
        ("banned apex", decide_as(&w, get, "aliexpress.com", 80, "10.1.2.3", None), "BLOCK banned_domain"),
        ("banned subdomain", decide_as(&w, get, "m.aliexpress.com", 80, "10.1.2.3", None), "BLOCK banned_domain"),
        ("lookalike", decide_as(&w, get, "notaliexpress.com", 80, "10.1.2.3", None), "FORWARD no_rule_matches"),
        (
            "app signature",
            decide_as(&w, get, "example.org", 80, "10.1.2.3", Some("Mozilla/5.0 AliApp(AE/8.1)")),
            "BLOCK app_signature",
        ),
        ("client outside", decide_as(&w, get, "example.org", 80, "192.0.2.7", None), "REFUSE client_not_allowed"),
        ("loopback for LAN", decide_as(&w, get, "127.0.0.1", 80, "10.1.2.3", None), "REFUSE destination_denied"),
        ("metadata", decide_as(&w, get, "169.254.169.254", 80, "10.1.2.3", None), "REFUSE destination_denied"),
        ("own address", decide_as(&w, get, "10.0.0.1", 3128, "10.1.2.3", None), "REFUSE loop"),
        (
            "own Via",
            decide_as(&w, Stage::Request { https: false, looped: true }, "example.org", 80, "10.1.2.3", None),
            "REFUSE loop",
        ),
        (
            "https absolute form",
            decide_as(&w, Stage::Request { https: true, looped: false }, "example.org", 443, "10.1.2.3", None),
            "REFUSE not_http",
        ),
        (
            "https absolute form, banned",
            decide_as(&w, Stage::Request { https: true, looped: false }, "tiktok.com", 443, "10.1.2.3", None),
            "BLOCK banned_domain",
        ),
        (
            "CONNECT allowed",
            decide_as(&w, Stage::Connect, "example.org", 443, "10.1.2.3", None),
            "TUNNEL no_rule_matches",
        ),
        ("CONNECT port", decide_as(&w, Stage::Connect, "example.org", 25, "10.1.2.3", None), "REFUSE port_not_allowed"),
        ("CONNECT banned", decide_as(&w, Stage::Connect, "vk.com", 443, "10.1.2.3", None), "INTERCEPT banned_domain"),
        (
            "SNI banned behind an address",
            decide_as(&w, Stage::Hello { sni: Some(&host("www.tiktok.com")) }, "192.0.2.10", 443, "10.1.2.3", None),
            "INTERCEPT banned_domain",
        ),
        (
            "banned CONNECT, harmless SNI",
            decide_as(&w, Stage::Hello { sni: Some(&host("example.org")) }, "wechat.com", 443, "10.1.2.3", None),
            "INTERCEPT banned_domain",
        ),
        (
            "harmless both",
            decide_as(&w, Stage::Hello { sni: Some(&host("example.org")) }, "example.org", 443, "10.1.2.3", None),
            "TUNNEL no_rule_matches",
        ),
        (
            "flagged to webmail",
            decide_as(&w, get, "webmail.gemeente.nl", 80, "10.0.0.66", None),
            "REMEDIATE flagged_subject",
        ),
        (
            "unflagged to webmail",
            decide_as(&w, get, "webmail.gemeente.nl", 80, "10.0.0.67", None),
            "FORWARD no_rule_matches",
        ),
        (
            "flagged, webmail only in SNI",
            decide_as(
                &w,
                Stage::Hello { sni: Some(&host("webmail.gemeente.nl")) },
                "192.0.2.1",
                443,
                "10.0.0.66",
                None,
            ),
            "REMEDIATE flagged_subject",
        ),
        (
            "tunnel request naming another host",
            decide_as(&w, Stage::InTunnel { named: &host("example.net") }, "example.org", 80, "10.1.2.3", None),
            "REFUSE host_mismatch",
        ),
        (
            "tunnel request naming a banned host",
            decide_as(&w, Stage::InTunnel { named: &host("tiktok.com") }, "example.org", 80, "10.1.2.3", None),
            "BLOCK banned_domain",
        ),
        (
            "tunnel request, banned tunnel",
            decide_as(&w, Stage::InTunnel { named: &host("tiktok.com") }, "tiktok.com", 80, "10.1.2.3", None),
            "BLOCK banned_domain",
        ),
        (
            "gateway, flagged device cookie link",
            decide_as(
                &w,
                Stage::Gateway { routed: true, keys: &["client:10.0.0.66".to_string()] },
                "webmail.gemeente.nl",
                443,
                "10.9.9.9",
                None,
            ),
            "REMEDIATE flagged_subject",
        ),
        (
            "gateway, clean",
            decide_as(&w, Stage::Gateway { routed: true, keys: &[] }, "webmail.gemeente.nl", 443, "10.9.9.9", None),
            "FORWARD no_rule_matches",
        ),
        (
            "gateway, no route",
            decide_as(&w, Stage::Gateway { routed: false, keys: &[] }, "intranet.gemeente.nl", 443, "10.9.9.9", None),
            "REFUSE unknown_system",
        ),
    ];
    let wrong: Vec<String> = rows
        .iter()
        .filter(|(_, action, want)| label(action) != *want)
        .map(|(name, action, want)| format!("{name}: got {}, want {want}", label(action)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn identity_comes_after_the_refusals_that_need_none() {
    let w = world();
    let client: IpAddr = "10.1.2.3".parse().unwrap();
    let (ok, port) = (host("example.org"), host("example.org"));
    let facts =
        |h, port, who| Facts { stage: Stage::Connect, client, host: h, port, user_agent: None, who, today: today() };
    assert_eq!(decide(&w.rules(), &facts(&ok, 443, Who::Unknown)), Action::Identify);
    assert_eq!(decide(&w.rules(), &facts(&port, 22, Who::Unknown)), Action::Refuse(Reason::PortNotAllowed(22)));
    assert_eq!(decide(&w.rules(), &facts(&ok, 443, Who::Unauthenticated)), Action::Challenge);
}

#[test]
fn reject_mode_blocks_instead_of_intercepting() {
    let mut w = world();
    w.proxy.https = HttpsMode::Reject;
    let a = decide_as(&w, Stage::Connect, "tiktok.com", 443, "10.1.2.3", None);
    assert_eq!(label(&a), "BLOCK banned_domain");
    let a = decide_as(&w, Stage::Hello { sni: Some(&host("tiktok.com")) }, "192.0.2.1", 443, "10.1.2.3", None);
    assert_eq!(label(&a), "BLOCK banned_domain");
}

#[test]
fn exemptions_are_reported_with_the_host_they_apply_to() {
    let text = r#"
[[ban]]
app = "TikTok"
domains = ["tiktok.com"]
advice = "AIVD"
reference = "NOS"
since = "2023-03-01"

[[exemption]]
who = ["user:inspecteur1"]
apps = ["TikTok"]
reason = "inspectie en toezicht"
until = "2026-12-03"
"#;
    let mut b = crate::policy::PolicyBuilder::new();
    b.add_source(std::path::Path::new("t.toml"), text);
    let (policy, _) = b.build(today()).unwrap();
    let mut w = world();
    w.policy = policy;
    let client: IpAddr = "10.1.2.3".parse().unwrap();
    let mut subject = Subject::anonymous(client);
    subject.user = Some("inspecteur1".into());
    let h = host("www.tiktok.com");
    let facts = Facts {
        stage: Stage::Request { https: false, looped: false },
        client,
        host: &h,
        port: 80,
        user_agent: None,
        who: Who::Known(&subject),
        today: today(),
    };
    match decide(&w.rules(), &facts) {
        Action::Forward { exempted: Some(e) } => assert_eq!(e.host, h),
        other => panic!("{other:?}"),
    }
    // The day after `until` (in the policy's time zone) it blocks.
    let tomorrow = Date::parse("2026-12-04").unwrap();
    assert_eq!(label(&decide(&w.rules(), &Facts { today: tomorrow, ..facts })), "BLOCK banned_domain");
}

/// The host-level rows of the bypass table (tests/it/bypass.rs), as the
/// pure path sees them: the authority as written, normalised
/// (`parse_authority`), then decided. `None`: cannot be normalised (400).
#[test]
fn bypass_hosts_decided_without_sockets() {
    let w = world();
    let get = Stage::Request { https: false, looped: false };
    let rows: &[(&str, Option<&str>)] = &[
        ("ALIEXPRESS.COM", Some("BLOCK")),
        ("M.AliExpress.Com", Some("BLOCK")),
        ("aliexpress.com.", Some("BLOCK")),
        ("aliexpress.com..", None),
        (".aliexpress.com", None),
        ("m..aliexpress.com", None),
        ("_x.aliexpress.com", Some("BLOCK")),
        ("xn--aliexpress-.com", None),
        ("XN--aliexpress-.com", None),
        ("user@aliexpress.com", None),
        ("user:pass@aliexpress.com", None),
        ("ali%65xpress.com", None),
        ("aliexpress%2Ecom", None),
        ("aliexpress.com\\@example.org", None),
        ("aliexpress com", None),
        ("aliexpress.com:8080", Some("BLOCK")),
        ("aliexpress.com:0", None),
        ("aliexpress.com:99999", None),
        ("aliexpress.com:", None),
        ("aliexpress.com:+80", None),
        ("aliexpress.com:80:80", None),
        ("notaliexpress.com", Some("FORWARD")),
        ("aliexpress.com.evil.net", Some("FORWARD")),
        ("aliexpress.co", Some("FORWARD")),
        ("www.tiktok.com", Some("BLOCK")),
        ("v\u{212a}.com", Some("BLOCK")),
        ("ａｌｉｅｘｐｒｅｓｓ.com", Some("BLOCK")),
        // Non-canonical IPv4 forms are refused; the canonical ones are the
        // server's loopback, denied to LAN clients.
        ("2130706433", None),
        ("0x7f000001", None),
        ("127.1", None),
        ("127.0.0.1.", Some("REFUSE")),
        ("[::ffff:127.0.0.1]", Some("REFUSE")),
        ("192.0.2.80", Some("FORWARD")),
        ("[fe80::1%25lo]", None),
        ("[::1", None),
        ("[aliexpress.com]", None),
        ("169.254.169.254", Some("REFUSE")),
        ("[::ffff:169.254.169.254]", Some("REFUSE")),
        ("10.0.0.1:3128", Some("REFUSE")),
        ("[::ffff:10.0.0.1]:3128", Some("REFUSE")),
    ];
    let mut wrong = Vec::new();
    for (authority, want) in rows {
        let got = match crate::policy::parse_authority(authority, Some(80)) {
            Err(_) => None,
            Ok((h, port)) => {
                let client: IpAddr = "10.1.2.3".parse().unwrap();
                let subject = Subject::anonymous(client);
                let facts = Facts {
                    stage: get,
                    client,
                    host: &h,
                    port,
                    user_agent: None,
                    who: Who::Known(&subject),
                    today: today(),
                };
                Some(decide(&w.rules(), &facts).label())
            }
        };
        if got != *want {
            wrong.push(format!("{authority:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
