//! Who is trying: the subject of a request. Without authentication the
//! subject is the device, named by the address ranges in
//! `[[identity.device]]`, or else the client address itself.

pub mod auth;
pub mod sessions;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{AuthMode, DeviceRange, IdentityConfig};
use crate::policy::Subject;
pub use auth::{AuthOutcome, AuthedUser, Authenticator};
pub use sessions::{SessionStore, Touched};
pub use users::{Role, User, Users, UsersError};

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
    /// Present with `auth = "basic"`.
    pub auth: Option<Authenticator>,
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
    pub fn new(config: &IdentityConfig) -> Result<Identity, UsersError> {
        let auth = match config.auth {
            AuthMode::Basic => Some(Authenticator::new(Users::load(&config.users_file)?, "weerwal")),
            AuthMode::None => None,
        };
        Ok(Identity { devices: Devices::new(&config.device), sessions: SessionStore::new(config.session_idle), auth })
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
