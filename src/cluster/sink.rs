//! The cluster database as a sink of the audit shipper: every record goes
//! into `audit_records` keyed by `(node, seq)`; a batch sent twice (after a
//! crash, or a lost acknowledgement) changes nothing the second time, and a
//! row once stored is never overwritten (it is the witness of the chain).

use std::sync::Arc;

use crate::audit::ship::{SendFuture, Shipped, Sink, SinkError};

use super::Cluster;

/// Ships this node's records to `audit_records`.
pub struct DatabaseSink {
    cluster: Arc<Cluster>,
}

impl DatabaseSink {
    /// The sink of `cluster`'s node.
    pub fn new(cluster: Arc<Cluster>) -> DatabaseSink {
        DatabaseSink { cluster }
    }
}

const INSERT: &str = "INSERT INTO audit_records (node, seq, ts, event, hash, line)
     SELECT $1, s, t, e, h, l FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[]) AS r(s, t, e, h, l)
     ON CONFLICT (node, seq) DO NOTHING";

impl Sink for DatabaseSink {
    fn name(&self) -> &str {
        "database"
    }

    fn send<'a>(&'a mut self, batch: &'a [Shipped]) -> SendFuture<'a> {
        Box::pin(async move {
            let client = self.cluster.client().await.map_err(|e| SinkError(e.to_string()))?;
            let mut seqs = Vec::with_capacity(batch.len());
            let mut ts = Vec::with_capacity(batch.len());
            let mut events = Vec::with_capacity(batch.len());
            let mut hashes = Vec::with_capacity(batch.len());
            let mut lines = Vec::with_capacity(batch.len());
            for s in batch {
                seqs.push(i64::try_from(s.seq).map_err(|_| SinkError(format!("seq {} out of range", s.seq)))?);
                ts.push(s.ts.as_str());
                events.push(s.event.as_str());
                hashes.push(s.hash.as_str());
                lines.push(s.line.as_str());
            }
            client
                .execute(INSERT, &[&self.cluster.node, &seqs, &ts, &events, &hashes, &lines])
                .await
                .map_err(|e| SinkError(self.cluster.settings.query_error(&e).to_string()))?;
            Ok(())
        })
    }
}
