//! The directory (Active Directory or OpenLDAP) as the source of users,
//! groups and officers: a user is found with `user_filter` under `base_dn`
//! by a read-only service account, and their password is checked by binding
//! as them. Connections are encrypted (LDAPS or StartTLS, verified against
//! `ca_file` or the system roots) unless plain text is explicitly allowed,
//! kept in a small pool, and at most `pool_size` password checks run at once.
//!
//! Every value put into a filter is escaped per RFC 4515, and an empty
//! password is refused here, before the directory is asked: an LDAP server
//! treats a bind with an empty password as an anonymous bind and says yes.

use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};

use crate::config::LdapConfig;

/// LDAP result code: the name or password is wrong.
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP result codes a server uses to refuse a bind outright (disabled
/// account, unauthenticated bind refused, ...): a "no", not an outage.
const REFUSALS: [u32; 4] = [INVALID_CREDENTIALS, 48, 50, 53];
/// Longest name looked up; nobody's account name is longer.
const MAX_NAME: usize = 256;

/// Why the directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The service account's password file cannot be read.
    #[error("{}: {message} (identity.ldap.bind_password_file)", path.display())]
    PasswordFile { path: PathBuf, message: String },
    /// `ca_file` cannot be used.
    #[error("{}: {message} (identity.ldap.ca_file)", path.display())]
    CaFile { path: PathBuf, message: String },
    /// The directory did not answer, refused TLS, or refused the service
    /// account: users cannot be checked now.
    #[error("the directory cannot be reached: {0}")]
    Unreachable(String),
}

/// A user as the directory describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The account name as the directory spells it (`sAMAccountName`, `uid`).
    pub name: String,
    /// The CNs of the groups in `group_attribute`.
    pub groups: Vec<String>,
    dn: String,
}

/// What the directory says about a name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(DirectoryUser),
    /// The name exists but the password is wrong (or the account may not log in).
    WrongPassword {
        name: String,
    },
    /// No such user, an ambiguous name, or a name/password refused unasked.
    Unknown,
}

/// The directory client: shared, cheap to call concurrently.
pub struct Directory {
    config: LdapConfig,
    bind_password: String,
    settings: LdapConnSettings,
    /// The attribute `{user}` is matched against (`sAMAccountName`, `uid`).
    account_attribute: String,
    /// Connections bound as the service account, for searches (at most
    /// `pool_size` open: one per permit of `binds`).
    searchers: Mutex<Vec<Ldap>>,
    /// Connections used for users' binds (bound as whoever was last checked).
    binders: Mutex<Vec<Ldap>>,
    /// Directory requests (a search, or a search and a bind) at once.
    binds: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("url", &self.config.url).finish_non_exhaustive()
    }
}

/// The filter for one name: `{user}` replaced by the name escaped per RFC
/// 4515 (`*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`).
pub fn user_filter(template: &str, name: &str) -> String {
    template.replace("{user}", &ldap3::ldap_escape(name))
}

/// The CN of a group DN (`CN=toezicht,OU=Groepen,DC=gemeente,DC=local` →
/// `toezicht`); a value that is not a DN with a CN first is taken as is.
pub fn group_name(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    let first: String = value.chars().take(3).collect();
    if !first.eq_ignore_ascii_case("cn=") {
        return value.to_string();
    }
    chars.nth(2);
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(h) if h.is_ascii_hexdigit() => {
                    // \2C style: a hex pair (only ASCII is decoded this way).
                    let l = chars.next().unwrap_or('0');
                    let byte = u8::from_str_radix(&format!("{h}{l}"), 16).unwrap_or(b'?');
                    out.push(byte as char);
                }
                Some(other) => out.push(other),
                None => break,
            },
            ',' | '+' => break,
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// The TLS settings for the directory: `ca_file` alone when given (a
/// private AD CA), else the system's roots.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let err = |message: String| DirectoryError::CaFile { path: path.to_path_buf(), message };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("no certificate in the file".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Unreachable(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn unreachable(e: LdapError) -> DirectoryError {
    DirectoryError::Unreachable(e.to_string())
}

fn result_code(e: &LdapError) -> Option<u32> {
    match e {
        LdapError::LdapResult { result } => Some(result.rc),
        _ => None,
    }
}

impl Directory {
    /// Reads the service account's password and `ca_file`; connects lazily.
    pub fn new(config: &LdapConfig) -> Result<Directory, DirectoryError> {
        let path = &config.bind_password_file;
        let bind_password = std::fs::read_to_string(path)
            .map_err(|e| DirectoryError::PasswordFile { path: path.clone(), message: e.to_string() })?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if bind_password.is_empty() {
            return Err(DirectoryError::PasswordFile {
                path: path.clone(),
                message: "the file is empty (an empty password would be an anonymous bind)".into(),
            });
        }
        let mut settings = LdapConnSettings::new().set_conn_timeout(config.timeout).set_starttls(config.starttls);
        if config.encrypted() {
            settings = settings.set_config(tls_config(config.ca_file.as_deref())?);
        }
        let account_attribute = config.account_attribute().unwrap_or_else(|| "uid".to_string());
        Ok(Directory {
            config: config.clone(),
            bind_password,
            settings,
            account_attribute,
            searchers: Mutex::new(Vec::new()),
            binders: Mutex::new(Vec::new()),
            binds: tokio::sync::Semaphore::new(config.pool_size),
        })
    }

    /// The officers' group, if configured.
    pub fn officer_group(&self) -> Option<&str> {
        self.config.officer_group.as_deref()
    }

    /// How long a successful check may be remembered.
    pub fn cache_ttl(&self) -> Duration {
        self.config.cache_ttl
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let (conn, ldap) =
            LdapConnAsync::with_settings(self.settings.clone(), &self.config.url).await.map_err(unreachable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        Ok(ldap)
    }

    fn take(pool: &Mutex<Vec<Ldap>>) -> Option<Ldap> {
        let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut l) = pool.pop() {
            if !l.is_closed() {
                return Some(l);
            }
        }
        None
    }

    fn put_back(&self, pool: &Mutex<Vec<Ldap>>, ldap: Ldap) {
        let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.config.pool_size {
            pool.push(ldap);
        }
    }

    /// A connection bound as the service account.
    async fn searcher(&self) -> Result<Ldap, DirectoryError> {
        if let Some(l) = Self::take(&self.searchers) {
            return Ok(l);
        }
        let mut ldap = self.connect().await?;
        ldap.with_timeout(self.config.timeout)
            .simple_bind(&self.config.bind_dn, &self.bind_password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| match result_code(&e) {
                Some(INVALID_CREDENTIALS) => DirectoryError::Unreachable(format!(
                    "the service account {} was refused: check bind_dn and bind_password_file",
                    self.config.bind_dn
                )),
                _ => unreachable(e),
            })?;
        Ok(ldap)
    }

    /// Looks a name up as the service account: `None` when no entry, or
    /// more than one, matches. Counts against the bound on requests at once.
    pub async fn lookup(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        let Ok(_permit) = self.binds.acquire().await else {
            return Err(DirectoryError::Unreachable("shutting down".into()));
        };
        self.find(name).await
    }

    async fn find(&self, name: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Ok(None);
        }
        let filter = user_filter(&self.config.user_filter, name);
        let attrs = [self.account_attribute.as_str(), self.config.group_attribute.as_str()];
        let mut ldap = self.searcher().await?;
        let found = ldap
            .with_timeout(self.config.timeout)
            .search(&self.config.base_dn, Scope::Subtree, &filter, &attrs[..])
            .await
            .and_then(|r| r.success());
        let mut entries = match found {
            Ok((entries, _)) => entries,
            // noSuchObject: nothing under base_dn (yet).
            Err(e) if result_code(&e) == Some(32) => Vec::new(),
            Err(e) => return Err(unreachable(e)),
        };
        self.put_back(&self.searchers, ldap);
        if entries.len() != 1 {
            return Ok(None);
        }
        let entry = SearchEntry::construct(entries.remove(0));
        let value_of = |attr: &str| {
            entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        let name = value_of(&self.account_attribute).into_iter().next().unwrap_or_else(|| name.to_string());
        let mut groups: Vec<String> = value_of(&self.config.group_attribute).iter().map(|g| group_name(g)).collect();
        groups.sort();
        groups.dedup();
        Ok(Some(DirectoryUser { name, groups, dn: entry.dn }))
    }

    /// Checks a name and password: found by the service account, then a
    /// bind as that user. An empty password or name is refused unasked.
    pub async fn check(&self, name: &str, password: &str) -> Result<Verdict, DirectoryError> {
        if password.is_empty() || name.trim().is_empty() {
            return Ok(Verdict::Unknown);
        }
        // One permit for the search and the bind: at most `pool_size`
        // checks talk to the directory at once, however many logins arrive.
        let Ok(_permit) = self.binds.acquire().await else {
            return Err(DirectoryError::Unreachable("shutting down".into()));
        };
        let Some(user) = self.find(name).await? else { return Ok(Verdict::Unknown) };
        let mut ldap = match Self::take(&self.binders) {
            Some(l) => l,
            None => self.connect().await?,
        };
        let bound = ldap.with_timeout(self.config.timeout).simple_bind(&user.dn, password).await;
        match bound.and_then(|r| r.success()) {
            Ok(_) => {
                self.put_back(&self.binders, ldap);
                Ok(Verdict::Accepted(user))
            }
            Err(e) if result_code(&e).is_some_and(|rc| REFUSALS.contains(&rc)) => {
                self.put_back(&self.binders, ldap);
                Ok(Verdict::WrongPassword { name: user.name })
            }
            Err(e) => Err(unreachable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_per_rfc_4515() {
        let t = "(&(objectClass=user)(sAMAccountName={user}))";
        assert_eq!(user_filter(t, "jdevries"), "(&(objectClass=user)(sAMAccountName=jdevries))");
        assert_eq!(
            user_filter(t, "*)(uid=*))(|(uid=*"),
            "(&(objectClass=user)(sAMAccountName=\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a))"
        );
        assert_eq!(user_filter("(uid={user})", "a\\b\0"), "(uid=a\\5cb\\00)");
    }

    #[test]
    fn account_attribute_comes_from_the_filter() {
        let attr = |f: &str| LdapConfig { user_filter: f.into(), ..LdapConfig::default() }.account_attribute();
        assert_eq!(attr("(&(objectClass=user)(sAMAccountName={user}))").as_deref(), Some("sAMAccountName"));
        assert_eq!(attr("(uid={user})").as_deref(), Some("uid"));
        assert_eq!(attr("(|(uid={user})(mail={user}))").as_deref(), Some("uid"));
        assert_eq!(attr("({user})"), None);
    }

    #[tokio::test]
    async fn an_empty_password_or_name_is_refused_without_asking_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("ldap.pw");
        std::fs::write(&pw, "svc\n").unwrap();
        // Nothing listens on port 1: any question to it would be an error.
        let config = LdapConfig {
            url: "ldap://127.0.0.1:1".into(),
            allow_plaintext: true,
            bind_dn: "cn=svc".into(),
            bind_password_file: pw.clone(),
            base_dn: "dc=x".into(),
            ..LdapConfig::default()
        };
        let d = Directory::new(&config).unwrap();
        assert_eq!(d.check("jdevries", "").await.unwrap(), Verdict::Unknown);
        assert_eq!(d.check("", "wachtwoord").await.unwrap(), Verdict::Unknown);
        assert!(matches!(d.check("jdevries", "wachtwoord").await, Err(DirectoryError::Unreachable(_))));
        std::fs::write(&pw, "\n").unwrap();
        assert!(matches!(Directory::new(&config), Err(DirectoryError::PasswordFile { .. })));
    }

    #[test]
    fn groups_are_named_by_their_cn() {
        assert_eq!(group_name("CN=toezicht,OU=Groepen,DC=gemeente,DC=local"), "toezicht");
        assert_eq!(group_name("cn=weerwal-officers,ou=groups,dc=test"), "weerwal-officers");
        assert_eq!(group_name("CN=Raad\\, griffie,OU=G,DC=x"), "Raad, griffie");
        assert_eq!(group_name("CN=a\\2Cb,DC=x"), "a,b");
        assert_eq!(group_name("toezicht"), "toezicht");
    }
}
