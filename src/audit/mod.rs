//! The audit trail: record types and the single writer that owns the file.
//! Reading, querying and verifying the trail live beside them.

pub mod record;
pub mod writer;

pub use record::{EventKind, Record, Via};
pub use writer::{AuditError, AuditLog, AuditWriterHandle, ResumePoint};
