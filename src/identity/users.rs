//! The users file (`users.toml`): who may use the proxy with `auth =
//! "basic"`, their role (officers review the audit trail) and groups (for
//! exemptions). Passwords are stored only as argon2id hashes; the file is
//! written atomically with mode 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// What a user may do beyond browsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Officer,
}

/// One user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// argon2id PHC string.
    pub hash: String,
    pub role: Role,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<User>,
}

/// Why the users file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, message: String },
    #[error("user name {0:?} is not allowed: use letters, digits, '.', '-', '_' or '@' (at most 64)")]
    BadName(String),
    #[error("password must be at least 8 characters")]
    WeakPassword,
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("cannot hash password: {0}")]
    Hash(String),
}

/// All users, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: BTreeMap<String, User>,
}

impl Users {
    /// Reads the users file; a missing file is an empty set of users.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(source) => return Err(UsersError::Io { path: path.to_path_buf(), source }),
        };
        let file: UsersFile = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            UsersError::Invalid {
                path: path.to_path_buf(),
                line: text.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1,
                message: e.message().to_string(),
            }
        })?;
        let mut by_name = BTreeMap::new();
        for u in file.user {
            if PasswordHash::new(&u.hash).is_err() {
                return Err(UsersError::Invalid {
                    path: path.to_path_buf(),
                    line: 1,
                    message: format!("user {:?}: hash is not an argon2 PHC string", u.name),
                });
            }
            by_name.insert(u.name.clone(), u);
        }
        Ok(Users { by_name })
    }

    /// Writes the file atomically (temporary file, then rename) with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let io = |source| UsersError::Io { path: path.to_path_buf(), source };
        let file = UsersFile { user: self.by_name.values().cloned().collect() };
        let text = toml::to_string(&file).map_err(|e| UsersError::Hash(e.to_string()))?;
        let mut contents = b"# weerwal users: manage with `weerwal users add|list|remove`\n".to_vec();
        contents.extend_from_slice(text.as_bytes());
        // A temporary file of its own per save (two `weerwal users` runs at
        // once must not write into one file), readable by weerwal only.
        crate::atomic_file::write(path, &contents, 0o600).map_err(io)
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.by_name.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Adds or replaces a user. Hashing is deliberately slow (argon2id).
    pub fn upsert(&mut self, name: &str, password: &str, role: Role, groups: Vec<String>) -> Result<(), UsersError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
        if !valid {
            return Err(UsersError::BadName(name.to_string()));
        }
        if password.chars().count() < 8 {
            return Err(UsersError::WeakPassword);
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash =
            Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| UsersError::Hash(e.to_string()))?;
        self.by_name.insert(name.to_string(), User { name: name.to_string(), hash: hash.to_string(), role, groups });
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        self.by_name.remove(name).map(|_| ()).ok_or_else(|| UsersError::NoSuchUser(name.to_string()))
    }

    /// Checks a password. Slow on purpose: call it off the async runtime.
    /// An unknown name costs the same hash as a known one, so timing does
    /// not tell which user names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<&User> {
        let Some(user) = self.by_name.get(name) else {
            if let Ok(hash) = PasswordHash::new(dummy_hash()) {
                let _ = Argon2::default().verify_password(password.as_bytes(), &hash);
            }
            return None;
        };
        let hash = PasswordHash::new(&user.hash).ok()?;
        Argon2::default().verify_password(password.as_bytes(), &hash).ok().map(|_| user)
    }
}

/// A hash of nothing in particular, made once, for unknown user names.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(b"weerwal-no-such-user", &salt).map(|h| h.to_string()).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::load(&path).unwrap();
        assert!(users.is_empty());
        users.upsert("jdevries", "correct horse", Role::Officer, vec!["toezicht".into()]).unwrap();
        assert!(users.verify("jdevries", "correct horse").is_some());
        assert!(users.verify("jdevries", "wrong horse!").is_none());
        assert!(matches!(users.upsert("j devries", "correct horse", Role::User, vec![]), Err(UsersError::BadName(_))));
        assert!(matches!(users.upsert("x", "short", Role::User, vec![]), Err(UsersError::WeakPassword)));
        users.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse") && text.contains("$argon2id$"));
        let mut again = Users::load(&path).unwrap();
        assert_eq!(again.get("jdevries").unwrap().groups, vec!["toezicht".to_string()]);
        again.remove("jdevries").unwrap();
        assert!(again.remove("jdevries").is_err());
    }
}
