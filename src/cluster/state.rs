//! The compliance state shared by the nodes (`[cluster]`): flags, flag
//! clears (attestations and officers) and device links.
//!
//! Each node keeps answering from its own in-memory state (the proxy and
//! the gateway never wait for the database on a request). Changes made here
//! go through an outbox to the database, each followed by a
//! `NOTIFY weerwal_state`; a dedicated connection `LISTEN`s and applies the
//! other nodes' changes. After every (re)connect the whole state is read
//! again, since notifications sent meanwhile are lost. While the database
//! is down, changes wait in the outbox (and in the local state file) and
//! are sent when it is back; with `on_unavailable = "deny"` protected hosts
//! are refused until the state is known again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError};
use crate::compliance::{Change, Compliance, Flag};
use crate::config::OnUnavailable;

/// The channel all nodes listen on.
const CHANNEL: &str = "weerwal_state";

/// A notification: who made the change, and the change.
#[derive(Serialize, Deserialize)]
struct Notice {
    node: String,
    change: Change,
}

/// Connects one node's compliance state with the cluster's.
pub struct StateSync {
    cluster: Arc<Cluster>,
    compliance: Arc<Compliance>,
    on_unavailable: OnUnavailable,
    /// This node's changes the database has not taken yet, oldest first.
    outbox: Mutex<VecDeque<Change>>,
}

/// Starts publishing this node's changes and applying the others'.
pub fn start(
    cluster: Arc<Cluster>,
    compliance: Arc<Compliance>,
    on_unavailable: OnUnavailable,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    compliance.publish_to(tx);
    let sync = Arc::new(StateSync { cluster, compliance, on_unavailable, outbox: Mutex::new(VecDeque::new()) });
    tasks.spawn(Arc::clone(&sync).send_changes(rx, shutdown.clone()));
    tasks.spawn(sync.follow(shutdown));
}

impl StateSync {
    fn outbox(&self) -> std::sync::MutexGuard<'_, VecDeque<Change>> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends this node's changes, in order, retrying until the database takes them.
    async fn send_changes(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Change>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.outbox().is_empty() {
                tokio::select! {
                    c = rx.recv() => match c {
                        Some(c) => self.outbox().push_back(c),
                        None => return,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            while let Ok(c) = rx.try_recv() {
                self.outbox().push_back(c);
            }
            match self.send_pending().await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    self.cluster.health.down("sending compliance changes", &e);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn send_pending(&self) -> Result<(), ClusterError> {
        let client = self.cluster.client().await?;
        loop {
            let Some(change) = self.outbox().front().cloned() else { return Ok(()) };
            self.send(&client, &change).await?;
            self.outbox().pop_front();
        }
    }

    async fn send(&self, client: &Client, change: &Change) -> Result<(), ClusterError> {
        let q = |e: tokio_postgres::Error| self.cluster.settings.query_error(&e);
        let node = &self.cluster.node;
        match change {
            Change::Flagged { key, flag } => {
                let data = serde_json::to_string(flag).map_err(|e| ClusterError::Query {
                    target: self.cluster.settings.target().into(),
                    message: e.to_string(),
                })?;
                client
                    .execute(
                        "INSERT INTO compliance_flags (key, data, node) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                        &[key, &data, node],
                    )
                    .await
                    .map_err(q)?;
            }
            Change::Cleared { keys } => {
                client.execute("DELETE FROM compliance_flags WHERE key = ANY($1)", &[keys]).await.map_err(q)?;
            }
            Change::Linked { cookie, keys } => {
                let data = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
                client
                    .execute(
                        "INSERT INTO device_links (cookie, keys, node) VALUES ($1, $2, $3)
                         ON CONFLICT (cookie) DO UPDATE SET keys = $2, node = $3, updated_at = now()",
                        &[cookie, &data, node],
                    )
                    .await
                    .map_err(q)?;
            }
        }
        let payload = serde_json::to_string(&Notice { node: node.clone(), change: change.clone() })
            .unwrap_or_else(|_| String::from("{}"));
        client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await.map_err(q)?;
        Ok(())
    }

    /// Listens for the other nodes' changes; after each (re)connect reads
    /// the whole state again.
    async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let connected = async {
                let client = self.cluster.settings.connect_listening(tx).await?;
                client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .map_err(|e| self.cluster.settings.query_error(&e))?;
                self.reload(&client).await?;
                Ok::<_, ClusterError>(client)
            };
            let client = tokio::select! {
                c = connected => c,
                _ = shutdown.cancelled() => return,
            };
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    self.unavailable(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            self.compliance.set_deny_all(false);
            loop {
                let m = tokio::select! {
                    m = rx.recv() => m,
                    _ = shutdown.cancelled() => return,
                };
                match m {
                    Some(AsyncMessage::Notification(n)) => self.on_notice(n.payload()).await,
                    Some(_) => {}
                    None => break,
                }
            }
            drop(client);
            self.unavailable(&"the listening connection was lost");
        }
    }

    fn unavailable(&self, e: &dyn std::fmt::Display) {
        self.cluster.health.down("following the compliance state", e);
        if self.on_unavailable == OnUnavailable::Deny {
            self.compliance.set_deny_all(true);
        }
    }

    async fn on_notice(&self, payload: &str) {
        let notice = match serde_json::from_str::<Notice>(payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "a compliance notification does not parse; skipped");
                return;
            }
        };
        if notice.node == self.cluster.node {
            return;
        }
        let compliance = Arc::clone(&self.compliance);
        let _ = tokio::task::spawn_blocking(move || compliance.apply(notice.change)).await;
    }

    /// Reads every flag and device link; rows that do not parse are skipped
    /// with one log line each.
    async fn reload(&self, client: &Client) -> Result<(), ClusterError> {
        let q = |e: tokio_postgres::Error| self.cluster.settings.query_error(&e);
        let mut flags = Vec::new();
        for row in client.query("SELECT key, data FROM compliance_flags", &[]).await.map_err(q)? {
            let key: String = row.get(0);
            let data: String = row.get(1);
            match serde_json::from_str::<Flag>(&data) {
                Ok(f) => flags.push((key, f)),
                Err(e) => {
                    tracing::warn!(table = "compliance_flags", key = %key, error = %e, "database row does not parse; skipped")
                }
            }
        }
        let mut devices = Vec::new();
        for row in client.query("SELECT cookie, keys FROM device_links", &[]).await.map_err(q)? {
            let cookie: String = row.get(0);
            let keys: String = row.get(1);
            match serde_json::from_str::<Vec<String>>(&keys) {
                Ok(k) => devices.push((cookie, k)),
                Err(e) => tracing::warn!(table = "device_links", error = %e, "database row does not parse; skipped"),
            }
        }
        let pending: Vec<Change> = self.outbox().iter().cloned().collect();
        let count = flags.len();
        let compliance = Arc::clone(&self.compliance);
        let _ = tokio::task::spawn_blocking(move || compliance.replace_all(flags, devices, &pending)).await;
        tracing::info!(flags = count, "compliance state loaded from the cluster database");
        Ok(())
    }
}
