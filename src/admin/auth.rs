//! Officer login for the dashboard: users with role `officer` only, a
//! random session token in an `HttpOnly; SameSite=Strict` cookie, a CSRF
//! token per session, and failed logins slowed down.
//!
//! Login CSRF: the login form carries a token bound (HMAC with a process
//! secret) to a random pre-session cookie, and `POST /login` needs both.
//! `SameSite=Strict` alone would not do: cookies ignore ports, so every
//! other web application on `127.0.0.1` is "same-site" with the dashboard
//! and could post a login form to it. The same holds for every form after
//! login, which is why each carries the session's CSRF token, and why a
//! POST whose `Origin` names another origin is refused as well.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cookies;
use crate::identity::ldap::{Directory, Verdict};
use crate::identity::{Role, Users};
use crate::tokens;

/// The session cookie.
pub const SESSION_COOKIE: &str = "weerwal_admin";
/// The pre-session cookie the login form's token is bound to.
pub const LOGIN_COOKIE: &str = "weerwal_admin_login";
/// What the login form's token is for (see [`tokens`]).
const LOGIN_TOKEN_CONTEXT: &str = "weerwal admin login";
/// A session ends this long after login, whatever happens.
pub const SESSION_MAX: Duration = Duration::from_secs(8 * 3600);
/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// At most this many sessions; the oldest goes when a new one would pass it.
const MAX_SESSIONS: usize = 1000;
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// Password checks (argon2id) running at once; more wait.
const PARALLEL_CHECKS: usize = 4;

/// A logged-in officer, as a request handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Officer {
    pub name: String,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
}

/// What a session cookie says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    Officer(Officer),
    /// No cookie, an unknown or expired one.
    None,
    /// A session whose user is no longer an officer (users file changed,
    /// or removed from the directory's officer group).
    NotOfficer(String),
    /// A directory officer's session whose membership cannot be checked now
    /// (the directory is down): this request is refused, the session kept.
    Unverifiable(String),
}

/// The outcome of a login form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// A new session: the cookie value and the officer.
    Officer { token: String, officer: Officer },
    /// Refused: an unknown user, a wrong password, or a right password of
    /// someone who is not an officer. All three are answered alike, so the
    /// form tells nobody whether a proxy user's password is right.
    Failed {
        /// The name tried, only when such a user exists: a password typed
        /// into the name field must never reach the permanent log.
        user: Option<String>,
        /// For the audit record only (never shown): why it was refused.
        reason: &'static str,
    },
    /// The name is not in the users file and the directory cannot be reached.
    DirectoryDown,
}

struct Session {
    /// Logged in with the directory password: membership of the officer
    /// group is checked again at every request.
    from_directory: bool,
    officer: String,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// Checks officer logins and holds the dashboard's sessions.
///
/// The users file is watched, not read per request: [`OfficerAuth::refresh`]
/// runs once a second off the runtime's threads (a `stat`, and a parse only
/// when the file changed), so an officer removed or demoted loses the
/// dashboard within a second, and a page view costs no file access.
pub struct OfficerAuth {
    users_file: PathBuf,
    users: ArcSwap<Users>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// Keyed by the SHA-256 of the cookie value, so the token itself is not
    /// kept and lookups do not compare secrets byte by byte.
    sessions: DashMap<[u8; 32], Session>,
    failures: DashMap<IpAddr, (u32, Instant)>,
    checks: Semaphore,
    secret: [u8; 32],
    /// Officers from the directory's `officer_group`, beside the users file.
    directory: Option<Arc<Directory>>,
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    hex::encode(bytes)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A password check for a user that does not exist costs as much as one
/// that does, so response times do not tell which names are real.
fn dummy_users() -> &'static Users {
    static DUMMY: OnceLock<Users> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut u = Users::default();
        let _ = u.upsert("-", &random_hex(16), Role::User, Vec::new());
        u
    })
}

impl OfficerAuth {
    /// `users` as just read from `users_file`.
    pub fn new(users_file: &Path, users: Users) -> OfficerAuth {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random source works");
        OfficerAuth {
            users_file: users_file.to_path_buf(),
            users: ArcSwap::from_pointee(users),
            stamp: Mutex::new(stamp(users_file)),
            sessions: DashMap::new(),
            failures: DashMap::new(),
            checks: Semaphore::new(PARALLEL_CHECKS),
            secret,
            directory: None,
        }
    }

    /// Also lets members of the directory's officer group log in (when the
    /// directory names one); the users file keeps working beside it.
    pub fn with_directory(mut self, directory: Option<Arc<Directory>>) -> OfficerAuth {
        self.directory = directory.filter(|d| d.officer_group().is_some());
        self
    }

    /// The session a request's cookie names, with a directory officer's
    /// membership of the officer group checked again (removed from the
    /// group: the session ends at this click). An unreachable directory
    /// refuses the request but keeps the session.
    pub async fn session_checked(&self, headers: &HeaderMap) -> SessionState {
        let state = self.session(headers);
        let SessionState::Officer(officer) = &state else { return state };
        let Some(key) = cookies::get(headers, SESSION_COOKIE).map(|t| key_of(&t)) else { return SessionState::None };
        let from_directory = self.sessions.get(&key).is_some_and(|s| s.from_directory);
        let Some(directory) = self.directory.as_ref().filter(|_| from_directory) else { return state };
        match directory.lookup(&officer.name).await {
            Ok(Some(u)) if directory.officer_group().is_some_and(|g| u.groups.iter().any(|x| x == g)) => state,
            Ok(_) => {
                self.sessions.remove(&key);
                SessionState::NotOfficer(officer.name.clone())
            }
            Err(e) => {
                crate::metrics::metrics().directory_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(officer = %officer.name, error = %e, "dashboard: officer group membership cannot be checked");
                SessionState::Unverifiable(officer.name.clone())
            }
        }
    }

    /// A login for a name that is not in the users file: the directory
    /// checks the password and the officer group.
    async fn directory_login(&self, directory: &Directory, client: IpAddr, name: &str, password: &str) -> Login {
        let group = directory.officer_group().unwrap_or_default();
        match directory.check(name, password).await {
            Ok(Verdict::Accepted(u)) if u.groups.iter().any(|g| g == group) => {
                self.failures.remove(&client);
                let (token, officer) = self.create_session(&u.name, true);
                Login::Officer { token, officer }
            }
            // A directory user outside the officer group is answered like a
            // wrong password (the form tells nobody whose password is right).
            Ok(Verdict::Accepted(u)) => {
                self.note_failure(client);
                Login::Failed { user: Some(u.name), reason: "not an officer" }
            }
            Ok(Verdict::WrongPassword { name }) => {
                self.note_failure(client);
                Login::Failed { user: Some(name), reason: "wrong user name or password" }
            }
            Ok(Verdict::Unknown) => {
                self.note_failure(client);
                Login::Failed { user: None, reason: "wrong user name or password" }
            }
            Err(e) => {
                crate::metrics::metrics().directory_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "dashboard login: the directory cannot be reached");
                Login::DirectoryDown
            }
        }
    }

    /// The users as last read.
    fn users(&self) -> Arc<Users> {
        self.users.load_full()
    }

    /// Re-reads the users file when it changed on disk (a broken file keeps
    /// the last good users and says so in the log). Blocking: call it off
    /// the async runtime (the dashboard's watcher does, once a second).
    pub fn refresh(&self) {
        let now = stamp(&self.users_file);
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if now == *last {
            return;
        }
        match Users::load(&self.users_file) {
            Ok(users) => self.users.store(Arc::new(users)),
            Err(e) => {
                tracing::error!(error = %e, "dashboard: users file not re-read; keeping the users read before")
            }
        }
        *last = now;
    }

    fn is_officer(&self, name: &str) -> bool {
        self.users().get(name).is_some_and(|u| u.role == Role::Officer)
    }

    /// The token the login form carries for this pre-session cookie.
    pub fn login_token(&self, pre: &str) -> String {
        tokens::token(&self.secret, LOGIN_TOKEN_CONTEXT, pre)
    }

    /// Whether the login form's token belongs to this pre-session cookie.
    pub fn login_token_ok(&self, pre: &str, token: &str) -> bool {
        !pre.is_empty() && tokens::token_ok(&self.secret, LOGIN_TOKEN_CONTEXT, pre, token)
    }

    /// A fresh pre-session cookie value.
    pub fn new_pre_session() -> String {
        random_hex(16)
    }

    /// The session a request's cookie names. Touching it keeps it alive.
    pub fn session(&self, headers: &HeaderMap) -> SessionState {
        let Some(token) = cookies::get(headers, SESSION_COOKIE) else { return SessionState::None };
        let key = key_of(&token);
        let now = Instant::now();
        let name = {
            let Some(mut s) = self.sessions.get_mut(&key) else { return SessionState::None };
            if now.duration_since(s.created) > SESSION_MAX || now.duration_since(s.last_seen) > SESSION_IDLE {
                drop(s);
                self.sessions.remove(&key);
                return SessionState::None;
            }
            s.last_seen = now;
            (s.officer.clone(), s.csrf.clone(), s.from_directory)
        };
        if !name.2 && !self.is_officer(&name.0) {
            self.sessions.remove(&key);
            return SessionState::NotOfficer(name.0);
        }
        SessionState::Officer(Officer { name: name.0, csrf: name.1 })
    }

    /// Ends the session a request's cookie names (logout).
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(token) = cookies::get(headers, SESSION_COOKIE) {
            self.sessions.remove(&key_of(&token));
        }
    }

    /// How long a login from `client` must wait first: nothing for the
    /// first two mistakes, then doubling from 250 ms up to 8 s.
    fn delay_for(&self, client: IpAddr) -> Duration {
        match self.failures.get(&client) {
            Some(f) if f.1.elapsed() <= FAILURE_WINDOW && f.0 > 2 => Duration::from_millis(250u64 << (f.0 - 3).min(5)),
            _ => Duration::ZERO,
        }
    }

    fn note_failure(&self, client: IpAddr) {
        let mut e = self.failures.entry(client).or_insert((0, Instant::now()));
        if e.1.elapsed() > FAILURE_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
        e.1 = Instant::now();
        drop(e);
        if self.failures.len() > 100_000 {
            self.failures.retain(|_, (_, at)| at.elapsed() < FAILURE_WINDOW);
        }
    }

    /// Checks a login. Repeated failures from one address wait ever longer
    /// before their password is even checked, and only a few argon2 checks
    /// run at once, so guessing in parallel gains nothing.
    pub async fn login(&self, client: IpAddr, name: &str, password: &str) -> Login {
        let delay = self.delay_for(client);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let users = self.users();
        if users.get(name).is_none() {
            if let Some(directory) = &self.directory {
                return self.directory_login(directory, client, name, password).await;
            }
        }
        let known = users.get(name).is_some().then(|| name.to_string());
        let refused = Login::Failed { user: known.clone(), reason: "wrong user name or password" };
        let Ok(_permit) = self.checks.acquire().await else { return refused };
        let (n, p) = (name.to_string(), password.to_string());
        let role = tokio::task::spawn_blocking(move || {
            if users.get(&n).is_some() {
                users.verify(&n, &p).map(|u| u.role)
            } else {
                let _ = dummy_users().verify("-", &p);
                None
            }
        })
        .await
        .ok()
        .flatten();
        match role {
            Some(Role::Officer) => {
                self.failures.remove(&client);
                let (token, officer) = self.create(name);
                Login::Officer { token, officer }
            }
            Some(_) => {
                self.note_failure(client);
                Login::Failed { user: known, reason: "not an officer" }
            }
            None => {
                self.note_failure(client);
                refused
            }
        }
    }

    /// A new session for an officer whose password was checked.
    fn create(&self, name: &str) -> (String, Officer) {
        self.create_session(name, false)
    }

    fn create_session(&self, name: &str, from_directory: bool) -> (String, Officer) {
        let now = Instant::now();
        self.sessions.retain(|_, s| {
            now.duration_since(s.created) <= SESSION_MAX && now.duration_since(s.last_seen) <= SESSION_IDLE
        });
        while self.sessions.len() >= MAX_SESSIONS {
            let oldest = self.sessions.iter().min_by_key(|e| e.value().last_seen).map(|e| *e.key());
            match oldest {
                Some(k) => self.sessions.remove(&k),
                None => break,
            };
        }
        let token = random_hex(32);
        let csrf = random_hex(16);
        self.sessions.insert(
            key_of(&token),
            Session { from_directory, officer: name.to_string(), csrf: csrf.clone(), created: now, last_seen: now },
        );
        (token, Officer { name: name.to_string(), csrf })
    }

    /// Live dashboard sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

/// The `Set-Cookie` value for a cookie of the dashboard: never readable by
/// scripts, never sent with a request from another site, `Secure` only when
/// served over TLS (the dashboard speaks plain HTTP on loopback).
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let mut c = cookie::Cookie::build((name, value)).http_only(true).same_site(cookie::SameSite::Strict).path("/");
    if let Some(age) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)));
    }
    c.secure(secure).build().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn login_token_is_bound_to_its_pre_session() {
        let auth = OfficerAuth::new(Path::new("/nonexistent/users.toml"), Users::default());
        let pre = OfficerAuth::new_pre_session();
        let t = auth.login_token(&pre);
        assert!(auth.login_token_ok(&pre, &t));
        assert!(!auth.login_token_ok(&OfficerAuth::new_pre_session(), &t));
        assert!(!auth.login_token_ok("", &auth.login_token("")));
        assert!(!auth.login_token_ok(&pre, ""));
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(set_cookie("a", "b", None, false), "a=b; HttpOnly; SameSite=Strict; Path=/");
        assert_eq!(
            set_cookie("a", "", Some(Duration::ZERO), true),
            "a=; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age=0"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_when_idle_and_after_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::default();
        users.upsert("fbakker", "officer-password", Role::Officer, vec![]).unwrap();
        users.save(&path).unwrap();
        let auth = OfficerAuth::new(&path, Users::load(&path).unwrap());
        let (token, officer) = auth.create("fbakker");
        let h = headers(&format!("{SESSION_COOKIE}={token}"));
        assert_eq!(auth.session(&h), SessionState::Officer(officer.clone()));
        assert_eq!(auth.session(&headers(&format!("{SESSION_COOKIE}={token}x"))), SessionState::None);
        // Kept alive by use, up to the maximum.
        for _ in 0..15 {
            tokio::time::advance(SESSION_IDLE - Duration::from_secs(1)).await;
            assert!(matches!(auth.session(&h), SessionState::Officer(_)));
        }
        tokio::time::advance(SESSION_MAX).await;
        assert_eq!(auth.session(&h), SessionState::None);
        let (token, _) = auth.create("fbakker");
        let h = headers(&format!("{SESSION_COOKIE}={token}"));
        tokio::time::advance(SESSION_IDLE + Duration::from_secs(1)).await;
        assert_eq!(auth.session(&h), SessionState::None);
        let (token, _) = auth.create("fbakker");
        let h = headers(&format!("{SESSION_COOKIE}={token}"));
        auth.end(&h);
        assert_eq!(auth.session(&h), SessionState::None);
    }
}
