//! Where the dashboard reads audit records from: this node's log files, or
//! with `[cluster]` the database's copy of every node's records (read with
//! the code of `weerwal logs query|report`, [`crate::cluster::logs::Db`]).
//! When the database cannot be read the dashboard reads the local log
//! instead and says so on the page ([`Origin::Fallback`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::reader::{each_line, LineVisitor, ReadError};
use crate::audit::time::TimeRange;
use crate::cluster::logs::Db;
use crate::cluster::Cluster;

/// How long the dashboard waits for the database before it reads the
/// local log instead.
pub const DATABASE_WAIT: Duration = Duration::from_secs(5);

/// A source of audit lines for the dashboard's readers.
pub enum Source {
    /// The files of this node's log, in chain order.
    Local(Vec<PathBuf>),
    /// Every node's records in the cluster database.
    Cluster(ClusterSource),
}

/// The database as a source; remembers a failure so the caller can read
/// the local log instead.
pub struct ClusterSource {
    db: Db,
    failed: Mutex<Option<String>>,
}

impl Source {
    /// Calls `visit` with every line (with the database: every line within
    /// a superset of `range`, in time order); blocking.
    pub fn each(&self, range: &TimeRange, visit: LineVisitor<'_>) -> Result<(), ReadError> {
        match self {
            Source::Local(files) => each_line(files, visit),
            Source::Cluster(c) => {
                let r = c.db.each_record(range, visit);
                if let Err(e) = &r {
                    let mut failed = c.failed.lock().unwrap_or_else(|p| p.into_inner());
                    *failed = Some(e.source.to_string());
                }
                r
            }
        }
    }

    /// Why the database failed during a read, if it did.
    pub fn database_failure(&self) -> Option<String> {
        match self {
            Source::Local(_) => None,
            Source::Cluster(c) => c.failed.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// Where the records a page shows came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// This node's log; no `[cluster]`.
    Local,
    /// Every node's records, from the cluster database.
    AllNodes,
    /// `[cluster]` is configured but the database could not be read (the
    /// reason): this node's log only.
    Fallback(String),
}

impl Origin {
    /// Whether records carry a node worth showing (`[cluster]` configured).
    pub fn shows_nodes(&self) -> bool {
        !matches!(self, Origin::Local)
    }
}

/// Opens the database as a source, waiting at most [`DATABASE_WAIT`]; a
/// node already known to be degraded does not wait at all.
pub async fn open_cluster(cluster: &Arc<Cluster>) -> Result<Source, String> {
    if cluster.health.is_degraded() {
        return Err("the cluster database is unreachable (this node is degraded)".into());
    }
    match tokio::time::timeout(DATABASE_WAIT, Db::open(Arc::clone(cluster))).await {
        Ok(Ok(db)) => Ok(Source::Cluster(ClusterSource { db, failed: Mutex::new(None) })),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the cluster database did not answer within {} s", DATABASE_WAIT.as_secs())),
    }
}
