//! Where the compliance state lives beyond this process's memory: the one
//! interface between the compliance rules ([`super::Compliance`], read on
//! every request, in memory) and their storage. Two implementations:
//!
//! - [`FileStore`], the embedded default: one node, the state file written
//!   atomically by one writer thread; live sessions stay in this process;
//! - the cluster's PostgreSQL store (`ClusterStore` in the cluster module,
//!   `[cluster]`): the same file as this node's copy, plus every change and
//!   every live session sent to the database for the other nodes.
//!
//! The proxy, the gateway and the dashboard never see a store: they ask
//! [`super::Compliance`], which answers from memory and hands each change
//! to its store. A store therefore never blocks its caller on I/O; it
//! queues.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::writer::StateWriter;
use super::{Change, ComplianceError, StateFile};

/// Storage of the compliance state (flags, flag clears, device links) and
/// of live sessions (which user a proxy saw at an address).
pub trait Store: Send + Sync {
    /// What the store is, for logs: `"files"` or `"postgresql"`.
    fn kind(&self) -> &'static str;

    /// The state this node starts from, including the key that signs device
    /// cookies and attestation forms. Called once, before any request.
    fn load(&self) -> Result<StateFile, ComplianceError>;

    /// Keeps `state`, the whole state after a change. `change` is the change
    /// when this node made it (a flag, a clear, a device link), `None` when
    /// it came from elsewhere (another node) and must not be sent on.
    /// Called on the request path: it queues and returns.
    fn keep(&self, state: StateFile, change: Option<Change>);

    /// `user` was seen at `client` on this node's proxy, so a gateway
    /// elsewhere can name the user of that session. Queues and returns.
    fn seen(&self, client: IpAddr, user: &str);

    /// Blocks until everything kept so far is on this node's disk
    /// (shutdown, tests). Not for the async runtime's threads.
    fn flush(&self);
}

/// The state file (`compliance.state`, by default `logs/compliance.json`):
/// the whole store of a single node, and each cluster node's local copy.
pub struct FileStore {
    path: PathBuf,
    writer: StateWriter,
}

impl FileStore {
    /// Starts the writer thread for the state file at `path`.
    pub fn open(path: &Path) -> Result<FileStore, ComplianceError> {
        let writer = StateWriter::spawn(path.to_path_buf())
            .map_err(|source| ComplianceError::Io { path: path.to_path_buf(), source })?;
        Ok(FileStore { path: path.to_path_buf(), writer })
    }

    /// Where the state file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a state file; a missing one is an empty state.
pub fn read_state_file(path: &Path) -> Result<StateFile, ComplianceError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| ComplianceError::Corrupt { path: path.to_path_buf(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(source) => Err(ComplianceError::Io { path: path.to_path_buf(), source }),
    }
}

impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn load(&self) -> Result<StateFile, ComplianceError> {
        read_state_file(&self.path)
    }

    fn keep(&self, state: StateFile, _change: Option<Change>) {
        self.writer.save(&state);
    }

    /// One node: its sessions are already where its gateway looks.
    fn seen(&self, _client: IpAddr, _user: &str) {}

    fn flush(&self) {
        self.writer.flush();
    }
}
