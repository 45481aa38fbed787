//! The forward proxy: accept loop ([`listener`]), request handling
//! ([`request`]), HTTP forwarding ([`forward`]), CONNECT tunnels and TLS
//! interception ([`connect`]), the records of attempts ([`record`]). Every
//! request is decided by [`crate::decision::decide`]; this module gathers
//! the facts and carries out the action.

pub mod act;
pub mod client_hello;
pub mod connect;
pub mod forward;
pub mod identify;
pub mod listener;
pub mod record;
pub mod request;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::AuditLog;
use crate::ca::LeafCache;
use crate::compliance::Compliance;
use crate::config::Config;
use crate::decision::{self, Action, ComplianceView, Facts, Rules};
use crate::identity::Identity;
use crate::plumbing::destinations::DeniedDestinations;
use crate::plumbing::{origin_client, OriginClient};
use crate::policy::{Date, Policy};

/// Everything a connection needs, shared by all of them. The policy and
/// the reloadable settings sit behind an `ArcSwap` so a reload replaces
/// them whole while requests in flight finish with what they started with.
pub struct ProxyState {
    pub live: Arc<ArcSwap<Live>>,
    pub policy: Arc<ArcSwap<Policy>>,
    pub audit: AuditLog,
    pub leaves: Option<Arc<LeafCache>>,
    pub identity: Arc<Identity>,
    /// Present when `[compliance]` is configured.
    pub compliance: Option<Arc<Compliance>>,
    /// The addresses the proxy listens on, to refuse requests to itself.
    pub local_addrs: Vec<SocketAddr>,
}

/// The settings a reload may change, with what is built from them: swapped
/// as one, so a request sees one consistent set. The configuration's
/// restart-only parts (listen addresses, connection caps, audit, CA, ...)
/// stay those the server started with (see `weerwal reload`).
pub struct Live {
    pub config: Config,
    /// Where the proxy must not connect for a client (depends on
    /// `allow_clients`: loopback is added once remote clients are served).
    pub denied: DeniedDestinations,
    /// A fresh pool whenever `denied` or the connect timeout change, so no
    /// pooled connection outlives the rules it was opened under.
    pub client: OriginClient,
    /// `/proxy.pac` as generated for this configuration, per policy.
    pub pac: crate::pac::PacCache,
}

impl Live {
    pub fn new(config: Config) -> Live {
        let denied = DeniedDestinations::from_config(&config.proxy);
        let client = origin_client(config.proxy.connect_timeout, denied.clone());
        Live { config, denied, client, pac: crate::pac::PacCache::default() }
    }
}

impl ProxyState {
    /// The settings in force now; hold the `Arc` for the length of one decision.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Today's date for exemptions: the day in `policy.timezone` (the one
    /// place the proxy turns the clock into the date it decides on).
    pub fn today(&self) -> Date {
        self.policy.load().today()
    }

    /// Decides `facts` under the rules in force: `live`'s settings and the
    /// current policy (see [`crate::decision`]).
    pub fn decide(&self, live: &Live, facts: &Facts<'_>) -> Action {
        let policy = self.policy.load();
        let rules = Rules {
            policy: &policy,
            allow_clients: &live.config.proxy.allow_clients,
            connect_ports: &live.config.proxy.connect_ports,
            https: live.config.proxy.https,
            can_intercept: self.leaves.is_some(),
            denied: &live.denied,
            own_addrs: &self.local_addrs,
            compliance: self.compliance.as_deref().map(|c| c as &dyn ComplianceView),
        };
        decision::decide(&rules, facts)
    }
}
