//! Who is trying: the subject of a request. Without authentication the
//! subject is the device, named by the address ranges in
//! `[[identity.device]]`, or else the client address itself.

pub mod auth;
pub mod ldap;
pub mod sessions;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{AuthMode, DeviceRange, IdentityConfig};
use crate::policy::Subject;
pub use auth::{AuthOutcome, AuthedUser, Authenticator};
pub use ldap::{Directory, DirectoryError};
pub use sessions::{SessionStore, Touched};
pub use users::{Role, User, Users, UsersError};

/// Why identity could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
}

/// Address ranges with names (e.g. `10.1.2.0/24` = `raadslaptops`), most
/// specific range first so a smaller range inside a larger one wins.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    ranges: Vec<(IpNet, String)>,
}

impl Devices {
    pub fn new(ranges: &[DeviceRange]) -> Devices {
        let mut ranges: Vec<(IpNet, String)> = ranges.iter().map(|d| (d.cidr.trunc(), d.name.clone())).collect();
        ranges.sort_by_key(|r| std::cmp::Reverse(r.0.prefix_len()));
        Devices { ranges }
    }

    /// The device name of a client address, if a range names it.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        let ip = canonical_ip(ip);
        self.ranges.iter().find(|(net, _)| net.contains(&ip)).map(|(_, n)| n.as_str())
    }

    /// The subject of an unauthenticated request from `client`.
    pub fn subject(&self, client: IpAddr) -> Subject {
        let client = canonical_ip(client);
        Subject { user: None, groups: Vec::new(), device: self.name_of(client).map(str::to_string), client }
    }
}

/// Everything that turns a connection and its headers into a subject.
pub struct Identity {
    pub devices: Devices,
    pub sessions: SessionStore,
    /// Present with `auth = "basic"` or `"ldap"`.
    pub auth: Option<Authenticator>,
    /// Present with an `[identity.ldap]` section (users, groups, officers).
    pub directory: Option<Arc<Directory>>,
}

/// A request's subject and session, once identified.
#[derive(Debug, Clone)]
pub struct Identified {
    pub subject: Subject,
    pub session: Arc<str>,
    pub role: Option<Role>,
}

impl Identity {
    /// Builds identity from configuration; with `auth = "basic"` the users
    /// file is read here so a broken file stops start-up, not requests.
    pub fn new(config: &IdentityConfig) -> Result<Identity, IdentityError> {
        let directory = match &config.ldap {
            Some(l) => {
                if !l.encrypted() {
                    tracing::warn!(url = %l.url, "identity.ldap: plain ldap:// without StartTLS (allow_plaintext = true): passwords cross the network readable");
                }
                Some(Arc::new(Directory::new(l)?))
            }
            None => None,
        };
        let auth = match (config.auth, &directory) {
            (AuthMode::Basic, _) => Some(Authenticator::new(Users::load(&config.users_file)?, "weerwal")),
            (AuthMode::Ldap, Some(d)) => Some(Authenticator::with_directory(Arc::clone(d), "weerwal")),
            (AuthMode::Ldap, None) => {
                return Err(IdentityError::Directory(DirectoryError::Unreachable(
                    "auth = \"ldap\" needs an [identity.ldap] section".into(),
                )))
            }
            (AuthMode::None, _) => None,
        };
        Ok(Identity {
            devices: Devices::new(&config.device),
            sessions: SessionStore::new(config.session_idle),
            auth,
            directory,
        })
    }

    /// The subject for an authenticated user (or none) from `client`.
    pub fn subject(&self, client: IpAddr, user: Option<&AuthedUser>) -> Subject {
        let mut subject = self.devices.subject(client);
        if let Some(u) = user {
            subject.user = Some(u.name.clone());
            subject.groups.clone_from(&u.groups);
        }
        subject
    }
}

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`; treat
/// them as the IPv4 address they are, for ranges and logs alike.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_range_names_the_device() {
        let d = Devices::new(&[
            DeviceRange { cidr: "10.0.0.0/8".parse().unwrap(), name: "gemeente".into() },
            DeviceRange { cidr: "10.1.2.0/24".parse().unwrap(), name: "raadslaptops".into() },
        ]);
        assert_eq!(d.name_of("10.1.2.3".parse().unwrap()), Some("raadslaptops"));
        assert_eq!(d.name_of("10.9.9.9".parse().unwrap()), Some("gemeente"));
        assert_eq!(d.name_of("::ffff:10.1.2.3".parse().unwrap()), Some("raadslaptops"));
        assert_eq!(d.name_of("192.168.1.1".parse().unwrap()), None);
    }
}
