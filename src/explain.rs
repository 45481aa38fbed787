//! `weerwal policy explain`: what the server would do with a request, and
//! why. It builds the same [`Facts`] the proxy builds and calls the same
//! [`decide`], under the same configuration, policy and compliance state
//! (read-only), so what it prints is what the proxy does.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::compliance::Compliance;
use crate::config::{AuthMode, Config};
use crate::decision::{decide, Action, ComplianceView, Facts, Rules, Stage, Who};
use crate::identity::Devices;
use crate::plumbing::destinations::DeniedDestinations;
use crate::policy::{normalise_host, parse_authority, Date, Host, Match, Policy, Rule};

/// The request to explain, as the command line gives it.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// `http://host/path`, `https://host/`, `host`, or `host:port` with `CONNECT`.
    pub target: String,
    /// `CONNECT` for a tunnel; otherwise the URL's scheme decides.
    pub method: Option<String>,
    /// The SNI the ClientHello would carry (CONNECT / https:// only).
    pub sni: Option<String>,
    pub user_agent: Option<String>,
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub client: Option<IpAddr>,
}

/// What the server would do: each step it decides, the last one final.
#[derive(Debug)]
pub struct Explanation {
    pub text: String,
    pub allowed: bool,
}

/// Why a question cannot be explained (a usage error).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("compliance state: {0}")]
    Compliance(#[from] crate::compliance::ComplianceError),
}

/// Explains `question` under `config` and `policy`, on `today`.
pub fn explain(
    config: &Config,
    policy: &Policy,
    question: &Question,
    today: Date,
) -> Result<Explanation, ExplainError> {
    let compliance = match &config.compliance {
        // Only read: explain never flags or clears, so the file is never written.
        Some(c) => Some(Compliance::open(c, &config.compliance_state_path())?),
        None => None,
    };
    let mut text = String::new();
    let client = question.client.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let connect = question.method.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"));
    let (scheme, rest) = match question.target.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, question.target.as_str()),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let tunnel = connect || scheme.as_deref() == Some("https");
    let default_port = if tunnel { Some(443) } else { Some(80) };
    let (host, port) = match parse_authority(authority, if connect { None } else { default_port }) {
        Ok(hp) => hp,
        Err(e) => {
            let _ = writeln!(text, "action:  REFUSE (400): host {authority:?} cannot be normalised: {e}");
            return Ok(Explanation { text, allowed: false });
        }
    };
    let sni = match (&question.sni, tunnel) {
        (Some(name), _) => match normalise_host(name) {
            Ok(h) => Some(h),
            Err(e) => {
                let _ = writeln!(
                    text,
                    "action:  REFUSE: the SNI {name:?} cannot be normalised ({e}): the tunnel is closed"
                );
                return Ok(Explanation { text, allowed: false });
            }
        },
        // A browser's https:// carries its host name in the SNI.
        (None, true) if !connect => Some(host.clone()),
        (None, _) => None,
    };

    let mut subject = Devices::new(&config.identity.device).subject(client);
    subject.user.clone_from(&question.user);
    subject.groups.clone_from(&question.groups);
    let who = if config.identity.auth != AuthMode::None && question.user.is_none() {
        Who::Unauthenticated
    } else {
        Who::Known(&subject)
    };
    let denied = DeniedDestinations::from_config(&config.proxy);
    let own: Vec<_> = config.proxy.listen.iter().copied().chain(config.own_listeners()).collect();
    let rules = Rules {
        policy,
        allow_clients: &config.proxy.allow_clients,
        connect_ports: &config.proxy.connect_ports,
        https: config.proxy.https,
        // `serve` loads (or creates) the CA whenever https = "intercept".
        can_intercept: true,
        denied: &denied,
        own_addrs: &own,
        compliance: compliance.as_ref().map(|c| c as &dyn ComplianceView),
    };
    let first = Facts {
        stage: if tunnel { Stage::Connect } else { Stage::Request { https: false, looped: false } },
        client,
        host: &host,
        port,
        user_agent: question.user_agent.as_deref(),
        who,
        today,
    };
    let request = if tunnel { format!("CONNECT {}:{port}", host.as_key()) } else { format!("GET {}", question.target) };
    let _ = writeln!(text, "request: {request} from {client}{}", who_text(&who));
    let _ = writeln!(text, "host:    {} (port {port})", host.as_key());
    let mut action = decide(&rules, &first);
    if tunnel && matches!(action, Action::Tunnel { .. } | Action::Intercept { .. }) {
        // After the `200`, the first bytes decide again with the SNI.
        let step = match &sni {
            Some(s) => format!("then:    a TLS ClientHello with SNI {}", s.as_key()),
            None => "then:    a TLS ClientHello without SNI".to_string(),
        };
        let _ = writeln!(text, "{step}");
        action = decide(&rules, &Facts { stage: Stage::Hello { sni: sni.as_ref() }, ..first });
    }
    describe(&mut text, &action);
    Ok(Explanation { text, allowed: action.is_allowed() })
}

fn who_text(who: &Who<'_>) -> String {
    match who {
        Who::Known(s) => {
            let mut t = String::new();
            if let Some(u) = &s.user {
                let _ = write!(t, ", user {u}");
            }
            if !s.groups.is_empty() {
                let _ = write!(t, ", groups {}", s.groups.join(","));
            }
            if let Some(d) = &s.device {
                let _ = write!(t, ", device {d}");
            }
            t
        }
        _ => ", without credentials".to_string(),
    }
}

fn describe(text: &mut String, action: &Action) {
    let reason = action.reason();
    let what = match action {
        Action::Refuse(r) => format!("{} page, not recorded", r.status().as_u16()),
        Action::Identify => "identify first".to_string(),
        Action::Challenge => "407, asks for credentials".to_string(),
        Action::Remediate { .. } => "the remediation page (403), recorded as gateway_denied".to_string(),
        Action::Block { .. } => "the block page (403), recorded as blocked".to_string(),
        Action::Intercept { .. } => {
            "TLS terminated with a leaf from the local CA, the block page inside, recorded as blocked".to_string()
        }
        Action::Forward { exempted: Some(_) } => "forwarded, recorded as exempted".to_string(),
        Action::Tunnel { exempted: Some(_) } => "tunnelled byte for byte, recorded as exempted".to_string(),
        Action::Forward { exempted: None } => "forwarded to the origin, not logged".to_string(),
        Action::Tunnel { exempted: None } => "tunnelled byte for byte, not logged".to_string(),
    };
    let _ = writeln!(text, "action:  {} ({what})", action.label());
    let _ = writeln!(text, "reason:  {}: {}", reason.label(), reason.explanation());
    match action {
        Action::Block { host, matched } | Action::Intercept { host, matched } => {
            let _ = writeln!(text, "name:    {}", host_text(host));
            print_match(text, matched);
        }
        Action::Forward { exempted: Some(e) } | Action::Tunnel { exempted: Some(e) } => {
            print_match(text, &e.matched);
            let _ = writeln!(text, "exempt:  {} (until {})", e.exemption.reason, e.exemption.until);
        }
        Action::Remediate { key, flag, .. } => {
            let reference = flag.seq.map(|s| format!(", record {s}")).unwrap_or_default();
            let _ = writeln!(text, "flag:    {key}: {} at {} since {}{reference}", flag.app, flag.host, flag.since);
        }
        _ => {}
    }
}

fn host_text(host: &Host) -> String {
    host.as_key().into_owned()
}

fn print_match(text: &mut String, m: &Match) {
    let kind = match m.rule {
        Rule::Domain(_) => "domain",
        Rule::UserAgent(_) => "user agent signature",
    };
    let _ = writeln!(text, "app:     {}", m.app.name);
    let _ = writeln!(text, "rule:    {} ({kind})", m.rule.as_str());
    let _ = writeln!(text, "advice:  {}", m.app.advice);
    let _ = writeln!(text, "source:  {} (since {})", m.app.reference, m.app.since);
}
