//! `Proxy-Authorization: Basic` against the users file. argon2id is slow by
//! design, so a check runs off the async runtime, and a successful check is
//! remembered for a few minutes keyed by a hash of the header value: the
//! first request of a user costs a hash, the next thousand do not.
//!
//! With `auth = "ldap"` the same flow asks the directory instead of the
//! users file ([`super::ldap`]); a successful check is remembered for
//! `cache_ttl`, keyed by the whole header (so a changed password is checked
//! again), and users remembered keep working while the directory is down.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use dashmap::DashMap;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::ldap::{Directory, Verdict};
use super::users::{Role, Users};

/// How long a successful check is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Bound on remembered checks; cleared when full (a rare, cheap reset).
const REMEMBER_MAX: usize = 10_000;
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(600);

/// An authenticated user, as the policy and the audit log need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedUser {
    pub name: String,
    pub role: Role,
    pub groups: Vec<String>,
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    Authenticated(Arc<AuthedUser>),
    /// No credentials: the browser has not been challenged yet. Not logged.
    Missing,
    /// Wrong or malformed credentials; `user` is the name tried, if any.
    Failed {
        user: Option<String>,
    },
    /// The directory cannot be reached and this user's check is not
    /// remembered: answered with a `503` page, not another `407`.
    Unavailable,
}

/// Checks Basic credentials; shared by all connections.
pub struct Authenticator {
    users: ArcSwap<Users>,
    /// argon2id takes ~19 MiB and real CPU per check: a few at a time, so a
    /// flood of wrong passwords cannot exhaust memory.
    hashing: tokio::sync::Semaphore,
    /// Remembered checks, each with the users generation it was made on:
    /// only those of the current generation count.
    remembered: DashMap<[u8; 32], (Arc<AuthedUser>, Instant, u64)>,
    /// Bumped by every [`Authenticator::replace_users`], so a check that
    /// started on the old users can never be remembered (or let through)
    /// after a reload removed the user: removed means removed at once.
    generation: std::sync::atomic::AtomicU64,
    failures: DashMap<IpAddr, (u32, Instant)>,
    pub realm: String,
    /// With `auth = "ldap"`: the directory, asked instead of the users file.
    directory: Option<Arc<Directory>>,
    /// How long a successful check is remembered.
    remember: Duration,
    /// Whether the directory was unreachable at the last check (so an
    /// outage is logged once, and its end once).
    directory_down: std::sync::atomic::AtomicBool,
    /// Mixed into cache keys, so remembered keys are not plain hashes of
    /// credentials.
    salt: [u8; 16],
}

impl Authenticator {
    pub fn new(users: Users, realm: &str) -> Authenticator {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the operating system's random source works");
        Authenticator {
            users: ArcSwap::from_pointee(users),
            hashing: tokio::sync::Semaphore::new(4),
            remembered: DashMap::new(),
            generation: std::sync::atomic::AtomicU64::new(0),
            failures: DashMap::new(),
            realm: realm.to_string(),
            directory: None,
            remember: REMEMBER,
            directory_down: std::sync::atomic::AtomicBool::new(false),
            salt,
        }
    }

    /// Checks against the directory instead of the users file.
    pub fn with_directory(directory: Arc<Directory>, realm: &str) -> Authenticator {
        let remember = directory.cache_ttl();
        Authenticator { directory: Some(directory), remember, ..Authenticator::new(Users::default(), realm) }
    }

    /// Whether the directory could not be reached at the last check that
    /// needed it (until a check succeeds again).
    pub fn directory_down(&self) -> bool {
        self.directory_down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether credentials are checked against the directory.
    pub fn uses_directory(&self) -> bool {
        self.directory.is_some()
    }

    fn key(&self, header: &HeaderValue) -> [u8; 32] {
        Sha256::new().chain_update(self.salt).chain_update(header.as_bytes()).finalize().into()
    }

    /// Asks the directory; `Err(())` when it cannot be reached (logged once
    /// per outage, counted every time).
    async fn ask_directory(&self, directory: &Directory, name: &str, password: &str) -> Result<Verdict, ()> {
        use std::sync::atomic::Ordering;
        match directory.check(name, password).await {
            Ok(v) => {
                if self.directory_down.swap(false, Ordering::Relaxed) {
                    tracing::info!("the directory answers again");
                }
                Ok(v)
            }
            Err(e) => {
                crate::metrics::metrics().directory_errors.fetch_add(1, Ordering::Relaxed);
                if !self.directory_down.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "directory unreachable: users not checked before get a 503 until it answers");
                }
                Err(())
            }
        }
    }

    /// Replaces the users (reload); remembered checks are forgotten so a
    /// removed user or changed password takes effect at once.
    pub fn replace_users(&self, users: Users) {
        self.users.store(Arc::new(users));
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.remembered.clear();
    }

    /// Checks the `Proxy-Authorization` header of a request from `client`.
    /// Repeated failures from one address are answered ever more slowly.
    pub async fn check(&self, client: IpAddr, header: Option<&HeaderValue>) -> AuthOutcome {
        let Some(header) = header else {
            return AuthOutcome::Missing;
        };
        let key = self.key(header);
        if let Some(hit) = self.remembered.get(&key) {
            if hit.1.elapsed() < self.remember && hit.2 == self.generation.load(std::sync::atomic::Ordering::SeqCst) {
                return AuthOutcome::Authenticated(Arc::clone(&hit.0));
            }
        }
        let Some((name, password)) = parse_basic(header) else {
            return self.failed(client, None).await;
        };
        // Earlier failures from this address are paid for before hashing,
        // so parallel guesses cannot skip the delay.
        let earlier = self.failures.get(&client).filter(|e| e.1.elapsed() < FAILURE_WINDOW).map(|e| e.0).unwrap_or(0);
        if earlier >= 2 {
            tokio::time::sleep(Duration::from_millis(250u64 << (earlier - 2).min(5))).await;
        }
        if let Some(directory) = &self.directory {
            // Boxed: the directory's future is large (an LDAP bind and
            // search), and inline it would be part of every proxied
            // request's future, also where no directory is configured.
            return match Box::pin(self.ask_directory(directory, &name, &password)).await {
                Ok(Verdict::Accepted(u)) => {
                    let user = AuthedUser { name: u.name, role: Role::User, groups: u.groups };
                    self.accepted(key, client, user, self.generation.load(std::sync::atomic::Ordering::SeqCst))
                }
                Ok(Verdict::WrongPassword { name }) => self.failed(client, Some(name)).await,
                Ok(Verdict::Unknown) => self.failed(client, None).await,
                Err(()) => AuthOutcome::Unavailable,
            };
        }
        let Ok(_permit) = self.hashing.acquire().await else {
            return AuthOutcome::Failed { user: None };
        };
        // A reload during the check (argon2 takes a while) means the check
        // was made on users that are gone: check again on the new ones.
        let mut verified = None;
        let mut generation = 0;
        for _ in 0..3 {
            generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
            let users = self.users.load_full();
            let (n, p) = (name.clone(), password.clone());
            verified = tokio::task::spawn_blocking(move || {
                users.verify(&n, &p).map(|u| AuthedUser {
                    name: u.name.clone(),
                    role: u.role,
                    groups: u.groups.clone(),
                })
            })
            .await
            .ok()
            .flatten();
            if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
                break;
            }
            verified = None;
        }
        match verified {
            Some(user) => self.accepted(key, client, user, generation),
            None => self.failed(client, Some(name)).await,
        }
    }

    fn accepted(&self, key: [u8; 32], client: IpAddr, user: AuthedUser, generation: u64) -> AuthOutcome {
        let user = Arc::new(user);
        if self.remembered.len() >= REMEMBER_MAX {
            self.remembered.retain(|_, (_, at, _)| at.elapsed() < self.remember);
            if self.remembered.len() >= REMEMBER_MAX {
                self.remembered.clear();
            }
        }
        self.remembered.insert(key, (Arc::clone(&user), Instant::now(), generation));
        self.failures.remove(&client);
        AuthOutcome::Authenticated(user)
    }

    async fn failed(&self, client: IpAddr, user: Option<String>) -> AuthOutcome {
        let count = {
            let mut e = self.failures.entry(client).or_insert((0, Instant::now()));
            if e.1.elapsed() > FAILURE_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
            e.1 = Instant::now();
            e.0
        };
        if self.failures.len() > 100_000 {
            self.failures.retain(|_, (_, at)| at.elapsed() < FAILURE_WINDOW);
        }
        // 0 s for the first two mistakes, then doubling up to 8 s: typos
        // cost nothing, guessing costs a lot.
        if count > 2 {
            let delay = Duration::from_millis(250u64 << (count - 3).min(5));
            tokio::time::sleep(delay).await;
        }
        // Only names that exist are recorded: a password typed into the
        // name field must not end up in the audit log.
        // (The directory passes only names it found.)
        let user = user.filter(|u| self.directory.is_some() || self.users.load().get(u).is_some());
        AuthOutcome::Failed { user }
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> HeaderValue {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {v}")).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_from_one_address_are_slowed_down_and_others_are_not() {
        let mut users = Users::default();
        users.upsert("jan", "geheim-wachtwoord", Role::User, vec![]).unwrap();
        let auth = Authenticator::new(users, "weerwal");
        let (guesser, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut costs = Vec::new();
        for _ in 0..4 {
            let started = tokio::time::Instant::now();
            assert!(matches!(auth.check(guesser, Some(&basic("jan", "raden"))).await, AuthOutcome::Failed { .. }));
            costs.push(started.elapsed());
        }
        // Two typos are free; then each guess costs more (before and after hashing).
        assert!(costs[0] < Duration::from_millis(250) && costs[1] < Duration::from_millis(250), "{costs:?}");
        assert!(costs[2] >= Duration::from_millis(500), "{costs:?}");
        assert!(costs[3] >= Duration::from_millis(1000), "{costs:?}");
        // Someone else at another address is not slowed down.
        let started = tokio::time::Instant::now();
        assert!(matches!(
            auth.check(other, Some(&basic("jan", "geheim-wachtwoord"))).await,
            AuthOutcome::Authenticated(_)
        ));
        assert!(started.elapsed() < Duration::from_millis(250));
    }

    #[tokio::test]
    async fn right_wrong_missing_and_remembered() {
        let mut users = Users::default();
        users.upsert("jan", "geheim-wachtwoord", Role::User, vec!["raad".into()]).unwrap();
        let auth = Authenticator::new(users, "weerwal");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(matches!(auth.check(ip, None).await, AuthOutcome::Missing));
        match auth.check(ip, Some(&basic("jan", "fout"))).await {
            AuthOutcome::Failed { user } => assert_eq!(user.as_deref(), Some("jan")),
            o => panic!("{o:?}"),
        }
        let good = basic("jan", "geheim-wachtwoord");
        match auth.check(ip, Some(&good)).await {
            AuthOutcome::Authenticated(u) => assert_eq!(u.groups, vec!["raad".to_string()]),
            o => panic!("{o:?}"),
        }
        // Remembered by a hash of the header, never the password itself.
        assert_eq!(auth.remembered.len(), 1);
        let key = auth.key(&good);
        assert!(auth.remembered.contains_key(&key));
        assert!(matches!(auth.check(ip, Some(&good)).await, AuthOutcome::Authenticated(_)));
        assert!(matches!(
            auth.check(ip, Some(&HeaderValue::from_static("Bearer x"))).await,
            AuthOutcome::Failed { user: None }
        ));
    }
}
