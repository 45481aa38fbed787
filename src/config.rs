//! `weerwal.toml`: the schema, its defaults and its validation. Every key has
//! a default, so an empty file (or none) is valid; unknown keys are errors so
//! a misspelt setting never silently does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// Why a configuration could not be used; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {key}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, key: String, message: String },
}

/// The whole configuration, with relative paths already resolved.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub policy: PolicyConfig,
    pub audit: AuditConfig,
    pub ca: CaConfig,
    pub identity: IdentityConfig,
    pub pac: PacConfig,
    pub admin: Option<AdminConfig>,
    pub compliance: Option<ComplianceConfig>,
    pub gateway: Option<GatewayConfig>,
    /// `[cluster]`: state and audit copy shared through PostgreSQL.
    pub cluster: Option<ClusterConfig>,
    pub dns: Option<DnsConfig>,
    /// Where the configuration came from (`None`: embedded defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[proxy]`: where browsers connect and what they may do.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// Never an open proxy: only these client networks are served.
    pub allow_clients: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    /// Addresses the proxy never connects to for a client (checked after
    /// DNS). Loopback is added automatically when non-loopback clients are
    /// allowed: the server's own services are not theirs to reach.
    pub deny_destinations: Vec<IpNet>,
    pub https: HttpsMode,
    /// Squid's default request header limit.
    pub max_header_bytes: usize,
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub tunnel_idle_timeout: Duration,
    /// How long to wait for a TLS ClientHello after answering CONNECT before
    /// treating the tunnel as a non-TLS protocol.
    #[serde(deserialize_with = "duration")]
    pub client_hello_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 3128))],
            allow_clients: vec!["127.0.0.0/8".parse().expect("literal CIDR"), "::1/128".parse().expect("literal CIDR")],
            connect_ports: vec![443],
            deny_destinations: vec![
                "169.254.0.0/16".parse().expect("literal CIDR"),
                "fe80::/10".parse().expect("literal CIDR"),
            ],
            https: HttpsMode::Intercept,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(600),
            client_hello_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            max_connections_per_client: 2_000,
        }
    }
}

/// What to do with a CONNECT to a banned host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpsMode {
    /// Terminate TLS with a leaf from the local CA and show the block page.
    Intercept,
    /// Answer the CONNECT with a plain 403.
    Reject,
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub dir: PathBuf,
    /// Whose calendar days the policy's dates mean (an exemption `until` a
    /// date ends when that day ends there), and the zone the dashboard and
    /// `weerwal logs` show times and read dates in. The log stays in UTC.
    pub timezone: crate::calendar::Zone,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { dir: PathBuf::from("policy"), timezone: crate::calendar::Zone::default() }
    }
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub sync: SyncMode,
    pub retention_days: u32,
    /// Log the full URL path of blocked requests (off: host only, for privacy).
    pub log_paths: bool,
    /// When the live file is closed and a new one started.
    pub rotate: Rotate,
    /// Also write blocked and exempted attempts as Squid `access.log` lines,
    /// for the report tools municipalities already run.
    pub squid_log: Option<PathBuf>,
    /// The cluster node name written in every record (set from
    /// `[cluster] node` at start, not a key of `[audit]`).
    #[serde(skip)]
    pub node: Option<String>,
    /// Identical attempts (same subject, event, app and host) written one by
    /// one per window before the rest are only counted (0: every attempt is
    /// written). One looping client cannot fill the audit volume.
    pub coalesce_after: u32,
    /// The window of `coalesce_after`; when it closes, one record carries the count.
    #[serde(deserialize_with = "duration")]
    pub coalesce_window: Duration,
    /// Below this much free space on the audit volume: a loud log line and
    /// the `weerwal_audit_free_bytes` metric to alert on (0: no warning).
    pub free_space_warn_mb: u64,
    /// Below this much free space, attempts are refused (never served
    /// unrecorded) until space is made (0: write until the disk is full).
    pub free_space_refuse_mb: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: PathBuf::from("logs/audit.jsonl"),
            sync: SyncMode::Write,
            retention_days: 365,
            log_paths: false,
            rotate: Rotate::default(),
            squid_log: None,
            node: None,
            coalesce_after: 10,
            coalesce_window: Duration::from_secs(60),
            free_space_warn_mb: 1024,
            free_space_refuse_mb: 64,
        }
    }
}

/// `audit.rotate`: by day, by size, or both (whichever comes first).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rotate {
    /// Start a new file at midnight UTC.
    pub daily: bool,
    /// Start a new file when the current one would grow past this size (0: never).
    pub max_bytes: u64,
}

impl Default for Rotate {
    fn default() -> Self {
        Rotate { daily: true, max_bytes: 100 * 1024 * 1024 }
    }
}

/// How durable a record must be before the response that depends on it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Written to the OS (survives a crash of weerwal, not of the machine).
    Write,
    /// Written and fsynced (survives power loss; slower).
    Fsync,
}

/// `[ca]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    pub dir: PathBuf,
    pub organisation: String,
    /// Create the CA with X.509 name constraints permitting only the banned
    /// and protected domains, so a stolen `ca.key` cannot impersonate any
    /// other site (`weerwal ca init --force` when the policy gains a domain).
    pub name_constraints: bool,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig { dir: PathBuf::from("certs"), organisation: "Gemeente".to_string(), name_constraints: false }
    }
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    pub auth: AuthMode,
    pub users_file: PathBuf,
    #[serde(deserialize_with = "duration")]
    pub session_idle: Duration,
    pub device: Vec<DeviceRange>,
    /// `[identity.ldap]`: the directory, for `auth = "ldap"` (and directory officers).
    pub ldap: Option<LdapConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            auth: AuthMode::None,
            users_file: PathBuf::from("users.toml"),
            session_idle: Duration::from_secs(30 * 60),
            device: Vec::new(),
            ldap: None,
        }
    }
}

/// How a request's subject is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    Basic,
    /// Basic credentials checked with a bind against `[identity.ldap]`.
    Ldap,
}

/// `[identity.ldap]`: Active Directory or OpenLDAP as the source of users,
/// groups and officers (see docs/directory.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls`.
    pub url: String,
    pub starttls: bool,
    /// Plain `ldap://` without StartTLS: passwords cross the network readable.
    pub allow_plaintext: bool,
    /// The CA that signed the directory's certificate (default: system roots).
    pub ca_file: Option<PathBuf>,
    /// The read-only service account that looks users up.
    pub bind_dn: String,
    /// File holding that account's password (never the password itself in here).
    pub bind_password_file: PathBuf,
    pub base_dn: String,
    /// `{user}` is replaced by the name typed, escaped per RFC 4515.
    pub user_filter: String,
    /// The attribute listing a user's groups as DNs; a group is named by its CN.
    pub group_attribute: String,
    /// Members of this group may log in to the dashboard.
    pub officer_group: Option<String>,
    /// How long a successful check and its groups are remembered.
    #[serde(deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// Connect and operation time limit for one directory request.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Directory connections kept open (and password checks at once).
    pub pool_size: usize,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: String::new(),
            starttls: false,
            allow_plaintext: false,
            ca_file: None,
            bind_dn: String::new(),
            bind_password_file: PathBuf::from("ldap.pw"),
            base_dn: String::new(),
            user_filter: "(&(objectClass=user)(sAMAccountName={user}))".to_string(),
            group_attribute: "memberOf".to_string(),
            officer_group: None,
            cache_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            pool_size: 8,
        }
    }
}

impl LdapConfig {
    /// The attribute `user_filter` matches `{user}` against (`sAMAccountName`
    /// in `(&(objectClass=user)(sAMAccountName={user}))`): its value names
    /// the user in records.
    pub fn account_attribute(&self) -> Option<String> {
        let filter = &self.user_filter;
        let at = filter.find("={user})")?;
        let start = filter[..at].rfind('(')? + 1;
        let attr = &filter[start..at];
        (!attr.is_empty() && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.'))
            .then(|| attr.to_string())
    }

    /// Whether the connection to the directory is encrypted.
    pub fn encrypted(&self) -> bool {
        self.url.to_ascii_lowercase().starts_with("ldaps://") || self.starttls
    }
}

/// `[[identity.device]]`: a named address range (e.g. the council laptops).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRange {
    pub cidr: IpNet,
    pub name: String,
}

/// `[pac]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacConfig {
    /// `host:port` laptops use, or a list of them (several proxy nodes:
    /// `PROXY a:3128; PROXY b:3128`, browsers fail over in order); defaults
    /// to the first proxy listen address.
    #[serde(deserialize_with = "proxy_list")]
    pub proxy: Option<Vec<String>>,
    pub route: PacRoute,
    pub direct: Vec<String>,
    pub fallback_direct: bool,
}

impl Default for PacConfig {
    fn default() -> Self {
        PacConfig { proxy: None, route: PacRoute::All, direct: Vec::new(), fallback_direct: false }
    }
}

/// Which traffic the PAC file sends through weerwal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PacRoute {
    All,
    Policy,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain: with `key`, the dashboard speaks HTTPS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Serve the dashboard without TLS on a non-loopback address anyway.
    pub allow_plaintext: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: SocketAddr::from(([127, 0, 0, 1], 9090)), cert: None, key: None, allow_plaintext: false }
    }
}

/// `[compliance]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceConfig {
    pub protected: Vec<String>,
    pub quarantine: String,
    /// Where flags and device links are kept (`compliance.json`); default:
    /// beside the audit log. A package puts it under `/var/lib/weerwal`.
    pub state: Option<PathBuf>,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        ComplianceConfig { protected: Vec::new(), quarantine: "until-attested".to_string(), state: None }
    }
}

/// `[gateway]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    #[serde(default)]
    pub route: Vec<GatewayRoute>,
}

/// `[[gateway.route]]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRoute {
    pub host: String,
    pub upstream: String,
}

/// `[cluster]`: several nodes (proxies, a gateway, the dashboard) share
/// their state and a copy of every audit record through PostgreSQL. Absent:
/// one node on its own files, as before.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `postgres://user@host:port/dbname`; when absent, the environment
    /// variable `WEERWAL_DATABASE_URL`. Never printed (a password in it is
    /// redacted from every message).
    pub database: Option<DatabaseUrl>,
    /// A file holding the database password (first line), so it is in
    /// neither the configuration nor `ps`.
    pub password_file: Option<PathBuf>,
    /// The CA that signed the database server's certificate: TLS with the
    /// certificate and host name verified (`sslmode=verify-full`).
    pub ca_file: Option<PathBuf>,
    /// This node's name in every record (`"node"`) and in `db status`;
    /// default: the host name.
    pub node: Option<String>,
    /// What the gateway does while the database cannot be reached.
    pub on_unavailable: OnUnavailable,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            database: None,
            password_file: None,
            ca_file: None,
            node: None,
            on_unavailable: OnUnavailable::LastKnown,
        }
    }
}

/// `[dns]`: the DNS listener for devices that do not use the proxy
/// (phones, private devices on the municipal Wi-Fi).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// UDP and TCP, on each address.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// The municipality's resolvers, tried in order (port 53 when omitted).
    #[serde(deserialize_with = "dns_servers")]
    pub upstream: Vec<SocketAddr>,
    /// What a banned name is answered with: NXDOMAIN or an address of
    /// weerwal's block page.
    #[serde(deserialize_with = "block_answer")]
    pub block_answer: crate::policy::export::Answer,
    /// Never an open resolver: only these networks are answered (REFUSED
    /// otherwise). Default: `proxy.allow_clients`.
    pub allow_clients: Option<Vec<IpNet>>,
    /// Answer Firefox's DNS-over-HTTPS canary (`use-application-dns.net`)
    /// NXDOMAIN, so Firefox keeps asking this resolver.
    pub doh_canary: bool,
    /// How long one upstream may take before the next is tried.
    #[serde(deserialize_with = "duration")]
    pub upstream_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            upstream: Vec::new(),
            block_answer: crate::policy::export::Answer::Nxdomain,
            allow_clients: None,
            doh_canary: true,
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// A database URL. Its `Debug` form hides any password written in it, so
/// printing a configuration never shows one.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact_url(&self.0))
    }
}

/// A `postgres://user:password@host/db` URL with its password replaced by
/// `***` (and any `password=` parameter): safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map(|i| rest_start + i).unwrap_or(out.len());
        if let Some(at) = out[rest_start..authority_end].rfind('@').map(|i| rest_start + i) {
            if let Some(colon) = out[rest_start..at].find(':').map(|i| rest_start + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    // key=value forms: `password=…` in a query string or a keyword string.
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("password=") {
        let start = i + "password=".len();
        let end = out[start..].find(['&', ' ']).map(|j| start + j).unwrap_or(out.len());
        out.replace_range(start..end, "***");
    }
    out
}

/// `cluster.on_unavailable`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Keep using the flags known when the database was last reached.
    LastKnown,
    /// Refuse every protected host until the database is back.
    Deny,
}

fn dns_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let v = Vec::<String>::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a list of resolver addresses like [\"10.0.0.53\"]"))?;
    v.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    serde::de::Error::custom(format!("{s:?} is not an address like \"10.0.0.53\" or \"10.0.0.53:53\""))
                })
        })
        .collect()
}

fn block_answer<'de, D: Deserializer<'de>>(d: D) -> Result<crate::policy::export::Answer, D::Error> {
    let s = String::deserialize(d)?;
    crate::policy::export::Answer::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!("{s:?}: write \"nxdomain\" or an IP address of weerwal's block page"))
    })
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(a)) => Ok(vec![a]),
        Ok(OneOrMany::Many(v)) if !v.is_empty() => Ok(v),
        Ok(OneOrMany::Many(_)) => Err(serde::de::Error::custom("at least one address is needed")),
        Err(_) => Err(serde::de::Error::custom("expected an address like \"127.0.0.1:3128\" or a list of them")),
    }
}

fn proxy_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected \"host:port\" or a list like [\"a:3128\", \"b:3128\"]"))?
    {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    };
    if list.is_empty() {
        return Err(serde::de::Error::custom("at least one proxy is needed"));
    }
    for p in &list {
        let ok = p.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0))
            && !p.contains([';', ' ', '"', '\'', '\\']);
        if !ok {
            return Err(serde::de::Error::custom(format!("{p:?} is not host:port (like \"proxy.gemeente.nl:3128\")")));
        }
    }
    Ok(Some(list))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{e}: write a duration like \"30s\", \"30m\" or \"14d\"")))
}

impl Config {
    /// Reads a configuration file; relative paths in it are taken relative to
    /// the file's folder, so the service does not depend on its working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        let mut config = Config::parse(path, &text)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.resolve_paths(&base);
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates configuration text (paths left as written).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let line = text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1;
            let key = key_at(text, span.start);
            ConfigError::Invalid { path: path.to_path_buf(), line, key, message: e.message().to_string() }
        })?;
        config.validate(path, text)?;
        Ok(config)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_key(text, key),
            key: key.to_string(),
            message,
        };
        if self.proxy.connect_ports.is_empty() {
            return Err(invalid(
                "connect_ports",
                "no CONNECT port allowed: HTTPS would not work; the usual value is [443]".into(),
            ));
        }
        if self.proxy.connect_ports.contains(&0) {
            return Err(invalid("connect_ports", "port 0 is not a port".into()));
        }
        if self.proxy.max_header_bytes < 1024 {
            return Err(invalid("max_header_bytes", "below 1024 bytes no browser request fits".into()));
        }
        if self.proxy.max_connections == 0 || self.proxy.max_connections_per_client == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if let Some(admin) = &self.admin {
            // The dashboard never shares the proxy's port: browsers reach the
            // proxy from every client network, officers only from loopback or
            // a management network.
            let clash = |a: &SocketAddr| {
                a.port() != 0
                    && a.port() == admin.listen.port()
                    && (a.ip() == admin.listen.ip() || a.ip().is_unspecified() || admin.listen.ip().is_unspecified())
            };
            if let Some(p) = self.proxy.listen.iter().find(|a| clash(a)) {
                let section = text.lines().position(|l| l.trim() == "[admin]").unwrap_or(0);
                let line = text
                    .lines()
                    .enumerate()
                    .skip(section + 1)
                    .take_while(|(_, l)| !l.trim_start().starts_with('['))
                    .find(|(_, l)| l.trim_start().starts_with("listen"))
                    .map(|(i, _)| i + 1)
                    .unwrap_or(section + 1);
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    key: "admin.listen".into(),
                    message: format!(
                        "{} is the proxy's address {p}: the dashboard needs its own port (default 127.0.0.1:9090)",
                        admin.listen
                    ),
                });
            }
        }
        if let Some(c) = &self.cluster {
            if c.node.as_deref().is_some_and(|n| n.trim().is_empty() || n.len() > 128) {
                return Err(invalid("node", "a node name needs 1 to 128 characters".into()));
            }
            if c.database.as_ref().is_some_and(|d| !d.0.starts_with("postgres://") && !d.0.starts_with("postgresql://"))
            {
                return Err(invalid(
                    "database",
                    "expected a URL like \"postgres://weerwal@db.gemeente.local:5432/weerwal\"".into(),
                ));
            }
        }
        if let Some(dns) = &self.dns {
            if dns.upstream.is_empty() {
                let line = text.lines().position(|l| l.trim() == "[dns]").map(|i| i + 1).unwrap_or(1);
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    key: "dns.upstream".into(),
                    message: "name the resolver allowed queries go to, e.g. upstream = [\"10.0.0.53\"]".into(),
                });
            }
        }
        self.validate_directory(path, text)?;
        if self.ca.organisation.trim().is_empty() {
            return Err(invalid("organisation", "the CA needs an organisation name".into()));
        }
        Ok(())
    }

    fn validate_directory(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_key(text, key),
            key: key.to_string(),
            message,
        };
        if let Some(admin) = &self.admin {
            if admin.cert.is_some() != admin.key.is_some() {
                let k = if admin.cert.is_some() { "key" } else { "cert" };
                return Err(invalid(k, "the dashboard's TLS needs both admin.cert and admin.key".into()));
            }
        }
        let Some(l) = &self.identity.ldap else {
            if self.identity.auth == AuthMode::Ldap {
                return Err(invalid("auth", "auth = \"ldap\" needs an [identity.ldap] section".into()));
            }
            return Ok(());
        };
        let url = l.url.to_ascii_lowercase();
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
            return Err(invalid("url", format!("{:?}: write ldaps://host or ldap://host (with starttls)", l.url)));
        }
        if url.starts_with("ldaps://") && l.starttls {
            return Err(invalid("starttls", "ldaps:// is TLS already; StartTLS is for ldap://".into()));
        }
        if !l.encrypted() && !l.allow_plaintext {
            return Err(invalid(
                "url",
                "plain ldap:// sends passwords readable over the network: use ldaps://, starttls = true, or set allow_plaintext = true".into(),
            ));
        }
        if l.bind_dn.trim().is_empty() {
            return Err(invalid("bind_dn", "the service account's DN is needed to look users up".into()));
        }
        if l.base_dn.trim().is_empty() {
            return Err(invalid("base_dn", "where to look for users, e.g. \"DC=gemeente,DC=local\"".into()));
        }
        if !l.user_filter.contains("{user}") || !l.user_filter.starts_with('(') {
            return Err(invalid(
                "user_filter",
                "a filter with {user}, e.g. \"(&(objectClass=user)(sAMAccountName={user}))\"".into(),
            ));
        }
        if l.account_attribute().is_none() {
            return Err(invalid("user_filter", "{user} must be the value of one attribute, as in (uid={user})".into()));
        }
        if l.group_attribute.trim().is_empty() {
            return Err(invalid("group_attribute", "e.g. \"memberOf\"".into()));
        }
        if l.pool_size == 0 {
            return Err(invalid("pool_size", "must be at least 1".into()));
        }
        Ok(())
    }

    /// Embedded defaults, with paths relative to the working directory.
    pub fn embedded() -> Config {
        Config::default()
    }

    /// The configuration a command runs with: `--config FILE` when given,
    /// else `weerwal.toml` in the working directory when present, else the
    /// embedded defaults.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match explicit {
            Some(p) => Config::load(p),
            None => {
                let local = Path::new("weerwal.toml");
                if local.is_file() {
                    Config::load(local)
                } else {
                    Ok(Config::embedded())
                }
            }
        }
    }

    /// Where the compliance gate keeps its flags on one node:
    /// `compliance.state`, else `compliance.json` beside the audit log.
    pub fn compliance_state_path(&self) -> PathBuf {
        match self.compliance.as_ref().and_then(|c| c.state.clone()) {
            Some(p) => p,
            None => self.audit.path.parent().unwrap_or(Path::new(".")).join("compliance.json"),
        }
    }

    /// Whether the policy directory is the default one of the embedded
    /// configuration (then a missing `policy/` falls back to the policy
    /// compiled into the binary).
    pub fn policy_dir_is_default(&self) -> bool {
        self.source.is_none()
    }

    /// The dashboard's and gateway's listen addresses (the dashboard's
    /// default too): never a destination for a client of the proxy.
    pub fn own_listeners(&self) -> Vec<std::net::SocketAddr> {
        let admin =
            self.admin.as_ref().map(|a| a.listen).unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9090)));
        std::iter::once(admin).chain(self.gateway.as_ref().map(|g| g.listen)).collect()
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.policy.dir);
        fix(&mut self.audit.path);
        if let Some(p) = &mut self.audit.squid_log {
            fix(p);
        }
        fix(&mut self.ca.dir);
        fix(&mut self.identity.users_file);
        if let Some(c) = &mut self.cluster {
            if let Some(p) = &mut c.password_file {
                fix(p);
            }
            if let Some(p) = &mut c.ca_file {
                fix(p);
            }
        }
        if let Some(l) = &mut self.identity.ldap {
            fix(&mut l.bind_password_file);
            if let Some(c) = &mut l.ca_file {
                fix(c);
            }
        }
        if let Some(a) = &mut self.admin {
            if let Some(c) = &mut a.cert {
                fix(c);
            }
            if let Some(k) = &mut a.key {
                fix(k);
            }
        }
        if let Some(p) = self.compliance.as_mut().and_then(|c| c.state.as_mut()) {
            fix(p);
        }
        if let Some(g) = &mut self.gateway {
            if let Some(c) = &mut g.cert {
                fix(c);
            }
            if let Some(k) = &mut g.key {
                fix(k);
            }
        }
    }
}

/// The word at a byte offset, used to name the key a TOML error points at.
fn key_at(text: &str, offset: usize) -> String {
    let line_start = text[..offset.min(text.len())].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key: String =
        line.split('=').next().unwrap_or("").trim().trim_matches(|c| c == '[' || c == ']').chars().take(60).collect();
    if key.is_empty() {
        "-".to_string()
    } else {
        key
    }
}

/// Line of the first `key =` in the text, for validation errors found after
/// parsing (1 when the key is not written: its default is at fault).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse(Path::new("w.toml"), "").unwrap();
        assert_eq!(c.proxy.listen, vec!["127.0.0.1:3128".parse().unwrap()]);
        assert_eq!(c.proxy.connect_ports, vec![443]);
        assert_eq!(c.proxy.max_header_bytes, 65536);
        assert_eq!(c.identity.session_idle, Duration::from_secs(1800));
        assert!(c.gateway.is_none());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = Config::parse(Path::new("w.toml"), "[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        let s = err.to_string();
        assert!(s.starts_with("w.toml:3: lisen:"), "{s}");
        assert!(s.contains("unknown field"), "{s}");
    }

    #[test]
    fn listen_takes_one_or_many_and_durations_parse() {
        let c = Config::parse(
            Path::new("w.toml"),
            "[proxy]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\nheader_timeout = \"5m\"\n[identity]\nsession_idle = \"14d\"\n",
        )
        .unwrap();
        assert_eq!(c.proxy.listen.len(), 2);
        assert_eq!(c.proxy.header_timeout, Duration::from_secs(300));
        assert_eq!(c.identity.session_idle, Duration::from_secs(14 * 86400));
        let err = Config::parse(Path::new("w.toml"), "[proxy]\nheader_timeout = \"soon\"\n").unwrap_err();
        assert!(err.to_string().starts_with("w.toml:2: header_timeout:"), "{err}");
    }

    #[test]
    fn bad_cidr_and_semantic_errors_are_located() {
        let err = Config::parse(Path::new("w.toml"), "[proxy]\nallow_clients = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.to_string().starts_with("w.toml:2: allow_clients:"), "{err}");
        let err = Config::parse(Path::new("w.toml"), "[proxy]\n\nconnect_ports = []\n").unwrap_err();
        assert!(err.to_string().starts_with("w.toml:3: connect_ports:"), "{err}");
    }

    #[test]
    fn dns_section_parses_with_defaults_and_located_errors() {
        let text = "[dns]\nlisten = \"127.0.0.1:5353\"\nupstream = [\"10.0.0.53\", \"[2001:db8::53]:5300\"]\nblock_answer = \"10.0.0.9\"\n";
        let d = Config::parse(Path::new("w.toml"), text).unwrap().dns.unwrap();
        assert_eq!(d.upstream, vec!["10.0.0.53:53".parse().unwrap(), "[2001:db8::53]:5300".parse().unwrap()]);
        assert_eq!(d.block_answer, crate::policy::export::Answer::Address("10.0.0.9".parse().unwrap()));
        assert!(d.allow_clients.is_none() && d.doh_canary);
        let e = Config::parse(Path::new("w.toml"), "[dns]\nupstream = [\"10.0.0.53\"]\nblock_answer = \"sinkhole\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w.toml:3: block_answer:") && e.contains("nxdomain"), "{e}");
        let e = Config::parse(Path::new("w.toml"), "\n[dns]\n").unwrap_err().to_string();
        assert!(e.starts_with("w.toml:2: dns.upstream:"), "{e}");
        let e = Config::parse(Path::new("w.toml"), "[dns]\nupstream = [\"resolver\"]\n").unwrap_err().to_string();
        assert!(e.starts_with("w.toml:2: upstream:"), "{e}");
    }

    #[test]
    fn every_section_of_the_design_parses() {
        let text = r#"
[proxy]
listen = ["127.0.0.1:3128"]
[identity]
auth = "basic"
users_file = "users.toml"
[[identity.device]]
cidr = "10.1.2.0/24"
name = "raadslaptops"
[admin]
listen = "127.0.0.1:9090"
[compliance]
protected = ["webmail.gemeente.nl", "ibabs.gemeente.nl"]
quarantine = "14d"
[gateway]
listen = "0.0.0.0:8443"
cert = "certs/gateway.pem"
key = "certs/gateway.key"
trusted_proxies = ["10.0.0.10/32"]
[[gateway.route]]
host = "webmail.gemeente.nl"
upstream = "http://10.0.0.5:80"
"#;
        let c = Config::parse(Path::new("w.toml"), text).unwrap();
        assert_eq!(c.compliance.unwrap().protected.len(), 2);
        assert_eq!(c.gateway.unwrap().route[0].upstream, "http://10.0.0.5:80");
        assert_eq!(c.identity.device[0].name, "raadslaptops");
    }

    #[test]
    fn cluster_section_parses_and_hides_a_password() {
        let text = "[cluster]\ndatabase = \"postgres://weerwal:hunter2@db:5432/weerwal\"\npassword_file = \"db.pw\"\nnode = \"proxy-1\"\non_unavailable = \"deny\"\n";
        let c = Config::parse(Path::new("w.toml"), text).unwrap().cluster.unwrap();
        assert_eq!(c.on_unavailable, OnUnavailable::Deny);
        assert_eq!(c.node.as_deref(), Some("proxy-1"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("weerwal:***@db:5432"), "{shown}");
        assert_eq!(
            redact_url("postgres://u@h/d?password=x&sslmode=require"),
            "postgres://u@h/d?password=***&sslmode=require"
        );
        let err = Config::parse(Path::new("w.toml"), "[cluster]\n\ndatabase = \"mysql://x\"\n").unwrap_err();
        assert!(err.to_string().starts_with("w.toml:3: database:"), "{err}");
        let err = Config::parse(Path::new("w.toml"), "[cluster]\non_unavailable = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().starts_with("w.toml:2: on_unavailable:"), "{err}");
    }

    #[test]
    fn pac_proxy_is_one_or_a_list() {
        let c = Config::parse(Path::new("w.toml"), "[pac]\nproxy = \"a.gemeente.nl:3128\"\n").unwrap();
        assert_eq!(c.pac.proxy, Some(vec!["a.gemeente.nl:3128".to_string()]));
        let c = Config::parse(Path::new("w.toml"), "[pac]\nproxy = [\"a:3128\", \"b:3128\"]\n").unwrap();
        assert_eq!(c.pac.proxy, Some(vec!["a:3128".to_string(), "b:3128".to_string()]));
        for bad in ["[]", "[\"a\"]", "\"a:3128; DIRECT\"", "3"] {
            let err = Config::parse(Path::new("w.toml"), &format!("[pac]\n\nproxy = {bad}\n")).unwrap_err();
            assert!(err.to_string().starts_with("w.toml:3: proxy:"), "{bad}: {err}");
        }
    }

    #[test]
    fn compliance_state_defaults_beside_the_audit_log_and_may_be_set() {
        let c = Config::parse(Path::new("w.toml"), "[audit]\npath = \"/var/log/w/a.jsonl\"\n[compliance]\n").unwrap();
        assert_eq!(c.compliance_state_path(), Path::new("/var/log/w/compliance.json"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.toml");
        std::fs::write(&file, "[compliance]\nstate = \"flags.json\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.compliance_state_path(), dir.path().join("flags.json"), "relative to the config file");
    }

    /// The configuration the Debian package installs as
    /// /etc/weerwal/weerwal.toml: valid, and every path where the
    /// file-system hierarchy (and the unit's ProtectSystem=strict) wants it.
    #[test]
    fn packaged_production_config_is_accepted_with_fhs_paths() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/weerwal.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(Path::new("/etc/weerwal/weerwal.toml"), &text).unwrap();
        assert_eq!(c.policy.dir, Path::new("/etc/weerwal/policy"));
        assert_eq!(c.audit.path, Path::new("/var/log/weerwal/audit.jsonl"));
        assert_eq!(c.ca.dir, Path::new("/var/lib/weerwal/certs"));
        assert_eq!(c.identity.users_file, Path::new("/var/lib/weerwal/users.toml"));
        assert!(c.compliance.is_none(), "the gate is opt-in");
        // What the commented [compliance] section would use once enabled.
        let enabled = text.replace("# [compliance]\n", "[compliance]\n").replace("# state = ", "state = ");
        let c = Config::parse(Path::new("/etc/weerwal/weerwal.toml"), &enabled).unwrap();
        assert_eq!(c.compliance_state_path(), Path::new("/var/lib/weerwal/compliance.json"));
    }

    #[test]
    fn example_file_is_accepted_as_is() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("weerwal.example.toml");
        let c = Config::load(&path).unwrap();
        assert!(c.policy.dir.ends_with("policy"));
        assert!(c.policy.dir.is_absolute());
    }
}
