//! The database schema, created and upgraded by weerwal itself: numbered
//! migrations embedded in the binary, each applied once in its own
//! transaction and recorded in `weerwal_schema`. Nodes that start at the
//! same time take turns on a PostgreSQL advisory lock, so only the first
//! migrates and the others find the work done.

use tokio_postgres::Client;

use super::connect::{ClusterError, Settings};

/// One schema change.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Never edit one that has shipped: add another.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "nodes and audit records", sql: include_str!("migrations/0001_nodes_and_audit.sql") },
    Migration { version: 2, name: "compliance state", sql: include_str!("migrations/0002_compliance_state.sql") },
    Migration { version: 3, name: "shared keys", sql: include_str!("migrations/0003_cluster_keys.sql") },
];

/// The schema version this weerwal expects.
pub fn latest() -> i32 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// The advisory lock key all weerwal nodes migrate under ("weerwal" in ASCII).
const LOCK_KEY: i64 = 0x0077_6565_7277_616c;

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// The schema version in the database (0: none yet).
pub async fn current(client: &Client, settings: &Settings) -> Result<i32, ClusterError> {
    let exists = client
        .query_one("SELECT to_regclass('weerwal_schema') IS NOT NULL", &[])
        .await
        .map_err(|e| settings.query_error(&e))?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM weerwal_schema", &[])
        .await
        .map_err(|e| settings.query_error(&e))?;
    Ok(row.get(0))
}

/// Applies the migrations the database lacks, under the advisory lock.
pub async fn migrate(client: &Client, settings: &Settings) -> Result<Migrated, ClusterError> {
    // Current already: no lock and no DDL, so a node whose role may not
    // create tables (the schema migrated by its owner) starts too.
    let now = current(client, settings).await?;
    if now >= latest() {
        return Ok(Migrated { from: now, to: now });
    }
    let q = |e: tokio_postgres::Error| settings.query_error(&e);
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await.map_err(q)?;
    let result = migrate_locked(client, settings).await;
    // Released with the session too, should this fail.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    result
}

async fn migrate_locked(client: &Client, settings: &Settings) -> Result<Migrated, ClusterError> {
    let q = |e: tokio_postgres::Error| settings.query_error(&e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS weerwal_schema (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(q)?;
    let from = current(client, settings).await?;
    if from > latest() {
        tracing::warn!(
            database = from,
            known = latest(),
            "the database schema is newer than this weerwal knows; upgrade this node"
        );
        return Ok(Migrated { from, to: from });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        let applied = client
            .batch_execute(&format!(
                "BEGIN;\n{}\nINSERT INTO weerwal_schema (version, name) VALUES ({}, '{}');\nCOMMIT;",
                m.sql,
                m.version,
                m.name.replace('\'', "''")
            ))
            .await;
        if let Err(e) = applied {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(ClusterError::Query {
                target: settings.target().to_string(),
                message: format!("migration {} ({}) failed: {}", m.version, m.name, super::connect::error_text(&e)),
            });
        }
        tracing::info!(version = m.version, name = m.name, "database schema migrated");
    }
    Ok(Migrated { from, to: latest().max(from) })
}
