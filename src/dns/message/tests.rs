use std::path::Path;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;
use crate::policy::{Date, PolicyBuilder};

fn policy() -> Policy {
    let mut b = PolicyBuilder::new();
    b.add_source(
        Path::new("t.toml"),
        r#"
[[ban]]
app = "TikTok"
domains = ["tiktokv.com"]
advice = "AIVD"
reference = "Kamerbrief"
since = "2023-03-21"

[[exemption]]
who = ["device:recherche"]
apps = ["TikTok"]
reason = "onderzoek"
until = "2099-01-01"
"#,
    );
    b.build(Date::parse("2024-01-01").unwrap()).unwrap().0
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0xbeef).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn question(bytes: &[u8]) -> Question {
    match inspect(bytes) {
        Inspection::Question(q) => q,
        other => panic!("not a question: {other:?}"),
    }
}

fn all() -> Vec<ipnet::IpNet> {
    vec!["0.0.0.0/0".parse().unwrap()]
}

const SETTINGS: Settings = Settings { block_answer: Answer::Nxdomain, doh_canary: true };

fn today() -> Date {
    Date::parse("2025-01-01").unwrap()
}

fn anon() -> Subject {
    Subject::anonymous("10.0.0.7".parse().unwrap())
}

#[test]
fn banned_name_and_subdomain_get_nxdomain_with_soa_and_ede() {
    let p = policy();
    for name in ["tiktokv.com.", "API16-normal-c-useast1a.TikTokV.com."] {
        let q = question(&query(name, RecordType::A, true));
        let Plan::Block { reply, matched } = plan(&q, &p, &all(), &anon(), today(), SETTINGS) else {
            panic!("{name} not blocked")
        };
        assert_eq!(matched.app.name, "TikTok");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.id(), 0xbeef);
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.queries()[0].name().to_ascii().to_ascii_lowercase(), name.to_ascii_lowercase());
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
        assert_eq!(m.name_servers()[0].name().to_ascii(), "tiktokv.com.");
        assert!(m.extensions().as_ref().unwrap().options().as_ref().iter().any(|(c, _)| u16::from(*c) == 15));
    }
}

#[test]
fn address_answers_follow_the_record_type() {
    let p = policy();
    let s = Settings { block_answer: Answer::Address("10.9.9.9".parse().unwrap()), doh_canary: false };
    let q = question(&query("a.tiktokv.com.", RecordType::A, false));
    let Plan::Block { reply, .. } = plan(&q, &p, &all(), &anon(), today(), s) else { panic!() };
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.answers()[0].data(), &RData::A("10.9.9.9".parse::<std::net::Ipv4Addr>().unwrap().into()));
    assert!(m.extensions().is_none());
    let q = question(&query("a.tiktokv.com.", RecordType::AAAA, false));
    let Plan::Block { reply, .. } = plan(&q, &p, &all(), &anon(), today(), s) else { panic!() };
    let m = Message::from_vec(&reply).unwrap();
    assert!(m.answers().is_empty() && m.name_servers().len() == 1, "AAAA of an IPv4 block address: no data");
}

#[test]
fn allowed_exempted_and_canary() {
    let p = policy();
    let q = question(&query("tiktokv.com.example.", RecordType::A, false));
    assert!(matches!(plan(&q, &p, &all(), &anon(), today(), SETTINGS), Plan::Forward));
    let mut dev = anon();
    dev.device = Some("recherche".into());
    let q = question(&query("tiktokv.com.", RecordType::A, false));
    assert!(matches!(plan(&q, &p, &all(), &dev, today(), SETTINGS), Plan::Exempt { .. }));
    let q = question(&query("use-application-dns.net.", RecordType::A, false));
    let Plan::Reply(r) = plan(&q, &p, &all(), &anon(), today(), SETTINGS) else { panic!() };
    assert_eq!(Message::from_vec(&r).unwrap().response_code(), ResponseCode::NXDomain);
    let off = Settings { doh_canary: false, ..SETTINGS };
    assert!(matches!(plan(&q, &p, &all(), &anon(), today(), off), Plan::Forward));
}

#[test]
fn odd_labels_in_front_of_a_banned_domain_do_not_hide_it() {
    let p = policy();
    let name = Name::from_labels(vec![&b"a b"[..], b"\xff", b"tiktokv", b"com"]).unwrap();
    let mut m = Message::new();
    m.set_id(1).set_op_code(OpCode::Query);
    m.add_query(Query::query(name, RecordType::A));
    let q = question(&m.to_vec().unwrap());
    assert_eq!(q.host, Some(crate::policy::Host::Name("tiktokv.com".into())));
    assert!(matches!(plan(&q, &p, &all(), &anon(), today(), SETTINGS), Plan::Block { .. }));
}

fn rcode_of(r: &Inspection) -> Option<ResponseCode> {
    match r {
        Inspection::Reply(b) => Some(Message::from_vec(b).unwrap().response_code()),
        _ => None,
    }
}

#[test]
fn malformed_packets_get_an_error_or_nothing() {
    assert!(matches!(inspect(&[]), Inspection::Ignore));
    assert!(matches!(inspect(&[1, 2, 3]), Inspection::Ignore));
    let good = query("example.org.", RecordType::A, false);
    // A response is never answered.
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert!(matches!(inspect(&resp), Inspection::Ignore));
    // Truncated in the name, trailing garbage, two questions, an answer record.
    assert_eq!(rcode_of(&inspect(&good[..good.len() - 3])), Some(ResponseCode::FormErr));
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    assert_eq!(rcode_of(&inspect(&trailing)), Some(ResponseCode::FormErr));
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(rcode_of(&inspect(&two)), Some(ResponseCode::FormErr));
    let mut many = good.clone();
    many[4] = 0xff;
    assert_eq!(rcode_of(&inspect(&many)), Some(ResponseCode::FormErr));
    // NOTIFY / UPDATE: not implemented; CH class and AXFR: refused.
    let mut notify = good.clone();
    notify[2] = 4 << 3;
    assert_eq!(rcode_of(&inspect(&notify)), Some(ResponseCode::NotImp));
    let mut m = Message::new();
    m.set_id(9).set_op_code(OpCode::Query);
    let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    m.add_query(q);
    assert_eq!(rcode_of(&inspect(&m.to_vec().unwrap())), Some(ResponseCode::Refused));
    assert_eq!(rcode_of(&inspect(&query("tiktokv.com.", RecordType::AXFR, false))), Some(ResponseCode::Refused));
    // A compression pointer loop.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode_of(&inspect(&looped)), Some(ResponseCode::FormErr));
}

#[test]
fn a_long_name_without_edns_is_truncated_not_oversized() {
    let p = policy();
    let label = "a".repeat(63);
    let name = format!("{label}.{label}.{label}.{}.tiktokv.com.", &label[..40]);
    let q = question(&query(&name, RecordType::A, false));
    let Plan::Block { reply, .. } = plan(&q, &p, &all(), &anon(), today(), SETTINGS) else { panic!() };
    assert!(reply.len() <= 512, "{}", reply.len());
}

#[test]
fn upstream_answers_are_matched_by_id() {
    let q = query("example.org.", RecordType::A, false);
    let mut a = q.clone();
    a[2] |= 0x80;
    assert!(answers(&q, &a));
    a[0] ^= 1;
    assert!(!answers(&q, &a));
    assert!(!answers(&q, &q));
}

#[test]
fn an_unknown_edns_version_gets_badvers_not_forwarded() {
    let mut m = Message::new();
    m.set_id(5).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii("tiktokv.com.").unwrap(), RecordType::A));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    let Inspection::Reply(r) = inspect(&m.to_vec().unwrap()) else { panic!("not answered") };
    let r = Message::from_vec(&r).unwrap();
    // 16: BADVERS (hickory reads it back as BADSIG, which shares the code).
    assert_eq!(u16::from(r.response_code()), 16);
    assert_eq!(r.id(), 5);
}

#[test]
fn a_client_outside_allow_clients_is_refused_by_the_decision() {
    let p = policy();
    let only: Vec<ipnet::IpNet> = vec!["192.168.0.0/16".parse().unwrap()];
    for name in ["tiktokv.com.", "example.org.", "."] {
        let q = question(&query(name, RecordType::A, false));
        let Plan::Refuse(r) = plan(&q, &p, &only, &anon(), today(), SETTINGS) else { panic!("{name} not refused") };
        assert_eq!(Message::from_vec(&r).unwrap().response_code(), ResponseCode::Refused);
    }
    let q = question(&query(".", RecordType::NS, false));
    assert!(matches!(plan(&q, &p, &all(), &anon(), today(), SETTINGS), Plan::Forward));
}
