//! The compliance state file's one writer: a thread of its own, so no
//! request waits for a rename and an fsync (a flagged laptop that sends a
//! request per second must not slow another laptop's proxied page). Saves
//! that arrive together are written once, the latest state winning; a
//! [`StateWriter::flush`] waits until everything sent before it is on disk.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// How long the writer waits for more changes before writing: changes in a
/// burst cost one write.
const DEBOUNCE: Duration = Duration::from_millis(50);

enum Message {
    Save(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// Sends states to the writer thread.
pub struct StateWriter {
    tx: Mutex<mpsc::Sender<Message>>,
}

impl StateWriter {
    /// Starts the writer thread for `path`.
    pub fn spawn(path: PathBuf) -> std::io::Result<StateWriter> {
        let (tx, rx) = mpsc::channel::<Message>();
        std::thread::Builder::new().name("compliance-state".into()).spawn(move || run(&path, &rx))?;
        Ok(StateWriter { tx: Mutex::new(tx) })
    }

    /// Queues `state` to be written (the latest queued state wins).
    pub fn save(&self, state: &impl Serialize) {
        match serde_json::to_vec_pretty(state) {
            Ok(bytes) => self.send(Message::Save(bytes)),
            Err(e) => tracing::error!(error = %e, "cannot serialise the compliance state"),
        }
    }

    /// Blocks until every state queued before this call is written (or
    /// failed and was logged). Not for the async runtime's threads.
    pub fn flush(&self) {
        let (ack, done) = mpsc::channel();
        self.send(Message::Flush(ack));
        let _ = done.recv_timeout(Duration::from_secs(30));
    }

    fn send(&self, m: Message) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send(m).is_err() {
            tracing::error!("the compliance state writer has stopped; flags hold until restart");
        }
    }
}

fn run(path: &Path, rx: &mpsc::Receiver<Message>) {
    while let Ok(first) = rx.recv() {
        let mut latest = None;
        let mut acks = Vec::new();
        let mut take = |m: Message, latest: &mut Option<Vec<u8>>| match m {
            Message::Save(bytes) => *latest = Some(bytes),
            Message::Flush(ack) => acks.push(ack),
        };
        take(first, &mut latest);
        if latest.is_some() {
            std::thread::sleep(DEBOUNCE);
        }
        while let Ok(m) = rx.try_recv() {
            take(m, &mut latest);
        }
        if let Some(bytes) = latest {
            if let Err(e) = write_atomically(path, &bytes) {
                tracing::error!(path = %path.display(), error = %e, "cannot save compliance state; flags hold until restart");
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder,
/// synced, renamed over the old file, the folder synced: a crash leaves the
/// old state or the new one, never half of one. Mode 0600: names and
/// addresses of flagged people are for weerwal only.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::atomic_file::write(path, bytes, 0o600)
}
