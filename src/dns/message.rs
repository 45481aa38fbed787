//! The part of the DNS path weerwal writes itself, without sockets: read a
//! query (with hickory-proto, never by hand), decide it with the policy, and
//! build weerwal's own answers (blocks, errors). Pure, so the fuzz target
//! and the unit tests drive exactly what the listener runs.
//!
//! Only a query that parsed completely, asks exactly one IN-class question
//! and carries nothing but an optional EDNS record is ever forwarded; and it
//! is forwarded only when the policy allows its name. Everything else gets
//! an error code of our own (FORMERR, NOTIMP, REFUSED) or no answer at all.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use ipnet::IpNet;

use crate::config::HttpsMode;
use crate::decision::{decide, Action, Facts, Rules, Stage, Who};
use crate::plumbing::destinations::DeniedDestinations;
use crate::policy::export::{Answer, DOH_CANARY};
use crate::policy::{normalise_host, Date, Host, Match, Policy, Subject};

/// TTL of weerwal's own answers (block, canary): short enough that a policy
/// change reaches devices within minutes.
pub const ANSWER_TTL: u32 = 300;
/// The UDP payload weerwal advertises in its own EDNS answers (the DNS
/// flag day 2020 value: no IP fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Extended DNS Error (RFC 8914) code 15: "Blocked".
const EDE_BLOCKED: u16 = 15;
/// The EDNS option code of Extended DNS Errors.
const EDE_OPTION: u16 = 15;

/// One well-formed question, ready to be decided.
#[derive(Debug, Clone)]
pub struct Question {
    message: Message,
    /// The queried name, normalised as the proxy normalises hosts; for a
    /// name that does not normalise as a whole (odd bytes in a label), its
    /// longest suffix that does (`None`: not even the last label does).
    pub host: Option<Host>,
}

impl Question {
    /// The name as asked, for logs (`api.tiktokv.com`, no trailing dot).
    pub fn name(&self) -> String {
        let n = self.qname().to_ascii();
        n.strip_suffix('.').map(str::to_string).unwrap_or(n)
    }

    /// The queried record type (A, AAAA, HTTPS, …).
    pub fn qtype(&self) -> RecordType {
        self.message.queries().first().map(|q| q.query_type()).unwrap_or(RecordType::A)
    }

    fn qname(&self) -> &Name {
        static ROOT: std::sync::OnceLock<Name> = std::sync::OnceLock::new();
        self.message.queries().first().map(|q| q.name()).unwrap_or_else(|| ROOT.get_or_init(Name::root))
    }

    /// Whether the client spoke EDNS (then our answers carry an OPT too).
    pub fn edns(&self) -> bool {
        self.message.extensions().is_some()
    }

    /// The largest UDP answer this client accepts.
    pub fn max_udp(&self) -> usize {
        match self.message.extensions() {
            Some(e) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
            None => 512,
        }
    }
}

/// What a packet from a client amounts to before the policy is asked.
#[derive(Debug)]
pub enum Inspection {
    /// Not answered at all: too short to carry an ID, or itself an answer
    /// (answering answers would let two resolvers loop).
    Ignore,
    /// Answered by weerwal with an error code; never forwarded.
    Reply(Vec<u8>),
    /// One question for the policy.
    Question(Question),
}

/// Reads a client's packet. Never panics, whatever the bytes.
pub fn inspect(packet: &[u8]) -> Inspection {
    if packet.len() < 12 {
        return Inspection::Ignore;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    if packet[2] & 0x80 != 0 {
        return Inspection::Ignore;
    }
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let rd = packet[2] & 0x01 != 0;
    let error = |rcode| Inspection::Reply(header_only(id, op_code, rd, rcode));
    if op_code != OpCode::Query {
        return error(ResponseCode::NotImp);
    }
    let counts = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let (qd, an, ns) = (counts(4), counts(6), counts(8));
    // One question, nothing in the answer or authority sections: a query
    // as every stub resolver sends it. Decided before any name is parsed.
    if qd != 1 || an != 0 || ns != 0 {
        return error(ResponseCode::FormErr);
    }
    let mut decoder = BinDecoder::new(packet);
    let message = match Message::read(&mut decoder) {
        Ok(m) => m,
        Err(_) => return error(ResponseCode::FormErr),
    };
    // Trailing bytes after the last record: not a query we could vouch
    // for byte for byte, so it is not forwarded.
    if !decoder.is_empty() || !message.additionals().is_empty() || !message.sig0().is_empty() {
        return error(ResponseCode::FormErr);
    }
    let Some(query) = message.queries().first() else {
        return error(ResponseCode::FormErr);
    };
    if let Some(edns) = message.extensions() {
        if edns.version() != 0 {
            // RFC 6891: an unsupported EDNS version is answered BADVERS.
            return Inspection::Reply(reply(&message, ResponseCode::BADVERS, Vec::new(), None));
        }
    }
    if query.query_class() != DNSClass::IN || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return Inspection::Reply(reply(&message, ResponseCode::Refused, Vec::new(), None));
    }
    let host = host_of(query.name());
    Inspection::Question(Question { message, host })
}

/// The queried name as a policy [`Host`]: the whole name normalised as the
/// proxy normalises a `Host` header, or else its longest suffix that
/// normalises. A banned domain is a normal name, so it is always among the
/// suffixes [`Policy::match_host`] walks: a label of odd bytes in front of
/// it cannot hide it.
pub fn host_of(name: &Name) -> Option<Host> {
    if let Ok(h) = normalise_host(&name.to_ascii()) {
        return Some(h);
    }
    let labels = usize::from(name.num_labels());
    let mut best = None;
    for n in 1..=labels {
        match normalise_host(&name.trim_to(n).to_ascii()) {
            Ok(h) => best = Some(h),
            Err(_) => break,
        }
    }
    best
}

/// What to do with a question.
#[derive(Debug)]
pub enum Plan {
    /// The client is outside `allow_clients`: REFUSED, nothing else.
    Refuse(Vec<u8>),
    /// Ask the upstream resolver; the answer goes back unchanged.
    Forward,
    /// Answer with weerwal's block answer and record the attempt.
    Block { reply: Vec<u8>, matched: Match },
    /// Let through (an exemption names this device): forward and record.
    Exempt { matched: Match, reason: String },
    /// Answered by weerwal without a record (the DoH canary).
    Reply(Vec<u8>),
}

/// How the listener answers, from `[dns]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub block_answer: Answer,
    pub doh_canary: bool,
}

/// Decides a question with the proxy's decision function
/// ([`crate::decision::decide`], stage [`Stage::Dns`]): the same client
/// check (here against `allow_clients` of `[dns]`), host normalisation and
/// policy.
pub fn plan(
    q: &Question,
    policy: &Policy,
    allow_clients: &[IpNet],
    subject: &Subject,
    today: Date,
    settings: Settings,
) -> Plan {
    static NO_DESTINATIONS: std::sync::OnceLock<DeniedDestinations> = std::sync::OnceLock::new();
    let rules = Rules {
        policy,
        allow_clients,
        connect_ports: &[],
        https: HttpsMode::Reject,
        can_intercept: false,
        denied: NO_DESTINATIONS.get_or_init(DeniedDestinations::default),
        own_addrs: &[],
        compliance: None,
    };
    // A name with no normalisable label at all (the root, odd bytes in the
    // last label) names no policy domain: decided as the root, which no
    // policy can ban, so the client check still applies.
    let root = Host::Name(String::new());
    let host = q.host.as_ref().unwrap_or(&root);
    let facts = Facts {
        stage: Stage::Dns,
        client: subject.client,
        host,
        port: 53,
        user_agent: None,
        who: Who::Known(subject),
        today,
    };
    let action = decide(&rules, &facts);
    if settings.doh_canary && is_canary(host) && action.is_allowed() {
        return Plan::Reply(nxdomain(q, None));
    }
    match action {
        Action::Forward { exempted: None } => Plan::Forward,
        Action::Forward { exempted: Some(e) } => {
            Plan::Exempt { matched: e.matched, reason: e.exemption.reason.clone() }
        }
        Action::Block { matched, .. } => {
            Plan::Block { reply: block_reply(q, &matched, settings.block_answer), matched }
        }
        // Outside allow_clients; and anything the DNS stage never decides
        // is refused rather than forwarded.
        _ => Plan::Refuse(error_reply(q, ResponseCode::Refused)),
    }
}

fn is_canary(host: &Host) -> bool {
    matches!(host, Host::Name(n) if n == DOH_CANARY || n.ends_with(&format!(".{DOH_CANARY}")))
}

/// The block answer for a banned name: NXDOMAIN, or the block page's
/// address for the matching record type (no data for other types), with an
/// SOA so devices cache the refusal and an Extended DNS Error "Blocked"
/// naming the app for clients that show it (`dig`, some browsers).
pub fn block_reply(q: &Question, matched: &Match, answer: Answer) -> Vec<u8> {
    let app = &matched.app.name;
    let soa_owner = Name::from_ascii(format!("{}.", matched.rule.as_str())).ok();
    let ede = Some(format!("weerwal: {app} is banned on municipal devices"));
    match answer {
        Answer::Nxdomain => reply_with_soa(q, ResponseCode::NXDomain, Vec::new(), soa_owner, ede),
        Answer::Address(ip) => {
            let rdata = match (ip, q.qtype()) {
                (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(v4))),
                (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(v6))),
                _ => None,
            };
            let answers: Vec<Record> =
                rdata.into_iter().map(|r| Record::from_rdata(q.qname().clone(), ANSWER_TTL, r)).collect();
            let soa = if answers.is_empty() { soa_owner } else { None };
            reply_with_soa(q, ResponseCode::NoError, answers, soa, ede)
        }
    }
}

/// NXDOMAIN for a question (the DoH canary; a blocked name without app).
pub fn nxdomain(q: &Question, ede: Option<String>) -> Vec<u8> {
    let owner = Name::from_ascii(format!("{DOH_CANARY}.")).ok();
    reply_with_soa(q, ResponseCode::NXDomain, Vec::new(), owner, ede)
}

/// An error answer to a well-formed question (REFUSED, SERVFAIL, …).
pub fn error_reply(q: &Question, rcode: ResponseCode) -> Vec<u8> {
    reply(&q.message, rcode, Vec::new(), None)
}

fn reply_with_soa(
    q: &Question,
    rcode: ResponseCode,
    answers: Vec<Record>,
    soa_owner: Option<Name>,
    ede: Option<String>,
) -> Vec<u8> {
    let mut authority = Vec::new();
    if let Some(owner) = soa_owner {
        let mname = Name::from_ascii("weerwal.invalid.").unwrap_or_default();
        let rname = Name::from_ascii("hostmaster.weerwal.invalid.").unwrap_or_default();
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, ANSWER_TTL);
        authority.push(Record::from_rdata(owner, ANSWER_TTL, RData::SOA(soa)));
    }
    let mut bytes = reply_full(&q.message, rcode, answers, authority, ede.as_deref());
    if bytes.len() > q.max_udp() {
        // Too large for the client's UDP limit (a 250-byte name without
        // EDNS): say so, and the client asks again over TCP.
        let mut m = response_to(&q.message, rcode);
        m.set_truncated(true);
        bytes = m.to_vec().unwrap_or_default();
    }
    bytes
}

fn reply(query: &Message, rcode: ResponseCode, answers: Vec<Record>, ede: Option<&str>) -> Vec<u8> {
    reply_full(query, rcode, answers, Vec::new(), ede)
}

fn reply_full(
    query: &Message,
    rcode: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
    ede: Option<&str>,
) -> Vec<u8> {
    let mut m = response_to(query, rcode);
    m.insert_answers(answers);
    m.insert_name_servers(authority);
    if query.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        edns.set_version(0);
        if let Some(text) = ede {
            let mut data = EDE_BLOCKED.to_be_bytes().to_vec();
            data.extend(text.bytes().take(200));
            edns.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(EDE_OPTION, data));
        }
        m.set_edns(edns);
    }
    m.to_vec().unwrap_or_else(|_| header_only(query.id(), query.op_code(), query.recursion_desired(), rcode))
}

/// The header of an answer to `query`, with its question.
fn response_to(query: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(query.checking_disabled())
        .set_response_code(rcode);
    m.add_queries(query.queries().iter().cloned());
    m
}

/// A bare 12-byte answer header: for a query too broken to repeat.
fn header_only(id: u16, op_code: OpCode, rd: bool, rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::error_msg(id, op_code, rcode);
    m.set_recursion_desired(rd).set_recursion_available(true);
    let low = u16::from(rcode) & 0x0f;
    m.to_vec().unwrap_or_else(|_| {
        let flags: u16 = 0x8080 | (u16::from(u8::from(op_code)) << 11) | u16::from(rd) << 8 | low;
        let mut v = Vec::with_capacity(12);
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&[0; 8]);
        v
    })
}

/// Whether `answer` is the upstream's answer to `query` (same ID, marked as
/// an answer): anything else from the upstream socket is dropped.
pub fn answers(query: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 12 && query.len() >= 2 && answer[..2] == query[..2] && answer[2] & 0x80 != 0
}

/// A SERVFAIL answer to a query, when no upstream answered.
pub fn servfail(q: &Question) -> Vec<u8> {
    error_reply(q, ResponseCode::ServFail)
}

#[cfg(test)]
mod tests;
