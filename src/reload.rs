//! Reload without restart (`SIGHUP`, `weerwal reload`): re-read the
//! configuration, policy and users file. A broken file changes nothing and
//! the last good policy stays in force; a good policy and the settings
//! that can change at once (which clients are served, ports, timeouts,
//! header limit, `https`, `[pac]`) replace the old ones atomically, so
//! requests in flight finish with what they started with and no connection
//! is dropped. The rest (listen addresses, connection caps, audit, CA,
//! identity mode, gateway, dashboard) is reported as needing a restart.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::AuditLog;
use crate::config::{Config, ConfigError};
use crate::identity::{Identity, Users, UsersError};
use crate::policy::{Policy, PolicyErrors};
use crate::proxy::Live;

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("policy:\n{0}")]
    Policy(#[from] PolicyErrors),
    #[error("users: {0}")]
    Users(#[from] UsersError),
    /// The blocking task that reads and builds everything did not finish.
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Whether the policy differs from the one before.
    pub policy_changed: bool,
    /// Whether settings that apply at once (`[proxy]` rules and timeouts,
    /// `[pac]`, the users file) changed.
    pub settings_changed: bool,
    pub domains: usize,
    /// Settings that changed but only take effect on restart.
    pub needs_restart: Vec<&'static str>,
}

/// The pieces of a running server that a reload may change.
pub struct Reloader {
    pub(crate) live: Arc<ArcSwap<Live>>,
    /// Whether the CA was loaded at start: only then can a reload turn
    /// `proxy.https` to `intercept`.
    pub(crate) https_ready: bool,
    pub(crate) policy: Arc<ArcSwap<Policy>>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) audit: AuditLog,
}

impl Reloader {
    /// Re-reads everything; applies it only when all of it is valid.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let current = self.live.load_full();
        let old = &current.config;
        // Reading the files and building the policy (over a second for a
        // million domains) happens off the runtime's threads.
        let (https_ready, with_users, previous) =
            (self.https_ready, self.identity.auth.as_ref().is_some_and(|a| !a.uses_directory()), old.clone());
        let built = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
            let config = match &previous.source {
                Some(path) if path.is_file() => Config::load(path)?,
                _ => previous.clone(),
            };
            let (applied, needs_restart) = merge(&previous, config, https_ready);
            let (policy, warnings) = crate::policy::load_configured(&applied)?;
            let users = if with_users { Some(Users::load(&applied.identity.users_file)?) } else { None };
            Ok((applied, needs_restart, policy, warnings, users))
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))?;
        let (applied, needs_restart, policy, warnings, users) = built?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        if let (Some(auth), Some(users)) = (&self.identity.auth, users) {
            auth.replace_users(users);
        }
        let settings_changed = applied != *old;
        if settings_changed {
            self.live.store(Arc::new(Live::new(applied)));
        }
        let policy_changed = self.policy.load().digest() != policy.digest();
        let domains = policy.domain_count();
        if policy_changed {
            crate::audit::record_policy_loaded(&self.audit, &policy).await;
            let previous = self.policy.swap(Arc::new(policy));
            // Freeing a large policy takes a while too.
            tokio::task::spawn_blocking(move || drop(previous));
        }
        if !needs_restart.is_empty() {
            tracing::warn!(settings = ?needs_restart, "these settings changed but take effect only after a restart");
        }
        tracing::info!(policy_changed, settings_changed, domains, "reloaded");
        Ok(ReloadReport { policy_changed, settings_changed, domains, needs_restart })
    }
}

/// The configuration to run with after a reload: `new`, except for the
/// settings that only take effect on restart, which keep their running
/// values and are named in the second result. Pure, so it is tested alone.
pub fn merge(old: &Config, new: Config, https_ready: bool) -> (Config, Vec<&'static str>) {
    let mut applied = new;
    let mut restart = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:ident).+) => {
            if applied.$($field).+ != old.$($field).+ {
                restart.push($name);
                applied.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    // Bound sockets, the connection caps' semaphores, and the parts built
    // once at start (audit writer, CA, sessions, gateway, dashboard).
    keep!("proxy.listen", proxy.listen);
    keep!("proxy.max_connections", proxy.max_connections);
    keep!("proxy.max_connections_per_client", proxy.max_connections_per_client);
    keep!("[audit]", audit);
    keep!("[ca]", ca);
    keep!("identity.auth", identity.auth);
    keep!("identity.device", identity.device);
    keep!("identity.session_idle", identity.session_idle);
    // The dashboard's officer logins read the file named at start.
    keep!("identity.users_file", identity.users_file);
    keep!("[identity.ldap]", identity.ldap);
    keep!("[admin]", admin);
    keep!("[compliance]", compliance);
    keep!("[gateway]", gateway);
    keep!("[dns]", dns);
    keep!("policy.dir", policy.dir);
    // The gateway took the proxy's timeouts and header limit at start.
    let gateway_limits = |c: &Config| {
        let p = &c.proxy;
        (p.header_timeout, p.max_header_bytes, p.connect_timeout, p.response_timeout, p.tunnel_idle_timeout)
    };
    if applied.gateway.is_some() && gateway_limits(&applied) != gateway_limits(old) {
        restart.push("the gateway's proxy.* timeouts and max_header_bytes (the proxy applies them now)");
    }
    if !https_ready && applied.proxy.https != old.proxy.https {
        // Intercepting needs the CA, which is loaded only at start.
        restart.push("proxy.https");
        applied.proxy.https = old.proxy.https;
    }
    (applied, restart)
}

#[cfg(test)]
mod tests {
    use super::merge;
    use crate::config::{Config, HttpsMode};

    #[test]
    fn hot_settings_apply_and_restart_only_ones_keep_their_running_value() {
        let old = Config::default();
        let mut new = old.clone();
        new.proxy.connect_ports = vec![443, 8443];
        new.proxy.https = HttpsMode::Reject;
        new.proxy.max_connections = 7;
        new.identity.users_file = "elders.toml".into();
        let (applied, restart) = merge(&old, new.clone(), true);
        assert_eq!(applied.proxy.connect_ports, [443, 8443]);
        assert_eq!(applied.proxy.https, HttpsMode::Reject);
        assert_eq!(applied.proxy.max_connections, old.proxy.max_connections);
        assert_eq!(applied.identity.users_file, old.identity.users_file);
        assert_eq!(restart, ["proxy.max_connections", "identity.users_file"]);

        // Intercepting needs the CA loaded at start.
        let mut reject = old.clone();
        reject.proxy.https = HttpsMode::Reject;
        let mut intercept = reject.clone();
        intercept.proxy.https = HttpsMode::Intercept;
        let (applied, restart) = merge(&reject, intercept, false);
        assert_eq!(applied.proxy.https, HttpsMode::Reject);
        assert_eq!(restart, ["proxy.https"]);
    }
}
