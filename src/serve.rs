//! `weerwal serve`: assembles policy, audit writer, CA and listeners from a
//! configuration and runs them until shut down. Tests start the same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditError, AuditLog, AuditWriterHandle};
use crate::ca::{CaError, CertificateAuthority, LeafCache};
use crate::compliance::store::{FileStore, Store};
use crate::compliance::{Compliance, ComplianceError};
use crate::config::{Config, HttpsMode};
use crate::gateway::{self, GatewayError, GatewayState};
use crate::identity::{Identity, UsersError};
use crate::policy::{Policy, PolicyErrors};
use crate::proxy::{listener, ProxyState};
use crate::reload::Reloader;

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("policy not loaded:\n{0}")]
    Policy(#[from] PolicyErrors),
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    #[error("{0}")]
    Bind(std::io::Error),
    #[error("gateway: {0}")]
    Gateway(#[from] GatewayError),
    #[error("compliance: {0}")]
    Compliance(#[from] ComplianceError),
    #[error("users: {0}")]
    Users(#[from] UsersError),
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("dashboard: {0}")]
    Admin(#[from] crate::admin::AdminError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    ClusterStore(#[from] crate::cluster::state::StoreError),
}

/// The domains a name-constrained CA must permit (`ca.name_constraints`):
/// the banned ones, and the protected hosts, where flagged subjects are
/// intercepted for the remediation page.
pub fn ca_domains(config: &Config, policy: &Policy) -> Vec<String> {
    let mut domains: Vec<String> = policy.domains().map(|(d, _)| d.to_string()).collect();
    if let Some(c) = &config.compliance {
        domains.extend(
            c.protected
                .iter()
                .filter_map(|h| crate::policy::normalise_host(h.trim()).ok())
                .map(|h| h.as_key().into_owned()),
        );
    }
    domains
}

/// Warns when the CA may not sign a domain the policy names (the browser
/// would refuse the block page there), or when name constraints are asked
/// for and the CA has none.
pub fn warn_about_ca_constraints(ca: &CertificateAuthority, config: &Config, policy: &Policy) {
    if config.ca.name_constraints && ca.permitted_names().is_none() {
        tracing::warn!(path = %ca.cert_path().display(), "ca.name_constraints = true, but this CA has no name constraints and may sign any name; make a constrained one with `weerwal ca init --force` and distribute the new ca.pem");
    }
    let domains = ca_domains(config, policy);
    let missing = ca.unsignable(domains.iter().map(String::as_str));
    if !missing.is_empty() {
        let examples: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        tracing::warn!(
            path = %ca.cert_path().display(),
            count = missing.len(),
            examples = %examples.join(", "),
            "the CA's name constraints do not permit domains the policy names: browsers will refuse the block page there; run `weerwal ca init --force` and distribute the new ca.pem"
        );
    }
}

/// A running weerwal: its listen addresses and the means to stop it.
pub struct Server {
    pub proxy_addrs: Vec<SocketAddr>,
    pub gateway_addrs: Vec<SocketAddr>,
    /// The officers' dashboard, when it runs (`[admin]`, or officers exist).
    pub admin_addrs: Vec<SocketAddr>,
    /// The DNS listener's addresses (UDP and TCP), when `[dns]` is set.
    pub dns_addrs: Vec<SocketAddr>,
    pub compliance: Option<Arc<Compliance>>,
    pub ca: Option<Arc<CertificateAuthority>>,
    pub policy: Arc<ArcSwap<Policy>>,
    pub identity: Arc<Identity>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    audit: Option<AuditLog>,
    writer: AuditWriterHandle,
    /// Audit shippers (`[cluster]`): stopped last, after the writer.
    shippers: JoinSet<()>,
    shippers_stop: CancellationToken,
}

impl Server {
    /// Starts everything the configuration asks for.
    pub async fn start(mut config: Config) -> Result<Server, ServeError> {
        let (policy, warnings) = crate::policy::load_configured(&config)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        // [cluster]: the database must answer before anything is served,
        // so a wrong password or host is an error at start, not later.
        let cluster = match &config.cluster {
            Some(c) => {
                let cluster = crate::cluster::Cluster::start(c).await?;
                crate::cluster::node::beat(&cluster, policy.digest(), true).await?;
                crate::metrics::metrics()
                    .cluster
                    .store(crate::metrics::CLUSTER_OK, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(node = %cluster.node, database = %cluster.settings.target(), "cluster database reached; schema current");
                config.audit.node = Some(cluster.node.clone());
                Some(cluster)
            }
            None => None,
        };
        let (audit, writer, resume) = AuditLog::open(&config.audit)?;
        let ca = match config.proxy.https {
            HttpsMode::Intercept => {
                let permitted =
                    config.ca.name_constraints.then(|| crate::ca::constraint_names(ca_domains(&config, &policy)));
                let (ca, created) = CertificateAuthority::load_or_create_constrained(
                    &config.ca.dir,
                    &config.ca.organisation,
                    permitted.as_deref(),
                )?;
                warn_about_ca_constraints(&ca, &config, &policy);
                let verb = if created { "created" } else { "loaded" };
                tracing::info!(
                    path = %ca.cert_path().display(),
                    fingerprint = %ca.fingerprint_sha256(),
                    "{verb} local CA; distribute ca.pem to laptops so the block page shows over HTTPS"
                );
                Some(Arc::new(ca))
            }
            HttpsMode::Reject => None,
        };
        let leaves = ca.as_ref().map(|ca| Arc::new(LeafCache::new(Arc::clone(ca))));
        let identity = Arc::new(Identity::new(&config.identity)?);
        // The compliance state's store: the state file, or with [cluster]
        // the file and the database (queues the cluster's tasks send).
        let mut cluster_queues = None;
        let compliance = match &config.compliance {
            Some(c) => {
                let state_path = config.compliance_state_path();
                let store: Arc<dyn Store> = match &cluster {
                    Some(cluster) => {
                        let (store, queues) = crate::cluster::state::ClusterStore::open(cluster, &state_path).await?;
                        cluster_queues = Some(queues);
                        store
                    }
                    None => Arc::new(FileStore::open(&state_path)?),
                };
                identity.sessions.share_with(Arc::clone(&store));
                let kind = store.kind();
                let compliance = Compliance::with_store(c, store)?;
                tracing::info!(flagged = compliance.flagged().len(), state = %state_path.display(), store = kind, "compliance gate active");
                Some(Arc::new(compliance))
            }
            None => None,
        };
        let listeners = crate::plumbing::accept::bind_all(&config.proxy.listen).await.map_err(ServeError::Bind)?;
        let proxy_addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();

        if config.pac.proxy.is_none() && config.proxy.listen.iter().any(|a| a.ip().is_unspecified()) {
            tracing::warn!("proxy listens on a wildcard address and pac.proxy is not set: the PAC file names the proxy as each browser reached it; set pac.proxy to the name laptops use");
        }
        crate::audit::record_policy_loaded(&audit, &policy).await;
        // Said once every listener is bound (below): scripts and tests wait
        // for this line before they connect to any of them.
        let (apps, domains, exemptions) = (policy.apps().len(), policy.domain_count(), policy.exemptions().len());
        let policy = Arc::new(ArcSwap::from_pointee(policy));
        let live = Arc::new(ArcSwap::from_pointee(crate::proxy::Live::new(config.clone())));
        let reloader = Arc::new(Reloader {
            live: Arc::clone(&live),
            https_ready: leaves.is_some(),
            policy: Arc::clone(&policy),
            identity: Arc::clone(&identity),
            audit: audit.clone(),
        });
        let state = Arc::new(ProxyState {
            local_addrs: proxy_addrs.iter().copied().chain(config.own_listeners()).collect(),
            live,
            policy: Arc::clone(&policy),
            audit: audit.clone(),
            leaves,
            identity: Arc::clone(&identity),
            compliance: compliance.clone(),
        });
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // One set of caps for every listener of the proxy and the gateway,
        // kept below the descriptor limit.
        let (cap, fd_pairs) = connection_cap(config.proxy.max_connections);
        let admission =
            crate::plumbing::accept::Admission::with_fd_pairs(cap, config.proxy.max_connections_per_client, fd_pairs);
        let mut gateway_addrs = Vec::new();
        if let Some(g) = &config.gateway {
            let Some(compliance) = compliance.clone() else {
                return Err(ServeError::Gateway(GatewayError::NeedsCompliance));
            };
            let gw = Arc::new(GatewayState::new(
                g,
                &config.proxy,
                compliance,
                Arc::clone(&identity),
                audit.clone(),
                Arc::clone(&policy),
            )?);
            let tls = match (&g.cert, &g.key) {
                (Some(cert), Some(key)) => Some(gateway::tls_acceptor(cert, key)?),
                (None, None) => None,
                _ => return Err(ServeError::Gateway(GatewayError::HalfTls)),
            };
            let listener = crate::plumbing::accept::bind_all(&[g.listen]).await.map_err(ServeError::Bind)?.remove(0);
            gateway_addrs.push(listener.local_addr().map_err(ServeError::Bind)?);
            tracing::info!(listen = ?gateway_addrs, tls = tls.is_some(), "compliance gateway running");
            let admission = Arc::clone(&admission);
            tasks.spawn(gateway::run(listener, gw, tls, admission, shutdown.clone(), Duration::from_secs(10)));
        }
        let mut admin_addrs = Vec::new();
        if let Some((listener, admin)) =
            crate::admin::bind(&config, audit.clone(), Arc::clone(&identity), compliance.clone(), cluster.clone())
                .await?
        {
            admin_addrs.push(listener.local_addr().map_err(ServeError::Bind)?);
            tasks.spawn(crate::admin::run(listener, admin, shutdown.clone(), Duration::from_secs(10)));
        }
        let mut dns_addrs = Vec::new();
        if let Some(d) = &config.dns {
            let shared = crate::dns::Shared {
                policy: Arc::clone(&policy),
                audit: audit.clone(),
                identity: Arc::clone(&identity),
                compliance: compliance.clone(),
            };
            let dns =
                Arc::new(crate::dns::DnsState::new(&config, d, shared, &shutdown).await.map_err(ServeError::Bind)?);
            for l in crate::dns::server::bind_all(&d.listen).await.map_err(ServeError::Bind)? {
                dns_addrs.push(l.local_addr().map_err(ServeError::Bind)?);
                tasks.spawn(crate::dns::server::run(l, Arc::clone(&dns), shutdown.clone()));
            }
            tracing::info!(listen = ?dns_addrs, upstream = ?d.upstream, "DNS listener running");
        }
        tasks.spawn(sweep_sessions(Arc::clone(&identity), audit.clone(), shutdown.clone()));
        let mut shippers = JoinSet::new();
        let shippers_stop = CancellationToken::new();
        if let (Some(cluster), Some(queues), Some(compliance), Some(c)) =
            (&cluster, cluster_queues, &compliance, &config.cluster)
        {
            crate::cluster::state::start(
                Arc::clone(cluster),
                queues,
                Arc::clone(compliance),
                Arc::clone(&identity),
                c.on_unavailable,
                &mut tasks,
                shutdown.clone(),
            );
        }
        if let Some(cluster) = &cluster {
            tasks.spawn(crate::cluster::node::heartbeat(Arc::clone(cluster), Arc::clone(&policy), shutdown.clone()));
            let sink = crate::cluster::sink::DatabaseSink::new(Arc::clone(cluster));
            let health = Arc::clone(cluster);
            let shipper =
                crate::audit::ship::Shipper::new(&config.audit.path, Box::new(sink)).on_state(move |failing| {
                    if failing {
                        health.health.down("shipping audit records", &"the database did not take a batch");
                    } else {
                        health.health.up();
                    }
                });
            // Stopped after the audit writer, so the last records of this
            // run (session ends) are shipped too.
            shippers.spawn(shipper.run(shippers_stop.clone(), Duration::from_secs(5)));
        }
        // The proxy's listen addresses share the caps made above with the
        // gateway (kept below the descriptor limit).
        if let Some(c) = &compliance {
            tasks.spawn(expire_flags(Arc::clone(c), audit.clone(), shutdown.clone()));
        }
        for l in listeners {
            let (state, admission) = (Arc::clone(&state), Arc::clone(&admission));
            tasks.spawn(listener::run(l, state, admission, shutdown.clone(), Duration::from_secs(10)));
        }
        tracing::info!(
            listen = ?proxy_addrs,
            apps,
            domains,
            exemptions,
            audit = %config.audit.path.display(),
            next_seq = resume.next_seq,
            "weerwal proxy running"
        );
        Ok(Server {
            proxy_addrs,
            gateway_addrs,
            admin_addrs,
            dns_addrs,
            compliance,
            ca,
            policy,
            identity,
            reloader,
            shutdown,
            tasks,
            audit: Some(audit),
            writer,
            shippers,
            shippers_stop,
        })
    }

    /// The handle that reloads configuration and policy (SIGHUP).
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// A token that stops the server when cancelled (signal handlers hold it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled, then stops gracefully.
    pub async fn run_until_shutdown(self) {
        self.shutdown.cancelled().await;
        self.stop().await;
    }

    /// Stops accepting, lets connections finish (bounded), and waits until
    /// every audit record decided so far is written.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        // Tunnels may still hold handles; closing writes what is queued and
        // ends the writer whoever else still holds one.
        if let Some(audit) = self.audit.take() {
            for end in self.identity.sessions.end_all() {
                if let Err(e) = audit.record(end).await {
                    tracing::error!(error = %e, "could not write session_end record");
                }
            }
            audit.close().await;
        }
        if let Some(c) = self.compliance.clone() {
            // Every flag decided so far is on disk before weerwal exits.
            let _ = tokio::task::spawn_blocking(move || c.flush()).await;
        }
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        self.shippers_stop.cancel();
        while self.shippers.join_next().await.is_some() {}
        tracing::info!("weerwal stopped");
    }
}

/// Ends idle sessions and writes their `session_end` records.
async fn sweep_sessions(identity: Arc<Identity>, audit: AuditLog, shutdown: CancellationToken) {
    let every = (identity.sessions.idle() / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for end in identity.sessions.sweep() {
            if let Err(e) = audit.record(end).await {
                tracing::error!(error = %e, "could not write session_end record");
            }
        }
    }
}

/// Removes flags whose quarantine has ended, each with a `flag_cleared`
/// record saying so (a flag is not kept longer than the rule needs).
async fn expire_flags(compliance: Arc<Compliance>, audit: AuditLog, shutdown: CancellationToken) {
    let every = compliance.quarantine().map_or(Duration::from_secs(60), |q| q / 4);
    let mut tick = tokio::time::interval(every.clamp(Duration::from_secs(1), Duration::from_secs(60)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for (key, flag) in compliance.expire() {
            let mut r = crate::audit::Record::new(crate::audit::EventKind::FlagCleared);
            r.via = Some(crate::audit::Via::System);
            r.app = Some(flag.app);
            r.host = Some(flag.host);
            r.reason = Some("quarantine ended (compliance.quarantine)".to_string());
            r.detail = Some(serde_json::json!({ "flagged": key, "flag_seq": flag.seq }));
            if let Err(e) = audit.record(r).await {
                tracing::error!(error = %e, "could not write flag_cleared record");
            }
        }
    }
}

/// The connection cap in force: `proxy.max_connections`, lowered (with a
/// warning) to what the descriptor limit allows. The soft limit is raised
/// to the hard one first; each proxied connection may hold two descriptors
/// (client and origin), and a reserve stays for the log, listeners and
/// state files. Also the descriptors there are, in pairs: tunnels copied
/// in the kernel take two pairs more for their pipes while they last.
fn connection_cap(configured: usize) -> (usize, usize) {
    const RESERVE: u64 = 128;
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the descriptor limit; keeping proxy.max_connections as configured");
            return (configured, usize::MAX);
        }
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVE) / 2).unwrap_or(usize::MAX).max(1);
    if fits < configured {
        tracing::warn!(
            configured,
            cap = fits,
            descriptor_limit = limit,
            "proxy.max_connections lowered to fit the descriptor limit; raise LimitNOFILE (systemd) or ulimit -n"
        );
        return (fits, fits);
    }
    (configured, fits)
}
