//! The policy: which apps are banned, by which domains and app signatures,
//! and who is exempted. [`PolicyBuilder`] collects and checks the files;
//! [`Policy`] is immutable, shared behind an `Arc` and swapped whole on
//! reload. [`Policy::decide`] is the one function that decides a request, for
//! the proxy, the gateway, the CLI and the history scanner alike.

pub mod export;
pub mod host;
mod source;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use crate::calendar::{Date, Zone, ZoneError, DEFAULT_ZONE};
pub use host::{normalise_host, parse_authority, Host, HostError};
use source::SourceText;
pub use source::{PolicyError, PolicyErrors};

/// A banned app and the public record behind its ban, shown on the block page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub advice: String,
    pub reference: String,
    pub since: Date,
    /// Lower-case substrings of the app's own `User-Agent`.
    pub user_agents: Vec<String>,
}

/// Who an exemption names: `user:NAME`, `group:NAME` or `device:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Group(String),
    Device(String),
}

/// Permission for named people to reach a banned app for a primary task
/// (inspection, investigation), until a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    pub who: Vec<Principal>,
    pub apps: Vec<String>,
    pub reason: String,
    pub until: Date,
}

/// The person or device a request comes from, as identity resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub device: Option<String>,
    pub client: IpAddr,
}

impl Subject {
    /// A subject known only by its address (no authentication, no device name).
    pub fn anonymous(client: IpAddr) -> Subject {
        Subject { user: None, groups: Vec::new(), device: None, client }
    }
}

/// What is being reached. `date` is today's date, passed in so the decision
/// never reads a clock.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub host: &'a Host,
    pub user_agent: Option<&'a str>,
    pub date: Date,
}

/// The rule that matched: a domain suffix or an app traffic signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Domain(String),
    UserAgent(String),
}

impl Rule {
    /// The rule as written in the policy, for logs and pages.
    pub fn as_str(&self) -> &str {
        match self {
            Rule::Domain(d) | Rule::UserAgent(d) => d,
        }
    }
}

/// A banned app matched, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub app: Arc<App>,
    pub rule: Rule,
    /// The matched domain is one the ban lists as `embedded`: a host other
    /// sites embed (an analytics pixel, an image CDN). Blocked and
    /// recorded like any other, but never a reason to flag a device.
    pub embedded: bool,
}

/// The outcome of [`Policy::decide`]. It says *why*, so the block page, the
/// audit record and `policy explain` can all tell the same story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Block(Match),
    Exempt { matched: Match, exemption: Arc<Exemption> },
}

/// The compiled, immutable policy.
#[derive(Debug, Default)]
pub struct Policy {
    apps: Vec<Arc<App>>,
    /// Domain suffix → index into `apps`. A lookup per label of the host, so
    /// the cost grows with the host's labels, not with the policy's size.
    domains: HashMap<Box<str>, u32>,
    /// Every app's User-Agent signatures (lower-cased) with the app's index,
    /// in policy order: the scan of each allowed request's `User-Agent` walks
    /// only the signatures, however many apps have none.
    user_agents: Vec<(String, u32)>,
    exemptions: Vec<Arc<Exemption>>,
    /// Domain suffixes listed under a ban's `embedded`.
    embedded: std::collections::HashSet<Box<str>>,
    digest: String,
    files: Vec<PathBuf>,
    /// Whose calendar days `since` and `until` mean (`policy.timezone`).
    zone: Zone,
}

impl Policy {
    /// Today in the policy's zone: the date to decide on now (the decision
    /// itself takes it as input and reads no clock).
    pub fn today(&self) -> Date {
        self.zone.today()
    }

    /// The zone the policy's dates are in.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The same policy, its dates meant in `zone`.
    pub fn in_zone(mut self, zone: Zone) -> Policy {
        self.zone = zone;
        self
    }

    /// Decides a request. Pure: no sockets, files or clocks.
    pub fn decide(&self, subject: &Subject, target: &Target<'_>) -> Verdict {
        let matched = self.match_host(target.host).or_else(|| target.user_agent.and_then(|ua| self.detect_app(ua)));
        let Some(matched) = matched else {
            return Verdict::Allow;
        };
        match self.exemption_for(subject, &matched.app, target.date) {
            Some(exemption) => Verdict::Exempt { matched, exemption },
            None => Verdict::Block(matched),
        }
    }

    /// The banned app a host belongs to, trying the host and each parent
    /// domain: `m.aliexpress.com`, then `aliexpress.com`, then `com`.
    pub fn match_host(&self, host: &Host) -> Option<Match> {
        let key = host.as_key();
        let mut suffix: &str = &key;
        loop {
            if let Some(&idx) = self.domains.get(suffix) {
                return Some(Match {
                    app: Arc::clone(&self.apps[idx as usize]),
                    rule: Rule::Domain(suffix.to_string()),
                    embedded: self.embedded.contains(suffix),
                });
            }
            if matches!(host, Host::Ip(_)) {
                return None;
            }
            suffix = suffix.split_once('.')?.1;
        }
    }

    /// The banned app whose own traffic signature appears in a `User-Agent`:
    /// evidence that the app is installed on the device.
    pub fn detect_app(&self, user_agent: &str) -> Option<Match> {
        if self.user_agents.is_empty() {
            return None;
        }
        // Signatures are stored lower-cased; lowering the header once and
        // using `str::contains` is several times faster than comparing
        // case-insensitively at every offset for every signature.
        let user_agent = user_agent.to_ascii_lowercase();
        self.user_agents.iter().find(|(sig, _)| user_agent.contains(sig.as_str())).map(|(sig, idx)| Match {
            app: Arc::clone(&self.apps[*idx as usize]),
            rule: Rule::UserAgent(sig.clone()),
            embedded: false,
        })
    }

    fn exemption_for(&self, subject: &Subject, app: &App, today: Date) -> Option<Arc<Exemption>> {
        self.exemptions
            .iter()
            .find(|e| {
                today <= e.until
                    && e.apps.iter().any(|a| a.eq_ignore_ascii_case(&app.name))
                    && e.who.iter().any(|p| match p {
                        Principal::User(u) => subject.user.as_deref() == Some(u.as_str()),
                        Principal::Group(g) => subject.groups.iter().any(|sg| sg == g),
                        Principal::Device(d) => subject.device.as_deref() == Some(d.as_str()),
                    })
            })
            .cloned()
    }

    /// The banned apps, in the order the files name them.
    pub fn apps(&self) -> &[Arc<App>] {
        &self.apps
    }

    /// Every banned domain suffix with its app; for the PAC file.
    pub fn domains(&self) -> impl Iterator<Item = (&str, &App)> {
        self.domains.iter().map(|(d, &i)| (&**d, &*self.apps[i as usize]))
    }

    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    pub fn exemptions(&self) -> &[Arc<Exemption>] {
        &self.exemptions
    }

    /// SHA-256 over the policy sources, so an audit record can say exactly
    /// which policy was in force.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The files this policy was built from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// A problem that does not stop the policy from loading but that an
/// administrator should see (`policy check` prints these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file.display(), self.line, self.message)
    }
}

/// Collects policy files and checks them; [`PolicyBuilder::build`] compiles
/// the result. Building is the only place policy text is interpreted.
#[derive(Default)]
pub struct PolicyBuilder {
    apps: Vec<Arc<App>>,
    app_origin: HashMap<String, (PathBuf, usize)>,
    domains: HashMap<Box<str>, u32>,
    domain_origin: HashMap<Box<str>, (u32, u32)>,
    exemptions: Vec<(Exemption, PathBuf, usize)>,
    embedded: std::collections::HashSet<Box<str>>,
    errors: Vec<PolicyError>,
    hasher: Sha256,
    files: Vec<PathBuf>,
}

impl PolicyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one policy file's text. Errors are collected, not returned, so
    /// every mistake in every file is reported in one run.
    pub fn add_source(&mut self, path: &Path, text: &str) -> &mut Self {
        self.hasher.update((path.file_name().map(|n| n.len()).unwrap_or(0) as u64).to_le_bytes());
        self.hasher.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        self.hasher.update((text.len() as u64).to_le_bytes());
        self.hasher.update(text.as_bytes());
        self.files.push(path.to_path_buf());
        let src = SourceText::new(path, text);
        match src.parse() {
            Ok(file) => {
                for ban in file.ban {
                    self.add_ban(&src, ban);
                }
                for ex in file.exemption {
                    self.add_exemption(&src, ex);
                }
            }
            Err(e) => self.errors.push(e),
        }
        self
    }

    fn add_ban(&mut self, src: &SourceText<'_>, ban: source::BanEntry) {
        let name = ban.app.get_ref().trim().to_string();
        let app_line = src.line_of(ban.app.span().start);
        if name.is_empty() {
            self.errors.push(src.error(ban.app.span(), "app", "app name is empty"));
            return;
        }
        if let Some((file, line)) = self.app_origin.get(&name.to_ascii_lowercase()) {
            self.errors.push(src.error(
                ban.app.span(),
                "app",
                format!(
                    "app {name:?} is already banned at {}:{line}; list all its domains in one [[ban]]",
                    file.display()
                ),
            ));
            return;
        }
        if ban.advice.get_ref().trim().is_empty() {
            self.errors.push(src.error(
                ban.advice.span(),
                "advice",
                "say who advised the ban (AIVD, NCSC or IBD): only officially advised apps are banned",
            ));
        }
        let since = match Date::parse(ban.since.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(src.error(ban.since.span(), "since", e.to_string()));
                return;
            }
        };
        if ban.domains.get_ref().is_empty() {
            self.errors.push(src.error(ban.domains.span(), "domains", "no domains listed"));
        }
        let mut user_agents = Vec::new();
        for ua in &ban.user_agents {
            let sig = ua.get_ref().trim();
            if sig.len() < 4 {
                self.errors.push(src.error(
                    ua.span(),
                    "user_agents",
                    "a signature shorter than 4 characters would match ordinary browsers",
                ));
            } else {
                user_agents.push(sig.to_ascii_lowercase());
            }
        }
        let idx = self.apps.len() as u32;
        self.app_origin.insert(name.to_ascii_lowercase(), (src.path.to_path_buf(), app_line));
        self.apps.push(Arc::new(App {
            name: name.clone(),
            advice: ban.advice.into_inner().trim().to_string(),
            reference: ban.reference.trim().to_string(),
            since,
            user_agents,
        }));
        for domain in ban.domains.into_inner() {
            self.add_domain(src, &domain, idx, "domains");
        }
        for domain in &ban.embedded {
            if let Some(key) = self.add_domain(src, domain, idx, "embedded") {
                self.embedded.insert(key);
            }
        }
    }

    /// Adds one of a ban's domains (`domains` or `embedded`); the key it
    /// was added under, or `None` with the error recorded.
    fn add_domain(
        &mut self,
        src: &SourceText<'_>,
        domain: &toml::Spanned<String>,
        idx: u32,
        field: &str,
    ) -> Option<Box<str>> {
        let line = src.line_of(domain.span().start);
        let host = match normalise_host(domain.get_ref()) {
            Ok(h) => h,
            Err(e) => {
                self.errors.push(src.error(
                    domain.span(),
                    field,
                    format!("{:?} is not a host name: {e}", domain.get_ref()),
                ));
                return None;
            }
        };
        let key: Box<str> = host.as_key().into();
        match self.domains.entry(key.clone()) {
            Entry::Vacant(v) => {
                v.insert(idx);
                // Index into `files` and line: a million domains need no path copies.
                let file = (self.files.len() - 1) as u32;
                self.domain_origin.insert(key.clone(), (file, line as u32));
                Some(key)
            }
            // The same domain twice for one app is harmless: deduplicate.
            Entry::Occupied(o) if *o.get() == idx => Some(key),
            Entry::Occupied(o) => {
                let other = &self.apps[*o.get() as usize].name;
                let (file, l) = self.domain_origin[&key];
                let file = self.files[file as usize].display();
                self.errors.push(src.error(
                    domain.span(),
                    field,
                    format!("{key} is already listed for {other} at {file}:{l}"),
                ));
                None
            }
        }
    }

    fn add_exemption(&mut self, src: &SourceText<'_>, ex: source::ExemptionEntry) {
        let line = src.line_of(ex.who.span().start);
        let mut who = Vec::new();
        for p in ex.who.get_ref() {
            let principal = match p.get_ref().split_once(':') {
                Some(("user", n)) if !n.is_empty() => Principal::User(n.to_string()),
                Some(("group", n)) if !n.is_empty() => Principal::Group(n.to_string()),
                Some(("device", n)) if !n.is_empty() => Principal::Device(n.to_string()),
                _ => {
                    self.errors.push(src.error(
                        p.span(),
                        "who",
                        format!("{:?}: write user:NAME, group:NAME or device:NAME", p.get_ref()),
                    ));
                    continue;
                }
            };
            who.push(principal);
        }
        if ex.who.get_ref().is_empty() {
            self.errors.push(src.error(ex.who.span(), "who", "names nobody"));
        }
        if ex.apps.get_ref().is_empty() {
            self.errors.push(src.error(ex.apps.span(), "apps", "names no app"));
        }
        if ex.reason.get_ref().trim().is_empty() {
            self.errors.push(src.error(ex.reason.span(), "reason", "an exemption needs its reason (the primary task)"));
        }
        let until = match Date::parse(ex.until.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(src.error(ex.until.span(), "until", e.to_string()));
                return;
            }
        };
        let apps = ex.apps.get_ref().iter().map(|a| a.get_ref().trim().to_string()).collect();
        // App names are checked in build(), when every file has been read.
        self.exemptions.push((
            Exemption { who, apps, reason: ex.reason.into_inner().trim().to_string(), until },
            src.path.to_path_buf(),
            line,
        ));
    }

    /// Compiles the policy, or returns every error found. `today` decides
    /// which exemptions are reported as expired.
    pub fn build(mut self, today: Date) -> Result<(Policy, Vec<Warning>), PolicyErrors> {
        let mut warnings = Vec::new();
        for (ex, file, line) in &self.exemptions {
            for app in &ex.apps {
                if !self.app_origin.contains_key(&app.to_ascii_lowercase()) {
                    self.errors.push(PolicyError::Invalid {
                        file: file.clone(),
                        line: *line,
                        key: "apps".into(),
                        message: format!("{app:?} is not a banned app in this policy"),
                    });
                }
            }
            if ex.until < today {
                warnings.push(Warning {
                    file: file.clone(),
                    line: *line,
                    message: format!(
                        "exemption for {} expired on {}: it no longer applies",
                        ex.apps.join(", "),
                        ex.until
                    ),
                });
            }
        }
        if !self.errors.is_empty() {
            return Err(PolicyErrors(self.errors));
        }
        let mut domains = self.domains;
        domains.shrink_to_fit();
        let user_agents = (self.apps.iter().enumerate())
            .flat_map(|(i, app)| app.user_agents.iter().map(move |sig| (sig.clone(), i as u32)))
            .collect();
        Ok((
            Policy {
                apps: self.apps,
                domains,
                user_agents,
                exemptions: self.exemptions.into_iter().map(|(e, _, _)| Arc::new(e)).collect(),
                embedded: self.embedded,
                digest: hex::encode(self.hasher.finalize()),
                files: self.files,
                zone: Zone::default(),
            },
            warnings,
        ))
    }
}

/// The shipped policy, compiled into the binary so that `serve` on embedded
/// defaults blocks the government's list even when `policy/` is not beside it.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("aliexpress.toml", include_str!("../../policy/aliexpress.toml")),
    ("capcut.toml", include_str!("../../policy/capcut.toml")),
    ("tiktok.toml", include_str!("../../policy/tiktok.toml")),
    ("vkontakte.toml", include_str!("../../policy/vkontakte.toml")),
    ("wechat.toml", include_str!("../../policy/wechat.toml")),
];

/// Reads every `*.toml` in `dir` (sorted by name, so the digest and error
/// order are stable) into a builder.
pub fn read_dir(dir: &Path) -> Result<PolicyBuilder, PolicyErrors> {
    let io = |source| PolicyErrors(vec![PolicyError::Io { path: dir.to_path_buf(), source }]);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(PolicyErrors(vec![PolicyError::NoFiles { dir: dir.to_path_buf() }]));
    }
    let mut builder = PolicyBuilder::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                builder.add_source(&path, &text);
            }
            Err(source) => errors.push(PolicyError::Io { path, source }),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    Ok(builder)
}

/// Loads the policy a configuration names, its dates meant in
/// `policy.timezone`. On embedded defaults a missing `policy/` falls back to
/// the policy compiled into the binary.
pub fn load_configured(config: &crate::config::Config) -> Result<(Policy, Vec<Warning>), PolicyErrors> {
    let dir = &config.policy.dir;
    let zone = &config.policy.timezone;
    if config.policy_dir_is_default() && !dir.exists() {
        tracing::warn!(dir = %dir.display(), "policy directory not found; using the policy built into weerwal");
        return load_embedded(zone);
    }
    load_dir(dir, zone)
}

/// Loads and compiles the policy directory, its dates meant in `zone`
/// (expired exemptions are those that ended before today there).
pub fn load_dir(dir: &Path, zone: &Zone) -> Result<(Policy, Vec<Warning>), PolicyErrors> {
    let (policy, warnings) = read_dir(dir)?.build(zone.today())?;
    Ok((policy.in_zone(zone.clone()), warnings))
}

/// Compiles the policy shipped inside the binary, its dates meant in `zone`.
pub fn load_embedded(zone: &Zone) -> Result<(Policy, Vec<Warning>), PolicyErrors> {
    let mut builder = PolicyBuilder::new();
    for (name, text) in EMBEDDED {
        builder.add_source(&Path::new("(embedded policy)").join(name), text);
    }
    let (policy, warnings) = builder.build(zone.today())?;
    Ok((policy.in_zone(zone.clone()), warnings))
}

#[cfg(test)]
mod tests;
