//! Cluster mode (`[cluster]`): several weerwal nodes (proxies, a gateway,
//! the dashboard) share state and a copy of every audit record through
//! PostgreSQL. Without `[cluster]` nothing here runs.
//!
//! - [`connect`]: the settings, TLS, and errors that never show a password;
//! - [`migrate`]: the embedded, versioned schema;
//! - [`node`]: this node's name, its heartbeat and `weerwal db status`;
//! - [`sink`]: the database as a sink of the audit shipper;
//! - [`state`]: flags, clears and device links shared by every node;
//! - [`logs`]: `weerwal logs query|report` over every node's records, and
//!   `logs verify --witness`.
//!
//! The database is never on the request path: a node that cannot reach it
//! keeps blocking and logging locally, says once that it is degraded, and
//! catches up when it is back.

pub mod connect;
pub mod logs;
pub mod migrate;
pub mod node;
pub mod sink;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_postgres::Client;

pub use connect::{ClusterError, Settings};

use crate::config::ClusterConfig;

/// A node's link to the cluster database: one shared connection (the
/// driver pipelines concurrent queries on it), opened again after it broke.
pub struct Cluster {
    pub settings: Settings,
    /// This node's name (`[cluster] node`, else the host name).
    pub node: String,
    pub health: Health,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Cluster {
    /// Resolves the settings, connects, and brings the schema up to date:
    /// what `serve` does before it accepts a request. An unreachable
    /// database or a refused password is an error naming the setting.
    pub async fn start(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let cluster = Cluster::connect_only(config).await?;
        let client = cluster.client().await?;
        migrate::migrate(&client, &cluster.settings).await?;
        Ok(cluster)
    }

    /// Resolves the settings and connects, without migrating.
    pub async fn connect_only(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let c = config.clone();
        let settings = tokio::task::spawn_blocking(move || Settings::resolve(&c))
            .await
            .map_err(|e| ClusterError::Setting { setting: "cluster", message: e.to_string() })??;
        let cluster = Arc::new(Cluster {
            settings,
            node: node::node_name(config),
            health: Health::default(),
            client: tokio::sync::Mutex::new(None),
        });
        cluster.client().await?;
        Ok(cluster)
    }

    /// The shared connection, opened (again) when there is none.
    pub async fn client(&self) -> Result<Arc<Client>, ClusterError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let c = Arc::new(self.settings.connect().await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }
}

/// Whether the node currently reaches the database. Changes are logged once
/// each (never per request) and shown by `/healthz` and the
/// `weerwal_cluster_degraded` metric.
#[derive(Debug, Default)]
pub struct Health {
    degraded: AtomicBool,
}

impl Health {
    /// The database failed (`what` was being done).
    pub fn down(&self, what: &str, error: &dyn std::fmt::Display) {
        crate::metrics::metrics().cluster.store(crate::metrics::CLUSTER_DEGRADED, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::error!(
                error = %error,
                while_ = what,
                "cluster database unreachable: this node is degraded (it keeps blocking and logging locally; records and flags are sent when the database is back)"
            );
        }
    }

    /// The database answered again.
    pub fn up(&self) {
        crate::metrics::metrics().cluster.store(crate::metrics::CLUSTER_OK, Ordering::Relaxed);
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("cluster database reachable again: this node is no longer degraded");
        }
    }

    /// Whether the node is degraded now.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }
}
