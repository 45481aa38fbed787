//! This node in the cluster: its name, its heartbeat (version and policy
//! digest, so a node whose policy differs from the others stands out) and
//! `weerwal db status`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::connect::{ClusterError, Settings};
use super::{migrate, Cluster};
use crate::config::ClusterConfig;
use crate::policy::Policy;

/// How often a node reports that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// `[cluster] node`, else the host name, else `weerwal`.
pub fn node_name(config: &ClusterConfig) -> String {
    if let Some(n) = &config.node {
        return n.trim().to_string();
    }
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("COMPUTERNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "weerwal".into())
}

/// Writes this node's row: version, policy digest, degraded or not.
pub async fn beat(cluster: &Cluster, digest: &str, starting: bool) -> Result<(), ClusterError> {
    let client = cluster.client().await?;
    let sql = if starting {
        "INSERT INTO weerwal_nodes (node, version, policy_digest, started_at, heartbeat_at, degraded)
         VALUES ($1, $2, $3, now(), now(), false)
         ON CONFLICT (node) DO UPDATE SET version = $2, policy_digest = $3, started_at = now(),
             heartbeat_at = now(), degraded = false"
    } else {
        "INSERT INTO weerwal_nodes (node, version, policy_digest) VALUES ($1, $2, $3)
         ON CONFLICT (node) DO UPDATE SET version = $2, policy_digest = $3, heartbeat_at = now(), degraded = false"
    };
    client
        .execute(sql, &[&cluster.node, &env!("CARGO_PKG_VERSION"), &digest])
        .await
        .map_err(|e| cluster.settings.query_error(&e))?;
    Ok(())
}

/// Beats every [`HEARTBEAT`] until shut down; a failed beat marks the node
/// degraded, the next good one marks it healthy again.
pub async fn heartbeat(cluster: Arc<Cluster>, policy: Arc<ArcSwap<Policy>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let digest = policy.load().digest().to_string();
        match tokio::time::timeout(Duration::from_secs(10), beat(&cluster, &digest, false)).await {
            Ok(Ok(())) => cluster.health.up(),
            Ok(Err(e)) => cluster.health.down("heartbeat", &e),
            Err(_) => cluster.health.down("heartbeat", &"no answer within 10 s"),
        }
    }
}

/// One node as `db status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node: String,
    pub version: String,
    pub policy_digest: String,
    pub heartbeat: String,
    pub age_secs: i64,
}

/// What `weerwal db status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub target: String,
    pub schema: i32,
    pub nodes: Vec<NodeRow>,
    pub records: i64,
}

/// Reads the schema version, the nodes and the number of shipped records.
pub async fn status(cluster: &Cluster) -> Result<Status, ClusterError> {
    let client = cluster.client().await?;
    let settings: &Settings = &cluster.settings;
    let schema = migrate::current(&client, settings).await?;
    let mut nodes = Vec::new();
    let mut records = 0;
    if schema >= 1 {
        nodes = nodes_of(&client, settings).await?;
        records = client
            .query_one("SELECT count(*) FROM audit_records", &[])
            .await
            .map_err(|e| settings.query_error(&e))?
            .get(0);
    }
    Ok(Status { target: settings.target().to_string(), schema, nodes, records })
}

/// Every node the database has heard from, by name: what the dashboard's
/// nodes page and its policy-drift warning show.
pub async fn nodes(cluster: &Cluster) -> Result<Vec<NodeRow>, ClusterError> {
    let client = cluster.client().await?;
    nodes_of(&client, &cluster.settings).await
}

async fn nodes_of(client: &tokio_postgres::Client, settings: &Settings) -> Result<Vec<NodeRow>, ClusterError> {
    let rows = client
        .query(
            "SELECT node, version, policy_digest,
                    to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    extract(epoch FROM now() - heartbeat_at)::bigint
             FROM weerwal_nodes ORDER BY node",
            &[],
        )
        .await
        .map_err(|e| settings.query_error(&e))?;
    Ok(rows
        .iter()
        .map(|row| NodeRow {
            node: row.get(0),
            version: row.get(1),
            policy_digest: row.get(2),
            heartbeat: row.get(3),
            age_secs: row.get(4),
        })
        .collect())
}

/// Whether a node has missed its heartbeats (three, and 5 s more): it is
/// stopped, cut off from the database, or its clock is wrong.
pub fn is_silent(n: &NodeRow) -> bool {
    n.age_secs > 3 * HEARTBEAT.as_secs() as i64 + 5
}

/// The nodes whose policy digest differs from the one most nodes run
/// (none when all agree).
pub fn differing(nodes: &[NodeRow]) -> Vec<&NodeRow> {
    let mut distinct: Vec<&str> = nodes.iter().map(|n| n.policy_digest.as_str()).collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() < 2 {
        return Vec::new();
    }
    let majority = majority_digest(nodes);
    nodes.iter().filter(|n| Some(n.policy_digest.as_str()) != majority).collect()
}

/// The policy digest most nodes run; `None` with no nodes.
pub fn majority_digest(nodes: &[NodeRow]) -> Option<&str> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for n in nodes {
        match counts.iter_mut().find(|(d, _)| *d == n.policy_digest) {
            Some((_, c)) => *c += 1,
            None => counts.push((&n.policy_digest, 1)),
        }
    }
    // Most nodes; on a tie the first seen (nodes are sorted by name).
    let mut best: Option<(&str, usize)> = None;
    for (d, c) in counts {
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((d, c));
        }
    }
    best.map(|(d, _)| d)
}

/// Prints a status as `weerwal db status` does.
pub fn print_status(s: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "database:       {}", s.target)?;
    writeln!(out, "schema version: {} (this weerwal: {})", s.schema, migrate::latest())?;
    if s.schema < migrate::latest() {
        writeln!(out, "                run `weerwal db migrate` (or start `weerwal serve`) to upgrade")?;
    }
    writeln!(out, "audit records:  {}", s.records)?;
    writeln!(out, "nodes:          {}", s.nodes.len())?;
    let differ = differing(&s.nodes);
    if !s.nodes.is_empty() {
        writeln!(out, "\n{:<24} {:<10} {:<18} {:<21} STATE", "NODE", "VERSION", "POLICY", "LAST HEARTBEAT (UTC)")?;
    }
    for n in &s.nodes {
        let short: String = n.policy_digest.chars().take(16).collect();
        let mut state = if is_silent(n) { format!("silent for {}s", n.age_secs) } else { "alive".to_string() };
        if differ.iter().any(|d| d.node == n.node) {
            state.push_str(", POLICY DIFFERS from the other nodes");
        }
        writeln!(out, "{:<24} {:<10} {:<18} {:<21} {state}", n.node, n.version, short, n.heartbeat)?;
    }
    Ok(())
}
