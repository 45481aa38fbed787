//! The DNS listener's own part of the path, under arbitrary bytes: what
//! `weerwal::dns::message` makes of a client's packet. Shared by the
//! `dns_query` fuzz target and `tests/it/dns.rs` (regressions).
//!
//! Invariants: nothing panics; every answer weerwal writes is a DNS
//! response with the query's ID; and a query is only ever forwarded when no
//! suffix of its name (read again here, independently, with hickory-proto)
//! is a banned domain: never a forwarded banned name.
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use weerwal::dns::message::{inspect, plan, Inspection, Plan, Settings};
use weerwal::policy::export::Answer;
use weerwal::policy::{Date, Host, Policy, PolicyBuilder, Subject};

fn policy() -> &'static (Policy, Date) {
    static POLICY: OnceLock<(Policy, Date)> = OnceLock::new();
    POLICY.get_or_init(|| {
        let today = Date::parse("2025-01-01").expect("date");
        let mut b = PolicyBuilder::new();
        for (name, text) in weerwal::policy::EMBEDDED {
            b.add_source(&Path::new("policy").join(name), text);
        }
        (b.build(today).expect("shipped policy builds").0, today)
    })
}

fn assert_reply_to(packet: &[u8], reply: &[u8]) {
    let m = Message::from_vec(reply).expect("weerwal's own answer parses");
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.id(), u16::from_be_bytes([packet[0], packet[1]]), "answer carries the query's ID");
}

/// Whether any suffix of the packet's question name is banned.
fn names_a_banned_domain(packet: &[u8]) -> bool {
    let (policy, _) = policy();
    let Ok(m) = Message::from_vec(packet) else { return false };
    m.queries().iter().any(|q| {
        let labels: Vec<String> = q.name().iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect();
        (0..labels.len()).any(|i| policy.match_host(&Host::Name(labels[i..].join("."))).is_some())
    })
}

pub fn dns_query(packet: &[u8]) {
    let (policy, today) = policy();
    let settings = Settings { block_answer: Answer::Nxdomain, doh_canary: true };
    let subject = Subject::anonymous("10.0.0.7".parse().expect("ip"));
    let allow: [ipnet::IpNet; 1] = ["10.0.0.0/8".parse().expect("net")];
    match inspect(packet) {
        Inspection::Ignore => {}
        Inspection::Reply(reply) => assert_reply_to(packet, &reply),
        Inspection::Question(q) => match plan(&q, policy, &allow, &subject, *today, settings) {
            Plan::Forward => assert!(!names_a_banned_domain(packet), "a banned name would be forwarded: {packet:?}"),
            Plan::Block { reply, matched } => {
                assert_reply_to(packet, &reply);
                assert!(policy.apps().iter().any(|a| a.name == matched.app.name));
            }
            Plan::Reply(reply) | Plan::Refuse(reply) => assert_reply_to(packet, &reply),
            Plan::Exempt { .. } => panic!("no exemption in the shipped policy"),
        },
    }
}
