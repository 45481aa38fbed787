//! Who is trying: the subject of a request. Without authentication the
//! subject is the device, named by the address ranges in
//! `[[identity.device]]`, or else the client address itself.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::DeviceRange;
use crate::policy::Subject;

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
