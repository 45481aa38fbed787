//! The compliance store of a cluster (`[cluster]`): flags, flag clears
//! (attestations and officers), device links and live sessions shared by
//! the nodes through PostgreSQL; [`ClusterStore`] is the PostgreSQL
//! implementation of [`crate::compliance::store::Store`].
//!
//! Each node keeps answering from its own in-memory state (the proxy and
//! the gateway never wait for the database on a request), and keeps its
//! own state file as the copy it restarts from. Changes made here
//! go through an outbox to the database, each followed by a
//! `NOTIFY weerwal_state`; a dedicated connection `LISTEN`s and applies the
//! other nodes' changes. After every (re)connect the whole state is read
//! again, since notifications sent meanwhile are lost. While the database
//! is down, changes wait in the outbox (and in the local state file) and
//! are sent when it is back; with `on_unavailable = "deny"` protected hosts
//! are refused until the state is known again.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError};
use crate::compliance::store::{FileStore, Store};
use crate::compliance::{Change, Compliance, ComplianceError, Flag, StateFile};
use crate::config::OnUnavailable;
use crate::identity::Identity;

/// The channel all nodes listen on.
const CHANNEL: &str = "weerwal_state";

/// A notification: who made the change, and the change (or the user seen
/// at an address on a proxy).
#[derive(Serialize, Deserialize)]
struct Notice {
    node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<Seen>,
}

/// A user seen at an address on a proxy node (live sessions).
#[derive(Serialize, Deserialize)]
struct Seen {
    client: IpAddr,
    user: String,
}

/// The cluster's store: this node's state file (its copy, read at start)
/// and the database, where changes and live sessions go through queues
/// that [`start`]'s tasks empty.
pub struct ClusterStore {
    files: FileStore,
    /// The device-cookie key the nodes share (hex).
    shared_key: String,
    changes: mpsc::UnboundedSender<Change>,
    seen: mpsc::UnboundedSender<(IpAddr, String)>,
}

/// The queues a [`ClusterStore`] fills, for [`start`] to send.
pub struct Queues {
    changes: mpsc::UnboundedReceiver<Change>,
    seen: mpsc::UnboundedReceiver<(IpAddr, String)>,
}

/// The name of the device-cookie key in `cluster_keys`.
const DEVICE_KEY: &str = "device_cookies";

impl ClusterStore {
    /// Opens this node's state file and takes the device-cookie key the
    /// nodes share from the database: the first node to come puts its own
    /// there (so the cookies it issued keep counting), every other node
    /// uses that one.
    pub async fn open(cluster: &Cluster, state_path: &Path) -> Result<(Arc<ClusterStore>, Queues), StoreError> {
        let path = state_path.to_path_buf();
        let (files, local) = tokio::task::spawn_blocking(move || {
            let files = FileStore::open(&path)?;
            let local = files.load()?;
            Ok::<_, ComplianceError>((files, local))
        })
        .await
        .map_err(|e| StoreError::Compliance(ComplianceError::Random(e.to_string())))??;
        let shared_key = shared_key(cluster, local.secret()).await?;
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (seen, seen_rx) = mpsc::unbounded_channel();
        let store = Arc::new(ClusterStore { files, shared_key, changes, seen });
        Ok((store, Queues { changes: changes_rx, seen: seen_rx }))
    }
}

impl Store for ClusterStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn load(&self) -> Result<StateFile, ComplianceError> {
        Ok(self.files.load()?.with_secret(self.shared_key.clone()))
    }

    fn keep(&self, state: StateFile, change: Option<Change>) {
        self.files.keep(state, None);
        if let Some(c) = change {
            let _ = self.changes.send(c);
        }
    }

    fn seen(&self, client: IpAddr, user: &str) {
        let _ = self.seen.send((client, user.to_string()));
    }

    fn flush(&self) {
        self.files.flush();
    }
}

/// Why the cluster store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("compliance: {0}")]
    Compliance(#[from] ComplianceError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// The device-cookie key in the database, put there from `local` (or a
/// new one) when no node has yet. A value that is not 32 bytes of hex
/// (edited by hand) is skipped with one log line: this node then signs
/// with its own key.
async fn shared_key(cluster: &Cluster, local: &str) -> Result<String, ClusterError> {
    let offered = match hex::decode(local).ok().filter(|k| k.len() == 32) {
        Some(_) => local.to_string(),
        None => {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k)
                .map_err(|e| ClusterError::Setting { setting: "cluster", message: e.to_string() })?;
            hex::encode(k)
        }
    };
    let client = cluster.client().await?;
    let q = |e: tokio_postgres::Error| cluster.settings.query_error(&e);
    client
        .execute(
            "INSERT INTO cluster_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&DEVICE_KEY, &offered],
        )
        .await
        .map_err(q)?;
    let row = client.query_one("SELECT value FROM cluster_keys WHERE name = $1", &[&DEVICE_KEY]).await.map_err(q)?;
    let value: String = row.get(0);
    if hex::decode(&value).ok().is_some_and(|k| k.len() == 32) {
        Ok(value)
    } else {
        tracing::warn!(
            table = "cluster_keys",
            name = DEVICE_KEY,
            "database row does not parse; skipped: this node signs device cookies with its own key"
        );
        Ok(offered)
    }
}

/// Connects one node's compliance state with the cluster's: starts sending
/// what the store queued and applying the other nodes' changes.
pub fn start(
    cluster: Arc<Cluster>,
    queues: Queues,
    compliance: Arc<Compliance>,
    identity: Arc<Identity>,
    on_unavailable: OnUnavailable,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
) {
    let sync =
        Arc::new(StateSync { cluster, compliance, identity, on_unavailable, outbox: Mutex::new(VecDeque::new()) });
    tasks.spawn(Arc::clone(&sync).send_changes(queues.changes, shutdown.clone()));
    tasks.spawn(Arc::clone(&sync).send_sessions(queues.seen, shutdown.clone()));
    tasks.spawn(sync.follow(shutdown));
}

/// No query parameters, for `query_raw`.
fn no_params() -> std::iter::Empty<&'static (dyn ToSql + Sync)> {
    std::iter::empty()
}

/// Sends this node's changes and applies the others'.
struct StateSync {
    cluster: Arc<Cluster>,
    compliance: Arc<Compliance>,
    identity: Arc<Identity>,
    on_unavailable: OnUnavailable,
    /// This node's changes the database has not taken yet, oldest first.
    outbox: Mutex<VecDeque<Change>>,
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
            Change::Linked { id: cookie, keys } => {
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
        let payload = serde_json::to_string(&Notice { node: node.clone(), change: Some(change.clone()), seen: None })
            .unwrap_or_else(|_| String::from("{}"));
        client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await.map_err(q)?;
        Ok(())
    }

    /// Tells the other nodes which user a proxy saw at an address. Not kept
    /// while the database is down: the proxy says it again within a quarter
    /// of the session idle time.
    async fn send_sessions(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(IpAddr, String)>,
        shutdown: CancellationToken,
    ) {
        loop {
            let (client, user) = tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => s,
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let node = &self.cluster.node;
            let sent = async {
                let c = self.cluster.client().await?;
                let q = |e: tokio_postgres::Error| self.cluster.settings.query_error(&e);
                c.execute(
                    "INSERT INTO live_sessions (address, username, node) VALUES ($1, $2, $3)
                     ON CONFLICT (address, username) DO UPDATE SET node = $3, seen_at = now()",
                    &[&client.to_string(), &user, node],
                )
                .await
                .map_err(q)?;
                let payload = serde_json::to_string(&Notice {
                    node: node.clone(),
                    change: None,
                    seen: Some(Seen { client, user: user.clone() }),
                })
                .unwrap_or_else(|_| String::from("{}"));
                c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await.map_err(q)?;
                Ok::<_, ClusterError>(())
            };
            if let Err(e) = sent.await {
                self.cluster.health.down("sharing live sessions", &e);
            }
        }
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
        if let Some(seen) = notice.seen {
            self.identity.sessions.seen_elsewhere(seen.client, &seen.user, Duration::ZERO);
        }
        if let Some(change) = notice.change {
            let compliance = Arc::clone(&self.compliance);
            let _ = tokio::task::spawn_blocking(move || compliance.apply(change)).await;
        }
    }

    /// Reads every flag and device link; rows that do not parse are skipped
    /// with one log line each. Rows are parsed as they arrive (a stream,
    /// not a result set held whole): 100,000 flags cost their parsed size.
    async fn reload(&self, client: &Client) -> Result<(), ClusterError> {
        let q = |e: tokio_postgres::Error| self.cluster.settings.query_error(&e);
        let mut flags = Vec::new();
        let rows = client.query_raw("SELECT key, data FROM compliance_flags", no_params()).await.map_err(q)?;
        futures_util::pin_mut!(rows);
        while let Some(row) = rows.try_next().await.map_err(q)? {
            let key: String = row.get(0);
            match serde_json::from_str::<Flag>(row.get(1)) {
                Ok(f) => flags.push((key, f)),
                Err(e) => {
                    tracing::warn!(table = "compliance_flags", key = %key, error = %e, "database row does not parse; skipped")
                }
            }
        }
        let mut devices = Vec::new();
        let rows = client.query_raw("SELECT cookie, keys FROM device_links", no_params()).await.map_err(q)?;
        futures_util::pin_mut!(rows);
        while let Some(row) = rows.try_next().await.map_err(q)? {
            match serde_json::from_str::<Vec<String>>(row.get(1)) {
                Ok(k) => devices.push((row.get::<_, String>(0), k)),
                Err(e) => tracing::warn!(table = "device_links", error = %e, "database row does not parse; skipped"),
            }
        }
        let idle = self.identity.sessions.idle().as_secs_f64();
        client
            .execute("DELETE FROM live_sessions WHERE seen_at < now() - make_interval(secs => $1)", &[&idle])
            .await
            .map_err(q)?;
        for row in client
            .query("SELECT address, username, extract(epoch FROM now() - seen_at)::float8 FROM live_sessions", &[])
            .await
            .map_err(q)?
        {
            let (address, user, age): (String, String, f64) = (row.get(0), row.get(1), row.get(2));
            match address.parse::<IpAddr>() {
                Ok(ip) => self.identity.sessions.seen_elsewhere(ip, &user, Duration::from_secs_f64(age.max(0.0))),
                Err(e) => tracing::warn!(table = "live_sessions", error = %e, "database row does not parse; skipped"),
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
