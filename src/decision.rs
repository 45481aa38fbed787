//! Where every request is decided: one pure function, [`decide`], from the
//! facts of a request to an [`Action`] with a typed [`Reason`].
//!
//! The proxy (absolute-form requests, CONNECT, the ClientHello in a tunnel,
//! plain HTTP inside a tunnel, each request on an intercepted connection),
//! the gateway and `weerwal policy explain` all call it, so what `explain`
//! prints is exactly what the server does. The I/O code gathers the facts
//! (reads the request, authenticates, peeks at the ClientHello) and carries
//! out the action (answers, records, forwards, tunnels); it decides nothing.
//! `decide` reads no clock, socket or file: today's date and the compliance
//! view come in as facts.
//!
//! The order of the checks is the order below: who may use the proxy at
//! all, where it may connect, whether it would loop, who is asking, the
//! compliance gate, then the policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::compliance::{subject_key, Compliance, Flag};
use crate::config::HttpsMode;
use crate::plumbing::destinations::DeniedDestinations;
use crate::policy::{Date, Exemption, Host, Match, Policy, Rule, Subject, Target, Verdict};

/// What the decision needs to know about the compliance gate: which hosts
/// are protected and who is flagged. Read-only: deciding never flags.
pub trait ComplianceView {
    fn is_protected(&self, host: &Host) -> bool;
    fn flag_of(&self, key: &str) -> Option<Flag>;
}

impl ComplianceView for Compliance {
    fn is_protected(&self, host: &Host) -> bool {
        Compliance::is_protected(self, host)
    }
    fn flag_of(&self, key: &str) -> Option<Flag> {
        Compliance::flag_of(self, key)
    }
}

/// The rules in force: the policy and the settings, as the server holds
/// them for this request (one snapshot, so a reload never splits a decision).
pub struct Rules<'a> {
    pub policy: &'a Policy,
    /// `proxy.allow_clients`: never an open proxy.
    pub allow_clients: &'a [IpNet],
    /// `proxy.connect_ports`: where a CONNECT may go.
    pub connect_ports: &'a [u16],
    /// `proxy.https`, and whether a CA was loaded to intercept with.
    pub https: HttpsMode,
    pub can_intercept: bool,
    /// Addresses weerwal never connects to for a client (checked again after DNS).
    pub denied: &'a DeniedDestinations,
    /// weerwal's own listening addresses: a request there would loop.
    pub own_addrs: &'a [SocketAddr],
    /// The compliance gate, when `[compliance]` is configured.
    pub compliance: Option<&'a dyn ComplianceView>,
}

/// Who is asking, as far as the I/O code found out.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// Not looked at yet: the decision answers [`Action::Identify`] once the
    /// checks that need no identity have passed (no password is checked for
    /// a request that is refused anyway).
    Unknown,
    /// Credentials are required and were missing or wrong.
    Unauthenticated,
    /// Identified (by credentials, or by address alone when none are required).
    Known(&'a Subject),
}

/// Where in a connection's life the request is.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// An absolute-form request (`GET http://host/path`) on the proxy
    /// listener; `https` when its scheme is `https://` (browsers use CONNECT
    /// for those); `looped` when it carries our own `Via`.
    Request { https: bool, looped: bool },
    /// A `CONNECT host:port`, before its `200`.
    Connect,
    /// The first bytes of a tunnel: a TLS ClientHello with its SNI, or
    /// anything else (`sni: None`). Decided on the SNI and the CONNECT
    /// authority together.
    Hello { sni: Option<&'a Host> },
    /// A plain HTTP request inside a tunnel, naming `named` (its absolute
    /// target or `Host`). It must name the tunnel's own host.
    InTunnel { named: &'a Host },
    /// A request on a connection intercepted for `intercepted`: always the
    /// block page, for the banned host the request itself names if any.
    Intercepted { named: Option<&'a Host>, intercepted: &'a Match },
    /// A request at the compliance gateway for a protected system;
    /// `routed` when the gateway has an upstream for it; `keys` every key
    /// that may name this person (address, user, linked device cookie).
    Gateway { routed: bool, keys: &'a [String] },
    /// A DNS question for the host (the `[dns]` listener): no port, no
    /// connection and no compliance gate (the gateway applies that when the
    /// device connects); the policy alone decides block or forward.
    Dns,
}

/// The facts of one request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub stage: Stage<'a>,
    pub client: IpAddr,
    /// The host being reached: the request target's authority, the CONNECT
    /// authority (also in the tunnel stages), or the gateway's `Host`.
    pub host: &'a Host,
    pub port: u16,
    pub user_agent: Option<&'a str>,
    pub who: Who<'a>,
    /// Today in `policy.timezone`, for exemptions' `until`.
    pub today: Date,
}

/// An exemption that let an attempt through: recorded as `exempted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exempted {
    pub host: Host,
    pub matched: Match,
    pub exemption: Arc<Exemption>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refused before any policy matter: a 4xx page (inside a tunnel whose
    /// `200` is sent: the tunnel is closed). Not an attempt: not recorded.
    Refuse(Reason),
    /// Find out who is asking (authenticate), then decide again.
    Identify,
    /// Ask for credentials (`407`).
    Challenge,
    /// A flagged person reaching a protected system: the remediation page.
    Remediate { host: Host, key: String, flag: Flag },
    /// A banned host or app signature: record the attempt and answer with
    /// the block page (a `403`, or inside an intercepted connection).
    Block { host: Host, matched: Match },
    /// A banned name in a tunnel: answer the tunnel ourselves, terminating
    /// TLS with a leaf for `host` from the local CA, the block page inside.
    Intercept { host: Host, matched: Match },
    /// Forward the plain HTTP request to its origin.
    Forward { exempted: Option<Exempted> },
    /// Open (at CONNECT: answer `200` and decide the first bytes) or splice
    /// (at the ClientHello) the tunnel, byte for byte.
    Tunnel { exempted: Option<Exempted> },
}

/// Why: one vocabulary for the audit record, the metrics label, the page
/// text and `policy explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client's address is outside `proxy.allow_clients`.
    ClientNotAllowed,
    /// A CONNECT to a port outside `proxy.connect_ports`.
    PortNotAllowed(u16),
    /// An address in `proxy.deny_destinations` (or loopback for remote clients).
    DestinationDenied,
    /// The request would reach weerwal itself.
    Loop,
    /// `https://` in absolute form: browsers use CONNECT for those.
    NotHttp,
    /// A request inside a tunnel naming another host than the tunnel's.
    HostMismatch,
    /// A gateway request for a system the gateway has no route for.
    UnknownSystem,
    /// Identity is needed before deciding further.
    IdentityNeeded,
    /// Credentials missing or wrong.
    CredentialsRequired,
    /// The subject is flagged and the host is protected.
    FlaggedSubject,
    /// The host is (a subdomain of) a banned domain.
    BannedDomain,
    /// The request carries a banned app's own traffic signature.
    AppSignature,
    /// A banned app, let through by an exemption (recorded).
    Exempted,
    /// No rule matches: allowed, not logged.
    NoRuleMatches,
}

impl Reason {
    /// A short stable name: the metrics label and `policy explain`'s tag.
    pub fn label(self) -> &'static str {
        match self {
            Reason::ClientNotAllowed => "client_not_allowed",
            Reason::PortNotAllowed(_) => "port_not_allowed",
            Reason::DestinationDenied => "destination_denied",
            Reason::Loop => "loop",
            Reason::NotHttp => "not_http",
            Reason::HostMismatch => "host_mismatch",
            Reason::UnknownSystem => "unknown_system",
            Reason::IdentityNeeded => "identity_needed",
            Reason::CredentialsRequired => "credentials_required",
            Reason::FlaggedSubject => "flagged_subject",
            Reason::BannedDomain => "banned_domain",
            Reason::AppSignature => "app_signature",
            Reason::Exempted => "exempted",
            Reason::NoRuleMatches => "no_rule_matches",
        }
    }

    /// The sentence people read on a refusal page: Dutch, then English.
    pub fn texts(self) -> (String, String) {
        let (nl, en): (&str, &str) = match self {
            Reason::ClientNotAllowed => {
                ("Deze proxy bedient uw netwerk niet.", "This proxy does not serve your network.")
            }
            Reason::PortNotAllowed(port) => {
                return (
                    format!("Verbindingen naar poort {port} zijn niet toegestaan."),
                    format!("Tunnels to port {port} are not allowed."),
                )
            }
            Reason::DestinationDenied => {
                ("Dit adres is via de proxy niet bereikbaar.", "This address cannot be reached through the proxy.")
            }
            Reason::Loop => (
                "Dit verzoek zou bij de proxy zelf uitkomen (een lus) en is geweigerd.",
                "This request would loop back to the proxy itself and was refused.",
            ),
            Reason::NotHttp => (
                "Alleen http:// kan zo worden opgevraagd; voor https:// gebruikt de browser CONNECT.",
                "Only http:// URLs can be requested this way; browsers use CONNECT for https://.",
            ),
            Reason::HostMismatch => (
                "Dit verzoek noemt een andere website dan de tunnel waarin het zit.",
                "This request names another website than the tunnel it was sent in.",
            ),
            Reason::UnknownSystem => ("Onbekend systeem.", "Unknown system."),
            Reason::IdentityNeeded | Reason::CredentialsRequired => (
                "Log in met uw gebruikersnaam en wachtwoord om deze proxy te gebruiken.",
                "Log in with your user name and password to use this proxy.",
            ),
            Reason::FlaggedSubject => (
                "Dit apparaat heeft geprobeerd een verboden website te bereiken.",
                "This device tried to reach a banned website.",
            ),
            Reason::BannedDomain | Reason::AppSignature => {
                ("Deze website of app is verboden.", "This website or app is banned.")
            }
            Reason::Exempted | Reason::NoRuleMatches => ("Toegestaan.", "Allowed."),
        };
        (nl.to_string(), en.to_string())
    }

    /// The HTTP status a refusal is answered with.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Reason::NotHttp | Reason::HostMismatch => StatusCode::BAD_REQUEST,
            Reason::UnknownSystem => StatusCode::NOT_FOUND,
            Reason::IdentityNeeded | Reason::CredentialsRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// One line for `policy explain`.
    pub fn explanation(self) -> String {
        match self {
            Reason::ClientNotAllowed => "the client address is outside proxy.allow_clients".into(),
            Reason::PortNotAllowed(p) => format!("port {p} is not in proxy.connect_ports"),
            Reason::DestinationDenied => "the address is in proxy.deny_destinations (or the server's own)".into(),
            Reason::Loop => "the request would reach weerwal itself".into(),
            Reason::NotHttp => "https:// in absolute form: browsers use CONNECT for https".into(),
            Reason::HostMismatch => "a request inside a tunnel names another host than the tunnel".into(),
            Reason::UnknownSystem => "the gateway has no gateway.route for this host".into(),
            Reason::IdentityNeeded => "the subject must be identified first".into(),
            Reason::CredentialsRequired => "identity.auth requires credentials and none were given".into(),
            Reason::FlaggedSubject => "the subject is flagged and the host is protected ([compliance])".into(),
            Reason::BannedDomain => "the host is (a subdomain of) a banned domain".into(),
            Reason::AppSignature => "the User-Agent carries a banned app's own signature".into(),
            Reason::Exempted => "a banned app, let through by an exemption (recorded)".into(),
            Reason::NoRuleMatches => "no rule matches (not logged)".into(),
        }
    }
}

impl Action {
    /// Why this action was taken.
    pub fn reason(&self) -> Reason {
        match self {
            Action::Refuse(r) => *r,
            Action::Identify => Reason::IdentityNeeded,
            Action::Challenge => Reason::CredentialsRequired,
            Action::Remediate { .. } => Reason::FlaggedSubject,
            Action::Block { matched, .. } | Action::Intercept { matched, .. } => match matched.rule {
                Rule::Domain(_) => Reason::BannedDomain,
                Rule::UserAgent(_) => Reason::AppSignature,
            },
            Action::Forward { exempted: Some(_) } | Action::Tunnel { exempted: Some(_) } => Reason::Exempted,
            Action::Forward { exempted: None } | Action::Tunnel { exempted: None } => Reason::NoRuleMatches,
        }
    }

    /// Whether the request gets what it asked for (`policy explain` exits 0).
    pub fn is_allowed(&self) -> bool {
        matches!(self, Action::Forward { .. } | Action::Tunnel { .. })
    }

    /// The label `policy explain` prints.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Refuse(_) => "REFUSE",
            Action::Identify => "IDENTIFY",
            Action::Challenge => "CHALLENGE",
            Action::Remediate { .. } => "REMEDIATE",
            Action::Block { .. } => "BLOCK",
            Action::Intercept { .. } => "INTERCEPT",
            Action::Forward { exempted: Some(_) } | Action::Tunnel { exempted: Some(_) } => "EXEMPT",
            Action::Forward { .. } => "FORWARD",
            Action::Tunnel { .. } => "TUNNEL",
        }
    }
}

/// Decides one request. Pure: the same facts and rules give the same action.
pub fn decide(rules: &Rules<'_>, facts: &Facts<'_>) -> Action {
    // Never an open proxy.
    if !rules.allow_clients.iter().any(|net| net.contains(&facts.client)) {
        return Action::Refuse(Reason::ClientNotAllowed);
    }
    if let Some(refusal) = destination_refusal(rules, facts) {
        return Action::Refuse(refusal);
    }
    if let Stage::Gateway { routed: false, .. } = facts.stage {
        return Action::Refuse(Reason::UnknownSystem);
    }
    let subject = match facts.who {
        Who::Unknown => return Action::Identify,
        Who::Unauthenticated => return Action::Challenge,
        Who::Known(s) => s,
    };
    match facts.stage {
        Stage::Request { https, .. } => {
            if let Some(r) = remediation(rules, subject, facts.host, &[]) {
                return r;
            }
            match verdict(rules, subject, facts.host, facts.user_agent, facts.today) {
                Verdict::Block(matched) => Action::Block { host: facts.host.clone(), matched },
                _ if https => Action::Refuse(Reason::NotHttp),
                v => Action::Forward { exempted: exempted(v, facts.host) },
            }
        }
        Stage::Connect => {
            if let Some(r) = remediation(rules, subject, facts.host, &[]) {
                return r;
            }
            match verdict(rules, subject, facts.host, facts.user_agent, facts.today) {
                Verdict::Block(matched) if rules.https == HttpsMode::Reject || !rules.can_intercept => {
                    Action::Block { host: facts.host.clone(), matched }
                }
                Verdict::Block(matched) => Action::Intercept { host: facts.host.clone(), matched },
                // Exemptions are recorded once the first bytes are decided.
                _ => Action::Tunnel { exempted: None },
            }
        }
        Stage::Hello { sni } => hello(rules, facts, subject, sni),
        Stage::InTunnel { named } => {
            // Decided on the host the request names: a banned name is an
            // attempt (recorded), whatever the tunnel's host; any other
            // name must be the tunnel's own, or the request would reach
            // one host under another's name.
            if let Some(r) =
                remediation(rules, subject, named, &[]).or_else(|| flagged_to_address(rules, subject, named))
            {
                return r;
            }
            match verdict(rules, subject, named, facts.user_agent, facts.today) {
                Verdict::Block(matched) => Action::Block { host: named.clone(), matched },
                _ if named != facts.host => Action::Refuse(Reason::HostMismatch),
                v => Action::Forward { exempted: exempted(v, named) },
            }
        }
        Stage::Intercepted { named, intercepted } => {
            // The record names the banned host the request itself names when
            // there is one (decided like any request, so a host this person
            // is exempted for is never recorded as blocked), else the name
            // intercepted.
            if let Some(named) = named {
                if let Verdict::Block(matched) = verdict(rules, subject, named, None, facts.today) {
                    return Action::Block { host: named.clone(), matched };
                }
            }
            Action::Block { host: facts.host.clone(), matched: intercepted.clone() }
        }
        Stage::Gateway { keys, .. } => {
            remediation(rules, subject, facts.host, keys).unwrap_or(Action::Forward { exempted: None })
        }
        Stage::Dns => match verdict(rules, subject, facts.host, None, facts.today) {
            Verdict::Block(matched) => Action::Block { host: facts.host.clone(), matched },
            v => Action::Forward { exempted: exempted(v, facts.host) },
        },
    }
}

/// Where the request may not go at all: a port, a denied address, weerwal itself.
fn destination_refusal(rules: &Rules<'_>, facts: &Facts<'_>) -> Option<Reason> {
    match facts.stage {
        Stage::Connect if !rules.connect_ports.contains(&facts.port) => {
            return Some(Reason::PortNotAllowed(facts.port))
        }
        Stage::Request { .. } | Stage::Connect => {}
        // The tunnel and gateway stages were admitted at their CONNECT or
        // are the administrator's own upstreams.
        _ => return None,
    }
    if let Host::Ip(ip) = facts.host {
        if rules.denied.is_denied(*ip) {
            return Some(Reason::DestinationDenied);
        }
    }
    let looped = matches!(facts.stage, Stage::Request { looped: true, .. });
    if looped || targets_self(rules.own_addrs, facts.host, facts.port) {
        return Some(Reason::Loop);
    }
    None
}

/// Whether `host:port` is one of weerwal's own listeners, by address or by `localhost`.
pub fn targets_self(own: &[SocketAddr], host: &Host, port: u16) -> bool {
    let ip = match host {
        Host::Ip(ip) => crate::identity::canonical_ip(*ip),
        Host::Name(n) if n == "localhost" || n.ends_with(".localhost") => IpAddr::from([127, 0, 0, 1]),
        Host::Name(_) => return false,
    };
    own.iter().any(|a| {
        a.port() == port && (a.ip() == ip || ((a.ip().is_unspecified() || a.ip().is_loopback()) && ip.is_loopback()))
    })
}

/// The compliance gate: a flagged subject reaching a protected host.
fn remediation(rules: &Rules<'_>, subject: &Subject, host: &Host, extra_keys: &[String]) -> Option<Action> {
    let compliance = rules.compliance?;
    if !compliance.is_protected(host) {
        return None;
    }
    let own = subject_key(subject);
    std::iter::once(&own).chain(extra_keys).find_map(|key| {
        compliance.flag_of(key).map(|flag| Action::Remediate { host: host.clone(), key: key.clone(), flag })
    })
}

/// A flagged person reaching an address without naming a host (a tunnel
/// without SNI, a request naming only an address): it may be webmail's
/// address, and TLS hides the `Host` inside. Treated as the protected
/// system, so the gate cannot be walked around by IP.
fn flagged_to_address(rules: &Rules<'_>, subject: &Subject, host: &Host) -> Option<Action> {
    let compliance = rules.compliance?;
    if !matches!(host, Host::Ip(_)) {
        return None;
    }
    let key = subject_key(subject);
    compliance.flag_of(&key).map(|flag| Action::Remediate { host: host.clone(), key, flag })
}

fn verdict(rules: &Rules<'_>, subject: &Subject, host: &Host, user_agent: Option<&str>, today: Date) -> Verdict {
    rules.policy.decide(subject, &Target { host, user_agent, date: today })
}

fn exempted(v: Verdict, host: &Host) -> Option<Exempted> {
    match v {
        Verdict::Exempt { matched, exemption } => Some(Exempted { host: host.clone(), matched, exemption }),
        _ => None,
    }
}

/// The first bytes of a tunnel: the SNI and the CONNECT authority together.
/// A banned SNI is intercepted under its own name; a banned CONNECT host
/// under the CONNECT's name, whatever the SNI says.
fn hello(rules: &Rules<'_>, facts: &Facts<'_>, subject: &Subject, sni: Option<&Host>) -> Action {
    for name in sni.into_iter().chain(std::iter::once(facts.host)) {
        // A flagged person naming a protected system only in the SNI
        // (CONNECT to its address) is never spliced through.
        if let Some(r) = remediation(rules, subject, name, &[]) {
            return r;
        }
    }
    if sni.is_none() {
        if let Some(r) = flagged_to_address(rules, subject, facts.host) {
            return r;
        }
    }
    let sni_verdict = sni.map(|s| (verdict(rules, subject, s, facts.user_agent, facts.today), s));
    let host_verdict = verdict(rules, subject, facts.host, facts.user_agent, facts.today);
    // Without interception the attempt is still recorded and the tunnel
    // closed: nothing is spliced to a banned name.
    let intercept = rules.https == HttpsMode::Intercept && rules.can_intercept;
    let caught = |host: Host, matched: Match| {
        if intercept {
            Action::Intercept { host, matched }
        } else {
            Action::Block { host, matched }
        }
    };
    if let Some((Verdict::Block(matched), s)) = &sni_verdict {
        return caught((*s).clone(), matched.clone());
    }
    if let Verdict::Block(matched) = host_verdict {
        return caught(facts.host.clone(), matched);
    }
    let exempted = exempted(host_verdict, facts.host).or_else(|| sni_verdict.and_then(|(v, s)| exempted(v, s)));
    Action::Tunnel { exempted }
}

/// How a request says it was made, from its `Sec-Fetch-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// A top-level navigation: the person opened the site.
    Navigation,
    /// A sub-resource or a frame: content another page embeds.
    Embedded,
    /// The request does not say (an app, an old browser, a CONNECT alone).
    Unknown,
}

impl Fetch {
    /// From `Sec-Fetch-Dest` (a top-level navigation is `document`) or,
    /// without it, `Sec-Fetch-Mode` (`navigate`).
    pub fn from_headers(headers: &http::HeaderMap) -> Fetch {
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        match (value("sec-fetch-dest"), value("sec-fetch-mode")) {
            (Some(dest), _) if dest.eq_ignore_ascii_case("document") => Fetch::Navigation,
            (Some(_), _) => Fetch::Embedded,
            (None, Some(mode)) if mode.eq_ignore_ascii_case("navigate") => Fetch::Navigation,
            (None, Some(_)) => Fetch::Embedded,
            (None, None) => Fetch::Unknown,
        }
    }

    /// For the record's `navigation` field.
    pub fn navigation(self) -> Option<bool> {
        match self {
            Fetch::Navigation => Some(true),
            Fetch::Embedded => Some(false),
            Fetch::Unknown => None,
        }
    }
}

/// Whether a blocked attempt flags its subject for the compliance gate: the
/// municipal rule is about devices *with which the site was consulted* or
/// on which the app is installed. So: the app's own traffic (its signature)
/// always flags; a host the ban marks `embedded` (a pixel, an image CDN)
/// never does; a request that says it is a sub-resource or a frame does
/// not; a top-level navigation does, and so does a request that does not
/// say (the app's API hosts, old browsers).
pub fn flags_subject(matched: &Match, fetch: Fetch) -> bool {
    match (&matched.rule, fetch) {
        (Rule::UserAgent(_), _) => true,
        _ if matched.embedded => false,
        (_, Fetch::Embedded) => false,
        (_, Fetch::Navigation | Fetch::Unknown) => true,
    }
}

#[cfg(test)]
mod tests;
