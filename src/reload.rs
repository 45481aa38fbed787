//! Reload without restart (`SIGHUP`, `weerwal reload`): re-read the
//! configuration, policy and users file. A broken file changes nothing and
//! the last good policy stays in force; a good policy replaces the old one
//! atomically, so requests in flight finish with the policy they started
//! with and no connection is dropped.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::AuditLog;
use crate::config::{Config, ConfigError};
use crate::identity::{Identity, Users, UsersError};
use crate::policy::{Policy, PolicyErrors};
use crate::serve::{load_policy, record_policy_loaded};

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("policy:\n{0}")]
    Policy(#[from] PolicyErrors),
    #[error("users: {0}")]
    Users(#[from] UsersError),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Whether the policy differs from the one before.
    pub policy_changed: bool,
    pub domains: usize,
    /// Configuration sections that changed but only take effect on restart.
    pub needs_restart: Vec<&'static str>,
}

/// The pieces of a running server that a reload may change.
pub struct Reloader {
    pub(crate) config: Config,
    pub(crate) policy: Arc<ArcSwap<Policy>>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) audit: AuditLog,
}

impl Reloader {
    /// Re-reads everything; applies it only when all of it is valid.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let config = match &self.config.source {
            Some(path) if path.is_file() => Config::load(path)?,
            _ => self.config.clone(),
        };
        let (policy, warnings) = load_policy(&config)?;
        let users = match &self.identity.auth {
            Some(_) => Some(Users::load(&config.identity.users_file)?),
            None => None,
        };
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let mut needs_restart = Vec::new();
        let old = &self.config;
        let sections: [(&'static str, bool); 8] = [
            ("[proxy]", old.proxy != config.proxy),
            ("[audit]", old.audit != config.audit),
            ("[ca]", old.ca != config.ca),
            (
                "[identity]",
                old.identity.auth != config.identity.auth
                    || old.identity.device != config.identity.device
                    || old.identity.session_idle != config.identity.session_idle,
            ),
            ("[pac]", old.pac != config.pac),
            ("[admin]", old.admin != config.admin),
            ("[compliance]", old.compliance != config.compliance),
            ("[gateway]", old.gateway != config.gateway),
        ];
        for (name, changed) in sections {
            if changed {
                needs_restart.push(name);
            }
        }
        if config.policy.dir != old.policy.dir {
            needs_restart.push("[policy] dir");
        }
        // The policy directory in force stays the one started with.
        let policy = if config.policy.dir == old.policy.dir { policy } else { load_policy(old)?.0 };
        if let (Some(auth), Some(users)) = (&self.identity.auth, users) {
            auth.replace_users(users);
        }
        let policy_changed = self.policy.load().digest() != policy.digest();
        let domains = policy.domain_count();
        if policy_changed {
            record_policy_loaded(&self.audit, &policy).await;
            self.policy.store(Arc::new(policy));
        }
        if !needs_restart.is_empty() {
            tracing::warn!(sections = ?needs_restart, "these settings changed but take effect only after a restart");
        }
        tracing::info!(policy_changed, domains, "reloaded");
        Ok(ReloadReport { policy_changed, domains, needs_restart })
    }
}
