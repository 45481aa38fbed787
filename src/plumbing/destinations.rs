//! Where the proxy may connect on a client's behalf. A laptop must not use
//! weerwal to reach services on the proxy server itself (the dashboard,
//! anything on its loopback) or cloud metadata addresses. Checked on the
//! addresses actually connected to, after DNS, so a name that resolves to
//! `127.0.0.1` is refused as well.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use ipnet::IpNet;

use crate::config::ProxyConfig;
use crate::identity::canonical_ip;

/// Address ranges the proxy never connects to for a client.
#[derive(Debug, Clone, Default)]
pub struct DeniedDestinations {
    nets: Arc<Vec<IpNet>>,
}

impl DeniedDestinations {
    /// `proxy.deny_destinations`, plus loopback whenever clients other than
    /// loopback ones are served: for them the server's loopback is not theirs.
    pub fn from_config(config: &ProxyConfig) -> DeniedDestinations {
        let mut nets = config.deny_destinations.clone();
        let remote_clients = config.allow_clients.iter().any(|n| !(n.addr().is_loopback() && n.prefix_len() > 0));
        if remote_clients {
            for n in ["127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"] {
                if let Ok(net) = n.parse() {
                    nets.push(net);
                }
            }
            // Like Squid's `to_localhost`, for every address of this
            // server: a laptop must not reach the dashboard, the gateway or
            // any other service here through the proxy, whatever name or
            // notation it uses (names are checked after DNS, IPv4-mapped
            // IPv6 is canonicalised).
            nets.extend(local_addresses().into_iter().map(IpNet::from));
        }
        DeniedDestinations { nets: Arc::new(nets) }
    }

    pub fn is_denied(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The allowed addresses among `addrs`; an error when none is left.
    pub fn filter(&self, addrs: impl Iterator<Item = SocketAddr>) -> io::Result<Vec<SocketAddr>> {
        let allowed: Vec<SocketAddr> = addrs.filter(|a| !self.is_denied(a.ip())).collect();
        if allowed.is_empty() {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "destination not allowed"));
        }
        Ok(allowed)
    }

    /// Resolves `host:port` (tokio's resolver) and keeps the allowed addresses.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let addrs = tokio::net::lookup_host((host, port)).await?;
        self.filter(addrs)
    }
}

/// Every address of this server's interfaces (read at start and at each
/// reload); none when they cannot be read, which is logged.
fn local_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| canonical_ip(i.ip())).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this server's addresses; only loopback is denied as a destination");
            Vec::new()
        }
    }
}

/// The DNS resolver of the origin client, refusing denied addresses.
#[derive(Clone)]
pub struct GuardedResolver {
    inner: GaiResolver,
    denied: DeniedDestinations,
}

impl GuardedResolver {
    pub fn new(denied: DeniedDestinations) -> GuardedResolver {
        GuardedResolver { inner: GaiResolver::new(), denied }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.inner.call(name);
        let denied = self.denied.clone();
        Box::pin(async move { denied.filter(lookup.await?).map(Vec::into_iter) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_denied_only_when_remote_clients_are_served() {
        let mut config = ProxyConfig::default();
        let local = DeniedDestinations::from_config(&config);
        assert!(!local.is_denied("127.0.0.1".parse().unwrap()));
        assert!(local.is_denied("169.254.169.254".parse().unwrap()));
        config.allow_clients.push("10.0.0.0/8".parse().unwrap());
        let remote = DeniedDestinations::from_config(&config);
        assert!(remote.is_denied("127.0.0.1".parse().unwrap()));
        assert!(remote.is_denied("::ffff:127.0.0.1".parse().unwrap()));
        assert!(remote.is_denied("::1".parse().unwrap()));
        assert!(!remote.is_denied("10.1.2.3".parse().unwrap()));
    }
}
