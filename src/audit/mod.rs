//! The audit trail: record types and the single writer that owns the file
//! (with rotation, retention and the optional Squid access log), and the
//! officer's side: reading the files in chain order, verifying the chain,
//! querying and reporting (`weerwal logs`).

pub mod cli;
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
