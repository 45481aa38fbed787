//! The audit trail: record types and the single writer that owns the file
//! (with rotation, retention and the optional Squid access log), and the
//! officer's side: reading the files in chain order, verifying the chain,
//! querying and reporting (`weerwal logs`).

pub mod cli;
pub mod coalesce;
pub mod files;
pub mod output;
pub mod query;
pub mod reader;
pub mod record;
pub mod report;
pub mod ship;
pub mod squid;
pub mod time;
pub mod verify;
pub mod writer;

pub use record::{EventKind, Record, Via};
pub use writer::{AuditError, AuditLog, AuditWriterHandle, Clock, ResumePoint};

/// Records which policy is in force (at every start and reload), with its
/// digest, so each later record can be tied to the exact rules it was
/// decided under.
pub async fn record_policy_loaded(audit: &AuditLog, policy: &crate::policy::Policy) {
    let mut r = Record::new(EventKind::PolicyLoaded);
    r.via = Some(Via::System);
    r.detail = Some(serde_json::json!({
        "digest": policy.digest(),
        "apps": policy.apps().len(),
        "domains": policy.domain_count(),
        "exemptions": policy.exemptions().len(),
        "files": policy.files().iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    }));
    if let Err(e) = audit.record(r).await {
        tracing::error!(error = %e, "could not record policy_loaded");
    }
}
